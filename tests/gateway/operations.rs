//! Operating the gateway: reloads, broken configurations, upstream failures, graceful
//! shutdown, metrics, configuration errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;

#[test]
fn reload_under_load_loses_no_request() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--allow-file", "whitelist.txt"]);
    let old_serial = served_serial(&w, g.port);
    let stop = Arc::new(AtomicBool::new(false));
    let root = w.root().to_path_buf();
    let port = g.port;
    let loader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                results.push(status_as_dev1(&root, &format!("https://localhost:{port}/")));
            }
            results
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write_atomic(
        &w,
        "whitelist.txt",
        "dev1.d.example.local\ndev2.d.example.local\n",
    );
    w.mg(&[
        "cert",
        "issue",
        "server",
        "localhost",
        "--dns",
        "localhost",
        "--dir",
        "ca",
        "--out",
        ".",
        "--force",
    ])
    .ok();
    let new_serial = openssl_field(&w, "localhost.crt", "-serial");
    assert_ne!(format!("serial={new_serial}"), old_serial);
    eventually("dev2 to be allowed", || {
        get_as(&w, &g, "dev2", "/", &[]).0 == 200
    });
    eventually("the new server certificate", || {
        served_serial(&w, g.port) == format!("serial={new_serial}")
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let results = loader.join().expect("loader");
    assert!(results.len() >= 5, "too few requests: {}", results.len());
    assert!(
        results.iter().all(|r| r == "200"),
        "a request failed during reload: {results:?}"
    );
}

#[test]
fn broken_config_on_sighup_keeps_the_old_state() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let good = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\n\n[[route]]\nupstream = \"{}\"\n",
        up.url()
    );
    w.write("gate.toml", &good);
    let mut g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    write_atomic(
        &w,
        "gate.toml",
        &good.replace("[[route]]", "[[route]]\nallow_device_ids = \"oops\""),
    );
    g.proc
        .wait_for("reload failed, keeping the previous configuration: ");
    assert!(
        g.proc
            .stderr()
            .contains("gate.toml:8: allow_device_ids: invalid type"),
        "{}",
        g.proc.stderr()
    );
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
    write_atomic(
        &w,
        "gate.toml",
        &good.replace(
            "[[route]]",
            "[[route]]\nallow_device_ids = [\"dev2.d.example.local\"]",
        ),
    );
    g.proc.signal("HUP");
    eventually("the fixed config", || {
        get_as(&w, &g, "dev1", "/", &[]).0 == 403
    });
    assert_eq!(get_as(&w, &g, "dev2", "/", &[]).0, 200);
}

#[test]
fn upstream_down_is_502_and_slow_is_504() {
    let w = Work::new();
    pki(&w);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").port();
    drop(closed);
    let up = Upstream::start(&w);
    w.write(
        "gate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\n\n[timeouts]\nupstream_response = \"1s\"\n\n[[route]]\nprefix = \"/dead/\"\nupstream = \"http://127.0.0.1:{dead}\"\n\n[[route]]\nupstream = \"{}\"\n",
            up.url()
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    let (code, body) = get_as(&w, &g, "dev1", "/dead/x", &[]);
    assert_eq!(code, 502);
    assert!(
        body.contains(&format!("the upstream 127.0.0.1:{dead} cannot be reached")),
        "{body}"
    );
    let (code, body) = get_as(&w, &g, "dev1", "/slow?s=3", &[]);
    assert_eq!(code, 504);
    assert!(body.contains("did not answer within 1s"), "{body}");
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let mut g = serve(&w, &up, &[]);
    let root = w.root().to_path_buf();
    let url = g.url("/slow?s=2");
    let inflight = std::thread::spawn(move || status_as_dev1(&root, &url));
    // Let the request reach the upstream, which holds it for 2 s.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(g.proc.stop(), 0, "{}", g.proc.stderr());
    assert_eq!(inflight.join().expect("join"), "200");
    assert!(
        g.proc.stderr().contains("draining 1 connection"),
        "{}",
        g.proc.stderr()
    );
}

#[test]
fn metrics_and_healthz_on_the_loopback_admin_listener() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let url = up.url();
    let refused = w
        .mg(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "localhost.crt",
            "--key",
            "localhost.key",
            "--client-ca",
            "ca.crt",
            "--upstream",
            &url,
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .fails();
    assert!(refused.contains("must be a loopback address"), "{refused}");
    let mut g = serve(&w, &up, &["--admin-listen", "127.0.0.1:0"]);
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
    let gurl = g.url("/");
    assert_eq!(curl(&w, &["--cacert", "ca.crt", &gurl]).0, 400);
    let (code, body) = curl(&w, &[&format!("http://{admin}/healthz")]);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    assert_eq!(code, 200);
    for line in [
        "mtlsgate_handshakes_total{kind=\"full\"} 2",
        "mtlsgate_verify_failures_total{reason=\"no_certificate\"} 1",
        "mtlsgate_responses_total{class=\"2xx\"} 1",
        "mtlsgate_responses_total{class=\"4xx\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line}:\n{m}");
    }
    assert!(
        m.contains("mtlsgate_server_certificate_days_remaining 89.9")
            || m.contains("mtlsgate_server_certificate_days_remaining 90.0"),
        "{m}"
    );
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    let w = Work::new();
    pki(&w);
    w.write(
        "gate.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\nverify_client = \"sometimes\"\n\n[[route]]\nupstream = \"http://127.0.0.1:1\"\n",
    );
    let e = w.mg(&["serve", "--config", "gate.toml"]).fails();
    assert!(
        e.contains("gate.toml:6: server.verify_client: `sometimes` is not a mode; use require, optional, optional_no_ca or off"),
        "{e}"
    );
    let e = w
        .mg(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "missing.crt",
            "--key",
            "localhost.key",
            "--client-ca",
            "ca.crt",
            "--upstream",
            "http://127.0.0.1:1",
        ])
        .fails();
    assert!(e.contains("missing.crt"), "{e}");
    let e = w
        .mg(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "localhost.crt",
            "--key",
            "dev1.key",
            "--client-ca",
            "ca.crt",
            "--upstream",
            "http://127.0.0.1:1",
        ])
        .fails();
    assert!(e.contains("localhost.crt"), "{e}");
}
