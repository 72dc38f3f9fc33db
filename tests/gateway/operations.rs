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

/// Files changing in the watched directories while the gateway starts (a SQLite inventory
/// written beside the CA bundle, say) once deadlocked it before it listened: notify's event
/// thread, running the change callback, waited for a lock that the start held while it
/// asked that same thread to watch the next directory (about one start in three hung).
/// Eight starts, with both watched directories busy.
#[test]
fn the_gateway_starts_while_its_watched_directories_keep_changing() {
    let w = Work::new();
    pki(&w);
    std::fs::create_dir_all(w.path("lists")).expect("mkdir");
    w.write("lists/whitelist.txt", "dev1.d.example.local\n");
    let up = Upstream::start(&w);
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let (stop, root) = (stop.clone(), w.root().to_path_buf());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::write(root.join("noise"), i.to_string());
                let _ = std::fs::write(root.join("lists/noise"), i.to_string());
                i += 1;
            }
        })
    };
    for _ in 0..8 {
        let g = serve(&w, &up, &["--allow-file", "lists/whitelist.txt"]);
        let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
        assert_eq!(code, 200, "{body}");
    }
    stop.store(true, Ordering::Relaxed);
    let _ = noise.join();
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
    // The timer of a finished request is kept for the connection's next request and moved
    // to that one's deadline: a later request on the same connection still times out, and
    // the request after a timeout (whose timer has fired) is not refused at once.
    for proto in ["--http1.1", "--http2"] {
        let mut a = as_dev("dev1");
        for x in ["-sS", "--max-time", "20", proto] {
            a.push(x.to_string());
        }
        a.push("-w".into());
        a.push("%{http_code} %{num_connects}\n".into());
        for path in ["/", "/slow?s=3", "/", "/slow?s=3"] {
            a.push("-o".into());
            a.push("/dev/null".into());
            a.push(g.url(path));
        }
        let r = w.cmd("curl", &s(&a));
        let got: Vec<&str> = r.stdout.lines().collect();
        // One connection: the first request opened it, the others reused it.
        assert_eq!(
            got,
            ["200 1", "504 0", "200 0", "504 0"],
            "{proto}: {}",
            r.stderr
        );
    }
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

/// `serve --check` (as `nginx -t`): a good configuration is reported valid with what would
/// run, and nothing listens; a bad one — a syntax error, a missing file, a key that does
/// not match its certificate — exits 1 naming what is wrong, and nothing listens either.
#[test]
fn serve_check_reads_everything_and_starts_nothing() {
    let w = Work::new();
    pki(&w);
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    w.write(
        "gate.toml",
        &format!("[server]\nlisten = \"{listen}\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\n\n[[route]]\nupstream = \"http://127.0.0.1:1\"\n"),
    );
    let out = w.mg(&["serve", "--config", "gate.toml", "--check"]).ok();
    assert_eq!(
        out.trim(),
        format!("gate.toml: the configuration is valid: listen {listen}, 1 route(s), 0 tunnel(s), 1 server block(s); every file it names was read")
    );
    // It returned without serving: the port is still free.
    assert!(std::net::TcpListener::bind(&listen).is_ok());
    w.write(
        "bad.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\nverify_client = \"sometimes\"\n\n[[route]]\nupstream = \"http://127.0.0.1:1\"\n",
    );
    let e = w.mg(&["serve", "--config", "bad.toml", "--check"]).fails();
    assert!(
        e.contains("bad.toml: the configuration is not valid: bad.toml:6: server.verify_client: `sometimes` is not a mode"),
        "{e}"
    );
    let flags = |key: &str| {
        w.mg(&[
            "serve",
            "--listen",
            &listen,
            "--cert",
            "localhost.crt",
            "--key",
            key,
            "--client-ca",
            "ca.crt",
            "--upstream",
            "http://127.0.0.1:1",
            "--check",
        ])
    };
    let e = flags("dev1.key").fails();
    assert!(
        e.contains("the flags: the configuration is not valid") && e.contains("localhost.crt"),
        "{e}"
    );
    let e = flags("missing.key").fails();
    assert!(e.contains("missing.key"), "{e}");
    assert!(std::net::TcpListener::bind(&listen).is_ok());
}

/// A reload applies every setting it can — each change is named in the log and the ones
/// that can be seen from outside are checked — and refuses, loudly, the three that need a
/// restart.
#[test]
fn a_reload_applies_every_setting_or_says_it_needs_a_restart() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\n\n[[route]]\nupstream = \"{}\"\n",
        up.url()
    );
    w.write("gate.toml", &base);
    let mut g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
    let old_serial = served_serial(&w, g.port);
    // What the new configuration refers to: an encrypted copy of a new server key, a
    // second CA file, a CRL, a pinned certificate.
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
        "new",
        "--force",
    ])
    .ok();
    w.write("pass.txt", "reload-secret\n");
    w.cmd(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "new/localhost.key",
            "-out",
            "new/enc.key",
            "-passout",
            "file:pass.txt",
        ],
    )
    .ok();
    w.mg(&["ca", "crl", "--dir", "ca", "--out", "crl.pem"]).ok();
    std::fs::copy(w.path("ca.crt"), w.path("ca2.crt")).expect("copy");
    let dev2_fp = openssl_sha256(&w, "dev2.crt");
    let next = format!(
        r#"[server]
listen = "127.0.0.1:1"
cert = "new/localhost.crt"
key = "new/enc.key"
key_passphrase_file = "pass.txt"
client_ca = ["ca.crt", "ca2.crt"]
verify_client = "optional"
verify_depth = 3
crl = "crl.pem"
pin_sha256 = ["{fp}"]
pin_cert = "dev2.crt"
reject_at_handshake = true
verify_cache = false
resumption = false
access_log = "json"
max_header_bytes = 2048
admin_listen = "127.0.0.1:0"
threads = 1

[timeouts]
handshake = "3s"
header_read = "3s"
idle = "4s"
upstream_connect = "2s"
upstream_response = "1s"
drain = "5s"

[[route]]
prefix = "/api/"
upstream = "{u}/app/"
allow_device_ids = ["dev1.d.example.local"]
allow_spiffe_ids = ["spiffe://example.org/x"]
allow_ous = ["Fleet"]
allow_fingerprints = ["{fp}"]
allow_file = "whitelist.txt"
headers = {{ "X-Device" = "$client_device_id" }}
default_headers = false
xfcc = true
"#,
        fp = hex_lower(&dev2_fp),
        u = up.url()
    );
    w.write("whitelist.txt", "dev1.d.example.local\n");
    write_atomic(&w, "gate.toml", &next);
    g.proc.signal("HUP");
    let applied = g.proc.wait_for("reload applies changed settings: ");
    for key in [
        "server.cert",
        "server.key",
        "server.key_passphrase_file",
        "server.client_ca",
        "server.verify_client",
        "server.verify_depth",
        "server.crl",
        "server.pin_sha256",
        "server.pin_cert",
        "server.reject_at_handshake",
        "server.verify_cache",
        "server.resumption",
        "server.access_log",
        "server.max_header_bytes",
        "timeouts.handshake",
        "timeouts.header_read",
        "timeouts.idle",
        "timeouts.upstream_connect",
        "timeouts.upstream_response",
        "timeouts.drain",
        "route[0].prefix",
        "route[0].upstream",
        "route[0].allow_file",
        "route[0].allow_device_ids",
        "route[0].allow_spiffe_ids",
        "route[0].allow_ous",
        "route[0].allow_fingerprints",
        "route[0].headers",
        "route[0].default_headers",
        "route[0].xfcc",
    ] {
        assert!(applied.contains(key), "{key} not applied: {applied}");
    }
    for key in ["server.listen", "server.admin_listen", "server.threads"] {
        assert!(!applied.contains(key), "{key} applied: {applied}");
        let err = g.proc.stderr();
        assert!(
            err.contains(&format!("{key} changed to")) && err.contains("needs a restart"),
            "{key} not refused loudly: {err}"
        );
    }
    g.proc.wait_for("reloaded in");
    // Seen from outside: the new certificate, the rewritten path, the route's headers
    // only (no default ones), XFCC, the JSON access log, the 1 s upstream timeout and the
    // header size limit.
    assert_ne!(served_serial(&w, g.port), old_serial);
    let (code, body) = get_as(&w, &g, "dev1", "/api/x", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"path\": \"/app/x\""), "{body}");
    assert_eq!(header(&body, "x-device"), "dev1.d.example.local");
    assert!(
        header_values(&body, "ssl-client-verify").is_empty(),
        "{body}"
    );
    assert!(!header(&body, "x-forwarded-client-cert").is_empty());
    let (code, _) = get_as(&w, &g, "dev1", "/api/slow?s=2", &[]);
    assert_eq!(code, 504);
    let big = format!("X-Big: {}", "a".repeat(3000));
    let (code, _) = get_as(&w, &g, "dev1", "/api/x", &["-H", &big]);
    assert_eq!(code, 431);
    let last = g
        .access_log_with("\"status\":431")
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with('{') && last.contains("\"status\":"),
        "{last}"
    );
    // The old address still serves: the listen change waits for a restart.
    assert_eq!(get_as(&w, &g, "dev2", "/api/x", &[]).0, 200);
}

/// `inventory_poll` is bound at start-up (the inventory's sync task reads at the interval
/// it started with): a reload that changes it says so, as for the other restart-only
/// settings, and the gateway goes on reading at the running interval.
#[test]
fn a_reload_that_changes_inventory_poll_says_it_needs_a_restart() {
    let w = Work::new();
    pki(&w);
    let (id, _serial) = enroll_device(&w, "ca", None, "edge", &[]);
    let up = Upstream::start(&w);
    let config = |poll: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\ninventory = \"ca\"\ninventory_poll = \"{poll}\"\n\n[[route]]\nupstream = \"{}\"\nallow = {{ inventory = true }}\n",
            up.url()
        )
    };
    w.write("gate.toml", &config("200ms"));
    let mut g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    eventually("the inventory to be read", || {
        curl_as(&w, "edge.crt", "edge.key", &g.url("/")).0 == 200
    });
    write_atomic(&w, "gate.toml", &config("30s"));
    g.proc.signal("HUP");
    let kept = g.proc.wait_for("server.inventory_poll changed to ");
    assert_eq!(kept, "30s but needs a restart; still 200ms");
    g.proc.wait_for("reloaded in");
    assert!(
        !g.proc.stderr().contains("reload applies changed settings"),
        "{}",
        g.proc.stderr()
    );
    // Still read every 200 ms: a revocation reaches the gateway at once, not in 30 s.
    w.mg(&["devices", "revoke", &id, "--dir", "ca"]).ok();
    eventually("the revocation to reach the gateway", || {
        curl_as(&w, "edge.crt", "edge.key", &g.url("/")).0 != 200
    });
}

#[test]
fn an_access_log_line_is_written_within_the_flush_interval_while_the_gateway_idles() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    // The default: buffered, written at least every second. No further request fills the
    // buffer, so only the flush interval can write this line.
    let g = serve(&w, &up, &[]);
    assert_eq!(get_as(&w, &g, "dev1", "/idle-flush", &[]).0, 200);
    let log = g.access_log_with("\"GET /idle-flush\"");
    assert!(
        log.contains("\"GET /idle-flush\" route=/ status=200"),
        "{log}"
    );
}

#[test]
fn sigterm_writes_every_buffered_access_log_line() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let mut g = serve(&w, &up, &["--access-log-flush", "30s"]);
    // A line waits in the buffer (up to 30 s here)…
    assert_eq!(get_as(&w, &g, "dev1", "/first", &[]).0, 200);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !g.access_log().contains("\"GET /first\""),
        "written before the flush interval: {}",
        g.access_log()
    );
    // …and 2,000 more on 16 kept-alive connections, most of them written as the buffer
    // fills; SIGTERM writes the rest.
    let url = g.url("/n[1-2000]");
    let mut a = as_dev("dev1");
    for x in [
        "-sS",
        "--max-time",
        "300",
        "--parallel",
        "--parallel-max",
        "16",
        "-w",
        "\n=%{http_code}\n",
        &url,
    ] {
        a.push(x.to_string());
    }
    let out = w.cmd("curl", &s(&a)).ok();
    assert_eq!(out.lines().filter(|l| *l == "=200").count(), 2000);
    assert_eq!(g.proc.stop(), 0, "{}", g.proc.stderr());
    let log = g.access_log();
    assert!(log.contains("\"GET /first\" route=/ status=200"), "{log}");
    let served = log
        .lines()
        .filter(|l| l.contains("\"GET /n") && l.contains("status=200"))
        .count();
    assert_eq!(served, 2000, "lines lost at SIGTERM");
}
