//! The agent's error type. Every variant reads as a sentence a person understands; the
//! binary prints it after the context it adds. Errors of the server's API are
//! [`ApiError`], which carries the server's own sentence.

use std::path::PathBuf;

use crate::http::ApiError;

/// What can go wrong in `mtlsgate-agent`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Pki(#[from] mtlsgate_pki::PkiError),
    #[error("no device is enrolled in {}: run `mtlsgate agent enroll --dir {} --server URL …` first", .0.display(), .0.display())]
    NotEnrolled(PathBuf),
    #[error("{} already holds the enrolled device {device_id}: choose another --dir, or give --force to enroll anew (the current certificate stays in place until the new one has arrived)", .dir.display())]
    AlreadyEnrolled { dir: PathBuf, device_id: String },
    #[error("{} already holds {file}, which no enrollment of this agent wrote: choose another --dir, or give --force to replace it once the new certificate has arrived", .dir.display())]
    ForeignFiles { dir: PathBuf, file: String },
    #[error("{} holds an enrollment of {device_id} with {server} that waits for approval: give --force to start over with {wanted}", .dir.display())]
    PendingElsewhere {
        dir: PathBuf,
        device_id: String,
        server: String,
        wanted: String,
    },
    #[error("{} {reason}", .dir.display())]
    UnsafeDir { dir: PathBuf, reason: String },
    #[error("{} cannot be read: {reason}", .path.display())]
    StateUnreadable { path: PathBuf, reason: String },
    #[error("{} has state format {found}, but this mtlsgate understands format {supported} only; it was written by another version of mtlsgate", .path.display())]
    StateFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("invalid --server `{url}`: {reason}")]
    BadServerUrl { url: String, reason: String },
    #[error("invalid --root-fingerprint `{value}`: expected the SHA-256 fingerprint of the CA's root certificate, 64 hex digits (colons allowed), as `mtlsgate cert inspect root.crt` shows it")]
    BadFingerprint { value: String },
    #[error("{path}: {reason}")]
    BadTrust { path: String, reason: String },
    #[error("the enrollment of {device_id} was denied by {server}: {message}")]
    Denied {
        device_id: String,
        server: String,
        message: String,
    },
    #[error("{server} issued a certificate this device cannot use: {reason}")]
    BadIssued { server: String, reason: String },
    #[error(
        "the certificate of {device_id} expired at {expired}, and it cannot be recovered: {reason}"
    )]
    CannotRecover {
        device_id: String,
        expired: String,
        reason: String,
    },
    #[error("the key and certificate in {} cannot be used for TLS: {reason}", .dir.display())]
    BadIdentity { dir: PathBuf, reason: String },
    #[error("another mtlsgate agent has been working in {} for {secs} s (it holds the directory's lock); try again when it is done", .dir.display())]
    Locked { dir: PathBuf, secs: u64 },
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("cannot make a key or certificate request: {0}")]
    Key(String),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub(crate) fn io(what: impl Into<String>, cause: std::io::Error) -> Self {
        AgentError::Io {
            what: what.into(),
            cause,
        }
    }

    /// The server's API error, when this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            AgentError::Api(e) => Some(e),
            _ => None,
        }
    }
}

impl From<mtlsgate_contract::UrlError> for AgentError {
    fn from(e: mtlsgate_contract::UrlError) -> Self {
        AgentError::BadServerUrl {
            url: e.url,
            reason: e.reason,
        }
    }
}
