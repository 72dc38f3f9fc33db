//! `agent.json` ([`AgentState`]) and `pending.json` ([`PendingState`]): what they hold,
//! how they are read (refused in words when unreadable or of another format) and written
//! (whole, 0600). Secrets in them never appear in Debug output.

use std::fmt;
use std::path::Path;

use mtlsgate_pki::fsutil;
use serde::{Deserialize, Serialize};

use super::{StateDir, STATE_FORMAT};
use crate::error::{AgentError, Result};

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

impl StateDir {
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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::state) fn sample() -> AgentState {
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
}
