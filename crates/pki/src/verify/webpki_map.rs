//! rustls-webpki's errors in mtlsgate's words: every `webpki::Error` becomes a typed
//! [`Failure`], named with the leaf's context where webpki says which certificate it
//! means. The pattern is rustls's `pki_error()`: one arm per error, one test per arm.

use rustls_pki_types::UnixTime;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use super::crl::is_small_serial_hex;
use super::failure::{Failure, WebpkiRefusal};
use super::{Purpose, DEFAULT_DEPTH};
use crate::{certinfo, dn};

/// What [`failure_from_webpki`] needs besides the error: the leaf as a person would name it.
#[derive(Debug, Clone)]
pub struct ErrorContext {
    /// The leaf's subject (RFC 2253).
    pub subject: String,
    /// The leaf's issuer (RFC 2253).
    pub issuer: String,
    /// The leaf's serial (uppercase hex).
    pub serial: String,
    /// The leaf's extended key usages by name.
    pub ekus: Vec<String>,
    pub purpose: Purpose,
    /// Certificates in the chain (leaf and intermediates).
    pub chain_len: usize,
    pub max_depth: usize,
}

impl ErrorContext {
    /// A context for errors that concern no particular certificate (loading a bundle or CRL).
    pub fn unknown() -> Self {
        ErrorContext {
            subject: "the certificate".into(),
            issuer: "an unknown issuer".into(),
            serial: "?".into(),
            ekus: Vec::new(),
            purpose: Purpose::Client,
            chain_len: 1,
            max_depth: DEFAULT_DEPTH,
        }
    }

    pub(super) fn of(
        x: &X509Certificate<'_>,
        purpose: Purpose,
        chain_len: usize,
        max_depth: usize,
    ) -> Self {
        ErrorContext {
            subject: dn::rfc2253(x.subject()),
            issuer: dn::rfc2253(x.issuer()),
            serial: certinfo::serial_hex(x.raw_serial()),
            ekus: certinfo::eku_names(x),
            purpose,
            chain_len,
            max_depth,
        }
    }
}

/// Maps every rustls-webpki error to a typed [`Failure`]: where no variant with context
/// fits, to [`Failure::Webpki`], whose sentence is plain English (webpki's own `Display` is its `Debug`
/// text, which no user should see). `webpki::Error` is `#[non_exhaustive]`: an error a
/// later webpki adds gets a generic sentence until it is mapped here.
pub fn failure_from_webpki(e: &webpki::Error, cx: &ErrorContext) -> Failure {
    use webpki::Error as E;
    use WebpkiRefusal as W;
    let other = Failure::Webpki;
    #[allow(deprecated)]
    match e {
        E::BadDer | E::TrailingData(_) => other(W::BadDer),
        E::BadDerTime => other(W::BadDerTime),
        E::CaUsedAsEndEntity => Failure::CaAsLeaf {
            subject: cx.subject.clone(),
        },
        E::CertDistrusted => other(W::Distrusted),
        E::CertExpired { time, not_after } => Failure::Expired {
            subject: cx.subject.clone(),
            is_leaf: true,
            not_after: unix_to_time(*not_after),
            now: unix_to_time(*time),
        },
        E::CertNotValidForName(_) => other(W::NotValidForName),
        E::CertNotValidYet { time, not_before } => Failure::NotYetValid {
            subject: cx.subject.clone(),
            not_before: unix_to_time(*not_before),
            now: unix_to_time(*time),
        },
        E::CertRevoked => Failure::Revoked {
            subject: cx.subject.clone(),
            serial: cx.serial.clone(),
            at: None,
            reason: None,
            small_serial: is_small_serial_hex(&cx.serial),
        },
        E::CrlExpired { next_update, .. } => Failure::CrlExpired {
            issuer: None,
            next_update: unix_to_time(*next_update),
        },
        E::EmptyEkuExtension => Failure::WrongEku {
            wanted: cx.purpose,
            has: Vec::new(),
        },
        E::EndEntityUsedAsCa => Failure::NotACa {
            subject: cx.issuer.clone(),
        },
        E::ExtensionValueInvalid => other(W::ExtensionValueInvalid),
        E::InvalidCertValidity => other(W::InvalidValidity),
        E::InvalidCrlNumber => other(W::InvalidCrlNumber),
        E::InvalidNetworkMaskConstraint => other(W::InvalidNetworkMask),
        E::InvalidSerialNumber => other(W::InvalidSerialNumber),
        E::InvalidCrlSignatureForPublicKey => other(W::CrlBadSignature),
        E::InvalidSignatureForPublicKey => Failure::BadSignature {
            subject: cx.subject.clone(),
        },
        E::IssuerNotCrlSigner => other(W::IssuerNotCrlSigner),
        E::MalformedDnsIdentifier => other(W::MalformedDnsName),
        E::MalformedExtensions => other(W::MalformedExtensions),
        E::MalformedNameConstraint => other(W::MalformedNameConstraint),
        E::MaximumNameConstraintComparisonsExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => other(W::TooComplex),
        E::MaximumPathDepthExceeded => Failure::ChainTooLong {
            length: cx.chain_len + 1,
            max_depth: cx.max_depth,
        },
        E::NameConstraintViolation => other(W::NameConstraintViolation),
        E::PathLenConstraintViolated => other(W::PathLenViolated),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => Failure::WrongEku {
            wanted: cx.purpose,
            has: cx.ekus.clone(),
        },
        E::SignatureAlgorithmMismatch => other(W::SignatureAlgorithmMismatch),
        E::UnknownIssuer => Failure::UnknownIssuer {
            issuer: cx.issuer.clone(),
            intermediate_missing: false,
        },
        E::UnknownRevocationStatus => Failure::CrlMissing { issuer: None },
        E::UnsupportedCertVersion => other(W::UnsupportedCertVersion),
        E::UnsupportedCriticalExtension => other(W::UnsupportedCriticalExtension),
        E::UnsupportedCrlIssuingDistributionPoint => other(W::UnsupportedCrlDistributionPoint),
        E::UnsupportedCrlVersion => other(W::UnsupportedCrlVersion),
        E::UnsupportedDeltaCrl => other(W::DeltaCrl),
        E::UnsupportedIndirectCrl => other(W::IndirectCrl),
        E::UnsupportedNameType => other(W::UnsupportedNameType),
        E::UnsupportedRevocationReason => other(W::UnsupportedRevocationReason),
        E::UnsupportedRevocationReasonsPartitioning => other(W::ReasonsPartitioned),
        E::UnsupportedCrlSignatureAlgorithm | E::UnsupportedCrlSignatureAlgorithmContext(_) => {
            other(W::CrlSignatureAlgorithm)
        }
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmContext(_) => {
            other(W::SignatureAlgorithm)
        }
        E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => other(W::CrlAlgorithmForKey),
        E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => other(W::AlgorithmForKey),
        _ => other(W::Unnamed),
    }
}

/// The sentence of a webpki error that concerns no particular certificate.
pub(super) fn webpki_sentence(e: &webpki::Error) -> String {
    match failure_from_webpki(e, &ErrorContext::unknown()) {
        Failure::Webpki(w) => w.to_string(),
        f => f.to_string(),
    }
}

pub(super) fn unix_to_time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
