//! What the CA needs to know about a device's own key: whether a device's CSR is
//! acceptable (readable, a strong enough key, a valid signature — its subject and SANs
//! are ignored, because the CA names the device), and whether a signature was made by a
//! certificate's key (the proof a device gives when it recovers after its certificate
//! expired). Certificates for devices are signed by [`crate::ca::Signer::sign_device`].

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{PkiError, Result};
use crate::pemfile;
use crate::profile::{self, Curve, KeyClass, WeakKey, MIN_RSA_BITS};

/// A device's CSR that passed the checks.
#[derive(Debug, Clone)]
pub struct DeviceCsr {
    /// The CSR itself, DER.
    pub der: Vec<u8>,
    /// Its public key (SubjectPublicKeyInfo, DER), which the certificate will carry.
    pub spki_der: Vec<u8>,
    pub is_rsa: bool,
}

/// The kinds of device key accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

/// Refuses keys the profile ([`crate::profile`]) does not accept, in a sentence.
fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> std::result::Result<KeyKind, String> {
    match profile::check_key(spki) {
        Ok(KeyClass::Rsa { .. }) => Ok(KeyKind::Rsa),
        Ok(KeyClass::Ec {
            curve: Some(curve), ..
        }) => Ok(match curve {
            Curve::P256 => KeyKind::EcP256,
            Curve::P384 => KeyKind::EcP384,
            Curve::P521 => KeyKind::EcP521,
        }),
        Ok(KeyClass::Ed25519) => Ok(KeyKind::Ed25519),
        Err(WeakKey::SmallRsa { bits }) => Err(format!(
            "its RSA key is {bits} bits; at least {MIN_RSA_BITS} bits are required (or use ECDSA P-256 or Ed25519)"
        )),
        Err(WeakKey::Curve { oid }) => Err(format!(
            "its elliptic curve ({}) is not accepted; use P-256, P-384 or P-521",
            WeakKey::curve_shown(&oid)
        )),
        // check_key accepts no other class; refuse it as an unknown type all the same.
        Ok(KeyClass::Ec { curve: None, .. } | KeyClass::Dsa | KeyClass::Other { .. })
        | Err(WeakKey::Dsa | WeakKey::Type { .. }) => {
            let oid = spki.algorithm.algorithm.to_id_string();
            Err(format!(
                "its key type ({oid}) is not supported; use ECDSA P-256/P-384, Ed25519, or RSA of {MIN_RSA_BITS} bits or more"
            ))
        }
    }
}

/// Checks a device's CSR (PEM or DER): it must be readable, hold a key at least as strong
/// as P-256, RSA 2048 or Ed25519, and carry a signature that verifies with that key.
pub fn check_device_csr(data: &[u8]) -> Result<DeviceCsr> {
    let blocks = pemfile::parse_blocks("the CSR", data)?;
    let block = blocks
        .into_iter()
        .find(|b| b.label.contains("CERTIFICATE REQUEST") || b.label == "DER")
        .ok_or_else(|| {
            PkiError::CsrRefused(
                "it holds no certificate signing request (expected `-----BEGIN CERTIFICATE REQUEST-----`)".into(),
            )
        })?;
    let (_, csr) = X509CertificationRequest::from_der(&block.der).map_err(|e| {
        PkiError::CsrRefused(format!(
            "it is not a readable CSR: {}",
            crate::error::parse_reason(&e)
        ))
    })?;
    let spki = &csr.certification_request_info.subject_pki;
    let kind = key_kind(spki).map_err(PkiError::CsrRefused)?;
    csr.verify_signature().map_err(|_| {
        PkiError::CsrRefused(
            "its signature does not verify: the CSR was altered after it was made, or it was not signed with the key it contains".into(),
        )
    })?;
    Ok(DeviceCsr {
        spki_der: spki.raw.to_vec(),
        is_rsa: kind == KeyKind::Rsa,
        der: block.der,
    })
}

/// Verifies `signature` over `message` with the public key of the certificate `cert_der`,
/// in that key's usual scheme: ECDSA (ASN.1 DER signature) with SHA-256 for P-256,
/// SHA-384 for P-384 and SHA-512 for P-521; Ed25519; RSA PKCS#1 v1.5 with SHA-256.
/// (That is what signing `message` with the key in rcgen, OpenSSL's `openssl dgst
/// -sha256 -sign` for P-256 and RSA, or Go's crypto.Signer gives.)
pub fn verify_signature_by_certificate_key(
    cert_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    let (_, x) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::BadCertificate {
            path: "certificate".into(),
            reason: format!("cannot be parsed: {}", crate::error::parse_reason(&e)),
        })?;
    let spki = x.public_key();
    let kind = key_kind(spki).map_err(|reason| PkiError::BadCertificate {
        path: "certificate".into(),
        reason,
    })?;
    let alg: &'static dyn VerificationAlgorithm = match kind {
        KeyKind::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
        KeyKind::EcP256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyKind::EcP384 => &signature::ECDSA_P384_SHA384_ASN1,
        KeyKind::EcP521 => &signature::ECDSA_P521_SHA512_ASN1,
        KeyKind::Ed25519 => &signature::ED25519,
    };
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| PkiError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PublicKeyData, SigningKey};

    fn csr(key: &KeyPair) -> Vec<u8> {
        CertificateParams::new(vec!["ignored.example".into()])
            .expect("params")
            .serialize_request(key)
            .expect("csr")
            .der()
            .to_vec()
    }

    #[test]
    fn device_csrs_need_a_strong_key_and_a_valid_signature() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg).expect("key");
            let c = check_device_csr(&csr(&key)).expect("accepted");
            assert_eq!(c.spki_der, key.subject_public_key_info());
            assert!(!c.is_rsa);
        }
        let mut bad = csr(&KeyPair::generate().expect("key"));
        let n = bad.len();
        bad[n - 5] ^= 0x55;
        let e = check_device_csr(&bad).expect_err("refused");
        assert!(
            e.to_string().contains("its signature does not verify"),
            "{e}"
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=w",
            ])
            .args(["-keyout", "/dev/null"])
            .output()
            .expect("openssl");
        let e = check_device_csr(&out.stdout).expect_err("weak");
        assert_eq!(
            e.to_string(),
            "CSR refused: its RSA key is 1024 bits; at least 2048 bits are required (or use ECDSA P-256 or Ed25519)"
        );
        let e = check_device_csr(b"garbage").expect_err("unreadable");
        assert!(e.to_string().contains("not valid PEM"), "{e}");
    }

    #[test]
    fn a_signature_by_the_certificates_key_verifies_and_nothing_else_does() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg).expect("key");
            let cert = CertificateParams::new(vec!["d".into()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            let sig = key.sign(b"message").expect("sign");
            verify_signature_by_certificate_key(cert.der(), b"message", &sig).expect("verifies");
            let e = verify_signature_by_certificate_key(cert.der(), b"other", &sig)
                .expect_err("other message");
            assert!(matches!(e, PkiError::BadSignature), "{e}");
            let other = KeyPair::generate_for(alg).expect("key");
            let sig = other.sign(b"message").expect("sign");
            assert!(verify_signature_by_certificate_key(cert.der(), b"message", &sig).is_err());
        }
    }
}
