//! Retention ([`Inventory::tidy`]): what the inventory no longer needs goes, so that its
//! size follows the fleet, not the age of the CA.
//!
//! - A certificate expired longer ago than the retention period goes — revoked or not: a
//!   revoked certificate stays (and stays in every CRL) until it has expired, plus the
//!   retention period. A certificate still valid never goes, nor the root's or the
//!   intermediate's record, nor a device's current or previous certificate (recovery and
//!   a retried renewal look them up).
//! - A recovery token that was replaced (kept to recognise a clone presenting it) goes
//!   once it has expired longer ago than the retention period.
//! - An audit record older than its own retention period is written to a JSON-lines file
//!   in the export directory (temporary file, synced, renamed), and removed only once the
//!   file is there: when the export fails, nothing is removed.
//! - On SQLite the freed pages are given back to the file system (incremental vacuum, or
//!   one VACUUM that also turns incremental vacuum on for an inventory made before it).
//!
//! On PostgreSQL a session advisory lock lets one tidy run at a time: a second server
//! finds it held and skips its turn.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::pool::Pool;
use crate::{AuditEntry, Backend, Inventory, Result, StoreError};

/// What [`Inventory::tidy`] keeps and removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The time to measure from (Unix seconds): the wall clock, or a simulated one.
    pub now: i64,
    /// Certificates (and replaced recovery tokens) expired longer ago than this many
    /// seconds go.
    pub keep_expired: i64,
    /// Audit records older than this many seconds are exported, then removed.
    pub keep_audit: i64,
    /// The directory the audit records are exported to (created if missing).
    pub audit_export: PathBuf,
    /// Count what would go, change nothing.
    pub dry_run: bool,
}

/// What [`Inventory::tidy`] removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Certificates removed…
    pub certificates: u64,
    /// …of which revoked ones (expired: no CRL needs them any more).
    pub revoked: u64,
    /// Replaced recovery tokens removed.
    pub recovery_tokens: u64,
    /// Audit records exported and removed.
    pub audit: u64,
    /// The files the audit records went to.
    pub audit_files: Vec<PathBuf>,
    /// On SQLite, the inventory file's size before and after (bytes).
    pub size: Option<(u64, u64)>,
    /// On PostgreSQL, another process was tidying the same database: nothing was done.
    pub skipped: bool,
}

/// The PostgreSQL advisory lock held while a tidy runs.
const TIDY_LOCK: i64 = 0x6d74_6c73_7469_6479; // "mtlstidy"
/// Audit records per export file.
const AUDIT_BATCH: i64 = 50_000;

/// The certificates that may go: expired before `$1`, not a CA's, not a device's current
/// or previous one.
const EXPIRED: &str = "FROM certificates
     WHERE not_after < $1 AND kind NOT IN ('root', 'intermediate')
       AND serial NOT IN (SELECT cert_serial FROM devices WHERE cert_serial IS NOT NULL)
       AND serial NOT IN (SELECT prev_serial FROM devices WHERE prev_serial IS NOT NULL)";
/// Replaced recovery tokens expired before `$1`.
const REPLACED: &str = "FROM recovery WHERE replaced_at IS NOT NULL AND expires_at < $1";

impl Inventory {
    /// Removes what retention `r` lets go (see the module's description) and says what.
    pub async fn tidy(&self, r: &Retention) -> Result<Tidied> {
        // On PostgreSQL, one tidy at a time per database (a session lock, held on its own
        // connection for the whole run).
        let mut lock = match &self.pool {
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(TIDY_LOCK)
                    .fetch_one(&mut *conn)
                    .await?;
                if !got {
                    return Ok(Tidied {
                        skipped: true,
                        ..Tidied::default()
                    });
                }
                Some(conn)
            }
            Pool::Sqlite(_) => None,
        };
        let out = self.tidy_locked(r).await;
        if let Some(conn) = lock.as_mut() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(TIDY_LOCK)
                .execute(&mut **conn)
                .await;
        }
        out
    }

    async fn tidy_locked(&self, r: &Retention) -> Result<Tidied> {
        let cert_cutoff = r.now.saturating_sub(r.keep_expired.max(0));
        let audit_cutoff = r.now.saturating_sub(r.keep_audit.max(0));
        let mut t = Tidied::default();
        let before = self.sqlite_size();
        if r.dry_run {
            let (certs, revoked): (i64, i64) = on_pool!(self, |p| sqlx::query_as(&format!(
                "SELECT COUNT(*), COUNT(revoked_at) {EXPIRED}"
            ))
            .bind(cert_cutoff)
            .fetch_one(p)
            .await?);
            let (recovery, audit): (i64, i64) = on_pool!(self, |p| sqlx::query_as(&format!(
                "SELECT (SELECT COUNT(*) {REPLACED}), (SELECT COUNT(*) FROM audit WHERE at < $2)"
            ))
            .bind(cert_cutoff)
            .bind(audit_cutoff)
            .fetch_one(p)
            .await?);
            t.certificates = count(certs);
            t.revoked = count(revoked);
            t.recovery_tokens = count(recovery);
            t.audit = count(audit);
            return Ok(t);
        }
        // The audit first: each batch is in its file before it is removed.
        loop {
            let rows: Vec<AuditEntry> = on_pool!(self, |p| sqlx::query_as(
                "SELECT id, at, actor, action, device_id, serial, detail FROM audit
                 WHERE at < $1 ORDER BY id LIMIT $2"
            )
            .bind(audit_cutoff)
            .bind(AUDIT_BATCH)
            .fetch_all(p)
            .await?);
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                break;
            };
            let (first, last) = (first.id, last.id);
            let file = r
                .audit_export
                .join(format!("audit-{first:012}-{last:012}.jsonl"));
            export(&r.audit_export, &file, &rows)?;
            let removed = on_pool!(self, |p| sqlx::query(
                "DELETE FROM audit WHERE at < $1 AND id <= $2"
            )
            .bind(audit_cutoff)
            .bind(last)
            .execute(p)
            .await?
            .rows_affected());
            t.audit += removed;
            t.audit_files.push(file);
            if rows.len() < AUDIT_BATCH as usize {
                break;
            }
        }
        let (certs, revoked, recovery) = transaction!(self, |tx, _pg| {
            let revoked: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) {EXPIRED} AND revoked_at IS NOT NULL"
            ))
            .bind(cert_cutoff)
            .fetch_one(&mut *tx)
            .await?;
            let certs = sqlx::query(&format!("DELETE {EXPIRED}"))
                .bind(cert_cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let recovery = sqlx::query(&format!("DELETE {REPLACED}"))
                .bind(cert_cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            (certs, revoked, recovery)
        });
        t.certificates = certs;
        t.revoked = count(revoked);
        t.recovery_tokens = recovery;
        if self.backend() == Backend::Sqlite {
            self.give_back_space().await?;
            if let (Some(b), Some(a)) = (before, self.sqlite_size()) {
                t.size = Some((b, a));
            }
        }
        Ok(t)
    }

    /// The SQLite file's size (its write-ahead log included), `None` on PostgreSQL.
    fn sqlite_size(&self) -> Option<u64> {
        let crate::Location::Sqlite(path) = &self.location else {
            return None;
        };
        let main = std::fs::metadata(path).ok()?.len();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Some(main + std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0))
    }

    /// Gives SQLite's free pages back to the file system: incremental vacuum when the
    /// file has it on, otherwise one VACUUM that turns it on (inventories made before it
    /// was, whose certificate pages the DER conversion also left half empty). The
    /// write-ahead log is then emptied, so that the file's size shows it.
    async fn give_back_space(&self) -> Result<()> {
        let Pool::Sqlite(c) = &self.pool else {
            return Ok(());
        };
        let mut guard = c.take().await?;
        let p = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&mut *p)
            .await?;
        if mode == 2 {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&mut *p)
                .await?;
        } else {
            // A file made before incremental vacuum was on (its pages also half empty
            // after the PEM column went): rewritten once, which turns it on.
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&mut *p)
                .await?;
            sqlx::query("VACUUM").execute(&mut *p).await?;
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *p)
            .await?;
        Ok(())
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Writes `rows` as JSON lines to `file` in `dir`: a temporary file, synced, renamed, and
/// the directory synced, so that the file is whole or absent.
fn export(dir: &Path, file: &Path, rows: &[AuditEntry]) -> Result<()> {
    let fail = |cause: std::io::Error| StoreError::AuditExport {
        path: file.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        for row in rows {
            serde_json::to_writer(&mut w, row)?;
            w.write_all(b"\n")?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}
