//! Revocation: the reasons `ca revoke` accepts and the two CRLs `ca crl` signs (the
//! intermediate's, covering leaves, and the root's, covering the intermediate).

use rcgen::{Issuer, KeyPair, SerialNumber};
use time::{Duration, OffsetDateTime};

use super::{now, Signer};
use crate::error::{PkiError, Result};

/// One revoked certificate, as the inventory remembers it.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// Serial, uppercase hex.
    pub serial: String,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<Reason>,
}

/// CRL reason codes users may give to `ca revoke --reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl Reason {
    pub const NAMES: &'static str =
        "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation";

    pub fn parse(s: &str) -> Result<Self> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match k.as_str() {
            "unspecified" => Reason::Unspecified,
            "keycompromise" => Reason::KeyCompromise,
            "affiliationchanged" => Reason::AffiliationChanged,
            "superseded" => Reason::Superseded,
            "cessationofoperation" => Reason::CessationOfOperation,
            _ => {
                return Err(PkiError::InvalidInput {
                    what: "revocation reason",
                    value: s.into(),
                    reason: format!("expected one of {}", Self::NAMES),
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Reason::Unspecified => rcgen::RevocationReason::Unspecified,
            Reason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Reason::Superseded => rcgen::RevocationReason::Superseded,
            Reason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

/// The CRLs `ca crl` produces: the intermediate's (covering leaves) and the root's
/// (covering the intermediate). nginx checks CRLs for every CA in the chain, so both
/// belong in an `ssl_crl` file.
pub struct Crls {
    pub intermediate: Vec<u8>,
    pub root: Vec<u8>,
}
impl Signer {
    /// Signs the intermediate's CRL (listing `revoked` leaves) and the root's CRL
    /// (listing `revoked_intermediates`, normally none).
    pub fn crls(
        &self,
        revoked: &[Revoked],
        revoked_intermediates: &[Revoked],
        crl_number: u64,
        next_update: Duration,
    ) -> Result<Crls> {
        let make = |list: &[Revoked], issuer: &Issuer<'static, KeyPair>| -> Result<Vec<u8>> {
            let n = now();
            let params = rcgen::CertificateRevocationListParams {
                this_update: n - Duration::minutes(5),
                next_update: n + next_update,
                crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
                issuing_distribution_point: None,
                revoked_certs: list
                    .iter()
                    .filter_map(|r| {
                        let bytes = hex::decode(&r.serial).ok()?;
                        Some(rcgen::RevokedCertParams {
                            serial_number: SerialNumber::from_slice(&bytes),
                            revocation_time: r.revoked_at,
                            reason_code: r.reason.map(Reason::rcgen),
                            invalidity_date: None,
                        })
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            Ok(params.signed_by(issuer)?.der().to_vec())
        };
        Ok(Crls {
            intermediate: make(revoked, &self.issuer)?,
            root: make(revoked_intermediates, &self.root_issuer)?,
        })
    }
}
