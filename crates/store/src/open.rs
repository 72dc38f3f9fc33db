//! Creating and opening an inventory: an SQLite file (checked before anything is written
//! to it: empty, truncated, damaged, foreign files are refused) or a PostgreSQL database
//! (refused when it holds no inventory, or another CA's), then migrated; and closing it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::pool::{Pool, PostgresOptions, SqliteConn};
use crate::{normalize_serial, sqlite, Backend, Inventory, Location, Result, StoreError};

impl Inventory {
    /// Creates a new inventory (`ca init` only). An SQLite file that exists already, or a
    /// PostgreSQL database that already holds an inventory, is refused untouched.
    pub async fn create(loc: &Location) -> Result<Self> {
        match loc {
            Location::Sqlite(path) => {
                if path.exists() {
                    return Err(StoreError::InventoryExists {
                        path: path.display().to_string(),
                    });
                }
                Self::open_checked(path, true, None).await
            }
            Location::Postgres(url) => {
                let inv = Self::connect_postgres(loc, url, PostgresOptions::default()).await?;
                if inv.postgres_tables().await? > 0 {
                    inv.close().await;
                    return Err(StoreError::InventoryExists {
                        path: loc.to_string(),
                    });
                }
                inv.migrate().await?;
                Ok(inv)
            }
        }
    }

    /// Opens an existing inventory and checks that it belongs to the CA whose root
    /// certificate has serial `root_serial` (the CA records its root when it is created).
    /// An empty, damaged or foreign inventory is refused before anything is written to
    /// it; an older one is upgraded.
    pub async fn open(loc: &Location, root_serial: &str) -> Result<Self> {
        Self::open_with(loc, root_serial, PostgresOptions::default()).await
    }

    /// [`Inventory::open`], with how PostgreSQL is waited for.
    pub async fn open_with(loc: &Location, root_serial: &str, pg: PostgresOptions) -> Result<Self> {
        match loc {
            Location::Sqlite(path) => Self::open_checked(path, false, Some(root_serial)).await,
            Location::Postgres(url) => {
                let inv = Self::connect_postgres(loc, url, pg).await?;
                let checked = async {
                    if inv.postgres_tables().await? < 2 {
                        return Err(StoreError::NoInventory {
                            path: loc.to_string(),
                        });
                    }
                    let serial = normalize_serial(root_serial);
                    let found: Option<String> = on_pool!(inv, |p| sqlx::query_scalar(
                        "SELECT serial FROM certificates WHERE serial = $1 AND kind = 'root'"
                    )
                    .bind(&serial)
                    .fetch_optional(p)
                    .await?);
                    if found.is_none() {
                        return Err(StoreError::OtherCa {
                            path: loc.to_string(),
                            root_serial: serial,
                        });
                    }
                    inv.migrate().await
                }
                .await;
                match checked {
                    Ok(()) => Ok(inv),
                    Err(e) => {
                        inv.close().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Opens the SQLite inventory at `path` and applies migrations. With `create`, a path
    /// where no file exists gets a new inventory; a file that exists is never replaced:
    /// one that is empty, truncated, damaged or not an inventory is refused before
    /// anything is written to it.
    pub async fn open_sqlite(path: &Path, create: bool) -> Result<Self> {
        Self::open_checked(path, create, None).await
    }

    /// Opens an existing SQLite inventory (see [`Inventory::open_sqlite`]) and checks that
    /// it belongs to the CA whose root certificate has serial `root_serial`.
    pub async fn open_sqlite_for_ca(path: &Path, root_serial: &str) -> Result<Self> {
        Self::open_checked(path, false, Some(root_serial)).await
    }

    async fn open_checked(path: &Path, create: bool, root_serial: Option<&str>) -> Result<Self> {
        let name = path.display().to_string();
        let already_open = sqlite::open_in_process(path);
        let size = match std::fs::metadata(path) {
            Ok(m) => {
                // The raw header check opens and closes the file outside SQLite, which
                // would drop the POSIX locks of the connections this process already has
                // on it; the file was checked when the first of them opened it.
                if already_open.is_none() {
                    sqlite::check_file(path, &name, m.len())?;
                }
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
            sqlite::check_contents(path, &name, size, root_serial).await?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create && !exists)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL writes each commit to the log before the commit returns
            // (so a killed process, `kill -9` included, loses nothing it answered for) and
            // syncs the log to disk at checkpoints, not at every commit: one fsync per
            // commit (FULL) would cap a CA server at a few hundred issuances a second on
            // one connection. What NORMAL gives up: after a power loss or an operating
            // system crash, the last commits before the latest sync may be missing.
            .synchronous(SqliteSynchronous::Normal)
            // Pages kept in memory: up to 32 MiB (SQLite's default is 2 MiB), so that a
            // CA server with tens of thousands of devices reads its indexes from memory
            // rather than through the kernel at every renewal. Only pages read are kept.
            .pragma("cache_size", "-32768")
            // Pages freed by `tidy` go back to the file system at its incremental vacuum
            // (a new file gets it at once; an older one at its first tidy's VACUUM).
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .busy_timeout(Duration::from_secs(30));
        // One connection per process: every write is a transaction on it, in turn (so
        // concurrent tasks queue instead of meeting "database is locked"), other processes
        // wait through the busy timeout, and SQLite removes the write-ahead log when this
        // connection closes.
        let conn = opts.connect().await.map_err(|cause| StoreError::Open {
            path: name.clone(),
            cause,
        })?;
        let inv = Inventory {
            pool: Pool::Sqlite(Arc::new(SqliteConn {
                conn: tokio::sync::Mutex::new(Some(conn)),
                options: opts.create_if_missing(false),
                issuances: Default::default(),
            })),
            location: Location::Sqlite(path.to_path_buf()),
            _open: Some(already_open.unwrap_or_else(|| sqlite::mark_open(path))),
        };
        inv.migrate().await?;
        Ok(inv)
    }

    async fn connect_postgres(loc: &Location, url: &str, pg: PostgresOptions) -> Result<Self> {
        let opts: PgConnectOptions = url.parse().map_err(|cause| StoreError::Open {
            path: loc.to_string(),
            cause,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(pg.connections.max(1))
            .acquire_timeout(pg.wait)
            .connect_with(opts)
            .await
            .map_err(|cause| StoreError::Open {
                path: loc.to_string(),
                cause,
            })?;
        Ok(Inventory {
            pool: Pool::Postgres(pool),
            location: loc.clone(),
            _open: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.location.backend()
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Closes the inventory. SQLite's write-ahead log is checkpointed into the database
    /// file first, so `inventory.db` alone holds everything (a copy of it is a backup).
    pub async fn close(self) {
        match self.pool {
            Pool::Sqlite(c) => {
                let Some(mut conn) = c.conn.lock().await.take() else {
                    return;
                };
                let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertRecord;

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
            Some(format!("the inventory {} does not exist; restore it from a backup (an inventory is created only together with its CA)", missing.display()))
        );
        assert!(!missing.exists());
        Ok(())
    }
}
