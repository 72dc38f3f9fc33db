//! CRLs: what is known of each CRL when it is loaded (its issuer, whether RFC 5280 lets it
//! be used), the revocation check of the walk, and the strict-mode check that a CA's CRL
//! can be used at all. Revocation of v3 chains webpki checks itself (see `build`); this
//! module decides for the walk and explains.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use super::failure::{CrlDefect, CrlProblem, Failure};
use super::{CrlCheck, Verifier};
use crate::{certinfo, dn};

/// The CRL number extension (RFC 5280 5.2.3).
const OID_CRL_NUMBER: &str = "2.5.29.20";

/// Serials of at most 32 bits: picked by hand or counted up (`-set_serial 01`), so the same
/// serial may well have been given to several certificates. Random serials are 64+ bits.
fn is_small_serial(raw: &[u8]) -> bool {
    crate::der::integer_bits(raw) <= 32
}

pub(super) fn is_small_serial_hex(hex_serial: &str) -> bool {
    hex::decode(hex_serial)
        .map(|b| is_small_serial(&b))
        .unwrap_or(false)
}

/// What is known of a CRL without its issuer's certificate.
pub(super) struct CrlFacts {
    /// The issuer name, DER (as x509-parser's `as_raw`).
    issuer: Vec<u8>,
    /// Why the CRL does not conform to RFC 5280 5.2.3, if it does not.
    defect: Option<CrlDefect>,
}

/// RFC 5280 5.2.3: a CRL must carry a CRL number, marked non-critical.
pub(super) fn crl_facts(der: &[u8]) -> CrlFacts {
    let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
        return CrlFacts {
            issuer: Vec::new(),
            defect: Some(CrlDefect::Unparsable),
        };
    };
    let number = crl
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_CRL_NUMBER);
    let defect = match number {
        None => Some(CrlDefect::NoCrlNumber),
        Some(e) if e.critical => Some(CrlDefect::CriticalCrlNumber),
        Some(_) => None,
    };
    CrlFacts {
        issuer: crl.issuer().as_raw().to_vec(),
        defect,
    }
}

impl Verifier {
    /// Strict CRL checking: the CRLs `issuer` published must include one it could sign
    /// (its key usage, if any, allows cRLSign) and that conforms to RFC 5280 (a CRL number,
    /// not critical). Revocation itself and missing CRLs are decided elsewhere.
    pub(super) fn crl_defect(
        &self,
        x: &X509Certificate<'_>,
        issuer: &X509Certificate<'_>,
    ) -> Option<Failure> {
        let mut first_defect = None;
        for f in &self.crl_facts {
            if f.issuer != x.issuer().as_raw() || f.issuer != issuer.subject().as_raw() {
                continue;
            }
            let defect = if matches!(issuer.key_usage(), Ok(Some(ku)) if !ku.value.crl_sign()) {
                Some(CrlDefect::IssuerNotCrlSigner)
            } else {
                f.defect
            };
            match defect {
                None => return None,
                Some(d) => {
                    first_defect.get_or_insert(d);
                }
            }
        }
        first_defect.map(|defect| {
            Failure::Crl(CrlProblem::Unusable {
                issuer: dn::rfc2253(issuer.subject()),
                defect,
            })
        })
    }

    /// The CRL entry revoking `x`, from a CRL whose signature verifies with the key of one
    /// of `issuers` named as the CRL's issuer. A CRL entry names an issuer and a serial, so
    /// every certificate of that issuer with that serial is revoked (as in OpenSSL). A CRL
    /// for `x`'s issuer whose signature does not verify refuses the certificate, as webpki
    /// and OpenSSL ("CRL signature failure") do; a CRL whose issuer is not known at all
    /// cannot be checked and is left out (the walk then fails on the unknown issuer).
    pub(super) fn revocation_of(
        &self,
        x: &X509Certificate<'_>,
        issuers: &[&X509Certificate<'_>],
        now: OffsetDateTime,
    ) -> std::result::Result<Option<(OffsetDateTime, Option<String>)>, Failure> {
        let strict = self.crl_check == CrlCheck::Strict && !self.crl_ders.is_empty();
        let mut covered = false;
        for der in &self.crl_ders {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
                continue;
            };
            if crl.issuer().as_raw() != x.issuer().as_raw() {
                continue;
            }
            let named: Vec<&&X509Certificate<'_>> = issuers
                .iter()
                .filter(|i| i.subject().as_raw() == crl.issuer().as_raw())
                .collect();
            if named.is_empty() {
                continue;
            }
            if !named
                .iter()
                .any(|i| crl.verify_signature(i.public_key()).is_ok())
            {
                return Err(Failure::Crl(CrlProblem::BadSignature {
                    issuer: dn::rfc2253(crl.issuer()),
                }));
            }
            covered = true;
            if strict {
                if let Some(next) = crl.next_update() {
                    let next = OffsetDateTime::from_unix_timestamp(next.timestamp())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    if next < now {
                        return Err(Failure::CrlExpired {
                            issuer: Some(dn::rfc2253(crl.issuer())),
                            next_update: next,
                        });
                    }
                }
            }
            let entry = crl
                .iter_revoked_certificates()
                .find(|r| r.raw_serial() == x.raw_serial())
                .map(|r| {
                    let at = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    let reason = r.reason_code().map(|(_, rc)| reason_name(rc.0).to_string());
                    (at, reason)
                });
            if entry.is_some() {
                return Ok(entry);
            }
        }
        if strict && !covered {
            return Err(Failure::CrlMissing {
                issuer: Some(dn::rfc2253(x.issuer())),
            });
        }
        Ok(None)
    }
}

pub(super) fn revoked(
    x: &X509Certificate<'_>,
    at: OffsetDateTime,
    reason: Option<String>,
) -> Failure {
    Failure::Revoked {
        subject: dn::rfc2253(x.subject()),
        serial: certinfo::serial_hex(x.raw_serial()),
        at: Some(at),
        reason,
        small_serial: is_small_serial(x.raw_serial()),
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
