//! Importing devices that already hold a certificate — issued by this CA before it kept an
//! inventory, or by another CA the operator trusts (a fleet grown with openssl): the
//! certificate must verify (to this CA, or to one of the issuers given), be unexpired and
//! name a device in its CN; the device is then recorded active with that certificate as
//! its current one, at the next revision, so gateways let it in.

use super::*;

/// A certificate to import.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// The certificate (DER), then any intermediates that came with it.
    pub chain: Vec<Vec<u8>>,
    /// The device ID it must name (an ID in a CSV list); `None`: the one its CN names.
    pub device_id: Option<String>,
    /// CA certificates (DER) trusted as issuers besides this CA.
    pub issuers: Vec<Vec<u8>>,
    pub tags: Vec<String>,
}

impl Authority {
    /// Records the device a certificate names as active, with that certificate (see the
    /// module's documentation). Refusals: expired, not verified by a trusted issuer, no
    /// device ID in it, another ID than `device_id`, a device or serial already recorded.
    pub async fn import_device(
        &self,
        r: &ImportRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Device> {
        let Some(leaf) = r.chain.first() else {
            return Err(AuthorityError::Import {
                reason: "no certificate was given".into(),
            });
        };
        let info = CertInfo::from_der(leaf)?;
        let subject = mtlsgate_pki::printable::printable(&info.subject).to_string();
        if info.is_ca {
            return Err(AuthorityError::Import {
                reason: format!("{subject} is a CA certificate, not a device's"),
            });
        }
        if info.not_after <= now {
            return Err(AuthorityError::Import {
                reason: format!(
                    "the certificate of {subject} expired on {}; a device with an expired certificate cannot connect: enroll it with an enrollment token instead",
                    mtlsgate_pki::certinfo::human_time(info.not_after)
                ),
            });
        }
        let tags = r
            .tags
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>>>()?;
        let chain: Vec<CertificateDer<'_>> = r
            .chain
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let checked = if r.issuers.is_empty() {
            self.verifier
                .verify(&chain, Purpose::Client, unix_time(now))
        } else {
            let mut anchors = vec![self.ca.root_der.clone(), self.ca.intermediate_der.clone()];
            anchors.extend(r.issuers.iter().cloned());
            Verifier::new(anchors, vec![], DEFAULT_DEPTH)?.verify(
                &chain,
                Purpose::Client,
                unix_time(now),
            )
        };
        if let Err(f) = checked {
            return Err(AuthorityError::Import {
                reason: format!(
                    "the certificate of {subject} is not from a trusted CA (this CA{}): {f}",
                    if r.issuers.is_empty() {
                        "; name its issuer as a trusted CA"
                    } else {
                        " or the issuers given"
                    }
                ),
            });
        }
        let Some(cn) = info.device_id.as_deref().map(str::to_ascii_lowercase) else {
            return Err(AuthorityError::Import {
                reason: format!("the certificate of {subject} has no CN, so it names no device"),
            });
        };
        pkidevice_id_check(&cn, &subject)?;
        if let Some(want) = &r.device_id {
            let want = want.trim().to_ascii_lowercase();
            if want != cn {
                return Err(AuthorityError::Import {
                    reason: format!(
                        "the certificate names device {cn} (its CN), not {}: gateways know a device by its certificate's CN",
                        mtlsgate_pki::printable::printable(&want)
                    ),
                });
            }
        }
        let at = now.unix_timestamp();
        let cert = CertRecord {
            serial: info.serial.clone(),
            kind: "client".into(),
            subject: info.subject.clone(),
            device_id: Some(cn.clone()),
            not_before: info.not_before.unix_timestamp(),
            not_after: info.not_after.unix_timestamp(),
            sha256: info.sha256_fingerprint.clone(),
            issued_at: at,
            revoked_at: None,
            revocation_reason: None,
            der: leaf.to_vec(),
            revision: None,
        };
        let device = NewDevice {
            id: cn.clone(),
            status: DeviceStatus::Active,
            tags,
            lifetime_secs: None,
            created_by: actor.to_string(),
            pending_csr: None,
            poll_hash: None,
            seen: mtlsgate_store::Seen {
                at,
                addr: None,
                agent_version: None,
            },
        };
        let audit = Audit::new(at, actor, "import")
            .device(&cn)
            .serial(&info.serial)
            .detail(format!("issued by {}", info.issuer));
        Ok(self.inv.import_device(&device, &cert, &audit).await?)
    }
}

/// A device ID read from a certificate must be one a gateway can match and print: no
/// control characters, not empty, at most 253 bytes.
fn pkidevice_id_check(id: &str, subject: &str) -> Result<()> {
    if id.is_empty() || id.len() > 253 || id.chars().any(char::is_control) {
        return Err(AuthorityError::Import {
            reason: format!("the CN of {subject} is not a device ID mtlsgate can use"),
        });
    }
    Ok(())
}
