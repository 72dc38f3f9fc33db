//! Refusals: what a client without an acceptable certificate, or not on a route's list,
//! gets back (nginx's 400 pages with the reason, 403 naming the device).

use std::time::Duration;

use crate::util::*;

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
    let line = "device=dev2.d.example.local verify=\"SUCCESS\" \"GET /\" route=/ status=403";
    let log = g.access_log_with(line);
    assert!(log.contains(line), "{log}");
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

/// As nginx: with CRLs configured, a client whose CA has no CRL, or whose CRL expired, is
/// refused (and the log and metric say why); `--crl-check lenient` lets it in.
#[test]
fn crls_fail_closed_when_missing_or_expired_unless_lenient() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Elsewhere", "x");
    // Only another CA's CRL: nothing covers our clients' issuers.
    w.mg(&["ca", "crl", "--dir", "other", "--out", "other-crl.pem"])
        .ok();
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &["--crl", "other-crl.pem"]);
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("no CRL for CN=mtlsgate Intermediate CA"),
        "{body}"
    );
    let lenient = serve(
        &w,
        &up,
        &["--crl", "other-crl.pem", "--crl-check", "lenient"],
    );
    assert_eq!(get_as(&w, &lenient, "dev1", "/", &[]).0, 200);
    // Our own CRLs, but expired.
    w.mg(&[
        "ca",
        "crl",
        "--dir",
        "ca",
        "--out",
        "crl.pem",
        "--next-update",
        "1s",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(2100));
    let mut g = serve(&w, &up, &["--crl", "crl.pem"]);
    g.proc.wait_for("expired at");
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("CRL expired: the CRL of CN=mtlsgate"),
        "{body}"
    );
    let lenient = serve(&w, &up, &["--crl", "crl.pem", "--crl-check", "lenient"]);
    assert_eq!(get_as(&w, &lenient, "dev1", "/", &[]).0, 200);
}
