//! The gateway as a TLS client: `https://` upstreams that demand client certificates (a
//! real nginx with `ssl_verify_client on`), reached through a route and through the
//! plain-HTTP egress listener (the upstream-certificates guide's nginx on 8080 in front of an mTLS API on 8443),
//! failures that say why, and client certificates replaced while requests flow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::util::*;

/// The mTLS API: nginx requiring a client certificate from our CA, answering with what it
/// saw of it.
fn mtls_api(w: &Work) -> Nginx {
    Nginx::start(
        w,
        "ssl_certificate {root}/localhost.crt;\n    ssl_certificate_key {root}/localhost.key;\n    ssl_client_certificate {root}/ca.crt;\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n    location / { default_type text/plain; return 200 \"$ssl_client_verify|$ssl_client_s_dn|$ssl_client_serial|$request_uri\\n\"; }",
    )
}

/// `mtlsgate serve` as an egress listener (no --cert/--key) in front of `upstream`.
fn egress(w: &Work, upstream: &str, extra: &[&str]) -> Gate {
    let mut a = vec!["serve", "--listen", "127.0.0.1:0", "--upstream", upstream];
    a.extend_from_slice(extra);
    Gate::start(w, &a)
}

fn serial_of(w: &Work, cert: &str) -> String {
    openssl_field(w, cert, "-serial")
}

#[test]
fn the_egress_listener_reaches_an_mtls_api_as_the_guides_curl_does() {
    let w = Work::new();
    pki(&w);
    let api = mtls_api(&w);
    let g = egress(
        &w,
        &format!("https://localhost:{}", api.port),
        &[
            "--upstream-ca",
            "ca.crt",
            "--upstream-cert",
            "dev1.crt",
            "--upstream-key",
            "dev1.key",
        ],
    );
    // curl -v -s "http://127.0.0.1:8080/hello/world"
    let (code, body) = curl(
        &w,
        &[
            "-v",
            "-s",
            &format!("http://127.0.0.1:{}/hello/world", g.port),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!(
            "SUCCESS|CN=dev1.d.example.local|{}|/hello/world\n",
            serial_of(&w, "dev1.crt")
        )
    );
    // Without a client certificate the API refuses; nginx's own page passes through.
    let g2 = egress(
        &w,
        &format!("https://localhost:{}", api.port),
        &["--upstream-ca", "ca.crt"],
    );
    let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/", g2.port)]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );
}

#[test]
fn an_https_route_presents_the_gateways_client_certificate() {
    let w = Work::new();
    pki(&w);
    w.mg(&[
        "cert",
        "issue",
        "client",
        "gw",
        "--device-id",
        "gateway",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    let api = mtls_api(&w);
    let up = Upstream::start(&w);
    w.write(
        "gate.toml",
        &format!(
            r#"[server]
listen = "127.0.0.1:0"
cert = "localhost.crt"
key = "localhost.key"
client_ca = "ca.crt"

[[route]]
prefix = "/api/"
upstream = "https://localhost:{api}"
upstream_ca = "ca.crt"
upstream_cert = "gw.crt"
upstream_key = "gw.key"

[[route]]
upstream = "{plain}"
"#,
            api = api.port,
            plain = up.url()
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    let (code, body) = get_as(&w, &g, "dev1", "/api/x?y=1", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("SUCCESS|CN=gateway.d.example.local|"),
        "{body}"
    );
    assert!(body.ends_with("|/api/x?y=1\n"), "{body}");
    // Over HTTP/2 from the client as well; the plain route still works.
    let (code, body) = get_as(&w, &g, "dev1", "/api/h2", &["--http2"]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
}

/// `openssl s_server -Verify 1`: an mTLS server that refuses a handshake without an
/// acceptable client certificate (where nginx completes it and answers with a 400 page).
fn strict_tls_server(w: &Work) -> (Proc, u16) {
    let port = free_port();
    let p = port.to_string();
    let proc = Proc::spawn(
        w.root(),
        "openssl",
        &[
            "s_server",
            "-accept",
            &p,
            "-cert",
            "localhost.crt",
            "-key",
            "localhost.key",
            "-CAfile",
            "ca.crt",
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
            "-quiet",
        ],
        &w.path(&format!("s_server-{port}.out")),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (proc, port)
}

#[test]
fn upstream_tls_failures_are_502_saying_why() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Elsewhere", "x");
    let api = mtls_api(&w);
    let (_s_server, strict) = strict_tls_server(&w);
    let nginx = format!("https://localhost:{}", api.port);
    let strict = format!("https://localhost:{strict}");
    let cases: [(&str, &[&str], &str); 4] = [
        (
            &nginx,
            &[
                "--upstream-ca",
                "other/ca.crt",
                "--upstream-cert",
                "dev1.crt",
                "--upstream-key",
                "dev1.key",
            ],
            "not signed by a CA it trusts (unknown issuer)",
        ),
        (
            &nginx,
            &[
                "--upstream-ca",
                "ca.crt",
                "--upstream-cert",
                "dev1.crt",
                "--upstream-key",
                "dev1.key",
                "--upstream-server-name",
                "api.example.org",
            ],
            "not valid for the name api.example.org (name mismatch)",
        ),
        (
            &strict,
            &["--upstream-ca", "ca.crt"],
            "the upstream requires a client certificate and none is configured",
        ),
        (
            &strict,
            &[
                "--upstream-ca",
                "ca.crt",
                "--upstream-cert",
                "o/x.crt",
                "--upstream-key",
                "o/x.key",
            ],
            "the upstream refused our client certificate",
        ),
    ];
    for (upstream, flags, why) in cases {
        let mut g = egress(&w, upstream, flags);
        let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/", g.port)]);
        assert_eq!(code, 502, "{why}: {body}");
        assert!(body.contains(why), "expected {why:?} in {body}");
        // The log line may reach the test's stderr reader after curl has its answer.
        g.proc.wait_for(why);
    }
    // The strict server accepts the right certificate.
    let g = egress(
        &w,
        &strict,
        &[
            "--upstream-ca",
            "ca.crt",
            "--upstream-cert",
            "dev1.crt",
            "--upstream-key",
            "dev1.key",
        ],
    );
    let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/", g.port)]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_replaced_client_certificate_is_used_for_new_connections_without_failing_requests() {
    let w = Work::new();
    pki(&w);
    let api = mtls_api(&w);
    let g = egress(
        &w,
        &format!("https://localhost:{}", api.port),
        &[
            "--upstream-ca",
            "ca.crt",
            "--upstream-cert",
            "dev1.crt",
            "--upstream-key",
            "dev1.key",
        ],
    );
    let url = format!("http://127.0.0.1:{}/", g.port);
    let old = serial_of(&w, "dev1.crt");
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (stop, root, url) = (stop.clone(), w.root().to_path_buf(), url.clone());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let o = std::process::Command::new("curl")
                    .args(["-sS", "--max-time", "10", &url])
                    .current_dir(&root)
                    .output()
                    .expect("curl");
                out.push(String::from_utf8_lossy(&o.stdout).into_owned());
            }
            out
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Renewed in place, as the agent does: a new key and certificate for the same device.
    w.mg(&[
        "cert",
        "issue",
        "client",
        "dev1",
        "--device-id",
        "dev1",
        "--dir",
        "ca",
        "--out",
        ".",
        "--force",
    ])
    .ok();
    let new = serial_of(&w, "dev1.crt");
    assert_ne!(old, new);
    eventually("the upstream to see the new serial", || {
        let (_, body) = curl(&w, &[&url]);
        body.contains(&format!("|{new}|"))
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let results = loader.join().expect("loader");
    assert!(results.len() >= 5, "too few requests: {}", results.len());
    for r in &results {
        assert!(
            r.starts_with("SUCCESS|CN=dev1.d.example.local|"),
            "a request failed: {r:?}"
        );
    }
}
