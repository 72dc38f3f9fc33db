//! Paged listings of devices and certificates: keyset paging on a unique key that never
//! changes once a row is written — `(first_seen, id)` for devices, `(issued_at, insertion
//! order)` for certificates (SQLite's rowid, PostgreSQL's `seq`; the inventory is never
//! `VACUUM`ed, which could renumber SQLite's rowids) — behind an opaque cursor, with the
//! filters applied by the database.
//!
//! A listing that follows `next` from the first page to the last returns every row that
//! existed for the whole listing exactly once, however many rows are added meanwhile: a
//! page starts after the last key of the previous one, keys are unique and never change,
//! and no row is ever moved. A row added during the listing is returned at most once
//! (when its key sorts after the page being read). Both orders are served by an index
//! (`migrations/*/0010_indexes.sql`), so a page costs the same at the end of a large
//! inventory as at its start.

use serde::{Deserialize, Serialize};

use crate::model::{CertRecord, DeviceRow};
use crate::sql::{CERT_COLUMNS, DEVICE_COLUMNS};
use crate::{Backend, Device, DeviceFilter, Inventory, Result, StoreError};

/// The most rows one page holds.
pub const MAX_PAGE: u32 = 5_000;
/// Rows per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 500;
/// The longest cursor accepted (a device ID is at most 253 bytes).
const MAX_CURSOR: usize = 1024;

/// One page of a listing; `next` is the cursor of the next page, `None` after the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Which certificates to list.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    pub status: Option<CertStatus>,
    /// `root`, `intermediate`, `server`, `client` or `admin`.
    pub kind: Option<String>,
    /// Serials starting with these hex digits (as the inventory writes them: upper case).
    pub serial_prefix: Option<String>,
    /// Subjects (RFC 2253: `CN=…,O=…`) containing this text.
    pub subject_contains: Option<String>,
    /// Only certificates that expire before this time (unix seconds).
    pub expiring_before: Option<i64>,
    /// What "now" is for `status` (unix seconds).
    pub now: i64,
}

/// A certificate's state, as `ca list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked, not expired.
    Valid,
    Revoked,
    /// Not revoked, past its not-after.
    Expired,
}

impl CertStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "valid" => Some(CertStatus::Valid),
            "revoked" => Some(CertStatus::Revoked),
            "expired" => Some(CertStatus::Expired),
            _ => None,
        }
    }
}

/// A value bound to a statement's `$n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(i64),
    Text(String),
}

/// A statement and its values.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Statement {
    /// Adds `a` and returns its placeholder.
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }
}

/// Binds `args` to a query, in order.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                $crate::paging::Arg::Int(i) => q.bind(*i),
                $crate::paging::Arg::Text(t) => q.bind(t.as_str()),
            };
        }
        q
    }};
}

/// The SQL test for "`column` contains `needle`" (literally: no wildcards).
fn contains(backend: Backend, column: &str, needle: &str) -> String {
    match backend {
        Backend::Sqlite => format!("instr({column}, {needle}) > 0"),
        Backend::Postgres => format!("strpos({column}, {needle}) > 0"),
    }
}

/// The cursor of the page after a row whose key is (`at`, `key`): opaque to callers (hex
/// of `KIND:AT:KEY`).
fn encode(kind: char, at: i64, key: &str) -> String {
    format!("{kind}:{at}:{key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`StoreError::BadCursor`] for `cursor`, which came from a client: shown without
/// control characters, and not at length.
fn bad_cursor(cursor: &str) -> StoreError {
    StoreError::BadCursor(
        cursor
            .chars()
            .take(80)
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect(),
    )
}

/// The key a cursor of `kind` names, or [`StoreError::BadCursor`].
fn decode(kind: char, cursor: &str) -> Result<(i64, String)> {
    let bad = || bad_cursor(cursor);
    let c = cursor.trim();
    if c.len() > MAX_CURSOR || !c.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| c.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some(k), Some(at), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if k != kind.to_string() || key.is_empty() {
        return Err(bad());
    }
    let at: i64 = at.parse().map_err(|_| bad())?;
    Ok((at, key.to_string()))
}

/// Clamps a requested page size to 1..=[`MAX_PAGE`] ([`DEFAULT_PAGE`] for `None`).
pub fn page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// The statement of one page of devices (one more row than `limit`, to know whether
/// another page follows).
pub fn devices_page_sql(
    backend: Backend,
    f: &DeviceFilter,
    after: Option<(i64, String)>,
    limit: u32,
) -> Statement {
    let mut s = Statement {
        sql: String::new(),
        args: Vec::new(),
    };
    let mut wh: Vec<String> = Vec::new();
    if let Some(st) = f.status {
        let p = s.arg(Arg::Text(st.as_str().into()));
        wh.push(format!("status = {p}"));
    }
    if let Some((at, id)) = after {
        let a = s.arg(Arg::Int(at));
        let b = s.arg(Arg::Text(id));
        wh.push(format!("(first_seen, id) > ({a}, {b})"));
    }
    if let Some(t) = f.expiring_before {
        let p = s.arg(Arg::Int(t));
        wh.push(format!("cert_not_after < {p}"));
    }
    if let Some(tag) = &f.tag {
        // Tags are stored as a JSON list of strings, and a tag has no quote: `"tag"`
        // occurs in the text only as that whole tag.
        let p = s.arg(Arg::Text(format!("\"{tag}\"")));
        wh.push(contains(backend, "tags", &p));
    }
    if let Some(prefix) = &f.id_prefix {
        let p = s.arg(Arg::Text(prefix.clone()));
        wh.push(format!("substr(id, 1, length({p})) = {p}"));
    }
    if let Some(text) = &f.id_contains {
        let p = s.arg(Arg::Text(text.clone()));
        wh.push(contains(backend, "id", &p));
    }
    let n = s.arg(Arg::Int(i64::from(limit) + 1));
    s.sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM devices{} ORDER BY first_seen, id LIMIT {n}",
        where_clause(&wh)
    );
    s
}

/// The statement of one page of certificates (one more row than `limit`).
pub fn certificates_page_sql(
    backend: Backend,
    f: &CertFilter,
    after: Option<(i64, i64)>,
    limit: u32,
) -> Statement {
    let mut s = Statement {
        sql: String::new(),
        args: Vec::new(),
    };
    let order = insertion_order(backend);
    let mut wh: Vec<String> = Vec::new();
    if let Some((at, seq)) = after {
        let a = s.arg(Arg::Int(at));
        let b = s.arg(Arg::Int(seq));
        wh.push(format!("(issued_at, {order}) > ({a}, {b})"));
    }
    match f.status {
        None => {}
        Some(CertStatus::Revoked) => wh.push("revoked_at IS NOT NULL".into()),
        Some(CertStatus::Valid) => {
            let p = s.arg(Arg::Int(f.now));
            wh.push(format!("revoked_at IS NULL AND not_after >= {p}"));
        }
        Some(CertStatus::Expired) => {
            let p = s.arg(Arg::Int(f.now));
            wh.push(format!("revoked_at IS NULL AND not_after < {p}"));
        }
    }
    if let Some(k) = &f.kind {
        let p = s.arg(Arg::Text(k.clone()));
        wh.push(format!("kind = {p}"));
    }
    if let Some(prefix) = &f.serial_prefix {
        let p = s.arg(Arg::Text(prefix.clone()));
        // A range of the serial index (serials are upper-case hex, and `G` sorts after
        // every hex digit), not a scan.
        wh.push(format!("serial >= {p} AND serial < ({p} || 'G')"));
    }
    if let Some(text) = &f.subject_contains {
        let p = s.arg(Arg::Text(text.clone()));
        wh.push(contains(backend, "subject", &p));
    }
    if let Some(t) = f.expiring_before {
        let p = s.arg(Arg::Int(t));
        wh.push(format!("not_after < {p}"));
    }
    let n = s.arg(Arg::Int(i64::from(limit) + 1));
    s.sql = format!(
        "SELECT {CERT_COLUMNS}, {order} AS page_key FROM certificates{} ORDER BY issued_at, {order} LIMIT {n}",
        where_clause(&wh)
    );
    s
}

/// The column that numbers certificates in the order they were recorded.
fn insertion_order(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "seq",
    }
}

/// A certificate with its place in the listing.
#[derive(sqlx::FromRow)]
struct KeyedCert {
    #[sqlx(flatten)]
    rec: CertRecord,
    page_key: i64,
}

fn where_clause(wh: &[String]) -> String {
    if wh.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wh.join(" AND "))
    }
}

impl Inventory {
    /// One page of the devices matching `f`, oldest first, after `cursor` (the `next` of
    /// the previous page; `None` for the first). At most `limit` rows
    /// ([`page_size`] applies); an unreadable cursor is [`StoreError::BadCursor`].
    pub async fn devices_page(
        &self,
        f: &DeviceFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Device>> {
        let after = cursor.map(|c| decode('d', c)).transpose()?;
        let limit = page_size(limit);
        let st = devices_page_sql(self.backend(), f, after, limit);
        let rows: Vec<DeviceRow> =
            on_pool!(self, |p| bind_args!(sqlx::query_as(&st.sql), &st.args)
                .fetch_all(p)
                .await?);
        let mut items = rows
            .into_iter()
            .map(DeviceRow::into_device)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| encode('d', d.first_seen, &d.id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// One page of the certificates matching `f`, oldest first, after `cursor`, as
    /// [`Inventory::devices_page`].
    pub async fn certificates_page(
        &self,
        f: &CertFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<CertRecord>> {
        let after = match cursor {
            Some(c) => {
                let (at, key) = decode('c', c)?;
                let seq = key.parse::<i64>().map_err(|_| bad_cursor(c))?;
                Some((at, seq))
            }
            None => None,
        };
        let limit = page_size(limit);
        let st = certificates_page_sql(self.backend(), f, after, limit);
        let mut rows: Vec<KeyedCert> =
            on_pool!(self, |p| bind_args!(sqlx::query_as(&st.sql), &st.args)
                .fetch_all(p)
                .await?);
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|c| encode('c', c.rec.issued_at, &c.page_key.to_string()))
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(|k| k.rec).collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_others_are_refused() {
        let c = encode('d', 1_700_000_000, "dev1.d.example:x");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            decode('d', &c).expect("ours"),
            (1_700_000_000, "dev1.d.example:x".to_string())
        );
        for bad in [
            "",
            "zz",
            "abc",
            &encode('c', 1, "01"),
            "64",
            &"6".repeat(2000),
        ] {
            let e = decode('d', bad).expect_err(bad);
            assert!(matches!(e, StoreError::BadCursor(_)), "{bad}: {e}");
        }
        assert_eq!(page_size(None), DEFAULT_PAGE);
        assert_eq!(page_size(Some(0)), 1);
        assert_eq!(page_size(Some(1_000_000)), MAX_PAGE);
    }
}
