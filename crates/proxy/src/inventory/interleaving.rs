//! Randomized interleavings of the inventory sync against a real inventory (an SQLite file,
//! or a PostgreSQL server of the test's own that it stops and starts): gateways (sync tasks
//! with their own views) start and stop, devices enroll, are denied, allowed, revoked and
//! re-tagged, certificates are revoked, in random order and timing. After each round the
//! writer goes quiet and every running gateway's view must equal the database's (statuses,
//! tags, revoked serials, revision) within a second; and a device that was active when a
//! gateway was asked about it is never refused as unknown (the gateway reads once before
//! refusing), nor refused by a gateway that has not read the inventory yet (that is the
//! 503 case, not a refusal).
//!
//! The seed is printed; `MTLSGATE_INTERLEAVING_SEED=N` replays a run, and
//! `MTLSGATE_INTERLEAVING_ROUNDS=N` runs more or fewer rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mtlsgate_store::{
    Audit, CertRecord, DeviceStatus, Inventory, Location, NewDevice, PostgresOptions, Seen,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{InventoryDenial, InventoryState, InventoryView};

const ROOT: &str = "4A01";

struct Gateway {
    inv: Arc<InventoryState>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    fn start(loc: &Location, poll: Duration) -> Gateway {
        let inv = Arc::new(InventoryState::new("test".into()));
        let task = tokio::spawn(super::sync(
            inv.clone(),
            loc.clone(),
            vec![ROOT.into()],
            poll,
            Arc::new(|| {}),
        ));
        Gateway { inv, task }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the writer knows of a device: its ID, current certificate serial, status.
struct Known {
    id: String,
    serial: String,
    status: DeviceStatus,
}

fn seed() -> u64 {
    std::env::var("MTLSGATE_INTERLEAVING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn rounds(default: usize) -> usize {
    std::env::var("MTLSGATE_INTERLEAVING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn audit(action: &str) -> Audit {
    Audit::new(1, "test", action)
}

fn cert(serial: &str, kind: &str, device: Option<&str>) -> CertRecord {
    CertRecord {
        serial: serial.into(),
        kind: kind.into(),
        subject: format!("CN={serial}"),
        device_id: device.map(str::to_string),
        not_before: 1,
        not_after: i64::from(u32::MAX),
        sha256: format!("sha-{serial}"),
        issued_at: 1,
        revoked_at: None,
        revocation_reason: None,
        der: b"DER".to_vec(),
        revision: None,
    }
}

/// The database's own view, read the way a gateway reads it.
async fn truth(db: &Inventory) -> InventoryView {
    let all = db.changes_since(0).await.expect("read the inventory");
    InventoryView::default().apply(all, true)
}

/// Asks gateway `g` about an active device as a request would: a device the view does
/// not know gets one read before it is refused. Panics on a refusal.
async fn ask_active(g: &Gateway, k: &Known, seed: u64) {
    let check = |v: &InventoryView| v.check("test", Some(&k.id), &k.serial, &[]);
    let first = check(&g.inv.view());
    let answer = match first {
        Err(InventoryDenial::Unknown { .. }) => {
            g.inv.catch_up(&k.id).await;
            check(&g.inv.view())
        }
        other => other,
    };
    match answer {
        // Not read yet: the request gets 503, not a refusal.
        Ok(()) | Err(InventoryDenial::NotLoaded { .. }) => {}
        Err(e) => panic!("seed {seed}: active device {} refused: {e}", k.id),
    }
}

/// Runs `rounds` rounds on the inventory at `loc`; `restart` (PostgreSQL) stops and starts
/// the database.
async fn run(
    loc: Location,
    poll: Duration,
    rounds: usize,
    restart: Option<&dyn Fn(bool)>,
    seed: u64,
) {
    eprintln!(
        "interleaving seed {seed} (replay: MTLSGATE_INTERLEAVING_SEED={seed}), {rounds} rounds"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let open = |loc: Location| async move {
        Inventory::open_with(
            &loc,
            ROOT,
            PostgresOptions {
                wait: Duration::from_secs(10),
                connections: 2,
            },
        )
        .await
    };
    let mut db = open(loc.clone()).await.expect("open");
    let mut gateways: Vec<Gateway> = (0..2).map(|_| Gateway::start(&loc, poll)).collect();
    let mut known: Vec<Known> = Vec::new();
    let mut serial_no = 0x1000u64;
    let mut checks = 0usize;
    for round in 0..rounds {
        let restarted = match restart {
            Some(r) if round > 0 && rng.gen_ratio(1, 25) => {
                r(false);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1500))).await;
                r(true);
                db = open(loc.clone()).await.expect("reopen after the restart");
                true
            }
            _ => false,
        };
        let ops = rng.gen_range(1..=8);
        for _ in 0..ops {
            match rng.gen_range(0..100) {
                0..=29 => {
                    serial_no += 1;
                    let id = format!("d{serial_no:x}.d.example.local");
                    let serial = format!("{serial_no:X}");
                    db.insert_device(
                        &NewDevice {
                            id: id.clone(),
                            status: DeviceStatus::Active,
                            tags: vec![],
                            lifetime_secs: None,
                            created_by: "test".into(),
                            pending_csr: None,
                            poll_hash: None,
                            seen: Seen::default(),
                        },
                        &audit("enroll"),
                    )
                    .await
                    .expect("enroll");
                    db.record(&cert(&serial, "client", Some(&id)))
                        .await
                        .expect("record");
                    let k = Known {
                        id,
                        serial,
                        status: DeviceStatus::Active,
                    };
                    if !gateways.is_empty() {
                        let g = &gateways[rng.gen_range(0..gateways.len())];
                        ask_active(g, &k, seed).await;
                        checks += 1;
                    }
                    known.push(k);
                }
                30..=49 if !known.is_empty() => {
                    let i = rng.gen_range(0..known.len());
                    let (to, from): (DeviceStatus, &[DeviceStatus]) = match known[i].status {
                        DeviceStatus::Active => (DeviceStatus::Denied, &[DeviceStatus::Active]),
                        DeviceStatus::Denied => (DeviceStatus::Active, &[DeviceStatus::Denied]),
                        _ => continue,
                    };
                    db.update_status(&known[i].id, from, to, None, &audit("status"))
                        .await
                        .expect("deny or allow");
                    known[i].status = to;
                }
                50..=59 if !known.is_empty() => {
                    let i = rng.gen_range(0..known.len());
                    if known[i].status == DeviceStatus::Revoked {
                        continue;
                    }
                    let from = [known[i].status];
                    db.update_status(
                        &known[i].id,
                        &from,
                        DeviceStatus::Revoked,
                        Some("keyCompromise"),
                        &audit("revoke"),
                    )
                    .await
                    .expect("revoke the device");
                    known[i].status = DeviceStatus::Revoked;
                }
                60..=69 if !known.is_empty() => {
                    let i = rng.gen_range(0..known.len());
                    let _ = db
                        .revoke(
                            &known[i].serial,
                            2,
                            Some("superseded"),
                            &audit("revoke_cert"),
                        )
                        .await;
                }
                70..=84 if !known.is_empty() => {
                    let i = rng.gen_range(0..known.len());
                    let tags: Vec<String> = ["lab", "office", "edge"]
                        .iter()
                        .filter(|_| rng.gen_bool(0.5))
                        .map(|t| t.to_string())
                        .collect();
                    db.update_tags(&known[i].id, &tags, &audit("tag"))
                        .await
                        .expect("tag");
                }
                85..=92 if gateways.len() < 4 => gateways.push(Gateway::start(&loc, poll)),
                93..=99 if gateways.len() > 1 => {
                    let i = rng.gen_range(0..gateways.len());
                    drop(gateways.remove(i));
                }
                _ => {}
            }
            if rng.gen_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4))).await;
            }
        }
        // Quiet: every running gateway's view equals the database's within a second (a
        // restart adds the reconnection back-off).
        let want = truth(&db).await;
        let limit = if restarted {
            Duration::from_secs(4)
        } else {
            Duration::from_secs(1)
        };
        let deadline = Instant::now() + limit;
        for (n, g) in gateways.iter().enumerate() {
            loop {
                let v = g.inv.view();
                if v.loaded && v.revision == want.revision && v.contents() == want.contents() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}, round {round}: gateway {n} did not converge within {limit:?}: view at revision {} (loaded {}), database at {}",
                    v.revision,
                    v.loaded,
                    want.revision
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    eprintln!(
        "{rounds} rounds, {} devices, {checks} active devices asked about, converged every time",
        known.len()
    );
}

/// A new SQLite inventory with the test root recorded.
async fn new_sqlite(dir: &tempfile::TempDir) -> Location {
    let loc = Location::Sqlite(dir.path().join("inventory.db"));
    let inv = Inventory::create(&loc).await.expect("create");
    inv.record(&cert(ROOT, "root", None)).await.expect("root");
    inv.close().await;
    loc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_converge_on_sqlite_whatever_the_interleaving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = new_sqlite(&dir).await;
    run(loc, Duration::from_millis(20), rounds(1000), None, seed()).await;
}

/// A PostgreSQL server of the test's own (`scripts/postgres`), which the run stops and
/// starts.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

const POSTGRES_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");

impl OwnPostgres {
    fn script(&self, args: &[&str]) {
        let out = std::process::Command::new(POSTGRES_SCRIPT)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn set(&self, up: bool) {
        let dir = self.dir.path().display().to_string();
        if up {
            self.script(&["start", &dir, &self.port.to_string()]);
        } else {
            self.script(&["stop", &dir]);
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(POSTGRES_SCRIPT)
            .args(["stop", &self.dir.path().display().to_string()])
            .stdin(std::process::Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_converge_on_postgresql_across_restarts_whatever_the_interleaving() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let pg = OwnPostgres {
        dir: tempfile::Builder::new()
            .prefix("mtlsgate-sync-pg")
            .tempdir_in("/tmp")
            .expect("tempdir"),
        port,
    };
    pg.set(true);
    let loc = Location::Postgres(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    let inv = Inventory::create(&loc).await.expect("create");
    inv.record(&cert(ROOT, "root", None)).await.expect("root");
    inv.close().await;
    let restart = |up: bool| pg.set(up);
    run(
        loc,
        Duration::from_millis(20),
        rounds(200),
        Some(&restart),
        seed(),
    )
    .await;
}
