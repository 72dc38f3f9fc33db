//! The inventory sync's promise at gateways on PostgreSQL: a change committed while a
//! gateway starts (reads its snapshot) is not missed, and after the database was away the
//! gateways say so, reconnect as soon as it is back, and a revocation made then reaches
//! them at once. (The SQLite side — the look-up of a device enrolled a moment ago and the
//! 503 while a large inventory is read — is in `tests/gateway/inventory.rs`.)

use std::time::{Duration, Instant};

use crate::util::{
    curl, enroll_device, fleet_server_cert, test_ca, Db, Gate, OwnPostgres, Upstream, Work,
};

fn gateway(w: &Work, url: &str, up: &Upstream) -> Gate {
    let upstream = up.url();
    Gate::start(
        w,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "localhost.crt",
            "--key",
            "localhost.key",
            "--client-ca",
            "ca/ca.crt",
            "--upstream",
            &upstream,
            "--inventory",
            url,
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
}

/// The HTTP status device `name` gets from gateway `g`.
fn status(w: &Work, g: &Gate, name: &str) -> u16 {
    let crt = format!("{name}.crt");
    let key = format!("{name}.key");
    let u = g.url("/");
    curl(
        w,
        &["--cacert", "ca/ca.crt", "--cert", &crt, "--key", &key, &u],
    )
    .0
}

fn admin_addr(g: &mut Gate) -> String {
    let line = g.proc.wait_for("admin listener on http://");
    line.split_whitespace().next().expect("addr").to_string()
}

/// Ten devices are revoked one after the other while a gateway reads an inventory of
/// 100,000 devices from PostgreSQL. The gateway subscribes to changes before it reads, so
/// none of the revocations is lost: once the read is done, every one of the ten devices is
/// refused (before, a revocation committed during the read stayed unseen for a minute).
#[test]
fn revocations_made_while_a_gateway_reads_its_inventory_are_not_missed() {
    let db = Db::postgres();
    let Db::Postgres(url) = &db else {
        unreachable!()
    };
    let w = Work::new();
    test_ca(&w, &db);
    fleet_server_cert(&w, &db);
    let ids: Vec<String> = (0..10)
        .map(|i| enroll_device(&w, "ca", Some(url), &format!("d{i}"), &[]).0)
        .collect();
    let fill = w.cmd(
        "psql",
        &[
            url,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            "INSERT INTO devices (id, status, tags, first_seen, created_by, revision) \
             SELECT 'filler' || g || '.d.example.local', 'active', '[]', 0, 'test', 1 \
             FROM generate_series(1, 100000) g",
        ],
    );
    assert_eq!(fill.code, 0, "{}", fill.stderr);
    let up = Upstream::start(&w);
    let mut g = gateway(&w, url, &up);
    for id in &ids {
        w.mg(&["devices", "revoke", id, "--dir", "ca", "--database", url])
            .ok();
    }
    let loaded = g.proc.wait_for("devices at revision");
    eprintln!("the gateway read {loaded}: {}", g.proc.stderr());
    let revoked_all = Instant::now();
    let deadline = revoked_all + Duration::from_secs(10);
    for (i, id) in ids.iter().enumerate() {
        loop {
            let code = status(&w, &g, &format!("d{i}"));
            if code == 403 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is still let in (HTTP {code}) {:?} after the gateway read the inventory: its revocation was missed",
                revoked_all.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "all ten refused {:?} after the read completed",
        revoked_all.elapsed()
    );
}

/// PostgreSQL stops under two gateways: both say `degraded` on `/healthz` and
/// `mtlsgate_inventory_up 0`, and log it once each. Once it is back, a revocation made a
/// second later refuses the device at both gateways at once (before, the gateways noticed
/// nothing while it was away and took 9–21 s to see the next change).
#[test]
fn after_a_postgresql_restart_a_revocation_reaches_both_gateways_at_once() {
    let pg = OwnPostgres::start();
    let url = pg.url();
    let db = Db::Postgres(url.clone());
    let w = Work::new();
    test_ca(&w, &db);
    fleet_server_cert(&w, &db);
    let (id, _) = enroll_device(&w, "ca", Some(&url), "dev", &[]);
    let up = Upstream::start(&w);
    let mut gates = [gateway(&w, &url, &up), gateway(&w, &url, &up)];
    let admins: Vec<String> = gates.iter_mut().map(admin_addr).collect();
    for g in &gates {
        crate::util::eventually("the gateway to let the device in", || {
            status(&w, g, "dev") == 200
        });
    }

    pg.stop();
    for a in &admins {
        crate::util::eventually("the gateway to say it is degraded", || {
            let (code, h) = curl(&w, &[&format!("http://{a}/healthz")]);
            code == 200 && h.starts_with("ok, degraded: the device inventory (")
        });
        let (_, m) = curl(&w, &[&format!("http://{a}/metrics")]);
        assert!(m.contains("mtlsgate_inventory_up 0"), "{m}");
    }
    // The last known state keeps serving.
    for g in &gates {
        assert_eq!(status(&w, g, "dev"), 200);
    }
    std::thread::sleep(Duration::from_secs(3));
    for g in &gates {
        let log = g.proc.stderr();
        assert_eq!(
            log.matches("became unreachable").count()
                + log.matches("cannot read the device inventory").count(),
            1,
            "the outage is logged once: {log}"
        );
    }

    pg.start_again();
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    w.mg(&["devices", "revoke", &id, "--dir", "ca", "--database", &url])
        .ok();
    let deadline = asked + Duration::from_secs(5);
    for (i, g) in gates.iter().enumerate() {
        while status(&w, g, "dev") != 403 {
            assert!(
                Instant::now() < deadline,
                "gateway {i} still lets the revoked device in {:?} after the command",
                asked.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "both gateways refuse the device {:?} after the revoke command started",
        asked.elapsed()
    );
    for a in &admins {
        let (code, h) = curl(&w, &[&format!("http://{a}/healthz")]);
        assert_eq!((code, h.as_str()), (200, "ok\n"));
    }
}
