//! The connections of an inventory: the one SQLite connection taken in turn, or a
//! PostgreSQL pool ([`PostgresOptions`]), and the `on_pool!` and `transaction!` macros
//! every query runs through.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::MutexGuard;

/// How long a command waits for a connection (SQLite has one, shared by every task).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections to PostgreSQL per process.
const POSTGRES_CONNECTIONS: u32 = 5;

/// How an inventory on PostgreSQL waits for its database. Commands keep the defaults (a
/// command waits up to two minutes for a connection); a long-running server waits less,
/// so that while the database is away its requests fail soon with
/// [`StoreError::Unavailable`](crate::StoreError::Unavailable), and work again once it is back (the pool reconnects).
/// SQLite is a local file with one connection per process: its tasks always queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// How long a query waits for a connection (connecting included).
    pub wait: Duration,
    /// Connections per process.
    pub connections: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            wait: ACQUIRE_TIMEOUT,
            connections: POSTGRES_CONNECTIONS,
        }
    }
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(Arc<SqliteConn>),
    Postgres(PgPool),
}

/// The one SQLite connection of an inventory, taken in turn (see [`Inventory::create`]).
/// Not a one-connection sqlx pool: a pool tests the connection with a round trip to its
/// worker thread when it is taken and again when it is given back, which cost more than
/// the statements themselves (a renewal's three takes became nine round trips). A file
/// on this machine cannot go stale the way a network connection can. `None` once closed.
///
/// A transaction that failed (a full disk fails its commit, and SQLite may already have
/// rolled it back, so sqlx's own rollback fails too) can leave the connection believing a
/// transaction is still open, which would refuse every later `BEGIN`: [`SqliteConn::take`]
/// finds such a connection and replaces it with a fresh one (closing the old one rolls
/// back whatever it still held).
pub(crate) struct SqliteConn {
    pub(crate) conn: tokio::sync::Mutex<Option<SqliteConnection>>,
    /// How to open a replacement.
    pub(crate) options: SqliteConnectOptions,
    /// Issuances waiting to be recorded together ([`crate::issuance::IssuanceQueue`]).
    pub(crate) issuances: crate::issuance::IssuanceQueue,
}

impl SqliteConn {
    /// Takes the connection, waiting at most [`ACQUIRE_TIMEOUT`] for the task using it.
    /// The guard holds `Some` (a closed inventory is an error), a connection with no
    /// transaction open.
    pub(crate) async fn take(
        &self,
    ) -> std::result::Result<MutexGuard<'_, Option<SqliteConnection>>, sqlx::Error> {
        let mut guard = tokio::time::timeout(ACQUIRE_TIMEOUT, self.conn.lock())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let Some(conn) = guard.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        if conn.is_in_transaction() {
            // The rollback of a dropped transaction is queued on the connection's worker
            // thread; a round trip lets it finish.
            let _ = conn.ping().await;
        }
        if conn.is_in_transaction() {
            let fresh = self.options.connect().await?;
            if let Some(old) = guard.replace(fresh) {
                let _ = old.close_hard().await;
            }
        }
        Ok(guard)
    }
}

/// Runs `$body` with `$p` bound to whichever pool the inventory has. The body is compiled
/// once per back end; SQL texts use `$1` placeholders, which both understand.
/// On SQLite the body holds the inventory's one connection: it must not call another
/// `Inventory` method (that would wait for the connection it holds); the same holds for
/// [`transaction!`].
macro_rules! on_pool {
    ($inv:expr, |$p:ident| $body:expr) => {
        match &$inv.pool {
            $crate::pool::Pool::Sqlite(c) => {
                let mut conn = c.take().await?;
                let $p = conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
                $body
            }
            $crate::pool::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` in a transaction (`$tx`), committing when it finishes and rolling back
/// when it returns early with `?`. `$pg` is true on PostgreSQL. SQLite write transactions
/// start with `BEGIN IMMEDIATE`, so they wait for the write lock (busy timeout) instead of
/// failing when they would have to upgrade a read lock.
macro_rules! transaction {
    ($inv:expr, $sqlite_begin:expr, $pg_begin:expr, |$tx:ident, $pg:ident| $body:block) => {
        match &$inv.pool {
            $crate::pool::Pool::Sqlite(c) => {
                let mut conn = c.take().await?;
                let mut $tx = sqlx::Connection::begin_with(
                    conn.as_mut().ok_or(sqlx::Error::PoolClosed)?,
                    $sqlite_begin,
                )
                .await?;
                let $pg = false;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::pool::Pool::Postgres(p) => {
                let mut $tx = p.begin_with($pg_begin).await?;
                let $pg = true;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
    ($inv:expr, |$tx:ident, $pg:ident| $body:block) => {
        transaction!($inv, "BEGIN IMMEDIATE", "BEGIN", |$tx, $pg| $body)
    };
}
