//! The inventory's test suite: one set of async test functions, each run against SQLite
//! and against PostgreSQL (a fresh database on `MTLSGATE_TEST_POSTGRES`).

use std::collections::HashSet;

use std::path::{Path, PathBuf};

use crate::migrations::SQLITE_MIGRATIONS;
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

/// Runs each named test function against both back ends: `NAME::sqlite`, `NAME::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::postgres().await).await
            }
        }
    )*};
}

both!(
    certificates_are_recorded_listed_and_revoked_at_a_revision,
    a_token_enrolls_one_device_of_50_concurrent_issuances,
    a_thousand_concurrent_enrollments_are_all_recorded,
    issuance_conditions_and_recovery_rotation,
    device_status_is_compare_and_set_and_gateways_see_each_change,
    pending_registrations_are_capped_and_expire,
    a_revoked_device_enrolls_again_only_while_it_is_revoked,
);

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
        pem: "PEM".into(),
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

async fn certificates_are_recorded_listed_and_revoked_at_a_revision(fx: Fx) {
    let inv = &fx.inv;
    let c = cert("77AA", "client", Some("dev1.d.example.local"));
    inv.record(&c).await.expect("record");
    assert!(matches!(
        inv.record(&c).await,
        Err(StoreError::Duplicate(s)) if s == "77AA"
    ));
    inv.record(&cert("77AB", "server", None))
        .await
        .expect("record");
    let kinds: Vec<String> = inv
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, vec!["root", "client", "server"]);
    assert_eq!(inv.get("0x00:77:aa").await.expect("get"), c);
    let before = inv.revision().await.expect("revision");
    let r = inv
        .revoke("77aa", 10, Some("keyCompromise"), &audit("revoke_cert"))
        .await
        .expect("revoke");
    assert_eq!(r.revoked_at, Some(10));
    assert_eq!(r.revision, Some(before + 1));
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    let e = inv
        .revoke("77AA", 11, None, &audit("revoke_cert"))
        .await
        .expect_err("twice");
    assert_eq!(
        e.to_string(),
        "certificate 77AA is already revoked (since 1970-01-01 00:00:10 UTC)"
    );
    // A refused revocation takes no revision.
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    assert!(matches!(
        inv.revoke("FF", 11, None, &audit("revoke_cert")).await,
        Err(StoreError::UnknownSerial(s)) if s == "FF"
    ));
    assert_eq!(inv.revoked().await.expect("revoked").len(), 1);
    assert_eq!(inv.next_crl_number().await.expect("crl"), 1);
    assert_eq!(inv.next_crl_number().await.expect("crl"), 2);
    // A revoked certificate is never forgotten; an unissued one is.
    inv.forget_unissued("77AA").await.expect("forget");
    inv.forget_unissued("77ab").await.expect("forget");
    assert_eq!(inv.list().await.expect("list").len(), 2);
    let ch = inv.changes_since(before).await.expect("changes");
    assert_eq!(ch.revision, before + 1);
    assert_eq!(
        ch.revoked,
        vec![RevokedSerial {
            serial: "77AA".into(),
            device_id: Some("dev1.d.example.local".into()),
            revision: Some(before + 1)
        }]
    );
    assert!(inv
        .changes_since(before + 1)
        .await
        .expect("changes")
        .revoked
        .is_empty());
    fx.inv.close().await;
}

/// The path every enrollment takes ([`Inventory::record_issuance`] with a token): of 50
/// concurrent issuances presenting the same token exactly one records its device and
/// certificate; the others are refused as "already used" and leave nothing behind.
async fn a_token_enrolls_one_device_of_50_concurrent_issuances(fx: Fx) {
    let inv = fx.inv.clone();
    inv.insert_token(&token("h1", 100), &audit("token"))
        .await
        .expect("token");
    let t = inv.token("h1").await.expect("token").expect("stored");
    assert_eq!(t.tags, vec!["a", "b"], "sorted, unique");
    let before = inv.revision().await.expect("revision");
    let mut tasks = Vec::new();
    for n in 0..50 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = enrollment(&format!("dev{n}"), "h1", &format!("{:04X}", 0x1000 + n));
            if let Some(d) = i.device.as_mut() {
                d.seen.at = 50;
            }
            inv.record_issuance(&i).await
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            Ok(d) => winners.push((n, d)),
            Err(e) => refusals.push(e),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one issuance wins: {refusals:?}");
    let (n, device) = &winners[0];
    let winner = format!("dev{n}");
    assert_eq!(
        device.as_ref().map(|d| d.id.as_str()),
        Some(winner.as_str())
    );
    assert_eq!(refusals.len(), 49);
    for e in &refusals {
        assert!(
            matches!(e, StoreError::TokenUsed { at: 50, by } if *by == winner),
            "{e}"
        );
    }
    assert_eq!(
        refusals[0].to_string(),
        format!("the enrollment token was already used at 1970-01-01 00:00:50 UTC by device {winner}; each token enrolls one device")
    );
    let t = inv.token("h1").await.expect("token").expect("stored");
    assert_eq!(
        (t.used_at, t.used_by.as_deref()),
        (Some(50), Some(winner.as_str()))
    );
    // The losers left nothing: one device, one certificate besides the root, one revision.
    let devices = inv
        .devices(&DeviceFilter::default())
        .await
        .expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(inv.list().await.expect("certs").len(), 2);
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    // Unknown and expired tokens are told apart, and an expired one stays unused.
    assert!(matches!(
        inv.record_issuance(&enrollment("x1", "nope", "2001")).await,
        Err(StoreError::TokenUnknown)
    ));
    inv.insert_token(&token("h2", 5), &audit("token"))
        .await
        .expect("token");
    assert!(matches!(
        inv.record_issuance(&enrollment("x2", "h2", "2002")).await,
        Err(StoreError::TokenExpired { at: 5 })
    ));
    assert!(inv
        .token("h2")
        .await
        .expect("token")
        .is_some_and(|t| t.used_at.is_none()));
    fx.inv.close().await;
}

async fn a_thousand_concurrent_enrollments_are_all_recorded(fx: Fx) {
    let inv = fx.inv.clone();
    for n in 0..1000 {
        inv.insert_token(&token(&format!("t{n}"), 100), &audit("token"))
            .await
            .expect("token");
    }
    let mut tasks = Vec::new();
    for n in 0..1000 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("d{n}.d.example.local");
            inv.record_issuance(&enrollment(&id, &format!("t{n}"), &format!("{n:04X}")))
                .await
        }));
    }
    for t in tasks {
        let d = t.await.expect("task").expect("recorded");
        assert!(d.is_some_and(|d| d.status == DeviceStatus::Active));
    }
    let devices = inv.devices(&DeviceFilter::default()).await.expect("list");
    assert_eq!(devices.len(), 1000);
    let revisions: HashSet<i64> = devices.iter().map(|d| d.revision).collect();
    assert_eq!(
        revisions.len(),
        1000,
        "each enrollment has its own revision"
    );
    assert_eq!(inv.list().await.expect("certs").len(), 1001);
    fx.inv.close().await;
}

async fn issuance_conditions_and_recovery_rotation(fx: Fx) {
    let inv = &fx.inv;
    let id = "dev1.d.example.local";
    inv.insert_token(&token("tok", 100), &audit("token"))
        .await
        .expect("token");
    let d = inv
        .record_issuance(&enrollment(id, "tok", "0A01"))
        .await
        .expect("enrolled")
        .expect("device");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.cert_serial.as_deref(), Some("0A01"));
    assert_eq!(d.tags, vec!["lab"]);
    // The token is spent: a second enrollment with it records nothing.
    let e = inv
        .record_issuance(&enrollment("dev2.d.example.local", "tok", "0A02"))
        .await
        .expect_err("spent");
    assert!(matches!(e, StoreError::TokenUsed { .. }), "{e}");
    assert!(inv.get("0A02").await.is_err());
    assert!(inv
        .device("dev2.d.example.local")
        .await
        .expect("device")
        .is_none());
    // A token whose device ID is taken: nothing is recorded, the token stays unused.
    inv.insert_token(&token("tok2", 100), &audit("token"))
        .await
        .expect("token");
    let e = inv
        .record_issuance(&enrollment(id, "tok2", "0A03"))
        .await
        .expect_err("taken");
    assert!(matches!(e, StoreError::DeviceExists(_)), "{e}");
    assert!(inv
        .token("tok2")
        .await
        .expect("token")
        .is_some_and(|t| t.used_at.is_none()));
    let first = inv.recovery("rec-0A01").await.expect("rec").expect("rec");
    assert_eq!(first.replaced_at, None);
    // Renewal with the current certificate.
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Renewal {
                serial: "0A01".into(),
            },
            "0B01",
        ))
        .await
        .expect("renewed")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0B01"));
    assert_eq!(d.prev_serial.as_deref(), Some("0A01"));
    assert_eq!(d.last_addr.as_deref(), Some("10.0.0.9"));
    assert_eq!(d.agent_version.as_deref(), Some("1.1"));
    let first = inv.recovery("rec-0A01").await.expect("rec").expect("rec");
    assert_eq!(first.replaced_at, Some(7), "rotated");
    // Renewal against a certificate that is no longer current: nothing recorded.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Renewal {
                serial: "0A01".into(),
            },
            "0B02",
        ))
        .await
        .expect_err("stale");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0B02").await.is_err());
    // Recovery needs the current recovery token.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Recovery {
                serial: "0B01".into(),
                recovery_hash: "rec-0A01".into(),
            },
            "0C01",
        ))
        .await
        .expect_err("replaced token");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Recovery {
                serial: "0B01".into(),
                recovery_hash: "rec-0B01".into(),
            },
            "0C02",
        ))
        .await
        .expect("recovered")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0C02"));
    let current: Vec<Recovery> = futures_recoveries(inv, &["rec-0A01", "rec-0B01", "rec-0C02"])
        .await
        .into_iter()
        .filter(|r| r.replaced_at.is_none())
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].hash, "rec-0C02");
    // The retry of a lost answer: the previous certificate (0B01) renews once more; the
    // abandoned current one (0C02) is revoked at a revision, and no previous serial is kept.
    let before = inv.revision().await.expect("revision");
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Retry {
                abandoned: "0C02".into(),
                presented: "0B01".into(),
                reason: "superseded".into(),
            },
            "0D01",
        ))
        .await
        .expect("retried")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0D01"));
    assert_eq!(d.prev_serial, None);
    let abandoned = inv.get("0C02").await.expect("0C02");
    assert_eq!(abandoned.revocation_reason.as_deref(), Some("superseded"));
    let changes = inv.changes_since(before).await.expect("changes");
    assert!(
        changes.revoked.iter().any(|r| r.serial == "0C02"),
        "{changes:?}"
    );
    // Only once.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Retry {
                abandoned: "0D01".into(),
                presented: "0B01".into(),
                reason: "superseded".into(),
            },
            "0D02",
        ))
        .await
        .expect_err("second retry");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0D01").await.expect("0D01").revoked_at.is_none());
    // A pending device collects its certificate once it is approved, with its poll token.
    let mut p = new_device("dev3.d.example.local", DeviceStatus::Pending);
    p.pending_csr = Some("CSR".into());
    p.poll_hash = Some("poll".into());
    inv.insert_device(&p, &audit("register"))
        .await
        .expect("pending");
    let poll = |serial: &str| {
        renewal(
            "dev3.d.example.local",
            Via::Poll {
                poll_hash: "poll".into(),
            },
            serial,
        )
    };
    let e = inv
        .record_issuance(&poll("0D01"))
        .await
        .expect_err("pending");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    inv.update_status(
        "dev3.d.example.local",
        &[DeviceStatus::Pending],
        DeviceStatus::Active,
        None,
        &audit("approve"),
    )
    .await
    .expect("approve");
    let d = inv
        .record_issuance(&poll("0D02"))
        .await
        .expect("collected")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0D02"));
    assert_eq!((d.pending_csr, d.poll_hash), (None, None));
    let e = inv.record_issuance(&poll("0D03")).await.expect_err("spent");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    let log: Vec<String> = inv
        .audit_of(id, 10)
        .await
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(log, vec!["enroll", "renew", "renew", "renew"]);
    fx.inv.close().await;
}

async fn futures_recoveries(inv: &Inventory, hashes: &[&str]) -> Vec<Recovery> {
    let mut v = Vec::new();
    for h in hashes {
        v.push(inv.recovery(h).await.expect("rec").expect("stored"));
    }
    v
}

async fn device_status_is_compare_and_set_and_gateways_see_each_change(fx: Fx) {
    let inv = &fx.inv;
    let mut listener = inv.listen().await.expect("listen");
    assert_eq!(listener.is_some(), inv.backend() == Backend::Postgres);
    let start = inv.revision().await.expect("revision");
    let id = "dev1.d.example.local";
    inv.insert_device(&new_device(id, DeviceStatus::Pending), &audit("register"))
        .await
        .expect("insert");
    let e = inv
        .insert_device(&new_device(id, DeviceStatus::Pending), &audit("register"))
        .await
        .expect_err("taken");
    assert_eq!(
        e.to_string(),
        "a device dev1.d.example.local is already in the inventory"
    );
    let d = inv
        .update_status(
            id,
            &[DeviceStatus::Pending],
            DeviceStatus::Active,
            None,
            &audit("approve"),
        )
        .await
        .expect("approve");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.revision, start + 2);
    let e = inv
        .update_status(
            id,
            &[DeviceStatus::Pending],
            DeviceStatus::Denied,
            None,
            &audit("deny"),
        )
        .await
        .expect_err("no longer pending");
    assert!(
        matches!(
            e,
            StoreError::StatusChanged {
                now: DeviceStatus::Active,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        inv.update_status(
            "nope",
            &[DeviceStatus::Pending],
            DeviceStatus::Active,
            None,
            &audit("approve")
        )
        .await,
        Err(StoreError::UnknownDevice(_))
    ));
    let d = inv
        .update_tags(
            id,
            &["z".into(), "a".into(), "z".into()],
            &audit("tag").device(id),
        )
        .await
        .expect("tags");
    assert_eq!(d.tags, vec!["a", "z"]);
    assert_eq!(d.revision, start + 3);
    // Revoking the device revokes its certificates (not expired ones) at the same revision.
    inv.record(&cert("0E01", "client", Some(id)))
        .await
        .expect("cert");
    let mut old = cert("0E00", "client", Some(id));
    old.not_after = 2;
    inv.record(&old).await.expect("cert");
    let d = inv
        .update_status(
            id,
            &[DeviceStatus::Active, DeviceStatus::Denied],
            DeviceStatus::Revoked,
            Some("cessationOfOperation"),
            &audit("revoke").device(id),
        )
        .await
        .expect("revoke");
    assert_eq!(d.revision, start + 4);
    let c = inv.get("0E01").await.expect("cert");
    assert_eq!(c.revision, Some(start + 4));
    assert_eq!(c.revocation_reason.as_deref(), Some("cessationOfOperation"));
    assert_eq!(inv.get("0E00").await.expect("cert").revoked_at, None);
    let all = inv.changes_since(0).await.expect("changes");
    assert_eq!(all.revision, start + 4);
    assert_eq!(all.devices.len(), 1);
    assert_eq!(all.devices[0].status, DeviceStatus::Revoked);
    assert_eq!(all.revoked.len(), 1);
    let none = inv.changes_since(start + 4).await.expect("changes");
    assert!(none.devices.is_empty() && none.revoked.is_empty());
    let since = inv.changes_since(start + 2).await.expect("changes");
    assert_eq!(since.devices.len(), 1);
    assert_eq!(
        inv.audit_of(id, 2)
            .await
            .expect("audit")
            .into_iter()
            .map(|a| a.action)
            .collect::<Vec<_>>(),
        vec!["tag", "revoke"],
        "the newest two, oldest first"
    );
    if let Some(l) = listener.as_mut() {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), l.recv())
                .await
                .expect("a notification within 10 s")
                .expect("notification");
            assert_eq!(n.channel(), NOTIFY_CHANNEL);
            seen.push(n.payload().parse::<i64>().expect("revision"));
        }
        assert_eq!(seen, vec![start + 1, start + 2, start + 3, start + 4]);
    }
    fx.inv.close().await;
}

// ---- integrity: PostgreSQL ----

#[tokio::test]
async fn postgres_without_an_inventory_or_with_another_cas_is_refused() {
    let url = test_support::new_database().await;
    let loc = Location::Postgres(url.clone());
    let shown = loc.to_string();
    let e = Inventory::open(&loc, ROOT).await.err().expect("no schema");
    assert_eq!(
        e.to_string(),
        format!("the database {shown} holds no mtlsgate inventory (it has no certificates table); restore this CA's inventory from a backup (an inventory is created only together with its CA)")
    );
    let inv = with_root(Inventory::create(&loc).await.expect("create")).await;
    inv.close().await;
    let e = Inventory::create(&loc).await.err().expect("exists");
    assert_eq!(
        e.to_string(),
        format!("the database {shown} already holds an mtlsgate inventory; a new CA needs an empty database (mtlsgate never starts a new inventory over one, because that would forget every revocation)")
    );
    let e = Inventory::open(&loc, "99AA").await.err().expect("foreign");
    assert_eq!(
        e.to_string(),
        format!("{shown} does not belong to this CA (its root certificate serial 99AA is not in it); restore this CA's own inventory from a backup")
    );
    let inv = Inventory::open(&loc, "4a01").await.expect("own root");
    assert_eq!(inv.list().await.expect("list").len(), 1);
    inv.close().await;
}

#[tokio::test]
async fn an_sqlite_inventory_is_created_once_and_an_old_one_is_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inventory.db");
    let loc = Location::Sqlite(path.clone());
    Inventory::create(&loc).await.expect("create").close().await;
    let e = Inventory::create(&loc).await.err().expect("exists");
    assert!(matches!(e, StoreError::InventoryExists { .. }), "{e}");
    // An inventory made by the first version (migration 0001 only), with a revocation.
    let old = dir.path().join("old.db");
    {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&old)
                    .create_if_missing(true),
            )
            .await
            .expect("pool");
        let first = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(SQLITE_MIGRATIONS.migrations[..1].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        first.run(&pool).await.expect("0001");
        for (serial, kind, revoked) in [("4A01", "root", None), ("5B01", "client", Some(9))] {
            sqlx::query(
                "INSERT INTO certificates (serial, kind, subject, not_before, not_after, sha256, issued_at, revoked_at, pem)
                 VALUES ($1, $2, 'CN=x', 1, 99, 'aa', 1, $3, 'PEM')",
            )
            .bind(serial)
            .bind(kind)
            .bind(revoked)
            .execute(&pool)
            .await
            .expect("insert");
        }
        pool.close().await;
    }
    let inv = Inventory::open(&Location::Sqlite(old), ROOT)
        .await
        .expect("upgraded");
    let all = inv.changes_since(0).await.expect("changes");
    assert_eq!(all.revision, 0);
    assert_eq!(all.revoked.len(), 1, "revocations before the upgrade count");
    assert_eq!(all.revoked[0].serial, "5B01");
    inv.close().await;
}

#[test]
fn locations() {
    let dir = Path::new("/ca");
    assert_eq!(
        Location::for_ca(dir, None).expect("default"),
        Location::Sqlite(PathBuf::from("/ca/inventory.db"))
    );
    let pg = Location::for_ca(dir, Some("postgres://u:secret@db:5432/inv")).expect("pg");
    assert_eq!(pg.backend(), Backend::Postgres);
    assert_eq!(pg.to_string(), "postgres://u:***@db:5432/inv");
    assert_eq!(
        Location::parse("/srv/ca").expect("dir"),
        Location::Sqlite(PathBuf::from("/srv/ca/inventory.db"))
    );
    let e = Location::for_ca(dir, Some("mysql://x")).expect_err("refused");
    assert!(e
        .to_string()
        .starts_with("`mysql://x` is not a database URL"));
}

/// Sets the SQLite connection's page limit: its current size (so that the next write that
/// needs a page fails with "database or disk is full", as on a full disk), or unlimited.
async fn set_sqlite_full(inv: &Inventory, full: bool) {
    let Pool::Sqlite(c) = &inv.pool else {
        panic!("an SQLite inventory");
    };
    let mut guard = c.take().await.expect("connection");
    let conn = guard.as_mut().expect("open");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await
        .expect("page_count");
    let limit = if full { pages } else { 1 << 30 };
    sqlx::query(&format!("PRAGMA max_page_count = {limit}"))
        .execute(&mut *conn)
        .await
        .expect("max_page_count");
}

#[tokio::test]
async fn a_write_that_fails_on_a_full_sqlite_database_leaves_later_writes_working() {
    let fx = sqlite().await;
    let inv = &fx.inv;
    inv.insert_token(&token("h1", 100), &audit("token"))
        .await
        .expect("token");
    let big = |serial: &str| CertRecord {
        pem: "P".repeat(256 * 1024),
        ..cert(serial, "client", None)
    };
    set_sqlite_full(inv, true).await;
    let e = inv
        .record(&big("5B01"))
        .await
        .expect_err("the database is full");
    assert!(e.is_unavailable(), "a full disk is a try-again-later: {e}");
    assert!(e.to_string().contains("full"), "{e}");
    let mut issuance = enrollment("dev1", "h1", "5B02");
    issuance.cert.pem = big("5B02").pem;
    // (The failed write may have left a fresh connection, without the limit.)
    set_sqlite_full(inv, true).await;
    let e = inv
        .record_issuance(&issuance)
        .await
        .expect_err("the database is full");
    assert!(e.is_unavailable(), "{e}");
    assert!(
        inv.token("h1")
            .await
            .expect("token")
            .is_some_and(|t| t.used_at.is_none()),
        "a failed enrollment leaves its token unspent"
    );
    // Space freed: every write works again, without a restart.
    set_sqlite_full(inv, false).await;
    inv.record(&big("5B01"))
        .await
        .expect("record after space was freed");
    inv.record_issuance(&issuance)
        .await
        .expect("enrollment after space was freed");
    assert!(inv
        .token("h1")
        .await
        .expect("token")
        .is_some_and(|t| t.used_by.as_deref() == Some("dev1")));
    fx.inv.close().await;
}

async fn pending_registrations_are_capped_and_expire(fx: Fx) {
    let inv = &fx.inv;
    let pending = |n: u32| {
        let mut d = new_device(&format!("p{n}.d.example.local"), DeviceStatus::Pending);
        d.seen.at = i64::from(n);
        d
    };
    for n in 1..=3 {
        inv.insert_pending(&pending(n), &audit("register"), 3)
            .await
            .expect("registered");
    }
    let e = inv
        .insert_pending(&pending(4), &audit("register"), 3)
        .await
        .expect_err("full");
    assert!(matches!(e, StoreError::QueueFull { waiting: 3 }), "{e}");
    assert!(inv
        .device("p4.d.example.local")
        .await
        .expect("device")
        .is_none());
    // Registrations made before 3 go; an approved one stays.
    inv.update_status(
        "p1.d.example.local",
        &[DeviceStatus::Pending],
        DeviceStatus::Active,
        None,
        &audit("approve"),
    )
    .await
    .expect("approved");
    assert_eq!(inv.expire_pending(3).await.expect("expired"), 1);
    assert!(inv
        .device("p2.d.example.local")
        .await
        .expect("device")
        .is_none());
    assert!(inv
        .device("p1.d.example.local")
        .await
        .expect("device")
        .is_some());
    inv.insert_pending(&pending(4), &audit("register"), 3)
        .await
        .expect("room again");
}

/// `Via::Reenroll`: a token bound to a revoked device's ID turns its row active again with
/// the new certificate (first sighting kept, old recovery tokens gone, old certificate still
/// revoked), at a new revision; once the row is no longer revoked nothing is recorded and
/// the token stays unused.
async fn a_revoked_device_enrolls_again_only_while_it_is_revoked(fx: Fx) {
    let inv = &fx.inv;
    let id = "cam1.d.example.local";
    inv.insert_token(&token("tok", 100), &audit("token"))
        .await
        .expect("token");
    inv.record_issuance(&enrollment(id, "tok", "0B01"))
        .await
        .expect("enrolled");
    inv.update_status(
        id,
        &[DeviceStatus::Active],
        DeviceStatus::Revoked,
        Some("cessationOfOperation"),
        &audit("revoke").device(id),
    )
    .await
    .expect("revoked");
    let before = inv.revision().await.expect("revision");
    let again = |hash: &str, serial: &str| {
        let mut i = enrollment(id, hash, serial);
        if let Some(d) = i.device.as_mut() {
            let Via::Token { hash, device } = d.via.clone() else {
                unreachable!("enrollment() is by token")
            };
            let mut device = device;
            device.tags = vec!["cam".into()];
            device.seen.at = 9;
            d.via = Via::Reenroll { hash, device };
        }
        i
    };
    inv.insert_token(&token("tok2", 100), &audit("token"))
        .await
        .expect("token");
    let d = inv
        .record_issuance(&again("tok2", "0B02"))
        .await
        .expect("enrolled again")
        .expect("device");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.cert_serial.as_deref(), Some("0B02"));
    assert_eq!(d.prev_serial, None);
    assert_eq!(d.tags, vec!["cam"]);
    assert_eq!(d.first_seen, 5, "the first sighting is kept");
    assert!(d.revision > before, "gateways see it");
    assert!(inv.get("0B01").await.expect("old").revoked_at.is_some());
    assert!(inv.recovery("rec-0B01").await.expect("read").is_none());
    assert!(inv.recovery("rec-0B02").await.expect("read").is_some());
    assert!(inv
        .token("tok2")
        .await
        .expect("read")
        .expect("tok2")
        .used_at
        .is_some());
    // Active again: a second re-enrollment records nothing and spends no token.
    inv.insert_token(&token("tok3", 100), &audit("token"))
        .await
        .expect("token");
    let e = inv
        .record_issuance(&again("tok3", "0B03"))
        .await
        .expect_err("not revoked");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0B03").await.is_err());
    assert!(inv
        .token("tok3")
        .await
        .expect("read")
        .expect("tok3")
        .used_at
        .is_none());
}
