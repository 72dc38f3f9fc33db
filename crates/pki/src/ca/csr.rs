//! Signing a CSR: the subject copied byte for byte, its SANs kept after the name rule,
//! its key held to the key profile ([`crate::profile`]), everything else the CA's choice.

use rcgen::SigningKey;
use rcgen::{DnType, SanType};
use time::Duration;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::issue::{check_dns, ip_from, leaf_base, rsa_key_usage, ROLE_URI_PREFIX};
use super::{CertKind, Issued, Signer};
use crate::der;
use crate::error::{PkiError, Result};
use crate::names::{self, Origin, San};
use crate::pemfile;
use crate::profile::{self, KeyClass, WeakKey, MIN_RSA_BITS};

impl Signer {
    /// Signs a CSR (PEM or DER). The CSR's subject is copied byte for byte (multi-valued
    /// RDNs, repeated attributes and string types stay as they are) and its SANs are kept;
    /// everything else (EKU, key usage, validity, basic constraints) is the CA's decision.
    /// The names must pass the same rule as [`Signer::issue`] ([`crate::names`]), which
    /// needs the CA's `device_domain`.
    pub fn sign_csr(
        &self,
        csr_name: &str,
        csr_data: &[u8],
        kind: CertKind,
        validity: Duration,
        device_domain: &str,
    ) -> Result<Issued> {
        let blocks = pemfile::parse_blocks(csr_name, csr_data)?;
        let block = blocks
            .into_iter()
            .find(|b| b.label.contains("CERTIFICATE REQUEST") || b.label == "DER")
            .ok_or_else(|| PkiError::Missing {
                path: csr_name.into(),
                what:
                    "certificate signing request (expected `-----BEGIN CERTIFICATE REQUEST-----`)"
                        .into(),
            })?;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.der)
                .map_err(|e| {
                    PkiError::CsrRefused(format!(
                        "{csr_name} is not a readable CSR: {}",
                        crate::error::parse_reason(&e)
                    ))
                })?;
        let info = &csr.certification_request_info;
        let key = profile::check_key(&info.subject_pki).map_err(|weak| {
            PkiError::CsrRefused(match weak {
                WeakKey::SmallRsa { bits } => format!(
                    "its RSA key is {bits} bits; at least {MIN_RSA_BITS} bits are required, because keys that small can be factored and curl, browsers and rustls reject them (make a new key with `openssl genrsa -out client.key 2048`, or better `openssl ecparam -genkey -name prime256v1 -out client.key`)"
                ),
                WeakKey::Curve { oid } => format!(
                    "its elliptic curve ({}) is not accepted; use P-256, P-384 or P-521",
                    WeakKey::curve_shown(&oid)
                ),
                WeakKey::Dsa => unsupported_type(profile::OID_DSA),
                WeakKey::Type { oid } => unsupported_type(&oid),
            })
        })?;
        csr.verify_signature().map_err(|_| {
            PkiError::CsrRefused(
                "its signature does not verify: the CSR was altered after it was made, or it was not signed with the key it contains".into(),
            )
        })?;
        let mut sans = Vec::new();
        let mut text_sans: Vec<San<'_>> = Vec::new();
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                match ext {
                    ParsedExtension::BasicConstraints(bc) if bc.ca => {
                        return Err(PkiError::CsrRefused(
                            "it asks to be a CA (basicConstraints CA:TRUE); mtlsgate signs CSRs only for leaf certificates".into(),
                        ));
                    }
                    ParsedExtension::SubjectAlternativeName(san) => {
                        for gn in &san.general_names {
                            match gn {
                                GeneralName::DNSName(d) => text_sans.push(San::Dns(d)),
                                GeneralName::URI(u) => {
                                    if u.to_ascii_lowercase().starts_with(ROLE_URI_PREFIX) {
                                        return Err(PkiError::CsrRefused(format!(
                                            "it asks for the URI SAN {}; roles of mtlsgate (urn:mtlsgate:role:…) are given only by `mtlsgate cert issue admin NAME`, never from a CSR",
                                            crate::printable::printable(u)
                                        )));
                                    }
                                    text_sans.push(San::Uri(u))
                                }
                                GeneralName::RFC822Name(e) => text_sans.push(San::Email(e)),
                                GeneralName::IPAddress(b) => {
                                    if let Some(ip) = ip_from(b) {
                                        sans.push(SanType::IpAddress(ip));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // The subject as the parties reading it will see it, for the names rule.
        let mut subject: Vec<(String, String)> = Vec::new();
        for atv in info.subject.iter_attributes() {
            let oid = atv.attr_type().to_id_string();
            let attr = crate::dn::short_name(&oid)
                .map(str::to_string)
                .unwrap_or(oid);
            let value = atv.attr_value();
            if let Some(text) = names::attribute_text(value.header.tag().0, value.data) {
                subject.push((attr, text));
            }
        }
        let subject_refs: Vec<(&str, &str)> = subject
            .iter()
            .map(|(a, v)| (a.as_str(), v.as_str()))
            .collect();
        names::check_leaf_names(kind, &subject_refs, &text_sans, device_domain, Origin::Csr)?;
        for s in &text_sans {
            sans.push(match *s {
                San::Dns(d) => SanType::DnsName(d.try_into()?),
                San::Uri(u) => SanType::URI(u.try_into()?),
                San::Email(e) => SanType::Rfc822Name(e.try_into()?),
            });
        }
        let cn = subject
            .iter()
            .find(|(a, _)| a == "CN")
            .map(|(_, v)| v.clone());
        if cn.is_none() && sans.is_empty() {
            return Err(PkiError::CsrRefused(
                "it has neither a subject CN nor any subject alternative name, so the certificate would identify nobody".into(),
            ));
        }
        // A CN that is a host name (a server name, or a device ID) also goes in a DNS SAN,
        // since TLS clients match names only against SANs.
        if sans.is_empty() {
            if let Some(c) = cn.as_deref().filter(|c| check_dns(c).is_ok()) {
                sans.push(SanType::DnsName(c.try_into()?));
            }
        }
        let mut p = leaf_base(kind, validity);
        if matches!(key, KeyClass::Rsa { .. }) {
            rsa_key_usage(&mut p, true);
        }
        // rcgen would re-encode the subject (flattening multi-valued RDNs, keeping one of
        // repeated attributes), so it signs with a placeholder that is then replaced by the
        // CSR's subject bytes. An empty placeholder for an empty subject keeps rcgen's
        // critical SAN extension, as RFC 5280 asks.
        let subject_der = info.subject.as_raw();
        let empty_subject = info.subject.iter_attributes().next().is_none();
        if !empty_subject {
            p.distinguished_name
                .push(DnType::CommonName, "mtlsgate placeholder subject");
        }
        p.subject_alt_names = sans;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)?;
        let cert = p.signed_by(&spki, &self.issuer)?;
        let der = self.with_subject(cert.der(), subject_der)?;
        Issued::new(kind, der)
    }

    /// Replaces the subject of a certificate this signer just made with `subject_der` (a
    /// whole DER Name) and signs the TBSCertificate again, keeping the signature algorithm.
    fn with_subject(&self, cert_der: &[u8], subject_der: &[u8]) -> Result<Vec<u8>> {
        let broken = |what: &str| PkiError::BadCertificate {
            path: "signed certificate".into(),
            reason: format!("cannot copy the CSR's subject into it: {what}"),
        };
        let name = der::read_one(subject_der)
            .filter(|t| t.tag == der::SEQUENCE)
            .ok_or_else(|| broken("the CSR's subject is not a DER SEQUENCE"))?;
        let signed = der::split_signed(cert_der).ok_or_else(|| broken("unexpected structure"))?;
        let mut parts: Vec<&[u8]> = der::elements(signed.tbs.value)
            .ok_or_else(|| broken("unexpected TBSCertificate"))?
            .iter()
            .map(|t| t.raw)
            .collect();
        // version [0], serial, signature, issuer, validity, subject, …
        if parts.len() < 7 || parts[0].first() != Some(&0xa0) {
            return Err(broken("unexpected TBSCertificate fields"));
        }
        parts[5] = name.raw;
        let tbs = der::encode(der::SEQUENCE, &parts);
        let sig = self.issuer.key().sign(&tbs)?;
        Ok(der::assemble_signed(&tbs, signed.algorithm.raw, &sig))
    }
}

/// A CSR's key of a type the profile does not accept, by its algorithm OID.
fn unsupported_type(oid: &str) -> String {
    format!(
        "its key type ({oid}) is not supported; use RSA ({MIN_RSA_BITS} bits or more), ECDSA P-256/P-384, or Ed25519"
    )
}
