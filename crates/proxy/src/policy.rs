//! Access policy per route: who may pass. This module owns the allow/deny decision and its
//! wording ([`Policy::authorize`], one function over the route's lists and the client's
//! identity, failing closed). Lists hold device IDs (the subject CN, see
//! [`crate::identity`]), SPIFFE IDs (URI SAN), subject OUs and SHA-256 fingerprints, inline
//! or in files in the `whitelist.txt` format (one ID per line, `#` comments). Lookups are
//! hash-set hits, independent of the list's size; files are read when the snapshot is
//! built, never per request.

use std::collections::HashSet;
use std::path::Path;

use crate::config::PolicyConfig;
use crate::error::GateError;
use crate::identity::ClientIdentity;

/// A device ID as an allowlist key: stored inline when it fits in 31 bytes (almost every
/// device ID does), so that a million-entry list is one allocation, not a million —
/// loading and freeing it is then fast, and the memory goes back to the system at once.
#[derive(Clone)]
enum IdKey {
    Inline { len: u8, bytes: [u8; 31] },
    Heap(Box<str>),
}

impl IdKey {
    fn new(s: &str) -> IdKey {
        if s.len() <= 31 {
            let mut bytes = [0u8; 31];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            IdKey::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            IdKey::Heap(s.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IdKey::Inline { len, bytes } => &bytes[..*len as usize],
            IdKey::Heap(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for IdKey {}

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What a list file looked like when it was read (the same file, size and modification
/// time): a reload reuses a compiled policy whose files all still look the same, instead of
/// reading a million-line list again because another file (a renewed certificate) changed.
/// Taken before the file is read, so a change during the read makes the stamps differ.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// A compiled policy.
#[derive(Debug, Default)]
pub struct Policy {
    /// What it was compiled from, and its files' stamps (for [`Policy::unchanged`]).
    built_from: PolicyConfig,
    stamps: Vec<Option<Stamp>>,
    open: bool,
    /// Also ask the inventory (and require one of these tags, if any).
    inventory: bool,
    tags: Vec<String>,
    /// Whether any list (device IDs, SPIFFE IDs, OUs, fingerprints, files) is configured.
    lists: bool,
    names: HashSet<IdKey>,
    spiffe: HashSet<Box<str>>,
    ous: HashSet<Box<str>>,
    fingerprints: HashSet<Box<str>>,
}

/// Why a route's policy refused a client (answered with 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// The route is open only to listed clients and none was presented.
    NoCertificate { prefix: String },
    /// A certificate was presented but not verified (optional_no_ca lets such clients
    /// through to open routes only).
    Unverified { device: String },
    /// Verified, but on none of the route's lists.
    NotListed { device: String, prefix: String },
    /// The device inventory refuses it (unknown, not active, certificate revoked, tags).
    Inventory(crate::inventory::InventoryDenial),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::NoCertificate { prefix } => write!(
                f,
                "{prefix} is open only to listed devices; present a client certificate"
            ),
            Denial::Unverified { device } => write!(
                f,
                "device {device} presented a certificate that was not verified"
            ),
            Denial::NotListed { device, prefix } => {
                write!(f, "device {device} is not on the allowlist for {prefix}")
            }
            Denial::Inventory(d) => write!(f, "{d}"),
        }
    }
}

/// Parses a whitelist file: one ID per line, `#` comments, blank lines ignored.
pub fn parse_list(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| {
        let l = match l.find('#') {
            Some(i) => &l[..i],
            None => l,
        };
        let t = l.trim();
        (!t.is_empty()).then_some(t)
    })
}

fn norm_fp(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// How allowlist files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// At start-up: every file as it is.
    Start,
    /// On a reload: a file that does not end with a newline may still be being written, so
    /// the reload waits for it (the previous lists stay) instead of applying half a list.
    Reload,
}

impl Policy {
    pub fn build(cfg: &PolicyConfig, load: Load) -> Result<Policy, GateError> {
        let mut p = Policy {
            open: cfg.is_open(),
            inventory: cfg.inventory,
            tags: cfg.tags.clone(),
            lists: !(cfg.device_ids.is_empty()
                && cfg.spiffe_ids.is_empty()
                && cfg.ous.is_empty()
                && cfg.fingerprints.is_empty()
                && cfg.allow_files.is_empty()),
            built_from: cfg.clone(),
            stamps: cfg.allow_files.iter().map(|f| Stamp::of(f)).collect(),
            ..Policy::default()
        };
        p.names.extend(
            cfg.device_ids
                .iter()
                .map(|s| IdKey::new(&s.to_ascii_lowercase())),
        );
        p.spiffe
            .extend(cfg.spiffe_ids.iter().map(|s| s.as_str().into()));
        p.ous.extend(cfg.ous.iter().map(|s| s.as_str().into()));
        for f in &cfg.fingerprints {
            let n = norm_fp(f);
            if n.len() != 64 || !n.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(GateError::Allowlist {
                    path: "allow_fingerprints".into(),
                    message: format!("`{f}` is not a SHA-256 fingerprint (64 hex digits)"),
                });
            }
            p.fingerprints.insert(n.into());
        }
        for file in &cfg.allow_files {
            p.load_file(file, load)?;
        }
        Ok(p)
    }

    fn load_file(&mut self, path: &Path, load: Load) -> Result<(), GateError> {
        let text = std::fs::read_to_string(path).map_err(|e| GateError::Allowlist {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        if load == Load::Reload && !text.is_empty() && !text.ends_with('\n') {
            return Err(GateError::Allowlist {
                path: path.display().to_string(),
                message: "does not end with a newline, so it may still be being written; the previous lists stay until it does (end the file with a newline, or write it to another name and rename it into place)".into(),
            });
        }
        let before = self.len();
        // Sized once: a million-line list must not rehash its way up.
        self.names
            .reserve(text.bytes().filter(|b| *b == b'\n').count() + 1);
        for id in parse_list(&text) {
            if let Some(s) = id.strip_prefix("spiffe://") {
                self.spiffe.insert(format!("spiffe://{s}").into());
            } else if let Some(fp) = id.strip_prefix("sha256:") {
                self.fingerprints.insert(norm_fp(fp).into());
            } else if id.bytes().any(|b| b.is_ascii_uppercase()) {
                self.names.insert(IdKey::new(&id.to_ascii_lowercase()));
            } else {
                self.names.insert(IdKey::new(id));
            }
        }
        let entries = self.len() - before;
        if entries == 0 {
            tracing::warn!(
                "allowlist {} is empty: every client is refused where it applies",
                path.display()
            );
        } else {
            tracing::info!("allowlist {}: {entries} entries", path.display());
        }
        Ok(())
    }

    /// Whether building `cfg` now would give this policy again: the same settings, and
    /// every list file still the same file with the same size and modification time.
    pub(crate) fn unchanged(&self, cfg: &PolicyConfig) -> bool {
        self.built_from == *cfg
            && cfg
                .allow_files
                .iter()
                .zip(&self.stamps)
                .all(|(f, s)| s.is_some() && Stamp::of(f) == *s)
    }

    /// Number of entries (for metrics).
    pub fn len(&self) -> usize {
        self.names.len() + self.spiffe.len() + self.ous.len() + self.fingerprints.len()
    }

    /// Kept beside [`Policy::len`], which the allowlist fuzz target uses.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The one allow/deny decision for a route: an open route lets everyone through;
    /// otherwise the client must have a verified certificate whose device ID, SPIFFE ID,
    /// an OU or fingerprint is listed (when lists are configured), and that the inventory
    /// lets in (when the route asks it). Without an inventory to ask, a route that needs
    /// one refuses.
    pub(crate) fn authorize(
        &self,
        prefix: &str,
        identity: Option<&ClientIdentity>,
        verified: bool,
        inventory: Option<&crate::inventory::InventoryState>,
    ) -> Result<(), Denial> {
        if self.open {
            return Ok(());
        }
        let Some(id) = identity else {
            return Err(Denial::NoCertificate {
                prefix: prefix.to_string(),
            });
        };
        if !verified {
            return Err(Denial::Unverified {
                device: id.device_label().into_owned(),
            });
        }
        if self.inventory {
            let location = inventory.map(|i| i.location.as_str()).unwrap_or("none");
            let view = inventory.map(|i| i.view());
            let result = match &view {
                Some(v) => v.check(location, id.device_id(), &id.info.serial, &self.tags),
                None => Err(crate::inventory::InventoryDenial::NotLoaded {
                    location: location.into(),
                }),
            };
            if let (Err(crate::inventory::InventoryDenial::Unknown { .. }), Some(i)) =
                (&result, inventory)
            {
                // A device enrolled a moment ago: have the inventory read soon (the request
                // path waits for that read; a handshake cannot).
                i.nudge();
            }
            result.map_err(Denial::Inventory)?;
            if !self.lists {
                return Ok(());
            }
        }
        let listed = id
            .device_id_lower
            .as_deref()
            .is_some_and(|d| self.names.contains(&IdKey::new(d)))
            || id
                .info
                .uris
                .iter()
                .any(|u| self.spiffe.contains(u.as_str()))
            || id
                .info
                .organizational_units
                .iter()
                .any(|o| self.ous.contains(o.as_str()))
            || self
                .fingerprints
                .contains(id.info.sha256_fingerprint.as_str());
        if listed {
            Ok(())
        } else {
            Err(Denial::NotListed {
                device: id.device_label().into_owned(),
                prefix: prefix.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_short_ids_are_keys_alike() {
        let long = "a-very-long-device-identifier-0123456789.d.example.local";
        let mut set = HashSet::new();
        set.insert(IdKey::new("dev1.d.example.local"));
        set.insert(IdKey::new(long));
        assert!(set.contains(&IdKey::new("dev1.d.example.local")));
        assert!(set.contains(&IdKey::new(long)));
        assert!(!set.contains(&IdKey::new("dev1.d.example.loca")));
        assert!(!set.contains(&IdKey::new(&long[..40])));
    }

    #[test]
    fn a_policy_is_unchanged_until_its_file_or_settings_change() {
        let dir = std::env::temp_dir().join(format!("mtlsgate-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("allow.txt");
        std::fs::write(&file, "dev1\ndev2\n").expect("write");
        let cfg = PolicyConfig {
            allow_files: vec![file.clone()],
            ..PolicyConfig::default()
        };
        let p = Policy::build(&cfg, Load::Start).expect("policy");
        assert!(p.unchanged(&cfg));
        let other = PolicyConfig {
            device_ids: vec!["dev3".into()],
            ..cfg.clone()
        };
        assert!(!p.unchanged(&other), "other settings");
        // Replaced by rename, as editors and the agent do: another file.
        let tmp = dir.join("allow.tmp");
        std::fs::write(&tmp, "dev1\ndev2\n").expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
        assert!(!p.unchanged(&cfg), "replaced file");
        let p = Policy::build(&cfg, Load::Reload).expect("policy");
        assert!(p.unchanged(&cfg));
        std::fs::remove_file(&file).expect("remove");
        assert!(!p.unchanged(&cfg), "file gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn whitelist_format() {
        let ids: Vec<&str> =
            parse_list("# devices\nMyDeviceId.d.wott.local\n\n  other  # trailing\n#x\n").collect();
        assert_eq!(ids, vec!["MyDeviceId.d.wott.local", "other"]);
    }
}
