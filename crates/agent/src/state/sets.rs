//! Whole-set installs of `client.crt`, `client.key` and `ca.crt` behind the `..data`
//! symlink, and [`StateDir::repair`] of an interrupted one (the layout and its crash
//! safety are described in the [module docs](super)), including the older layout of plain
//! files.

use std::path::{Path, PathBuf};

use mtlsgate_pki::{fsutil, pemfile};

use super::{AgentState, StateDir};
use crate::error::{AgentError, Result};
use crate::keys;

/// The symlink to the current set directory.
const DATA: &str = "..data";
/// The symlink renamed over [`DATA`] to publish a set.
const DATA_TMP: &str = "..data_tmp";
/// The files of a set, in the order their stable symlinks are made.
const SET_FILES: [&str; 3] = ["ca.crt", "client.key", "client.crt"];

/// What [`StateDir::repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Nothing was left over.
    Clean,
    /// An install the server had answered was interrupted; it was finished.
    Finished,
    /// Files of an unfinished attempt were removed.
    Discarded,
}

/// The target of the symlink `path` as a file name, `None` when it is not a symlink.
fn link_target(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .and_then(|t| t.to_str().map(str::to_string))
}

impl StateDir {
    /// The CA certificates in `ca.crt` (empty when there is none).
    pub fn ca_certs(&self) -> Result<Vec<Vec<u8>>> {
        let path = self.ca_crt();
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(pemfile::read_certs(&path)?)
    }

    /// Replaces `ca.crt` (0644): in a set directory, a new set with the current key and
    /// certificate; in a directory of the older layout, the plain file.
    pub(crate) fn write_ca(&self, certs: &[Vec<u8>]) -> Result<()> {
        let pem = crate::bundle::to_pem(certs);
        if self.data_target().is_none() {
            return Ok(fsutil::write_atomic(
                &self.ca_crt(),
                pem.as_bytes(),
                fsutil::PUBLIC_MODE,
            )?);
        }
        let set = self.current_set_dir();
        let key = fsutil::read(&set.join("client.key"))?;
        let crt = fsutil::read(&set.join("client.crt"))?;
        self.publish(&key, &crt, pem.as_bytes(), None)
    }

    /// The name of the set directory `..data` points to, `None` in a directory of the
    /// older layout (or before the first install).
    fn data_target(&self) -> Option<String> {
        link_target(&self.dir.join(DATA))
    }

    /// Where the current `client.crt` and `client.key` really are: the set directory, or
    /// the state directory itself in the older layout.
    pub(super) fn current_set_dir(&self) -> PathBuf {
        match self.data_target() {
            Some(t) => self.dir.join(t),
            None => self.dir.clone(),
        }
    }

    /// The set directories (`..<time>`) in the state directory.
    fn set_dirs(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| {
                n.strip_prefix("..")
                    .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect()
    }

    /// Whether the set directory `name` holds a certificate and the key that belongs to it.
    fn set_is_complete(&self, name: &str) -> bool {
        let set = self.dir.join(name);
        let spki = pemfile::read_certs(&set.join("client.crt"))
            .ok()
            .and_then(|c| keys::public_key_of_cert(&c[0]));
        spki.is_some()
            && set.join("ca.crt").exists()
            && mtlsgate_pki::key::read_key(&set.join("client.key"), None)
                .is_ok_and(|k| Some(k.public_key_raw().to_vec()) == spki)
    }

    /// Writes a new set directory, publishes it by renaming a `..data_tmp` symlink over
    /// `..data`, and finishes (see the module docs). `state`, when given, travels in the
    /// set directory and is moved into place right after the swap.
    fn publish(&self, key: &[u8], crt: &[u8], ca: &[u8], state: Option<&AgentState>) -> Result<()> {
        let io = |what: String| move |e: std::io::Error| AgentError::io(what, e);
        let name = self.new_set_dir()?;
        let set = self.dir.join(&name);
        let write = || -> Result<()> {
            fsutil::write_atomic(&set.join("client.key"), key, fsutil::SECRET_MODE)?;
            fsutil::write_atomic(&set.join("client.crt"), crt, fsutil::PUBLIC_MODE)?;
            fsutil::write_atomic(&set.join("ca.crt"), ca, fsutil::PUBLIC_MODE)?;
            if let Some(s) = state {
                fsutil::write_atomic(&set.join("agent.json"), &s.to_json(), fsutil::SECRET_MODE)?;
            }
            std::fs::File::open(&set)
                .and_then(|d| d.sync_all())
                .map_err(io(format!("cannot sync {}", set.display())))?;
            let tmp = self.dir.join(DATA_TMP);
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&name, &tmp)
                .map_err(io(format!("cannot create the symlink {}", tmp.display())))?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&set);
            return Err(e);
        }
        self.swap_data()?;
        self.finish_publish()
    }

    /// Creates an empty set directory named after the time (0700, or like the state
    /// directory without its write bits when that is more open).
    fn new_set_dir(&self) -> Result<String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mode = std::fs::metadata(&self.dir)
            .map(|m| m.permissions().mode() & 0o755)
            .unwrap_or(0o700)
            | 0o700;
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.nanosecond()
        );
        let mut n = 0u32;
        loop {
            let name = if n == 0 {
                stamp.clone()
            } else {
                format!("{stamp}_{n}")
            };
            let path = self.dir.join(&name);
            match std::fs::DirBuilder::new().mode(mode).create(&path) {
                Ok(()) => {
                    // The mode given to mkdir is narrowed by the umask.
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
                    return Ok(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => {
                    return Err(AgentError::io(
                        format!("cannot create {}", path.display()),
                        e,
                    ))
                }
            }
        }
    }

    /// The publishing rename: `..data_tmp` over `..data`.
    fn swap_data(&self) -> Result<()> {
        let (tmp, data) = (self.dir.join(DATA_TMP), self.dir.join(DATA));
        std::fs::rename(&tmp, &data).map_err(|e| {
            AgentError::io(
                format!("cannot rename {} to {}", tmp.display(), data.display()),
                e,
            )
        })?;
        self.sync_dir();
        Ok(())
    }

    /// After a swap: the stable symlinks (made once; plain files of the older layout are
    /// replaced by them), `agent.json` moved out of the set directory, older sets removed.
    fn finish_publish(&self) -> Result<()> {
        let Some(current) = self.data_target() else {
            return Ok(());
        };
        self.ensure_links()?;
        let staged = self.dir.join(&current).join("agent.json");
        if staged.exists() {
            std::fs::rename(&staged, self.agent_json()).map_err(|e| {
                AgentError::io(
                    format!(
                        "cannot rename {} to {}",
                        staged.display(),
                        self.agent_json().display()
                    ),
                    e,
                )
            })?;
        }
        for old in self.set_dirs().into_iter().filter(|n| *n != current) {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        self.sync_dir();
        Ok(())
    }

    /// Makes `client.crt`, `client.key` and `ca.crt` the symlinks `..data/<name>` where
    /// they are not (each replaced with one rename; the key and the certificate last).
    fn ensure_links(&self) -> Result<bool> {
        let mut changed = false;
        for name in SET_FILES {
            let path = self.dir.join(name);
            let want = Path::new(DATA).join(name);
            if std::fs::read_link(&path).is_ok_and(|t| t == want) {
                continue;
            }
            let tmp = self.dir.join(format!("{name}.link"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&want, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    AgentError::io(format!("cannot make {} a symlink", path.display()), e)
                })?;
            changed = true;
        }
        Ok(changed)
    }

    /// Installs a new certificate as a set (see the module docs): `key_from` is where the
    /// new key already is (`client.key.new` or `pending.key`).
    pub(crate) fn install(
        &self,
        key_from: &Path,
        chain_pem: &str,
        ca_pem: &str,
        state: &AgentState,
    ) -> Result<()> {
        let key = fsutil::read(key_from)?;
        self.publish(&key, chain_pem.as_bytes(), ca_pem.as_bytes(), Some(state))?;
        self.forget_key_source(key_from);
        Ok(())
    }

    /// Removes where an installed key came from: `client.key.new`, or `pending.key` and
    /// then (its key gone) `pending.json`.
    fn forget_key_source(&self, key_from: &Path) {
        if key_from == self.client_key() {
            return;
        }
        fsutil::remove_created(key_from);
        if key_from == self.pending_key() {
            fsutil::remove_created(&self.pending_json());
        }
        self.sync_dir();
    }

    /// The renames of an install of the older layout (plain files) interrupted with all
    /// its files staged (`client.crt.new` written last).
    fn finish_flat_install(&self, key_from: &Path) -> Result<()> {
        let rename = |from: &Path, to: &Path| -> Result<()> {
            std::fs::rename(from, to).map_err(|e| {
                AgentError::io(
                    format!("cannot rename {} to {}", from.display(), to.display()),
                    e,
                )
            })
        };
        for name in ["ca.crt", "agent.json"] {
            let staged = self.staged(name);
            if staged.exists() {
                rename(&staged, &self.dir.join(name))?;
            }
        }
        // The key and the certificate last and back to back: a program reading both files
        // between these two renames sees a new key with the old certificate (two files
        // cannot change at once), so nothing else happens in between.
        if key_from != self.client_key() {
            rename(key_from, &self.client_key())?;
        }
        rename(&self.staged("client.crt"), &self.client_crt())?;
        if key_from == self.pending_key() {
            fsutil::remove_created(&self.pending_json());
        }
        self.sync_dir();
        Ok(())
    }

    /// Finishes an install that was interrupted after the server answered, and removes
    /// what an unfinished attempt left. Call with the lock held.
    pub fn repair(&self) -> Result<Repair> {
        let mut result = self.repair_flat()?;
        let finished = |r: &mut Repair| *r = Repair::Finished;
        let tmp = self.dir.join(DATA_TMP);
        if let Some(pending_set) = link_target(&tmp) {
            if self.set_is_complete(&pending_set) {
                self.swap_data()?;
                finished(&mut result);
            } else {
                fsutil::remove_created(&tmp);
                if result == Repair::Clean {
                    result = Repair::Discarded;
                }
            }
        }
        if let Some(current) = self.data_target() {
            if self.dir.join(&current).join("agent.json").exists()
                || SET_FILES.iter().any(|n| {
                    std::fs::read_link(self.dir.join(n))
                        .map_or(true, |t| t != Path::new(DATA).join(n))
                })
            {
                finished(&mut result);
            }
            let stale = self.set_dirs().into_iter().any(|n| n != current);
            self.finish_publish()?;
            if stale && result == Repair::Clean {
                result = Repair::Discarded;
            }
            // An enrollment that waited and was installed, but whose key was not yet removed.
            let installed = pemfile::read_certs(&self.client_crt())
                .ok()
                .and_then(|c| keys::public_key_of_cert(&c[0]));
            let pending_installed = self.pending_key().exists()
                && mtlsgate_pki::key::read_key(&self.pending_key(), None)
                    .is_ok_and(|k| Some(k.public_key_raw().to_vec()) == installed);
            if pending_installed {
                self.forget_key_source(&self.pending_key());
            }
        } else {
            // Set directories that were never published.
            for n in self.set_dirs() {
                let _ = std::fs::remove_dir_all(self.dir.join(n));
                if result == Repair::Clean {
                    result = Repair::Discarded;
                }
            }
        }
        if self.new_key().exists() {
            fsutil::remove_created(&self.new_key());
            if result == Repair::Clean {
                result = Repair::Discarded;
            }
        }
        // A waiting enrollment whose key is gone was finished (or cannot be); a pending
        // key without its state was never registered.
        if self.pending_json().exists() && !self.pending_key().exists() {
            fsutil::remove_created(&self.pending_json());
        }
        if self.pending_key().exists() && !self.pending_json().exists() {
            fsutil::remove_created(&self.pending_key());
        }
        if result != Repair::Clean {
            self.sync_dir();
        }
        Ok(result)
    }

    /// [`StateDir::repair`] for an install of the older layout (`client.crt.new`).
    fn repair_flat(&self) -> Result<Repair> {
        let staged_crt = self.staged("client.crt");
        let leftovers = [self.staged("ca.crt"), self.staged("agent.json")];
        let mut result = Repair::Clean;
        if staged_crt.exists() {
            let spki = pemfile::read_certs(&staged_crt)
                .ok()
                .and_then(|c| keys::public_key_of_cert(&c[0]));
            let matches = |key: &Path| -> bool {
                key.exists()
                    && mtlsgate_pki::key::read_key(key, None)
                        .map(|k| Some(k.public_key_raw().to_vec()) == spki)
                        .unwrap_or(false)
            };
            let source = [self.new_key(), self.pending_key(), self.client_key()]
                .into_iter()
                .find(|k| matches(k));
            match source {
                Some(key_from) => {
                    self.finish_flat_install(&key_from)?;
                    result = Repair::Finished;
                }
                None => {
                    fsutil::remove_created(&staged_crt);
                    result = Repair::Discarded;
                }
            }
        }
        for p in &leftovers {
            if p.exists() {
                fsutil::remove_created(p);
                if result == Repair::Clean {
                    result = Repair::Discarded;
                }
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::files::tests::sample;
    use mtlsgate_pki::KeyPair;

    fn self_signed(key: &KeyPair) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["d1".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.self_signed(key).expect("cert").pem()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The names in the state directory, set directories shown as `..<set>`.
    fn layout(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .map(|n| {
                if n.starts_with("..2") {
                    "..<set>".to_string()
                } else {
                    n
                }
            })
            .collect()
    }

    const LAYOUT: [&str; 6] = [
        "..<set>",
        "..data",
        "agent.json",
        "ca.crt",
        "client.crt",
        "client.key",
    ];

    fn installed_key(sd: &StateDir) -> Vec<u8> {
        mtlsgate_pki::key::read_key(&sd.client_key(), None)
            .expect("key")
            .public_key_raw()
            .to_vec()
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn install_publishes_a_set_directory_behind_stable_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        let key = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key, None).expect("key");
        let crt = self_signed(&key);
        sd.install(&sd.new_key(), &crt, &crt, &sample())
            .expect("install");
        assert_eq!(layout(dir.path()), LAYOUT);
        for name in ["client.crt", "client.key", "ca.crt"] {
            assert_eq!(
                std::fs::read_link(dir.path().join(name)).expect("a symlink"),
                Path::new("..data").join(name)
            );
        }
        let first = sd.data_target().expect("..data");
        assert_eq!(mode(&dir.path().join(&first)), 0o700);
        assert_eq!(mode(&sd.client_key()), 0o600);
        assert_eq!(mode(&sd.client_crt()), 0o644);
        assert_eq!(mode(&sd.agent_json()), 0o600);
        assert_eq!(sd.read_state().expect("state"), Some(sample()));
        assert_eq!(sd.repair().expect("repair"), Repair::Clean);

        // The next install replaces the set directory; the old one is gone.
        let key2 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key2, None).expect("key");
        let crt2 = self_signed(&key2);
        sd.install(&sd.new_key(), &crt2, &crt, &sample())
            .expect("install");
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_ne!(sd.data_target().expect("..data"), first);
        assert_eq!(installed_key(&sd), key2.public_key_raw());
        assert_eq!(sd.identity().expect("identity").chain.len(), 1);

        // A new CA bundle is a new set with the same key and certificate.
        let before = sd.data_target();
        sd.write_ca(&pemfile::read_certs(&sd.client_crt()).expect("pem"))
            .expect("ca");
        assert_ne!(sd.data_target(), before);
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_eq!(installed_key(&sd), key2.public_key_raw());
        assert_eq!(std::fs::read_to_string(sd.ca_crt()).expect("ca"), crt2);
    }

    #[test]
    fn a_mismatched_key_and_certificate_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let key = KeyPair::generate().expect("key");
        let other = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.client_key(), &other, None).expect("key");
        fsutil::write_atomic(&sd.client_crt(), self_signed(&key).as_bytes(), 0o644).expect("w");
        let e = sd.identity().err().expect("refused");
        assert!(
            e.to_string().contains(&format!(
                "the private key in {} does not match the certificate in {}",
                sd.client_key().display(),
                sd.client_crt().display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_flat_directory_is_migrated_by_the_next_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let key = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.client_key(), &key, None).expect("key");
        let crt = self_signed(&key);
        fsutil::write_atomic(&sd.client_crt(), crt.as_bytes(), 0o644).expect("w");
        fsutil::write_atomic(&sd.ca_crt(), crt.as_bytes(), 0o644).expect("w");
        sd.write_state(&sample()).expect("state");
        assert_eq!(sd.repair().expect("repair"), Repair::Clean);
        assert_eq!(installed_key(&sd), key.public_key_raw());

        let key2 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key2, None).expect("key");
        let crt2 = self_signed(&key2);
        sd.install(&sd.new_key(), &crt2, &crt, &sample())
            .expect("install");
        assert_eq!(layout(dir.path()), LAYOUT);
        assert!(std::fs::read_link(sd.client_key()).is_ok());
        assert_eq!(installed_key(&sd), key2.public_key_raw());
    }

    #[test]
    fn repair_finishes_or_discards_an_interrupted_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let key = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key, None).expect("key");
        let crt = self_signed(&key);
        sd.install(&sd.new_key(), &crt, &crt, &sample())
            .expect("install");
        let old = sd.data_target().expect("..data");

        // A complete set with `..data_tmp` (crash before the swap): published by repair.
        let key2 = KeyPair::generate().expect("key");
        let crt2 = self_signed(&key2);
        let set = sd.new_set_dir().expect("set");
        let p = dir.path().join(&set);
        mtlsgate_pki::key::write_key(&p.join("client.key"), &key2, None).expect("key");
        fsutil::write_atomic(&p.join("client.crt"), crt2.as_bytes(), 0o644).expect("w");
        fsutil::write_atomic(&p.join("ca.crt"), crt2.as_bytes(), 0o644).expect("w");
        let mut s2 = sample();
        s2.device_id = "second".into();
        fsutil::write_atomic(&p.join("agent.json"), &s2.to_json(), 0o600).expect("w");
        std::os::unix::fs::symlink(&set, dir.path().join("..data_tmp")).expect("link");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key2, None).expect("key");
        assert_eq!(sd.repair().expect("repair"), Repair::Finished);
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_eq!(sd.data_target(), Some(set.clone()));
        assert_eq!(installed_key(&sd), key2.public_key_raw());
        assert_eq!(sd.state().expect("state").device_id, "second");
        assert!(!dir.path().join(&old).exists());

        // Crash after the swap, before agent.json was moved and the links made.
        let key3 = KeyPair::generate().expect("key");
        let crt3 = self_signed(&key3);
        let set3 = sd.new_set_dir().expect("set");
        let p = dir.path().join(&set3);
        mtlsgate_pki::key::write_key(&p.join("client.key"), &key3, None).expect("key");
        fsutil::write_atomic(&p.join("client.crt"), crt3.as_bytes(), 0o644).expect("w");
        fsutil::write_atomic(&p.join("ca.crt"), crt3.as_bytes(), 0o644).expect("w");
        let mut s3 = sample();
        s3.device_id = "third".into();
        fsutil::write_atomic(&p.join("agent.json"), &s3.to_json(), 0o600).expect("w");
        std::os::unix::fs::symlink(&set3, dir.path().join("..data_tmp")).expect("link");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
        std::fs::remove_file(sd.client_crt()).expect("rm");
        assert_eq!(sd.repair().expect("repair"), Repair::Finished);
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_eq!(installed_key(&sd), key3.public_key_raw());
        assert_eq!(sd.state().expect("state").device_id, "third");

        // A set never published (no `..data_tmp`) and a key never answered: thrown away.
        let set4 = sd.new_set_dir().expect("set");
        fsutil::write_atomic(&dir.path().join(&set4).join("client.crt"), b"x", 0o644).expect("w");
        let key4 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key4, None).expect("key");
        assert_eq!(sd.repair().expect("repair"), Repair::Discarded);
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_eq!(sd.data_target(), Some(set3.clone()));
        assert_eq!(installed_key(&sd), key3.public_key_raw());

        // An incomplete set behind `..data_tmp` is not published.
        let set5 = sd.new_set_dir().expect("set");
        std::os::unix::fs::symlink(&set5, dir.path().join("..data_tmp")).expect("link");
        assert_eq!(sd.repair().expect("repair"), Repair::Discarded);
        assert_eq!(layout(dir.path()), LAYOUT);
        assert_eq!(sd.data_target(), Some(set3));
    }

    #[test]
    fn repair_still_finishes_an_install_of_the_older_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let key = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.client_key(), &key, None).expect("key");
        let crt = self_signed(&key);
        fsutil::write_atomic(&sd.client_crt(), crt.as_bytes(), 0o644).expect("w");
        let key2 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key2, None).expect("key");
        let crt2 = self_signed(&key2);
        fsutil::write_atomic(&sd.staged("ca.crt"), crt2.as_bytes(), 0o644).expect("w");
        fsutil::write_atomic(&sd.staged("client.crt"), crt2.as_bytes(), 0o644).expect("w");
        assert_eq!(sd.repair().expect("repair"), Repair::Finished);
        assert_eq!(names(dir.path()), ["ca.crt", "client.crt", "client.key"]);
        assert_eq!(installed_key(&sd), key2.public_key_raw());
    }
}
