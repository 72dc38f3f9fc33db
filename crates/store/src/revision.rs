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

/// Devices per chunk of a full read on SQLite (by rowid); tests take small chunks, so that
/// a read crosses many of them.
const CHUNK_ROWS: i64 = if cfg!(test) { 7 } else { 16_384 };
/// Table pages per chunk of a full read on PostgreSQL (by `ctid` range; 256 pages of
/// 8 KiB hold some 10,000 devices).
const CHUNK_PAGES: i64 = if cfg!(test) { 1 } else { 256 };

/// One device of a full read, packed by the database into one text with the others of its
/// chunk (a row per device costs the driver more than the gateway spends on it): the byte
/// lengths and texts of the ID, status and tags, then the revision, `;` last.
const PACKED_SQLITE: &str = "printf('%d:%s%d:%s%d:%s%d;', length(CAST(id AS BLOB)), id, \
    length(CAST(status AS BLOB)), status, length(CAST(tags AS BLOB)), tags, revision)";
const PACKED_POSTGRES: &str = "concat(octet_length(id), ':', id, octet_length(status), ':', \
    status, octet_length(tags), ':', tags, revision, ';')";

/// Reads a decimal number ending at `end` from `text` at `at`; moves `at` past `end`.
fn packed_number(text: &str, at: &mut usize, end: u8) -> Option<i64> {
    let rest = text.as_bytes().get(*at..)?;
    let n = rest.iter().position(|b| *b == end)?;
    let v = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
    *at += n + 1;
    Some(v)
}

/// Reads a `LEN:TEXT` field from `text` at `at`.
fn packed_text<'a>(text: &'a str, at: &mut usize) -> Option<&'a str> {
    let len = usize::try_from(packed_number(text, at, b':')?).ok()?;
    let v = text.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(v)
}

/// Gives each device of a packed chunk (see [`PACKED_SQLITE`]) to `each`; the chunk must
/// hold exactly `count` devices.
fn each_packed<F>(text: &str, count: i64, each: &mut F) -> Result<()>
where
    F: FnMut(GatewayRow<'_>) -> Result<()>,
{
    let bad = |detail: String| StoreError::BadRow {
        what: "the devices table".into(),
        detail,
    };
    let mut at = 0;
    let mut seen = 0i64;
    while at < text.len() {
        let field = |at: &mut usize| packed_text(text, at);
        let (Some(id), Some(status), Some(tags), Some(revision)) = (
            field(&mut at),
            field(&mut at),
            field(&mut at),
            packed_number(text, &mut at, b';'),
        ) else {
            return Err(bad(format!(
                "its rows could not be read back as they were packed (after {seen} devices of a chunk)"
            )));
        };
        let status = DeviceStatus::parse(status).ok_or_else(|| StoreError::BadRow {
            what: format!("device {id}"),
            detail: format!("its status `{status}` is not one this version knows"),
        })?;
        each(GatewayRow::Device {
            id,
            status,
            tags,
            revision,
        })?;
        seen += 1;
    }
    if seen != count {
        return Err(bad(format!(
            "a chunk of {count} devices was read back as {seen}"
        )));
    }
    Ok(())
}

/// Streams the gateway's rows of `$tx` to `$each` (see [`Inventory::read_changes`]).
macro_rules! gateway_rows {
    ($tx:ident, $pg:ident, $revision:expr, $valid_at:expr, $each:ident) => {{
        if $revision == 0 {
            // A full read needs no order (the reader resolves the same ID twice by
            // revision): chunks of the table, each packed into one text by the database.
            if $pg {
                let pages: i64 = sqlx::query_scalar(
                    "SELECT pg_relation_size('devices') / current_setting('block_size')::bigint",
                )
                .fetch_one(&mut *$tx)
                .await?;
                let mut from = 0i64;
                loop {
                    // The last chunk is open-ended: a row is on a page that existed
                    // when the snapshot was taken.
                    let last = from + CHUNK_PAGES >= pages;
                    let sql = if last {
                        format!("SELECT count(*), string_agg({PACKED_POSTGRES}, '') FROM devices \
                                 WHERE ctid >= format('(%s,0)', $1::bigint)::tid")
                    } else {
                        format!("SELECT count(*), string_agg({PACKED_POSTGRES}, '') FROM devices \
                                 WHERE ctid >= format('(%s,0)', $1::bigint)::tid \
                                 AND ctid < format('(%s,0)', $2::bigint)::tid")
                    };
                    let (count, text): (i64, Option<String>) = sqlx::query_as(&sql)
                        .bind(from)
                        .bind(from + CHUNK_PAGES)
                        .fetch_one(&mut *$tx)
                        .await?;
                    each_packed(text.as_deref().unwrap_or(""), count, &mut $each)?;
                    if last {
                        break;
                    }
                    from += CHUNK_PAGES;
                }
            } else {
                let sql = format!(
                    "SELECT count(*), max(r), group_concat(p, '') FROM \
                     (SELECT rowid AS r, {PACKED_SQLITE} AS p FROM devices \
                      WHERE rowid > $1 ORDER BY rowid LIMIT $2)"
                );
                let mut after = i64::MIN;
                loop {
                    let (count, max, text): (i64, Option<i64>, Option<String>) =
                        sqlx::query_as(&sql)
                            .bind(after)
                            .bind(CHUNK_ROWS)
                            .fetch_one(&mut *$tx)
                            .await?;
                    each_packed(text.as_deref().unwrap_or(""), count, &mut $each)?;
                    match max {
                        Some(m) if count > 0 => after = m,
                        _ => break,
                    }
                }
            }
        } else {
            // Changes are applied in the order they were made.
            let mut rows = sqlx::query(
                "SELECT id, status, tags, revision FROM devices WHERE revision > $1 ORDER BY revision, id",
            )
            .bind($revision)
            .fetch(&mut *$tx);
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
        }
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
            |tx, pg| {
                let current: i64 =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision'")
                        .fetch_one(&mut *tx)
                        .await?;
                let revision_ms: Option<i64> =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision_ms'")
                        .fetch_optional(&mut *tx)
                        .await?;
                gateway_rows!(tx, pg, revision, valid_at, each);
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
