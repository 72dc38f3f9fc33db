//! The inventory's test suite: one set of async test functions, each run against SQLite
//! and against PostgreSQL (a fresh database on `MTLSGATE_TEST_POSTGRES`). The fixtures and
//! record builders are here; the tests are grouped by what they exercise.

use std::path::{Path, PathBuf};

use crate::migrations::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::pool::Pool;
use crate::test_support;
use crate::*;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const ROOT: &str = "4A01";

/// An inventory for one test (and the directory holding it, for SQLite).
struct Fx {
    inv: Inventory,
    _dir: Option<tempfile::TempDir>,
}

async fn with_root(inv: Inventory) -> Inventory {
    inv.record(&cert(ROOT, "root", None)).await.expect("root");
    inv
}

async fn sqlite() -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = Location::Sqlite(dir.path().join("inventory.db"));
    let inv = with_root(Inventory::create(&loc).await.expect("create")).await;
    Fx {
        inv,
        _dir: Some(dir),
    }
}

async fn postgres() -> Fx {
    let loc = Location::Postgres(test_support::new_database().await);
    let inv = with_root(Inventory::create(&loc).await.expect("create")).await;
    Fx { inv, _dir: None }
}

mod certificates;
mod dashboard;
mod dashboard_lists;
mod devices;
mod issuance;
mod opening;
mod passkeys;
mod tidy;

fn cert(serial: &str, kind: &str, device: Option<&str>) -> CertRecord {
    CertRecord {
        serial: serial.into(),
        kind: kind.into(),
        subject: format!("CN={serial}"),
        device_id: device.map(str::to_string),
        not_before: 1,
        not_after: 10_000,
        sha256: format!("sha-{serial}"),
        issued_at: 3,
        revoked_at: None,
        revocation_reason: None,
        der: b"DER".to_vec(),
        revision: None,
    }
}

fn token(hash: &str, expires_at: i64) -> NewToken {
    NewToken {
        hash: hash.into(),
        device_id: None,
        tags: vec!["b".into(), "a".into(), "a".into()],
        lifetime_secs: Some(3600),
        expires_at,
        created_at: 1,
        created_by: "admin".into(),
    }
}

fn audit(action: &str) -> Audit {
    Audit::new(5, "test", action)
}

fn new_device(id: &str, status: DeviceStatus) -> NewDevice {
    NewDevice {
        id: id.into(),
        status,
        tags: vec!["lab".into()],
        lifetime_secs: None,
        created_by: "test".into(),
        pending_csr: None,
        poll_hash: None,
        seen: Seen {
            at: 5,
            addr: Some("127.0.0.1".into()),
            agent_version: Some("1.0".into()),
        },
    }
}

/// An enrollment of `id` with token `hash` and certificate `serial`.
fn enrollment(id: &str, hash: &str, serial: &str) -> Issuance {
    Issuance {
        cert: cert(serial, "client", Some(id)),
        device: Some(DeviceIssuance {
            id: id.into(),
            via: Via::Token {
                hash: hash.into(),
                device: new_device(id, DeviceStatus::Active),
            },
            seen: Seen {
                at: 5,
                addr: None,
                agent_version: None,
            },
            recovery: NewRecovery {
                hash: format!("rec-{serial}"),
                expires_at: 50_000,
            },
        }),
        audit: audit("enroll").device(id).serial(serial),
    }
}

fn renewal(id: &str, via: Via, serial: &str) -> Issuance {
    Issuance {
        cert: cert(serial, "client", Some(id)),
        device: Some(DeviceIssuance {
            id: id.into(),
            via,
            seen: Seen {
                at: 7,
                addr: Some("10.0.0.9".into()),
                agent_version: Some("1.1".into()),
            },
            recovery: NewRecovery {
                hash: format!("rec-{serial}"),
                expires_at: 60_000,
            },
        }),
        audit: audit("renew").device(id).serial(serial),
    }
}
