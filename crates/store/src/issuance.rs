//! Recording an issued certificate with everything that goes with it, in one transaction
//! ([`Inventory::record_issuance`]): the condition of the issuance (a token consumed once,
//! a poll token spent, the current certificate or recovery token unchanged), the device
//! row, the recovery token rotation and the audit record.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;
use tokio::sync::oneshot;

use crate::model::tags_to_text;
use crate::pool::{Pool, SqliteConn};
use crate::{Device, Inventory, Issuance, Result, StoreError, Via};

/// The statements of one issuance on `$tx` (a transaction, or a connection inside one),
/// as a future of `Result<Applied>`: [`Applied::Refused`] when the enrollment token was
/// refused. On a refusal or an error the caller rolls back what the statements did.
macro_rules! apply_issuance {
    ($tx:ident, $pg:ident, $i:expr) => {
        async {
            let i: &Issuance = $i;
            let c = &i.cert;
            if let Some(d) = &i.device {
                match &d.via {
                    Via::Token { hash, device } | Via::Reenroll { hash, device } => {
                        let rev = next_revision!($tx, $pg);
                        let used: Option<String> = sqlx::query_scalar(
                            crate::hot::TOKEN_CONSUME,
                        )
                        .bind(d.seen.at)
                        .bind(&d.id)
                        .bind(hash)
                        .fetch_optional(&mut *$tx)
                        .await?;
                        if used.is_none() {
                            return Ok(Applied::Refused(hash.clone()));
                        }
                        if let Via::Reenroll { .. } = &d.via {
                            let done: Option<String> = sqlx::query_scalar(
                                crate::hot::DEVICE_REENROLL,
                            )
                            .bind(device.status.as_str())
                            .bind(tags_to_text(&device.tags))
                            .bind(device.seen.at)
                            .bind(&device.seen.addr)
                            .bind(&device.seen.agent_version)
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(device.lifetime_secs)
                            .bind(&device.created_by)
                            .bind(rev)
                            .bind(&device.id)
                            .fetch_optional(&mut *$tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: device.id.clone(),
                                    what: "it is no longer a revoked device",
                                });
                            }
                            sqlx::query(crate::hot::RECOVERY_FORGET)
                                .bind(&device.id)
                                .execute(&mut *$tx)
                                .await?;
                        } else {
                            insert_device!($tx, device, rev, Some(c));
                        }
                    }
                    Via::Poll { poll_hash } => {
                        let done: Option<String> = sqlx::query_scalar(
                            crate::hot::DEVICE_COLLECT,
                        )
                        .bind(&c.serial)
                        .bind(c.not_after)
                        .bind(d.seen.at)
                        .bind(&d.seen.addr)
                        .bind(&d.seen.agent_version)
                        .bind(&d.id)
                        .bind(poll_hash)
                        .fetch_optional(&mut *$tx)
                        .await?;
                        if done.is_none() {
                            return Err(StoreError::Changed {
                                id: d.id.clone(),
                                what: "it is no longer an approved device waiting for its first certificate",
                            });
                        }
                    }
                    Via::Retry {
                        abandoned,
                        presented,
                        reason,
                    } => {
                        let rev = next_revision!($tx, $pg);
                        let done: Option<String> = sqlx::query_scalar(
                            crate::hot::DEVICE_RETRY,
                        )
                        .bind(&c.serial)
                        .bind(c.not_after)
                        .bind(d.seen.at)
                        .bind(&d.seen.addr)
                        .bind(&d.seen.agent_version)
                        .bind(&d.id)
                        .bind(abandoned)
                        .bind(presented)
                        .fetch_optional(&mut *$tx)
                        .await?;
                        if done.is_none() {
                            return Err(StoreError::Changed {
                                id: d.id.clone(),
                                what: "its certificate was renewed or its status changed meanwhile",
                            });
                        }
                        sqlx::query(
                            crate::hot::CERT_REVOKE_ABANDONED,
                        )
                        .bind(d.seen.at)
                        .bind(reason)
                        .bind(rev)
                        .bind(abandoned)
                        .execute(&mut *$tx)
                        .await?;
                    }
                    Via::Renewal { serial } | Via::Recovery { serial, .. } => {
                        if let Via::Recovery { recovery_hash, .. } = &d.via {
                            let replaced: Option<String> = sqlx::query_scalar(
                                crate::hot::RECOVERY_SPEND,
                            )
                            .bind(d.seen.at)
                            .bind(recovery_hash)
                            .bind(&d.id)
                            .fetch_optional(&mut *$tx)
                            .await?;
                            if replaced.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "its recovery token was replaced meanwhile",
                                });
                            }
                        }
                        let done: Option<String> = sqlx::query_scalar(
                            crate::hot::DEVICE_RENEW,
                        )
                        .bind(&c.serial)
                        .bind(c.not_after)
                        .bind(d.seen.at)
                        .bind(&d.seen.addr)
                        .bind(&d.seen.agent_version)
                        .bind(&d.id)
                        .bind(serial)
                        .fetch_optional(&mut *$tx)
                        .await?;
                        if done.is_none() {
                            return Err(StoreError::Changed {
                                id: d.id.clone(),
                                what: "its certificate was renewed or its status changed meanwhile",
                            });
                        }
                    }
                }
                if !$pg {
                    // SQLite: the rest in one text, one round trip to its worker thread
                    // instead of five (see `sqlite_issuance_end`).
                    let q = sqlx::query_as(sqlite_issuance_end())
                        .bind(d.seen.at)
                        .bind(&d.id)
                        .bind(&d.recovery.hash)
                        .bind(&d.id)
                        .bind(d.seen.at)
                        .bind(d.recovery.expires_at);
                    let q = bind_audit!(bind_cert!(q, c), &i.audit).bind(&d.id);
                    let rows: std::result::Result<Vec<crate::model::DeviceRow>, sqlx::Error> =
                        q.fetch_all(&mut *$tx).await;
                    let device = match rows {
                        Ok(mut rows) => rows
                            .pop()
                            .map(crate::model::DeviceRow::into_device)
                            .transpose()?
                            .map(Box::new),
                        Err(sqlx::Error::Database(e))
                            if e.is_unique_violation() && e.message().contains("certificates.") =>
                        {
                            return Err(StoreError::Duplicate(c.serial.clone()))
                        }
                        Err(e) => return Err(e.into()),
                    };
                    return Ok(Applied::Done(device));
                }
                sqlx::query(crate::hot::RECOVERY_ROTATE)
                    .bind(d.seen.at)
                    .bind(&d.id)
                    .execute(&mut *$tx)
                    .await?;
                sqlx::query(crate::sql::INSERT_RECOVERY)
                    .bind(&d.recovery.hash)
                    .bind(&d.id)
                    .bind(d.seen.at)
                    .bind(d.recovery.expires_at)
                    .execute(&mut *$tx)
                    .await?;
            }
            insert_cert!($tx, c);
            write_audit!($tx, &i.audit);
            Ok::<Applied, StoreError>(Applied::Done(None))
        }
    };
}

/// What the statements of one issuance came to (not yet committed).
enum Applied {
    /// The enrollment token (by its hash) was refused: the caller rolls back.
    Refused(String),
    /// Recorded; on SQLite, for a device, with the device row as it now is.
    Done(Option<Box<Device>>),
}

/// The end of a device's issuance on SQLite, as one text of five statements: its
/// current recovery token marked replaced (`$1` time, `$2` device), the new one recorded
/// (`$3`…`$6`), the certificate (`$7`…`$15`) and the audit record (`$16`…`$21`) inserted,
/// and the device read back (`$22`). sqlx runs the statements of one text in order on
/// SQLite's worker thread, numbering parameters across them, and stops at the first that
/// fails; sent one by one, each was a round trip between the async task and that
/// thread (two context switches on one core).
fn sqlite_issuance_end() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        [
            (crate::hot::RECOVERY_ROTATE.to_string(), 0),
            (crate::sql::INSERT_RECOVERY.to_string(), 2),
            (crate::sql::INSERT_CERT.to_string(), 6),
            (crate::sql::INSERT_AUDIT.to_string(), 15),
            (crate::hot::device_by_id(), 21),
        ]
        .iter()
        .map(|(sql, by)| shift_parameters(sql, *by))
        .collect::<Vec<_>>()
        .join(";\n")
    });
    &TEXT
}

/// `sql` with every parameter `$N` renumbered `$(N + by)`.
fn shift_parameters(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Issuances recorded in one SQLite transaction at most (see [`IssuanceQueue`]).
const MAX_TOGETHER: usize = 32;

impl Inventory {
    /// Records an issued certificate and everything that goes with it, in one
    /// transaction: the certificate row; for a device, the condition of [`Via`] (token
    /// consumed, poll token spent, current certificate or recovery token unchanged), the
    /// device's current certificate, when it was seen, and its recovery token rotation;
    /// and the audit record. Either all of it is recorded or nothing is. Returns the
    /// device as it is once its certificate is recorded.
    ///
    /// On SQLite, issuances that arrive while the connection is busy are recorded
    /// together in one transaction (group commit, see [`IssuanceQueue`]); each caller
    /// still has its answer only once its issuance is committed.
    pub async fn record_issuance(&self, i: &Issuance) -> Result<Option<Device>> {
        let recorded = match &self.pool {
            Pool::Sqlite(c) => record_queued(c, i).await?,
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                let pg = true;
                match apply_issuance!(tx, pg, i).await? {
                    Applied::Refused(hash) => Recorded::Refused(hash),
                    Applied::Done(_) => {
                        tx.commit().await?;
                        Recorded::Issued(None)
                    }
                }
            }
        };
        match recorded {
            Recorded::Refused(hash) => Err(self.why_token_refused(&hash).await),
            Recorded::Issued(Some(device)) => Ok(Some(*device)),
            Recorded::Issued(None) => match &i.device {
                Some(d) => self.device(&d.id).await,
                None => Ok(None),
            },
        }
    }
}

/// What became of one issuance.
enum Recorded {
    /// Committed, with the device as it was right after (on SQLite; PostgreSQL reads it
    /// again afterwards).
    Issued(Option<Box<Device>>),
    /// The enrollment token (by its hash) was refused: nothing was recorded.
    Refused(String),
}

/// Issuances waiting for a SQLite inventory's one connection, recorded together.
///
/// Each commit writes the pages an issuance touched to the write-ahead log, and a page
/// touched by several issuances of one transaction (the end of each index that grows in
/// order: issue time, expiry, audit records) is written once. A caller queues its
/// issuance; one task at a time takes the connection and records everything queued
/// meanwhile (up to [`MAX_TOGETHER`]) in one transaction, then answers each caller. When
/// any of them is refused or fails, that transaction is rolled back and each issuance is
/// recorded again in a transaction of its own, so every caller gets the outcome it would
/// have had alone. The recording task is not the caller's: an issuance whose caller went
/// away (its client hung up) before the task took it is not recorded, as a caller's own
/// transaction would have been rolled back; once taken, it is recorded with the others.
#[derive(Default)]
pub(crate) struct IssuanceQueue {
    state: std::sync::Mutex<QueueState>,
    /// Transactions that committed issuances (for tests: fewer than the issuances when
    /// they were recorded together).
    committed: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct QueueState {
    jobs: Vec<Job>,
    /// Whether a recording task is running (it takes every job queued meanwhile).
    running: bool,
}

struct Job {
    issuance: Issuance,
    reply: oneshot::Sender<Result<Recorded>>,
}

impl IssuanceQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while the queue was locked left no half-made change (each change is one
        // push or one drain), so a poisoned lock is taken as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many transactions committed issuances so far.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_commit(&self) {
        self.committed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Queues `i` on SQLite connection `c` (starting the recording task when none runs) and
/// waits for its outcome.
async fn record_queued(c: &Arc<SqliteConn>, i: &Issuance) -> Result<Recorded> {
    let (reply, outcome) = oneshot::channel();
    let start = {
        let mut q = c.issuances.lock();
        q.jobs.push(Job {
            issuance: i.clone(),
            reply,
        });
        !std::mem::replace(&mut q.running, true)
    };
    if start {
        tokio::spawn(record_all(Arc::clone(c)));
    }
    // A dropped reply means the recording task ended without answering (its runtime shut
    // down).
    outcome
        .await
        .unwrap_or_else(|_| Err(StoreError::from(sqlx::Error::WorkerCrashed)))
}

/// Fails every queued job and marks the queue idle if the recording task ends without
/// doing so itself (a panic, or its runtime shutting down), so that the next issuance
/// starts a new task instead of waiting for this one.
struct Running<'a> {
    queue: &'a IssuanceQueue,
    done: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            let jobs = {
                let mut q = self.queue.lock();
                q.running = false;
                std::mem::take(&mut q.jobs)
            };
            drop(jobs);
        }
    }
}

/// The recording task: until the queue is empty, takes the connection and records what
/// is queued (see [`IssuanceQueue`]).
async fn record_all(c: Arc<SqliteConn>) {
    let mut running = Running {
        queue: &c.issuances,
        done: false,
    };
    loop {
        let mut guard = match c.take().await {
            Ok(g) => g,
            Err(e) => {
                // Closed, or no connection within the wait: every caller queued so far
                // has that answer, and the next issuance starts a new task.
                let jobs = {
                    let mut q = c.issuances.lock();
                    q.running = false;
                    running.done = true;
                    std::mem::take(&mut q.jobs)
                };
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::from(copy_error(&e))));
                }
                return;
            }
        };
        let jobs: Vec<Job> = {
            let mut q = c.issuances.lock();
            if q.jobs.is_empty() {
                q.running = false;
                running.done = true;
                return;
            }
            let n = q.jobs.len().min(MAX_TOGETHER);
            let mut jobs: Vec<Job> = q.jobs.drain(..n).collect();
            jobs.retain(|j| !j.reply.is_closed());
            jobs
        };
        if jobs.is_empty() {
            continue;
        }
        let Some(conn) = guard.as_mut() else {
            for job in jobs {
                let _ = job
                    .reply
                    .send(Err(StoreError::from(sqlx::Error::PoolClosed)));
            }
            continue;
        };
        if jobs.len() > 1 {
            if let Ok(devices) = record_together(conn, &jobs).await {
                c.issuances.count_commit();
                for (job, device) in jobs.into_iter().zip(devices) {
                    let _ = job.reply.send(Ok(Recorded::Issued(device)));
                }
                continue;
            }
            // Rolled back: each on its own, on a connection checked again (a failed commit
            // can leave it believing a transaction is still open).
            drop(guard);
            for job in jobs {
                let out = match c.take().await {
                    Ok(mut g) => match g.as_mut() {
                        Some(conn) => record_alone(conn, &job.issuance).await,
                        None => Err(StoreError::from(sqlx::Error::PoolClosed)),
                    },
                    Err(e) => Err(StoreError::from(e)),
                };
                if let Ok(Recorded::Issued(_)) = out {
                    c.issuances.count_commit();
                }
                let _ = job.reply.send(out);
            }
            continue;
        }
        for job in jobs {
            let out = record_alone(conn, &job.issuance).await;
            if let Ok(Recorded::Issued(_)) = out {
                c.issuances.count_commit();
            }
            let _ = job.reply.send(out);
        }
    }
}

/// Records every job in one transaction, with each device read back right after its
/// issuance. Any refusal or failure rolls all of it back (`Err`, and the caller records
/// them one by one).
async fn record_together(
    conn: &mut SqliteConnection,
    jobs: &[Job],
) -> std::result::Result<Vec<Option<Box<Device>>>, ()> {
    match record_in_one(conn, jobs.iter().map(|j| &j.issuance)).await {
        Ok(Ok(devices)) => Ok(devices),
        _ => Err(()),
    }
}

/// Records one issuance in a transaction of its own.
async fn record_alone(conn: &mut SqliteConnection, i: &Issuance) -> Result<Recorded> {
    Ok(match record_in_one(conn, std::iter::once(i)).await? {
        Ok(mut devices) => Recorded::Issued(devices.pop().flatten()),
        Err(hash) => Recorded::Refused(hash),
    })
}

/// Records `issuances` in one transaction, each device read back right after its
/// issuance: the devices, or `Err(hash)` when an enrollment token was refused (or the
/// error of the first that failed), which rolls all of it back.
async fn record_in_one<'a>(
    conn: &mut SqliteConnection,
    issuances: impl Iterator<Item = &'a Issuance>,
) -> Result<std::result::Result<Vec<Option<Box<Device>>>, String>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let pg = false;
    let mut devices = Vec::new();
    for i in issuances {
        match apply_issuance!(tx, pg, i).await? {
            Applied::Refused(hash) => return Ok(Err(hash)),
            // A device's issuance read the device back (`sqlite_issuance_end`).
            Applied::Done(device) => devices.push(device),
        }
    }
    tx.commit().await?;
    Ok(Ok(devices))
}

/// A copy of `e` for each caller that shares one failure to take the connection (sqlx's
/// errors cannot be cloned): the same kind, with the same words.
fn copy_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

impl Inventory {
    /// Records a device that already holds a certificate (issued elsewhere, or by this CA
    /// before it kept an inventory) with that certificate as its current one, in one
    /// transaction at the next revision, and writes `audit`. The certificate may be
    /// recorded already (this CA issued it), as long as it is the same one and not revoked.
    /// A device ID already in the inventory is [`StoreError::DeviceExists`], another
    /// certificate with its serial [`StoreError::Duplicate`], a revoked one
    /// [`StoreError::AlreadyRevoked`]; nothing is recorded then.
    pub async fn import_device(
        &self,
        device: &crate::NewDevice,
        cert: &crate::CertRecord,
        audit: &crate::Audit,
    ) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            insert_device!(tx, device, rev, Some(cert));
            // A certificate this CA issued is recorded already: the same one is kept.
            let recorded: Option<(String, Option<i64>)> =
                sqlx::query_as("SELECT sha256, revoked_at FROM certificates WHERE serial = $1")
                    .bind(&cert.serial)
                    .fetch_optional(&mut *tx)
                    .await?;
            match recorded {
                None => insert_cert!(tx, cert),
                Some((sha256, None)) if sha256 == cert.sha256 => {}
                Some((sha256, Some(at))) if sha256 == cert.sha256 => {
                    return Err(StoreError::AlreadyRevoked {
                        serial: cert.serial.clone(),
                        at,
                    })
                }
                Some(_) => return Err(StoreError::Duplicate(cert.serial.clone())),
            }
            write_audit!(tx, audit);
        });
        self.device(&device.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_and_nothing_else_changes() {
        assert_eq!(
            shift_parameters("UPDATE t SET a = $1, b = $12 WHERE c = $2 AND d = '$'", 9),
            "UPDATE t SET a = $10, b = $21 WHERE c = $11 AND d = '$'"
        );
        assert_eq!(shift_parameters("SELECT 1", 3), "SELECT 1");
    }

    #[test]
    fn the_end_of_an_issuance_numbers_its_parameters_one_to_twenty_two() {
        let text = sqlite_issuance_end();
        assert_eq!(text.split(";\n").count(), 5, "{text}");
        let mut seen: Vec<usize> = text
            .split('$')
            .skip(1)
            .filter_map(|t| {
                let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (1..=22).collect::<Vec<_>>(), "{text}");
    }
}
