//! Real clients: curl (PEM, PKCS#12, HTTP/2), Python requests, openssl s_client (resumed
//! sessions), a WebSocket client through an upgrade.

use crate::util::*;

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
fn pinned_self_signed_client_api_route_and_websocket() {
    let w = Work::new();
    pki(&w);
    // A self-signed client certificate, trusted by naming it as the client CA.
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
