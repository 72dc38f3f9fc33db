//! Client and server certificate verification, and the explanation of a failure.
//!
//! [`Verifier::verify`] is the one path both `mtlsgate cert verify` and the gateway use:
//! rustls-webpki decides (fast, and the same code rustls runs), and only when it says no
//! does [`Verifier::explain`] walk the chain with x509-parser to say *why* in one line a
//! person understands ("expired at …", "issuer … is missing: the intermediate is not in
//! the file", "revoked at …"). Every failure also carries OpenSSL's wording for nginx's
//! `$ssl_client_verify` (`FAILED:certificate has expired`).

use std::collections::HashSet;
use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::Digest as _;
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use crate::ca::MIN_RSA_BITS;
use crate::certinfo::{self, human_duration, human_time};
use crate::dn;
use crate::error::{PkiError, Result};

/// What the certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Client,
    Server,
}

impl Purpose {
    fn eku(self) -> &'static str {
        match self {
            Purpose::Client => "clientAuth",
            Purpose::Server => "serverAuth",
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Expired {
        subject: String,
        is_leaf: bool,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    },
    NotYetValid {
        subject: String,
        not_before: OffsetDateTime,
        now: OffsetDateTime,
    },
    UnknownIssuer {
        issuer: String,
        intermediate_missing: bool,
    },
    SelfSigned {
        subject: String,
    },
    WrongEku {
        wanted: Purpose,
        has: Vec<String>,
    },
    Revoked {
        subject: String,
        serial: String,
        at: OffsetDateTime,
        reason: Option<String>,
    },
    KeyTooSmall {
        subject: String,
        bits: usize,
    },
    CaAsLeaf {
        subject: String,
    },
    BadSignature {
        subject: String,
    },
    ChainTooLong {
        length: usize,
        max_depth: usize,
    },
    NotACa {
        subject: String,
    },
    Other(String),
}

impl Failure {
    /// OpenSSL's `X509_verify_cert_error_string` wording, for `$ssl_client_verify`.
    pub fn openssl_reason(&self) -> &'static str {
        match self {
            Failure::Expired { .. } => "certificate has expired",
            Failure::NotYetValid { .. } => "certificate is not yet valid",
            Failure::UnknownIssuer { .. } => "unable to get local issuer certificate",
            Failure::SelfSigned { .. } => "self-signed certificate",
            Failure::WrongEku { .. } | Failure::CaAsLeaf { .. } => {
                "unsupported certificate purpose"
            }
            Failure::Revoked { .. } => "certificate revoked",
            Failure::KeyTooSmall { .. } => "EE certificate key too small",
            Failure::BadSignature { .. } => "certificate signature failure",
            Failure::ChainTooLong { .. } => "certificate chain too long",
            Failure::NotACa { .. } => "invalid CA certificate",
            Failure::Other(_) => "certificate verify failed",
        }
    }

    /// A short machine label (for metrics): `expired`, `unknown_issuer`, …
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Expired { .. } => "expired",
            Failure::NotYetValid { .. } => "not_yet_valid",
            Failure::UnknownIssuer { .. } => "unknown_issuer",
            Failure::SelfSigned { .. } => "self_signed",
            Failure::WrongEku { .. } => "wrong_eku",
            Failure::Revoked { .. } => "revoked",
            Failure::KeyTooSmall { .. } => "key_too_small",
            Failure::CaAsLeaf { .. } => "ca_as_leaf",
            Failure::BadSignature { .. } => "bad_signature",
            Failure::ChainTooLong { .. } => "chain_too_long",
            Failure::NotACa { .. } => "not_a_ca",
            Failure::Other(_) => "other",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Expired {
                subject,
                is_leaf,
                not_after,
                now,
            } => {
                let who = if *is_leaf {
                    "certificate".to_string()
                } else {
                    format!("issuing CA certificate {subject}")
                };
                write!(
                    f,
                    "expired: the {who} expired at {} ({} ago)",
                    human_time(*not_after),
                    human_duration((*now - *not_after).whole_seconds())
                )
            }
            Failure::NotYetValid {
                subject,
                not_before,
                now,
            } => write!(
                f,
                "not yet valid: {subject} becomes valid at {} (in {}); check the clocks",
                human_time(*not_before),
                human_duration((*not_before - *now).whole_seconds())
            ),
            Failure::UnknownIssuer {
                issuer,
                intermediate_missing: true,
            } => write!(
                f,
                "unknown issuer: the certificate was issued by {issuer}, which is neither in the file nor in the CA bundle; the intermediate certificate is missing (append it after the leaf in the certificate file, or add it to the bundle)"
            ),
            Failure::UnknownIssuer { issuer, .. } => write!(
                f,
                "unknown issuer: the certificate was issued by {issuer}, which the CA bundle does not trust"
            ),
            Failure::SelfSigned { subject } => write!(
                f,
                "self-signed: {subject} signed itself and is not in the CA bundle (to trust exactly this certificate, add it to the bundle)"
            ),
            Failure::WrongEku { wanted, has } => write!(
                f,
                "wrong EKU: the certificate may be used for {} but not for {} (it lacks the {} extended key usage)",
                if has.is_empty() { "nothing".to_string() } else { has.join(", ") },
                match wanted { Purpose::Client => "TLS client authentication", Purpose::Server => "TLS server authentication" },
                wanted.eku()
            ),
            Failure::Revoked {
                subject,
                serial,
                at,
                reason,
            } => {
                write!(
                    f,
                    "revoked: {subject} (serial {serial}) was revoked at {}",
                    human_time(*at)
                )?;
                if let Some(r) = reason {
                    write!(f, " (reason: {r})")?;
                }
                Ok(())
            }
            Failure::KeyTooSmall { subject, bits } => write!(
                f,
                "key too small: {subject} has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
            ),
            Failure::CaAsLeaf { subject } => write!(
                f,
                "CA certificate used as a leaf: {subject} is a CA certificate (basicConstraints CA:TRUE); present a client or server certificate issued by it"
            ),
            Failure::BadSignature { subject } => write!(
                f,
                "bad signature: the signature on {subject} does not verify with its issuer's key (wrong issuer with the same name, or an altered certificate)"
            ),
            Failure::ChainTooLong { length, max_depth } => write!(
                f,
                "chain too long: {length} certificates, but the verify depth allows {max_depth} below the leaf"
            ),
            Failure::NotACa { subject } => write!(
                f,
                "invalid CA: {subject} signs other certificates but is not a CA certificate"
            ),
            Failure::Other(s) => write!(f, "verification failed: {s}"),
        }
    }
}

static SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA256,
    webpki::aws_lc_rs::ECDSA_P521_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA512,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PKCS1_3072_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// A trust bundle, optional CRLs and a verify depth: everything needed to decide.
/// Built once (at start-up or reload) and shared; verifying takes no lock.
pub struct Verifier {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    anchor_ders: Vec<Vec<u8>>,
    /// SHA-256 of certificates trusted as they are (pinned leaves, such as the
    /// self-signed client certificate seed 004 names in `ssl_client_certificate`).
    pinned: HashSet<[u8; 32]>,
    crls: Vec<CertRevocationList<'static>>,
    crl_ders: Vec<Vec<u8>>,
    max_depth: usize,
}

/// Default verify depth: leaf → intermediate → root, like the seeds' `ssl_verify_depth 2`.
pub const DEFAULT_DEPTH: usize = 2;

fn sha256(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(sha256(der))
}

impl Verifier {
    /// Builds a verifier. Every certificate in `bundle` is a trust anchor; a bundle
    /// certificate that is not a CA, or is self-signed, is also trusted as itself (pinned),
    /// so a client presenting exactly that certificate is accepted as nginx accepts it.
    pub fn new(bundle: Vec<Vec<u8>>, crls: Vec<Vec<u8>>, max_depth: usize) -> Result<Self> {
        let mut anchors = Vec::with_capacity(bundle.len());
        let mut pinned = HashSet::new();
        for der in &bundle {
            let cd = CertificateDer::from(der.as_slice());
            let a =
                webpki::anchor_from_trusted_cert(&cd).map_err(|e| PkiError::BadCertificate {
                    path: "CA bundle".into(),
                    reason: format!("a certificate cannot be used as a trust anchor ({e:?})"),
                })?;
            anchors.push(a.to_owned());
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(der) {
                let self_signed = x.subject().as_raw() == x.issuer().as_raw();
                if !x.is_ca() || self_signed {
                    pinned.insert(sha256(der));
                }
            }
        }
        let mut owned = Vec::new();
        for der in &crls {
            let c =
                OwnedCertRevocationList::from_der(der).map_err(|e| PkiError::BadCertificate {
                    path: "CRL".into(),
                    reason: format!("cannot be used ({e:?})"),
                })?;
            owned.push(CertRevocationList::from(c));
        }
        Ok(Verifier {
            anchors,
            anchor_ders: bundle,
            pinned,
            crls: owned,
            crl_ders: crls,
            max_depth: max_depth.max(1),
        })
    }

    /// Adds a pinned certificate by SHA-256 fingerprint (hex, `:` allowed).
    pub fn pin_fingerprint(&mut self, fp: &str) -> Result<()> {
        let clean: String = fp.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| PkiError::InvalidInput {
                what: "SHA-256 fingerprint",
                value: fp.into(),
                reason: "expected 64 hex digits (colons allowed)".into(),
            })?;
        let mut a = [0u8; 32];
        a.copy_from_slice(&bytes);
        self.pinned.insert(a);
        Ok(())
    }

    pub fn has_anchors(&self) -> bool {
        !self.anchors.is_empty() || !self.pinned.is_empty()
    }

    /// Verifies `chain` (leaf first) for `purpose` at `now`. On failure, explains.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> std::result::Result<(), Failure> {
        let Some(leaf) = chain.first() else {
            return Err(Failure::Other("no certificate was presented".into()));
        };
        match self.decide(chain, purpose, now) {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .explain(chain, purpose, now, Some(e))
                .unwrap_or_else(|| Failure::Other(format!("{:?}", webpki_err_or(leaf))))),
        }
    }

    fn decide(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> std::result::Result<(), webpki::Error> {
        let leaf = &chain[0];
        if !self.pinned.is_empty() && self.pinned.contains(&sha256(leaf)) {
            return self.check_pinned(leaf, now);
        }
        // webpki never uses the leaf's own key, so it does not notice a weak one; the
        // handshake would, but with a less helpful error. Refuse it here.
        if let Ok((_, x)) = x509_parser::parse_x509_certificate(leaf) {
            if small_rsa(&x).is_some() {
                return Err(webpki::Error::InvalidSignatureForPublicKey);
            }
        }
        let ee = EndEntityCert::try_from(leaf)?;
        let usage = match purpose {
            Purpose::Client => KeyUsage::client_auth(),
            Purpose::Server => KeyUsage::server_auth(),
        };
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
                b.with_depth(RevocationCheckDepth::Chain)
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .build()
            })
        };
        let max_intermediates = self.max_depth.saturating_sub(1);
        let depth_check = move |p: &webpki::VerifiedPath<'_>| {
            if p.intermediate_certificates().count() > max_intermediates {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        ee.verify_for_usage(
            SIG_ALGS,
            &self.anchors,
            &chain[1..],
            now,
            usage,
            revocation,
            Some(&depth_check),
        )
        .map(|_| ())
    }

    /// A pinned certificate is trusted as it is, but must still be in its validity
    /// period and not revoked.
    fn check_pinned(
        &self,
        leaf: &CertificateDer<'_>,
        now: UnixTime,
    ) -> std::result::Result<(), webpki::Error> {
        let (_, x) =
            x509_parser::parse_x509_certificate(leaf).map_err(|_| webpki::Error::BadDer)?;
        let t = now.as_secs() as i64;
        if t > x.validity().not_after.timestamp() {
            return Err(webpki::Error::CertExpired {
                time: now,
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    x.validity().not_after.timestamp().max(0) as u64,
                )),
            });
        }
        if t < x.validity().not_before.timestamp() {
            return Err(webpki::Error::InvalidCertValidity);
        }
        if self.revocation_of(&x).is_some() {
            return Err(webpki::Error::CertRevoked);
        }
        Ok(())
    }

    fn revocation_of(&self, x: &X509Certificate<'_>) -> Option<(OffsetDateTime, Option<String>)> {
        for der in &self.crl_ders {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
                continue;
            };
            if crl.issuer().as_raw() != x.issuer().as_raw() {
                continue;
            }
            for r in crl.iter_revoked_certificates() {
                if r.raw_serial() == x.raw_serial() {
                    let at = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    let reason = r.reason_code().map(|(_, rc)| reason_name(rc.0).to_string());
                    return Some((at, reason));
                }
            }
        }
        None
    }

    /// Walks the chain the way a person would and names the first problem found.
    /// `webpki_error` (if known) fills in what the walk cannot see.
    pub fn explain(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
        webpki_error: Option<webpki::Error>,
    ) -> Option<Failure> {
        let now_t = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64).ok()?;
        let parsed: Vec<X509Certificate<'_>> = chain
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let leaf = parsed.first()?;
        let leaf_subject = dn::rfc2253(leaf.subject());
        let pinned = self.pinned.contains(&sha256(&chain[0]));

        // 1. Things wrong with the leaf itself.
        if let Some(f) = time_failure(leaf, true, now_t) {
            return Some(f);
        }
        if let Some((at, reason)) = self.revocation_of(leaf) {
            return Some(Failure::Revoked {
                subject: leaf_subject,
                serial: certinfo::serial_hex(leaf.raw_serial()),
                at,
                reason,
            });
        }
        if pinned {
            return webpki_error.map(|e| Failure::Other(format!("{e:?}")));
        }
        if let Some(bits) = small_rsa(leaf) {
            return Some(Failure::KeyTooSmall {
                subject: leaf_subject,
                bits,
            });
        }
        if leaf.subject().as_raw() == leaf.issuer().as_raw() && leaf.verify_signature(None).is_ok()
        {
            return Some(Failure::SelfSigned {
                subject: leaf_subject,
            });
        }
        if leaf.is_ca() {
            return Some(Failure::CaAsLeaf {
                subject: leaf_subject,
            });
        }
        let ekus = certinfo::eku_names(leaf);
        if !ekus.is_empty()
            && !ekus
                .iter()
                .any(|e| e == purpose.eku() || e == "anyExtendedKeyUsage")
        {
            return Some(Failure::WrongEku {
                wanted: purpose,
                has: ekus,
            });
        }

        // 2. Walk up: find each issuer in the presented chain or the bundle.
        let anchors: Vec<X509Certificate<'_>> = self
            .anchor_ders
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let mut current = leaf;
        let mut length = 1;
        loop {
            if let Some(a) = anchors
                .iter()
                .find(|a| a.subject().as_raw() == current.issuer().as_raw())
            {
                if current.verify_signature(Some(a.public_key())).is_err() {
                    return Some(Failure::BadSignature {
                        subject: dn::rfc2253(current.subject()),
                    });
                }
                if length > self.max_depth {
                    return Some(Failure::ChainTooLong {
                        length: length + 1,
                        max_depth: self.max_depth,
                    });
                }
                break;
            }
            let issuer = parsed[1..].iter().find(|c| {
                c.subject().as_raw() == current.issuer().as_raw() && !std::ptr::eq(*c, current)
            });
            match issuer {
                Some(i) => {
                    if current.verify_signature(Some(i.public_key())).is_err() {
                        return Some(Failure::BadSignature {
                            subject: dn::rfc2253(current.subject()),
                        });
                    }
                    if !i.is_ca() {
                        return Some(Failure::NotACa {
                            subject: dn::rfc2253(i.subject()),
                        });
                    }
                    if let Some(f) = time_failure(i, false, now_t) {
                        return Some(f);
                    }
                    if let Some((at, reason)) = self.revocation_of(i) {
                        return Some(Failure::Revoked {
                            subject: dn::rfc2253(i.subject()),
                            serial: certinfo::serial_hex(i.raw_serial()),
                            at,
                            reason,
                        });
                    }
                    length += 1;
                    if length > 10 {
                        return Some(Failure::ChainTooLong {
                            length,
                            max_depth: self.max_depth,
                        });
                    }
                    current = i;
                }
                None => {
                    if current.subject().as_raw() == current.issuer().as_raw() {
                        return Some(Failure::SelfSigned {
                            subject: dn::rfc2253(current.subject()),
                        });
                    }
                    return Some(Failure::UnknownIssuer {
                        issuer: dn::rfc2253(current.issuer()),
                        intermediate_missing: std::ptr::eq(current, leaf)
                            && !self.anchors.is_empty(),
                    });
                }
            }
        }

        // 3. Nothing a person would spot: report what webpki said.
        webpki_error.map(|e| match e {
            webpki::Error::MaximumPathDepthExceeded => Failure::ChainTooLong {
                length: length + 1,
                max_depth: self.max_depth,
            },
            webpki::Error::CertRevoked => Failure::Other("certificate revoked".into()),
            other => Failure::Other(format!("{other:?}")),
        })
    }
}

fn webpki_err_or(leaf: &CertificateDer<'_>) -> String {
    match EndEntityCert::try_from(leaf) {
        Ok(_) => "the certificate was not accepted".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn time_failure(x: &X509Certificate<'_>, is_leaf: bool, now: OffsetDateTime) -> Option<Failure> {
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

fn small_rsa(x: &X509Certificate<'_>) -> Option<usize> {
    match x.public_key().parsed() {
        Ok(PublicKey::RSA(r)) if r.key_size() < MIN_RSA_BITS => Some(r.key_size()),
        _ => None,
    }
}

fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn ca() -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let cert = p.self_signed(&key).expect("self-signed");
        (cert.der().to_vec(), Issuer::new(p, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, start: OffsetDateTime) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["dev1".to_string()]).expect("params");
        p.not_before = start;
        p.not_after = start + time::Duration::days(1);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, issuer).expect("sign").der().to_vec()
    }

    #[test]
    fn not_yet_valid_is_explained() {
        let (root, issuer) = ca();
        let future = OffsetDateTime::now_utc() + time::Duration::days(3);
        let der = leaf(&issuer, future);
        let v = Verifier::new(vec![root], vec![], DEFAULT_DEPTH).expect("verifier");
        let err = v
            .verify(
                &[CertificateDer::from(der)],
                Purpose::Client,
                UnixTime::now(),
            )
            .expect_err("must fail");
        assert_eq!(err.openssl_reason(), "certificate is not yet valid");
        let msg = err.to_string();
        assert!(msg.starts_with("not yet valid: "), "{msg}");
        assert!(
            msg.contains("(in 3d 0h)") || msg.contains("(in 2d 23h)"),
            "{msg}"
        );
    }

    #[test]
    fn valid_leaf_passes_and_expired_fails_with_openssl_wording() {
        let (root, issuer) = ca();
        let v = Verifier::new(vec![root], vec![], DEFAULT_DEPTH).expect("verifier");
        let good = leaf(
            &issuer,
            OffsetDateTime::now_utc() - time::Duration::hours(1),
        );
        assert!(v
            .verify(
                &[CertificateDer::from(good)],
                Purpose::Client,
                UnixTime::now()
            )
            .is_ok());
        let old = leaf(&issuer, OffsetDateTime::now_utc() - time::Duration::days(3));
        let err = v
            .verify(
                &[CertificateDer::from(old)],
                Purpose::Client,
                UnixTime::now(),
            )
            .expect_err("expired");
        assert_eq!(err.openssl_reason(), "certificate has expired");
        assert_eq!(err.label(), "expired");
    }
}
