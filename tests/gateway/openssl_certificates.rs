//! The certificates people really hold: the openssl private-CA tutorial's commands verbatim (a private CA
//! by `openssl req -x509`, server and client certificates by `openssl x509 -req … -set_serial
//! 01`, which OpenSSL 3 makes as X.509 version 1, keys encrypted with `-des3`), served and
//! verified by mtlsgate and by a real nginx side by side.

use crate::util::*;

/// Runs a shell command in the work directory, asserting success.
fn sh(w: &Work, cmd: &str) -> String {
    w.cmd("sh", &["-c", cmd]).ok()
}

/// The openssl private-CA tutorial's commands, with the passphrase given on the command line instead of typed and
/// the subject given with -subj; `bits` is the size of the server and client keys (the tutorial
/// says 1024).
fn openssl_tutorial_pki(w: &Work, bits: u32) {
    w.write("pass.txt", "secret\n");
    let p = "-passout pass:secret";
    let i = "-passin pass:secret";
    sh(w, &format!("openssl genrsa -des3 {p} -out ca.key 4096"));
    sh(
        w,
        &format!(
            "openssl req -new -x509 -days 365 -key ca.key {i} -out ca.crt -subj '/CN=Tutorial CA'"
        ),
    );
    for (name, cn) in [("server", "localhost"), ("client", "client")] {
        sh(
            w,
            &format!("openssl genrsa -des3 {p} -out {name}.key {bits}"),
        );
        sh(
            w,
            &format!("openssl req -new -key {name}.key {i} -out {name}.csr -subj '/CN={cn}'"),
        );
        sh(w, &format!("openssl x509 -req -days 365 -in {name}.csr -CA ca.crt -CAkey ca.key {i} -set_serial 01 -out {name}.crt"));
    }
    let text = sh(w, "openssl x509 -in client.crt -noout -text");
    assert!(
        text.contains("Version: 1 (0x0)"),
        "not a v1 certificate: {text}"
    );
}

fn tutorial_gate(w: &Work, up: &Upstream, extra: &[&str]) -> Gate {
    let url = up.url();
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "server.crt",
        "--key",
        "server.key",
        "--key-passphrase-file",
        "pass.txt",
        "--client-ca",
        "ca.crt",
        "--upstream",
        &url,
    ];
    a.extend_from_slice(extra);
    Gate::start(w, &a)
}

fn tutorial_nginx(w: &Work, extra: &str) -> Nginx {
    Nginx::start(
        w,
        &format!(
            "ssl_certificate {{root}}/server.crt;\n    ssl_certificate_key {{root}}/server.key;\n    ssl_password_file {{root}}/pass.txt;\n    ssl_client_certificate {{root}}/ca.crt;\n    ssl_verify_client on;\n    {extra}\n    location / {{ default_type text/plain; return 200 \"$ssl_client_verify|$ssl_client_s_dn|$ssl_client_serial\\n\"; }}"
        ),
    )
}

/// The tutorial's curl command: `curl -v -s -k --key client.key --cert client.crt URL` (with the
/// key's passphrase, which curl would otherwise ask for).
fn tutorial_curl(w: &Work, url: &str, extra: &[&str]) -> (u16, String) {
    let mut a = vec![
        "-k",
        "--key",
        "client.key",
        "--pass",
        "secret",
        "--cert",
        "client.crt",
    ];
    a.extend_from_slice(extra);
    a.push(url);
    curl(w, &a)
}

#[test]
fn version_1_certificates_serve_and_verify_as_in_nginx() {
    let w = Work::new();
    openssl_tutorial_pki(&w, 2048);
    let up = Upstream::start(&w);
    let g = tutorial_gate(&w, &up, &[]);
    let ng = tutorial_nginx(&w, "");
    // nginx: the v1 client is verified.
    let (code, body) = tutorial_curl(&w, &ng.url("/hello/world"), &[]);
    assert_eq!((code, body.as_str()), (200, "SUCCESS|CN=client|01\n"));
    // mtlsgate serves the v1 server certificate and verifies the v1 client the same way.
    let (code, body) = tutorial_curl(&w, &g.url("/hello/world"), &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "ssl-client-verify"), "SUCCESS");
    assert_eq!(header(&body, "ssl-client"), "CN=client");
    // Both refuse the client without a certificate, and curl verifies both servers' v1
    // certificates against the tutorial's CA (CN=localhost, no SAN).
    for url in [g.url("/hello/world"), ng.url("/hello/world")] {
        let (code, body) = curl(&w, &["--cacert", "ca.crt", &url]);
        assert_eq!(code, 400, "{url}: {body}");
        assert!(
            body.contains("No required SSL certificate was sent"),
            "{body}"
        );
    }
    // cert verify and cert inspect read them.
    let out = w
        .mg(&["cert", "verify", "client.crt", "--ca", "ca.crt"])
        .ok();
    assert!(
        out.starts_with("OK: CN=client is valid for TLS client authentication"),
        "{out}"
    );
    let out = w.mg(&["cert", "inspect", "server.crt"]).ok();
    assert!(out.contains("Subject:      CN=localhost"), "{out}");
}

#[test]
fn the_tutorials_1024_bit_keys_are_refused_by_both_with_the_reason() {
    let w = Work::new();
    openssl_tutorial_pki(&w, 1024);
    let up = Upstream::start(&w);
    let url = up.url();
    let e = w
        .mg(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "server.crt",
            "--key",
            "server.key",
            "--key-passphrase-file",
            "pass.txt",
            "--client-ca",
            "ca.crt",
            "--upstream",
            &url,
        ])
        .fails();
    assert!(
        e.contains("1024-bit RSA key; at least 2048 bits are required"),
        "{e}"
    );
    // nginx (OpenSSL 3, security level 2) refuses to start with it too.
    let root = w.root().display().to_string();
    w.write(
        "nginx-test.conf",
        &format!("events {{}}\nerror_log stderr;\npid {root}/n.pid;\nhttp {{ server {{ listen 127.0.0.1:{}; ssl_certificate {root}/server.crt; ssl_certificate_key {root}/server.key; ssl_password_file {root}/pass.txt; }} }}\n", free_port()),
    );
    let t = w.cmd(
        nginx_bin(),
        &["-t", "-p", &root, "-c", &format!("{root}/nginx-test.conf")],
    );
    assert_ne!(t.code, 0);
    assert!(t.stderr.contains("ee key too small"), "{}", t.stderr);
}

#[test]
fn one_crl_entry_revokes_every_certificate_with_that_serial_as_in_nginx() {
    let w = Work::new();
    openssl_tutorial_pki(&w, 2048);
    // The CA's CRL naming serial 01 (openssl ca, v2 CRL with a CRL number).
    w.write(
        "crl.cnf",
        "[ca]\ndefault_ca = X\n[X]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n",
    );
    w.write(
        "index.txt",
        "R\t271125000000Z\t261101000000Z\t01\tunknown\t/CN=client\n",
    );
    w.write("crlnumber", "01\n");
    sh(&w, "openssl ca -config crl.cnf -gencrl -keyfile ca.key -passin pass:secret -cert ca.crt -out crl.pem");
    let up = Upstream::start(&w);
    let g = tutorial_gate(&w, &up, &["--crl", "crl.pem"]);
    let ng = tutorial_nginx(&w, "ssl_crl {root}/crl.pem;");
    let (code, body) = tutorial_curl(&w, &ng.url("/"), &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("The SSL certificate error"), "{body}");
    let (code, body) = tutorial_curl(&w, &g.url("/"), &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("revoked: CN=client (serial 01)"), "{body}");
    // The server certificate carries serial 01 too: a client checking the CRL refuses it.
    for url in [g.url("/"), ng.url("/")] {
        let r = w.cmd(
            "curl",
            &[
                "-sS",
                "--cacert",
                "ca.crt",
                "--crlfile",
                "crl.pem",
                "--key",
                "client.key",
                "--pass",
                "secret",
                "--cert",
                "client.crt",
                &url,
            ],
        );
        assert_ne!(
            r.code, 0,
            "{url}: curl accepted a server whose serial the CRL names"
        );
        assert!(r.stderr.contains("revoked"), "{url}: {}", r.stderr);
    }
    // cert verify says why both are revoked.
    let e = w
        .mg(&[
            "cert",
            "verify",
            "server.crt",
            "--ca",
            "ca.crt",
            "--crl",
            "crl.pem",
            "--purpose",
            "server",
        ])
        .fails();
    assert!(e.contains("revoked: CN=localhost (serial 01)"), "{e}");
    assert!(
        e.contains("every certificate this issuer signed with serial 01"),
        "{e}"
    );
}
