//! Enrollment: with a token and the root's fingerprint, through the approval queue, and the
//! the CA-bundle guide's command feeding a real nginx.

use std::time::{Duration, Instant};

use crate::util::{
    agent_enroll, curl, fleet_cmd, json, mode, server_token, test_ca, CaServer, Db, Nginx, Proc,
    Work,
};

both!(
    a_token_and_the_root_fingerprint_enroll_a_device,
    the_approval_queue_approves_and_denies
);

fn a_token_and_the_root_fingerprint_enroll_a_device(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let mut srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &["--tag", "lab"]);
    assert!(token.starts_with("mtg_"), "{token}");
    let id = agent_enroll(&w, &srv, &token, "dev");
    assert!(id.ends_with(".d.example.local") && id.len() > 40, "{id}");

    // The three files curl takes, with their modes; the chain is leaf + intermediate.
    assert_eq!(mode(&w.path("dev/client.crt")), 0o644);
    assert_eq!(mode(&w.path("dev/client.key")), 0o600);
    assert_eq!(mode(&w.path("dev/ca.crt")), 0o644);
    assert_eq!(
        w.read("dev/client.crt")
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
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
    let subject = w
        .cmd(
            "openssl",
            &["x509", "-in", "dev/client.crt", "-noout", "-subject"],
        )
        .ok();
    assert_eq!(subject.trim(), format!("subject=CN = {id}"));

    // The certificate works for mTLS with the server; the admin API refuses it (no admin).
    let dev = [
        "--cacert",
        "dev/ca.crt",
        "--cert",
        "dev/client.crt",
        "--key",
        "dev/client.key",
    ];
    let healthz = format!("{}/healthz", srv.url());
    let mut a = dev.to_vec();
    a.push(&healthz);
    assert_eq!(curl(&w, &a), (200, "ok\n".into()));
    let devices_url = format!("{}/v1/devices", srv.url());
    let mut a = dev.to_vec();
    a.push(&devices_url);
    let (status, body) = curl(&w, &a);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        json(&body)["error"],
        format!("the client certificate CN={id} is not an administrator's (it has no URI SAN urn:mtlsgate:role:admin); use admin.crt from the CA directory, or one made with `mtlsgate cert issue admin NAME`")
    );
    let (status, body) = curl(&w, &["--cacert", "ca/ca.crt", &devices_url]);
    assert_eq!(status, 401, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("and no client certificate was presented")),
        "{body}"
    );

    // The fleet commands print the same through the admin API as from the CA directory.
    let local = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--dir", "ca"]);
        let f = db.flags();
        a.extend(crate::util::s(&f));
        w.mg(&a).ok()
    };
    for args in [
        &["devices", "list"][..],
        &["devices", "list", "--json"],
        &["devices", "show", &id],
        &["devices", "show", &id, "--json"],
    ] {
        let remote = fleet_cmd(&w, &srv, args).ok();
        assert_eq!(remote, local(args), "{args:?}");
    }
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id, "--json"]).ok());
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["tags"], serde_json::json!(["lab"]));
    // The served certificate is in the inventory.
    let serial = crate::util::pem_serial(&w, "dev/client.crt");
    assert_eq!(shown["cert_serial"], serial.as_str());
    let listed = local(&["ca", "list", "--json"]);
    assert!(listed.contains(&serial), "{listed}");
    // One log line per request, with the device ID.
    let logged = |l: &str| l.contains("POST /v1/enroll 201 device=") && l.contains(&id);
    crate::util::eventually("the enrollment's log line", || {
        srv.proc.stderr().lines().any(logged)
    });
    let line = srv
        .proc
        .stderr()
        .lines()
        .find(|l| logged(l))
        .map(str::to_string);
    let line = line.expect("logged");
    assert!(
        line.ends_with("ms") && line.contains(" 127.0.0.1:"),
        "{line}"
    );
    // The admin API with curl: a short device ID, an empty body.
    let short = id.split('.').next().expect("short");
    let (status, body) = curl(
        &w,
        &[
            "-X",
            "POST",
            "--cacert",
            "ca/ca.crt",
            "--cert",
            "ca/admin.crt",
            "--key",
            "ca/admin.key",
            &format!("{}/v1/devices/{short}/deny", srv.url()),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "denied");
    assert_eq!(json(&body)["id"], id.as_str());
    // The listing without `limit` is one array (sent a page at a time), the same devices
    // as the pages of one row each.
    let admin = [
        "--cacert",
        "ca/ca.crt",
        "--cert",
        "ca/admin.crt",
        "--key",
        "ca/admin.key",
    ];
    let list = |query: &str| {
        let mut a = admin.to_vec();
        let url = format!("{devices_url}{query}");
        a.push(&url);
        let (status, body) = curl(&w, &a);
        assert_eq!(status, 200, "{body}");
        json(&body)
    };
    let whole = list("");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|d| d["id"].as_str().expect("id").to_string())
            .collect()
    };
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let page = list(&query);
        paged.extend(ids(&page["items"]));
        match page["next"].as_str() {
            Some(c) => query = format!("?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids(&whole), paged);
    assert!(paged.contains(&id), "{paged:?}");
    assert_eq!(ids(&list("?status=denied")), std::slice::from_ref(&id));
    assert_eq!(srv.proc.stop(), 0, "{}", srv.proc.stderr());
}

/// `devices list --status pending --json --server`: the IDs.
fn pending(w: &Work, srv: &CaServer) -> Vec<String> {
    let v = json(
        &fleet_cmd(
            w,
            srv,
            &["devices", "list", "--status", "pending", "--json"],
        )
        .ok(),
    );
    v.as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}

/// Waits until a new pending device other than `known` shows, and returns it.
fn wait_pending(w: &Work, srv: &CaServer, known: &[String], agent: &mut Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(id) = pending(w, srv).into_iter().find(|i| !known.contains(i)) {
            return id;
        }
        if let Ok(Some(st)) = agent.child.try_wait() {
            panic!("the agent exited ({st}): {}", agent.stderr());
        }
        assert!(Instant::now() < deadline, "no pending device");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(p: &mut Proc) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "still waiting: {}", p.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn the_approval_queue_approves_and_denies(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let url = srv.url();
    let enroll = |dir: &str| {
        Proc::spawn(
            w.root(),
            &crate::util::bin(),
            &[
                "agent",
                "enroll",
                "--server",
                &url,
                "--ca-file",
                "ca/ca.crt",
                "--dir",
                dir,
            ],
            &w.path(&format!("{dir}.out")),
        )
    };
    // Without a token the agent registers and waits; the operator sees it pending.
    let mut a1 = enroll("dev1");
    let id1 = wait_pending(&w, &srv, &[], &mut a1);
    let table = fleet_cmd(&w, &srv, &["devices", "list"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id1) && l.contains(" pending ")),
        "{table}"
    );
    assert!(!w.path("dev1/client.crt").exists());
    let out = fleet_cmd(&w, &srv, &["devices", "approve", &id1]).ok();
    assert_eq!(
        out.lines().next(),
        Some(format!("Approved: device {id1} is active").as_str())
    );
    assert_eq!(wait_exit(&mut a1), 0, "{}", a1.stderr());
    let printed = std::fs::read_to_string(w.path("dev1.out")).unwrap_or_default();
    assert!(printed.contains(&format!("enrolled as {id1}")), "{printed}");
    assert_eq!(w.mg(&["agent", "whoami", "--dir", "dev1"]).ok().trim(), id1);
    assert_eq!(mode(&w.path("dev1/client.key")), 0o600);
    assert!(!w.path("dev1/pending.json").exists());

    // A denied one exits non-zero, saying so, and installs nothing.
    let mut a2 = enroll("dev2");
    let id2 = wait_pending(&w, &srv, std::slice::from_ref(&id1), &mut a2);
    fleet_cmd(
        &w,
        &srv,
        &["devices", "deny", &id2, "--reason", "unknown box"],
    )
    .ok();
    assert_ne!(wait_exit(&mut a2), 0);
    // The exited agent's last lines may still be on their way from the pipe.
    let said = format!(
        "the enrollment of {id2} was denied by {url}: device {id2} is denied; only active devices get certificates (an operator denied it)"
    );
    crate::util::eventually("the agent's error", || a2.stderr().contains(&said));
    assert!(!w.path("dev2/client.crt").exists() && !w.path("dev2/client.key").exists());
    let shown = json(&fleet_cmd(&w, &srv, &["devices", "show", &id2, "--json"]).ok());
    assert_eq!(shown["status"], "denied");
    let audit: Vec<&str> = shown["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(audit, ["register", "deny"]);
}

/// The CA-bundle guide: the bundle from `GET /v0.2/ca-bundle`, via curl and jq, is what a real
/// nginx trusts: an enrolled device gets 200, a certificate from another CA gets 400.
#[test]
fn the_guides_bundle_command_feeds_nginx() {
    let w = Work::new();
    test_ca(&w, &Db::Sqlite);
    crate::util::fleet_server_cert(&w, &Db::Sqlite);
    let srv = CaServer::start_for(&w, &Db::Sqlite, &[]);
    let token = server_token(&w, &srv, &[]);
    let id = agent_enroll(&w, &srv, &token, "dev");

    // The guide's command verbatim. Our CA is private, so curl is told to trust it through
    // CURL_CA_BUNDLE (the same as `--cacert ca/ca.crt`), leaving the command as written.
    let cmd = format!(
        "curl -s https://localhost:{}/v0.2/ca-bundle | jq -r '.ca_bundle' > cert-bundle.crt",
        srv.port
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .current_dir(w.root())
        .env("CURL_CA_BUNDLE", w.path("ca/ca.crt"))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // jq -r ends the string with a newline of its own.
    assert_eq!(
        w.read("cert-bundle.crt").trim_end(),
        w.read("ca/ca.crt").trim_end()
    );

    crate::util::foreign_client(&w, "Elsewhere", "intruder");
    let nginx = Nginx::start(
        &w,
        r#"server_name localhost;
    ssl_certificate {root}/localhost.crt;
    ssl_certificate_key {root}/localhost.key;
    ssl_client_certificate {root}/cert-bundle.crt;
    ssl_verify_depth 2;
    ssl_verify_client on;
    location / {
      if ($ssl_client_verify != "SUCCESS") { return 403; }
      return 200 "hello $ssl_client_s_dn\n";
    }"#,
    );
    let url = nginx.url("/");
    let (status, body) = curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            "--cert",
            "dev/client.crt",
            "--key",
            "dev/client.key",
            &url,
        ],
    );
    assert_eq!(
        (status, body.as_str()),
        (200, format!("hello CN={id}\n").as_str())
    );
    let (status, _) = curl(
        &w,
        &[
            "--cacert",
            "ca/ca.crt",
            "--cert",
            "o/intruder.crt",
            "--key",
            "o/intruder.key",
            &url,
        ],
    );
    assert_eq!(status, 400, "a certificate from another CA");
    let (status, _) = curl(&w, &["--cacert", "ca/ca.crt", &url]);
    assert_eq!(status, 400, "no certificate");
}

/// Seconds from now until the first certificate of `file` expires (openssl's reading).
fn seconds_left(w: &Work, file: &str) -> i64 {
    let out = w
        .cmd("openssl", &["x509", "-in", file, "-noout", "-enddate"])
        .ok();
    let end = out.trim().trim_start_matches("notAfter=");
    let date = w
        .cmd("date", &["-u", "-d", end, "+%s"])
        .ok()
        .trim()
        .parse::<i64>()
        .expect("epoch seconds");
    date - time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn lifetimes_are_set_per_tag_and_per_token() {
    let w = Work::new();
    test_ca(&w, &Db::Sqlite);
    let err = w
        .mg(&[
            "ca",
            "serve",
            "--dir",
            "ca",
            "--listen",
            "127.0.0.1:0",
            "--tag-lifetime",
            "cams=90d",
        ])
        .fails();
    assert!(
        err.contains("--tag-lifetime cams=90d: the lifetime for tag cams is outside --min-lifetime 60s … --max-lifetime 30d"),
        "{err}"
    );
    let srv = CaServer::start_for(
        &w,
        &Db::Sqlite,
        &["--tag-lifetime", "cams=2h", "--tag-lifetime", "lab=6h"],
    );
    let by_tag = server_token(&w, &srv, &["--tag", "lab", "--tag", "cams"]);
    agent_enroll(&w, &srv, &by_tag, "cam");
    let left = seconds_left(&w, "cam/client.crt");
    assert!((7000..=7200).contains(&left), "{left} s left, not 2 h");
    let by_token = server_token(&w, &srv, &["--tag", "cams", "--lifetime", "3h"]);
    agent_enroll(&w, &srv, &by_token, "cam2");
    let left = seconds_left(&w, "cam2/client.crt");
    assert!((10600..=10800).contains(&left), "{left} s left, not 3 h");
    let untagged = server_token(&w, &srv, &[]);
    agent_enroll(&w, &srv, &untagged, "other");
    let left = seconds_left(&w, "other/client.crt");
    assert!((86200..=86400).contains(&left), "{left} s left, not 24 h");
}

#[test]
fn the_agent_refuses_a_state_directory_others_can_write() {
    let w = Work::new();
    let db = Db::Sqlite;
    test_ca(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &[]);
    w.cmd("mkdir", &["-m", "0777", "dev"]).ok();
    let url = srv.url();
    let enroll = |w: &Work| {
        w.mg(&[
            "agent",
            "enroll",
            "--server",
            &url,
            "--token",
            &token,
            "--root-fingerprint",
            &srv.fingerprint,
            "--dir",
            "dev",
        ])
    };
    let err = enroll(&w).fails();
    assert!(
        err.contains("dev is writable by others (mode 0777): whoever can write there can replace the device's key and certificate; make it private with `chmod 700 dev`"),
        "{err}"
    );
    assert!(!w.path("dev/client.key").exists());
    w.cmd("chmod", &["0770", "dev"]).ok();
    let err = enroll(&w).fails();
    assert!(
        err.contains("dev is writable by group (mode 0770)"),
        "{err}"
    );

    // Made private, the same token enrolls (it was not spent) ...
    w.cmd("chmod", &["0700", "dev"]).ok();
    enroll(&w).ok();
    // ... and a directory opened up later is refused by `agent run` too.
    w.cmd("chmod", &["0757", "dev"]).ok();
    let err = w.mg(&["agent", "run", "--once", "--dir", "dev"]).fails();
    assert!(
        err.contains("dev is writable by others (mode 0757)"),
        "{err}"
    );
}
