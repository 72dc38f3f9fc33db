//! The inventory's errors ([`StoreError`]): each reads as a sentence a device or an
//! operator can act on. The CA server sends these texts over HTTP to devices and admin
//! clients, so they never name a CLI command (the CLI adds its own hints).

use crate::DeviceStatus;

/// What every refusal of a damaged inventory ends with.
const RESTORE: &str = "restore it from a backup — mtlsgate will not start a new inventory over it, because that would forget every revocation";

/// Errors from the inventory. Each reads as a sentence, and names no command of the CLI
/// (the CLI adds those as hints: `crates/cli/hint.rs`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the inventory database {path}: {cause}")]
    Open { path: String, cause: sqlx::Error },
    #[error("the inventory {path} does not exist; restore it from a backup (an inventory is created only together with its CA)")]
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
    #[error("the database {path} holds no mtlsgate inventory (it has no certificates table); restore this CA's inventory from a backup (an inventory is created only together with its CA)")]
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
    #[error("the inventory {path} cannot be upgraded to keep certificates as DER: {detail}; its certificates were left as they were")]
    Convert { path: String, detail: String },
    #[error("cannot write the audit export {path}: {cause}; no audit record was removed")]
    AuditExport { path: String, cause: std::io::Error },
    #[error("`{0}` is not a database URL mtlsgate can use: give postgres://USER@HOST:PORT/DATABASE or sqlite:PATH")]
    BadLocation(String),
    #[error("inventory query failed: {0}")]
    Query(sqlx::Error),
    #[error("the inventory database cannot be reached right now ({0}); try again once it is back")]
    Unavailable(sqlx::Error),
    #[error("the inventory database could not write to its disk, which is full or refuses writes, so nothing was written ({0}); free space on it and try again")]
    Full(sqlx::Error),
    #[error("no certificate with serial {0} in the inventory")]
    UnknownSerial(String),
    #[error("certificate {serial} is already revoked (since {})", utc(*.at))]
    AlreadyRevoked { serial: String, at: i64 },
    #[error("a certificate with serial {0} is already recorded")]
    Duplicate(String),
    #[error("no device {0} in the inventory")]
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
    #[error("the enrollment token expired at {}; make a new one", utc(*.at))]
    TokenExpired { at: i64 },
    #[error("the inventory holds a damaged record: {what}: {detail}")]
    BadRow { what: String, detail: String },
    #[error("{waiting} devices already wait for approval")]
    QueueFull { waiting: u64 },
    #[error("the cursor `{0}` is not one this inventory gave out (a listing's `next`, for the same kind of listing): start the listing again without a cursor")]
    BadCursor(String),
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

    /// The CA server sends these texts to devices and admin clients: no CLI command, no flag.
    #[test]
    fn no_error_names_a_command_of_the_cli() {
        let e = || sqlx::Error::RowNotFound;
        let all = [
            StoreError::Open {
                path: "p".into(),
                cause: e(),
            },
            StoreError::Missing { path: "p".into() },
            StoreError::Empty { path: "p".into() },
            StoreError::NotSqlite { path: "p".into() },
            StoreError::Truncated {
                path: "p".into(),
                size: 1,
                expected: 2,
            },
            StoreError::Corrupt {
                path: "p".into(),
                detail: "d".into(),
            },
            StoreError::NotAnInventory { path: "p".into() },
            StoreError::NoInventory { path: "p".into() },
            StoreError::InventoryExists { path: "p".into() },
            StoreError::OtherCa {
                path: "p".into(),
                root_serial: "01".into(),
            },
            StoreError::BadLocation("x".into()),
            StoreError::Query(e()),
            StoreError::Unavailable(e()),
            StoreError::Full(e()),
            StoreError::UnknownSerial("01".into()),
            StoreError::AlreadyRevoked {
                serial: "01".into(),
                at: 0,
            },
            StoreError::Duplicate("01".into()),
            StoreError::UnknownDevice("d".into()),
            StoreError::DeviceExists("d".into()),
            StoreError::StatusChanged {
                id: "d".into(),
                now: DeviceStatus::Active,
            },
            StoreError::Changed {
                id: "d".into(),
                what: "w",
            },
            StoreError::TokenUnknown,
            StoreError::TokenUsed {
                at: 0,
                by: "d".into(),
            },
            StoreError::TokenExpired { at: 0 },
            StoreError::BadRow {
                what: "w".into(),
                detail: "d".into(),
            },
            StoreError::QueueFull { waiting: 1 },
            StoreError::BadCursor("x".into()),
        ];
        for err in &all {
            let s = err.to_string();
            let commands = [
                "ca",
                "cert",
                "serve",
                "tunnel",
                "quickstart",
                "token",
                "devices",
                "agent",
                "login",
                "logout",
            ];
            assert!(
                !commands
                    .iter()
                    .any(|c| s.contains(&format!("mtlsgate {c} ")))
                    && !s.contains(" --")
                    && !s.contains("MTLSGATE_"),
                "{s}"
            );
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
}
