//! Every failure's label and every webpki error's typed failure, one mapping each.

use super::*;
use crate::verify::webpki_map::unix_to_time;
use webpki::KeyUsage;

#[test]
fn labels_table_matches_every_variant() {
    let now = T0;
    let all = [
        Failure::NoCertificate,
        Failure::Expired {
            subject: String::new(),
            is_leaf: true,
            not_after: now,
            now,
        },
        Failure::NotYetValid {
            subject: String::new(),
            not_before: now,
            now,
        },
        Failure::UnknownIssuer {
            issuer: String::new(),
            intermediate_missing: false,
        },
        Failure::SelfSigned {
            subject: String::new(),
        },
        Failure::WrongEku {
            wanted: Purpose::Client,
            has: vec![],
        },
        Failure::Revoked {
            subject: String::new(),
            serial: String::new(),
            at: None,
            reason: None,
            small_serial: false,
        },
        Failure::KeyTooSmall {
            subject: String::new(),
            bits: 1,
        },
        Failure::CaAsLeaf {
            subject: String::new(),
        },
        Failure::BadSignature {
            subject: String::new(),
        },
        Failure::ChainTooLong {
            length: 1,
            max_depth: 1,
        },
        Failure::NotACa {
            subject: String::new(),
        },
        Failure::CrlExpired {
            issuer: None,
            next_update: OffsetDateTime::UNIX_EPOCH,
        },
        Failure::CrlMissing { issuer: None },
        Failure::Webpki(WebpkiRefusal::Unnamed),
    ];
    assert_eq!(all.len(), Failure::LABELS.len());
    for (i, f) in all.iter().enumerate() {
        assert_eq!(f.slot(), i);
        assert_eq!(f.label(), Failure::LABELS[i]);
    }
    let unique: HashSet<&str> = Failure::LABELS.iter().copied().collect();
    assert_eq!(unique.len(), Failure::LABELS.len());
    // The typed refusals webpki and the profile add share the `other` counter, so the
    // metrics labels stay what they were.
    let other = Failure::LABELS.len() - 1;
    for f in [
        Failure::NameMismatch {
            name: String::new(),
            names: String::new(),
        },
        Failure::Profile(ProfileViolation::LeafNameConstraints {
            subject: String::new(),
        }),
        Failure::Signature(SignatureRefusal::Sha1 {
            subject: String::new(),
        }),
        Failure::Crl(CrlProblem::BadSignature {
            issuer: String::new(),
        }),
        Failure::Unreadable(Unreadable::Leaf),
    ] {
        assert_eq!(f.slot(), other, "{f:?}");
    }
}

// --- webpki error mapping: one assertion per variant ---

fn cx() -> ErrorContext {
    ErrorContext {
        subject: "CN=leaf".into(),
        issuer: "CN=issuer".into(),
        serial: "01".into(),
        ekus: vec!["serverAuth".into()],
        purpose: Purpose::Client,
        chain_len: 3,
        max_depth: 2,
    }
}

#[track_caller]
fn maps_to(e: webpki::Error, want: Failure) {
    assert_eq!(failure_from_webpki(&e, &cx()), want);
}

#[track_caller]
fn sentence(e: webpki::Error, start: &str) {
    match failure_from_webpki(&e, &cx()) {
        Failure::Webpki(w) => {
            let s = w.to_string();
            assert!(s.starts_with(start), "{s}");
            assert!(
                !s.contains("Error") && !s.contains('{') && !s.contains("::"),
                "{s}"
            );
        }
        f => panic!("expected a sentence, got {f}"),
    }
}

fn t(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

#[test]
fn webpki_typed_mappings() {
    use webpki::Error as E;
    maps_to(
        E::CaUsedAsEndEntity,
        Failure::CaAsLeaf {
            subject: "CN=leaf".into(),
        },
    );
    maps_to(
        E::CertExpired {
            time: t(200),
            not_after: t(100),
        },
        Failure::Expired {
            subject: "CN=leaf".into(),
            is_leaf: true,
            not_after: unix_to_time(t(100)),
            now: unix_to_time(t(200)),
        },
    );
    maps_to(
        E::CertNotValidYet {
            time: t(100),
            not_before: t(200),
        },
        Failure::NotYetValid {
            subject: "CN=leaf".into(),
            not_before: unix_to_time(t(200)),
            now: unix_to_time(t(100)),
        },
    );
    maps_to(
        E::CertRevoked,
        Failure::Revoked {
            subject: "CN=leaf".into(),
            serial: "01".into(),
            at: None,
            reason: None,
            small_serial: true,
        },
    );
    maps_to(
        E::EmptyEkuExtension,
        Failure::WrongEku {
            wanted: Purpose::Client,
            has: vec![],
        },
    );
    maps_to(
        E::EndEntityUsedAsCa,
        Failure::NotACa {
            subject: "CN=issuer".into(),
        },
    );
    maps_to(
        E::InvalidSignatureForPublicKey,
        Failure::BadSignature {
            subject: "CN=leaf".into(),
        },
    );
    maps_to(
        E::MaximumPathDepthExceeded,
        Failure::ChainTooLong {
            length: 4,
            max_depth: 2,
        },
    );
    #[allow(deprecated)]
    maps_to(
        E::RequiredEkuNotFound,
        Failure::WrongEku {
            wanted: Purpose::Client,
            has: vec!["serverAuth".into()],
        },
    );
    maps_to(
        E::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
            required: KeyUsage::client_auth(),
            present: vec![vec![1, 3, 6, 1, 5, 5, 7, 3, 1]],
        }),
        Failure::WrongEku {
            wanted: Purpose::Client,
            has: vec!["serverAuth".into()],
        },
    );
    maps_to(
        E::UnknownIssuer,
        Failure::UnknownIssuer {
            issuer: "CN=issuer".into(),
            intermediate_missing: false,
        },
    );
}

#[test]
fn webpki_sentence_mappings() {
    use webpki::Error as E;
    let sig_ctx = webpki::UnsupportedSignatureAlgorithmContext {
        signature_algorithm_id: vec![],
        supported_algorithms: vec![],
    };
    let key_ctx = webpki::UnsupportedSignatureAlgorithmForPublicKeyContext {
        signature_algorithm_id: vec![],
        public_key_algorithm_id: vec![],
    };
    sentence(E::BadDer, "a certificate or CRL is not valid DER");
    sentence(
        E::TrailingData(webpki::DerTypeId::Certificate),
        "a certificate or CRL is not valid DER",
    );
    sentence(
        E::BadDerTime,
        "a date in a certificate or CRL is not encoded correctly",
    );
    sentence(
        E::CertDistrusted,
        "the certificate's public key is explicitly distrusted",
    );
    sentence(
        E::CertNotValidForName(webpki::InvalidNameContext {
            expected: rustls_pki_types::ServerName::try_from("a.example")
                .expect("name")
                .to_owned(),
            presented: vec![],
        }),
        "the certificate is not valid for the host name",
    );
    maps_to(
        E::CrlExpired {
            time: t(200),
            next_update: t(100),
        },
        Failure::CrlExpired {
            issuer: None,
            next_update: unix_to_time(t(100)),
        },
    );
    sentence(
        E::ExtensionValueInvalid,
        "a certificate extension has an invalid value",
    );
    sentence(
        E::InvalidCertValidity,
        "a certificate's validity period is invalid",
    );
    sentence(E::InvalidCrlNumber, "a CRL has an invalid CRL number");
    sentence(
        E::InvalidNetworkMaskConstraint,
        "a CA's IP address name constraint",
    );
    sentence(E::InvalidSerialNumber, "a serial number is invalid");
    sentence(
        E::InvalidCrlSignatureForPublicKey,
        "a CRL's signature does not verify",
    );
    sentence(
        E::IssuerNotCrlSigner,
        "a CRL was signed by a CA whose key usage",
    );
    sentence(
        E::MalformedDnsIdentifier,
        "a DNS name in the certificate is malformed",
    );
    sentence(
        E::MalformedExtensions,
        "the certificate's extensions are malformed",
    );
    sentence(
        E::MalformedNameConstraint,
        "a CA's name constraints are malformed",
    );
    sentence(
        E::MaximumNameConstraintComparisonsExceeded,
        "the chain is too complex",
    );
    sentence(E::MaximumPathBuildCallsExceeded, "the chain is too complex");
    sentence(
        E::MaximumSignatureChecksExceeded,
        "the chain is too complex",
    );
    sentence(
        E::NameConstraintViolation,
        "the certificate's names are outside",
    );
    sentence(
        E::PathLenConstraintViolated,
        "a CA in the chain issued below its path length limit",
    );
    sentence(
        E::SignatureAlgorithmMismatch,
        "the certificate's inner and outer signature algorithms differ",
    );
    maps_to(
        E::UnknownRevocationStatus,
        Failure::CrlMissing { issuer: None },
    );
    sentence(
        E::UnsupportedCertVersion,
        "the certificate is neither X.509 version 3 nor version 1",
    );
    sentence(
        E::UnsupportedCriticalExtension,
        "the certificate has a critical extension",
    );
    sentence(
        E::UnsupportedCrlIssuingDistributionPoint,
        "a CRL has an issuing distribution point",
    );
    sentence(
        E::UnsupportedCrlVersion,
        "a CRL is version 1; only version 2 CRLs are supported",
    );
    sentence(E::UnsupportedDeltaCrl, "delta CRLs are not supported");
    sentence(E::UnsupportedIndirectCrl, "indirect CRLs");
    sentence(
        E::UnsupportedNameType,
        "the name to check is of an unsupported type",
    );
    sentence(
        E::UnsupportedRevocationReason,
        "a CRL entry has an unknown revocation reason",
    );
    sentence(
        E::UnsupportedRevocationReasonsPartitioning,
        "a CRL covers only some revocation reasons",
    );
    #[allow(deprecated)]
    sentence(
        E::UnsupportedCrlSignatureAlgorithm,
        "a CRL is signed with an algorithm",
    );
    sentence(
        E::UnsupportedCrlSignatureAlgorithmContext(sig_ctx.clone()),
        "a CRL is signed with an algorithm",
    );
    #[allow(deprecated)]
    sentence(
        E::UnsupportedSignatureAlgorithm,
        "a certificate is signed with an algorithm",
    );
    sentence(
        E::UnsupportedSignatureAlgorithmContext(sig_ctx),
        "a certificate is signed with an algorithm",
    );
    #[allow(deprecated)]
    sentence(
        E::UnsupportedCrlSignatureAlgorithmForPublicKey,
        "a CRL's signature algorithm does not fit",
    );
    sentence(
        E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(key_ctx.clone()),
        "a CRL's signature algorithm does not fit",
    );
    #[allow(deprecated)]
    sentence(
        E::UnsupportedSignatureAlgorithmForPublicKey,
        "a certificate's signature algorithm does not fit",
    );
    sentence(
        E::UnsupportedSignatureAlgorithmForPublicKeyContext(key_ctx),
        "a certificate's signature algorithm does not fit",
    );
}

#[test]
fn bundle_and_crl_loading_errors_are_sentences() {
    let e = Verifier::new(
        vec![b"\x30\x03\x02\x01\x01".to_vec()],
        vec![],
        DEFAULT_DEPTH,
    )
    .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "CA bundle: a certificate cannot be used as a trust anchor: a certificate or CRL is not valid DER: the file is damaged, or it is not a certificate"
    );
    let (r, _) = pki();
    let e = Verifier::new(
        vec![r.der.clone()],
        vec![b"\x30\x00".to_vec()],
        DEFAULT_DEPTH,
    )
    .expect_err("refused");
    let msg = e.to_string();
    assert!(msg.starts_with("CRL: it cannot be used: "), "{msg}");
    assert!(!msg.contains("BadDer") && !msg.contains("Error"), "{msg}");
}
