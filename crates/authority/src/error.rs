//! The authority's errors: each a sentence a person (an operator, or the owner of a
//! device) understands, and each of a [`ErrorKind`] that the HTTPS API maps to a status.

use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::PkiError;
use mtlsgate_store::{DeviceStatus, StoreError};
use time::OffsetDateTime;

use crate::Action;

/// What kind of refusal an error is (the CA server maps it to an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is unreadable or unacceptable (400).
    BadInput,
    /// No valid credential: token, client certificate, recovery token (401).
    Unauthenticated,
    /// Refused because of the device's status or certificate (403).
    Forbidden,
    /// No such device or certificate (404).
    NotFound,
    /// The state changed or the name is taken (409).
    Conflict,
    /// The token or recovery token expired (410).
    Gone,
    /// Too many requests: try again later (429).
    TooMany,
    /// The inventory database cannot be reached right now: try again later (503).
    Unavailable,
    /// Something is wrong on the CA's side (500).
    Internal,
}

fn when(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .map(human_time)
        .unwrap_or_else(|_| at.to_string())
}

/// Errors from the authority.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{serial} is the root CA: a root cannot be revoked by a CRL it signs itself; to retire it, create a new CA and remove this one from every trust bundle")]
    RootRevocation { serial: String },
    #[error("the CA keys are not loaded, so nothing can be signed")]
    KeysNotLoaded,
    #[error("this is not an mtlsgate {what} (those start with {prefix})")]
    NotAToken {
        what: &'static str,
        prefix: &'static str,
    },
    #[error("invalid tag `{tag}`: use 1 to 64 letters, digits and - _ . : / =")]
    BadTag { tag: String },
    #[error("{what} {given}s is outside what this CA allows ({min}s to {max}s)")]
    BadLifetime {
        what: &'static str,
        given: i64,
        min: i64,
        max: i64,
    },
    #[error("device {id} is already enrolled; a token bound to that ID cannot enroll another device (make a token for a new ID)")]
    AlreadyEnrolled { id: String },
    #[error("{}", revoked_sentence(.id))]
    DeviceRevoked { id: String },
    #[error("device ID {id} is already in the inventory; ask for another ID, or for none to get a new one")]
    IdTaken { id: String },
    #[error("device {id} registered with another key; ask again with the key it registered with")]
    BootstrapOtherKey { id: String },
    #[error("this enrollment token is bound to device {bound}, not to {asked}")]
    TokenForOtherDevice { asked: String, bound: String },
    #[error(
        "this enrollment token is not for EST label `{label}` (the token's tags do not include it)"
    )]
    LabelNotInToken { label: String },
    #[error("{}", transition_refused(.id, *.status, *.action))]
    Transition {
        id: String,
        status: DeviceStatus,
        action: Action,
    },
    #[error("{}", not_active(.id, *.status))]
    NotActive { id: String, status: DeviceStatus },
    #[error("{what}, and no client certificate was presented")]
    NoClientCertificate { what: &'static str },
    #[error("the client certificate {subject} is not an administrator's (it has no URI SAN urn:mtlsgate:role:admin); use admin.crt from the CA directory, or one made with `mtlsgate cert issue admin NAME`")]
    NotAdmin { subject: String },
    #[error("the client certificate {subject} is not an administrator's: its serial {serial} is not recorded in the inventory as an administrator certificate; use admin.crt from the CA directory, or one made with `mtlsgate cert issue admin NAME`")]
    AdminNotRecorded { subject: String, serial: String },
    #[error("{reason}")]
    Import { reason: String },
    #[error("the client certificate is not valid: {reason}")]
    ClientCertificate { reason: String },
    #[error("the client certificate {subject} names no device of this CA")]
    NotADevice { subject: String },
    #[error("certificate {serial} is no longer device {id}'s current certificate ({current} replaced it); renew with the newest certificate")]
    Superseded {
        id: String,
        serial: String,
        current: String,
    },
    #[error("device {id} renewed with certificate {serial}, which was already replaced by {current}: another device holds the same identity (a clone). The device is quarantined; after checking it, an operator can allow it again (mtlsgate devices allow {id})")]
    CloneRenewal {
        id: String,
        serial: String,
        current: String,
    },
    #[error("certificate {serial} was revoked; a revoked certificate renews nothing")]
    CertRevoked { serial: String },
    #[error("the {what} is {len} bytes long; at most {max} are taken")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("this CA server enrolls devices with a token only (ca serve --no-approval-queue); ask the operator for one (mtlsgate token create)")]
    NoApprovalQueue,
    #[error("the approval queue is full ({waiting} devices wait for an operator: mtlsgate devices list --status pending); try again later, or enroll with a token (mtlsgate token create)")]
    QueueFull { waiting: u64 },
    #[error("too many enrollments without a token from {addr} (at most {burst}, then one per {refill} s); try again later, or enroll with a token (mtlsgate token create)")]
    TooManyEnrollments {
        addr: String,
        burst: u32,
        refill: i64,
    },
    #[error("the poll token does not belong to device {id}, or it was already spent")]
    PollToken { id: String },
    #[error("the recovery token is not one this CA gave device {id}")]
    RecoveryUnknown { id: String },
    #[error("device {id}'s recovery token expired at {}: the device was offline longer than the recovery grace; enroll it anew", when(*.at))]
    RecoveryExpired { id: String, at: i64 },
    #[error("certificate {serial} is not the last certificate of device {id}; recovery needs the device's last certificate")]
    RecoveryWrongCertificate { id: String, serial: String },
    #[error("certificate {serial} of device {id} was revoked ({reason}), so it recovers nothing; the device is quarantined: after checking it, an operator can allow it again (mtlsgate devices allow {id}), and then it can recover")]
    RecoveryRevoked {
        id: String,
        serial: String,
        reason: String,
    },
    #[error("the recovery signature does not verify with the key of device {id}'s last certificate (sign the SHA-256 of the new CSR's DER with the old key)")]
    RecoverySignature { id: String },
    #[error("device {id} presented a recovery token that was already replaced: another device holds the same identity (a clone). The device is quarantined; after checking it, an operator can allow it again (mtlsgate devices allow {id})")]
    Clone { id: String },
}

/// What is true of a revoked device ID, and the way back: the one sentence `token create`,
/// `cert issue`, the status machine and the agent (through the server) all show.
pub(crate) fn revoked_sentence(id: &str) -> String {
    format!(
        "device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token"
    )
}

fn not_active(id: &str, status: DeviceStatus) -> String {
    if status == DeviceStatus::Revoked {
        return revoked_sentence(id);
    }
    format!(
        "device {id} is {status}; only active devices get certificates{}",
        not_active_hint(status, id)
    )
}

fn not_active_hint(status: DeviceStatus, id: &str) -> String {
    match status {
        DeviceStatus::Pending => " (an operator must approve it first)".into(),
        DeviceStatus::Quarantined => {
            format!(
                " (after checking it, an operator can allow it again: mtlsgate devices allow {id})"
            )
        }
        DeviceStatus::Denied => " (an operator denied it)".into(),
        DeviceStatus::Revoked | DeviceStatus::Active => String::new(),
    }
}

fn transition_refused(id: &str, status: DeviceStatus, action: Action) -> String {
    let done = action.participle();
    if status == action.target() {
        return format!("device {id} is already {status}");
    }
    if status == DeviceStatus::Revoked {
        return revoked_sentence(id);
    }
    let sources: Vec<&str> = action.sources().iter().map(|s| s.as_str()).collect();
    format!(
        "device {id} is {status}; only {} devices can be {done}",
        sources.join(" or ")
    )
}

impl AuthorityError {
    /// The kind of refusal, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        use AuthorityError as A;
        use StoreError as S;
        match self {
            // Every store error is listed: a new one must be given its kind here, not fall
            // into "internal" (HTTP 500) unseen.
            A::Store(e) => match e {
                S::UnknownSerial(_) | S::UnknownDevice(_) => ErrorKind::NotFound,
                S::AlreadyRevoked { .. }
                | S::Duplicate(_)
                | S::DeviceExists(_)
                | S::StatusChanged { .. }
                | S::Changed { .. }
                | S::TokenUsed { .. } => ErrorKind::Conflict,
                S::TokenUnknown => ErrorKind::Unauthenticated,
                S::BadCursor(_) => ErrorKind::BadInput,
                S::TokenExpired { .. } => ErrorKind::Gone,
                S::Unavailable(_) | S::Full(_) => ErrorKind::Unavailable,
                S::QueueFull { .. } => ErrorKind::TooMany,
                // The inventory itself is missing, damaged, foreign or unreadable, or a
                // query failed: the CA's side is wrong.
                S::Open { .. }
                | S::Missing { .. }
                | S::Empty { .. }
                | S::NotSqlite { .. }
                | S::Truncated { .. }
                | S::Corrupt { .. }
                | S::NotAnInventory { .. }
                | S::NoInventory { .. }
                | S::InventoryExists { .. }
                | S::OtherCa { .. }
                | S::Migrate { .. }
                | S::Convert { .. }
                | S::AuditExport { .. }
                | S::BadLocation(_)
                | S::Query(_)
                | S::BadRow { .. } => ErrorKind::Internal,
            },
            A::Pki(e) => match e {
                PkiError::CsrRefused(_)
                | PkiError::InvalidInput { .. }
                | PkiError::ControlCharacter { .. }
                | PkiError::OtherDevice { .. }
                | PkiError::BadPem { .. }
                | PkiError::Missing { .. }
                | PkiError::BadSignature => ErrorKind::BadInput,
                PkiError::AlreadyExists(_) | PkiError::CaExists(_) => ErrorKind::Conflict,
                _ => ErrorKind::Internal,
            },
            A::RootRevocation { .. }
            | A::Transition { .. }
            | A::AlreadyEnrolled { .. }
            | A::IdTaken { .. } => ErrorKind::Conflict,
            A::KeysNotLoaded => ErrorKind::Internal,
            A::QueueFull { .. } | A::TooManyEnrollments { .. } => ErrorKind::TooMany,
            A::BadTag { .. }
            | A::TooLong { .. }
            | A::BadLifetime { .. }
            | A::RecoverySignature { .. }
            | A::RecoveryWrongCertificate { .. }
            | A::Import { .. } => ErrorKind::BadInput,
            A::NotAToken { .. }
            | A::ClientCertificate { .. }
            | A::NotADevice { .. }
            | A::PollToken { .. }
            | A::NoClientCertificate { .. }
            | A::RecoveryUnknown { .. } => ErrorKind::Unauthenticated,
            A::NotActive { .. }
            | A::DeviceRevoked { .. }
            | A::Superseded { .. }
            | A::CertRevoked { .. }
            | A::RecoveryRevoked { .. }
            | A::CloneRenewal { .. }
            | A::NoApprovalQueue
            | A::TokenForOtherDevice { .. }
            | A::BootstrapOtherKey { .. }
            | A::LabelNotInToken { .. }
            | A::NotAdmin { .. }
            | A::AdminNotRecorded { .. }
            | A::Clone { .. } => ErrorKind::Forbidden,
            A::RecoveryExpired { .. } => ErrorKind::Gone,
        }
    }
}

pub type Result<T, E = AuthorityError> = std::result::Result<T, E>;
