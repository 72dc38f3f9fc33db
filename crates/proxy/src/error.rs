//! The gateway's error type: what can stop it from starting or a reload from applying.
//! Each variant says what went wrong in words; none carries Debug text.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can stop the gateway from starting or reloading.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pki(#[from] mtlsgate_pki::PkiError),
    /// The server certificate and key could not be made into a TLS configuration.
    #[error("{path}: {reason}")]
    ServerCertificate { path: PathBuf, reason: String },
    /// A header template or header name in a route.
    #[error("{0}")]
    Template(String),
    #[error("allowlist {path}: {message}")]
    Allowlist { path: String, message: String },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the admin listener {0} must be a loopback address (127.0.0.1 or [::1]); it has no authentication")]
    AdminNotLoopback(SocketAddr),
    /// An upstream's TLS settings (CA bundle, client certificate) cannot be used.
    #[error("upstream TLS: {0}")]
    UpstreamTls(String),
    /// The device inventory's location cannot be used.
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("cannot create the TLS session ticket key: {0}")]
    Tickets(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
