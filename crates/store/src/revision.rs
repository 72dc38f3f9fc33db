//! What gateways follow: the revision counter, the changes since a revision (read from one
//! snapshot), and on PostgreSQL the LISTEN side of the notification every revision sends.

use std::pin::Pin;

use futures_core::Stream;
use sqlx::postgres::PgListener;
use sqlx::Row;

use crate::model::DeviceRow;
use crate::pool::Pool;
use crate::{
    Changes, ChangesHead, DeviceStatus, GatewayRow, Inventory, Result, RevokedSerial, StoreError,
    NOTIFY_CHANNEL,
};

/// The next item of a row stream (the stream trait's `next`, without another crate).
async fn next_row<S, T>(rows: &mut S) -> Option<T>
where
    S: Stream<Item = T> + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *rows).poll_next(cx)).await
}

/// Streams the gateway's rows of `$tx` to `$each` (see [`Inventory::read_changes`]).
macro_rules! gateway_rows {
    ($tx:ident, $revision:expr, $valid_at:expr, $each:ident) => {{
        // A full read needs no order (the reader resolves the same ID twice by revision);
        // changes are applied in the order they were made.
        let dev_sql = if $revision == 0 {
            "SELECT id, status, tags, revision FROM devices"
        } else {
            "SELECT id, status, tags, revision FROM devices WHERE revision > $1 ORDER BY revision, id"
        };
        let mut q = sqlx::query(dev_sql);
        if $revision != 0 {
            q = q.bind($revision);
        }
        let mut rows = q.fetch(&mut *$tx);
        while let Some(row) = next_row(&mut rows).await {
            let row = row?;
            let id: &str = row.try_get(0)?;
            let status: &str = row.try_get(1)?;
            let tags: &str = row.try_get(2)?;
            let revision: i64 = row.try_get(3)?;
            let status = DeviceStatus::parse(status).ok_or_else(|| StoreError::BadRow {
                what: format!("device {id}"),
                detail: format!("its status `{status}` is not one this version knows"),
            })?;
            $each(GatewayRow::Device {
                id,
                status,
                tags,
                revision,
            })?;
        }
        drop(rows);
        // Both read through a partial index of revoked certificates (`certificates_revoked`, `certificates_revoked_revision`) (a full read also finds the
        // certificates revoked before revisions were recorded, whose revision is NULL).
        let mut q = sqlx::query(if $revision == 0 {
            "SELECT serial, not_after FROM certificates
             WHERE revoked_at IS NOT NULL AND not_after >= $1"
        } else {
            "SELECT serial, not_after FROM certificates
             WHERE revoked_at IS NOT NULL AND not_after >= $1 AND revision > $2"
        })
        .bind($valid_at);
        if $revision != 0 {
            q = q.bind($revision);
        }
        let mut rows = q.fetch(&mut *$tx);
        while let Some(row) = next_row(&mut rows).await {
            let row = row?;
            $each(GatewayRow::Revoked {
                serial: row.try_get(0)?,
                not_after: row.try_get(1)?,
            })?;
        }
    }};
}

impl Inventory {
    // ---- gateways ----

    /// The current revision.
    pub async fn revision(&self) -> Result<i64> {
        Ok(on_pool!(self, |p| sqlx::query_scalar(crate::hot::REVISION)
            .fetch_one(p)
            .await?))
    }

    /// Devices and revoked certificates changed after `revision` (0: everything), and the
    /// revision they bring the reader to, read from one snapshot.
    pub async fn changes_since(&self, revision: i64) -> Result<Changes> {
        let dev_sql = crate::hot::changed_devices();
        transaction!(
            self,
            "BEGIN",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            |tx, _pg| {
                let current: i64 = sqlx::query_scalar(crate::hot::REVISION)
                    .fetch_one(&mut *tx)
                    .await?;
                let revision_ms: Option<i64> = sqlx::query_scalar(crate::hot::REVISION_MS)
                    .fetch_optional(&mut *tx)
                    .await?;
                let rows: Vec<DeviceRow> = sqlx::query_as(&dev_sql)
                    .bind(revision)
                    .fetch_all(&mut *tx)
                    .await?;
                let revoked: Vec<RevokedSerial> = sqlx::query_as(crate::hot::CHANGED_REVOCATIONS)
                    .bind(revision)
                    .fetch_all(&mut *tx)
                    .await?;
                let devices = rows
                    .into_iter()
                    .map(DeviceRow::into_device)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Changes {
                    revision: current,
                    revision_ms,
                    devices,
                    revoked,
                })
            }
        )
    }

    /// What a gateway reads, row by row from one snapshot, without holding the answer in
    /// memory: each device changed after `revision` (0: every device; its ID, status and
    /// tags as stored), then each certificate revoked after it that is still valid at
    /// `valid_at` (Unix seconds; an expired certificate can no longer be presented), given
    /// to `each` in turn. Returns the revision the rows bring the reader to. The same
    /// changes as [`Inventory::changes_since`], less the expired certificates and the
    /// columns a gateway does not use. An error `each` returns ends the read.
    pub async fn read_changes<F>(
        &self,
        revision: i64,
        valid_at: i64,
        mut each: F,
    ) -> Result<ChangesHead>
    where
        F: FnMut(GatewayRow<'_>) -> Result<()>,
    {
        transaction!(
            self,
            "BEGIN",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            |tx, _pg| {
                let current: i64 =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision'")
                        .fetch_one(&mut *tx)
                        .await?;
                let revision_ms: Option<i64> =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision_ms'")
                        .fetch_optional(&mut *tx)
                        .await?;
                gateway_rows!(tx, revision, valid_at, each);
                Ok(ChangesHead {
                    revision: current,
                    revision_ms,
                })
            }
        )
    }

    /// On PostgreSQL, a listener subscribed to [`NOTIFY_CHANNEL`] (each notification's
    /// payload is the new revision); `None` on SQLite, whose readers poll
    /// [`Inventory::changes_since`].
    pub async fn listen(&self) -> Result<Option<PgListener>> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(None),
            Pool::Postgres(p) => {
                let mut l = PgListener::connect_with(p).await?;
                l.listen(NOTIFY_CHANNEL).await?;
                Ok(Some(l))
            }
        }
    }
}
