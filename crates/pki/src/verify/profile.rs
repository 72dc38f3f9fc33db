//! The RFC 5280 profile rules webpki leaves out (the x509-limbo families), checked on a
//! path that webpki or the walk accepted, and the per-certificate checks the walk makes
//! (validity, EKU, pathlen, critical extensions, leaf key). Key strength itself is the
//! crate's one rule, [`crate::profile`].

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use super::build::DecidedPath;
use super::failure::{Failure, KeyIdentifier, ProfileViolation, Unreadable, UnusableKey};
use super::webpki_map::unix_to_time;
use super::{CrlCheck, Purpose, Verifier};
use crate::profile::{self as keys, KeyClass};
use crate::{certinfo, dn};

const OID_SUBJECT_KEY_ID: &str = "2.5.29.14";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";
const OID_NAME_CONSTRAINTS: &str = "2.5.29.30";

impl Verifier {
    /// The checks webpki leaves out, on the path it accepted: the profile rules of
    /// [`Verifier::path_failure`] (the trust anchor included, which webpki reads only for
    /// its name and key).
    pub(super) fn audit_decided(
        &self,
        chain: &[CertificateDer<'_>],
        path: &DecidedPath,
        now: UnixTime,
    ) -> std::result::Result<(), Failure> {
        let now_t = unix_to_time(now);
        let mut certs = Vec::with_capacity(path.intermediates.len() + 2);
        for der in std::iter::once(&chain[0])
            .chain(path.intermediates.iter().filter_map(|&i| chain.get(i)))
        {
            match parse_cert(der) {
                Some(x) => certs.push(x),
                None => return Err(Failure::Unreadable(Unreadable::InChain)),
            }
        }
        let anchor = path
            .anchor
            .and_then(|i| self.anchor_ders.get(i))
            .and_then(|d| parse_cert(d));
        if let Some(a) = anchor {
            certs.push(a);
        }
        let refs: Vec<&X509Certificate<'_>> = certs.iter().collect();
        match self.path_failure(&refs, now_t) {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// What RFC 5280 forbids that webpki accepts, checked on a path that is otherwise
    /// accepted: `path` is the leaf, the intermediates upwards, then the trust anchor.
    pub(super) fn path_failure(
        &self,
        path: &[&X509Certificate<'_>],
        now: OffsetDateTime,
    ) -> Option<Failure> {
        let name = |x: &X509Certificate<'_>| dn::rfc2253(x.subject());
        let refuse = |v: ProfileViolation| Some(Failure::Profile(v));
        for x in path {
            for e in x.extensions().iter().filter(|e| e.critical) {
                let extension = match e.oid.to_id_string().as_str() {
                    OID_AUTHORITY_KEY_ID => KeyIdentifier::Authority,
                    OID_SUBJECT_KEY_ID => KeyIdentifier::Subject,
                    _ => continue,
                };
                return refuse(ProfileViolation::CriticalKeyIdentifier {
                    subject: name(x),
                    extension,
                });
            }
        }
        let leaf = path.first()?;
        if !leaf.is_ca() {
            if matches!(leaf.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign()) {
                return refuse(ProfileViolation::LeafSignsCertificates {
                    subject: name(leaf),
                });
            }
            if leaf
                .extensions()
                .iter()
                .any(|e| e.oid.to_id_string() == OID_NAME_CONSTRAINTS)
            {
                return refuse(ProfileViolation::LeafNameConstraints {
                    subject: name(leaf),
                });
            }
        }
        if let Some(key) = unusable_leaf_key(leaf) {
            return refuse(ProfileViolation::UnusableLeafKey {
                subject: name(leaf),
                key,
            });
        }
        for (i, ca) in path.iter().enumerate().skip(1) {
            if ca.subject().as_raw().len() <= 2 {
                let below = path[i - 1];
                return refuse(ProfileViolation::CaEmptySubject {
                    issued: name(below),
                });
            }
            if matches!(ca.key_usage(), Ok(Some(ku)) if !ku.value.key_cert_sign()) {
                return refuse(ProfileViolation::CaWithoutKeyCertSign { subject: name(ca) });
            }
        }
        if path.len() > 1 {
            let anchor = path[path.len() - 1];
            if let Some(f) = unknown_critical(anchor) {
                return Some(f);
            }
            if let Some(f) = time_failure(anchor, false, now) {
                return Some(f);
            }
        }
        if self.crl_check == CrlCheck::Strict && !self.crl_facts.is_empty() {
            for pair in path.windows(2) {
                if let Some(f) = self.crl_defect(pair[0], pair[1]) {
                    return Some(f);
                }
            }
        }
        None
    }
}

/// An extended key usage that is present but allows neither `purpose` nor any purpose.
/// No extension (always so for a v1 certificate) means any purpose.
pub(super) fn eku_failure(x: &X509Certificate<'_>, purpose: Purpose) -> Option<Failure> {
    let ekus = certinfo::eku_names(x);
    let has_ext = matches!(x.extended_key_usage(), Ok(Some(_)));
    if has_ext
        && !ekus
            .iter()
            .any(|e| e == purpose.eku() || e == "anyExtendedKeyUsage")
    {
        return Some(Failure::WrongEku {
            wanted: purpose,
            has: ekus,
        });
    }
    None
}

/// A CA with `pathlen:N` may have at most N intermediates below it.
pub(super) fn pathlen_failure(ca: &X509Certificate<'_>, below: usize) -> Option<Failure> {
    let limit = ca
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|b| b.value.path_len_constraint)?;
    if below > limit as usize {
        return Some(Failure::Profile(ProfileViolation::PathLenExceeded {
            subject: dn::rfc2253(ca.subject()),
            limit,
            below,
        }));
    }
    None
}

/// A critical extension the verifier does not understand makes the certificate unusable.
pub(super) fn unknown_critical(x: &X509Certificate<'_>) -> Option<Failure> {
    let ext = x.extensions().iter().find(|e| {
        e.critical
            && matches!(
                e.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            )
    })?;
    Some(Failure::Profile(
        ProfileViolation::UnknownCriticalExtension {
            subject: dn::rfc2253(x.subject()),
            oid: ext.oid.to_id_string(),
        },
    ))
}

pub(super) fn time_failure(
    x: &X509Certificate<'_>,
    is_leaf: bool,
    now: OffsetDateTime,
) -> Option<Failure> {
    let nb = OffsetDateTime::from_unix_timestamp(x.validity().not_before.timestamp()).ok()?;
    let na = OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp()).ok()?;
    if now > na {
        return Some(Failure::Expired {
            subject: dn::rfc2253(x.subject()),
            is_leaf,
            not_after: na,
            now,
        });
    }
    if now < nb {
        return Some(Failure::NotYetValid {
            subject: dn::rfc2253(x.subject()),
            not_before: nb,
            now,
        });
    }
    None
}

pub(super) fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, x)| x)
}

/// A leaf key of a kind no TLS implementation mtlsgate talks to accepts: DSA, or ECDSA on
/// a curve other than P-256, P-384 and P-521 (the profile's curves).
fn unusable_leaf_key(x: &X509Certificate<'_>) -> Option<UnusableKey> {
    match keys::classify(x.public_key()) {
        KeyClass::Dsa => Some(UnusableKey::Dsa),
        KeyClass::Ec { curve: None, oid } => Some(UnusableKey::Curve { oid }),
        _ => None,
    }
}

/// The bits of an RSA key under the profile's minimum.
pub(super) fn small_rsa(x: &X509Certificate<'_>) -> Option<usize> {
    match keys::classify(x.public_key()) {
        KeyClass::Rsa { bits } if keys::rsa_too_small(bits) => Some(bits),
        _ => None,
    }
}
