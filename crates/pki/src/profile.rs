//! The key profile, written once: which public keys mtlsgate accepts (RSA of at least
//! [`MIN_RSA_BITS`] bits, ECDSA on P-256, P-384 or P-521, Ed25519) and the OIDs that name
//! them. Issuing, CSR signing, device CSRs, server keys and verification all ask here; each
//! keeps only its own wording of a refusal. This module owns no sentence a user sees.

use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Smallest RSA modulus accepted anywhere (keys, CSRs, certificates in a chain).
pub const MIN_RSA_BITS: usize = 2048;

/// Named curve P-256 (prime256v1, secp256r1).
pub const OID_P256: &str = "1.2.840.10045.3.1.7";
/// Named curve P-384 (secp384r1).
pub const OID_P384: &str = "1.3.132.0.34";
/// Named curve P-521 (secp521r1).
pub const OID_P521: &str = "1.3.132.0.35";
/// Ed25519 public keys.
pub const OID_ED25519: &str = "1.3.101.112";
/// DSA public keys (never accepted: TLS 1.3 and rustls have no DSA).
pub const OID_DSA: &str = "1.2.840.10040.4.1";

/// An elliptic curve mtlsgate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The curve a dotted OID names, if it is one of the accepted ones.
    pub fn from_oid(oid: &str) -> Option<Curve> {
        match oid {
            OID_P256 => Some(Curve::P256),
            OID_P384 => Some(Curve::P384),
            OID_P521 => Some(Curve::P521),
            _ => None,
        }
    }

    /// `P-256`, `P-384`, `P-521`.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    pub fn bits(self) -> usize {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
}

/// A public key as the profile sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClass {
    Rsa {
        bits: usize,
    },
    /// An EC key: `curve` when it is an accepted one; `oid` is the named curve as written
    /// (`None` when the parameters name none).
    Ec {
        curve: Option<Curve>,
        oid: Option<String>,
    },
    Ed25519,
    Dsa,
    /// Any other key type, by its algorithm OID.
    Other {
        oid: String,
    },
}

/// Why the profile refuses a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeakKey {
    /// An RSA key under [`MIN_RSA_BITS`].
    SmallRsa { bits: usize },
    /// An EC key on a curve other than P-256, P-384 and P-521 (`None`: no named curve).
    Curve { oid: Option<String> },
    /// A DSA key.
    Dsa,
    /// A key type the profile does not know, by its algorithm OID.
    Type { oid: String },
}

impl WeakKey {
    /// The curve as a message shows it: its OID, or `unnamed`.
    pub fn curve_shown(oid: &Option<String>) -> &str {
        match oid.as_deref() {
            Some(o) if !o.is_empty() => o,
            _ => "unnamed",
        }
    }
}

/// Whether an RSA key of `bits` bits is too small.
pub fn rsa_too_small(bits: usize) -> bool {
    bits < MIN_RSA_BITS
}

/// The named curve of an EC public key, as a dotted OID (`None` when the parameters name
/// none).
pub fn curve_oid(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

/// What kind of key `spki` holds.
pub fn classify(spki: &SubjectPublicKeyInfo<'_>) -> KeyClass {
    let oid = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(r)) => KeyClass::Rsa { bits: r.key_size() },
        Ok(PublicKey::EC(_)) => {
            let named = curve_oid(spki);
            KeyClass::Ec {
                curve: named.as_deref().and_then(Curve::from_oid),
                oid: named,
            }
        }
        _ if oid == OID_ED25519 => KeyClass::Ed25519,
        _ if oid == OID_DSA => KeyClass::Dsa,
        _ => KeyClass::Other { oid },
    }
}

/// The rule: the key of `spki` if the profile accepts it, else why not.
pub fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyClass, WeakKey> {
    match classify(spki) {
        KeyClass::Rsa { bits } if rsa_too_small(bits) => Err(WeakKey::SmallRsa { bits }),
        KeyClass::Ec { curve: None, oid } => Err(WeakKey::Curve { oid }),
        KeyClass::Dsa => Err(WeakKey::Dsa),
        KeyClass::Other { oid } => Err(WeakKey::Type { oid }),
        k => Ok(k),
    }
}

/// The same SubjectPublicKeyInfo (DER) with its named curve replaced by secp256k1
/// (1.3.132.0.10), which no TLS library mtlsgate talks to accepts. For tests.
#[cfg(test)]
pub(crate) fn with_secp256k1(spki: &[u8]) -> Vec<u8> {
    use crate::der;
    let outer = der::read_one(spki).expect("SubjectPublicKeyInfo");
    let parts = der::elements(outer.value).expect("SPKI parts");
    let alg = der::elements(parts[0].value).expect("AlgorithmIdentifier");
    let secp256k1 = der::encode(der::OID, &[&[0x2b, 0x81, 0x04, 0x00, 0x0a]]);
    let alg = der::encode(der::SEQUENCE, &[alg[0].raw, &secp256k1]);
    der::encode(der::SEQUENCE, &[&alg, parts[1].raw])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki_of(key: &rcgen::KeyPair) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(key)
    }

    fn checked(der: &[u8]) -> Result<KeyClass, WeakKey> {
        let (_, spki) =
            <SubjectPublicKeyInfo<'_> as x509_parser::prelude::FromDer<'_, _>>::from_der(der)
                .expect("spki");
        check_key(&spki)
    }

    #[test]
    fn accepted_keys_are_classified() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        assert_eq!(
            checked(&spki_of(&p256)),
            Ok(KeyClass::Ec {
                curve: Some(Curve::P256),
                oid: Some(OID_P256.into())
            })
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        assert!(matches!(
            checked(&spki_of(&p384)),
            Ok(KeyClass::Ec {
                curve: Some(Curve::P384),
                ..
            })
        ));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        assert_eq!(checked(&spki_of(&ed)), Ok(KeyClass::Ed25519));
    }

    #[test]
    fn an_unknown_curve_is_refused_with_its_oid() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let der = with_secp256k1(&spki_of(&p256));
        assert_eq!(
            checked(&der),
            Err(WeakKey::Curve {
                oid: Some("1.3.132.0.10".into())
            })
        );
    }

    #[test]
    fn small_rsa_and_other_types() {
        assert!(rsa_too_small(1024));
        assert!(!rsa_too_small(MIN_RSA_BITS));
        assert_eq!(WeakKey::curve_shown(&None), "unnamed");
        assert_eq!(WeakKey::curve_shown(&Some("1.2.3".into())), "1.2.3");
    }
}
