//! Refusals through the HTTP API, each with its status and its sentence: a revoked device
//! (and its serial in the CRLs), reused, expired, foreign and other-device tokens, bad CSRs,
//! renewal without a client certificate, unreadable requests.

use crate::util::{
    agent_enroll, curl, fleet_cmd, json, new_csr, pem_serial, server_token, test_ca, CaServer, Db,
    Work,
};

both!(
    a_revoked_device_renews_nothing_and_its_serial_is_in_the_crl,
    a_revoked_device_id_is_told_the_way_back_and_enrolls_again_after_devices_allow,
    recovery_refuses_a_certificate_revoked_for_key_compromise,
    the_admin_role_comes_only_from_an_admin_certificate_in_the_inventory,
    token_less_enrollment_is_rate_limited_capped_bounded_and_expires
);

/// POSTs `body` (JSON) to `path` with curl, trusting ca/ca.crt; `extra` goes first.
fn post(
    w: &Work,
    srv: &CaServer,
    path: &str,
    body: &serde_json::Value,
    extra: &[&str],
) -> (u16, serde_json::Value) {
    w.write("body.json", &body.to_string());
    let url = format!("{}{path}", srv.url());
    let mut a = extra.to_vec();
    a.extend_from_slice(&[
        "--cacert",
        "ca/ca.crt",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@body.json",
        &url,
    ]);
    let (status, text) = curl(w, &a);
    (status, json(&text))
}

fn a_revoked_device_renews_nothing_and_its_serial_is_in_the_crl(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &[]);
    let id = agent_enroll(&w, &srv, &token, "dev");
    let serial = pem_serial(&w, "dev/client.crt");
    let device = ["--cert", "dev/client.crt", "--key", "dev/client.key"];
    let renew = serde_json::json!({"csr": new_csr(), "agent_version": "curl"});

    // Renewal works while the device is active ...
    let (status, body) = post(&w, &srv, "/v1/renew", &renew, &device);
    assert_eq!(status, 200, "{body}");
    let renewed = body["serial"].as_str().expect("serial").to_string();
    // ... (the agent would install that one; the old one may retry once) ...
    let out = fleet_cmd(&w, &srv, &["devices", "revoke", &id, "--reason", "stolen"]).ok();
    assert!(out.starts_with(&format!("Revoked (its certificates too; publish a new CRL: mtlsgate ca crl): device {id} is revoked")), "{out}");
    // ... and not once it is revoked.
    let (status, body) = post(&w, &srv, "/v1/renew", &renew, &device);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        format!("device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token")
    );

    // The served CRL lists both of its certificates: DER by default, PEM on request.
    let crl_url = format!("{}/v1/crl", srv.url());
    let der = std::process::Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--cacert",
            "ca/ca.crt",
            "-o",
            "crl.der",
            &crl_url,
        ])
        .current_dir(w.root())
        .status()
        .expect("curl");
    assert!(der.success());
    let text = w
        .cmd(
            "openssl",
            &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
        )
        .ok();
    for s in [&serial, &renewed] {
        assert!(
            text.contains(&format!("Serial Number: {s}")),
            "{s} not in {text}"
        );
    }
    assert!(text.contains("Cessation Of Operation"), "{text}");
    let pem = std::process::Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--cacert",
            "ca/ca.crt",
            "-H",
            "Accept: application/x-pem-file",
            "-o",
            "crl.pem",
            &crl_url,
        ])
        .current_dir(w.root())
        .status()
        .expect("curl");
    assert!(pem.success());
    assert_eq!(w.read("crl.pem").matches("BEGIN X509 CRL").count(), 2);
    let text = w
        .cmd("openssl", &["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok();
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    // `ca crl` from the CA directory says the same.
    let mut a = vec!["ca", "crl", "--dir", "ca", "--out", "local.pem"];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    w.mg(&a).ok();
    let text = w
        .cmd("openssl", &["crl", "-in", "local.pem", "-noout", "-text"])
        .ok();
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
}

#[test]
fn bad_tokens_csrs_and_requests_are_refused_with_a_sentence() {
    let w = Work::new();
    test_ca(&w, &Db::Sqlite);
    let srv = CaServer::start_for(&w, &Db::Sqlite, &[]);
    let enroll = |token: &str, csr: &str| {
        post(
            &w,
            &srv,
            "/v1/enroll",
            &serde_json::json!({"csr": csr, "token": token}),
            &[],
        )
    };
    let error = |v: &serde_json::Value| v["error"].as_str().unwrap_or_default().to_string();

    // Reused.
    let t = server_token(&w, &srv, &[]);
    let (status, body) = enroll(&t, &new_csr());
    assert_eq!(status, 201, "{body}");
    let first = body["device_id"].as_str().expect("id").to_string();
    let (status, body) = enroll(&t, &new_csr());
    assert_eq!(status, 409, "{body}");
    assert!(
        error(&body).starts_with("the enrollment token was already used at 20")
            && error(&body).ends_with(&format!(
                " UTC by device {first}; each token enrolls one device"
            )),
        "{body}"
    );
    // Expired.
    let t = server_token(&w, &srv, &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, body) = enroll(&t, &new_csr());
    assert_eq!(status, 410, "{body}");
    assert!(
        error(&body).starts_with("the enrollment token expired at 20")
            && error(&body).contains(" UTC; make a new one"),
        "{body}"
    );
    // Made by another CA.
    w.mg(&["ca", "init", "--dir", "other"]).ok();
    let foreign = w.mg(&["token", "create", "--dir", "other"]).ok();
    let (status, body) = enroll(foreign.lines().last().expect("token"), &new_csr());
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error(&body),
        "the enrollment token is not known to this CA (it was mistyped, or made by another CA)"
    );
    // Bound to a device that another token enrolled meanwhile.
    let a = server_token(&w, &srv, &["--device-id", "dev9"]);
    let b = server_token(&w, &srv, &["--device-id", "dev9"]);
    assert_eq!(enroll(&a, &new_csr()).0, 201);
    let (status, body) = enroll(&b, &new_csr());
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        error(&body),
        "device dev9.d.example.local is already enrolled; a token bound to that ID cannot enroll another device (make a token for a new ID)"
    );
    // Not a token at all.
    let (status, body) = enroll("hello", &new_csr());
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error(&body),
        "this is not an mtlsgate enrollment token (those start with mtg_)"
    );

    // CSRs made by openssl: a weak RSA key, and a signature that does not verify. Neither
    // spends the token.
    let t = server_token(&w, &srv, &[]);
    w.cmd(
        "openssl",
        &[
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", "weak.key", "-out",
            "weak.csr", "-subj", "/CN=weak",
        ],
    )
    .ok();
    let (status, body) = enroll(&t, &w.read("weak.csr"));
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("1024"), "{body}");
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
            "ok.key",
            "-outform",
            "DER",
            "-out",
            "ok.der",
            "-subj",
            "/CN=x",
        ],
    )
    .ok();
    let mut der = std::fs::read(w.path("ok.der")).expect("der");
    let last = der.len() - 1;
    der[last] ^= 0x01;
    std::fs::write(w.path("bad.der"), &der).expect("write");
    w.cmd(
        "openssl",
        &["req", "-inform", "DER", "-in", "bad.der", "-out", "bad.csr"],
    )
    .ok();
    let (status, body) = enroll(&t, &w.read("bad.csr"));
    assert_eq!(status, 400, "{body}");
    assert!(
        error(&body).contains("its signature does not verify"),
        "{body}"
    );
    let (status, body) = enroll(&t, "not a CSR");
    assert_eq!(status, 400, "{body}");
    assert!(!error(&body).is_empty(), "{body}");
    assert_eq!(enroll(&t, &new_csr()).0, 201, "the token was not spent");

    // Renewal without a client certificate.
    let (status, body) = post(
        &w,
        &srv,
        "/v1/renew",
        &serde_json::json!({"csr": new_csr()}),
        &[],
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error(&body),
        "renewal needs the device's current certificate, and no client certificate was presented"
    );
    // Unreadable JSON, unknown endpoints, wrong methods: JSON sentences too.
    let (status, body) = post(
        &w,
        &srv,
        "/v1/enroll",
        &serde_json::json!({"token": "x"}),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        error(&body).starts_with(
            "the request body is not the JSON this endpoint takes: missing field `csr`"
        ),
        "{body}"
    );
    let (status, text) = curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            &format!("{}/v1/nothing", srv.url()),
        ],
    );
    assert_eq!(status, 404);
    assert_eq!(
        json(&text)["error"],
        "this CA server has no endpoint GET /v1/nothing"
    );
    let (status, text) = curl(
        &w,
        &["--cacert", "ca/ca.crt", &format!("{}/v1/enroll", srv.url())],
    );
    assert_eq!(status, 405);
    assert_eq!(
        json(&text)["error"],
        "/v1/enroll does not take GET requests"
    );
    let big = serde_json::json!({"csr": "x".repeat(300 * 1024)});
    let (status, body) = post(&w, &srv, "/v1/enroll", &big, &[]);
    assert_eq!(status, 413, "{body}");
    assert!(
        error(&body).starts_with("the request body cannot be read: "),
        "{body}"
    );
    // Polling with a wrong poll token.
    let (status, text) = curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            "-H",
            "Authorization: Bearer mtp_nope",
            &format!("{}/v1/enroll/{first}", srv.url()),
        ],
    );
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        json(&text)["error"],
        format!("the poll token does not belong to device {first}, or it was already spent")
    );
}

/// The body of a recovery of the device in `dir` made with what a thief of the state
/// directory has: `client.key`, `client.crt` and the recovery token of `agent.json`. The
/// new CSR is signed by the old key too; `signature` is the old key's ECDSA-SHA256 over
/// SHA-256 of the CSR's DER (openssl `dgst -sign` hashes the digest again, as the agent does).
fn stolen_recovery(w: &Work, dir: &str, id: &str) -> serde_json::Value {
    let subj = format!("/CN={id}");
    w.cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            &format!("{dir}/client.key"),
            "-subj",
            &subj,
            "-outform",
            "DER",
            "-out",
            "stolen.der",
        ],
    )
    .ok();
    w.cmd(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "stolen.sha256",
            "stolen.der",
        ],
    )
    .ok();
    w.cmd(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-sign",
            &format!("{dir}/client.key"),
            "-out",
            "stolen.sig",
            "stolen.sha256",
        ],
    )
    .ok();
    w.cmd(
        "openssl",
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            "stolen.der",
            "-out",
            "stolen.csr",
        ],
    )
    .ok();
    let csr = w.read("stolen.csr");
    let sig = w
        .cmd("openssl", &["base64", "-A", "-in", "stolen.sig"])
        .ok()
        .trim()
        .to_string();
    let state = json(&w.read(&format!("{dir}/agent.json")));
    let leaf = w.read(&format!("{dir}/client.crt"));
    let leaf = leaf
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .expect("leaf")
        .to_string();
    serde_json::json!({
        "device_id": id,
        "recovery_token": state["recovery_token"],
        "csr": csr,
        "signature": sig,
        "certificate": leaf,
    })
}

fn recovery_refuses_a_certificate_revoked_for_key_compromise(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &[]);
    let id = agent_enroll(&w, &srv, &token, "dev");
    let serial = pem_serial(&w, "dev/client.crt");
    let mut a = vec![
        "ca",
        "revoke",
        &serial,
        "--reason",
        "keyCompromise",
        "--dir",
        "ca",
    ];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    w.mg(&a).ok();

    // Renewal with the revoked certificate is refused ...
    let device = ["--cert", "dev/client.crt", "--key", "dev/client.key"];
    let renew = serde_json::json!({"csr": new_csr(), "agent_version": "curl"});
    let (status, body) = post(&w, &srv, "/v1/renew", &renew, &device);
    assert_eq!(status, 403, "{body}");
    // ... and so is recovery with it, by whoever holds the stolen state directory: the
    // device is quarantined and waits for an operator.
    let stolen = stolen_recovery(&w, "dev", &id);
    let (status, body) = post(&w, &srv, "/v1/recover", &stolen, &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        format!("certificate {serial} of device {id} was revoked (keyCompromise), so it recovers nothing; the device is quarantined: after checking it, an operator can allow it again (mtlsgate devices allow {id}), and then it can recover")
    );
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "quarantined", "{shown}");
    assert!(
        shown["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .any(|e| e["action"] == "quarantine"
                && e["detail"].as_str().is_some_and(|d| d.contains("revoked"))),
        "{shown}"
    );
    let (status, body) = post(&w, &srv, "/v1/recover", &stolen, &[]);
    assert_eq!(status, 403, "{body}");

    // Once an operator allowed the device, it recovers (once: the token rotates).
    fleet_cmd(&w, &srv, &["devices", "allow", &id]).ok();
    let (status, body) = post(&w, &srv, "/v1/recover", &stolen, &[]);
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["serial"].as_str(), Some(serial.as_str()));
}

fn the_admin_role_comes_only_from_an_admin_certificate_in_the_inventory(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    // A CSR that asks for the administrators' URI SAN.
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
            "mallory.key",
            "-subj",
            "/CN=mallory",
            "-addext",
            "subjectAltName=URI:urn:mtlsgate:role:admin",
            "-out",
            "mallory.csr",
        ],
    )
    .ok();
    let mut a = vec![
        "cert",
        "sign",
        "mallory.csr",
        "--kind",
        "client",
        "--dir",
        "ca",
        "--out",
        "mallory.crt",
    ];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    let err = w.mg(&a).fails();
    assert!(
        err.contains("it asks for the URI SAN urn:mtlsgate:role:admin; roles of mtlsgate (urn:mtlsgate:role:…) are given only by `mtlsgate cert issue admin NAME`, never from a CSR"),
        "{err}"
    );
    assert!(!w.path("mallory.crt").exists());

    // The same CSR signed with the intermediate's key outside mtlsgate: the certificate
    // verifies against the CA and carries the URI SAN, but the inventory does not record
    // it as an administrator's, so the admin API refuses it.
    w.cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "mallory.csr",
            "-CA",
            "ca/intermediate.crt",
            "-CAkey",
            "ca/intermediate.key",
            "-copy_extensions",
            "copyall",
            "-days",
            "1",
            "-out",
            "mallory.crt",
        ],
    )
    .ok();
    let text = w
        .cmd(
            "openssl",
            &["x509", "-in", "mallory.crt", "-noout", "-text"],
        )
        .ok();
    assert!(text.contains("URI:urn:mtlsgate:role:admin"), "{text}");
    let mallory = ["--cert", "mallory.crt", "--key", "mallory.key"];
    let devices = format!("{}/v1/devices", srv.url());
    let mut a = mallory.to_vec();
    a.extend_from_slice(&["--cacert", "ca/ca.crt", &devices]);
    let (status, text) = curl(&w, &a);
    assert_eq!(status, 403, "{text}");
    let serial = pem_serial(&w, "mallory.crt");
    let error = json(&text)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let shown = error
        .strip_prefix("the client certificate CN=mallory is not an administrator's: its serial ")
        .and_then(|r| r.strip_suffix(" is not recorded in the inventory as an administrator certificate; use admin.crt from the CA directory, or one made with `mtlsgate cert issue admin NAME`"))
        .unwrap_or_else(|| panic!("{error}"));
    // (openssl's random serial may start with a zero, which pem_serial leaves out)
    assert_eq!(shown.trim_start_matches('0'), serial, "{error}");
    let (status, body) = post(
        &w,
        &srv,
        "/v1/tokens",
        &serde_json::json!({"ttl_secs": 60}),
        &mallory,
    );
    assert_eq!(status, 403, "{body}");
    // admin.crt still works.
    let (status, text) = curl(
        &w,
        &[
            "--cert",
            "ca/admin.crt",
            "--key",
            "ca/admin.key",
            "--cacert",
            "ca/ca.crt",
            &devices,
        ],
    );
    assert_eq!(status, 200, "{text}");
}

/// `n` token-less `POST /v1/enroll` of `body` in one curl: their statuses and answers.
fn enroll_many(
    w: &Work,
    srv: &CaServer,
    body: &serde_json::Value,
    n: usize,
) -> Vec<(u16, serde_json::Value)> {
    w.write("many.json", &body.to_string());
    let url = format!("{}/v1/enroll", srv.url());
    let outs: Vec<String> = (0..n).map(|i| format!("many-{i}.json")).collect();
    let mut a = vec![
        "-sS",
        "--cacert",
        "ca/ca.crt",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@many.json",
        "-w",
        "%{http_code}\n",
    ];
    for o in &outs {
        a.extend_from_slice(&["-o", o, &url]);
    }
    let codes = w.cmd("curl", &a).ok();
    let codes: Vec<u16> = codes
        .lines()
        .map(|c| c.trim().parse().expect("code"))
        .collect();
    assert_eq!(codes.len(), n);
    codes
        .into_iter()
        .zip(&outs)
        .map(|(c, o)| (c, json(&w.read(o))))
        .collect()
}

fn poll_as(w: &Work, srv: &CaServer, id: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, text) = curl(
        w,
        &[
            "--cacert",
            "ca/ca.crt",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}/v1/enroll/{id}", srv.url()),
        ],
    );
    (status, json(&text))
}

fn token_less_enrollment_is_rate_limited_capped_bounded_and_expires(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(
        &w,
        &db,
        &[
            "--pending-limit",
            "3",
            "--enroll-burst",
            "5",
            "--enroll-refill",
            "1h",
        ],
    );
    let error = |v: &serde_json::Value| v["error"].as_str().unwrap_or_default().to_string();

    // Free text is bounded: a 200 KB hostname or a long agent version is refused, and
    // costs nothing.
    let (status, body) = post(
        &w,
        &srv,
        "/v1/enroll",
        &serde_json::json!({"csr": new_csr(), "hostname": "h".repeat(200 * 1024)}),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        error(&body),
        "the hostname is 204800 bytes long; at most 253 are taken"
    );
    let (status, body) = post(
        &w,
        &srv,
        "/v1/enroll",
        &serde_json::json!({"csr": new_csr(), "agent_version": "v".repeat(65)}),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        error(&body),
        "the agent version is 65 bytes long; at most 64 are taken"
    );

    // Six from one address: three fill the approval queue, two more find it full, and
    // the sixth is over the address's five.
    let body = serde_json::json!({"csr": new_csr(), "agent_version": "curl", "hostname": "cam"});
    let answers = enroll_many(&w, &srv, &body, 6);
    let codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, vec![202, 202, 202, 429, 429, 429], "{answers:?}");
    assert_eq!(
        error(&answers[3].1),
        "the approval queue is full (3 devices wait for an operator: mtlsgate devices list --status pending); try again later, or enroll with a token (mtlsgate token create)"
    );
    assert_eq!(
        error(&answers[5].1),
        "too many enrollments without a token from 127.0.0.1 (at most 5, then one per 3600 s); try again later, or enroll with a token (mtlsgate token create)"
    );
    let pending = json(
        &fleet_cmd(
            &w,
            &srv,
            &["devices", "list", "--status", "pending", "--json"],
        )
        .ok(),
    );
    assert_eq!(pending.as_array().map(Vec::len), Some(3), "{pending}");
    // Enrollment with a token is not limited.
    let token = server_token(&w, &srv, &[]);
    let (status, body) = post(
        &w,
        &srv,
        "/v1/enroll",
        &serde_json::json!({"csr": new_csr(), "token": token}),
        &[],
    );
    assert_eq!(status, 201, "{body}");

    // Polling does not tell an unknown ID from a known one.
    let known = answers[0].1["device_id"].as_str().expect("id").to_string();
    let poll_token = answers[0].1["poll_token"]
        .as_str()
        .expect("poll token")
        .to_string();
    let (status, body) = poll_as(&w, &srv, &known, &poll_token);
    assert_eq!(status, 202, "{body}");
    let wrong = format!("mtp_{}", "A".repeat(43));
    let (status, body) = poll_as(&w, &srv, &known, &wrong);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error(&body),
        format!("the poll token does not belong to device {known}, or it was already spent")
    );
    let unknown = "0123456789abcdef0123456789abcdef.d.example.local";
    let (status, body) = poll_as(&w, &srv, unknown, &wrong);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error(&body),
        format!("the poll token does not belong to device {unknown}, or it was already spent")
    );

    // Pending registrations expire: with --pending-ttl 1s, the next token-less enrollment
    // finds the three old ones gone (and their poll tokens say so).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let short = CaServer::start_for(&w, &db, &["--pending-ttl", "1s"]);
    let fresh = serde_json::json!({"csr": new_csr(), "agent_version": "curl"});
    let (status, body) = post(&w, &short, "/v1/enroll", &fresh, &[]);
    assert_eq!(status, 202, "{body}");
    let pending = json(
        &fleet_cmd(
            &w,
            &short,
            &["devices", "list", "--status", "pending", "--json"],
        )
        .ok(),
    );
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    let (status, body) = poll_as(&w, &short, &known, &poll_token);
    assert_eq!(status, 401, "{body}");

    // The operator can switch the approval queue off.
    let closed = CaServer::start_for(&w, &db, &["--no-approval-queue"]);
    let (status, body) = post(
        &w,
        &closed,
        "/v1/enroll",
        &serde_json::json!({"csr": new_csr()}),
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error(&body),
        "this CA server enrolls devices with a token only (ca serve --no-approval-queue); ask the operator for one (mtlsgate token create)"
    );
    let token = server_token(&w, &closed, &[]);
    let (status, body) = post(
        &w,
        &closed,
        "/v1/enroll",
        &serde_json::json!({"csr": new_csr(), "token": token}),
        &[],
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn durations_from_the_wire_are_bounded() {
    let w = Work::new();
    test_ca(&w, &Db::Sqlite);
    let srv = CaServer::start_for(&w, &Db::Sqlite, &[]);
    let admin = ["--cert", "ca/admin.crt", "--key", "ca/admin.key"];
    let error = |v: &serde_json::Value| v["error"].as_str().unwrap_or_default().to_string();
    for ttl in [i64::MAX, 366 * 86_400 + 1, 0, -5] {
        let (status, body) = post(
            &w,
            &srv,
            "/v1/tokens",
            &serde_json::json!({"ttl_secs": ttl}),
            &admin,
        );
        assert_eq!(status, 400, "{ttl}: {body}");
        assert_eq!(
            error(&body),
            format!("token TTL {ttl}s is outside what this CA allows (1s to 31622400s)")
        );
    }
    let (status, body) = post(
        &w,
        &srv,
        "/v1/tokens",
        &serde_json::json!({"ttl_secs": 3600, "lifetime_secs": i64::MAX}),
        &admin,
    );
    assert_eq!(status, 400, "{body}");
    // The longest TTL taken gives a token that expires in a year, not in the past.
    let (status, body) = post(
        &w,
        &srv,
        "/v1/tokens",
        &serde_json::json!({"ttl_secs": 366 * 86_400}),
        &admin,
    );
    assert_eq!(status, 201, "{body}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = body["expires_at"].as_i64().expect("expires_at");
    assert!(expires > now + 365 * 86_400, "{body}");
}

/// The server and the real agent tell a revoked device ID the same truth as the local
/// commands: the agent cannot renew or recover (an operator must act), `token create
/// --server` refuses a token for it; after `devices allow` a bound token enrolls a new
/// agent under the same ID, and the old certificate stays revoked.
fn a_revoked_device_id_is_told_the_way_back_and_enrolls_again_after_devices_allow(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &["--min-lifetime", "1s"]);
    let token = server_token(&w, &srv, &["--device-id", "cam1", "--lifetime", "2s"]);
    let id = agent_enroll(&w, &srv, &token, "dev");
    assert_eq!(id, "cam1.d.example.local");
    let old = pem_serial(&w, "dev/client.crt");
    fleet_cmd(&w, &srv, &["devices", "revoke", "cam1"]).ok();
    let truth = format!(
        "device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token"
    );

    // The agent, once its certificate is due (here: expired), is refused with the truth.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let err = w.mg(&["agent", "run", "--once", "--dir", "dev"]).fails();
    assert!(err.contains(&truth), "{err}");
    // The admin API refuses a token for the ID with the same sentence (403).
    let err = fleet_cmd(&w, &srv, &["token", "create", "--device-id", "cam1"]).fails();
    assert!(err.contains(&truth), "{err}");

    // The way back.
    let out = fleet_cmd(&w, &srv, &["devices", "allow", "cam1"]).ok();
    assert!(
        out.contains(&format!(
            "Allowed to enroll again: device {id} stays revoked"
        )),
        "{out}"
    );
    let token = server_token(&w, &srv, &["--device-id", "cam1"]);
    assert_eq!(agent_enroll(&w, &srv, &token, "dev2"), id);
    let new = pem_serial(&w, "dev2/client.crt");
    assert_ne!(new, old);
    let show = json(&fleet_cmd(&w, &srv, &["devices", "show", "cam1", "--json"]).ok());
    assert_eq!(show["status"], "active", "{show}");
    let certs = show["certificates"].as_array().expect("certificates");
    let revoked = |serial: &str| {
        certs
            .iter()
            .find(|c| c["serial"] == serial)
            .map(|c| !c["revoked_at"].is_null())
            .unwrap_or_else(|| panic!("{serial} not in {show}"))
    };
    assert!(revoked(&old), "{show}");
    assert!(!revoked(&new), "{show}");
}
