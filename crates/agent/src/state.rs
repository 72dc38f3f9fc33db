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
//! Every file is written to a temporary file and renamed (pki `fsutil`). A new certificate
//! is installed as a set: the new key (already on disk under `client.key.new` or
//! `pending.key` while the server was asked), `ca.crt.new`, `agent.json.new` and, last,
//! `client.crt.new` are written; then the key, `ca.crt`, `agent.json` and finally
//! `client.crt` are renamed into place. A `client.crt.new` therefore means "the server
//! answered and the set is complete": [`StateDir::repair`] finishes such an interrupted
//! install and throws away anything else left over.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mtlsgate_pki::{fsutil, pemfile, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use crate::keys;

/// The `format` of `agent.json` and `pending.json` this version writes and reads.
pub const STATE_FORMAT: u32 = 1;

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

    /// Replaces `ca.crt` (0644).
    pub(crate) fn write_ca(&self, certs: &[Vec<u8>]) -> Result<()> {
        Ok(fsutil::write_atomic(
            &self.ca_crt(),
            crate::bundle::to_pem(certs).as_bytes(),
            fsutil::PUBLIC_MODE,
        )?)
    }

    /// The current certificate chain and key.
    pub(crate) fn identity(&self) -> Result<Identity> {
        let chain = pemfile::read_certs(&self.client_crt())?;
        let key = mtlsgate_pki::key::read_key(&self.client_key(), None)?;
        let (not_before, not_after) =
            keys::validity(&chain[0]).ok_or_else(|| AgentError::BadIdentity {
                dir: self.dir.clone(),
                reason: format!("{} cannot be parsed", self.client_crt().display()),
            })?;
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
        let staged_ca = self.staged("ca.crt");
        let staged_state = self.staged("agent.json");
        let staged_crt = self.staged("client.crt");
        let stage = || -> Result<()> {
            fsutil::write_atomic(&staged_ca, ca_pem.as_bytes(), fsutil::PUBLIC_MODE)?;
            fsutil::write_atomic(&staged_state, &state.to_json(), fsutil::SECRET_MODE)?;
            // Written last: its presence says the set is complete.
            fsutil::write_atomic(&staged_crt, chain_pem.as_bytes(), fsutil::PUBLIC_MODE)?;
            Ok(())
        };
        if let Err(e) = stage() {
            for p in [&staged_crt, &staged_state, &staged_ca] {
                fsutil::remove_created(p);
            }
            return Err(e);
        }
        self.sync_dir();
        self.finish_install(key_from)
    }

    /// The renames of an install whose files are all staged.
    fn finish_install(&self, key_from: &Path) -> Result<()> {
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
        let staged_crt = self.staged("client.crt");
        let leftovers = [
            self.new_key(),
            self.staged("ca.crt"),
            self.staged("agent.json"),
        ];
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
                    self.finish_install(&key_from)?;
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

    #[test]
    fn install_replaces_the_set_and_repair_finishes_an_interrupted_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let key = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key, None).expect("key");
        let crt = self_signed(&key);
        sd.install(&sd.new_key(), &crt, &crt, &sample())
            .expect("install");
        assert_eq!(
            names(dir.path()),
            ["agent.json", "ca.crt", "client.crt", "client.key"]
        );
        assert_eq!(sd.repair().expect("repair"), Repair::Clean);

        // Interrupted after staging: the set is finished by repair.
        let key2 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key2, None).expect("key");
        let crt2 = self_signed(&key2);
        fsutil::write_atomic(&sd.staged("ca.crt"), crt2.as_bytes(), 0o644).expect("w");
        fsutil::write_atomic(&sd.staged("client.crt"), crt2.as_bytes(), 0o644).expect("w");
        assert_eq!(sd.repair().expect("repair"), Repair::Finished);
        assert_eq!(
            names(dir.path()),
            ["agent.json", "ca.crt", "client.crt", "client.key"]
        );
        assert_eq!(std::fs::read_to_string(sd.client_crt()).expect("crt"), crt2);
        let k = mtlsgate_pki::key::read_key(&sd.client_key(), None).expect("key");
        assert_eq!(k.public_key_raw(), key2.public_key_raw());

        // A key whose request never got an answer is thrown away.
        let key3 = KeyPair::generate().expect("key");
        mtlsgate_pki::key::write_key(&sd.new_key(), &key3, None).expect("key");
        assert_eq!(sd.repair().expect("repair"), Repair::Discarded);
        assert_eq!(
            names(dir.path()),
            ["agent.json", "ca.crt", "client.crt", "client.key"]
        );
        let k = mtlsgate_pki::key::read_key(&sd.client_key(), None).expect("key");
        assert_eq!(k.public_key_raw(), key2.public_key_raw());
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
