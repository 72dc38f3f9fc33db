//! Certificates the operator asks for: signing and recording leaves and CSRs, the chain
//! served with them, revocation (never the root) and the CRLs. Every certificate is
//! recorded before it is returned.

use super::*;

/// The rule for `ca revoke`: any certificate but the root.
pub fn check_revocable(rec: &CertRecord) -> Result<()> {
    if rec.kind == CertKind::Root.as_str() {
        return Err(AuthorityError::RootRevocation {
            serial: rec.serial.clone(),
        });
    }
    Ok(())
}

/// A certificate signed but not yet recorded: only [`Authority::record`] hands out the
/// certificate. Its key may be written first (`cert issue` creates the key file before
/// recording, to claim the name).
pub struct Signed {
    issued: Issued,
    key: KeyPair,
    record_kind: String,
}

impl Signed {
    /// The new private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Zeroizing<String>> {
        Ok(key::to_pkcs8_pem(&self.key, None)?)
    }

    pub fn serial(&self) -> &str {
        &self.issued.info.serial
    }
}

/// Signed CRLs and what they hold.
pub struct CrlSet {
    pub crls: Crls,
    pub number: i64,
    pub revoked_leaves: usize,
    pub revoked_intermediates: usize,
}

pub(crate) fn record_of(
    issued: &Issued,
    kind: &str,
    device_id: Option<&str>,
    at: i64,
) -> CertRecord {
    let i = &issued.info;
    CertRecord {
        serial: i.serial.clone(),
        kind: kind.into(),
        subject: i.subject.clone(),
        device_id: device_id.map(str::to_string),
        not_before: i.not_before.unix_timestamp(),
        not_after: i.not_after.unix_timestamp(),
        sha256: i.sha256_fingerprint.clone(),
        issued_at: at,
        revoked_at: None,
        revocation_reason: None,
        der: issued.der.clone(),
        revision: None,
    }
}

/// The inventory kind of a leaf: `admin` for an administrator's client certificate.
pub(crate) fn leaf_kind(req: &LeafRequest) -> String {
    if req.kind == CertKind::Client && req.uris.iter().any(|u| u == ADMIN_URI) {
        "admin".into()
    } else {
        req.kind.as_str().into()
    }
}

pub(crate) fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        t.unix_timestamp().max(0) as u64
    ))
}

/// The first certificate in PEM or DER data.
pub(crate) fn first_certificate(data: &[u8]) -> Result<Vec<u8>> {
    let blocks = pemfile::parse_blocks("the certificate", data)?;
    Ok(pemfile::certs_from_blocks("the certificate", blocks)?
        .into_iter()
        .next()
        .ok_or_else(|| mtlsgate_pki::PkiError::Missing {
            path: "the request".into(),
            what: "certificate".into(),
        })?)
}

impl Authority {
    /// Signs a leaf with a new key, without recording it yet (see [`Signed`]).
    pub fn sign_leaf(&self, req: &LeafRequest) -> Result<Signed> {
        let (issued, key) = self.signer()?.issue(req, self.domain())?;
        Ok(Signed {
            issued,
            key,
            record_kind: leaf_kind(req),
        })
    }

    /// Records a signed leaf and hands out its certificate and key.
    pub async fn record(&self, s: Signed, actor: &str) -> Result<(Issued, KeyPair)> {
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let device_id = (s.issued.kind == CertKind::Client && s.record_kind == "client")
            .then(|| s.issued.info.device_id.clone())
            .flatten();
        self.inv
            .record_issuance(&Issuance {
                cert: record_of(&s.issued, &s.record_kind, device_id.as_deref(), at),
                device: None,
                audit: Audit::new(at, actor, "issue")
                    .serial(&s.issued.info.serial)
                    .detail(format!("{} {}", s.record_kind, s.issued.info.subject)),
            })
            .await?;
        Ok((s.issued, s.key))
    }

    /// Forgets a certificate recorded by [`Authority::record`] whose files could not be
    /// written (so it was never handed out).
    pub async fn forget_unissued(&self, serial: &str) -> Result<()> {
        Ok(self.inv.forget_unissued(serial).await?)
    }

    /// Issues a leaf with a new key: signed, recorded, returned.
    pub async fn issue(&self, req: &LeafRequest, actor: &str) -> Result<(Issued, KeyPair)> {
        let s = self.sign_leaf(req)?;
        self.record(s, actor).await
    }

    /// Signs a CSR (`cert sign`: its subject and SANs kept, under the names rule), records
    /// the certificate and returns it.
    pub async fn sign_csr(
        &self,
        csr_name: &str,
        csr: &[u8],
        kind: CertKind,
        validity: Duration,
        actor: &str,
    ) -> Result<Issued> {
        let issued = self
            .signer()?
            .sign_csr(csr_name, csr, kind, validity, self.domain())?;
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let device_id = (kind == CertKind::Client)
            .then(|| issued.info.device_id.clone())
            .flatten();
        self.inv
            .record_issuance(&Issuance {
                cert: record_of(&issued, kind.as_str(), device_id.as_deref(), at),
                device: None,
                audit: Audit::new(at, actor, "sign")
                    .serial(&issued.info.serial)
                    .detail(format!("{} {}", kind.as_str(), issued.info.subject)),
            })
            .await?;
        Ok(issued)
    }

    /// The chain a leaf is served with (leaf + intermediate, PEM).
    pub fn chain_pem(&self, issued: &Issued) -> String {
        format!(
            "{}{}",
            issued.pem(),
            pemfile::to_pem("CERTIFICATE", &self.ca.intermediate_der)
        )
    }

    /// Every certificate in the inventory, oldest first.
    pub async fn certificates(&self) -> Result<Vec<CertRecord>> {
        Ok(self.inv.list().await?)
    }

    /// One page of the certificates matching `f`, oldest first, after `cursor` (the
    /// previous page's `next`); at most `limit` ([`MAX_PAGE`]) certificates.
    pub async fn certificates_page(
        &self,
        f: &CertFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<CertRecord>> {
        Ok(self.inv.certificates_page(f, cursor, limit).await?)
    }

    /// Revokes a certificate by serial. The root cannot be revoked.
    pub async fn revoke_cert(
        &self,
        serial: &str,
        reason: Reason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertRecord> {
        let existing = self.inv.get(serial).await?;
        check_revocable(&existing)?;
        let at = now.unix_timestamp();
        let mut audit = Audit::new(at, actor, "revoke_cert")
            .serial(&existing.serial)
            .detail(reason.as_str());
        audit.device_id = existing.device_id.clone();
        Ok(self
            .inv
            .revoke(&existing.serial, at, Some(reason.as_str()), &audit)
            .await?)
    }

    /// Signs the CRLs: the intermediate's (revoked leaves) and the root's (revoked
    /// intermediates), with the next CRL number.
    pub async fn crl(&self, next_update: Duration) -> Result<CrlSet> {
        let signer = self.signer()?;
        let revoked = self.inv.revoked().await?;
        let number = self.inv.next_crl_number().await?;
        let to_revoked = |r: &CertRecord| ca::Revoked {
            serial: r.serial.clone(),
            revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at.unwrap_or(0))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            reason: r
                .revocation_reason
                .as_deref()
                .and_then(|s| Reason::parse(s).ok()),
        };
        let leaves: Vec<ca::Revoked> = revoked
            .iter()
            .filter(|r| r.kind != "root" && r.kind != "intermediate")
            .map(to_revoked)
            .collect();
        let inters: Vec<ca::Revoked> = revoked
            .iter()
            .filter(|r| r.kind == "intermediate")
            .map(to_revoked)
            .collect();
        let crls = signer.crls(&leaves, &inters, number.max(1) as u64, next_update)?;
        Ok(CrlSet {
            crls,
            number,
            revoked_leaves: leaves.len(),
            revoked_intermediates: inters.len(),
        })
    }
}
