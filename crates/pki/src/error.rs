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
    #[error("cannot read the CA in {0}: permission denied (run as the user that owns it, or give this user read access)")]
    CaDenied(PathBuf),
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
    #[error("{field} contains a control character ({shown}): names with control characters (CR, LF, NUL, ESC, …) can forge log lines, headers and terminal output, so they are refused")]
    ControlCharacter { field: String, shown: String },
    #[error("{san} names another device than {cn}; a client certificate names one device")]
    OtherDevice { san: String, cn: String },
    #[error("{path} is encrypted: put its passphrase in a file and give it with --key-passphrase-file (key_passphrase_file in the configuration file), as nginx's ssl_password_file")]
    KeyPassphraseNeeded { path: String },
    #[error("the server key in {path} is a {bits}-bit RSA key; at least 2048 bits are required (OpenSSL 3 and nginx refuse it too: \"ee key too small\"); make a new one with openssl genrsa -out server.key 2048")]
    ServerKeyTooSmall { path: String, bits: usize },
    #[error("{} already exists: refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    #[error("{0}")]
    Pkcs12(String),
    #[error("the signature does not verify with the certificate's key")]
    BadSignature,
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// What went wrong parsing a certificate, CRL or CSR, in words. x509-parser's errors are
/// wrapped in nom's, whose `Display` is `Debug` text ("Parsing Error: InvalidVersion").
pub(crate) fn parse_reason(e: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    use x509_parser::error::X509Error as X;
    match e {
        x509_parser::nom::Err::Incomplete(_) => {
            "the data ends too early (the file is truncated)".into()
        }
        x509_parser::nom::Err::Error(x) | x509_parser::nom::Err::Failure(x) => match x {
            X::Der(_) | X::NomError(_) | X::Generic => "its DER encoding is damaged".into(),
            other => other.to_string(),
        },
    }
}
