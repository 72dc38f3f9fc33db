//! Renewal (with the current certificate, or the retry of a lost answer) and recovery
//! after expiry (with the recovery token and a signature by the old key); a renewal or
//! recovery that shows a clone quarantines the device. Where a renewal is decided:
//! [`Authority::renew`] and [`Authority::recover`].

use super::*;

/// What a device sends to recover after its certificate expired.
#[derive(Clone)]
pub struct RecoverRequest {
    pub device_id: String,
    pub recovery_token: String,
    /// The new CSR, PEM or DER.
    pub csr: Vec<u8>,
    /// Signature by the old key over SHA-256 of the new CSR's DER.
    pub signature: Vec<u8>,
    /// The device's last certificate, PEM or DER.
    pub certificate: Vec<u8>,
}

// The recovery token and signature never reach Debug output.
mtlsgate_store::debug_hiding!(RecoverRequest {
    device_id, csr, certificate,
} hiding { recovery_token, signature });

impl Authority {
    /// Renews the certificate of the device presenting `client_chain` (verified against
    /// this CA): the device must be active, and the certificate must be its current one
    /// or the one that replaced it (a retry whose answer was lost). The new certificate
    /// keeps the device ID and tags; the recovery token rotates.
    pub async fn renew(
        &self,
        client_chain: &[CertificateDer<'_>],
        csr: &[u8],
        seen: Seen,
    ) -> Result<DeviceIssued> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        if client_chain.is_empty() {
            return Err(AuthorityError::NoClientCertificate {
                what: "renewal needs the device's current certificate",
            });
        }
        self.verifier
            .verify(client_chain, Purpose::Client, unix_time(seen.now))
            .map_err(|f| AuthorityError::ClientCertificate {
                reason: f.to_string(),
            })?;
        let info = CertInfo::from_der(&client_chain[0])?;
        let id = info
            .device_id
            .as_deref()
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| AuthorityError::NotADevice {
                subject: info.subject.clone(),
            })?;
        // The device and the state of the certificate it presented, in one read.
        let (d, presented) = self
            .inv
            .device_with_certificate(&id, &info.serial)
            .await?
            .ok_or_else(|| AuthorityError::NotADevice {
                subject: info.subject.clone(),
            })?;
        if d.status != DeviceStatus::Active {
            return Err(AuthorityError::NotActive {
                id,
                status: d.status,
            });
        }
        let current = d.cert_serial.clone().unwrap_or_default();
        let retry =
            info.serial != current && d.prev_serial.as_deref() == Some(info.serial.as_str());
        if info.serial != current && !retry {
            return Err(self.superseded(&id, &info, &current, &seen).await);
        }
        let rec = presented.ok_or_else(|| {
            StoreError::UnknownSerial(mtlsgate_store::normalize_serial(&info.serial))
        })?;
        if rec.revoked_at.is_some() || rec.sha256 != info.sha256_fingerprint {
            return Err(AuthorityError::CertRevoked {
                serial: info.serial,
            });
        }
        let csr = pkidevice::check_device_csr(csr)?;
        let (via, detail) = if retry {
            // The answer that carried `current` was lost: it is abandoned (revoked), and
            // the device keeps no previous serial, so the retry works once. An operator's
            // revocation of `current` stands.
            if self.inv.get(&current).await?.revoked_at.is_some() {
                return Err(AuthorityError::CertRevoked { serial: current });
            }
            (
                Via::Retry {
                    abandoned: current.clone(),
                    presented: info.serial.clone(),
                    reason: Reason::Superseded.as_str().into(),
                },
                format!(
                    "renewed with {} again (the answer with {current} was lost; {current} revoked)",
                    info.serial
                ),
            )
        } else {
            (
                Via::Renewal { serial: current },
                format!("renewed with {}", info.serial),
            )
        };
        self.issue_device(
            &csr,
            &id,
            self.lifetime(d.lifetime_secs, &d.tags),
            via,
            &seen,
            ("renew", Some(detail)),
        )
        .await
    }

    /// A renewal with a certificate of device `id` that is neither its current one nor
    /// the one a lost answer may retry with: two holders of one identity (a clone). The
    /// device is quarantined (audit `clone`). A certificate the inventory does not give
    /// this device is only refused.
    pub(crate) async fn superseded(
        &self,
        id: &str,
        info: &CertInfo,
        current: &str,
        seen: &Seen,
    ) -> AuthorityError {
        let ours = match self.inv.get(&info.serial).await {
            Ok(rec) => {
                rec.device_id.as_deref() == Some(id) && rec.sha256 == info.sha256_fingerprint
            }
            Err(StoreError::UnknownSerial(_)) => false,
            Err(e) => return e.into(),
        };
        if !ours {
            return AuthorityError::Superseded {
                id: id.into(),
                serial: info.serial.clone(),
                current: current.into(),
            };
        }
        let audit = Audit::new(seen.now.unix_timestamp(), "mtlsgate", "clone")
            .device(id)
            .serial(&info.serial)
            .detail(format!(
                "certificate {}, already replaced by {current}, was presented for renewal{}; device quarantined",
                info.serial,
                seen.addr
                    .as_deref()
                    .map(|a| format!(" from {a}"))
                    .unwrap_or_default()
            ));
        if let Err(e) = self.quarantine(id, &audit).await {
            return e;
        }
        AuthorityError::CloneRenewal {
            id: id.into(),
            serial: info.serial.clone(),
            current: current.into(),
        }
    }

    /// Quarantines device `id` with `audit` (only logged when it is no longer in a status
    /// that can be quarantined).
    pub(crate) async fn quarantine(&self, id: &str, audit: &Audit) -> Result<()> {
        match self
            .inv
            .update_status(
                id,
                Action::Quarantine.sources(),
                DeviceStatus::Quarantined,
                None,
                audit,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::StatusChanged { .. }) => Ok(self.inv.log(audit).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Recovers a device whose certificate expired while it was offline: its current
    /// recovery token (within the grace after expiry), its last certificate, and a
    /// signature by that certificate's key over SHA-256 of the new CSR's DER. A recovery
    /// token that was already replaced means two devices share the identity: the device
    /// is quarantined and [`AuthorityError::Clone`] returned.
    pub async fn recover(&self, r: RecoverRequest, seen: Seen) -> Result<DeviceIssued> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let id = r.device_id.trim().to_ascii_lowercase();
        let at = seen.now.unix_timestamp();
        if !well_formed(&r.recovery_token, RECOVERY_PREFIX) {
            return Err(AuthorityError::RecoveryUnknown { id });
        }
        let hash = token_hash(&r.recovery_token);
        let rec = match self.inv.recovery(&hash).await? {
            Some(rec) if rec.device_id == id => rec,
            _ => return Err(AuthorityError::RecoveryUnknown { id }),
        };
        if rec.replaced_at.is_some() {
            let audit = Audit::new(at, "mtlsgate", "clone")
                .device(&id)
                .detail(format!(
                    "a replaced recovery token was presented{}; device quarantined",
                    seen.addr
                        .as_deref()
                        .map(|a| format!(" from {a}"))
                        .unwrap_or_default()
                ));
            match self
                .inv
                .update_status(
                    &id,
                    Action::Quarantine.sources(),
                    DeviceStatus::Quarantined,
                    None,
                    &audit,
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::StatusChanged { .. }) => self.inv.log(&audit).await?,
                Err(e) => return Err(e.into()),
            }
            return Err(AuthorityError::Clone { id });
        }
        if at > rec.expires_at {
            return Err(AuthorityError::RecoveryExpired {
                id,
                at: rec.expires_at,
            });
        }
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        if d.status != DeviceStatus::Active {
            return Err(AuthorityError::NotActive {
                id,
                status: d.status,
            });
        }
        let old = first_certificate(&r.certificate)?;
        let info = CertInfo::from_der(&old)?;
        let current = d.cert_serial.clone().unwrap_or_default();
        let known = self.inv.get(&current).await?;
        if info.serial != current || known.sha256 != info.sha256_fingerprint {
            return Err(AuthorityError::RecoveryWrongCertificate {
                id,
                serial: info.serial,
            });
        }
        let csr = pkidevice::check_device_csr(&r.csr)?;
        let digest = sha2::Sha256::digest(&csr.der);
        pkidevice::verify_signature_by_certificate_key(&old, &digest, &r.signature)
            .map_err(|_| AuthorityError::RecoverySignature { id: id.clone() })?;
        if let Some(revoked_at) = known.revoked_at {
            self.recover_revoked(&id, &known, revoked_at, &seen).await?;
        }
        self.issue_device(
            &csr,
            &id,
            self.lifetime(d.lifetime_secs, &d.tags),
            Via::Recovery {
                serial: current,
                recovery_hash: hash,
            },
            &seen,
            ("recover", Some(format!("recovered from {}", info.serial))),
        )
        .await
    }

    /// Recovery with a certificate that was revoked (by `ca revoke`, for a stolen key, say):
    /// whoever holds the device's state directory has the key and the recovery token, so
    /// the device is quarantined and refused, until an operator allows it again (an
    /// `allow` recorded after the revocation lets the next recovery through).
    pub(crate) async fn recover_revoked(
        &self,
        id: &str,
        known: &CertRecord,
        revoked_at: i64,
        seen: &Seen,
    ) -> Result<()> {
        let allowed_since = self
            .inv
            .audit_of(id, 100)
            .await?
            .iter()
            .any(|e| e.action == Action::Allow.as_str() && e.at >= revoked_at);
        if allowed_since {
            return Ok(());
        }
        let reason = known
            .revocation_reason
            .clone()
            .unwrap_or_else(|| "no reason given".into());
        let audit = Audit::new(seen.now.unix_timestamp(), "mtlsgate", "quarantine")
            .device(id)
            .serial(&known.serial)
            .detail(format!(
                "recovery with certificate {}, revoked ({reason}){}; device quarantined",
                known.serial,
                seen.addr
                    .as_deref()
                    .map(|a| format!(", from {a}"))
                    .unwrap_or_default()
            ));
        self.quarantine(id, &audit).await?;
        Err(AuthorityError::RecoveryRevoked {
            id: id.into(),
            serial: known.serial.clone(),
            reason,
        })
    }
}
