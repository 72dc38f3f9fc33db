//! Renewal in place while a peer that requires client certificates keeps accepting the
//! device, recovery after expiry, and a cloned state directory caught and quarantined.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::util::{
    agent_enroll, fleet_cmd, free_port, json, pem_serial, server_token, test_ca, CaServer, Db,
    Proc, Work,
};

both!(
    the_agent_renews_in_place_while_a_strict_peer_keeps_accepting_it,
    a_reader_of_the_resolved_set_never_sees_a_key_of_another_certificate,
    an_expired_device_recovers_and_its_clone_is_quarantined,
    a_lost_answer_retries_once_and_a_superseded_certificate_quarantines
);

/// curl presenting the device's files to `https://localhost:PORT/` by their stable paths
/// (`--cert DIR/client.crt --key DIR/client.key`, as a person would): the HTTP status (0
/// when the handshake failed).
///
/// curl opens the certificate and then the key; when a renewal's one swap of `..data` falls
/// between those two opens it loads a certificate and a key of two sets and stops before
/// the handshake (exit 58, a problem with the local certificate). That is the documented limit
/// of a reader that opens the two files at two moments: the next try reads one set, so
/// such a request is tried once more. The peer never sees a mismatched pair.
fn as_device(w: &Work, dir: &str, port: u16) -> u16 {
    let url = format!("https://localhost:{port}/");
    let crt = format!("{dir}/client.crt");
    let key = format!("{dir}/client.key");
    let args = [
        "-sS",
        "--max-time",
        "20",
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        "--cacert",
        "ca/ca.crt",
        "--cert",
        &crt,
        "--key",
        &key,
        &url,
    ];
    let mut r = w.cmd("curl", &args);
    // 58: curl could not use the local certificate and key (it never reached the peer).
    if r.code == 58 {
        r = w.cmd("curl", &args);
    }
    r.stdout.trim().parse().unwrap_or(0)
}

fn the_agent_renews_in_place_while_a_strict_peer_keeps_accepting_it(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    crate::util::fleet_server_cert(&w, &db);
    let srv = CaServer::start_for(&w, &db, &["--min-lifetime", "1s"]);
    let token = server_token(&w, &srv, &["--lifetime", "6s"]);
    let id = agent_enroll(&w, &srv, &token, "dev");

    // A peer that requires a client certificate of this CA and fails the handshake otherwise.
    let port = free_port();
    let accept = port.to_string();
    let _peer = Proc::spawn(
        w.root(),
        "openssl",
        &[
            "s_server",
            "-accept",
            &accept,
            "-cert",
            "localhost.crt",
            "-key",
            "localhost.key",
            "-CAfile",
            "ca/ca.crt",
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
        ],
        &w.path("s_server.out"),
    );
    crate::util::eventually("s_server listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(as_device(&w, "dev", port), 200);
    let (without, _) = crate::util::curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            &format!("https://localhost:{port}/"),
        ],
    );
    assert_eq!(
        without, 0,
        "the peer refuses a client without a certificate"
    );

    let mut agent = Proc::spawn(
        w.root(),
        &crate::util::bin(),
        &[
            "agent",
            "run",
            "--dir",
            "dev",
            "--on-renew",
            "echo renewed >> hook.log",
        ],
        &w.path("agent.out"),
    );
    let mut serials = HashSet::from([pem_serial(&w, "dev/client.crt")]);
    let mut requests = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w
        .path("hook.log")
        .exists()
        .then(|| w.read("hook.log").lines().count())
        < Some(3)
    {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 renewals in 60 s:\n{}",
            agent.stderr()
        );
        assert_eq!(
            as_device(&w, "dev", port),
            200,
            "request {requests} failed; agent:\n{}",
            agent.stderr()
        );
        requests += 1;
        serials.insert(pem_serial(&w, "dev/client.crt"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.stop(), 0, "{}", agent.stderr());
    assert_eq!(as_device(&w, "dev", port), 200);
    serials.insert(pem_serial(&w, "dev/client.crt"));
    let hook = w.read("hook.log");
    assert!(
        hook.lines().count() >= 3 && hook.lines().all(|l| l == "renewed"),
        "{hook}"
    );
    assert!(serials.len() >= 4, "initial + 3 renewals, saw {serials:?}");
    assert!(
        requests >= 10,
        "only {requests} requests during the renewals"
    );
    // The inventory has each of them, all the device's, the newest current.
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    let recorded: HashSet<String> = shown["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| c["serial"].as_str().expect("serial").to_string())
        .collect();
    assert!(serials.is_subset(&recorded), "{serials:?} vs {recorded:?}");
    assert_eq!(
        shown["cert_serial"],
        pem_serial(&w, "dev/client.crt").as_str()
    );
    let renewals = shown["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "renew")
        .count();
    assert!(renewals >= 3, "{shown}");
}

fn an_expired_device_recovers_and_its_clone_is_quarantined(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &["--min-lifetime", "1s"]);
    let token = server_token(&w, &srv, &["--lifetime", "3s"]);
    let id = agent_enroll(&w, &srv, &token, "dev");
    let first = pem_serial(&w, "dev/client.crt");

    // Offline past expiry.
    std::thread::sleep(Duration::from_millis(3500));
    w.cmd(
        "openssl",
        &["x509", "-in", "dev/client.crt", "-noout", "-checkend", "0"],
    )
    .fails();
    // A copy of the state directory, taken before the recovery.
    w.cmd("cp", &["-a", "dev", "dev-copy"]).ok();

    let r = w.mg(&["agent", "run", "--once", "--dir", "dev"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("recovered"), "{}", r.stderr);
    let second = pem_serial(&w, "dev/client.crt");
    assert_ne!(first, second);
    let verified = w
        .cmd(
            "openssl",
            &[
                "verify",
                "-CAfile",
                "dev/ca.crt",
                "-untrusted",
                "dev/client.crt",
                "dev/client.crt",
            ],
        )
        .ok();
    assert_eq!(verified.trim(), "dev/client.crt: OK");

    // The copy recovers with a recovery token that was replaced: a clone.
    let err = w
        .mg(&["agent", "run", "--once", "--dir", "dev-copy"])
        .fails();
    assert!(
        err.contains(&format!("recovery refused by {}: device {id} presented a recovery token that was already replaced", srv.url())),
        "{err}"
    );
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "quarantined", "{shown}");
    let clone = shown["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .find(|e| e["action"] == "clone")
        .unwrap_or_else(|| panic!("no clone entry: {shown}"));
    assert!(
        clone["detail"]
            .as_str()
            .is_some_and(|d| d.contains("device quarantined")),
        "{clone}"
    );

    // The original is refused too now, saying why, until an operator allows it again.
    let state = json(&w.read("dev/agent.json"));
    let due = state["next_renewal"].as_i64().expect("next_renewal");
    while time::OffsetDateTime::now_utc().unix_timestamp() < due {
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = w.mg(&["agent", "run", "--once", "--dir", "dev"]).fails();
    assert!(
        err.contains(&format!(
            "device {id} is quarantined; only active devices get certificates"
        )),
        "{err}"
    );
    assert!(err.contains("refused by"), "{err}");
}

/// `POST /v1/renew` with curl, presenting `NAME.crt`/`NAME.key` and a CSR for a new key
/// `NEW.key`; on 200 the new chain is written to `NEW.crt`. The status and the answer.
fn renew_as(w: &Work, srv: &CaServer, name: &str, new: &str) -> (u16, serde_json::Value) {
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
            &format!("{new}.key"),
            "-subj",
            "/CN=x",
            "-out",
            &format!("{new}.csr"),
        ],
    )
    .ok();
    let body = serde_json::json!({"csr": w.read(&format!("{new}.csr")), "agent_version": "curl"});
    w.write("renew.json", &body.to_string());
    let (status, text) = crate::util::curl(
        w,
        &[
            "--cacert",
            "ca/ca.crt",
            "--cert",
            &format!("{name}.crt"),
            "--key",
            &format!("{name}.key"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@renew.json",
            &format!("{}/v1/renew", srv.url()),
        ],
    );
    let answer = json(&text);
    if status == 200 {
        w.write(
            &format!("{new}.crt"),
            answer["certificate"].as_str().expect("certificate"),
        );
    }
    (status, answer)
}

fn a_lost_answer_retries_once_and_a_superseded_certificate_quarantines(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &[]);
    let id = agent_enroll(&w, &srv, &token, "dev");
    w.cmd("cp", &["dev/client.crt", "a.crt"]).ok();
    w.cmd("cp", &["dev/client.key", "a.key"]).ok();
    let a = pem_serial(&w, "a.crt");

    // A renews to B; the answer is "lost", and A renews again, to C: the retry works once,
    // and B, which nobody should hold, is revoked.
    let (status, body) = renew_as(&w, &srv, "a", "b");
    assert_eq!(status, 200, "{body}");
    let b = pem_serial(&w, "b.crt");
    let (status, body) = renew_as(&w, &srv, "a", "c");
    assert_eq!(status, 200, "{body}");
    let c = pem_serial(&w, "c.crt");
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["cert_serial"], c.as_str(), "{shown}");
    let cert = |shown: &serde_json::Value, serial: &str| {
        shown["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .find(|x| x["serial"] == serial)
            .cloned()
            .unwrap_or_else(|| panic!("no {serial} in {shown}"))
    };
    assert_eq!(
        cert(&shown, &b)["revocation_reason"],
        "superseded",
        "{shown}"
    );
    assert!(cert(&shown, &a)["revoked_at"].is_null(), "{shown}");

    // B turns up after all: two holders of one identity. Refused, and the device is
    // quarantined (audit `clone`), so that C renews nothing either.
    let (status, body) = renew_as(&w, &srv, "b", "d");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        format!("device {id} renewed with certificate {b}, which was already replaced by {c}: another device holds the same identity (a clone). The device is quarantined; after checking it, an operator can allow it again (mtlsgate devices allow {id})")
    );
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "quarantined", "{shown}");
    assert!(
        shown["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .any(|e| e["action"] == "clone" && e["serial"] == b.as_str()),
        "{shown}"
    );
    let (status, body) = renew_as(&w, &srv, "c", "e");
    assert_eq!(status, 403, "{body}");

    // Allowed again, the holder of C renews; after that, A (superseded twice) quarantines.
    fleet_cmd(&w, &srv, &["devices", "allow", &id]).ok();
    let (status, body) = renew_as(&w, &srv, "c", "f");
    assert_eq!(status, 200, "{body}");
    let (status, body) = renew_as(&w, &srv, "a", "g");
    assert_eq!(status, 403, "{body}");
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "quarantined", "{shown}");
}

/// Loads the key and certificate with Python's `ssl` (OpenSSL refuses a key that is not the
/// certificate's) in a tight loop until `stop` exists, as a program that resolves the
/// directory once would: `realpath` of `client.key`, then both files from that directory.
/// A set directory removed between the two steps is counted as `gone` (read again).
const PAIR_READER: &str = r#"
import json, os, ssl, sys
state, stop, out = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
reads = mismatches = gone = 0
errors = []
while not os.path.exists(stop):
    d = os.path.dirname(os.path.realpath(os.path.join(state, "client.key")))
    try:
        ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
        reads += 1
    except FileNotFoundError:
        gone += 1
    except ssl.SSLError as e:
        mismatches += 1
        errors.append(str(e))
json.dump({"reads": reads, "mismatches": mismatches, "gone": gone, "errors": errors[:5]}, open(out, "w"))
"#;

/// Issue 15 item 11: with the key and the certificate renamed one after the other, a reader
/// between the two renames loaded a new key with the old certificate. Now a renewal swaps
/// the whole set with one rename, and a reader that resolves it once never sees a mix.
fn a_reader_of_the_resolved_set_never_sees_a_key_of_another_certificate(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    crate::util::fleet_server_cert(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &["--lifetime", "1h"]);
    agent_enroll(&w, &srv, &token, "dev");
    w.write("reader.py", PAIR_READER);
    let mut reader = Proc::spawn(
        w.root(),
        "python3",
        &["reader.py", "dev", "stop", "reader.json"],
        &w.path("reader.out"),
    );
    let mut agent = Proc::spawn(
        w.root(),
        &crate::util::bin(),
        &[
            "agent",
            "run",
            "--dir",
            "dev",
            "--on-renew",
            "echo renewed >> hook.log",
        ],
        &w.path("agent.out"),
    );
    let renewals = || {
        if w.path("hook.log").exists() {
            w.read("hook.log").lines().count()
        } else {
            0
        }
    };
    let mut serials = HashSet::from([pem_serial(&w, "dev/client.crt")]);
    // SIGHUP renews at once; each renewal is awaited before the next is asked for.
    const RENEWALS: usize = 40;
    for n in 1..=RENEWALS {
        agent.signal("HUP");
        crate::util::eventually(&format!("renewal {n}"), || renewals() >= n);
        serials.insert(pem_serial(&w, "dev/client.crt"));
    }
    w.write("stop", "");
    let mut exited = None;
    crate::util::eventually("the reader's report", || {
        exited = reader.child.try_wait().ok().flatten();
        exited.is_some()
    });
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "{}",
        reader.stderr()
    );
    assert_eq!(agent.stop(), 0, "{}", agent.stderr());
    assert!(serials.len() > RENEWALS, "{serials:?}");
    let report = json(&w.read("reader.json"));
    assert_eq!(report["mismatches"], 0, "{report}");
    assert!(report["reads"].as_u64() > Some(RENEWALS as u64), "{report}");
    // The paths a person configures still lead to the current pair.
    assert!(std::fs::read_link(w.path("dev/client.key")).is_ok());
    let r = w.cmd(
        "openssl",
        &["x509", "-noout", "-pubkey", "-in", "dev/client.crt"],
    );
    let k = w.cmd("openssl", &["pkey", "-pubout", "-in", "dev/client.key"]);
    assert_eq!(r.stdout, k.stdout, "{} {}", r.stderr, k.stderr);
}
