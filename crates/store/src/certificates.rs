//! Queries on certificates: recording, listing, revoking (at the next revision), the CRL
//! number. A revoked certificate is never forgotten while a CRL needs it (`tidy` removes
//! it once it has expired, plus the retention period).

use crate::model::CertRecord;
use crate::{normalize_serial, Audit, Inventory, Result, StoreError};

impl Inventory {
    // ---- certificates ----

    /// Records an issued certificate.
    pub async fn record(&self, c: &CertRecord) -> Result<()> {
        transaction!(self, |tx, _pg| {
            insert_cert!(tx, c);
        });
        Ok(())
    }

    /// Removes the record of a certificate that was never handed out (writing its files
    /// failed after it was recorded). Revoked certificates are never forgotten.
    pub async fn forget_unissued(&self, serial: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "DELETE FROM certificates WHERE serial = $1 AND revoked_at IS NULL"
        )
        .bind(normalize_serial(serial))
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// Every certificate, oldest first: every page of [`Inventory::certificates_page`] in
    /// one list.
    pub async fn list(&self) -> Result<Vec<CertRecord>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .certificates_page(
                    &crate::CertFilter::default(),
                    cursor.as_deref(),
                    Some(crate::MAX_PAGE),
                )
                .await?;
            all.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// One certificate by serial (case-insensitive hex, leading zeros ignored).
    pub async fn get(&self, serial: &str) -> Result<CertRecord> {
        let s = normalize_serial(serial);
        let sql = crate::hot::cert_by_serial();
        let row: Option<CertRecord> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&s)
            .fetch_optional(p)
            .await?);
        row.ok_or(StoreError::UnknownSerial(s))
    }

    /// Marks a certificate revoked, at the next revision, and writes `audit`.
    pub async fn revoke(
        &self,
        serial: &str,
        at: i64,
        reason: Option<&str>,
        audit: &Audit,
    ) -> Result<CertRecord> {
        let s = normalize_serial(serial);
        // The body runs while this task holds the SQLite connection: what it must look up
        // after a rollback is looked up once it returned (the block below ends there).
        let changed: Result<Option<String>> = async {
            Ok(transaction!(self, |tx, pg| {
                let rev = next_revision!(tx, pg);
                let done: Option<String> = sqlx::query_scalar(crate::hot::CERT_REVOKE)
                    .bind(at)
                    .bind(reason)
                    .bind(rev)
                    .bind(&s)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_none() {
                    // Nothing changed: roll back (the revision is not taken).
                    drop(tx);
                    return Ok(None);
                }
                write_audit!(tx, audit);
                done
            }))
        }
        .await;
        match changed? {
            Some(done) => self.get(&done).await,
            None => {
                let existing = self.get(&s).await?;
                Err(StoreError::AlreadyRevoked {
                    serial: existing.serial,
                    at: existing.revoked_at.unwrap_or(0),
                })
            }
        }
    }

    /// Revoked certificates, oldest revocation first.
    pub async fn revoked(&self) -> Result<Vec<CertRecord>> {
        let sql = crate::hot::revoked_certificates();
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await?))
    }

    /// Certificates of one device, newest first.
    pub async fn certificates_of(&self, device_id: &str) -> Result<Vec<CertRecord>> {
        let sql = crate::hot::certificates_of();
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(device_id)
            .fetch_all(p)
            .await?))
    }

    /// Increments and returns the CRL number.
    pub async fn next_crl_number(&self) -> Result<i64> {
        let n: i64 = transaction!(self, |tx, _pg| {
            sqlx::query_scalar(crate::hot::CRL_NUMBER_NEXT)
                .fetch_one(&mut *tx)
                .await?
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(serial: &str, kind: &str) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            kind: kind.into(),
            subject: format!("CN={serial}"),
            device_id: None,
            not_before: 1,
            not_after: 2,
            sha256: "aa".into(),
            issued_at: 3,
            revoked_at: None,
            revocation_reason: None,
            der: b"DER".to_vec(),
            revision: None,
        }
    }

    #[tokio::test]
    async fn record_list_revoke() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
        let inv = Inventory::open_sqlite(&dir.path().join("inv.db"), true).await?;
        let rec = CertRecord {
            serial: "4A01".into(),
            kind: "client".into(),
            subject: "CN=dev1".into(),
            device_id: Some("dev1".into()),
            not_before: 1,
            not_after: 2,
            sha256: "aa".into(),
            issued_at: 3,
            revoked_at: None,
            revocation_reason: None,
            der: b"DER".to_vec(),
            revision: None,
        };
        inv.record(&rec).await?;
        assert!(matches!(
            inv.record(&rec).await,
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(inv.list().await?, vec![rec.clone()]);
        let r = inv
            .revoke(
                "4a01",
                10,
                Some("keyCompromise"),
                &Audit::new(10, "test", "revoke_cert"),
            )
            .await?;
        assert_eq!(r.revoked_at, Some(10));
        assert!(matches!(
            inv.revoke("4A01", 11, None, &Audit::new(11, "test", "revoke_cert"))
                .await,
            Err(StoreError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            inv.get("FF").await,
            Err(StoreError::UnknownSerial(_))
        ));
        assert_eq!(inv.next_crl_number().await?, 1);
        assert_eq!(inv.next_crl_number().await?, 2);
        // A revoked certificate is never forgotten; an unissued one is.
        inv.forget_unissued("4A01").await?;
        assert_eq!(inv.list().await?.len(), 1);
        inv.record(&row("BEEF", "client")).await?;
        inv.forget_unissued("beef").await?;
        assert!(matches!(
            inv.get("BEEF").await,
            Err(StoreError::UnknownSerial(_))
        ));
        Ok(())
    }
}
