//! Checkpoints of a SQLite inventory off its writer's path, for long-running servers
//! ([`Inventory::checkpoint_in_background`]).
//!
//! SQLite copies its write-ahead log into the database file at a checkpoint, which the
//! connection that commits runs itself every 1,000 pages by default, syncing the log and
//! the file (two `fsync`s) while every task of the process waits for that connection. A
//! CA server issuing certificates checkpointed every thirty or so issuances, and its core
//! sat idle for about a tenth of the time in those syncs. Here a second connection of the
//! same process checkpoints on a timer (SQLite's `PASSIVE` checkpoint never waits for the
//! writer nor holds it up), and makes the log start again once it is long; the writing
//! connection keeps a far larger threshold of its own, in case this task falls behind.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection};

use crate::pool::Pool;
use crate::{Inventory, Result};

/// The writing connection's own checkpoint threshold while checkpoints run in the
/// background (pages; SQLite's default is 1,000): a backstop only.
const BACKSTOP_PAGES: u32 = 32_768;

/// A log longer than this (pages: 32 MiB of 4 KiB pages) is restarted by the background
/// task (see below).
const RESTART_PAGES: i64 = 8_192;

/// How long a `RESTART` checkpoint waits for readers (a gateway of another process on the
/// same file) to leave the log, holding the writer back meanwhile; then it gives up until
/// the next tick (the frames are copied all the same).
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// Background checkpoints of a SQLite inventory; [`BackgroundCheckpoints::stop`] ends
/// them (dropping the handle ends them too, without waiting).
pub struct BackgroundCheckpoints {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundCheckpoints {
    /// Ends the checkpoints and closes their connection (do this before
    /// [`Inventory::close`], whose final checkpoint then has the file to itself).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for BackgroundCheckpoints {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

impl Inventory {
    /// On SQLite, checkpoints the write-ahead log every `every` from a connection of its
    /// own (see the module's documentation), until the handle is stopped or dropped.
    /// `None` on PostgreSQL, which checkpoints by itself.
    pub async fn checkpoint_in_background(
        &self,
        every: Duration,
    ) -> Result<Option<BackgroundCheckpoints>> {
        let Pool::Sqlite(c) = &self.pool else {
            return Ok(None);
        };
        let mut conn = c
            .options
            .clone()
            .busy_timeout(RESTART_WAIT)
            .connect()
            .await?;
        {
            let mut writer = c.take().await?;
            let writer = writer.as_mut().ok_or(sqlx::Error::PoolClosed)?;
            sqlx::query(&format!("PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}"))
                .execute(writer)
                .await?;
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        // A checkpoint that fails (the disk is full, the file is locked by
                        // another process's checkpoint) is tried again at the next tick.
                        // `fetch_all` runs the statement to its end, so that nothing of
                        // it stays open on this connection between ticks.
                        let done: std::result::Result<Vec<(i64, i64, i64)>, _> =
                            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                                .fetch_all(&mut conn)
                                .await;
                        // The log starts again from its beginning only when a write
                        // begins while every frame is checkpointed, which a steady stream
                        // of writes rarely allows: past RESTART_PAGES, a RESTART
                        // checkpoint holds the next write back until the log has been
                        // copied (little is left by then) and the writer starts it anew.
                        if matches!(done.as_deref(), Ok([(_, log, _)]) if *log > RESTART_PAGES) {
                            let _ = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                                .execute(&mut conn)
                                .await;
                        }
                    }
                }
            }
            let _ = conn.close().await;
        });
        Ok(Some(BackgroundCheckpoints {
            stop: Some(stop),
            task,
        }))
    }
}
