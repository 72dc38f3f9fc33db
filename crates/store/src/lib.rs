//! `mtlsgate-store`: the certificate inventory — what the CA issued and what it revoked —
//! behind one async API over sqlx. The embedded SQLite file inside the CA directory is
//! the default; the schema lives in `migrations/<backend>` so a PostgreSQL back end can
//! sit behind the same [`Inventory`] type. This crate owns the schema and the queries;
//! it knows nothing about X.509 (callers pass plain records).

#![forbid(unsafe_code)]

use std::path::Path;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// What every refusal of a damaged inventory ends with.
const RESTORE: &str = "restore it from a backup — mtlsgate will not start a new inventory over it, because that would forget every revocation";

/// Errors from the inventory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the inventory database {path}: {cause}")]
    Open { path: String, cause: sqlx::Error },
    #[error("the inventory {path} does not exist; restore it from a backup (only `mtlsgate ca init` creates an inventory, together with its CA)")]
    Missing { path: String },
    #[error("the inventory {path} is empty (0 bytes): it may have been truncated; {RESTORE}")]
    Empty { path: String },
    #[error("the inventory {path} is not an SQLite database (it does not start with SQLite's header: it was overwritten or damaged); {RESTORE}")]
    NotSqlite { path: String },
    #[error("the inventory {path} is truncated ({size} bytes, but its header says {expected}); {RESTORE}")]
    Truncated {
        path: String,
        size: u64,
        expected: u64,
    },
    #[error("the inventory {path} is damaged ({detail}); {RESTORE}")]
    Corrupt { path: String, detail: String },
    #[error("{path} is an SQLite database but not an mtlsgate inventory (it has no certificates table); restore this CA's inventory from a backup")]
    NotAnInventory { path: String },
    #[error("{path} does not belong to this CA (its root certificate serial {root_serial} is not in it); restore this CA's own inventory from a backup")]
    OtherCa { path: String, root_serial: String },
    #[error(
        "the inventory database {path} was written by a newer mtlsgate ({cause}); upgrade mtlsgate"
    )]
    Migrate {
        path: String,
        cause: sqlx::migrate::MigrateError,
    },
    #[error("inventory query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("no certificate with serial {0} in the inventory (see `mtlsgate ca list`)")]
    UnknownSerial(String),
    #[error("certificate {serial} is already revoked (since {at})")]
    AlreadyRevoked { serial: String, at: i64 },
    #[error("a certificate with serial {0} is already recorded")]
    Duplicate(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One inventory row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertRecord {
    pub serial: String,
    pub kind: String,
    pub subject: String,
    pub device_id: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub sha256: String,
    pub issued_at: i64,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    #[serde(skip)]
    pub pem: String,
}

/// The inventory.
#[derive(Clone)]
pub struct Inventory {
    pool: SqlitePool,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn row_to_record(r: &sqlx::sqlite::SqliteRow) -> Result<CertRecord> {
    Ok(CertRecord {
        serial: r.try_get("serial")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        device_id: r.try_get("device_id")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        sha256: r.try_get("sha256")?,
        issued_at: r.try_get("issued_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        pem: r.try_get("pem")?,
    })
}

impl Inventory {
    /// Opens the SQLite inventory at `path` and applies migrations. With `create`, a path
    /// where no file exists gets a new inventory (that is `ca init`'s job); a file that
    /// exists is never replaced: one that is empty, truncated, damaged or not an inventory
    /// is refused before anything is written to it, because a new inventory in its place
    /// would forget every revocation. A database with migrations this version does not
    /// know is refused too.
    pub async fn open_sqlite(path: &Path, create: bool) -> Result<Self> {
        Self::open_checked(path, create, None).await
    }

    /// Opens an existing inventory (see [`Inventory::open_sqlite`]) and checks that it
    /// belongs to the CA whose root certificate has serial `root_serial` (uppercase hex):
    /// the CA records its root in its inventory when it is created.
    pub async fn open_sqlite_for_ca(path: &Path, root_serial: &str) -> Result<Self> {
        Self::open_checked(path, false, Some(root_serial)).await
    }

    async fn open_checked(path: &Path, create: bool, root_serial: Option<&str>) -> Result<Self> {
        let name = path.display().to_string();
        let size = match std::fs::metadata(path) {
            Ok(m) => {
                check_file(path, &name, m.len())?;
                Some(m.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(StoreError::Missing { path: name });
                }
                None
            }
            Err(e) => {
                return Err(StoreError::Open {
                    path: name,
                    cause: sqlx::Error::Io(e),
                })
            }
        };
        let exists = size.is_some();
        if let Some(size) = size {
            check_contents(path, &name, size, root_serial).await?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create && !exists)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        // One connection: commands are sequential, and SQLite removes the write-ahead log
        // only when the last connection closes without another one racing it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|cause| StoreError::Open {
                path: name.clone(),
                cause,
            })?;
        if let Err(cause) = SQLITE_MIGRATIONS.run(&pool).await {
            pool.close().await;
            return Err(StoreError::Migrate { path: name, cause });
        }
        Ok(Inventory { pool })
    }

    /// Closes the inventory. The write-ahead log is checkpointed into the database file
    /// first, so `inventory.db` alone holds everything (and a copy of it is a backup).
    pub async fn close(self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }

    /// Records an issued certificate.
    pub async fn record(&self, c: &CertRecord) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, pem)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.serial)
        .bind(&c.kind)
        .bind(&c.subject)
        .bind(&c.device_id)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(&c.sha256)
        .bind(c.issued_at)
        .bind(&c.pem)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Err(StoreError::Duplicate(c.serial.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the record of a certificate that was never handed out (writing its files
    /// failed after it was recorded). Revoked certificates are never forgotten.
    pub async fn forget_unissued(&self, serial: &str) -> Result<()> {
        sqlx::query("DELETE FROM certificates WHERE serial = ? AND revoked_at IS NULL")
            .bind(normalize_serial(serial))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every certificate, oldest first.
    pub async fn list(&self) -> Result<Vec<CertRecord>> {
        let rows = sqlx::query("SELECT * FROM certificates ORDER BY issued_at, rowid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_record).collect()
    }

    /// One certificate by serial (case-insensitive hex, leading zeros ignored).
    pub async fn get(&self, serial: &str) -> Result<CertRecord> {
        let s = normalize_serial(serial);
        let row = sqlx::query("SELECT * FROM certificates WHERE serial = ?")
            .bind(&s)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => row_to_record(&r),
            None => Err(StoreError::UnknownSerial(s)),
        }
    }

    /// Marks a certificate revoked.
    pub async fn revoke(&self, serial: &str, at: i64, reason: Option<&str>) -> Result<CertRecord> {
        let existing = self.get(serial).await?;
        if let Some(t) = existing.revoked_at {
            return Err(StoreError::AlreadyRevoked {
                serial: existing.serial,
                at: t,
            });
        }
        sqlx::query(
            "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(&existing.serial)
        .execute(&self.pool)
        .await?;
        self.get(&existing.serial).await
    }

    /// Revoked certificates of one kind (or all).
    pub async fn revoked(&self) -> Result<Vec<CertRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_record).collect()
    }

    /// Increments and returns the CRL number.
    pub async fn next_crl_number(&self) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE crl_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}

/// Files up to this size get SQLite's `PRAGMA quick_check` when opened.
const QUICK_CHECK_MAX_BYTES: u64 = 64 << 20;

/// SQLite's file header: the first 16 of its 100 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks that the file looks like a whole SQLite database, without opening it with
/// SQLite (which would treat an empty file as a new database).
fn check_file(path: &Path, name: &str, size: u64) -> Result<()> {
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
async fn check_contents(
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

/// Uppercase hex without leading zero bytes (the form the inventory stores).
pub fn normalize_serial(s: &str) -> String {
    let clean: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_uppercase();
    let mut t = clean.as_str();
    while t.len() > 2 && t.starts_with("00") {
        t = &t[2..];
    }
    if t.len() % 2 == 1 {
        format!("0{t}")
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_normalization() {
        assert_eq!(normalize_serial("0x00ab:cd"), "ABCD");
        assert_eq!(normalize_serial("1"), "01");
    }

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
            pem: "PEM".into(),
        }
    }

    fn io(e: std::io::Error) -> StoreError {
        StoreError::Query(sqlx::Error::Io(e))
    }

    /// A directory's file names (to check that a refusal leaves nothing behind).
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Opening `path` fails with a message starting `start`, and changes no file.
    async fn refused(path: &Path, root: Option<&str>, start: &str) -> StoreError {
        let dir = path.parent().expect("dir");
        let before = names(dir);
        let content = std::fs::read(path).ok();
        let r = match root {
            Some(serial) => Inventory::open_sqlite_for_ca(path, serial).await,
            None => Inventory::open_sqlite(path, false).await,
        };
        let Err(e) = r else {
            panic!("{} was opened", path.display())
        };
        assert!(
            e.to_string().starts_with(start),
            "{e}\n  should start with\n{start}"
        );
        assert_eq!(names(dir), before, "files appeared or vanished");
        assert_eq!(std::fs::read(path).ok(), content, "the file was changed");
        if root.is_none() {
            // create = true must not start a new inventory over it either.
            assert!(Inventory::open_sqlite(path, true).await.is_err());
            assert_eq!(names(dir), before, "files appeared or vanished");
            assert_eq!(std::fs::read(path).ok(), content, "the file was changed");
        }
        e
    }

    #[tokio::test]
    async fn damaged_or_foreign_inventories_are_refused_before_anything_is_written() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let good = dir.path().join("inventory.db");
        let inv = Inventory::open_sqlite(&good, true).await?;
        inv.record(&row("4A01", "root")).await?;
        for n in 0..40 {
            inv.record(&row(&format!("77{n:02}"), "client")).await?;
        }
        inv.close().await;
        let bytes = std::fs::read(&good).map_err(io)?;
        assert!(bytes.len() >= 3 * 4096, "{} bytes", bytes.len());
        // Closing leaves the whole inventory in inventory.db.
        assert_eq!(names(dir.path()), vec!["inventory.db"]);
        // It opens, and it belongs to the CA with root serial 4A01 (in any spelling).
        Inventory::open_sqlite_for_ca(&good, "4a01")
            .await?
            .close()
            .await;
        let wrong_root = refused(&good, Some("99AA"), "").await;
        assert_eq!(
            wrong_root.to_string(),
            format!("{} does not belong to this CA (its root certificate serial 99AA is not in it); restore this CA's own inventory from a backup", good.display())
        );

        let sub = |name: &str, data: &[u8]| -> std::io::Result<std::path::PathBuf> {
            let d = dir.path().join(name);
            std::fs::create_dir(&d)?;
            let p = d.join("inventory.db");
            std::fs::write(&p, data)?;
            Ok(p)
        };
        let empty = sub("empty", b"").map_err(io)?;
        let e = refused(&empty, None, "").await;
        assert_eq!(
            e.to_string(),
            format!("the inventory {} is empty (0 bytes): it may have been truncated; restore it from a backup — mtlsgate will not start a new inventory over it, because that would forget every revocation", empty.display())
        );
        let half = sub("half", &bytes[..bytes.len() / 2]).map_err(io)?;
        refused(
            &half,
            Some("4A01"),
            &format!("the inventory {} is truncated (", half.display()),
        )
        .await;
        let garbage = sub("garbage", &[0x5a; 5000]).map_err(io)?;
        refused(
            &garbage,
            None,
            &format!(
                "the inventory {} is not an SQLite database",
                garbage.display()
            ),
        )
        .await;
        let tiny = sub("tiny", b"SQLite").map_err(io)?;
        refused(&tiny, None, "the inventory").await;
        // Whole length, valid header, a page in the middle overwritten.
        let mut mangled = bytes.clone();
        for b in &mut mangled[4096 + 8..2 * 4096] {
            *b = 0xa5;
        }
        let damaged = sub("damaged", &mangled).map_err(io)?;
        refused(
            &damaged,
            None,
            &format!("the inventory {} is damaged (", damaged.display()),
        )
        .await;
        // Another SQLite database.
        let other_dir = dir.path().join("other");
        std::fs::create_dir(&other_dir).map_err(io)?;
        let other = other_dir.join("inventory.db");
        {
            use sqlx::{ConnectOptions, Connection};
            let mut c = SqliteConnectOptions::new()
                .filename(&other)
                .create_if_missing(true)
                .connect()
                .await?;
            sqlx::query("CREATE TABLE notes (t TEXT)")
                .execute(&mut c)
                .await?;
            c.close().await?;
        }
        refused(
            &other,
            None,
            &format!(
                "{} is an SQLite database but not an mtlsgate inventory",
                other.display()
            ),
        )
        .await;
        // No file at all: only ca init (create = true) makes one.
        let missing = dir.path().join("missing.db");
        let e = Inventory::open_sqlite(&missing, false)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e,
            Some(format!("the inventory {} does not exist; restore it from a backup (only `mtlsgate ca init` creates an inventory, together with its CA)", missing.display()))
        );
        assert!(!missing.exists());
        Ok(())
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
            pem: "PEM".into(),
        };
        inv.record(&rec).await?;
        assert!(matches!(
            inv.record(&rec).await,
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(inv.list().await?, vec![rec.clone()]);
        let r = inv.revoke("4a01", 10, Some("keyCompromise")).await?;
        assert_eq!(r.revoked_at, Some(10));
        assert!(matches!(
            inv.revoke("4A01", 11, None).await,
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
