//! The walk: the chain checked the way a person would, leaf first and then up through the
//! presented intermediates to a trust anchor, naming the first problem. It decides for v1
//! leaves and pinned certificates, and explains what webpki refused.

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::x509::X509Version;

use super::crl::revoked;
use super::failure::{Failure, SignatureRefusal};
use super::profile::{eku_failure, pathlen_failure, small_rsa, time_failure, unknown_critical};
use super::{Purpose, Verifier};
use crate::dn;

/// Longest chain the walk follows before giving up.
const MAX_WALK: usize = 10;

/// What walking a chain found.
pub(super) enum Walk {
    /// The chain reaches a trust anchor and nothing is wrong; `length` counts the leaf and
    /// the intermediates.
    Clean { length: usize },
    /// The leaf is pinned, within its validity and not revoked.
    Pinned,
    /// The first problem found.
    Refused(Failure),
    /// The leaf cannot be parsed.
    Unreadable,
}

impl Verifier {
    /// The walk: leaf checks, then up through presented intermediates to a trust anchor.
    pub(super) fn walk(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> Walk {
        let Ok(now_t) =
            OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
        else {
            return Walk::Unreadable;
        };
        let Some(leaf_der) = chain.first() else {
            return Walk::Refused(Failure::NoCertificate);
        };
        let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf_der) else {
            return Walk::Unreadable;
        };
        let presented: Vec<X509Certificate<'_>> = chain[1..]
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let anchors: Vec<X509Certificate<'_>> = self
            .anchor_ders
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let crl_signers: Vec<&X509Certificate<'_>> = anchors
            .iter()
            .chain(presented.iter())
            .chain(std::iter::once(&leaf))
            .collect();
        let leaf_subject = dn::rfc2253(leaf.subject());

        // 1. Things wrong with the leaf itself.
        if let Some(f) = time_failure(&leaf, true, now_t) {
            return Walk::Refused(f);
        }
        match self.revocation_of(&leaf, &crl_signers, now_t) {
            Ok(Some((at, reason))) => return Walk::Refused(revoked(&leaf, at, reason)),
            Ok(None) => {}
            Err(f) => return Walk::Refused(f),
        }
        if self.is_pinned(leaf_der) {
            return Walk::Pinned;
        }
        if let Some(bits) = small_rsa(&leaf) {
            return Walk::Refused(Failure::KeyTooSmall {
                subject: leaf_subject,
                bits,
            });
        }
        if leaf.subject().as_raw() == leaf.issuer().as_raw() && leaf.verify_signature(None).is_ok()
        {
            return Walk::Refused(Failure::SelfSigned {
                subject: leaf_subject,
            });
        }
        if leaf.is_ca() {
            return Walk::Refused(Failure::CaAsLeaf {
                subject: leaf_subject,
            });
        }
        if let Some(f) = eku_failure(&leaf, purpose) {
            return Walk::Refused(f);
        }
        if let Some(f) = unknown_critical(&leaf) {
            return Walk::Refused(f);
        }

        // 2. Walk up: find each issuer in the bundle or the presented chain.
        let mut current = &leaf;
        let mut length = 1;
        let mut path: Vec<&X509Certificate<'_>> = vec![&leaf];
        loop {
            let named: Vec<&X509Certificate<'_>> = anchors
                .iter()
                .filter(|a| a.subject().as_raw() == current.issuer().as_raw())
                .collect();
            if !named.is_empty() {
                if let Err(f) = signed_by_any(current, &named) {
                    return Walk::Refused(f);
                }
                if length > self.max_depth {
                    return Walk::Refused(Failure::ChainTooLong {
                        length: length + 1,
                        max_depth: self.max_depth,
                    });
                }
                if let Some(anchor) = named
                    .iter()
                    .find(|a| current.verify_signature(Some(a.public_key())).is_ok())
                {
                    path.push(anchor);
                }
                if let Some(f) = self.path_failure(&path, now_t) {
                    return Walk::Refused(f);
                }
                return Walk::Clean { length };
            }
            let candidates: Vec<&X509Certificate<'_>> = presented
                .iter()
                .filter(|c| {
                    c.subject().as_raw() == current.issuer().as_raw() && !std::ptr::eq(*c, current)
                })
                .collect();
            let Some(first) = candidates.first() else {
                if current.subject().as_raw() == current.issuer().as_raw() {
                    return Walk::Refused(Failure::SelfSigned {
                        subject: dn::rfc2253(current.subject()),
                    });
                }
                return Walk::Refused(Failure::UnknownIssuer {
                    issuer: dn::rfc2253(current.issuer()),
                    intermediate_missing: std::ptr::eq(current, &leaf) && !self.anchors.is_empty(),
                });
            };
            let issuer = candidates
                .iter()
                .find(|i| current.verify_signature(Some(i.public_key())).is_ok())
                .copied()
                .unwrap_or(first);
            if let Err(f) = signed_by_any(current, &[issuer]) {
                return Walk::Refused(f);
            }
            // A root the client sent along is not trusted because it was sent
            // (OpenSSL: "self-signed certificate in certificate chain").
            if issuer.subject().as_raw() == issuer.issuer().as_raw() {
                return Walk::Refused(Failure::SelfSigned {
                    subject: dn::rfc2253(issuer.subject()),
                });
            }
            // An issuer must be a v3 CA certificate; a v1 certificate cannot say it is one.
            if issuer.version() != X509Version::V3 || !issuer.is_ca() {
                return Walk::Refused(Failure::NotACa {
                    subject: dn::rfc2253(issuer.subject()),
                });
            }
            if let Some(f) = pathlen_failure(issuer, length - 1) {
                return Walk::Refused(f);
            }
            if let Some(f) = time_failure(issuer, false, now_t) {
                return Walk::Refused(f);
            }
            match self.revocation_of(issuer, &crl_signers, now_t) {
                Ok(Some((at, reason))) => return Walk::Refused(revoked(issuer, at, reason)),
                Ok(None) => {}
                Err(f) => return Walk::Refused(f),
            }
            if let Some(f) = eku_failure(issuer, purpose) {
                return Walk::Refused(f);
            }
            if let Some(f) = unknown_critical(issuer) {
                return Walk::Refused(f);
            }
            length += 1;
            path.push(issuer);
            if length > MAX_WALK {
                return Walk::Refused(Failure::ChainTooLong {
                    length,
                    max_depth: self.max_depth,
                });
            }
            current = issuer;
        }
    }
}

/// OIDs of SHA-1 signatures (RSA and ECDSA), which rustls and webpki no longer accept.
const SHA1_SIGNATURES: [&str; 3] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29", "1.2.840.10045.4.1"];

/// Checks that `x` is signed by the key of one of `issuers`.
fn signed_by_any(
    x: &X509Certificate<'_>,
    issuers: &[&X509Certificate<'_>],
) -> std::result::Result<(), Failure> {
    let alg = x.signature_algorithm.algorithm.to_id_string();
    if SHA1_SIGNATURES.contains(&alg.as_str()) {
        return Err(Failure::Signature(SignatureRefusal::Sha1 {
            subject: dn::rfc2253(x.subject()),
        }));
    }
    let mut unsupported = false;
    for i in issuers {
        match x.verify_signature(Some(i.public_key())) {
            Ok(()) => return Ok(()),
            Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => unsupported = true,
            Err(_) => {}
        }
    }
    if unsupported {
        return Err(Failure::Signature(SignatureRefusal::Unsupported {
            subject: dn::rfc2253(x.subject()),
            algorithm: alg,
        }));
    }
    Err(Failure::BadSignature {
        subject: dn::rfc2253(x.subject()),
    })
}
