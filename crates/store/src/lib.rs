//! `mtlsgate-store`: the inventory — the certificates the CA issued and revoked, the
//! devices, enrollment and recovery tokens, the audit log, and the revision counter that
//! gateways follow — behind one async API over sqlx, on SQLite (`CA_DIR/inventory.db`,
//! the default) or PostgreSQL (`postgres://…`). This crate owns the schema
//! (`migrations/sqlite`, `migrations/postgres`), every query, the revision counter and
//! LISTEN/NOTIFY; it knows nothing about X.509 or HTTP (callers pass plain records).
//!
//! Every change a gateway must see (a device's status or tags, a revoked certificate)
//! takes the next revision in the same transaction as the change; on PostgreSQL the
//! transaction also sends `NOTIFY mtlsgate_inventory, '<revision>'`.

#![forbid(unsafe_code)]

mod model;
mod sqlite;
#[cfg(test)]
mod suite;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use tokio::sync::MutexGuard;

pub use model::*;
use model::{tags_to_text, DeviceRow, TokenRow};

/// What every refusal of a damaged inventory ends with.
const RESTORE: &str = "restore it from a backup — mtlsgate will not start a new inventory over it, because that would forget every revocation";

/// The channel PostgreSQL notifies on every new revision.
pub const NOTIFY_CHANNEL: &str = "mtlsgate_inventory";

/// Errors from the inventory. Each reads as a sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the inventory database {path}: {cause}")]
    Open { path: String, cause: sqlx::Error },
    #[error("the inventory {path} does not exist; restore it from a backup (only `mtlsgate ca init` creates an inventory, together with its CA; if this CA keeps its inventory in PostgreSQL, give --database URL or MTLSGATE_DATABASE)")]
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
    #[error("the database {path} holds no mtlsgate inventory (it has no certificates table); `mtlsgate ca init --database URL` creates one together with its CA, or restore this CA's inventory from a backup")]
    NoInventory { path: String },
    #[error("the database {path} already holds an mtlsgate inventory; a new CA needs an empty database (mtlsgate never starts a new inventory over one, because that would forget every revocation)")]
    InventoryExists { path: String },
    #[error("{path} does not belong to this CA (its root certificate serial {root_serial} is not in it); restore this CA's own inventory from a backup")]
    OtherCa { path: String, root_serial: String },
    #[error(
        "the inventory database {path} was written by a newer mtlsgate ({cause}); upgrade mtlsgate"
    )]
    Migrate {
        path: String,
        cause: sqlx::migrate::MigrateError,
    },
    #[error("`{0}` is not a database URL mtlsgate can use: give postgres://USER@HOST:PORT/DATABASE (without --database the inventory is the CA directory's inventory.db)")]
    BadLocation(String),
    #[error("inventory query failed: {0}")]
    Query(sqlx::Error),
    #[error("the inventory database cannot be reached right now ({0}); try again once it is back")]
    Unavailable(sqlx::Error),
    #[error("the inventory database could not write to its disk, which is full or refuses writes, so nothing was written ({0}); free space on it and try again")]
    Full(sqlx::Error),
    #[error("no certificate with serial {0} in the inventory (see `mtlsgate ca list`)")]
    UnknownSerial(String),
    #[error("certificate {serial} is already revoked (since {})", utc(*.at))]
    AlreadyRevoked { serial: String, at: i64 },
    #[error("a certificate with serial {0} is already recorded")]
    Duplicate(String),
    #[error("no device {0} in the inventory (see `mtlsgate devices list`)")]
    UnknownDevice(String),
    #[error("a device {0} is already in the inventory")]
    DeviceExists(String),
    #[error("device {id} is {now} now: its status changed meanwhile, so nothing was changed")]
    StatusChanged { id: String, now: DeviceStatus },
    #[error("device {id} changed while its certificate was being issued ({what}); nothing was issued — try again")]
    Changed { id: String, what: &'static str },
    #[error(
        "the enrollment token is not known to this CA (it was mistyped, or made by another CA)"
    )]
    TokenUnknown,
    #[error("the enrollment token was already used at {} by device {by}; each token enrolls one device", utc(*.at))]
    TokenUsed { at: i64, by: String },
    #[error("the enrollment token expired at {}; make a new one with `mtlsgate token create`", utc(*.at))]
    TokenExpired { at: i64 },
    #[error("the inventory holds a damaged record: {what}: {detail}")]
    BadRow { what: String, detail: String },
    #[error("{waiting} devices already wait for approval")]
    QueueFull { waiting: u64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    /// A query error, or [`StoreError::Unavailable`] when the database itself is away
    /// (connection refused or lost, no connection within the wait, the server shutting
    /// down): a caller such as the CA server answers those with "try again later".
    fn from(e: sqlx::Error) -> Self {
        if disk_full(&e) {
            StoreError::Full(e)
        } else if database_away(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Query(e)
        }
    }
}

/// Whether `e` means the database's disk (or a size limit) refused a write: SQLite's
/// SQLITE_FULL (13) and SQLITE_IOERR_WRITE (778: a write failed, as when a file size limit
/// is reached), PostgreSQL's disk_full (53100).
fn disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => match d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            // An extended result code: the primary code is its low byte.
            Some(_) => d
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|n| n & 0xff == 13 || n == 778),
            None => d.code().is_some_and(|c| c == "53100"),
        },
        _ => false,
    }
}

/// Whether `e` means the database cannot be reached now, rather than a refused query.
fn database_away(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01–57P03 (the server is shutting
        // down, crashed, or cannot accept connections yet).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

impl StoreError {
    /// The database is away (see [`StoreError::Unavailable`]) or its disk is full: the
    /// request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

/// Where the inventory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (normally `CA_DIR/inventory.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// The file name of the SQLite inventory in a CA directory.
    pub const FILE: &'static str = "inventory.db";

    /// The inventory of the CA in `ca_dir`: `database` when given (a PostgreSQL URL, or
    /// `sqlite:PATH`), else `ca_dir/inventory.db`.
    pub fn for_ca(ca_dir: &Path, database: Option<&str>) -> Result<Location> {
        match database.map(str::trim).filter(|d| !d.is_empty()) {
            None => Ok(Location::Sqlite(ca_dir.join(Self::FILE))),
            Some(d) => Self::parse_url(d),
        }
    }

    /// A CA directory or a database URL, as a gateway's `inventory = "…"` gives it.
    pub fn parse(dir_or_url: &str) -> Result<Location> {
        if dir_or_url.contains("://") || dir_or_url.starts_with("sqlite:") {
            Self::parse_url(dir_or_url)
        } else {
            Ok(Location::Sqlite(Path::new(dir_or_url).join(Self::FILE)))
        }
    }

    fn parse_url(url: &str) -> Result<Location> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Location::Postgres(url.to_string()))
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            Ok(Location::Sqlite(PathBuf::from(path)))
        } else {
            Err(StoreError::BadLocation(redact(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

/// A URL with any password replaced by `***`.
/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`, for messages (no time crate here).
fn utc(at: i64) -> String {
    let (days, secs) = (at.div_euclid(86_400), at.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Which database holds an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Pool {
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
struct SqliteConn {
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
    /// How to open a replacement.
    options: SqliteConnectOptions,
}

impl SqliteConn {
    /// Takes the connection, waiting at most [`ACQUIRE_TIMEOUT`] for the task using it.
    /// The guard holds `Some` (a closed inventory is an error), a connection with no
    /// transaction open.
    async fn take(
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
            Pool::Sqlite(c) => {
                let mut conn = c.take().await?;
                let $p = conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
                $body
            }
            Pool::Postgres($p) => $body,
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
            Pool::Sqlite(c) => {
                let mut conn = c.take().await?;
                let mut $tx = conn
                    .as_mut()
                    .ok_or(sqlx::Error::PoolClosed)?
                    .begin_with($sqlite_begin)
                    .await?;
                let $pg = false;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Pool::Postgres(p) => {
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

/// Takes the next revision inside transaction `$tx` (and, on PostgreSQL, queues the
/// notification sent when it commits). On PostgreSQL the counter's row stays locked until
/// the commit, so revisions become visible in the order they were taken: take it first.
macro_rules! next_revision {
    ($tx:ident, $pg:ident) => {{
        let rev: i64 = sqlx::query_scalar(
            "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
        )
        .fetch_one(&mut *$tx)
        .await?;
        // When the revision was taken (Unix milliseconds), so that a gateway can measure
        // how long a change took to reach it (its commit-to-apply delay).
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('revision_ms', $1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(unix_millis())
        .execute(&mut *$tx)
        .await?;
        if $pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(rev.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        rev
    }};
}

macro_rules! write_audit {
    ($tx:ident, $a:expr) => {{
        let a: &Audit = $a;
        sqlx::query(
            "INSERT INTO audit (at, actor, action, device_id, serial, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.at)
        .bind(&a.actor)
        .bind(&a.action)
        .bind(&a.device_id)
        .bind(&a.serial)
        .bind(&a.detail)
        .execute(&mut *$tx)
        .await?;
    }};
}

macro_rules! fetch_device {
    ($exec:expr, $id:expr) => {{
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind($id)
        .fetch_optional($exec)
        .await?;
        row.map(DeviceRow::into_device).transpose()?
    }};
}

macro_rules! insert_cert {
    ($tx:ident, $c:expr) => {{
        let c: &CertRecord = $c;
        let res = sqlx::query(
            "INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, pem)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&mut *$tx)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(StoreError::Duplicate(c.serial.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }};
}

macro_rules! insert_device {
    ($tx:ident, $d:expr, $rev:expr, $cert:expr) => {{
        let d: &NewDevice = $d;
        let cert: Option<&CertRecord> = $cert;
        let res = sqlx::query(
            "INSERT INTO devices (id, status, tags, first_seen, last_seen, last_addr, agent_version,
                                  cert_serial, cert_not_after, lifetime_secs, created_by, revision,
                                  pending_csr, poll_hash)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&d.id)
        .bind(d.status.as_str())
        .bind(tags_to_text(&d.tags))
        .bind(d.seen.at)
        .bind(&d.seen.addr)
        .bind(&d.seen.agent_version)
        .bind(cert.map(|c| c.serial.clone()))
        .bind(cert.map(|c| c.not_after))
        .bind(d.lifetime_secs)
        .bind(&d.created_by)
        .bind($rev)
        .bind(&d.pending_csr)
        .bind(&d.poll_hash)
        .execute(&mut *$tx)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::DeviceExists(d.id.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }};
}

const DEVICE_COLUMNS: &str = "id, status, tags, first_seen, last_seen, last_addr, agent_version, cert_serial, cert_not_after, prev_serial, lifetime_secs, created_by, revision, pending_csr, poll_hash";
const CERT_COLUMNS: &str = "serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, revoked_at, revocation_reason, pem, revision";
const TOKEN_COLUMNS: &str =
    "hash, device_id, tags, lifetime_secs, expires_at, created_at, created_by, used_at, used_by";

/// The inventory: cheap to clone (it is a connection pool).
#[derive(Clone)]
pub struct Inventory {
    pool: Pool,
    location: Location,
    /// For SQLite: marks the file as open in this process while any clone lives
    /// ([`sqlite::OpenInProcess`]).
    _open: Option<std::sync::Arc<sqlite::OpenInProcess>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a command waits for a connection (SQLite has one, shared by every task).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections to PostgreSQL per process.
const POSTGRES_CONNECTIONS: u32 = 5;

/// How an inventory on PostgreSQL waits for its database. Commands keep the defaults (a
/// command waits up to two minutes for a connection); a long-running server waits less,
/// so that while the database is away its requests fail soon with
/// [`StoreError::Unavailable`], and work again once it is back (the pool reconnects).
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

    /// How many of the inventory's marker tables (`certificates`, `_sqlx_migrations`) a
    /// PostgreSQL database has in its current schema.
    async fn postgres_tables(&self) -> Result<i64> {
        let n: i64 = on_pool!(self, |p| {
            sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name IN ('certificates', '_sqlx_migrations')"
        )
        .fetch_one(p)
        .await?
        });
        Ok(n)
    }

    async fn migrate(&self) -> Result<()> {
        let res = match &self.pool {
            Pool::Sqlite(c) => match c.take().await {
                Ok(mut conn) => match conn.as_mut() {
                    Some(conn) => SQLITE_MIGRATIONS.run_direct(conn).await,
                    None => Err(sqlx::Error::PoolClosed.into()),
                },
                Err(e) => Err(e.into()),
            },
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        match res {
            Ok(()) => Ok(()),
            Err(cause) => {
                let path = self.location.to_string();
                self.clone().close().await;
                Err(StoreError::Migrate { path, cause })
            }
        }
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

    // ---- certificates ----

    /// Records an issued certificate.
    pub async fn record(&self, c: &CertRecord) -> Result<()> {
        transaction!(self, |tx, _pg| {
            insert_cert!(tx, c);
        });
        Ok(())
    }

    /// Removes the record of a certificate that was never handed out (writing its files
    /// failed after it was recorded). Revoked certificates are never forgotten.
    pub async fn forget_unissued(&self, serial: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "DELETE FROM certificates WHERE serial = $1 AND revoked_at IS NULL"
        )
        .bind(normalize_serial(serial))
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// Every certificate, oldest first.
    pub async fn list(&self) -> Result<Vec<CertRecord>> {
        let order = match self.backend() {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "seq",
        };
        let sql = format!("SELECT {CERT_COLUMNS} FROM certificates ORDER BY issued_at, {order}");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await?))
    }

    /// One certificate by serial (case-insensitive hex, leading zeros ignored).
    pub async fn get(&self, serial: &str) -> Result<CertRecord> {
        let s = normalize_serial(serial);
        let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
        let row: Option<CertRecord> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&s)
            .fetch_optional(p)
            .await?);
        row.ok_or(StoreError::UnknownSerial(s))
    }

    /// Marks a certificate revoked, at the next revision, and writes `audit`.
    pub async fn revoke(
        &self,
        serial: &str,
        at: i64,
        reason: Option<&str>,
        audit: &Audit,
    ) -> Result<CertRecord> {
        let s = normalize_serial(serial);
        // The body runs while this task holds the SQLite connection: what it must look up
        // after a rollback is looked up once it returned (the block below ends there).
        let changed: Result<Option<String>> = async {
            Ok(transaction!(self, |tx, pg| {
                let rev = next_revision!(tx, pg);
                let done: Option<String> = sqlx::query_scalar(
                    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
                 WHERE serial = $4 AND revoked_at IS NULL RETURNING serial",
                )
                .bind(at)
                .bind(reason)
                .bind(rev)
                .bind(&s)
                .fetch_optional(&mut *tx)
                .await?;
                if done.is_none() {
                    // Nothing changed: roll back (the revision is not taken).
                    drop(tx);
                    return Ok(None);
                }
                write_audit!(tx, audit);
                done
            }))
        }
        .await;
        match changed? {
            Some(done) => self.get(&done).await,
            None => {
                let existing = self.get(&s).await?;
                Err(StoreError::AlreadyRevoked {
                    serial: existing.serial,
                    at: existing.revoked_at.unwrap_or(0),
                })
            }
        }
    }

    /// Revoked certificates, oldest revocation first.
    pub async fn revoked(&self) -> Result<Vec<CertRecord>> {
        let sql = format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await?))
    }

    /// Certificates of one device, newest first.
    pub async fn certificates_of(&self, device_id: &str) -> Result<Vec<CertRecord>> {
        let sql = format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE device_id = $1 ORDER BY issued_at DESC, serial"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(device_id)
            .fetch_all(p)
            .await?))
    }

    /// Increments and returns the CRL number.
    pub async fn next_crl_number(&self) -> Result<i64> {
        let n: i64 = transaction!(self, |tx, _pg| {
            sqlx::query_scalar(
                "UPDATE crl_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number",
            )
            .fetch_one(&mut *tx)
            .await?
        });
        Ok(n)
    }

    /// Records an issued certificate and everything that goes with it, in one
    /// transaction: the certificate row; for a device, the condition of [`Via`] (token
    /// consumed, poll token spent, current certificate or recovery token unchanged), the
    /// device's current certificate, when it was seen, and its recovery token rotation;
    /// and the audit record. Either all of it is recorded or nothing is.
    pub async fn record_issuance(&self, i: &Issuance) -> Result<Option<Device>> {
        let c = &i.cert;
        let device_id = i.device.as_ref().map(|d| d.id.clone());
        // The body runs while this task holds the SQLite connection: a refused token is
        // explained once the block below returned it.
        let refused_token: Result<Option<&str>> = async {
            transaction!(self, |tx, pg| {
                if let Some(d) = &i.device {
                    match &d.via {
                        Via::Token { hash, device } | Via::Reenroll { hash, device } => {
                            let rev = next_revision!(tx, pg);
                            let used: Option<String> = sqlx::query_scalar(
                                "UPDATE tokens SET used_at = $1, used_by = $2
                                 WHERE hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING hash",
                            )
                            .bind(d.seen.at)
                            .bind(&d.id)
                            .bind(hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if used.is_none() {
                                drop(tx);
                                return Ok(Some(hash.as_str()));
                            }
                            if let Via::Reenroll { .. } = &d.via {
                                let done: Option<String> = sqlx::query_scalar(
                                    "UPDATE devices SET status = $1, tags = $2, last_seen = $3, last_addr = $4,
                                            agent_version = $5, cert_serial = $6, cert_not_after = $7,
                                            prev_serial = NULL, lifetime_secs = $8, created_by = $9,
                                            revision = $10, pending_csr = NULL, poll_hash = NULL
                                     WHERE id = $11 AND status = 'revoked' RETURNING id",
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
                                .fetch_optional(&mut *tx)
                                .await?;
                                if done.is_none() {
                                    return Err(StoreError::Changed {
                                        id: device.id.clone(),
                                        what: "it is no longer a revoked device",
                                    });
                                }
                                sqlx::query("DELETE FROM recovery WHERE device_id = $1")
                                    .bind(&device.id)
                                    .execute(&mut *tx)
                                    .await?;
                            } else {
                                insert_device!(tx, device, rev, Some(c));
                            }
                        }
                        Via::Poll { poll_hash } => {
                            let done: Option<String> = sqlx::query_scalar(
                                "UPDATE devices SET cert_serial = $1, cert_not_after = $2, last_seen = $3,
                                        last_addr = COALESCE($4, last_addr), agent_version = COALESCE($5, agent_version),
                                        pending_csr = NULL, poll_hash = NULL
                                 WHERE id = $6 AND status = 'active' AND poll_hash = $7 AND cert_serial IS NULL
                                 RETURNING id",
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(poll_hash)
                            .fetch_optional(&mut *tx)
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
                            let rev = next_revision!(tx, pg);
                            let done: Option<String> = sqlx::query_scalar(
                                "UPDATE devices SET prev_serial = NULL, cert_serial = $1, cert_not_after = $2,
                                        last_seen = $3, last_addr = COALESCE($4, last_addr),
                                        agent_version = COALESCE($5, agent_version)
                                 WHERE id = $6 AND status = 'active' AND cert_serial = $7 AND prev_serial = $8
                                 RETURNING id",
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(abandoned)
                            .bind(presented)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "its certificate was renewed or its status changed meanwhile",
                                });
                            }
                            sqlx::query(
                                "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
                                 WHERE serial = $4 AND revoked_at IS NULL",
                            )
                            .bind(d.seen.at)
                            .bind(reason)
                            .bind(rev)
                            .bind(abandoned)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Via::Renewal { serial } | Via::Recovery { serial, .. } => {
                            if let Via::Recovery { recovery_hash, .. } = &d.via {
                                let replaced: Option<String> = sqlx::query_scalar(
                                    "UPDATE recovery SET replaced_at = $1
                                     WHERE hash = $2 AND device_id = $3 AND replaced_at IS NULL RETURNING hash",
                                )
                                .bind(d.seen.at)
                                .bind(recovery_hash)
                                .bind(&d.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                                if replaced.is_none() {
                                    return Err(StoreError::Changed {
                                        id: d.id.clone(),
                                        what: "its recovery token was replaced meanwhile",
                                    });
                                }
                            }
                            let done: Option<String> = sqlx::query_scalar(
                                "UPDATE devices SET prev_serial = cert_serial, cert_serial = $1, cert_not_after = $2,
                                        last_seen = $3, last_addr = COALESCE($4, last_addr),
                                        agent_version = COALESCE($5, agent_version)
                                 WHERE id = $6 AND status = 'active' AND cert_serial = $7
                                 RETURNING id",
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(serial)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "its certificate was renewed or its status changed meanwhile",
                                });
                            }
                        }
                    }
                    sqlx::query(
                        "UPDATE recovery SET replaced_at = $1 WHERE device_id = $2 AND replaced_at IS NULL",
                    )
                    .bind(d.seen.at)
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO recovery (hash, device_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&d.recovery.hash)
                    .bind(&d.id)
                    .bind(d.seen.at)
                    .bind(d.recovery.expires_at)
                    .execute(&mut *tx)
                    .await?;
                }
                insert_cert!(tx, c);
                write_audit!(tx, &i.audit);
            });
            Ok(None)
        }
        .await;
        if let Some(hash) = refused_token? {
            return Err(self.why_token_refused(hash).await);
        }
        match device_id {
            Some(id) => self.device(&id).await,
            None => Ok(None),
        }
    }

    // ---- devices ----

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Option<Device>> {
        Ok(on_pool!(self, |p| fetch_device!(p, id)))
    }

    /// Devices, oldest first.
    pub async fn devices(&self, f: &DeviceFilter) -> Result<Vec<Device>> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE ($1 IS NULL OR status = $1)
               AND ($2 IS NULL OR (cert_not_after IS NOT NULL AND cert_not_after < $2))
             ORDER BY first_seen, id"
        );
        let status = f.status.map(|s| s.as_str().to_string());
        let rows: Vec<DeviceRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&status)
            .bind(f.expiring_before)
            .fetch_all(p)
            .await?);
        rows.into_iter().map(DeviceRow::into_device).collect()
    }

    /// Adds a device (a pending registration) at the next revision, and writes `audit`.
    pub async fn insert_device(&self, d: &NewDevice, audit: &Audit) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            insert_device!(tx, d, rev, None);
            write_audit!(tx, audit);
        });
        self.device(&d.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(d.id.clone()))
    }

    /// Adds a pending registration, as [`Inventory::insert_device`], unless `limit`
    /// devices already wait for approval ([`StoreError::QueueFull`], nothing added). They
    /// are counted after the revision is taken: its row stays locked until the
    /// transaction ends, so concurrent registrations count one after the other.
    pub async fn insert_pending(&self, d: &NewDevice, audit: &Audit, limit: u64) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE status = 'pending'")
                    .fetch_one(&mut *tx)
                    .await?;
            let waiting = u64::try_from(n).unwrap_or(0);
            if waiting >= limit {
                return Err(StoreError::QueueFull { waiting });
            }
            insert_device!(tx, d, rev, None);
            write_audit!(tx, audit);
        });
        self.device(&d.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(d.id.clone()))
    }

    /// Removes the registrations still pending (never approved) that were made before
    /// `before` (unix seconds); how many.
    pub async fn expire_pending(&self, before: i64) -> Result<u64> {
        let done = on_pool!(self, |p| {
            sqlx::query(
            "DELETE FROM devices WHERE status = 'pending' AND cert_serial IS NULL AND first_seen < $1"
        )
        .bind(before)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(done)
    }

    /// Compare-and-set of a device's status: it becomes `to` only while it is one of
    /// `from` ([`StoreError::StatusChanged`] says what it is now otherwise). The change
    /// takes the next revision; with `revoke_certificates` (a CRL reason), every
    /// certificate of the device that is not revoked or expired is revoked with it.
    pub async fn update_status(
        &self,
        id: &str,
        from: &[DeviceStatus],
        to: DeviceStatus,
        revoke_certificates: Option<&str>,
        audit: &Audit,
    ) -> Result<Device> {
        let placeholders: Vec<String> = (0..from.len()).map(|n| format!("${}", n + 4)).collect();
        let sql = format!(
            "UPDATE devices SET status = $1, revision = $2 WHERE id = $3 AND status IN ({}) RETURNING id",
            if placeholders.is_empty() {
                "NULL".to_string()
            } else {
                placeholders.join(", ")
            }
        );
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let mut q = sqlx::query_scalar(&sql)
                .bind(to.as_str())
                .bind(rev)
                .bind(id);
            for f in from {
                q = q.bind(f.as_str());
            }
            let done: Option<String> = q.fetch_optional(&mut *tx).await?;
            if done.is_none() {
                let now = fetch_device!(&mut *tx, id);
                return Err(match now {
                    None => StoreError::UnknownDevice(id.into()),
                    Some(d) => StoreError::StatusChanged {
                        id: id.into(),
                        now: d.status,
                    },
                });
            }
            if let Some(reason) = revoke_certificates {
                sqlx::query(
                    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
                     WHERE device_id = $4 AND revoked_at IS NULL AND not_after > $1",
                )
                .bind(audit.at)
                .bind(reason)
                .bind(rev)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            write_audit!(tx, audit);
        });
        self.device(id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))
    }

    /// Replaces a device's tags (stored sorted, without duplicates), at the next revision.
    pub async fn update_tags(&self, id: &str, tags: &[String], audit: &Audit) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            let done: Option<String> = sqlx::query_scalar(
                "UPDATE devices SET tags = $1, revision = $2 WHERE id = $3 RETURNING id",
            )
            .bind(tags_to_text(tags))
            .bind(rev)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if done.is_none() {
                return Err(StoreError::UnknownDevice(id.into()));
            }
            write_audit!(tx, audit);
        });
        self.device(id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))
    }

    // ---- tokens ----

    /// Stores an enrollment token (its hash) and writes `audit`.
    pub async fn insert_token(&self, t: &NewToken, audit: &Audit) -> Result<()> {
        transaction!(self, |tx, _pg| {
            sqlx::query(
                "INSERT INTO tokens (hash, device_id, tags, lifetime_secs, expires_at, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.hash)
            .bind(&t.device_id)
            .bind(tags_to_text(&t.tags))
            .bind(t.lifetime_secs)
            .bind(t.expires_at)
            .bind(t.created_at)
            .bind(&t.created_by)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit);
        });
        Ok(())
    }

    /// A token by hash, used or not.
    pub async fn token(&self, hash: &str) -> Result<Option<Token>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
        let row: Option<TokenRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(p)
            .await?);
        row.map(TokenRow::into_token).transpose()
    }

    /// Consumes a token atomically: of any number of concurrent consumers exactly one gets
    /// it; the others learn that it was used (when, by whom), expired, or is unknown.
    pub async fn consume_token(&self, hash: &str, now: i64, device_id: &str) -> Result<Token> {
        let sql = format!(
            "UPDATE tokens SET used_at = $1, used_by = $2
             WHERE hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING {TOKEN_COLUMNS}"
        );
        let row: Option<TokenRow> = transaction!(self, |tx, _pg| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(device_id)
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?
        });
        match row {
            Some(r) => r.into_token(),
            None => Err(self.why_token_refused(hash).await),
        }
    }

    /// Why a token could not be consumed.
    async fn why_token_refused(&self, hash: &str) -> StoreError {
        match self.token(hash).await {
            Err(e) => e,
            Ok(None) => StoreError::TokenUnknown,
            Ok(Some(t)) => match (t.used_at, t.used_by) {
                (Some(at), by) => StoreError::TokenUsed {
                    at,
                    by: by.unwrap_or_else(|| "an unknown device".into()),
                },
                (None, _) => StoreError::TokenExpired { at: t.expires_at },
            },
        }
    }

    // ---- recovery ----

    /// A recovery token by hash (`replaced_at` set means it was rotated: presenting it
    /// again is the sign of a clone).
    pub async fn recovery(&self, hash: &str) -> Result<Option<Recovery>> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT hash, device_id, issued_at, expires_at, replaced_at FROM recovery WHERE hash = $1"
        )
        .bind(hash)
        .fetch_optional(p)
        .await?
        }))
    }

    // ---- audit ----

    /// Writes one audit record.
    pub async fn log(&self, a: &Audit) -> Result<()> {
        transaction!(self, |tx, _pg| {
            write_audit!(tx, a);
        });
        Ok(())
    }

    /// The newest `limit` audit records of a device, oldest first.
    pub async fn audit_of(&self, device: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        let mut rows: Vec<AuditEntry> = on_pool!(self, |p| sqlx::query_as(
            "SELECT id, at, actor, action, device_id, serial, detail FROM audit
             WHERE device_id = $1 ORDER BY id DESC LIMIT $2"
        )
        .bind(device)
        .bind(limit)
        .fetch_all(p)
        .await?);
        rows.reverse();
        Ok(rows)
    }

    // ---- gateways ----

    /// The current revision.
    pub async fn revision(&self) -> Result<i64> {
        Ok(on_pool!(self, |p| sqlx::query_scalar(
            "SELECT value FROM meta WHERE name = 'revision'"
        )
        .fetch_one(p)
        .await?))
    }

    /// Devices and revoked certificates changed after `revision` (0: everything), and the
    /// revision they bring the reader to, read from one snapshot.
    pub async fn changes_since(&self, revision: i64) -> Result<Changes> {
        let dev_sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE revision > $1 ORDER BY revision, id"
        );
        transaction!(
            self,
            "BEGIN",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            |tx, _pg| {
                let current: i64 =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision'")
                        .fetch_one(&mut *tx)
                        .await?;
                let revision_ms: Option<i64> =
                    sqlx::query_scalar("SELECT value FROM meta WHERE name = 'revision_ms'")
                        .fetch_optional(&mut *tx)
                        .await?;
                let rows: Vec<DeviceRow> = sqlx::query_as(&dev_sql)
                    .bind(revision)
                    .fetch_all(&mut *tx)
                    .await?;
                let revoked: Vec<RevokedSerial> = sqlx::query_as(
                    "SELECT serial, device_id, revision FROM certificates
                     WHERE revoked_at IS NOT NULL AND (revision > $1 OR ($1 = 0 AND revision IS NULL))
                     ORDER BY revision, serial",
                )
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

/// The wall clock in Unix milliseconds (0 before 1970).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
    fn unix_times_are_written_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_406_122), "2026-12-04 17:42:02 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }

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
            revision: None,
        }
    }

    #[test]
    fn an_unreachable_database_is_told_apart_from_a_refused_query() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
        ] {
            let s = StoreError::from(e);
            assert!(s.is_unavailable(), "{s}");
            assert!(
                s.to_string()
                    .starts_with("the inventory database cannot be reached right now ("),
                "{s}"
            );
        }
        let s = StoreError::from(sqlx::Error::RowNotFound);
        assert!(
            !s.is_unavailable() && matches!(s, StoreError::Query(_)),
            "{s}"
        );
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
            Some(format!("the inventory {} does not exist; restore it from a backup (only `mtlsgate ca init` creates an inventory, together with its CA; if this CA keeps its inventory in PostgreSQL, give --database URL or MTLSGATE_DATABASE)", missing.display()))
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
            revision: None,
        };
        inv.record(&rec).await?;
        assert!(matches!(
            inv.record(&rec).await,
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(inv.list().await?, vec![rec.clone()]);
        let r = inv
            .revoke(
                "4a01",
                10,
                Some("keyCompromise"),
                &Audit::new(10, "test", "revoke_cert"),
            )
            .await?;
        assert_eq!(r.revoked_at, Some(10));
        assert!(matches!(
            inv.revoke("4A01", 11, None, &Audit::new(11, "test", "revoke_cert"))
                .await,
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
