//! `mtlsgate-pki`: everything about certificates that needs no network and no runtime.
//! Keys, the private CA (init, issue, CSR signing, CRLs), PKCS#12, identity extraction
//! (nginx-compatible DN strings, device ID, SPIFFE ID) and verification with
//! explanations. Synchronous; no tokio, no sockets, no database.

#![forbid(unsafe_code)]

pub mod ca;
pub mod certinfo;
mod der;
pub mod device;
pub mod dn;
pub mod duration;
pub mod error;
pub mod est;
pub mod fsutil;
pub mod key;
pub mod names;
pub mod p12;
pub mod pemfile;
pub mod printable;
pub mod profile;
pub mod server_identity;
pub mod verify;

pub use error::{PkiError, Result};
pub use rcgen::KeyPair;
pub use rustls_pki_types as pki_types;
