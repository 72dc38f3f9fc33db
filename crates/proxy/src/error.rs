//! The gateway's error type.

/// What can stop the gateway from starting or reloading.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pki(#[from] mtlsgate_pki::PkiError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Template(String),
    #[error("allowlist {path}: {message}")]
    Allowlist { path: String, message: String },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
