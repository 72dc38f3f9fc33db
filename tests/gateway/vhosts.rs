//! What a listener names and trusts: CA names in the CertificateRequest (each once, and
//! not those only trusted, as nginx's `ssl_trusted_certificate`).

use crate::util::*;

/// The "Acceptable client certificate CA names" that `openssl s_client` lists.
fn acceptable_ca_names(w: &Work, port: u16, servername: &str) -> Vec<String> {
    let out = w
        .cmd(
            "sh",
            &[
                "-c",
                &format!("openssl s_client -connect 127.0.0.1:{port} -servername {servername} -CAfile ca.crt </dev/null 2>&1"),
            ],
        )
        .stdout;
    let mut names = Vec::new();
    let mut on = false;
    for l in out.lines() {
        if l.starts_with("Acceptable client certificate CA names") {
            on = true;
            continue;
        }
        if on {
            if l.starts_with("Requested Signature Algorithms")
                || l.starts_with("Client Certificate Types")
                || l.trim().is_empty()
            {
                break;
            }
            names.push(l.trim().to_string());
        }
    }
    names
}

#[test]
fn trusted_but_not_advertised_cas_and_no_repeated_names() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Elsewhere", "x");
    let up = Upstream::start(&w);
    // The bundle twice (as a concatenated file often repeats a CA), another CA trusted only.
    let g = serve(
        &w,
        &up,
        &["--client-ca", "ca.crt", "--trusted-ca", "other/ca.crt"],
    );
    let names = acceptable_ca_names(&w, g.port, "localhost");
    assert_eq!(
        names,
        vec![
            "O = mtlsgate, CN = mtlsgate Root CA",
            "O = mtlsgate, CN = mtlsgate Intermediate CA"
        ],
        "each advertised CA once, the trusted one not at all"
    );
    // The trusted CA's client gets in all the same.
    let (code, body) = curl_as(&w, "o/x.crt", "o/x.key", &g.url("/"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
}

/// Two `[[server]]` blocks on one listener, chosen by SNI: each its own certificate,
/// client CA and routes; a Host naming the other one is misdirected (421, as nginx).
#[test]
fn sni_virtual_hosts_with_their_own_certificates_client_cas_and_routes() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Elsewhere", "x");
    for (name, dns) in [("api", "api.example.test"), ("admin", "admin.example.test")] {
        w.mg(&[
            "cert", "issue", "server", name, "--dns", dns, "--dir", "ca", "--out", ".",
        ])
        .ok();
    }
    let up = Upstream::start(&w);
    w.write(
        "gate.toml",
        &format!(
            r#"[[server]]
listen = "127.0.0.1:0"
server_name = ["api.example.test"]
cert = "api.crt"
key = "api.key"
client_ca = "ca.crt"

[[server.route]]
upstream = "{u}"
headers = {{ "X-Vhost" = "api" }}

[[server]]
server_name = ["admin.example.test", "*.admin.example.test"]
cert = "admin.crt"
key = "admin.key"
client_ca = "other/ca.crt"
verify_client = "require"

[[server.route]]
prefix = "/"
upstream = "{u}"
headers = {{ "X-Vhost" = "admin" }}
"#,
            u = up.url()
        ),
    );
    let g = Gate::start(&w, &["serve", "--config", "gate.toml"]);
    let at = |host: &str| format!("{host}:{}:127.0.0.1", g.port);
    let url = |host: &str| format!("https://{host}:{}/", g.port);
    let api = "api.example.test";
    let admin = "admin.example.test";
    // The API vhost: CA 1's devices.
    let (code, body) = curl(
        &w,
        &[
            "--resolve",
            &at(api),
            "--cacert",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            &url(api),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "x-vhost"), "api");
    // The admin vhost: its own certificate, and CA 2's clients only.
    let (code, body) = curl(
        &w,
        &[
            "--resolve",
            &at(admin),
            "--cacert",
            "ca.crt",
            "--cert",
            "o/x.crt",
            "--key",
            "o/x.key",
            &url(admin),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "x-vhost"), "admin");
    let (code, body) = curl(
        &w,
        &[
            "--resolve",
            &at(admin),
            "--cacert",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            &url(admin),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown issuer"), "{body}");
    // A wildcard name picks the admin vhost too.
    let deep = "eu.admin.example.test";
    let (code, _) = curl(
        &w,
        &[
            "--resolve",
            &at(deep),
            "-k",
            "--cert",
            "o/x.crt",
            "--key",
            "o/x.key",
            &url(deep),
        ],
    );
    assert_eq!(code, 200);
    // SNI says api, Host says admin: misdirected.
    let (code, body) = curl(
        &w,
        &[
            "--resolve",
            &at(api),
            "--cacert",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            "-H",
            "Host: admin.example.test",
            &url(api),
        ],
    );
    assert_eq!(code, 421, "{body}");
    assert!(
        body.contains("open a new connection for admin.example.test"),
        "{body}"
    );
    // Each vhost names its own CAs in the CertificateRequest.
    assert_eq!(
        acceptable_ca_names(&w, g.port, admin),
        vec![
            "O = Elsewhere, CN = Elsewhere Root CA",
            "O = Elsewhere, CN = Elsewhere Intermediate CA"
        ]
    );
    assert_eq!(
        acceptable_ca_names(&w, g.port, api),
        vec![
            "O = mtlsgate, CN = mtlsgate Root CA",
            "O = mtlsgate, CN = mtlsgate Intermediate CA"
        ]
    );
}
