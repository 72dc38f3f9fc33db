//! Queries on devices: reading and listing them, adding a registration (capped while it
//! waits for approval), expiring old ones, and the compare-and-set of a device's status
//! and tags, each at the next revision.

use crate::model::{tags_to_text, DeviceRow};
use crate::{
    Audit, CertState, Device, DeviceFilter, DeviceStatus, Inventory, NewDevice, Result, StoreError,
};

/// A device row with the state of a certificate read beside it
/// ([`Inventory::device_with_certificate`]).
#[derive(sqlx::FromRow)]
struct DeviceWithCertRow {
    #[sqlx(flatten)]
    device: DeviceRow,
    presented_revoked_at: Option<i64>,
    presented_sha256: Option<String>,
}

impl Inventory {
    // ---- devices ----

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Device>> {
        Ok(on_pool!(self, |p| fetch_device!(p, id)))
    }

    /// Device `id` and, read with it, the state of the certificate with `serial` (`None`
    /// when the inventory has no such certificate): what a renewal checks before it
    /// signs, in one round trip. `None` when there is no such device.
    pub async fn device_with_certificate(
        &self,
        id: &str,
        serial: &str,
    ) -> Result<Option<(Device, Option<CertState>)>> {
        let serial = crate::normalize_serial(serial);
        let sql = crate::hot::device_with_certificate();
        let row: Option<DeviceWithCertRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(id)
            .bind(&serial)
            .fetch_optional(p)
            .await?);
        row.map(|r| {
            let cert = r.presented_sha256.map(|sha256| CertState {
                revoked_at: r.presented_revoked_at,
                sha256,
            });
            Ok((r.device.into_device()?, cert))
        })
        .transpose()
    }

    /// Devices, oldest first: every page of [`Inventory::devices_page`] in one list.
    pub async fn devices(&self, f: &DeviceFilter) -> Result<Vec<Device>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .devices_page(f, cursor.as_deref(), Some(crate::MAX_PAGE))
                .await?;
            all.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Adds a device (a pending registration) at the next revision, and writes `audit`.
    pub async fn insert_device(&self, d: &NewDevice, audit: &Audit) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            insert_device!(tx, d, rev, None);
            write_audit!(tx, audit);
        });
        self.device(&d.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(d.id.clone()))
    }

    /// Adds a pending registration, as [`Inventory::insert_device`], unless `limit`
    /// devices already wait for approval ([`StoreError::QueueFull`], nothing added). They
    /// are counted after the revision is taken: its row stays locked until the
    /// transaction ends, so concurrent registrations count one after the other.
    pub async fn insert_pending(&self, d: &NewDevice, audit: &Audit, limit: u64) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let n: i64 = sqlx::query_scalar(crate::hot::PENDING_COUNT)
                .fetch_one(&mut *tx)
                .await?;
            let waiting = u64::try_from(n).unwrap_or(0);
            if waiting >= limit {
                return Err(StoreError::QueueFull { waiting });
            }
            insert_device!(tx, d, rev, None);
            write_audit!(tx, audit);
        });
        self.device(&d.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(d.id.clone()))
    }

    /// Removes the registrations still pending (never approved) that were made before
    /// `before` (unix seconds); how many.
    pub async fn expire_pending(&self, before: i64) -> Result<u64> {
        let done = on_pool!(self, |p| {
            sqlx::query(crate::hot::PENDING_EXPIRE)
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done)
    }

    /// Compare-and-set of a device's status: it becomes `to` only while it is one of
    /// `from` ([`StoreError::StatusChanged`] says what it is now otherwise). The change
    /// takes the next revision; with `revoke_certificates` (a CRL reason), every
    /// certificate of the device that is not revoked or expired is revoked with it.
    pub async fn update_status(
        &self,
        id: &str,
        from: &[DeviceStatus],
        to: DeviceStatus,
        revoke_certificates: Option<&str>,
        audit: &Audit,
    ) -> Result<Device> {
        let sql = crate::hot::device_status(from.len());
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let mut q = sqlx::query_scalar(&sql)
                .bind(to.as_str())
                .bind(rev)
                .bind(id);
            for f in from {
                q = q.bind(f.as_str());
            }
            let done: Option<String> = q.fetch_optional(&mut *tx).await?;
            if done.is_none() {
                let now = fetch_device!(&mut *tx, id);
                return Err(match now {
                    None => StoreError::UnknownDevice(id.into()),
                    Some(d) => StoreError::StatusChanged {
                        id: id.into(),
                        now: d.status,
                    },
                });
            }
            if let Some(reason) = revoke_certificates {
                sqlx::query(crate::hot::CERTS_REVOKE_OF_DEVICE)
                    .bind(audit.at)
                    .bind(reason)
                    .bind(rev)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            write_audit!(tx, audit);
        });
        self.device(id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))
    }

    /// Replaces a device's tags (stored sorted, without duplicates), at the next revision.
    pub async fn update_tags(&self, id: &str, tags: &[String], audit: &Audit) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let done: Option<String> = sqlx::query_scalar(crate::hot::DEVICE_TAGS)
                .bind(tags_to_text(tags))
                .bind(rev)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_none() {
                return Err(StoreError::UnknownDevice(id.into()));
            }
            write_audit!(tx, audit);
        });
        self.device(id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))
    }
}
