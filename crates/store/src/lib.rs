//! `mtlsgate-store`: the certificate inventory — what the CA issued and what it revoked —
//! behind one async API over sqlx. The embedded SQLite file inside the CA directory is
//! the default; the schema lives in `migrations/<backend>` so a PostgreSQL back end can
//! sit behind the same [`Inventory`] type. This crate owns the schema and the queries;
//! it knows nothing about X.509 (callers pass plain records).

#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// Errors from the inventory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the inventory database {path}: {cause}")]
    Open { path: String, cause: sqlx::Error },
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
    /// Opens (creating if asked) the SQLite inventory at `path` and applies migrations.
    /// A database with migrations this version does not know is refused.
    pub async fn open_sqlite(path: &Path, create: bool) -> Result<Self> {
        let name = path.display().to_string();
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{name}"))
            .map_err(|cause| StoreError::Open {
                path: name.clone(),
                cause,
            })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|cause| StoreError::Open {
                path: name.clone(),
                cause,
            })?;
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|cause| StoreError::Migrate { path: name, cause })?;
        Ok(Inventory { pool })
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(self) {
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
        Ok(())
    }
}
