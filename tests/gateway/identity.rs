//! Identity headers and policies: what the upstream is told about the client (nginx's
//! variables, byte-identical to a real nginx), spoofed headers stripped, allowlists by
//! device ID, SPIFFE ID, OU and fingerprint.

use crate::util::*;

#[test]
fn nginx_style_identity_headers_reach_the_upstream() {
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
    let line =
        "device=dev1.d.example.local verify=\"SUCCESS\" \"GET /hello?x=1\" route=/ status=200";
    let log = g.access_log_with(line);
    assert!(log.contains(line), "{log}");
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
    let body: String = VARS.iter().map(|v| format!("${v}\\n")).collect();
    let ng = Nginx::start(
        &w,
        &format!("ssl_certificate {{root}}/localhost.crt;\n    ssl_certificate_key {{root}}/localhost.key;\n    ssl_client_certificate {{root}}/ca.crt;\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n    location / {{ default_type text/plain; return 200 \"{body}\"; }}"),
    );
    let nurl = ng.url("/");
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
    let log = g.access_log_lines(7);
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
