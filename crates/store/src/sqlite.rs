//! SQLite-only integrity checks: an inventory file is looked at before SQLite opens it
//! (SQLite would take an empty or overwritten file for a new database), so that a damaged
//! or foreign inventory is refused and never replaced. The raw look happens only while no
//! connection of this process has the file open ([`open_in_process`]): closing any
//! descriptor of a SQLite file drops every POSIX lock the process holds on it, including
//! those of its SQLite connections, and another process could then remove the
//! write-ahead log under them (a second inventory in one process — the quickstart's CA
//! server and gateway — stopped seeing changes that way).

use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;

use crate::{normalize_serial, Result, StoreError};

/// Held (in an `Arc`) by every [`crate::Inventory`] on a SQLite file while it is open.
pub(crate) struct OpenInProcess;

/// The SQLite files this process has open, by canonical path.
static OPEN: std::sync::Mutex<Vec<(std::path::PathBuf, std::sync::Weak<OpenInProcess>)>> =
    std::sync::Mutex::new(Vec::new());

fn canonical(path: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The mark of an inventory of this process that has `path` open, if one lives.
pub(crate) fn open_in_process(path: &Path) -> Option<std::sync::Arc<OpenInProcess>> {
    let key = canonical(path);
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    open.iter()
        .find(|(p, _)| *p == key)
        .and_then(|(_, w)| w.upgrade())
}

/// Marks `path` as open in this process, for as long as the returned mark lives.
pub(crate) fn mark_open(path: &Path) -> std::sync::Arc<OpenInProcess> {
    let mark = std::sync::Arc::new(OpenInProcess);
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.push((canonical(path), std::sync::Arc::downgrade(&mark)));
    mark
}

/// Files up to this size get SQLite's `PRAGMA quick_check` when opened.
const QUICK_CHECK_MAX_BYTES: u64 = 64 << 20;

/// SQLite's file header: the first 16 of its 100 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks that the file looks like a whole SQLite database, without opening it with
/// SQLite (which would treat an empty file as a new database).
pub(crate) fn check_file(path: &Path, name: &str, size: u64) -> Result<()> {
    use std::io::Read;
    if size == 0 {
        return Err(StoreError::Empty { path: name.into() });
    }
    let mut header = [0u8; 100];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    match read {
        Ok(()) if header.starts_with(SQLITE_MAGIC) => {}
        Ok(()) => return Err(StoreError::NotSqlite { path: name.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(StoreError::NotSqlite { path: name.into() })
        }
        Err(e) => {
            return Err(StoreError::Open {
                path: name.into(),
                cause: sqlx::Error::Io(e),
            })
        }
    }
    // The page size (1 means 65536) and the page count, which SQLite trusts only while
    // the "version-valid-for" number equals the change counter.
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    let valid = header[24..28] == header[92..96];
    let expected = page_size * pages;
    // Pages still in the write-ahead log are not in the main file yet.
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal = std::fs::metadata(&wal_path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if valid && pages > 0 && size < expected && !wal {
        return Err(StoreError::Truncated {
            path: name.into(),
            size,
            expected,
        });
    }
    Ok(())
}

/// Reads the database without writing to it: SQLite's quick integrity check, the tables
/// an inventory has, and (if given) the CA's root serial.
pub(crate) async fn check_contents(
    path: &Path,
    name: &str,
    size: u64,
    root_serial: Option<&str>,
) -> Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut conn = opts.connect().await.map_err(|e| classify(name, e))?;
    let result = async {
        // quick_check reads every page: cheap for an inventory of thousands of
        // certificates, skipped for very large files (the header check above and the
        // queries below still see most damage).
        if size <= QUICK_CHECK_MAX_BYTES {
            let rows: Vec<String> = sqlx::query_scalar("PRAGMA quick_check(5)")
                .fetch_all(&mut conn)
                .await
                .map_err(|e| classify(name, e))?;
            if rows.first().map(String::as_str) != Some("ok") {
                return Err(StoreError::Corrupt {
                    path: name.into(),
                    detail: rows.join("; "),
                });
            }
        }
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('certificates', '_sqlx_migrations')",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| classify(name, e))?;
        if tables.len() != 2 {
            return Err(StoreError::NotAnInventory { path: name.into() });
        }
        if let Some(serial) = root_serial {
            let serial = normalize_serial(serial);
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM certificates WHERE serial = ? AND kind = 'root'")
                    .bind(&serial)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(|e| classify(name, e))?;
            if found.is_none() {
                return Err(StoreError::OtherCa {
                    path: name.into(),
                    root_serial: serial,
                });
            }
        }
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    result
}

/// SQLite's words for a damaged file become [`StoreError::Corrupt`].
fn classify(name: &str, e: sqlx::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("malformed") || text.contains("not a database") || text.contains("corrupt") {
        let detail = match &e {
            sqlx::Error::Database(d) => d.message().to_string(),
            _ => text,
        };
        StoreError::Corrupt {
            path: name.into(),
            detail,
        }
    } else {
        StoreError::Open {
            path: name.into(),
            cause: e,
        }
    }
}
