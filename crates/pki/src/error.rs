//! The PKI library's error type. Every variant reads as a sentence a person understands:
//! the binary prints it as is, after the context it adds.

use std::path::PathBuf;

/// What can go wrong in `mtlsgate-pki`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not valid PEM: {reason}")]
    BadPem { path: String, reason: String },
    #[error("{path} holds no {what}")]
    Missing { path: String, what: String },
    #[error("{path}: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error("{path}: {reason}")]
    BadKey { path: String, reason: String },
    #[error("the passphrase does not decrypt {path} (wrong passphrase?)")]
    WrongPassphrase { path: String },
    #[error("{path} is encrypted: give its passphrase with --passphrase-file")]
    PassphraseNeeded { path: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("a CA already exists in {0}: refusing to overwrite it (choose another --dir, or remove that directory yourself)")]
    CaExists(PathBuf),
    #[error("no CA in {0}: run `mtlsgate ca init --dir {0}` first")]
    NoCa(PathBuf),
    #[error("{path} was written by a newer mtlsgate (CA format {found}, this version understands up to {supported}); upgrade mtlsgate")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: {reason}")]
    BadCaConfig { path: PathBuf, reason: String },
    #[error("CSR refused: {0}")]
    CsrRefused(String),
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Pkcs12(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;
