//! The private CA on disk: a root and an intermediate (root → intermediate → leaf, as the
//! nginx's `ssl_verify_depth 2` expects), their keys, and the operations that need them:
//! issuing leaves, signing CSRs, and signing CRLs. This module owns the CA directory's
//! layout and format version; it never touches the inventory database (the caller
//! records what was issued) and never writes a file except whole (temp + rename).
//!
//! For client certificates **the device ID is the subject CN**. Issuing and CSR signing
//! apply one name rule ([`crate::names`]): no control characters anywhere, and no DNS SAN
//! in the device domain other than the CN.
//!
//! Layout of a CA directory:
//! ```text
//! ca.toml            format version, name, device domain, key type, whether keys are encrypted
//! root.crt  root.key                  the root CA (keys 0600, PKCS#8, optionally encrypted)
//! intermediate.crt  intermediate.key  the issuing CA
//! ca.crt             the trust bundle: root + intermediate
//! inventory.db       the inventory (written by mtlsgate-store)
//! ```
//!
//! The rooms: `dir` (the directory: `ca init`, staging, `ca.toml`), `issue` (leaves the CA
//! makes with its own key, device certificates, and the name checks), `csr` (signing a
//! CSR), `crl` (revocation reasons and CRLs). Which keys are strong enough is
//! [`crate::profile`]'s rule.

mod crl;
mod csr;
mod dir;
mod issue;
#[cfg(test)]
mod tests;

pub use crate::profile::MIN_RSA_BITS;
pub use crl::{Crls, Reason, Revoked};
pub use dir::{init, record_database, InitOptions, StagedCa};
pub use issue::{check_name, normalize_device_id, ROLE_URI_PREFIX};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::PublicKeyData;
use rcgen::{Issuer, KeyPair, SerialNumber};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::certinfo::CertInfo;
use crate::error::{PkiError, Result};
use crate::fsutil::{self};
use crate::key::{self, KeyType};
use crate::pemfile;

/// The CA directory format this version writes and understands.
pub const CA_FORMAT: u32 = 1;
/// Default device domain for device IDs (`<id>.<domain>`).
pub const DEFAULT_DEVICE_DOMAIN: &str = "d.mtlsgate.local";

/// What kind of certificate an inventory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Root,
    Intermediate,
    Server,
    Client,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Root => "root",
            CertKind::Intermediate => "intermediate",
            CertKind::Server => "server",
            CertKind::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "root" => Some(CertKind::Root),
            "intermediate" => Some(CertKind::Intermediate),
            "server" => Some(CertKind::Server),
            "client" => Some(CertKind::Client),
            _ => None,
        }
    }
}

/// `ca.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaMeta {
    pub format: u32,
    pub name: String,
    pub device_domain: String,
    pub key_type: KeyType,
    pub encrypted: bool,
    /// Where the inventory lives when it is not `inventory.db` in the directory: a
    /// PostgreSQL URL without its password (`ca init --database` records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whether that URL had a password, which is not recorded (it stays with
    /// `--database` or `MTLSGATE_DATABASE`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub database_password: bool,
}

/// A certificate the CA just made, for the caller to write and record.
#[derive(Debug, Clone)]
pub struct Issued {
    pub kind: CertKind,
    pub der: Vec<u8>,
    pub info: CertInfo,
}

impl Issued {
    fn new(kind: CertKind, der: Vec<u8>) -> Result<Self> {
        let info = CertInfo::from_der(&der)?;
        Ok(Issued { kind, der, info })
    }

    pub fn pem(&self) -> String {
        pemfile::to_pem("CERTIFICATE", &self.der)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A random positive serial of 127 bits (RFC 5280 asks for at least 64 bits of entropy
/// from CAs; the top byte is 0x40..=0x7f so the DER never needs a sign byte).
pub fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] = (b[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&b)
}

/// An opened CA directory (certificates and metadata; keys are loaded by `signer`).
pub struct Ca {
    pub dir: PathBuf,
    pub meta: CaMeta,
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub kind: CertKind,
    /// The certificate's name: CN for servers, and for clients without a device ID.
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub device_id: Option<String>,
    pub validity: Duration,
    pub key_type: KeyType,
}

/// The intermediate's key and name, ready to sign.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    root_issuer: Issuer<'static, KeyPair>,
    intermediate_der: Vec<u8>,
    root_der: Vec<u8>,
}

impl Ca {
    /// Opens the CA in `dir`, refusing a missing CA or one written by a newer version.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("ca.toml");
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        // A CA this user may not read is not a missing one (`Path::exists` says false to both).
        match std::fs::metadata(&meta_path) {
            Ok(_) => {}
            Err(e) if denied(&e) => return Err(PkiError::CaDenied(dir.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::NoCa(dir.to_path_buf()))
            }
            Err(cause) => {
                return Err(PkiError::Read {
                    path: meta_path,
                    cause,
                })
            }
        }
        let bytes = match fsutil::read(&meta_path) {
            Err(PkiError::Read { cause, .. }) if denied(&cause) => {
                return Err(PkiError::CaDenied(dir.to_path_buf()))
            }
            r => r?,
        };
        let text = String::from_utf8(bytes).map_err(|_| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let v: Version = toml::from_str(&text).map_err(|e| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        if v.format > CA_FORMAT {
            return Err(PkiError::NewerFormat {
                path: meta_path,
                found: v.format,
                supported: CA_FORMAT,
            });
        }
        let meta: CaMeta = toml::from_str(&text).map_err(|e| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        let root_der = first_cert(&dir.join("root.crt"))?;
        let intermediate_der = first_cert(&dir.join("intermediate.crt"))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            meta,
            root_der,
            intermediate_der,
        })
    }

    /// The trust bundle (root + intermediate) as PEM.
    pub fn bundle_pem(&self) -> String {
        format!(
            "{}{}",
            pemfile::to_pem("CERTIFICATE", &self.root_der),
            pemfile::to_pem("CERTIFICATE", &self.intermediate_der)
        )
    }

    /// Loads the CA keys (decrypting them with `passphrase` if they are encrypted).
    pub fn signer(&self, passphrase: Option<&[u8]>) -> Result<Signer> {
        let int_key = key::read_key(&self.dir.join("intermediate.key"), passphrase)?;
        let root_key = key::read_key(&self.dir.join("root.key"), passphrase)?;
        check_pair(
            &self.intermediate_der,
            &int_key,
            &self.dir.join("intermediate.crt"),
            &self.dir.join("intermediate.key"),
        )?;
        check_pair(
            &self.root_der,
            &root_key,
            &self.dir.join("root.crt"),
            &self.dir.join("root.key"),
        )?;
        let issuer = Issuer::from_ca_cert_der(&self.intermediate_der.clone().into(), int_key)?;
        let root_issuer = Issuer::from_ca_cert_der(&self.root_der.clone().into(), root_key)?;
        Ok(Signer {
            issuer,
            root_issuer,
            intermediate_der: self.intermediate_der.clone(),
            root_der: self.root_der.clone(),
        })
    }
}

fn first_cert(path: &Path) -> Result<Vec<u8>> {
    pemfile::read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Missing {
            path: path.display().to_string(),
            what: "certificate".into(),
        })
}

/// Refuses a key that does not belong to a certificate.
pub fn check_pair(cert_der: &[u8], key: &KeyPair, cert: &Path, key_path: &Path) -> Result<()> {
    let (_, x) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::BadCertificate {
            path: cert.display().to_string(),
            reason: format!("cannot be parsed: {}", crate::error::parse_reason(&e)),
        })?;
    if x.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(PkiError::KeyMismatch {
            cert: cert.display().to_string(),
            key: key_path.display().to_string(),
        });
    }
    Ok(())
}

impl Signer {
    /// The chain a leaf is served with: the intermediate, PEM.
    pub fn intermediate_pem(&self) -> String {
        pemfile::to_pem("CERTIFICATE", &self.intermediate_der)
    }

    /// Bundle: root + intermediate, PEM.
    pub fn bundle_pem(&self) -> String {
        format!(
            "{}{}",
            pemfile::to_pem("CERTIFICATE", &self.root_der),
            self.intermediate_pem()
        )
    }
}
