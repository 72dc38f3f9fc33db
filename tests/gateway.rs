//! End-to-end tests of `mtlsgate serve` and `quickstart`: the real binary, driven by curl,
//! `openssl s_client`, Python (`requests`, `ssl`), nginx, against a real upstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

fn s(v: &[String]) -> Vec<&str> {
    v.iter().map(|x| x.as_str()).collect()
}

/// `mtlsgate serve` on an ephemeral port in front of `up`, with `extra` flags.
fn serve(w: &Work, up: &Upstream, extra: &[&str]) -> Gate {
    let url = up.url();
    let mut a = vec![
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
    ];
    a.extend_from_slice(extra);
    Gate::start(w, &a)
}

/// GET `path` as device `dev`, returning (status, body).
fn get_as(w: &Work, g: &Gate, dev: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let mut a = as_dev(dev);
    a.extend(extra.iter().map(|x| x.to_string()));
    a.push(g.url(path));
    curl(w, &s(&a))
}

/// Values of header `name` (case-insensitive) in the echo upstream's JSON body.
fn header_values(body: &str, name: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or("").to_string())
        .collect()
}

fn header(body: &str, name: &str) -> String {
    let v = header_values(body, name);
    assert_eq!(
        v.len(),
        1,
        "expected one {name} header, got {v:?} in {body}"
    );
    v[0].clone()
}

fn openssl_field(w: &Work, cert: &str, flag: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", cert, "-noout", flag, "-nameopt", "RFC2253"],
        )
        .ok();
    let line = out.trim();
    line.split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| line.to_string())
}

fn write_atomic(w: &Work, rel: &str, text: &str) {
    let tmp = w.path(&format!("{rel}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, w.path(rel)).expect("rename");
}

/// A client certificate made and signed by openssl itself with the CA's intermediate key
/// (so that openssl, not mtlsgate, encodes the subject): writes NAME.key and NAME.crt
/// (leaf + intermediate).
fn openssl_client(w: &Work, name: &str, subj: &str, extra_req: &[&str]) {
    let (key, csr, leaf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}-leaf.crt"),
    );
    let mut req = vec![
        "req",
        "-new",
        "-utf8",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        subj,
    ];
    req.extend_from_slice(extra_req);
    w.cmd("openssl", &req).ok();
    w.write(
        "ext.cnf",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    );
    w.cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca/intermediate.crt",
            "-CAkey",
            "ca/intermediate.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            &leaf,
        ],
    )
    .ok();
    let chain = w.read(&leaf) + &w.read("ca/intermediate.crt");
    w.write(&format!("{name}.crt"), &chain);
}

/// Re-issues dev1 for 7.5 days: far from a day boundary, so whole days left are certain.
fn reissue_dev1_for_180h(w: &Work) {
    w.mg(&[
        "cert",
        "issue",
        "client",
        "dev1",
        "--device-id",
        "dev1",
        "--valid",
        "180h",
        "--force",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
}

/// A client certificate NAME from a second CA called `ca_name` (in `other/`), written to
/// `o/NAME.crt` and `o/NAME.key`.
fn foreign_client(w: &Work, ca_name: &str, name: &str) {
    w.mg(&["ca", "init", "--dir", "other", "--name", ca_name])
        .ok();
    std::fs::create_dir_all(w.path("o")).expect("mkdir");
    w.mg(&[
        "cert", "issue", "client", name, "--dir", "other", "--out", "o",
    ])
    .ok();
}

/// GET `url` presenting the certificate `crt` with key `key`.
fn curl_as(w: &Work, crt: &str, key: &str, url: &str) -> (u16, String) {
    curl(w, &["--cacert", "ca.crt", "--cert", crt, "--key", key, url])
}

/// The HTTP status of GET `url` as dev1, run in `root` (usable from other threads).
fn status_as_dev1(root: &std::path::Path, url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            url,
        ])
        .current_dir(root)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 fingerprint of a certificate file as `openssl x509 -fingerprint` prints it.
fn openssl_sha256(w: &Work, file: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", file, "-noout", "-fingerprint", "-sha256"],
        )
        .ok();
    out.trim()
        .split_once('=')
        .expect("fingerprint")
        .1
        .to_string()
}

/// `AA:BB:…` → `aabb…`.
fn hex_lower(fp: &str) -> String {
    fp.replace(':', "").to_ascii_lowercase()
}

/// Polls `f` until it returns true (reloads are asynchronous), for at most 10 s.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn seed000_identity_headers_reach_the_upstream() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let (code, body) = get_as(&w, &g, "dev1", "/hello?x=1", &[]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(header(&body, "host"), format!("localhost:{}", g.port));
    assert_eq!(header(&body, "x-real-ip"), "127.0.0.1");
    assert_eq!(header(&body, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(header(&body, "x-forwarded-proto"), "https");
    assert_eq!(
        header(&body, "ssl-client"),
        openssl_field(&w, "dev1.crt", "-subject")
    );
    assert_eq!(header(&body, "ssl-client"), "CN=dev1.d.example.local");
    assert_eq!(header(&body, "ssl-client-verify"), "SUCCESS");
    let log = g.access_log();
    assert!(
        log.contains(
            "device=dev1.d.example.local verify=\"SUCCESS\" \"GET /hello?x=1\" route=/ status=200"
        ),
        "{log}"
    );
}

#[test]
fn nginx_variables_render_as_openssl_prints_them() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    w.write(
        "gate.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
cert = "localhost.crt"
key = "localhost.key"
client_ca = "ca.crt"

[[route]]
upstream = "{}"
headers = {{ "X-S-DN" = "$ssl_client_s_dn", "X-I-DN" = "$ssl_client_i_dn", "X-Serial" = "$ssl_client_serial", "X-FP" = "$ssl_client_fingerprint", "X-FP256" = "${{ssl_client_fingerprint_sha256}}", "X-Start" = "$ssl_client_v_start", "X-End" = "$ssl_client_v_end", "X-Remain" = "$ssl_client_v_remain", "X-Cert" = "$ssl_client_escaped_cert", "X-Device" = "$client_device_id", "X-Spiffe" = "$client_spiffe_id", "X-Combined" = "dev=$client_device_id;ip=$remote_addr;host=$host" }}
"#,
            up.url()
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    // 7.5 days: far from a day boundary, so the whole days left are certain.
    reissue_dev1_for_180h(&w);
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        header(&body, "x-s-dn"),
        openssl_field(&w, "dev1.crt", "-subject")
    );
    assert_eq!(
        header(&body, "x-i-dn"),
        openssl_field(&w, "dev1.crt", "-issuer")
    );
    assert_eq!(
        header(&body, "x-serial"),
        openssl_field(&w, "dev1.crt", "-serial")
    );
    assert_eq!(
        header(&body, "x-fp"),
        hex_lower(&openssl_field(&w, "dev1.crt", "-fingerprint"))
    );
    let sha256 = hex_lower(&openssl_sha256(&w, "dev1.crt"));
    assert_eq!(header(&body, "x-fp256"), sha256);
    assert_eq!(
        header(&body, "x-start"),
        openssl_field(&w, "dev1.crt", "-startdate")
    );
    assert_eq!(
        header(&body, "x-end"),
        openssl_field(&w, "dev1.crt", "-enddate")
    );
    assert_eq!(
        header(&body, "x-remain"),
        "7",
        "a 7.5-day certificate has 7 whole days left"
    );
    assert_eq!(header(&body, "x-device"), "dev1.d.example.local");
    assert!(
        header_values(&body, "x-spiffe").is_empty(),
        "empty values are not sent"
    );
    assert_eq!(
        header(&body, "x-combined"),
        "dev=dev1.d.example.local;ip=127.0.0.1;host=localhost"
    );
    // $ssl_client_escaped_cert decodes to the leaf's PEM.
    let decoded = w
        .cmd(
            "python3",
            &[
                "-c",
                "import sys,urllib.parse;print(urllib.parse.unquote(sys.argv[1]),end='')",
                &header(&body, "x-cert"),
            ],
        )
        .ok();
    let leaf = w.read("dev1.crt");
    let first_pem = &leaf[..leaf.find("-----END CERTIFICATE-----").expect("pem") + 26];
    assert_eq!(decoded, first_pem);
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = serve(
        &w,
        &up,
        &[
            "--verify-client",
            "optional",
            "--header",
            "X-Device=$client_device_id",
        ],
    );
    let spoof = [
        "-H",
        "SSL-Client: CN=admin.d.example.local",
        "-H",
        "SSL_Client_Verify: SUCCESS",
        "-H",
        "X-Real-IP: 10.9.9.9",
        "-H",
        "X-Forwarded-For: 10.9.9.9",
        "-H",
        "X-SSL-Client-DN: CN=admin",
        "-H",
        "X-Forwarded-Client-Cert: Hash=00",
        "-H",
        "x_device: admin.d.example.local",
    ];
    let (code, body) = get_as(&w, &g, "dev1", "/", &spoof);
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "ssl-client"), "CN=dev1.d.example.local");
    assert_eq!(header(&body, "ssl-client-verify"), "SUCCESS");
    assert!(
        header_values(&body, "ssl_client_verify").is_empty(),
        "{body}"
    );
    assert_eq!(header(&body, "x-real-ip"), "127.0.0.1");
    assert_eq!(header(&body, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(header(&body, "x-device"), "dev1.d.example.local");
    assert!(header_values(&body, "x_device").is_empty(), "{body}");
    assert!(header_values(&body, "x-ssl-client-dn").is_empty(), "{body}");
    assert!(
        header_values(&body, "x-forwarded-client-cert").is_empty(),
        "{body}"
    );
    // Without a certificate (optional mode) the spoofed identity is removed, not kept.
    let mut a: Vec<&str> = vec!["--cacert", "ca.crt"];
    a.extend_from_slice(&spoof);
    let url = g.url("/");
    a.push(&url);
    let (code, body) = curl(&w, &a);
    assert_eq!(code, 200, "{body}");
    assert!(header_values(&body, "ssl-client").is_empty(), "{body}");
    assert!(header_values(&body, "x-device").is_empty(), "{body}");
    assert!(header_values(&body, "x_device").is_empty(), "{body}");
    assert_eq!(header(&body, "ssl-client-verify"), "NONE");
}

#[test]
fn unlisted_device_gets_403_naming_it() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "# devices\ndev1.d.example.local\n");
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--allow-file", "whitelist.txt"]);
    let (code, body) = get_as(&w, &g, "dev2", "/", &[]);
    assert_eq!(code, 403);
    assert!(
        body.contains("device dev2.d.example.local is not on the allowlist"),
        "{body}"
    );
    let (code, _) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 200);
    let log = g.access_log();
    assert!(
        log.contains("device=dev2.d.example.local verify=\"SUCCESS\" \"GET /\" route=/ status=403"),
        "{log}"
    );
}

#[test]
fn no_certificate_gets_400_and_the_connection_closes() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let url = g.url("/");
    let (code, body) = curl(&w, &["--cacert", "ca.crt", &url]);
    assert_eq!(code, 400);
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );
    // Two pipelined requests on one connection: one reply, then the gateway closes.
    let port = g.port.to_string();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n' | timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -quiet -ign_eof 2>/dev/null"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("HTTP/1.1 400").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

#[test]
fn revoked_certificate_gets_400_saying_so() {
    let w = Work::new();
    pki(&w);
    w.mg(&[
        "ca",
        "revoke",
        "--dir",
        "ca",
        "--cert",
        "dev1.crt",
        "--reason",
        "keyCompromise",
    ])
    .ok();
    w.mg(&["ca", "crl", "--dir", "ca", "--out", "crl.pem"]).ok();
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--crl", "crl.pem"]);
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 400);
    assert!(body.contains("The SSL certificate error"), "{body}");
    assert!(body.contains("revoked: CN=dev1.d.example.local"), "{body}");
    let (code, _) = get_as(&w, &g, "dev2", "/", &[]);
    assert_eq!(code, 200);
}

#[test]
fn expired_certificate_gets_400_saying_when() {
    let w = Work::new();
    pki(&w);
    w.mg(&[
        "cert",
        "issue",
        "client",
        "old",
        "--device-id",
        "old",
        "--valid",
        "1s",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(2100));
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let (code, body) = get_as(&w, &g, "old", "/", &[]);
    assert_eq!(code, 400);
    assert!(body.contains("The SSL certificate error"), "{body}");
    assert!(
        body.contains("expired: the certificate expired at"),
        "{body}"
    );
}

#[test]
fn certificate_from_another_ca_gets_400_naming_its_issuer() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Intruder CA", "evil");
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let url = g.url("/");
    let (code, body) = curl_as(&w, "o/evil.crt", "o/evil.key", &url);
    assert_eq!(code, 400);
    assert!(body.contains("The SSL certificate error"), "{body}");
    assert!(
        body.contains("unknown issuer") && body.contains("Intruder CA"),
        "{body}"
    );
}

#[test]
fn optional_no_ca_forgives_only_an_unknown_issuer() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Other CA", "stranger");
    w.mg(&[
        "cert", "issue", "client", "old", "--valid", "1s", "--dir", "ca", "--out", ".",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(2100));
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--verify-client", "optional_no_ca"]);
    let url = g.url("/");
    let (code, body) = curl_as(&w, "o/stranger.crt", "o/stranger.key", &url);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        header(&body, "ssl-client-verify"),
        "FAILED:unable to get local issuer certificate"
    );
    let (code, body) = curl(&w, &["--cacert", "ca.crt", &url]);
    assert_eq!(code, 200);
    assert_eq!(header(&body, "ssl-client-verify"), "NONE");
    let (code, body) = get_as(&w, &g, "old", "/", &[]);
    assert_eq!(
        code, 400,
        "an expired certificate is never forgiven: {body}"
    );
}

#[test]
fn reject_at_handshake_sends_no_http_reply() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--reject-at-handshake"]);
    let url = g.url("/");
    let (code, _) = curl(&w, &["--cacert", "ca.crt", &url]);
    assert_eq!(code, 0, "the handshake itself must fail");
    let (code, _) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 200);
}

#[test]
fn p12_python_requests_openssl_and_http2_clients() {
    let w = Work::new();
    pki(&w);
    w.write("pw", "s3cret\n");
    w.mg(&[
        "cert",
        "p12",
        "--cert",
        "dev1.crt",
        "--key",
        "dev1.key",
        "--out",
        "dev1.p12",
        "--password-file",
        "pw",
    ])
    .ok();
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let url = g.url("/p12");
    let (code, body) = curl(
        &w,
        &[
            "--cacert",
            "ca.crt",
            "--cert-type",
            "P12",
            "--cert",
            "dev1.p12:s3cret",
            &url,
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "ssl-client"), "CN=dev1.d.example.local");
    // Python requests.
    let py = format!(
        "import requests; r = requests.get('{}', cert=('dev1.crt','dev1.key'), verify='ca.crt'); print(r.status_code); print(r.json()['path'])",
        g.url("/py")
    );
    let out = w.cmd("python3", &["-c", &py]).ok();
    assert_eq!(out, "200\n/py\n");
    // openssl s_client.
    let port = g.port.to_string();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET /ossl HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -cert dev1.crt -key dev1.key -quiet -ign_eof 2>/dev/null"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // HTTP/2 downstream, Host taken from :authority.
    let mut a = as_dev("dev1");
    a.extend([
        "--http2".into(),
        "-o".into(),
        "h2.json".into(),
        "-w".into(),
        "%{http_version} %{http_code}".into(),
        "-s".into(),
        g.url("/h2"),
    ]);
    let out = w.cmd("curl", &s(&a)).ok();
    assert_eq!(out, "2 200");
    let body = w.read("h2.json");
    assert_eq!(header(&body, "host"), format!("localhost:{}", g.port));
    assert_eq!(header(&body, "ssl-client-verify"), "SUCCESS");
}

#[test]
fn seed004_pinned_self_signed_client_api_route_and_websocket() {
    let w = Work::new();
    pki(&w);
    // Seed 004: a self-signed client certificate, trusted by naming it as the client CA.
    for name in ["client", "intruder"] {
        w.cmd(
            "openssl",
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "9999",
                "-newkey",
                "rsa:2048",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )
        .ok();
    }
    let up = Upstream::start(&w);
    w.write(
        "gate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"client.crt\"\n\n[[route]]\nprefix = \"/api/\"\nupstream = \"{}\"\n",
            up.url()
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    let url = g.url("/api/items?id=3");
    let (code, body) = curl_as(&w, "client.crt", "client.key", &url);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/api/items?id=3");
    assert_eq!(header(&body, "ssl-client"), "CN=client");
    let (code, body) = curl_as(&w, "intruder.crt", "intruder.key", &url);
    assert_eq!(code, 400);
    assert!(body.contains("self-signed: CN=intruder"), "{body}");
    let other = g.url("/other");
    let (code, body) = curl_as(&w, "client.crt", "client.key", &other);
    assert_eq!(code, 404, "{body}");
    // WebSocket through the /api/ route.
    let ws = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/wsclient.py");
    let port = g.port.to_string();
    let out = w
        .cmd(
            "python3",
            &[
                ws,
                "localhost",
                &port,
                "/api/ws",
                "ca.crt",
                "client.crt",
                "client.key",
            ],
        )
        .ok();
    assert_eq!(out, "HTTP/1.1 101 Switching Protocols\necho: hello\n");
}

fn s_client_resume(w: &Work, port: u16, dev: &str, sess: &str, reuse: bool) -> String {
    let flag = if reuse { "-sess_in" } else { "-sess_out" };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -cert {dev}.crt -key {dev}.key {flag} {sess} -ign_eof 2>&1"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn resumed_sessions_are_checked_like_new_ones() {
    let w = Work::new();
    pki(&w);
    w.write(
        "whitelist.txt",
        "dev1.d.example.local\ndev2.d.example.local\n",
    );
    w.mg(&["ca", "crl", "--dir", "ca", "--out", "crl.pem"]).ok();
    let up = Upstream::start(&w);
    let g = serve(
        &w,
        &up,
        &["--allow-file", "whitelist.txt", "--crl", "crl.pem"],
    );
    let first = s_client_resume(&w, g.port, "dev1", "dev1.sess", false);
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let first = s_client_resume(&w, g.port, "dev2", "dev2.sess", false);
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    // dev1 leaves the allowlist; dev2 is revoked.
    write_atomic(&w, "whitelist.txt", "dev2.d.example.local\n");
    w.mg(&["ca", "revoke", "--dir", "ca", "--cert", "dev2.crt"])
        .ok();
    w.mg(&["ca", "crl", "--dir", "ca", "--out", "crl.pem"]).ok();
    eventually("the reload", || get_as(&w, &g, "dev2", "/", &[]).0 == 400);
    let again = s_client_resume(&w, g.port, "dev1", "dev1.sess", true);
    assert!(
        again.contains("Reused, TLSv1.3"),
        "the session must really be resumed: {again}"
    );
    assert!(again.contains("HTTP/1.1 403"), "{again}");
    let again = s_client_resume(&w, g.port, "dev2", "dev2.sess", true);
    assert!(again.contains("Reused, TLSv1.3"), "{again}");
    assert!(
        again.contains("HTTP/1.1 400") && again.contains("revoked"),
        "{again}"
    );
}

fn served_serial(w: &Work, port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -cert dev1.crt -key dev1.key </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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

/// Builds and returns the path of the example appserver.
fn appserver() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "--example", "appserver"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example appserver");
    assert!(st.success());
    let exe = std::path::Path::new(BIN)
        .parent()
        .expect("target dir")
        .join("examples/appserver");
    assert!(exe.exists(), "{}", exe.display());
    exe
}

#[test]
fn seed001_walkthrough_with_the_example_appserver() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "# seed 001\ndev1.d.example.local\n");
    // A client whose subject has an escaped comma, made by openssl and signed by the CA.
    w.cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dev3.key",
            "-out",
            "dev3.csr",
            "-subj",
            "/O=Acme, Inc./CN=dev3.d.example.local",
        ],
    )
    .ok();
    w.mg(&[
        "cert", "sign", "dev3.csr", "--kind", "client", "--dir", "ca", "--out", "dev3.crt",
    ])
    .ok();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let exe = appserver();
    let listen = format!("127.0.0.1:{port}");
    let app_out = w.path("app.out");
    let _app = Proc::spawn(
        w.root(),
        exe.to_str().expect("utf8"),
        &["--listen", &listen, "--whitelist", "whitelist.txt"],
        &app_out,
    );
    eventually("the appserver", || {
        std::fs::read_to_string(&app_out)
            .unwrap_or_default()
            .contains("listening")
    });
    let g = Gate::start(
        &w,
        &[
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
            &format!("http://{listen}"),
        ],
    );
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!((code, body.as_str()), (200, "Access Granted!\n"));
    let (code, body) = get_as(&w, &g, "dev2", "/", &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Access Denied: device dev2.d.example.local is not on the whitelist\n"
        )
    );
    let (code, body) = get_as(&w, &g, "dev3", "/", &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Access Denied: device dev3.d.example.local is not on the whitelist\n"
        )
    );
    w.write(
        "whitelist.txt",
        "dev1.d.example.local\ndev3.d.example.local\n",
    );
    assert_eq!(
        get_as(&w, &g, "dev3", "/", &[]),
        (200, "Access Granted!\n".to_string())
    );
    let url = g.url("/");
    let (code, body) = curl(&w, &["--cacert", "ca.crt", &url]);
    assert_eq!(code, 400);
    assert!(body.contains("No required SSL certificate was sent"));
}

#[test]
fn quickstart_runs_the_demo_and_stops_on_ctrl_c() {
    let w = Work::new();
    let mut g = Gate::start(
        &w,
        &["quickstart", "--dir", "qs", "--listen", "127.0.0.1:0"],
    );
    let url = g.url("/");
    let (code, body) = curl(&w, &["--cacert", "qs/ca.crt", &url]);
    assert_eq!(code, 400);
    assert!(body.contains("No required SSL certificate was sent"));
    let (code, body) = curl(
        &w,
        &[
            "--cacert",
            "qs/ca.crt",
            "--cert",
            "qs/dev1.crt",
            "--key",
            "qs/dev1.key",
            &url,
        ],
    );
    assert_eq!(code, 200);
    assert!(body.starts_with("Access Granted!\n"), "{body}");
    let (code, body) = curl(
        &w,
        &[
            "--cacert",
            "qs/ca.crt",
            "--cert",
            "qs/dev2.crt",
            "--key",
            "qs/dev2.key",
            &url,
        ],
    );
    assert_eq!(code, 403);
    assert!(body.contains("dev2.d.example.local"), "{body}");
    let printed = g.access_log();
    assert!(
        printed.contains(
            "curl --cacert qs/ca.crt --cert qs/dev1.crt --key qs/dev1.key https://localhost:"
        ),
        "{printed}"
    );
    g.proc.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = g.proc.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", g.proc.stderr());
    assert!(g.access_log().contains("Stopped."));
}

/// nginx and mtlsgate, given the same certificates, must produce byte-identical identity
/// values: `$ssl_client_s_dn` and friends move over from nginx unchanged.
#[test]
fn identity_values_are_byte_identical_to_nginx() {
    let w = Work::new();
    pki(&w);
    // A subject with every quirk RFC 2253 printing has: escaped specials, a multi-valued
    // RDN, repeated attributes, UTF-8, emailAddress. Signed by openssl with the CA's own
    // intermediate key so that openssl, not mtlsgate, encodes it.
    openssl_client(
        &w,
        "odd",
        "/C=DE/ST=Baden-Württemberg/O=Acme, Inc.+OU=R&D/OU=Ops;Dev/CN=dev \"9\" <x> #1/emailAddress=ops@example.com",
        &["-multivalue-rdn"],
    );

    const VARS: &[&str] = &[
        "ssl_client_s_dn",
        "ssl_client_i_dn",
        "ssl_client_serial",
        "ssl_client_fingerprint",
        "ssl_client_v_start",
        "ssl_client_v_end",
        "ssl_client_v_remain",
        "ssl_client_verify",
        "ssl_client_escaped_cert",
    ];
    // nginx with one worker, answering with the variables itself.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nport = free.local_addr().expect("addr").port();
    drop(free);
    let root = w.root().display().to_string();
    let body: String = VARS.iter().map(|v| format!("${v}\\n")).collect();
    w.write(
        "nginx.conf",
        &format!(
            "worker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {root}/t1;\n  proxy_temp_path {root}/t2;\n  fastcgi_temp_path {root}/t3;\n  uwsgi_temp_path {root}/t4;\n  scgi_temp_path {root}/t5;\n  server {{\n    listen 127.0.0.1:{nport} ssl;\n    ssl_certificate {root}/localhost.crt;\n    ssl_certificate_key {root}/localhost.key;\n    ssl_client_certificate {root}/ca.crt;\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n    location / {{ default_type text/plain; return 200 \"{body}\"; }}\n  }}\n}}\n"
        ),
    );
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run scripts/install-test-deps");
    let _ng = Proc::spawn(
        w.root(),
        nginx,
        &[
            "-e",
            "stderr",
            "-p",
            &root,
            "-c",
            &format!("{root}/nginx.conf"),
        ],
        &w.path("nginx.out"),
    );
    let nurl = format!("https://localhost:{nport}/");
    eventually("nginx", || {
        curl_as(&w, "dev1.crt", "dev1.key", &nurl).0 == 200
    });

    let up = Upstream::start(&w);
    let hdrs: Vec<String> = VARS.iter().map(|v| format!("X-{v}=${v}")).collect();
    let mut extra: Vec<&str> = Vec::new();
    for h in &hdrs {
        extra.push("--header");
        extra.push(h);
    }
    let g = serve(&w, &up, &extra);
    // 7.5 days, so that nginx's and our whole days left cannot straddle a boundary.
    reissue_dev1_for_180h(&w);
    for dev in ["dev1", "odd"] {
        let key = if dev == "odd" { "odd.key" } else { "dev1.key" };
        let crt = format!("{dev}.crt");
        let (code, from_nginx) = curl_as(&w, &crt, key, &nurl);
        assert_eq!(code, 200, "{from_nginx}");
        let gurl = g.url("/");
        let (code, body) = curl_as(&w, &crt, key, &gurl);
        assert_eq!(code, 200, "{body}");
        assert_eq!(from_nginx.lines().count(), VARS.len(), "{from_nginx}");
        for (v, nginx_value) in VARS.iter().zip(from_nginx.lines()) {
            if dev == "odd" && *v == "ssl_client_v_remain" {
                // openssl's -days puts its expiry on a day boundary from now: checked on dev1.
                continue;
            }
            let ours = header_values(&body, &format!("x-{v}"));
            // Header values travel as bytes; the echo upstream decodes them as Latin-1.
            let ours: Vec<String> = ours
                .iter()
                .map(|s| {
                    String::from_utf8(s.chars().map(|c| c as u32 as u8).collect())
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(ours, vec![nginx_value.to_string()], "${v} for {dev}");
        }
    }
    let odd_dn = w
        .cmd(
            "curl",
            &[
                "-s", "--cacert", "ca.crt", "--cert", "odd.crt", "--key", "odd.key", &nurl,
            ],
        )
        .ok();
    assert!(
        odd_dn
            .lines()
            .next()
            .is_some_and(|l| l.contains("+OU=R&D") && l.contains("Acme\\, Inc.")),
        "{odd_dn}"
    );
}

#[test]
fn spiffe_ou_and_fingerprint_policies_with_xfcc_and_json_log() {
    let w = Work::new();
    pki(&w);
    w.mg(&[
        "cert",
        "issue",
        "client",
        "svc",
        "--uri",
        "spiffe://example.org/ns/prod/sa/api",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    openssl_client(&w, "ops", "/OU=Ops/CN=ops1.d.example.local", &[]);
    // As openssl prints it (upper case, colons): the policy must normalize it.
    let fp = openssl_sha256(&w, "dev1.crt");
    let up = Upstream::start(&w);
    let u = up.url();
    w.write(
        "gate.toml",
        &format!(
            r#"[server]
listen = "127.0.0.1:0"
cert = "localhost.crt"
key = "localhost.key"
client_ca = "ca.crt"
access_log = "json"

[[route]]
prefix = "/spiffe/"
upstream = "{u}"
allow_spiffe_ids = ["spiffe://example.org/ns/prod/sa/api"]
xfcc = true

[[route]]
prefix = "/ou/"
upstream = "{u}"
allow_ous = ["Ops"]

[[route]]
prefix = "/fp/"
upstream = "{u}"
allow_fingerprints = ["{fp}"]

[[route]]
upstream = "{u}"
"#
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    let (code, body) = get_as(&w, &g, "svc", "/spiffe/x", &[]);
    assert_eq!(code, 200, "{body}");
    let xfcc = header(&body, "x-forwarded-client-cert");
    let svc_fp = hex_lower(&openssl_sha256(&w, "svc.crt"));
    assert!(
        xfcc == format!("Hash={svc_fp};Subject=\"CN=svc\";URI=spiffe://example.org/ns/prod/sa/api"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains(";URI=spiffe://example.org/ns/prod/sa/api"),
        "{xfcc}"
    );
    assert_eq!(get_as(&w, &g, "dev1", "/spiffe/x", &[]).0, 403);
    let ops = [
        "--cacert", "ca.crt", "--cert", "ops.crt", "--key", "ops.key",
    ];
    let url = g.url("/ou/x");
    let mut a = ops.to_vec();
    a.push(&url);
    assert_eq!(curl(&w, &a).0, 200);
    assert_eq!(get_as(&w, &g, "dev1", "/ou/x", &[]).0, 403);
    assert_eq!(get_as(&w, &g, "dev1", "/fp/x", &[]).0, 200);
    assert_eq!(get_as(&w, &g, "dev2", "/fp/x", &[]).0, 403);
    assert_eq!(get_as(&w, &g, "dev2", "/open", &[]).0, 200);
    let log = g.access_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 7, "{log}");
    assert_eq!(lines[0]["device_id"], "svc");
    assert_eq!(lines[0]["route"], "/spiffe/");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["status"], 403);
    assert_eq!(lines[1]["verify"], "SUCCESS");
}
