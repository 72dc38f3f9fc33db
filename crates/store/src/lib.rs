//! `mtlsgate-store`: the inventory — the certificates the CA issued and revoked, the
//! devices, enrollment and recovery tokens, the audit log, and the revision counter that
//! gateways follow — behind one async API over sqlx, on SQLite (`CA_DIR/inventory.db`,
//! the default) or PostgreSQL (`postgres://…`). This crate owns the schema
//! (`migrations/sqlite`, `migrations/postgres`), every query, the revision counter and
//! LISTEN/NOTIFY; it knows nothing about X.509 or HTTP (callers pass plain records).
//! `dashboard` keeps the fleet dashboard's login links and sessions and reads its pages;
//! `passkeys` keeps its operators' passkeys and the WebAuthn ceremonies under way.
//!
//! Every change a gateway must see (a device's status or tags, a revoked certificate)
//! takes the next revision in the same transaction as the change; on PostgreSQL the
//! transaction also sends `NOTIFY mtlsgate_inventory, '<revision>'`.
//!
//! Map: `error` (what can go wrong), `location` (where an inventory lives), `pool` (its
//! connections and the `on_pool!`/`transaction!` macros), `sql` (statements and columns
//! shared by several queries), `open` and `sqlite` (creating, checking, opening, closing),
//! `checkpoint` (a server's SQLite checkpoints, off the writer's path),
//! `migrations` (the schema), `paging` (keyset-paged listings and their filters), `hot`
//! (the statements on hot paths, whose plans a test checks); then the queries by noun: `certificates`, `issuance` (an
//! issued certificate with its device, token and recovery changes), `devices`, `tokens`,
//! `recovery`, `audit`, `revision` (what gateways follow), `tidy` (retention: what goes
//! once it is no longer needed). `model` holds the records.

#![forbid(unsafe_code)]

// The macros every query uses come first.
#[macro_use]
mod pool;
#[macro_use]
mod sql;
#[macro_use]
mod paging;

mod audit;
mod certificates;
mod checkpoint;
#[macro_use]
mod dashboard;
mod dashboard_lists;
mod devices;
mod error;
mod hot;
mod issuance;
mod location;
mod migrations;
mod model;
mod open;
mod passkeys;
mod recovery;
mod revision;
mod sqlite;
#[cfg(test)]
mod suite;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod tidy;
mod tokens;

pub use checkpoint::BackgroundCheckpoints;
pub use dashboard::{DashboardSession, DeviceQuery, DeviceSort, FleetCounts, NewSession};
pub use dashboard_lists::AuditFilter;
pub use error::{Result, StoreError};
pub use location::{Backend, Location};
pub use model::*;
pub use paging::{
    certificates_page_sql, devices_page_sql, page_size, Arg, CertFilter, CertStatus, Page,
    Statement, DEFAULT_PAGE, MAX_PAGE,
};
pub use passkeys::{CeremonyKind, NewCeremony, PasskeyRecord};
use pool::Pool;
pub use pool::PostgresOptions;
pub use tidy::{Retention, Tidied};

/// The channel PostgreSQL notifies on every new revision.
pub const NOTIFY_CHANNEL: &str = "mtlsgate_inventory";

/// The inventory: cheap to clone (it is a connection pool).
#[derive(Clone)]
pub struct Inventory {
    pool: Pool,
    location: Location,
    /// For SQLite: marks the file as open in this process while any clone lives
    /// ([`sqlite::OpenInProcess`]).
    _open: Option<std::sync::Arc<sqlite::OpenInProcess>>,
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
    fn serial_normalization() {
        assert_eq!(normalize_serial("0x00ab:cd"), "ABCD");
        assert_eq!(normalize_serial("1"), "01");
    }
}
