//! What `agent status` and `agent whoami` show, read from the state directory alone (no
//! network): the device ID, the server, the certificate's serial and expiry, the next and
//! last renewal, the last error — or that the enrollment waits for approval.

use std::path::Path;

use mtlsgate_pki::certinfo::CertInfo;
use serde::Serialize;

use crate::enroll::Enrolled;
use crate::error::{AgentError, Result};
use crate::state::{AgentState, LastError, StateDir};

/// The state of the device in a state directory. Times are unix seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `enrolled` or `pending` (waiting for approval).
    pub state: &'static str,
    pub device_id: String,
    pub server: String,
    pub serial: Option<String>,
    pub not_after: Option<i64>,
    pub next_renewal: Option<i64>,
    pub last_renewal: Option<i64>,
    pub last_error: Option<LastError>,
    pub enrolled_at: Option<i64>,
    pub recovery_expires: Option<i64>,
    pub tags: Vec<String>,
    /// When a pending enrollment was registered.
    pub registered_at: Option<i64>,
    /// An enrolled device that enrolls anew (`enroll --force`) and waits for approval:
    /// the new device ID.
    pub pending_device_id: Option<String>,
    /// While waiting for approval: the SHA-256 (hex) of the public key the device sent
    /// (its SubjectPublicKeyInfo), which the operator compares with the dashboard's
    /// pending queue before approving.
    pub pending_key_sha256: Option<String>,
}

/// The SHA-256 hex of the public key of the key waiting for approval, if it is readable.
fn pending_key_sha256(sd: &StateDir) -> Option<String> {
    use rcgen::PublicKeyData;
    let key = mtlsgate_pki::key::read_key(&sd.pending_key(), None).ok()?;
    Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        key.subject_public_key_info(),
    )))
}

/// The installed certificate's serial and expiry, with the state's schedule.
pub(crate) fn enrolled_of(sd: &StateDir, s: &AgentState) -> Result<Enrolled> {
    let chain = mtlsgate_pki::pemfile::read_certs(&sd.client_crt())?;
    let info = CertInfo::from_der(&chain[0])?;
    Ok(Enrolled {
        device_id: s.device_id.clone(),
        serial: info.serial,
        not_after: info.not_after.unix_timestamp(),
        next_renewal: s.next_renewal.unwrap_or_default(),
        tags: s.tags.clone(),
    })
}

/// Reads the status of the device in `dir`.
pub fn status(dir: &Path) -> Result<Status> {
    let sd = StateDir::new(dir);
    let pending = sd.read_pending()?;
    if let Some(s) = sd.read_state()? {
        let cert = mtlsgate_pki::pemfile::read_certs(&sd.client_crt())
            .ok()
            .and_then(|c| CertInfo::from_der(&c[0]).ok());
        return Ok(Status {
            state: "enrolled",
            device_id: s.device_id,
            server: s.server,
            serial: cert.as_ref().map(|c| c.serial.clone()),
            not_after: cert.as_ref().map(|c| c.not_after.unix_timestamp()),
            next_renewal: s.next_renewal,
            last_renewal: s.last_renewal,
            last_error: s.last_error,
            enrolled_at: Some(s.enrolled_at),
            recovery_expires: s.recovery_expires,
            tags: s.tags,
            registered_at: pending.as_ref().map(|p| p.registered_at),
            pending_key_sha256: pending.as_ref().and_then(|_| pending_key_sha256(&sd)),
            pending_device_id: pending.map(|p| p.device_id),
        });
    }
    if let Some(p) = pending {
        return Ok(Status {
            state: "pending",
            device_id: p.device_id,
            server: p.server,
            serial: None,
            not_after: None,
            next_renewal: None,
            last_renewal: None,
            last_error: None,
            enrolled_at: None,
            recovery_expires: None,
            tags: Vec::new(),
            registered_at: Some(p.registered_at),
            pending_device_id: None,
            pending_key_sha256: pending_key_sha256(&sd),
        });
    }
    Err(AgentError::NotEnrolled(dir.to_path_buf()))
}
