//! Reading PEM (and DER) files into typed DER blobs, with errors that name the file.

use std::path::Path;

use crate::error::{PkiError, Result};
use crate::fsutil;

/// One PEM block: its label and DER contents.
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
    /// True for legacy OpenSSL "Proc-Type: 4,ENCRYPTED" blocks.
    pub legacy_encrypted: bool,
}

/// Parses every PEM block in `data`. Data that is not PEM at all is returned as one
/// block labelled `DER`, so callers can accept DER files too.
pub fn parse_blocks(name: &str, data: &[u8]) -> Result<Vec<Block>> {
    let looks_pem = data.windows(11).take(4096).any(|w| w == b"-----BEGIN ");
    if !looks_pem {
        if data.first() == Some(&0x30) {
            return Ok(vec![Block {
                label: "DER".into(),
                der: data.to_vec(),
                legacy_encrypted: false,
            }]);
        }
        return Err(PkiError::BadPem {
            path: name.into(),
            reason: "no `-----BEGIN` line found and it is not DER either".into(),
        });
    }
    let parsed = pem::parse_many(data).map_err(|e| PkiError::BadPem {
        path: name.into(),
        reason: e.to_string(),
    })?;
    Ok(parsed
        .into_iter()
        .map(|p| Block {
            legacy_encrypted: p.headers().get("Proc-Type").is_some(),
            label: p.tag().to_string(),
            der: p.into_contents(),
        })
        .collect())
}

/// Reads a file and parses its PEM blocks.
pub fn read_blocks(path: &Path) -> Result<Vec<Block>> {
    let data = fsutil::read(path)?;
    parse_blocks(&path.display().to_string(), &data)
}

/// All certificates in a file, in file order (leaf first for a chain file).
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>> {
    let name = path.display().to_string();
    certs_from_blocks(&name, read_blocks(path)?)
}

/// Certificates out of already-parsed blocks; errors if there are none.
pub fn certs_from_blocks(name: &str, blocks: Vec<Block>) -> Result<Vec<Vec<u8>>> {
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| {
            b.label == "CERTIFICATE" || b.label == "TRUSTED CERTIFICATE" || b.label == "DER"
        })
        .map(|b| b.der)
        .collect();
    if certs.is_empty() {
        return Err(PkiError::Missing {
            path: name.into(),
            what: "certificate (expected a `-----BEGIN CERTIFICATE-----` block)".into(),
        });
    }
    for der in &certs {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(PkiError::BadCertificate {
                path: name.into(),
                reason: format!(
                    "a certificate in it cannot be parsed: {}",
                    crate::error::parse_reason(&e)
                ),
            });
        }
    }
    Ok(certs)
}

/// All CRLs in a file.
pub fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>> {
    let name = path.display().to_string();
    crls_from_blocks(&name, read_blocks(path)?)
}

/// CRLs out of already-parsed blocks; errors if there are none or one cannot be parsed.
pub fn crls_from_blocks(name: &str, blocks: Vec<Block>) -> Result<Vec<Vec<u8>>> {
    let crls: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.label == "X509 CRL" || b.label == "DER")
        .map(|b| b.der)
        .collect();
    if crls.is_empty() {
        return Err(PkiError::Missing {
            path: name.into(),
            what: "CRL (expected a `-----BEGIN X509 CRL-----` block)".into(),
        });
    }
    for der in &crls {
        if let Err(e) = x509_parser::parse_x509_crl(der) {
            return Err(PkiError::BadCertificate {
                path: name.into(),
                reason: format!(
                    "a CRL in it cannot be parsed: {}",
                    crate::error::parse_reason(&e)
                ),
            });
        }
    }
    Ok(crls)
}

/// Encodes DER as PEM with the given label.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
