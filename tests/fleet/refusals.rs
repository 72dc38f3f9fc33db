//! Refusals through the HTTP API, each with its status and its sentence: a revoked device
//! (and its serial in the CRLs), reused, expired, foreign and other-device tokens, bad CSRs,
//! renewal without a client certificate, unreadable requests.

use crate::util::{
    agent_enroll, curl, fleet_ca, fleet_cmd, json, new_csr, pem_serial, server_token, CaServer, Db,
    Work,
};

both!(a_revoked_device_renews_nothing_and_its_serial_is_in_the_crl);

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
    fleet_ca(&w, &db);
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
        format!("device {id} is revoked; only active devices get certificates (it was revoked for good; enroll it anew)")
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
    fleet_ca(&w, &Db::Sqlite);
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
