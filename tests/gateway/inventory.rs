//! The gateway's inventory policy (`--inventory CA_DIR`, SQLite): only devices the
//! inventory says are active pass; a revocation reaches the gateway within its poll
//! interval and closes the device's kept-alive connection; tags narrow a route. (The
//! PostgreSQL flow with two gateways and the agent is in `tests/fleet/revoke.rs`.)

use crate::util::*;

fn gate(w: &Work, up: &Upstream, extra: &[&str]) -> Gate {
    let mut a = vec!["--inventory", "ca", "--inventory-poll", "200ms"];
    a.extend_from_slice(extra);
    serve(w, up, &a)
}

#[test]
fn only_active_devices_pass_and_a_revocation_closes_a_kept_alive_connection() {
    let w = Work::new();
    pki(&w);
    let (id, _serial) = enroll_device(&w, "ca", None, "edge", &[]);
    let up = Upstream::start(&w);
    let g = gate(&w, &up, &[]);
    eventually("the inventory to be read", || {
        curl_as(&w, "edge.crt", "edge.key", &g.url("/")).0 == 200
    });
    // dev1 holds a certificate from this CA, but never enrolled: not in the inventory.
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("device dev1.d.example.local is not in the inventory"),
        "{body}"
    );

    // A kept-alive connection of the enrolled device, then its revocation.
    let (held, status) = KeptAlive::open(&w, g.port, "ca.crt", "edge.crt", "edge.key");
    assert_eq!(status, "200");
    w.mg(&["devices", "revoke", &id, "--dir", "ca"]).ok();
    assert!(held.closed(), "the kept-alive connection stayed open");
    let (code, body) = curl_as(&w, "edge.crt", "edge.key", &g.url("/"));
    assert!(code == 403 || code == 400, "{code}: {body}");
    assert!(body.contains("revoked"), "{body}");
    assert!(
        g.proc.stderr().contains("closing the connection: "),
        "{}",
        g.proc.stderr()
    );
}

#[test]
fn tags_narrow_a_route_and_the_metrics_show_the_inventory() {
    let w = Work::new();
    pki(&w);
    let (lab, _) = enroll_device(&w, "ca", None, "lab", &["--tag", "lab"]);
    let (_office, _) = enroll_device(&w, "ca", None, "office", &["--tag", "office"]);
    let up = Upstream::start(&w);
    let mut g = gate(
        &w,
        &up,
        &["--allow-tag", "lab", "--admin-listen", "127.0.0.1:0"],
    );
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    eventually("the lab device to pass", || {
        curl_as(&w, "lab.crt", "lab.key", &g.url("/")).0 == 200
    });
    let (code, body) = curl_as(&w, "office.crt", "office.key", &g.url("/"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("carries none of the tags lab"), "{body}");
    let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    assert!(m.contains("mtlsgate_inventory_up 1"), "{m}");
    assert!(m.contains("mtlsgate_inventory_devices 2"), "{m}");
    let (_, h) = curl(&w, &[&format!("http://{admin}/healthz")]);
    assert_eq!(h, "ok\n");
    // Untagged, the lab device is refused at its next request.
    w.mg(&["devices", "tag", &lab, "--remove", "lab", "--dir", "ca"])
        .ok();
    eventually("the lab device to be refused", || {
        curl_as(&w, "lab.crt", "lab.key", &g.url("/")).0 == 403
    });
    // The change was applied: its commit-to-apply delay is counted, and the view's lag is
    // reported.
    let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    };
    assert!(
        value("mtlsgate_inventory_apply_delay_seconds_count") >= 1.0,
        "{m}"
    );
    assert!(
        value("mtlsgate_inventory_apply_delay_max_seconds") >= 0.0,
        "{m}"
    );
    let lag = value("mtlsgate_inventory_lag_seconds");
    assert!((0.0..60.0).contains(&lag), "{m}");
    assert_eq!(value("mtlsgate_inventory_loaded"), 1.0, "{m}");
}

#[test]
fn a_gateway_started_without_its_inventory_answers_503_and_says_why() {
    let w = Work::new();
    pki(&w);
    let (_id, _) = enroll_device(&w, "ca", None, "edge", &[]);
    // Another CA's directory: the inventory does not belong to the CA the gateway trusts.
    w.mg(&["ca", "init", "--dir", "other"]).ok();
    let up = Upstream::start(&w);
    let mut g = serve(
        &w,
        &up,
        &["--inventory", "other", "--admin-listen", "127.0.0.1:0"],
    );
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    g.proc.wait_for("cannot read the device inventory");
    // Nothing has refused the device: the gateway cannot decide yet (503, not 403).
    let (code, body) = curl_as(&w, "edge.crt", "edge.key", &g.url("/"));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("has not been read yet"), "{body}");
    let (code, h) = curl(&w, &[&format!("http://{admin}/healthz")]);
    assert_eq!(code, 503, "{h}");
    assert!(
        h.starts_with("starting: the device inventory") && h.contains("does not belong to a CA"),
        "{h}"
    );
    let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    assert!(m.contains("mtlsgate_inventory_up 0"), "{m}");
}

/// A device enrolled after the gateway last read the inventory is let in at its first
/// request: the gateway reads the inventory once more before it refuses a device it does
/// not know (here the poll is ten minutes, so only that read can find it). A device that
/// never enrolled is still refused, and says why.
#[test]
fn a_device_enrolled_a_moment_ago_is_let_in_at_its_first_request() {
    let w = Work::new();
    pki(&w);
    let _ = enroll_device(&w, "ca", None, "edge", &[]);
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--inventory", "ca", "--inventory-poll", "10m"]);
    eventually("the inventory to be read", || {
        curl_as(&w, "edge.crt", "edge.key", &g.url("/")).0 == 200
    });
    let (id, _) = enroll_device(&w, "ca", None, "late", &[]);
    let (code, body) = curl_as(&w, "late.crt", "late.key", &g.url("/"));
    assert_eq!(code, 200, "{id}: {body}");
    for _ in 0..2 {
        let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("device dev1.d.example.local is not in the inventory"),
            "{body}"
        );
    }
}

/// An active device is never refused while the gateway reads a large inventory: requests
/// that arrive before the first read completes are answered 503 with `Retry-After` (the
/// gateway cannot tell yet), `/healthz` says `starting` with 503, and once the read is
/// done the device gets 200. (150,000 devices are written straight into the SQLite file so
/// that the read takes long enough to be met.)
#[test]
fn an_active_device_gets_503_not_403_while_a_large_inventory_is_read() {
    let w = Work::new();
    pki(&w);
    let _ = enroll_device(&w, "ca", None, "edge", &[]);
    let fill = w.cmd(
        "python3",
        &[
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect('ca/inventory.db')\n\
             db.executemany(\"INSERT INTO devices (id, status, tags, first_seen, created_by, revision) VALUES (?, 'active', '[]', 0, 'test', 1)\", ((f'filler{i}.d.example.local',) for i in range(150000)))\n\
             db.commit()\n",
        ],
    );
    assert_eq!(fill.code, 0, "{}", fill.stderr);
    let up = Upstream::start(&w);
    let mut g = gate(&w, &up, &["--admin-listen", "127.0.0.1:0"]);
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    let health = w
        .cmd(
            "curl",
            &[
                "-sS",
                "-i",
                "--max-time",
                "20",
                &format!("http://{admin}/healthz"),
            ],
        )
        .stdout;
    let mut answers = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = w
            .cmd(
                "curl",
                &[
                    "-sS",
                    "-i",
                    "--max-time",
                    "20",
                    "--cacert",
                    "ca.crt",
                    "--cert",
                    "edge.crt",
                    "--key",
                    "edge.key",
                    &g.url("/"),
                ],
            )
            .stdout;
        let done = status_of(&out) == Some(200);
        answers.push(out);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answers:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let waited: Vec<&String> = answers
        .iter()
        .filter(|a| status_of(a) != Some(200))
        .collect();
    for a in &waited {
        assert_eq!(status_of(a), Some(503), "{a}");
        let lower = a.to_ascii_lowercase();
        assert!(lower.contains("retry-after: 1"), "{a}");
        assert!(
            a.contains("the gateway is starting: the device inventory (")
                && a.contains("has not been read yet"),
            "{a}"
        );
    }
    assert!(
        !waited.is_empty(),
        "the first request came after the inventory was read, so this test saw nothing: {health}"
    );
    if status_of(&health) == Some(503) {
        assert!(
            health.contains("starting: the device inventory ("),
            "{health}"
        );
    } else {
        assert_eq!(status_of(&health), Some(200), "{health}");
    }
    g.proc.wait_for("150001 devices at revision");
}

/// The status of `curl -i` output (`HTTP/1.1 200 OK` or `HTTP/2 200`).
fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}
