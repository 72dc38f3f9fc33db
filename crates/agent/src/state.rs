//! The state directory (`--dir`, default `/var/lib/mtlsgate-agent`) and everything in it:
//!
//! | file | mode | what |
//! |---|---|---|
//! | `client.crt` | 0644 | the device's certificate chain (leaf + intermediate) |
//! | `client.key` | 0600 | its private key, made on the device |
//! | `ca.crt` | 0644 | the CA certificates the server (and the gateway) is verified with |
//! | `agent.json` | 0600 | [`AgentState`]: server, device ID, pin, recovery token, schedule, last error |
//! | `pending.json`, `pending.key` | 0600 | an enrollment that waits for approval ([`PendingState`]) and its key |
//!
//! The directory itself is `flock(2)`ed while an agent changes it ([`StateDir::lock`]), so
//! that `agent run` and a timer's `agent run --once` never renew at the same time (each
//! renewal rotates the recovery token; a token lost that way would later look like a clone).
//!
//! `client.crt`, `client.key` and `ca.crt` belong together, so they are installed the way
//! Kubernetes updates a mounted secret (its `AtomicWriter`): each set is written into a new
//! directory of its own, `..2026_12_04_18_00_01.123456789/`, and the symlink `..data`
//! points at the current one. The three names in the state directory are symlinks that
//! never change (`client.crt -> ..data/client.crt`), so existing `--cert DIR/client.crt
//! --key DIR/client.key` settings keep working. A new set is published with one rename: a
//! symlink `..data_tmp` to the new directory is renamed over `..data`; then the older set
//! directories are removed. A program that opens the two files by these paths sees one set
//! or the other, unless it opens one before a swap and the other after it (then the next
//! try matches); a program that resolves `..data` (or `realpath DIR/client.key`) once and
//! reads both files from that directory always gets a matching pair.
//!
//! Crash safety: the set directory is complete and synced before `..data_tmp` is made,
//! so `..data_tmp` means "a complete set waits to be published" and [`StateDir::repair`]
//! publishes it. `agent.json` of an install travels in the set directory and is moved to
//! the state directory right after the swap; a set directory with `agent.json` in it that
//! `..data` points to is an install whose last steps repair finishes. Anything else left
//! over (a set directory never published, `client.key.new`) is thrown away.
//!
//! A state directory of an older version (plain files) is changed to this layout by the
//! next install, and an install interrupted in the older way (`client.crt.new`) is still
//! finished by [`StateDir::repair`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mtlsgate_pki::{fsutil, pemfile, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use crate::keys;

/// The `format` of `agent.json` and `pending.json` this version writes and reads.
pub const STATE_FORMAT: u32 = 1;

/// The symlink to the current set directory.
const DATA: &str = "..data";
/// The symlink renamed over [`DATA`] to publish a set.
const DATA_TMP: &str = "..data_tmp";
/// The files of a set, in the order their stable symlinks are made.
const SET_FILES: [&str; 3] = ["ca.crt", "client.key", "client.crt"];

/// What `agent.json` holds. Times are unix seconds, as in the HTTP API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Always [`STATE_FORMAT`]; another value is refused.
    pub format: u32,
    /// The server's URL (`--server`).
    pub server: String,
    /// The device ID the server assigned (the certificate's CN).
    pub device_id: String,
    /// SHA-256 (lower-case hex) of the root the device was enrolled under, when known.
    #[serde(default)]
    pub root_sha256: Option<String>,
    /// The current recovery token (`mtr_…`): a secret, never logged.
    #[serde(default)]
    pub recovery_token: Option<String>,
    /// Until when the recovery token is accepted.
    #[serde(default)]
    pub recovery_expires: Option<i64>,
    /// The device's tags, as the server reported them at the last issuance.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When the device was enrolled.
    pub enrolled_at: i64,
    /// When the certificate was last renewed or recovered.
    #[serde(default)]
    pub last_renewal: Option<i64>,
    /// When the current certificate is due for renewal.
    #[serde(default)]
    pub next_renewal: Option<i64>,
    /// The last failure, cleared by the next success.
    #[serde(default)]
    pub last_error: Option<LastError>,
}

/// A failure as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: i64,
    pub message: String,
}

impl fmt::Debug for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentState")
            .field("format", &self.format)
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .field("root_sha256", &self.root_sha256)
            .field(
                "recovery_token",
                &self.recovery_token.as_ref().map(|_| "<secret>"),
            )
            .field("recovery_expires", &self.recovery_expires)
            .field("tags", &self.tags)
            .field("enrolled_at", &self.enrolled_at)
            .field("last_renewal", &self.last_renewal)
            .field("next_renewal", &self.next_renewal)
            .field("last_error", &self.last_error)
            .finish()
    }
}

/// What `pending.json` holds while an enrollment waits for an operator's approval.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingState {
    pub format: u32,
    pub server: String,
    pub device_id: String,
    /// The poll token (`mtp_…`): a secret, never logged.
    pub poll_token: String,
    /// The server's poll interval, seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
    pub registered_at: i64,
    /// SHA-256 of the pinned root, when enrolled with `--root-fingerprint`.
    #[serde(default)]
    pub root_sha256: Option<String>,
    /// The CA certificates (PEM) the server is verified with while waiting: the
    /// `--ca-file`, or the pinned root seen in the handshake.
    pub trust_pem: String,
}

impl fmt::Debug for PendingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingState")
            .field("format", &self.format)
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .field("poll_token", &"<secret>")
            .field("retry_after", &self.retry_after)
            .field("registered_at", &self.registered_at)
            .field("root_sha256", &self.root_sha256)
            .finish()
    }
}

/// Reads a state file: `None` when it does not exist; refused when it cannot be read, is
/// not JSON of the expected shape, or has another `format`.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AgentError::StateUnreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    parse_json(path, &data).map(Some)
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, data: &[u8]) -> Result<T> {
    let unreadable = |reason: String| AgentError::StateUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| unreadable(format!("it is not valid JSON ({e}); the file is damaged")))?;
    let format = value
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            unreadable("it has no `format` number; it is not an mtlsgate agent state file".into())
        })?;
    if format != u64::from(STATE_FORMAT) {
        return Err(AgentError::StateFormat {
            path: path.to_path_buf(),
            found: u32::try_from(format).unwrap_or(u32::MAX),
            supported: STATE_FORMAT,
        });
    }
    serde_json::from_value(value)
        .map_err(|e| unreadable(format!("a field is missing or of the wrong type ({e})")))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

impl AgentState {
    /// Parses `agent.json` text (`path` names it in errors).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        parse_json(path, data)
    }

    /// The JSON text written to `agent.json`.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

impl PendingState {
    /// Parses `pending.json` text (`path` names it in errors).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        parse_json(path, data)
    }

    /// The JSON text written to `pending.json`.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// The device's certificate chain and key, read from the state directory.
pub(crate) struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub key: KeyPair,
    pub not_before: i64,
    pub not_after: i64,
}

/// The held `flock(2)` on the state directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

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

/// Why a state directory with `mode` owned by `owner` is unsafe for an agent running as
/// user `me`: writable by group or others, or someone else's. `None` when it is private.
fn unsafe_dir_reason(dir: &Path, mode: u32, owner: u32, me: u32) -> Option<String> {
    let mode = mode & 0o7777;
    let writable_by = if mode & 0o002 != 0 {
        Some("others")
    } else if mode & 0o020 != 0 {
        Some("group")
    } else {
        None
    };
    if let Some(who) = writable_by {
        return Some(format!(
            "is writable by {who} (mode {mode:04o}): whoever can write there can replace the device's key and certificate; make it private with `chmod 700 {}`",
            dir.display()
        ));
    }
    (owner != me).then(|| {
        format!(
            "belongs to user {owner}, not to the user this agent runs as ({me}): its owner can replace the device's key and certificate; run the agent as that user, or hand the directory over with `chown {me} {}`",
            dir.display()
        )
    })
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn client_crt(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn agent_json(&self) -> PathBuf {
        self.dir.join("agent.json")
    }
    pub fn pending_json(&self) -> PathBuf {
        self.dir.join("pending.json")
    }
    pub fn pending_key(&self) -> PathBuf {
        self.dir.join("pending.key")
    }
    /// Where a new key waits while the server is asked.
    pub fn new_key(&self) -> PathBuf {
        self.dir.join("client.key.new")
    }
    fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.new"))
    }

    /// Creates the directory (0700: it holds the key) if it does not exist.
    pub fn create(&self) -> Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&self.dir)
            .map_err(|e| AgentError::io(format!("cannot create {}", self.dir.display()), e))
    }

    /// `agent.json`, or `None` when no device is enrolled here.
    pub fn read_state(&self) -> Result<Option<AgentState>> {
        read_json(&self.agent_json())
    }

    /// `agent.json`; refused when no device is enrolled here.
    pub fn state(&self) -> Result<AgentState> {
        self.read_state()?
            .ok_or_else(|| AgentError::NotEnrolled(self.dir.clone()))
    }

    /// Replaces `agent.json` (whole or not at all, 0600).
    pub fn write_state(&self, s: &AgentState) -> Result<()> {
        Ok(fsutil::write_atomic(
            &self.agent_json(),
            &s.to_json(),
            fsutil::SECRET_MODE,
        )?)
    }

    /// `pending.json`, or `None` when no enrollment waits.
    pub fn read_pending(&self) -> Result<Option<PendingState>> {
        read_json(&self.pending_json())
    }

    pub(crate) fn write_pending(&self, p: &PendingState) -> Result<()> {
        Ok(fsutil::write_atomic(
            &self.pending_json(),
            &p.to_json(),
            fsutil::SECRET_MODE,
        )?)
    }

    /// Forgets a waiting enrollment (its key and state).
    pub(crate) fn remove_pending(&self) {
        fsutil::remove_created(&self.pending_key());
        fsutil::remove_created(&self.pending_json());
        self.sync_dir();
    }

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
    fn current_set_dir(&self) -> PathBuf {
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

    /// The current certificate chain and key, both read from the set directory `..data`
    /// points to (resolved once, so a swap cannot mix two sets), and refused when the key is
    /// not the certificate's.
    pub(crate) fn identity(&self) -> Result<Identity> {
        let set = self.current_set_dir();
        let (crt, key_path) = (set.join("client.crt"), set.join("client.key"));
        let chain = pemfile::read_certs(&crt)?;
        let key = mtlsgate_pki::key::read_key(&key_path, None)?;
        let (not_before, not_after) =
            keys::validity(&chain[0]).ok_or_else(|| AgentError::BadIdentity {
                dir: self.dir.clone(),
                reason: format!("{} cannot be parsed", self.client_crt().display()),
            })?;
        if keys::public_key_of_cert(&chain[0]).as_deref() != Some(key.public_key_raw()) {
            return Err(AgentError::BadIdentity {
                dir: self.dir.clone(),
                reason: format!(
                    "the private key in {} does not match the certificate in {}",
                    self.client_key().display(),
                    self.client_crt().display()
                ),
            });
        }
        Ok(Identity {
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// Refuses a directory (opened as `dir`) that someone else could write to: writable by
    /// group or others, or owned by another user than the agent's — they could swap the
    /// key and certificate the agent writes, or read what it leaves there.
    fn check_private(&self, dir: &std::fs::File) -> Result<()> {
        let st = rustix::fs::fstat(dir).map_err(|e| {
            AgentError::io(
                format!("cannot inspect {}", self.dir.display()),
                std::io::Error::from(e),
            )
        })?;
        let me = rustix::process::geteuid().as_raw();
        match unsafe_dir_reason(&self.dir, st.st_mode, st.st_uid, me) {
            Some(reason) => Err(AgentError::UnsafeDir {
                dir: self.dir.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Takes the directory's lock (`flock(2)` on the directory), waiting up to `wait` for
    /// another agent to finish.
    pub async fn lock(&self, wait: Duration) -> Result<DirLock> {
        let file = std::fs::File::open(&self.dir)
            .map_err(|e| AgentError::io(format!("cannot open {}", self.dir.display()), e))?;
        self.check_private(&file)?;
        let start = Instant::now();
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    if start.elapsed() >= wait {
                        return Err(AgentError::Locked {
                            dir: self.dir.clone(),
                            secs: wait.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(AgentError::io(
                        format!("cannot lock {}", self.dir.display()),
                        std::io::Error::from(e),
                    ))
                }
            }
        }
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

    /// Makes renames durable (best effort: the data files themselves were synced).
    fn sync_dir(&self) {
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_directory_of_the_agents_user_is_safe() {
        let dir = Path::new("/var/lib/agent");
        assert_eq!(unsafe_dir_reason(dir, 0o40700, 1000, 1000), None);
        assert_eq!(unsafe_dir_reason(dir, 0o40755, 1000, 1000), None);
        let others = unsafe_dir_reason(dir, 0o40777, 1000, 1000).unwrap_or_default();
        assert!(
            others.starts_with("is writable by others (mode 0777)"),
            "{others}"
        );
        assert!(others.ends_with("`chmod 700 /var/lib/agent`"), "{others}");
        let group = unsafe_dir_reason(dir, 0o40770, 1000, 1000).unwrap_or_default();
        assert!(
            group.starts_with("is writable by group (mode 0770)"),
            "{group}"
        );
        let owner = unsafe_dir_reason(dir, 0o40700, 0, 1000).unwrap_or_default();
        assert_eq!(
            owner,
            "belongs to user 0, not to the user this agent runs as (1000): its owner can replace the device's key and certificate; run the agent as that user, or hand the directory over with `chown 1000 /var/lib/agent`"
        );
    }

    fn sample() -> AgentState {
        AgentState {
            format: STATE_FORMAT,
            server: "https://ca.example:8444".into(),
            device_id: "3f9ca1.d.example.local".into(),
            root_sha256: Some("ab".repeat(32)),
            recovery_token: Some("mtr_secret".into()),
            recovery_expires: Some(1_900_000_000),
            tags: vec!["lab".into()],
            enrolled_at: 1_800_000_000,
            last_renewal: Some(1_800_000_100),
            next_renewal: Some(1_800_050_000),
            last_error: Some(LastError {
                at: 1_800_000_050,
                message: "renewal failed: cannot reach https://ca.example:8444".into(),
            }),
        }
    }

    #[test]
    fn agent_json_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        assert!(sd.read_state().expect("absent is fine").is_none());
        let s = sample();
        sd.write_state(&s).expect("write");
        assert_eq!(sd.read_state().expect("read"), Some(s.clone()));
        assert_eq!(
            AgentState::parse(Path::new("x"), &s.to_json()).expect("parse"),
            s
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(sd.agent_json())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Optional fields may be absent.
        let minimal = br#"{"format":1,"server":"https://s","device_id":"d","enrolled_at":5}"#;
        let m = AgentState::parse(Path::new("agent.json"), minimal).expect("minimal");
        assert_eq!(m.next_renewal, None);
        assert!(m.tags.is_empty());
    }

    #[test]
    fn the_recovery_token_is_not_in_debug_output() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("mtr_secret"), "{text}");
        assert!(text.contains("<secret>"), "{text}");
    }

    #[test]
    fn agent_json_of_another_format_is_refused() {
        let p = Path::new("/var/lib/mtlsgate-agent/agent.json");
        let e = AgentState::parse(p, br#"{"format":2,"server":"x"}"#).expect_err("refused");
        assert!(matches!(e, AgentError::StateFormat { found: 2, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "/var/lib/mtlsgate-agent/agent.json has state format 2, but this mtlsgate understands format 1 only; it was written by another version of mtlsgate"
        );
    }

    #[test]
    fn unreadable_agent_json_is_refused_in_words() {
        let p = Path::new("agent.json");
        let e = AgentState::parse(p, b"{\"format\": 1, \"serv").expect_err("damaged");
        let msg = e.to_string();
        assert!(matches!(e, AgentError::StateUnreadable { .. }), "{msg}");
        assert!(
            msg.starts_with("agent.json cannot be read: it is not valid JSON ("),
            "{msg}"
        );
        let e = AgentState::parse(p, b"[1, 2]").expect_err("no format");
        assert!(e.to_string().contains("no `format` number"), "{e}");
        let e = AgentState::parse(p, br#"{"format":1,"server":7}"#).expect_err("wrong type");
        assert!(e.to_string().contains("wrong type"), "{e}");

        // A file that exists but cannot be read (a directory in its place).
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        std::fs::create_dir(sd.agent_json()).expect("mkdir");
        let e = sd.read_state().expect_err("unreadable");
        assert!(matches!(e, AgentError::StateUnreadable { .. }), "{e}");
    }

    #[test]
    fn missing_agent_json_means_not_enrolled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let e = sd.state().expect_err("not enrolled");
        assert!(matches!(e, AgentError::NotEnrolled(_)), "{e}");
        assert!(e.to_string().contains("mtlsgate agent enroll --dir"), "{e}");
    }

    #[test]
    fn pending_json_round_trips_and_hides_the_poll_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let p = PendingState {
            format: STATE_FORMAT,
            server: "https://ca.example:8444".into(),
            device_id: "d1".into(),
            poll_token: "mtp_secret".into(),
            retry_after: Some(5),
            registered_at: 7,
            root_sha256: None,
            trust_pem: String::new(),
        };
        sd.write_pending(&p).expect("write");
        assert_eq!(sd.read_pending().expect("read"), Some(p.clone()));
        assert!(!format!("{p:?}").contains("mtp_secret"));
    }

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

    #[tokio::test]
    async fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let held = sd.lock(Duration::ZERO).await.expect("first");
        let e = sd
            .lock(Duration::from_millis(150))
            .await
            .expect_err("second waits, then gives up");
        assert!(matches!(e, AgentError::Locked { .. }), "{e}");
        drop(held);
        sd.lock(Duration::ZERO).await.expect("free again");
    }
}
