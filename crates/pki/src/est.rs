//! The DER shapes EST (RFC 7030) carries: certs-only CMS (RFC 5652 `SignedData` with no
//! signers, the "degenerate" PKCS#7 that `openssl crl2pkcs7 -nocrl` writes), in which the
//! CA certificates and an issued certificate travel, and the CSR attributes a CA asks for
//! (`CsrAttrs`). Owns their encoding and decoding over the `cms` and `der` crates; knows
//! nothing of HTTP or base64.

use ::der::{Decode, Encode};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use x509_cert::Certificate;

/// Why certs-only CMS could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("certificate {index} is not DER that can be carried in CMS: {reason}")]
    Certificate { index: usize, reason: String },
    #[error("no certificates to carry")]
    Empty,
    #[error("the certificates cannot be encoded as CMS: {0}")]
    Encode(String),
    #[error("the answer is not CMS (PKCS#7) DER: {0}")]
    NotCms(String),
    #[error("the CMS content is {0}, not SignedData")]
    NotSignedData(String),
    #[error("the CMS SignedData holds no certificates")]
    NoCertificates,
}

/// Certs-only SignedData (DER) carrying `certs` (each DER) in the order given.
pub fn certs_only(certs: &[impl AsRef<[u8]>]) -> Result<Vec<u8>, CmsError> {
    if certs.is_empty() {
        return Err(CmsError::Empty);
    }
    let mut path = Vec::with_capacity(certs.len());
    for (index, c) in certs.iter().enumerate() {
        let cert = Certificate::from_der(c.as_ref()).map_err(|e| CmsError::Certificate {
            index,
            reason: e.to_string(),
        })?;
        path.push(cert);
    }
    let ci = ContentInfo::try_from(path).map_err(|e| CmsError::Encode(e.to_string()))?;
    ci.to_der().map_err(|e| CmsError::Encode(e.to_string()))
}

/// The certificates (each DER) of certs-only SignedData `der`, in the order carried.
pub fn certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, CmsError> {
    let ci = ContentInfo::from_der(der).map_err(|e| CmsError::NotCms(e.to_string()))?;
    if ci.content_type != const_oid::db::rfc5911::ID_SIGNED_DATA {
        return Err(CmsError::NotSignedData(ci.content_type.to_string()));
    }
    let sd = ci
        .content
        .decode_as::<SignedData>()
        .map_err(|e| CmsError::NotCms(e.to_string()))?;
    let set = sd.certificates.ok_or(CmsError::NoCertificates)?;
    let mut out = Vec::new();
    for c in set.0.iter() {
        if let CertificateChoices::Certificate(cert) = c {
            out.push(cert.to_der().map_err(|e| CmsError::NotCms(e.to_string()))?);
        }
    }
    if out.is_empty() {
        return Err(CmsError::NoCertificates);
    }
    Ok(out)
}

/// The CSR attributes of RFC 7030 §4.5.2 that this CA wants: an ECDSA P-256 key, signed
/// with ECDSA and SHA-256, and a subject common name (where the device ID goes). DER.
pub fn csr_attributes() -> Result<Vec<u8>, CmsError> {
    use ::der::asn1::SetOfVec;
    use ::der::Any;
    use const_oid::db::rfc4519::CN;
    use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_EC_PUBLIC_KEY, SECP_256_R_1};
    let enc = |e: ::der::Error| CmsError::Encode(e.to_string());
    let mut curve = SetOfVec::new();
    curve
        .insert(Any::encode_from(&SECP_256_R_1).map_err(enc)?)
        .map_err(enc)?;
    let key = x509_cert::attr::Attribute {
        oid: ID_EC_PUBLIC_KEY,
        values: curve,
    };
    let attrs: Vec<Any> = vec![
        Any::encode_from(&ECDSA_WITH_SHA_256).map_err(enc)?,
        Any::encode_from(&key).map_err(enc)?,
        Any::encode_from(&CN).map_err(enc)?,
    ];
    attrs.to_der().map_err(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.example")]).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn certificates_come_back_as_they_went_in() {
        let (a, b) = (cert("a"), cert("b"));
        let der = certs_only(&[&a, &b]).expect("cms");
        let back = certificates(&der).expect("read");
        // A SET OF is sorted by its DER encoding, so compare as sets.
        assert_eq!(back.len(), 2);
        assert!(back.contains(&a) && back.contains(&b));
    }

    #[test]
    fn csr_attributes_name_the_key_the_signature_and_the_common_name() {
        let der = csr_attributes().expect("attrs");
        // SEQUENCE { ecdsa-with-SHA256, { id-ecPublicKey, { prime256v1 } }, commonName }
        let (_, parsed) = x509_parser::der_parser::parse_der(&der).expect("DER");
        let items = parsed.as_sequence().expect("sequence");
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].as_oid().expect("oid").to_id_string(),
            "1.2.840.10045.4.3.2"
        );
        assert_eq!(items[2].as_oid().expect("oid").to_id_string(), "2.5.4.3");
        let attr = items[1].as_sequence().expect("attribute");
        assert_eq!(
            attr[0].as_oid().expect("oid").to_id_string(),
            "1.2.840.10045.2.1"
        );
        let curve = attr[1].as_set().expect("values");
        assert_eq!(
            curve[0].as_oid().expect("oid").to_id_string(),
            "1.2.840.10045.3.1.7"
        );
    }

    #[test]
    fn nothing_or_garbage_is_refused_with_a_reason() {
        assert!(matches!(
            certs_only(&[] as &[Vec<u8>]),
            Err(CmsError::Empty)
        ));
        assert!(matches!(
            certs_only(&[b"not a certificate".to_vec()]),
            Err(CmsError::Certificate { index: 0, .. })
        ));
        assert!(matches!(
            certificates(b"\x30\x03\x02\x01\x00"),
            Err(CmsError::NotCms(_))
        ));
    }
}
