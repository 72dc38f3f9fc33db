//! One sentence per typed failure variant, in full: the words users (and the integration
//! tests, and nginx-style `FAILED:` strings) see must not move when the code around them
//! does.

use crate::verify::failure::*;

#[track_caller]
fn says(f: Failure, want: &str) {
    assert_eq!(f.to_string(), format!("verification failed: {want}"));
    assert_eq!(f.label(), "other");
    assert_eq!(f.openssl_reason(), "certificate verify failed");
}

fn profile(v: ProfileViolation) -> Failure {
    Failure::Profile(v)
}

#[test]
fn name_mismatch() {
    says(
        Failure::NameMismatch {
            name: "a.example".into(),
            names: String::new(),
        },
        "the certificate is not valid for a.example: it has no DNS or IP subject alternative names (the CN is not used for names)",
    );
    says(
        Failure::NameMismatch {
            name: "10.0.0.1".into(),
            names: "DNS:b.example, IP:10.0.0.2".into(),
        },
        "the certificate is not valid for 10.0.0.1: it names only DNS:b.example, IP:10.0.0.2",
    );
}

#[test]
fn critical_key_identifiers() {
    says(
        profile(ProfileViolation::CriticalKeyIdentifier {
            subject: "CN=x".into(),
            extension: KeyIdentifier::Authority,
        }),
        "CN=x marks its authority key identifier extension critical, which RFC 5280 forbids",
    );
    says(
        profile(ProfileViolation::CriticalKeyIdentifier {
            subject: "CN=x".into(),
            extension: KeyIdentifier::Subject,
        }),
        "CN=x marks its subject key identifier extension critical, which RFC 5280 forbids",
    );
}

#[test]
fn leaf_rules() {
    says(
        profile(ProfileViolation::LeafSignsCertificates {
            subject: "CN=l".into(),
        }),
        "CN=l is not a CA certificate, but its key usage allows signing certificates (keyCertSign), which RFC 5280 forbids",
    );
    says(
        profile(ProfileViolation::LeafNameConstraints {
            subject: "CN=l".into(),
        }),
        "CN=l is not a CA certificate, but it carries name constraints, which only CA certificates may",
    );
}

#[test]
fn unusable_leaf_keys() {
    says(
        profile(ProfileViolation::UnusableLeafKey {
            subject: "CN=l".into(),
            key: UnusableKey::Dsa,
        }),
        "CN=l has a DSA key, which TLS cannot use; use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)",
    );
    says(
        profile(ProfileViolation::UnusableLeafKey {
            subject: "CN=l".into(),
            key: UnusableKey::Curve {
                oid: Some("1.3.132.0.10".into()),
            },
        }),
        "CN=l has an ECDSA key on an unsupported curve (1.3.132.0.10), which TLS cannot use; use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)",
    );
    says(
        profile(ProfileViolation::UnusableLeafKey {
            subject: "CN=l".into(),
            key: UnusableKey::Curve { oid: None },
        }),
        "CN=l has an ECDSA key on an unsupported curve (unnamed), which TLS cannot use; use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)",
    );
}

#[test]
fn ca_rules() {
    says(
        profile(ProfileViolation::CaEmptySubject {
            issued: "CN=l".into(),
        }),
        "the CA certificate that issued CN=l has an empty subject name, which RFC 5280 forbids for a CA",
    );
    says(
        profile(ProfileViolation::CaWithoutKeyCertSign {
            subject: "CN=ca".into(),
        }),
        "CN=ca is a CA certificate, but its key usage does not allow signing certificates (keyCertSign is missing)",
    );
    says(
        profile(ProfileViolation::PathLenExceeded {
            subject: "CN=ca".into(),
            limit: 0,
            below: 1,
        }),
        "CN=ca may have at most 0 intermediate CA(s) below it (basicConstraints pathlen:0), but the chain has 1",
    );
    says(
        profile(ProfileViolation::UnknownCriticalExtension {
            subject: "CN=ca".into(),
            oid: "1.2.3.4".into(),
        }),
        "CN=ca has a critical extension (1.2.3.4) that mtlsgate does not understand, so it must refuse the certificate",
    );
}

#[test]
fn signatures() {
    says(
        Failure::Signature(SignatureRefusal::Sha1 {
            subject: "CN=l".into(),
        }),
        "CN=l is signed with SHA-1, which is no longer accepted (it can be forged); sign it again with SHA-256 (openssl x509 -sha256 …)",
    );
    says(
        Failure::Signature(SignatureRefusal::Unsupported {
            subject: "CN=l".into(),
            algorithm: "1.2.840.10040.4.3".into(),
        }),
        "CN=l is signed with an algorithm mtlsgate does not accept (signature algorithm 1.2.840.10040.4.3); use RSA (2048 bits or more) with SHA-256, ECDSA P-256/P-384 or Ed25519",
    );
}

#[test]
fn crls() {
    says(
        Failure::Crl(CrlProblem::BadSignature {
            issuer: "CN=ca".into(),
        }),
        "the CRL of CN=ca does not verify with that CA's key: the CRL was altered, or signed by another CA with the same name",
    );
    let unusable = |defect| {
        Failure::Crl(CrlProblem::Unusable {
            issuer: "CN=ca".into(),
            defect,
        })
    };
    let tail = "; whether the certificate was revoked cannot be checked (crl_check = \"lenient\" accepts certificates without a usable CRL)";
    for (defect, why) in [
        (CrlDefect::Unparsable, "it cannot be parsed"),
        (
            CrlDefect::NoCrlNumber,
            "it has no CRL number, which RFC 5280 requires in every CRL (openssl ca -gencrl writes one when a crlnumber file is configured)",
        ),
        (
            CrlDefect::CriticalCrlNumber,
            "its CRL number extension is marked critical, which RFC 5280 forbids",
        ),
        (
            CrlDefect::IssuerNotCrlSigner,
            "the CA's key usage does not allow signing CRLs (cRLSign is missing)",
        ),
    ] {
        says(
            unusable(defect),
            &format!("the CRL of CN=ca cannot be used: {why}{tail}"),
        );
    }
}

#[test]
fn unreadable() {
    says(
        Failure::Unreadable(Unreadable::Leaf),
        "the certificate cannot be parsed: it is damaged, or not a certificate",
    );
    says(
        Failure::Unreadable(Unreadable::InChain),
        "a certificate in the chain cannot be parsed",
    );
}
