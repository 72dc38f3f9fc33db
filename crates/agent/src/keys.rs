//! Keys and requests made on the device: a fresh ECDSA P-256 key and its CSR for every
//! enrollment, renewal and recovery, the recovery signature, and the checks that what the
//! server issued belongs to that key.

use base64::Engine as _;
use mtlsgate_pki::KeyPair;
use rcgen::SigningKey as _;
use sha2::Digest as _;
use x509_parser::prelude::parse_x509_certificate;

use crate::error::{AgentError, Result};

/// A key made on the device and the CSR for it.
pub(crate) struct NewKey {
    pub key: KeyPair,
    pub csr_pem: String,
    pub csr_der: Vec<u8>,
}

/// Makes an ECDSA P-256 key and a CSR signed by it. Without a device ID (first
/// enrollment) the CSR names nobody: the server assigns the ID and writes the subject.
/// With one (renewal, recovery) the subject is `CN=<device ID>`.
pub(crate) fn new_key_and_csr(device_id: Option<&str>) -> Result<NewKey> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = device_id {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, id);
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let csr_pem = csr.pem().map_err(|e| AgentError::Key(e.to_string()))?;
    let csr_der = csr.der().to_vec();
    Ok(NewKey {
        key,
        csr_pem,
        csr_der,
    })
}

/// The recovery proof (contract: `POST /v1/recover`): the old key signs the 32 bytes of
/// SHA-256 over the new CSR's DER with its own signature algorithm (for the agent's
/// P-256 keys: ECDSA with SHA-256, DER-encoded, as in X.509), base64 (standard alphabet,
/// with padding). The server checks it with the public key of the expired certificate.
pub(crate) fn recovery_signature(old_key: &KeyPair, csr_der: &[u8]) -> Result<String> {
    let digest = sha2::Sha256::digest(csr_der);
    let sig = old_key
        .sign(&digest)
        .map_err(|e| AgentError::Key(format!("the old key cannot sign ({e})")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sig))
}

/// The subject public key (bit string contents) of a DER certificate.
pub(crate) fn public_key_of_cert(der: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = parse_x509_certificate(der).ok()?;
    Some(x.public_key().subject_public_key.data.to_vec())
}

/// notBefore and notAfter of a DER certificate, unix seconds.
pub(crate) fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, x) = parse_x509_certificate(der).ok()?;
    Some((
        x.validity().not_before.timestamp(),
        x.validity().not_after.timestamp(),
    ))
}

/// A device ID the agent is willing to use in a URL path, an environment variable and a
/// file: letters, digits, `.`, `-`, `_`, at most 253 characters.
pub(crate) fn usable_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer as _;

    #[test]
    fn csr_names_nobody_at_enrollment_and_the_device_later() {
        let k = new_key_and_csr(None).expect("csr");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&k.csr_der)
                .expect("parse");
        assert!(csr.verify_signature().is_ok());
        assert_eq!(
            csr.certification_request_info
                .subject
                .iter_attributes()
                .count(),
            0
        );
        assert!(k.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));

        let k = new_key_and_csr(Some("dev1.d.example.local")).expect("csr");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&k.csr_der)
                .expect("parse");
        let cn: Vec<_> = csr
            .certification_request_info
            .subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, ["dev1.d.example.local"]);
    }

    #[test]
    fn recovery_signature_verifies_with_the_old_public_key() {
        let old = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let new = new_key_and_csr(Some("d1")).expect("csr");
        let sig_b64 = recovery_signature(&old, &new.csr_der).expect("sign");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .expect("base64");
        let digest = sha2::Sha256::digest(&new.csr_der);
        let pk = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            old.public_key_raw(),
        );
        pk.verify(&digest, &sig)
            .expect("verifies over SHA-256(CSR DER)");
        assert!(pk.verify(&new.csr_der, &sig).is_err());
    }

    #[test]
    fn device_ids_with_odd_characters_are_unusable() {
        assert!(usable_device_id("3f9ca1.d.example.local"));
        assert!(usable_device_id("dev-1_a"));
        assert!(!usable_device_id(""));
        assert!(!usable_device_id("../etc"));
        assert!(!usable_device_id("a/b"));
        assert!(!usable_device_id("a\nb"));
        assert!(!usable_device_id(&"a".repeat(254)));
    }
}
