//! Faults: the server killed with SIGKILL in the middle of a burst of enrollments, the
//! PostgreSQL server stopped and started under a running CA server, a thousand
//! enrollments racing, the inventory's disk full under a running server (a file size
//! limit), stderr on a full disk (`ca serve`, `agent run --once`), and clients
//! that try to hold `ca serve`'s connections (silent, trickling, idle HTTP/2, many at once
//! under a low descriptor limit).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::util::{
    burst_answers, curl, enroll_bodies, enroll_burst, json, library_tokens, server_token, test_ca,
    CaServer, Db, OwnPostgres, Work,
};

both!(
    a_server_killed_mid_burst_loses_no_issued_certificate,
    a_thousand_enrollments_race
);

/// `ca list --json` on `db`: every serial, in order.
fn inventory_serials(w: &Work, db: &Db) -> Vec<String> {
    let mut a = vec!["ca", "list", "--json", "--dir", "ca"];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    json(&w.mg(&a).ok())
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["serial"].as_str().expect("serial").to_string())
        .collect()
}

/// The serials the burst's clients received (201 answers).
fn received(answers: &[serde_json::Value]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a["status"] == 201)
        .map(|a| a["body"]["serial"].as_str().expect("serial").to_string())
        .collect()
}

fn a_server_killed_mid_burst_loses_no_issued_certificate(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let tokens = library_tokens(&w, &db, 50);
    enroll_bodies(&w, &tokens, "bodies.jsonl");
    let mut srv = CaServer::start_for(&w, &db, &[]);
    let url = srv.url();
    let mut burst = enroll_burst(&w, &url, "ca/ca.crt", 50, "bodies.jsonl", "answers.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while burst_answers(&w, "answers.jsonl").len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no 20 answers: {}",
            burst.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    srv.kill9();
    let killed_at = burst_answers(&w, "answers.jsonl").len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while burst.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the burst did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answers = burst_answers(&w, "answers.jsonl");
    assert_eq!(answers.len(), 50, "{}", burst.stderr());
    let got = received(&answers);
    eprintln!(
        "{} answers when killed, {} certificates received, {} requests failed",
        killed_at,
        got.len(),
        answers.iter().filter(|a| a["status"] == 0).count()
    );
    assert!(got.len() >= 20, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["status"] == 201 || a["status"] == 0),
        "only issued certificates or no answer: {answers:?}"
    );

    // Restarted: every serial a client received is in the inventory, none twice.
    let port = srv.port.to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut a = vec!["--dir", "ca", "--listen", &listen];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    let srv = CaServer::start(&w, &a);
    let serials = inventory_serials(&w, &db);
    let unique: HashSet<&String> = serials.iter().collect();
    assert_eq!(unique.len(), serials.len(), "a serial twice: {serials:?}");
    for s in &got {
        assert!(
            unique.contains(s),
            "{s} was handed out but is not in the inventory"
        );
    }
    // And it enrolls again.
    let token = server_token(&w, &srv, &[]);
    let body = serde_json::json!({"csr": crate::util::new_csr(), "token": token});
    w.write("one.json", &body.to_string());
    let (status, text) = curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            "--data-binary",
            "@one.json",
            &format!("{}/v1/enroll", srv.url()),
        ],
    );
    assert_eq!(status, 201, "{text}");
}

fn a_thousand_enrollments_race(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let started = Instant::now();
    let tokens = library_tokens(&w, &db, 1000);
    enroll_bodies(&w, &tokens, "bodies.jsonl");
    let prepared = started.elapsed();
    let srv = CaServer::start_for(&w, &db, &[]);
    let started = Instant::now();
    let mut burst = enroll_burst(
        &w,
        &srv.url(),
        "ca/ca.crt",
        100,
        "bodies.jsonl",
        "answers.jsonl",
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while burst.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the burst did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "tokens and CSRs made in {prepared:?}; 1,000 enrollments answered in {:?}",
        started.elapsed()
    );
    let answers = burst_answers(&w, "answers.jsonl");
    assert_eq!(answers.len(), 1000, "{}", burst.stderr());
    let bad: Vec<&serde_json::Value> = answers.iter().filter(|a| a["status"] != 201).collect();
    assert!(
        bad.is_empty(),
        "{} refused, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    let ids: HashSet<&str> = answers
        .iter()
        .map(|a| a["body"]["device_id"].as_str().expect("id"))
        .collect();
    let serials: HashSet<String> = received(&answers).into_iter().collect();
    assert_eq!((ids.len(), serials.len()), (1000, 1000));
    let inventory: HashSet<String> = inventory_serials(&w, &db).into_iter().collect();
    assert!(serials.is_subset(&inventory));
    drop(srv);
}

/// The inventory's PostgreSQL stops under a running server: enrollment answers 503 with a
/// sentence (soon, not after minutes), the server stays up, and once PostgreSQL is back
/// enrollments work again without a restart.
#[test]
fn enrollment_answers_503_while_postgresql_is_away_and_works_once_it_is_back() {
    let pg = OwnPostgres::start();
    let db = Db::Postgres(pg.url());
    let w = Work::new();
    test_ca(&w, &db);
    let mut srv = CaServer::start_for(&w, &db, &[]);
    let t1 = server_token(&w, &srv, &[]);
    let t2 = server_token(&w, &srv, &[]);
    let enroll = |token: &str| {
        w.write(
            "body.json",
            &serde_json::json!({"csr": crate::util::new_csr(), "token": token}).to_string(),
        );
        let (status, text) = curl(
            &w,
            &[
                "--cacert",
                "ca/ca.crt",
                "--data-binary",
                "@body.json",
                &format!("{}/v1/enroll", srv.url()),
            ],
        );
        (status, json(&text))
    };
    assert_eq!(enroll(&t1).0, 201);

    pg.stop();
    let asked = Instant::now();
    let (status, body) = enroll(&t2);
    let took = asked.elapsed();
    assert_eq!(status, 503, "{body}");
    let e = body["error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with("the inventory database cannot be reached right now (")
            && e.ends_with("); try again once it is back"),
        "{e}"
    );
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    let headers = w
        .cmd(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "--cacert",
                "ca/ca.crt",
                "--data-binary",
                "@body.json",
                &format!("{}/v1/enroll", srv.url()),
            ],
        )
        .ok();
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 5"),
        "{headers}"
    );
    let (status, _) = curl(
        &w,
        &["--cacert", "ca/ca.crt", &format!("{}/healthz", srv.url())],
    );
    assert_eq!(status, 200, "the server is still up");

    pg.start_again();
    let (status, body) = enroll(&t2);
    assert_eq!(status, 201, "{body}");
    assert!(
        srv.proc.child.try_wait().expect("wait").is_none(),
        "never restarted"
    );
    assert_eq!(srv.proc.stop(), 0);
}

/// `mtlsgate ARGS` in `w` with its stderr on /dev/full (a full log disk), stdout to `out`.
fn spawn_logging_to_a_full_disk(w: &Work, args: &[&str], out: &str) -> std::process::Child {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    std::process::Command::new(crate::util::bin())
        .args(args)
        .current_dir(w.root())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(w.path(out)).expect("stdout file"))
        .stderr(full)
        .spawn()
        .expect("spawn mtlsgate")
}

#[test]
fn ca_serve_keeps_serving_when_its_log_disk_is_full() {
    let db = Db::sqlite();
    let w = Work::new();
    test_ca(&w, &db);
    let port = crate::util::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut a = vec!["ca", "serve", "--dir", "ca", "--listen", &listen];
    let f = db.flags();
    a.extend(crate::util::s(&f));
    let mut child = spawn_logging_to_a_full_disk(&w, &a, "ca-serve.out");
    let healthz = format!("https://localhost:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("ca serve exited ({st}) with its stderr on a full disk");
        }
        if curl(&w, &["--cacert", "ca/ca.crt", &healthz]).0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ca serve never answered /healthz"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every request logs a line: the server keeps answering.
    for _ in 0..5 {
        assert_eq!(curl(&w, &["--cacert", "ca/ca.crt", &healthz]).0, 200);
    }
    assert!(child.try_wait().expect("wait").is_none(), "ca serve exited");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn agent_run_once_renews_and_runs_its_hook_when_its_log_disk_is_full() {
    let db = Db::sqlite();
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &["--min-lifetime", "1s"]);
    let token = server_token(&w, &srv, &["--lifetime", "3s"]);
    crate::util::agent_enroll(&w, &srv, &token, "dev");
    let first = crate::util::pem_serial(&w, "dev/client.crt");
    // Past expiry: `--once` must get a new certificate (by recovery).
    std::thread::sleep(Duration::from_millis(3500));
    let mut child = spawn_logging_to_a_full_disk(
        &w,
        &[
            "agent",
            "run",
            "--once",
            "--dir",
            "dev",
            "--on-renew",
            "echo renewed >> hook.log",
        ],
        "agent.out",
    );
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(0), "agent run --once: {st}");
    assert_ne!(crate::util::pem_serial(&w, "dev/client.crt"), first);
    assert_eq!(w.read("hook.log"), "renewed\n");
}

fn peer(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/").to_string() + name
}

/// `python3 tests/peers/SCRIPT PORT ARGS…` in `w`, its JSON answer.
fn python_peer(w: &Work, script: &str, port: u16, args: &[&str]) -> serde_json::Value {
    let script = peer(script);
    let port = port.to_string();
    let mut a = vec![script.as_str(), port.as_str()];
    a.extend_from_slice(args);
    json(&w.cmd("python3", &a).ok())
}

/// How long after it began the peer saw the server close its connection.
fn closed_after(r: &serde_json::Value) -> f64 {
    r["closed_after"].as_f64().unwrap_or(99.0)
}

#[test]
fn ca_serve_closes_connections_that_miss_their_deadlines() {
    let db = Db::sqlite();
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(
        &w,
        &db,
        &[
            "--first-request-timeout",
            "2s",
            "--header-timeout",
            "2s",
            "--body-timeout",
            "2s",
            "--idle-timeout",
            "2s",
        ],
    );
    let ca = ["--ca", "ca/ca.crt"];
    // TLS, then nothing.
    let r = python_peer(&w, "rawtls.py", srv.port, &[ca[0], ca[1], "--send", ""]);
    assert!(
        closed_after(&r) < 20.0,
        "a silent connection was not closed at the 2 s first-request deadline: {r}"
    );
    // A request head at once, its body one byte every 0.5 s.
    let r = python_peer(
        &w,
        "slowclients.py",
        srv.port,
        &["body", ca[0], ca[1], "--delay", "0.5"],
    );
    assert!(
        closed_after(&r) < 20.0,
        "a trickled body was not cut off at the 2 s body deadline: {r}"
    );
    // HTTP/2: SETTINGS and one PING, then nothing.
    let r = python_peer(
        &w,
        "h2client.py",
        srv.port,
        &["ping", ca[0], ca[1], "--delay", "30"],
    );
    assert!(
        closed_after(&r) < 20.0,
        "an idle HTTP/2 connection was not closed at the 2 s first-request deadline: {r}"
    );
    // HTTP/2: a HEADERS frame one byte every 0.5 s, never finished in time.
    let r = python_peer(
        &w,
        "h2client.py",
        srv.port,
        &["trickle", ca[0], ca[1], "--delay", "0.5"],
    );
    assert!(
        closed_after(&r) < 20.0,
        "an unfinished HEADERS frame was not cut off at the 2 s header deadline: {r}"
    );
    assert!(r["sent"].as_u64() < r["total"].as_u64(), "{r}");
    // HTTP/1.1: a trickled head.
    let r = python_peer(
        &w,
        "rawtls.py",
        srv.port,
        &[
            ca[0],
            ca[1],
            "--send",
            "GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nUser-Agent: slowslowslowslowslow\\r\\n\\r\\n",
            "--delay",
            "0.5",
        ],
    );
    assert!(
        closed_after(&r) < 20.0,
        "a trickled request head was not cut off at the 2 s header deadline: {r}"
    );
    // A kept-alive connection after its request: closed when idle.
    let r = python_peer(
        &w,
        "rawtls.py",
        srv.port,
        &[
            ca[0],
            ca[1],
            "--send",
            "GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n",
        ],
    );
    assert!(
        r["response"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP/1.1 200"),
        "{r}"
    );
    assert!(
        closed_after(&r) < 20.0,
        "an idle kept-alive connection was not closed at the 2 s idle deadline: {r}"
    );
    // And the server still serves.
    let (status, _) = curl(
        &w,
        &["--cacert", "ca/ca.crt", &format!("{}/healthz", srv.url())],
    );
    assert_eq!(status, 200);
}

#[test]
fn idle_connections_from_one_address_do_not_keep_ca_serve_unreachable_under_a_low_descriptor_limit()
{
    use std::io::BufRead;
    let db = Db::sqlite();
    let w = Work::new();
    test_ca(&w, &db);
    // 64 descriptors; 60 connections that finish TLS and send nothing, from 127.0.0.2.
    let bin = crate::util::bin();
    let mut a = vec!["--nofile=64:64", bin.as_str(), "ca", "serve"];
    a.extend_from_slice(&["--dir", "ca", "--listen", "127.0.0.1:0"]);
    // A long first-request deadline: the per-address cap is what frees the server here.
    a.extend_from_slice(&["--max-connections-per-address", "8"]);
    a.extend_from_slice(&["--first-request-timeout", "60s"]);
    let mut srv = crate::util::Proc::spawn(w.root(), "prlimit", &a, &w.path("ca-serve.out"));
    let rest = srv.wait_for("listening on 127.0.0.1:");
    let port: u16 = rest
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {rest:?}"));
    let script = peer("slowclients.py");
    let mut hold = std::process::Command::new("python3")
        .args([
            script.as_str(),
            &port.to_string(),
            "hold",
            "--ca",
            "ca/ca.crt",
            "--count",
            "60",
            "--source",
            "127.0.0.2",
        ])
        .current_dir(w.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut err = std::io::BufReader::new(hold.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.starts_with("holding") {
        line.clear();
        if err.read_line(&mut line).expect("read") == 0 {
            panic!("the holding client ended early");
        }
    }
    // While they are held, another client is served.
    let (status, text) = curl(
        &w,
        &[
            "--max-time",
            "10",
            "--cacert",
            "ca/ca.crt",
            &format!("https://localhost:{port}/healthz"),
        ],
    );
    drop(hold.stdin.take());
    let out = hold.wait_with_output().expect("wait");
    let held = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        status,
        200,
        "/healthz unreachable while {held} idle connections were held: {text}\n{}",
        srv.stderr()
    );
    let opened = held["opened"].as_u64().unwrap_or(0);
    assert!(
        (1..=8).contains(&opened),
        "the per-address cap holds 8: {held}"
    );
    assert!(
        srv.child.try_wait().expect("wait").is_none(),
        "ca serve exited"
    );
}

#[test]
fn enrollment_on_a_full_inventory_disk_is_503_and_works_once_there_is_space() {
    let db = Db::sqlite();
    let w = Work::new();
    test_ca(&w, &db);
    // SIGXFSZ ignored (as it is inherited through exec), so that a file size limit makes
    // writes fail instead of killing the server: the inventory's disk "fills up".
    let bin = crate::util::bin();
    let mut proc = crate::util::Proc::spawn(
        w.root(),
        "sh",
        &[
            "-c",
            "trap '' XFSZ; exec \"$@\"",
            "sh",
            &bin,
            "ca",
            "serve",
            "--dir",
            "ca",
            "--listen",
            "127.0.0.1:0",
        ],
        &w.path("ca-serve.out"),
    );
    let rest = proc.wait_for("listening on 127.0.0.1:");
    let port: u16 = rest
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {rest:?}"));
    let fingerprint = proc
        .wait_for("root CA SHA-256 fingerprint: ")
        .trim()
        .to_string();
    let srv = CaServer {
        proc,
        port,
        fingerprint,
    };
    let pid = srv.proc.child.id().to_string();
    let token = server_token(&w, &srv, &[]);
    let body = serde_json::json!({"csr": crate::util::new_csr(), "token": token});
    w.write("enroll.json", &body.to_string());
    let enroll = |w: &Work| {
        curl(
            w,
            &[
                "-D",
                "headers.txt",
                "--cacert",
                "ca/ca.crt",
                "--data-binary",
                "@enroll.json",
                &format!("{}/v1/enroll", srv.url()),
            ],
        )
    };
    // The write-ahead log may not grow: the disk is full.
    let wal = std::fs::metadata(w.path("ca/inventory.db-wal"))
        .expect("inventory.db-wal")
        .len();
    w.cmd("prlimit", &["--pid", &pid, &format!("--fsize={wal}:")])
        .ok();
    let (status, text) = enroll(&w);
    assert_eq!(status, 503, "{text}\n{}", srv.proc.stderr());
    let headers = w.read("headers.txt").to_ascii_lowercase();
    assert!(headers.contains("retry-after:"), "{headers}");
    assert!(
        json(&text)["error"]
            .as_str()
            .is_some_and(|e| e.contains("free space")),
        "{text}"
    );
    // Space again: the same token enrolls (it was not spent), without a restart.
    w.cmd("prlimit", &["--pid", &pid, "--fsize=unlimited:"])
        .ok();
    let (status, text) = enroll(&w);
    assert_eq!(status, 201, "{text}\n{}", srv.proc.stderr());
}
