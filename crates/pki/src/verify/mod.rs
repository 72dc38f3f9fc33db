//! Client and server certificate verification, and the explanation of a failure.
//!
//! [`Verifier::verify`] is the one path both `mtlsgate cert verify` and the gateway use.
//! For X.509 v3 leaves rustls-webpki decides (fast, and the same code rustls runs), and
//! only when it says no does [`Verifier::explain`] walk the chain with x509-parser to say
//! *why* in one line a person understands ("expired at …", "issuer … is missing: the
//! intermediate is not in the file", "revoked at …"). Every failure also carries OpenSSL's
//! wording for nginx's `$ssl_client_verify` (`FAILED:certificate has expired`).
//!
//! X.509 **v1** leaves (what `openssl x509 -req` makes without an extension file) are
//! refused by webpki, but OpenSSL and nginx accept them. For those the same walk decides,
//! with the checks OpenSSL makes: the signature by the issuer, the validity period, an
//! issuer that is a trust anchor or a presented v3 CA intermediate chaining to one, the
//! verify depth, an RSA key of at least 2048 bits, and revocation by the configured CRLs
//! (whose signatures are checked with the issuer's key). A v1 certificate has no extended
//! key usage, which means any purpose. A v1 certificate can never be an intermediate; a
//! self-signed v1 certificate is accepted only as a trust anchor in the bundle.
//!
//! Pinned certificates (bundle certificates that are not CAs, or are self-signed) are also
//! decided by the walk: trusted as they are, but within their validity and not revoked.
//!
//! On a path that webpki or the walk accepted, `Verifier::path_failure` then refuses what
//! RFC 5280 forbids and webpki lets through (the x509-limbo cases): critical AKI/SKI, a
//! leaf with keyCertSign or name constraints, a CA without keyCertSign or with an empty
//! subject, an expired trust anchor or one with an unknown critical extension, leaf keys
//! TLS cannot use, and (strict CRL checking) CRLs without a non-critical CRL number or from
//! a CA without cRLSign.
//!
//! The rooms: `failure` (why a certificate was refused, and its wording), `webpki_map`
//! (webpki's errors as typed failures), `build` (webpki's path building), `walk` (the
//! chain walked by hand), `profile` (the RFC 5280 rules webpki leaves out) and `crl`
//! (revocation and CRL usability). This module holds the public API: [`Verifier`],
//! [`Purpose`], [`CrlCheck`].

use std::collections::HashSet;
use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::Digest as _;
use webpki::{CertRevocationList, EndEntityCert, OwnedCertRevocationList};
use x509_parser::x509::X509Version;

use crate::certinfo;
use crate::error::{PkiError, Result};

mod build;
mod crl;
mod failure;
mod profile;
#[cfg(test)]
mod tests;
mod walk;
mod webpki_map;

use crl::CrlFacts;
use walk::Walk;

pub use failure::{
    CrlDefect, CrlProblem, Failure, KeyIdentifier, ProfileViolation, SignatureRefusal, Unreadable,
    UnusableKey, WebpkiRefusal,
};
pub use webpki_map::{failure_from_webpki, ErrorContext};

/// What the certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Client,
    Server,
}

impl Purpose {
    pub(crate) fn eku(self) -> &'static str {
        match self {
            Purpose::Client => "clientAuth",
            Purpose::Server => "serverAuth",
        }
    }

    pub(crate) fn words(self) -> &'static str {
        match self {
            Purpose::Client => "TLS client authentication",
            Purpose::Server => "TLS server authentication",
        }
    }
}

/// A trust bundle, optional CRLs and a verify depth: everything needed to decide.
/// Built once (at start-up or reload) and shared; verifying takes no lock.
pub struct Verifier {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    anchor_ders: Vec<Vec<u8>>,
    /// SHA-256 of certificates trusted as they are (pinned leaves, such as a self-signed
    /// client certificate that nginx's `ssl_client_certificate` names).
    pinned: HashSet<[u8; 32]>,
    crls: Vec<CertRevocationList<'static>>,
    crl_ders: Vec<Vec<u8>>,
    /// Per CRL (same order as `crl_ders`): its issuer's name and what makes it unusable
    /// on its own (no CRL number, or a critical one), found once when the CRL is loaded.
    crl_facts: Vec<CrlFacts>,
    max_depth: usize,
    crl_check: CrlCheck,
}

/// How CRLs decide when they cannot say whether a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlCheck {
    /// As nginx (OpenSSL): when CRLs are configured, a chain whose issuer has no CRL, or
    /// whose CRL is past its nextUpdate, is refused.
    #[default]
    Strict,
    /// A missing or expired CRL lets the certificate through (only a listed serial refuses).
    Lenient,
}

impl CrlCheck {
    pub fn parse(s: &str) -> Option<CrlCheck> {
        match s {
            "strict" => Some(CrlCheck::Strict),
            "lenient" => Some(CrlCheck::Lenient),
            _ => None,
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("anchors", &self.anchors.len())
            .field("pinned", &self.pinned.len())
            .field("crls", &self.crls.len())
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// Default verify depth: leaf → intermediate → root, like nginx's `ssl_verify_depth 2`.
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
                    reason: format!(
                        "a certificate cannot be used as a trust anchor: {}",
                        webpki_map::webpki_sentence(&e)
                    ),
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
                    reason: format!("it cannot be used: {}", webpki_map::webpki_sentence(&e)),
                })?;
            owned.push(CertRevocationList::from(c));
        }
        let crl_facts = crls.iter().map(|d| crl::crl_facts(d)).collect();
        Ok(Verifier {
            anchors,
            anchor_ders: bundle,
            pinned,
            crls: owned,
            crl_ders: crls,
            crl_facts,
            max_depth: max_depth.max(1),
            crl_check: CrlCheck::Strict,
        })
    }

    /// Sets how missing and expired CRLs decide (strict by default).
    pub fn with_crl_check(mut self, c: CrlCheck) -> Self {
        self.crl_check = c;
        self
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

    fn is_pinned(&self, der: &[u8]) -> bool {
        !self.pinned.is_empty() && self.pinned.contains(&sha256(der))
    }

    /// Verifies `chain` (leaf first) for `purpose` at `now`. On failure, explains.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> std::result::Result<(), Failure> {
        let Some(leaf) = chain.first() else {
            return Err(Failure::NoCertificate);
        };
        let parsed = x509_parser::parse_x509_certificate(leaf)
            .ok()
            .map(|(_, x)| x);
        let v1 = parsed
            .as_ref()
            .is_some_and(|x| x.version() == X509Version::V1);
        if v1 || self.is_pinned(leaf) {
            // webpki refuses v1 certificates and knows nothing of pinning: the walk decides.
            return match self.walk(chain, purpose, now) {
                Walk::Clean { .. } | Walk::Pinned => Ok(()),
                Walk::Refused(f) => Err(f),
                Walk::Unreadable => Err(Failure::Unreadable(Unreadable::Leaf)),
            };
        }
        // webpki never uses the leaf's own key, so it does not notice a weak one; the
        // handshake would, but with a less helpful error. Refuse it here.
        let decided = match parsed.as_ref().and_then(profile::small_rsa) {
            Some(_) => Err(webpki::Error::InvalidSignatureForPublicKey),
            None => self.decide(chain, purpose, now),
        };
        match decided {
            Ok(path) => self.audit_decided(chain, &path, now),
            Err(e) => {
                let fallback = match &parsed {
                    Some(x) => ErrorContext::of(x, purpose, chain.len(), self.max_depth),
                    None => ErrorContext {
                        purpose,
                        chain_len: chain.len(),
                        max_depth: self.max_depth,
                        ..ErrorContext::unknown()
                    },
                };
                Err(self
                    .explain(chain, purpose, now, Some(e.clone()))
                    .unwrap_or_else(|| failure_from_webpki(&e, &fallback)))
            }
        }
    }

    /// Checks that `leaf` is valid for `name` (a DNS name or an IP address), as a TLS client
    /// checks a server: against the subject alternative names only, never the CN. Call it
    /// after [`Verifier::verify`] accepted the chain (name constraints are checked there).
    pub fn check_name(
        leaf: &CertificateDer<'_>,
        name: &rustls_pki_types::ServerName<'_>,
    ) -> std::result::Result<(), Failure> {
        let shown = match name {
            rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
            rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => "the name".to_string(),
        };
        let has = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, x)| {
                let info = certinfo::CertInfo::from_parsed(leaf, &x);
                let dns = info.dns_names.iter().map(|d| format!("DNS:{d}"));
                let ips = info.ip_addresses.iter().map(|i| format!("IP:{i}"));
                crate::printable::printable(&dns.chain(ips).collect::<Vec<_>>().join(", "))
                    .into_owned()
            })
            .unwrap_or_default();
        let refused = || Failure::NameMismatch {
            name: shown.clone(),
            names: has.clone(),
        };
        let ee = EndEntityCert::try_from(leaf).map_err(|_| refused())?;
        ee.verify_is_valid_for_subject_name(name)
            .map_err(|_| refused())
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
        let walked = self.walk(chain, purpose, now);
        let length = match walked {
            Walk::Refused(f) => return Some(f),
            Walk::Clean { length } => length,
            Walk::Pinned | Walk::Unreadable => chain.len(),
        };
        let e = webpki_error?;
        let leaf = chain
            .first()
            .and_then(|d| x509_parser::parse_x509_certificate(d).ok());
        let cx = match leaf {
            Some((_, x)) => ErrorContext::of(&x, purpose, length, self.max_depth),
            None => ErrorContext {
                purpose,
                chain_len: length,
                max_depth: self.max_depth,
                ..ErrorContext::unknown()
            },
        };
        Some(failure_from_webpki(&e, &cx))
    }
}
