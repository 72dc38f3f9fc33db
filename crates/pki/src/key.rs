//! Private keys: generation (P-256, P-384, Ed25519, RSA), loading from PEM (plain or
//! encrypted PKCS#8, SEC1, PKCS#1), and writing as PKCS#8, optionally encrypted with
//! PBES2 (PBKDF2-HMAC-SHA256 + AES-256-CBC), which OpenSSL reads.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use pkcs8::der::Decode;
use rand::RngCore;
use rcgen::{KeyPair, RsaKeySize};
use zeroize::Zeroizing;

use crate::error::{PkiError, Result};
use crate::fsutil;
use crate::pemfile;

/// PBKDF2 iterations for encrypted keys (OWASP 2023 guidance for PBKDF2-HMAC-SHA256 is 600k;
/// CA keys are decrypted once per command, so the cost is paid rarely).
const PBKDF2_ITERATIONS: u32 = 600_000;

/// The key algorithms mtlsgate generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    P256,
    P384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
        }
    }

    /// Generates a fresh key pair of this type.
    pub fn generate(self) -> Result<KeyPair> {
        let kp = match self {
            KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)?
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)?
            }
        };
        Ok(kp)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PkiError::InvalidInput {
                what: "key type",
                value: s.into(),
                reason: "expected one of p256, p384, ed25519, rsa2048, rsa3072, rsa4096".into(),
            })
    }
}

/// Serializes a key pair as PKCS#8 PEM, encrypted when a passphrase is given.
pub fn to_pkcs8_pem(key: &KeyPair, passphrase: Option<&[u8]>) -> Result<Zeroizing<String>> {
    let der = key.serialize_der();
    match passphrase {
        None => Ok(Zeroizing::new(pemfile::to_pem("PRIVATE KEY", &der))),
        Some(pass) => {
            let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|e| PkiError::BadKey {
                path: "generated key".into(),
                reason: e.to_string(),
            })?;
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut salt);
            rand::thread_rng().fill_bytes(&mut iv);
            let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(
                PBKDF2_ITERATIONS,
                &salt,
                &iv,
            )
            .map_err(|e| PkiError::BadKey {
                path: "generated key".into(),
                reason: e.to_string(),
            })?;
            let doc = info
                .encrypt_with_params(params, pass)
                .map_err(|e| PkiError::BadKey {
                    path: "generated key".into(),
                    reason: format!("encryption failed: {e}"),
                })?;
            Ok(Zeroizing::new(pemfile::to_pem(
                "ENCRYPTED PRIVATE KEY",
                doc.as_bytes(),
            )))
        }
    }
}

/// Writes a key pair as a 0600 PKCS#8 PEM file (atomically).
pub fn write_key(path: &Path, key: &KeyPair, passphrase: Option<&[u8]>) -> Result<()> {
    let pem = to_pkcs8_pem(key, passphrase)?;
    fsutil::write_atomic(path, pem.as_bytes(), fsutil::SECRET_MODE)
}

/// Loads a private key from PEM (or DER) data. Encrypted PKCS#8 needs `passphrase`.
pub fn parse_key(name: &str, data: &[u8], passphrase: Option<&[u8]>) -> Result<KeyPair> {
    let blocks = pemfile::parse_blocks(name, data)?;
    let block = blocks
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY") || b.label == "DER")
        .ok_or_else(|| PkiError::Missing {
            path: name.into(),
            what: "private key (expected a `-----BEGIN PRIVATE KEY-----` block)".into(),
        })?;
    if block.legacy_encrypted {
        return Err(PkiError::BadKey {
            path: name.into(),
            reason: "this is a legacy OpenSSL-encrypted key (Proc-Type/DEK-Info), which is not supported; convert it with `openssl pkcs8 -topk8 -in OLD -out NEW`".into(),
        });
    }
    let der = Zeroizing::new(if block.label == "ENCRYPTED PRIVATE KEY" {
        let pass = passphrase.ok_or_else(|| PkiError::PassphraseNeeded { path: name.into() })?;
        let enc =
            pkcs8::EncryptedPrivateKeyInfo::from_der(&block.der).map_err(|e| PkiError::BadKey {
                path: name.into(),
                reason: format!("encrypted key cannot be parsed ({e})"),
            })?;
        let doc = enc
            .decrypt(pass)
            .map_err(|_| PkiError::WrongPassphrase { path: name.into() })?;
        doc.as_bytes().to_vec()
    } else {
        block.der
    });
    KeyPair::try_from(der.as_slice()).map_err(|e| PkiError::BadKey {
        path: name.into(),
        reason: format!("not a usable private key ({e})"),
    })
}

/// Reads and loads a private key file.
pub fn read_key(path: &Path, passphrase: Option<&[u8]>) -> Result<KeyPair> {
    let data = Zeroizing::new(fsutil::read(path)?);
    parse_key(&path.display().to_string(), &data, passphrase)
}

/// Reads a passphrase file: the first line, without its line ending. An empty passphrase
/// is refused, because it protects nothing.
pub fn read_passphrase(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let data = Zeroizing::new(fsutil::read(path)?);
    let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(PkiError::InvalidInput {
            what: "passphrase file",
            value: path.display().to_string(),
            reason: "its first line is empty".into(),
        });
    }
    Ok(Zeroizing::new(line.to_vec()))
}
