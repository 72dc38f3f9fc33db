//! What gateways follow: the revision counter, the changes since a revision (read from one
//! snapshot), and on PostgreSQL the LISTEN side of the notification every revision sends.

use sqlx::postgres::PgListener;

use crate::model::DeviceRow;
use crate::pool::Pool;
use crate::{Changes, Inventory, Result, RevokedSerial, NOTIFY_CHANNEL};

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
