//! EST (RFC 7030) on `mtlsgate ca serve`, driven the way EST users and RFC 7030's own
//! examples do: curl with base64 PKCS#10 bodies and HTTP Basic (the enrollment token as the
//! password), openssl to make requests and read the certs-only CMS answers, Python's
//! `cryptography` parsing every answer as a peer would, a gateway on the inventory letting
//! the enrolled device in — and libest's `estclient`, an EST client nobody here wrote.

use std::time::Duration;

use crate::util::{
    curl, fleet_cmd, fleet_server_cert, pem_serial, server_token, test_ca, CaServer, Db, Gate,
    Upstream, Work,
};

both!(
    est_enrolls_and_reenrolls_with_curl_and_openssl,
    the_agent_enrolls_and_renews_over_est
);

/// curl `ARGS` against `PATH` under `/.well-known/est/`: (status, body, headers).
fn est(w: &Work, srv: &CaServer, path: &str, args: &[&str]) -> (u16, String, String) {
    let url = format!("{}/.well-known/est/{path}", srv.url());
    let headers = w.path(&format!("headers-{}", path.replace('/', "-")));
    let headers = headers.to_string_lossy().into_owned();
    let mut a = vec!["--cacert", "ca/ca.crt", "-D", &headers];
    a.extend_from_slice(args);
    a.push(&url);
    let (status, body) = curl(w, &a);
    let h = std::fs::read_to_string(&headers).unwrap_or_default();
    (status, body, h)
}

/// Runs `script` with sh in the work directory; its stdout.
fn sh(w: &Work, script: &str) -> String {
    w.cmd("sh", &["-c", script]).ok()
}

/// A new P-256 key `NAME.key` and its CSR, DER in base64 with line breaks (`NAME.b64`, as
/// `openssl base64` writes it) and without (`NAME.flat`).
fn request(w: &Work, name: &str) {
    sh(
        w,
        &format!(
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
             -subj /CN=anything -outform DER -out {name}.der 2>/dev/null \
             && openssl base64 -in {name}.der -out {name}.b64 && base64 -w0 {name}.der > {name}.flat"
        ),
    );
}

/// The certificates of a base64 certs-only CMS answer saved in `file`, as openssl prints
/// them (PEM, each preceded by its subject and issuer).
fn print_certs(w: &Work, file: &str) -> String {
    sh(
        w,
        &format!("base64 -d {file} | openssl pkcs7 -inform DER -print_certs"),
    )
}

/// Python's `cryptography` reads a base64 certs-only CMS answer: its subjects.
fn python_subjects(w: &Work, file: &str) -> String {
    let script = format!(
        "import base64\n\
         from cryptography.hazmat.primitives.serialization import pkcs7\n\
         certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(open('{file}').read()))\n\
         print('\\n'.join(sorted(c.subject.rfc4514_string() for c in certs)))\n"
    );
    w.cmd("python3", &["-c", &script]).ok()
}

fn est_enrolls_and_reenrolls_with_curl_and_openssl(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    fleet_server_cert(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);

    // cacerts: the chain as certs-only CMS, base64.
    let (status, body, headers) = est(&w, &srv, "cacerts", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/pkcs7-mime"),
        "{headers}"
    );
    w.write("cacerts.b64", &body);
    let chain = print_certs(&w, "cacerts.b64");
    assert!(
        chain.contains("subject=O = mtlsgate, CN = mtlsgate Root CA")
            && chain.contains("subject=O = mtlsgate, CN = mtlsgate Intermediate CA"),
        "{chain}"
    );
    w.write("cacerts.pem", &chain);
    assert_eq!(
        python_subjects(&w, "cacerts.b64"),
        "CN=mtlsgate Intermediate CA,O=mtlsgate\nCN=mtlsgate Root CA,O=mtlsgate\n"
    );

    // csrattrs: what the CA wants, DER that openssl reads.
    let (status, body, _) = est(&w, &srv, "csrattrs", &[]);
    assert_eq!(status, 200, "{body}");
    w.write("attrs.b64", &body);
    let attrs = sh(&w, "base64 -d attrs.b64 | openssl asn1parse -inform DER");
    for oid in [
        "ecdsa-with-SHA256",
        "id-ecPublicKey",
        "prime256v1",
        "commonName",
    ] {
        assert!(attrs.contains(oid), "{oid} in {attrs}");
    }

    // simpleenroll: a CSR from openssl req, the token as the Basic password, the device ID
    // as the user name.
    let token = server_token(&w, &srv, &[]);
    request(&w, "dev");
    let creds = format!("dev:{token}");
    let pkcs10 = ["-H", "Content-Type: application/pkcs10"];
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &creds, "--data-binary", "@dev.b64"]);
    let (status, body, headers) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/pkcs7-mime; smime-type=certs-only"),
        "{headers}"
    );
    w.write("dev.p7", &body);
    w.write("dev.crt", &print_certs(&w, "dev.p7"));
    let subject = sh(&w, "openssl x509 -in dev.crt -noout -subject");
    assert_eq!(subject.trim(), "subject=CN = dev.d.example.local");
    assert_eq!(python_subjects(&w, "dev.p7"), "CN=dev.d.example.local\n");
    let verified = sh(
        &w,
        "openssl verify -CAfile ca/ca.crt -untrusted cacerts.pem dev.crt",
    );
    assert_eq!(verified.trim(), "dev.crt: OK");
    let first_serial = sh(&w, "openssl x509 -in dev.crt -noout -serial");

    // A gateway on the inventory lets the device in.
    let up = Upstream::start(&w);
    let upstream = up.url();
    let mut g = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "localhost.crt",
        "--key",
        "localhost.key",
        "--client-ca",
        "ca/ca.crt",
        "--upstream",
        &upstream,
    ];
    match &db {
        Db::Sqlite => g.extend(["--inventory", "ca", "--inventory-poll", "200ms"]),
        Db::Postgres(u) => g.extend(["--inventory", u.as_str()]),
    }
    let mut gate = Gate::start(&w, &g);
    // The gateway listens before it has read the inventory (until then it answers 503).
    gate.proc.wait_for(" devices at revision ");
    sh(&w, "cat dev.crt cacerts.pem > dev-chain.crt");
    let through = |w: &Work| {
        curl(
            w,
            &[
                "--cacert",
                "ca/ca.crt",
                "--cert",
                "dev-chain.crt",
                "--key",
                "dev.key",
                &gate.url("/"),
            ],
        )
        .0
    };
    assert_eq!(through(&w), 200);

    // simplereenroll over mTLS with the current certificate: base64 without line breaks,
    // a Content-Transfer-Encoding header (ignored, as RFC 8951 asks), and the same key.
    sh(
        &w,
        "openssl req -new -key dev.key -subj /CN=whatever -outform DER | base64 -w0 > re.flat",
    );
    let mut a = pkcs10.to_vec();
    a.extend([
        "-H",
        "Content-Transfer-Encoding: base64",
        "--cert",
        "dev-chain.crt",
        "--key",
        "dev.key",
        "--data-binary",
        "@re.flat",
    ]);
    let (status, body, _) = est(&w, &srv, "simplereenroll", &a);
    assert_eq!(status, 200, "{body}");
    w.write("re.p7", &body);
    w.write("re.crt", &print_certs(&w, "re.p7"));
    assert_eq!(python_subjects(&w, "re.p7"), "CN=dev.d.example.local\n");
    let subject = sh(&w, "openssl x509 -in re.crt -noout -subject");
    assert_eq!(subject.trim(), "subject=CN = dev.d.example.local");
    let second_serial = sh(&w, "openssl x509 -in re.crt -noout -serial");
    assert_ne!(first_serial, second_serial);
    sh(&w, "cat re.crt cacerts.pem > dev-chain.crt");
    assert_eq!(through(&w), 200);

    // The refusals, each with its status and a sentence.
    // A reused token.
    request(&w, "again");
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &creds, "--data-binary", "@again.b64"]);
    let (status, body, _) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("was already used"), "{body}");
    // A wrong password: 401 with the challenge.
    let wrong = format!("dev:mtg_{}", "A".repeat(43));
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &wrong, "--data-binary", "@again.b64"]);
    let (status, body, headers) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not known to this CA"), "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm="),
        "{headers}"
    );
    // No credentials at all.
    let mut a = pkcs10.to_vec();
    a.extend(["--data-binary", "@again.b64"]);
    let (status, body, headers) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("HTTP Basic"), "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("www-authenticate:"),
        "{headers}"
    );
    // A garbage body, and base64 that is not a CSR: 400 with the reason in plain text.
    let fresh = server_token(&w, &srv, &[]);
    let fresh_creds = format!("other:{fresh}");
    let mut a = pkcs10.to_vec();
    a.extend([
        "--user",
        &fresh_creds,
        "--data-binary",
        "this is not base64!",
    ]);
    let (status, body, headers) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not base64"), "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{headers}"
    );
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &fresh_creds, "--data-binary", "aGVsbG8gd29ybGQ="]);
    let (status, body, _) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("CSR"), "{body}");
    // A token bound to one device, asked for another.
    let bound = server_token(&w, &srv, &["--device-id", "bound1"]);
    let bound_creds = format!("someone-else:{bound}");
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &bound_creds, "--data-binary", "@again.b64"]);
    let (status, body, _) = est(&w, &srv, "simpleenroll", &a);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("bound to device bound1.d.example.local"),
        "{body}"
    );
    // A label selects the tokens that carry its tag.
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &fresh_creds, "--data-binary", "@again.b64"]);
    let (status, body, _) = est(&w, &srv, "lab/simpleenroll", &a);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for EST label `lab`"), "{body}");
    let lab = server_token(&w, &srv, &["--tag", "lab"]);
    let lab_creds = format!("labdev:{lab}");
    let mut a = pkcs10.to_vec();
    a.extend(["--user", &lab_creds, "--data-binary", "@again.b64"]);
    let (status, body, _) = est(&w, &srv, "lab/simpleenroll", &a);
    assert_eq!(status, 200, "{body}");

    // A revoked device is refused re-enrollment, and by the gateway.
    fleet_cmd(&w, &srv, &["devices", "revoke", "dev"]).ok();
    let mut a = pkcs10.to_vec();
    a.extend([
        "--cert",
        "dev-chain.crt",
        "--key",
        "dev.key",
        "--data-binary",
        "@re.flat",
    ]);
    let (status, body, _) = est(&w, &srv, "simplereenroll", &a);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    crate::util::eventually("the gateway refuses the revoked device", || {
        through(&w) == 403
    });
    // Without a client certificate, re-enrollment asks for one.
    let mut a = pkcs10.to_vec();
    a.extend(["--data-binary", "@re.flat"]);
    let (status, body, _) = est(&w, &srv, "simplereenroll", &a);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("current certificate"), "{body}");
}

/// libest's `estclient` (built from the source kept in tests/peers/libest by
/// scripts/libest): cacerts, simpleenroll with HTTP Basic and its own key, simplereenroll
/// with the certificate it got. It exits 0 even when it fails, so the test reads its
/// output files and its log.
#[test]
fn libests_estclient_enrolls_and_reenrolls() {
    let built = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/libest"))
        .output()
        .expect("run scripts/libest");
    assert!(
        built.status.success(),
        "scripts/libest failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let estclient = String::from_utf8_lossy(&built.stdout).trim().to_string();

    let w = Work::new();
    let db = Db::sqlite();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let port = srv.port.to_string();
    // Its trust anchor: root and intermediate (so that OpenSSL sends the intermediate
    // with the client certificate on re-enrollment).
    let (status, body, _) = est(&w, &srv, "cacerts", &[]);
    assert_eq!(status, 200, "{body}");
    w.write("cacerts.b64", &body);
    w.write("ta.pem", &print_certs(&w, "cacerts.b64"));
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&estclient)
            .args(args)
            .current_dir(w.root())
            .env("EST_OPENSSL_CACERT", w.path("ta.pem"))
            .output()
            .expect("run estclient");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !log.contains("failed with code"),
            "estclient {args:?}: {log}"
        );
        log
    };
    std::fs::create_dir_all(w.path("out")).expect("mkdir");

    run(&["-g", "-s", "localhost", "-p", &port, "-o", "out"]);
    let chain = print_certs(&w, "out/cacert-0-0.pkcs7");
    assert!(chain.contains("CN = mtlsgate Root CA"), "{chain}");

    let token = server_token(&w, &srv, &[]);
    sh(
        &w,
        "openssl ecparam -name prime256v1 -genkey -noout -out key.pem",
    );
    run(&[
        "-e",
        "-s",
        "localhost",
        "-p",
        &port,
        "-u",
        "gear1",
        "-h",
        &token,
        "-x",
        "key.pem",
        "--common-name",
        "gear1",
        "-o",
        "out",
    ]);
    w.write("gear1.crt", &print_certs(&w, "out/cert-0-0.pkcs7"));
    let subject = sh(&w, "openssl x509 -in gear1.crt -noout -subject");
    assert_eq!(subject.trim(), "subject=CN = gear1.d.example.local");
    let first = sh(&w, "openssl x509 -in gear1.crt -noout -serial");
    std::fs::remove_file(w.path("out/cert-0-0.pkcs7")).expect("rm");

    run(&[
        "-r",
        "-s",
        "localhost",
        "-p",
        &port,
        "-c",
        "gear1.crt",
        "-k",
        "key.pem",
        "-o",
        "out",
    ]);
    w.write("gear1-re.crt", &print_certs(&w, "out/cert-0-0.pkcs7"));
    let subject = sh(&w, "openssl x509 -in gear1-re.crt -noout -subject");
    assert_eq!(subject.trim(), "subject=CN = gear1.d.example.local");
    let second = sh(&w, "openssl x509 -in gear1-re.crt -noout -serial");
    assert_ne!(first, second);
    let listed = fleet_cmd(&w, &srv, &["devices", "show", "gear1"]).ok();
    assert!(listed.contains("active"), "{listed}");
}

/// A device with a manufacturer's certificate (made by openssl, from a CA that `ca serve
/// --est-bootstrap-ca` trusts for bootstrap) enrolls without a token: 202 with
/// `Retry-After` while it waits in the approval queue, the same request again after an
/// operator's approval collects its certificate; another key, or a certificate from a CA
/// not trusted for bootstrap, is refused.
#[test]
fn a_bootstrap_certificate_waits_for_approval_then_collects() {
    let w = Work::new();
    let db = Db::sqlite();
    test_ca(&w, &db);
    // The manufacturer's CA and one device certificate, CN = the device's serial number.
    sh(
        &w,
        "set -e
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout mfr.key -out mfr.pem \
           -days 30 -subj '/O=Acme Devices/CN=Acme Manufacturing CA' \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout gear7-idev.key \
           -subj '/O=Acme Devices/CN=gear7' -out gear7-idev.csr 2>/dev/null
         printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=clientAuth\\n' > leaf.ext
         openssl x509 -req -in gear7-idev.csr -CA mfr.pem -CAkey mfr.key -CAcreateserial -days 30 \
           -extfile leaf.ext -out gear7-idev.crt 2>/dev/null",
    );
    let srv = CaServer::start_for(&w, &db, &["--est-bootstrap-ca", "mfr.pem"]);
    request(&w, "gear7");
    let ask = |w: &Work, key_req: &str| {
        est(
            w,
            &srv,
            "simpleenroll",
            &[
                "-H",
                "Content-Type: application/pkcs10",
                "--cert",
                "gear7-idev.crt",
                "--key",
                "gear7-idev.key",
                "--data-binary",
                key_req,
            ],
        )
    };
    let (status, body, headers) = ask(&w, "@gear7.b64");
    assert_eq!(status, 202, "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 5"),
        "{headers}"
    );
    assert!(body.contains("waits for an operator's approval"), "{body}");
    let listed = fleet_cmd(&w, &srv, &["devices", "list", "--json"]).ok();
    assert!(
        listed.contains("gear7.d.example.local") && listed.contains("pending"),
        "{listed}"
    );
    let (status, body, _) = ask(&w, "@gear7.b64");
    assert_eq!(status, 202, "{body}");
    // Another key under the same bootstrap certificate is not the device that waits.
    request(&w, "intruder");
    let (status, body, _) = ask(&w, "@intruder.b64");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("registered with another key"), "{body}");

    fleet_cmd(&w, &srv, &["devices", "approve", "gear7"]).ok();
    let (status, body, _) = ask(&w, "@gear7.b64");
    assert_eq!(status, 200, "{body}");
    w.write("gear7.p7", &body);
    assert_eq!(
        python_subjects(&w, "gear7.p7"),
        "CN=gear7.d.example.local\n"
    );
    let (status, body, _) = ask(&w, "@gear7.b64");
    assert_eq!(status, 409, "{body}");

    // A certificate from a CA not trusted for bootstrap (this CA's own device certificate).
    w.mg(&[
        "cert",
        "issue",
        "client",
        "dev5",
        "--device-id",
        "dev5",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    let (status, body, headers) = est(
        &w,
        &srv,
        "simpleenroll",
        &[
            "--cert",
            "dev5.crt",
            "--key",
            "dev5.key",
            "--data-binary",
            "@gear7.b64",
        ],
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("not one this CA takes for EST bootstrap"),
        "{body}"
    );
    assert!(
        headers.to_ascii_lowercase().contains("www-authenticate:"),
        "{headers}"
    );
}

/// Our own agent speaks EST too (`agent enroll --est URL`): it enrolls with
/// `simpleenroll` (the token as the Basic password), installs the leaf with the CA
/// certificates from `cacerts`, and renews with `simplereenroll`.
fn the_agent_enrolls_and_renews_over_est(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let mut srv = CaServer::start_for(&w, &db, &["--min-lifetime", "1s"]);
    let token = server_token(&w, &srv, &["--lifetime", "6s"]);
    let url = srv.url();
    let out = w
        .mg(&[
            "agent",
            "enroll",
            "--est",
            &url,
            "--token",
            &token,
            "--root-fingerprint",
            &srv.fingerprint,
            "--dir",
            "dev",
        ])
        .ok();
    assert!(out.contains("enrolled as "), "{out}");
    let verified = sh(
        &w,
        "openssl verify -CAfile dev/ca.crt -untrusted dev/client.crt dev/client.crt",
    );
    assert_eq!(verified.trim(), "dev/client.crt: OK");
    let status = w.mg(&["agent", "status", "--dir", "dev"]).ok();
    assert!(
        status.contains(&format!("{url}/.well-known/est")) && status.contains("enrolled over EST"),
        "{status}"
    );
    let first = pem_serial(&w, "dev/client.crt");

    // Past two thirds of its six seconds: `agent run --once` renews over simplereenroll.
    std::thread::sleep(Duration::from_millis(4600));
    let r = w.mg(&["agent", "run", "--once", "--dir", "dev"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("renewed"), "{}", r.stderr);
    assert_ne!(first, pem_serial(&w, "dev/client.crt"));
    // The server logs a request after answering it: the line may follow the agent's exit.
    srv.proc
        .wait_for("POST /.well-known/est/simplereenroll 200");
    let log = srv.proc.stderr();
    assert!(
        log.contains("POST /.well-known/est/simpleenroll 200"),
        "{log}"
    );
    assert!(
        !log.contains("POST /v1/enroll") && !log.contains("POST /v1/renew"),
        "{log}"
    );
    srv.kill9();
}
