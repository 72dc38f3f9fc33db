//! `mtlsgate token create` and `mtlsgate devices …` against a CA directory (SQLite
//! inventory) and against PostgreSQL (`--database`, on MTLSGATE_TEST_POSTGRES). Devices
//! enroll through the authority library, as the CA server will call it, with CSRs made
//! by openssl; revocations are checked in the CRL with `openssl crl`.

use std::path::Path;

use mtlsgate_authority::{Authority, EnrollRequest, Enrolled, Location, Policy};

use crate::util::{openssl_csr, test_ca, Db, Work};

/// Runs `f` on a small runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Enrolls a device as the CA server would: with `token`, or pending without one.
fn enroll(w: &Work, db: Option<&str>, token: Option<&str>, name: &str) -> Enrolled {
    enroll_with(w, db, token, name, Policy::default())
}

/// [`enroll`] under `policy` (a lifetime of a second: a certificate that soon expires).
fn enroll_with(
    w: &Work,
    db: Option<&str>,
    token: Option<&str>,
    name: &str,
    policy: Policy,
) -> Enrolled {
    let csr = openssl_csr(w, name, "/CN=whatever");
    let dir = w.path("ca");
    block_on(async {
        let loc = db.map(|u| Location::Postgres(u.to_string()));
        let mut auth = Authority::open(&dir, loc.as_ref(), policy)
            .await
            .expect("open");
        auth.load_keys(None).expect("keys");
        let r = auth
            .enroll(
                EnrollRequest {
                    csr,
                    token: token.map(str::to_string),
                    agent_version: Some("test".into()),
                    hostname: None,
                    addr: Some("127.0.0.1".into()),
                    ..Default::default()
                },
                time::OffsetDateTime::now_utc(),
            )
            .await
            .expect("enrolled");
        auth.close().await;
        r
    })
}

fn issued_id(e: Enrolled) -> (String, String) {
    match e {
        Enrolled::Issued(i) => (i.device_id, i.serial),
        Enrolled::Pending { .. } => panic!("a token enrolls at once"),
    }
}

/// `mtlsgate ARGS… DB…`.
fn mg(w: &Work, args: &[&str], db: &[&str]) -> crate::util::Run {
    let mut a = args.to_vec();
    a.extend_from_slice(db);
    w.mg(&a)
}

fn token(w: &Work, extra: &[&str], db: &[&str]) -> (String, String) {
    let mut a = vec!["token", "create", "--dir", "ca"];
    a.extend_from_slice(extra);
    let out = mg(w, &a, db).ok();
    let last = out.lines().last().expect("a line").to_string();
    (last, out)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn token_create_prints_the_token_last_and_the_inventory_keeps_only_its_hash() {
    let w = Work::new();
    test_ca(&w, &Db::sqlite());
    let (tok, out) = token(&w, &["--tag", "lab", "--tag", "edge", "--ttl", "2h"], &[]);
    assert!(tok.starts_with("mtg_") && tok.len() == 47, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    assert!(
        lines[0].starts_with("Enrollment token for one new device (the CA assigns its ID), single use, valid until 20"),
        "{out}"
    );
    assert!(out.contains("tags: edge, lab"), "{out}");
    let (bound, out) = token(&w, &["--device-id", "dev1", "--lifetime", "1h"], &[]);
    assert!(
        out.starts_with(
            "Enrollment token for device dev1.d.example.local, single use, valid until "
        ),
        "{out}"
    );
    // Only hashes are stored: neither token appears anywhere in the CA directory.
    let hash = |t: &str| {
        w.cmd(
            "python3",
            &[
                "-c",
                "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
                t,
            ],
        )
        .ok()
        .trim()
        .to_string()
    };
    let db = std::fs::read(w.path("ca/inventory.db")).expect("inventory");
    for t in [&tok, &bound] {
        assert!(!contains(&db, t.as_bytes()), "clear token in the inventory");
        assert!(contains(&db, hash(t).as_bytes()), "its hash is");
    }
    for f in w.listing("ca") {
        let data = std::fs::read(w.path(&format!("ca/{f}"))).expect("read");
        assert!(!contains(&data, tok.as_bytes()), "token in ca/{f}");
    }
    // The token enrolls one device, with its tags.
    let (id, _) = issued_id(enroll(&w, None, Some(&tok), "d1"));
    let shown = json(
        &w.mg(&["devices", "show", &id, "--json", "--dir", "ca"])
            .ok(),
    );
    assert_eq!(shown["tags"], serde_json::json!(["edge", "lab"]));
    assert_eq!(shown["status"], "active");
    // Refusals say why.
    let err = w
        .mg(&["token", "create", "--dir", "ca", "--ttl", "soon"])
        .fails();
    assert!(err.contains("--ttl"), "{err}");
    let err = w
        .mg(&["token", "create", "--dir", "ca", "--tag", "no spaces"])
        .fails();
    assert!(err.contains("invalid tag `no spaces`"), "{err}");
    let err = w
        .mg(&["token", "create", "--dir", "ca", "--lifetime", "1y"])
        .fails();
    assert!(
        err.contains("certificate lifetime 31536000s is outside what this CA allows"),
        "{err}"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The whole device life cycle through the CLI; `db` are the flags naming the inventory.
fn devices_lifecycle(w: &Work, url: Option<&str>, db: &[&str]) {
    let (tok, _) = token(w, &["--tag", "lab"], db);
    let (id, serial) = issued_id(enroll(w, url, Some(&tok), "d1"));
    let pending = match enroll(w, url, None, "d2") {
        Enrolled::Pending { device_id, .. } => device_id,
        Enrolled::Issued(_) => panic!("issued without a token"),
    };
    let table = mg(w, &["devices", "list", "--dir", "ca"], db).ok();
    let row = table.lines().find(|l| l.starts_with(&id)).expect("row");
    assert!(row.contains("active") && row.ends_with("lab"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&pending) && l.contains("pending")),
        "{table}"
    );
    let list = json(
        &mg(
            w,
            &[
                "devices", "list", "--json", "--status", "pending", "--dir", "ca",
            ],
            db,
        )
        .ok(),
    );
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    assert_eq!(list[0]["id"], pending.as_str());
    let soon = json(
        &mg(
            w,
            &[
                "devices",
                "list",
                "--json",
                "--expiring",
                "48h",
                "--dir",
                "ca",
            ],
            db,
        )
        .ok(),
    );
    assert_eq!(soon.as_array().map(|a| a.len()), Some(1), "{soon}");
    let later = json(
        &mg(
            w,
            &[
                "devices",
                "list",
                "--json",
                "--expiring",
                "1h",
                "--dir",
                "ca",
            ],
            db,
        )
        .ok(),
    );
    assert_eq!(later.as_array().map(|a| a.len()), Some(0), "{later}");
    // Approve the pending one.
    let out = mg(w, &["devices", "approve", &pending, "--dir", "ca"], db).ok();
    assert!(
        out.contains(&format!("Approved: device {pending} is active")),
        "{out}"
    );
    // Deny, deny again (refused), allow, tag.
    let short = id.split('.').next().expect("short id").to_string();
    let out = mg(
        w,
        &["devices", "deny", &short, "--reason", "lost", "--dir", "ca"],
        db,
    )
    .ok();
    assert!(
        out.contains(&format!("Denied: device {id} is denied")),
        "{out}"
    );
    let err = mg(w, &["devices", "deny", &id, "--dir", "ca"], db).fails();
    assert!(
        err.contains(&format!("device {id} is already denied")),
        "{err}"
    );
    mg(w, &["devices", "allow", &id, "--dir", "ca"], db).ok();
    let tagged = json(
        &mg(
            w,
            &[
                "devices", "tag", &id, "--add", "prod", "--add", "eu", "--remove", "lab", "--json",
                "--dir", "ca",
            ],
            db,
        )
        .ok(),
    );
    assert_eq!(tagged["tags"], serde_json::json!(["eu", "prod"]));
    // Show: status, certificate and the audit trail, oldest first.
    let show = mg(w, &["devices", "show", &id, "--dir", "ca"], db).ok();
    assert!(show.contains("Status:       active"), "{show}");
    assert!(show.contains(&serial), "{show}");
    let actions: Vec<&str> = show
        .lines()
        .skip_while(|l| *l != "Audit:")
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(actions, vec!["enroll", "deny", "allow", "tag"], "{show}");
    assert!(
        show.contains("deny        by ") && show.contains("(cli): lost"),
        "{show}"
    );
    // Revoke: its certificate is revoked with it; only `devices allow` leads back (see
    // a_revoked_device_id_enrolls_again_only_after_devices_allow).
    let out = mg(w, &["devices", "revoke", &id, "--dir", "ca"], db).ok();
    assert!(out.contains("Revoked"), "{out}");
    let err = mg(w, &["devices", "approve", &id, "--dir", "ca"], db).fails();
    assert!(
        err.contains(&format!(
            "device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token"
        )),
        "{err}"
    );
    let certs = json(&mg(w, &["ca", "list", "--json", "--dir", "ca"], db).ok());
    let row = certs
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["serial"] == serial.as_str())
        .expect("recorded");
    assert_eq!(row["revocation_reason"], "cessationOfOperation");
    // The CRL lists its serial.
    mg(w, &["ca", "crl", "--dir", "ca", "--out", "crl.pem"], db).ok();
    let text = w
        .cmd("openssl", &["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok();
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    assert!(text.contains("Cessation Of Operation"), "{text}");
    let err = mg(w, &["devices", "show", "nobody", "--dir", "ca"], db).fails();
    assert!(
        err.contains("no device nobody.d.example.local in the inventory"),
        "{err}"
    );
}

#[test]
fn devices_on_the_ca_directory_inventory() {
    let w = Work::new();
    test_ca(&w, &Db::sqlite());
    devices_lifecycle(&w, None, &[]);
}

#[test]
fn a_postgresql_password_is_not_recorded_and_forgetting_it_says_so() {
    let url = mtlsgate_store::test_support::new_database_blocking();
    // The test server trusts local connections: any password is accepted.
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a user in the test URL");
    let with_password = format!("{scheme}://{user}:s3cret@{host}");
    let w = Work::new();
    w.mg(&["ca", "init", "--dir", "ca", "--database", &with_password])
        .ok();
    let meta = w.read("ca/ca.toml");
    assert!(!meta.contains("s3cret"), "{meta}");
    assert!(meta.contains(&format!("database = \"{url}\"")), "{meta}");
    let err = w.mg(&["ca", "list", "--dir", "ca"]).fails();
    assert!(
        err.contains(&format!("keeps its inventory in PostgreSQL at {url}"))
            && err
                .contains("its password is not recorded: give --database URL or MTLSGATE_DATABASE"),
        "{err}"
    );
    assert!(!err.contains("restore it from a backup"), "{err}");
    w.mg(&["ca", "list", "--dir", "ca", "--database", &with_password])
        .ok();
}

#[test]
fn devices_on_postgresql() {
    let url = mtlsgate_store::test_support::new_database_blocking();
    let w = Work::new();
    let out = w
        .mg(&[
            "ca",
            "init",
            "--dir",
            "ca",
            "--device-domain",
            "d.example.local",
            "--database",
            &url,
        ])
        .ok();
    assert!(out.contains("inventory:    postgres://"), "{out}");
    assert!(
        !w.path("ca/inventory.db").exists(),
        "the inventory is in PostgreSQL"
    );
    devices_lifecycle(&w, Some(&url), &["--database", &url]);
    // ca init recorded the database in ca.toml: a command without --database uses it.
    assert!(
        w.read("ca/ca.toml")
            .contains(&format!("database = \"{url}\"")),
        "{}",
        w.read("ca/ca.toml")
    );
    let out = w.mg(&["ca", "list", "--dir", "ca"]).ok();
    assert!(out.contains("revoked"), "{out}");
    // MTLSGATE_DATABASE does what --database does.
    let out = std::process::Command::new(crate::util::bin())
        .args(["devices", "list", "--dir", "ca"])
        .current_dir(w.root())
        .env("MTLSGATE_DATABASE", &url)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    // A second CA cannot take over the same database.
    let err = w
        .mg(&["ca", "init", "--dir", "ca2", "--database", &url])
        .fails();
    assert!(err.contains("already holds an mtlsgate inventory"), "{err}");
    assert!(!w.path("ca2").exists() && !Path::new(&w.path("ca2")).exists());
}

/// `mtlsgate login` checks the server accepts the administrator's certificate, then
/// remembers it (0600, paths made absolute), so that `token create` and `devices list`
/// from any directory go to the server without flags; `--dir` still means the local CA;
/// a certificate the server refuses saves nothing; `logout` forgets it.
#[test]
fn login_remembers_the_server_for_fleet_commands() {
    use crate::util::{fleet_server_cert, test_ca, CaServer, Db};
    let w = Work::new();
    let db = Db::sqlite();
    test_ca(&w, &db);
    fleet_server_cert(&w, &db);
    let mut srv = CaServer::start_for(&w, &db, &[]);
    let url = srv.url();
    let profile = w.path(".mtlsgate-profile.toml");

    // A device's certificate is not an administrator's: refused, nothing saved.
    let _ = enroll(&w, None, None, "dev");
    let token = w.mg(&["token", "create", "--dir", "ca"]).ok();
    let token = token.lines().last().expect("token").trim().to_string();
    let (id, _) = issued_id(enroll(&w, None, Some(&token), "edge"));
    assert!(!id.is_empty());
    w.mg(&[
        "cert", "issue", "client", "notadmin", "--dir", "ca", "--out", ".",
    ])
    .ok();
    let e = w
        .mg(&[
            "login",
            "--server",
            &url,
            "--ca-file",
            "ca/ca.crt",
            "--admin-cert",
            "notadmin.crt",
            "--admin-key",
            "notadmin.key",
        ])
        .fails();
    assert!(e.contains("nothing was saved"), "{e}");
    assert!(!profile.exists());

    let out = w.mg(&["login", "--server", &url, "--dir", "ca"]).ok();
    assert!(
        out.starts_with(&format!("logged in to {url} as the administrator of /"))
            && out.contains("(1 device(s) waiting for approval)"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&profile)
        .expect("profile")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&profile).expect("profile");
    assert!(text.contains(&format!("server = \"{url}\"")), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // From another directory, no flags: through the server (its request log shows it).
    std::fs::create_dir_all(w.path("elsewhere")).expect("mkdir");
    let run_in = |dir: &str, args: &[&str]| {
        let o = std::process::Command::new(crate::util::bin())
            .args(args)
            .current_dir(w.path(dir))
            .env("MTLSGATE_PROFILE", &profile)
            .env_remove("MTLSGATE_CA_DIR")
            .env_remove("MTLSGATE_DATABASE")
            .env_remove("MTLSGATE_SERVER")
            .output()
            .expect("run");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run_in("elsewhere", &["devices", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let (code, _, err) = run_in("elsewhere", &["token", "create"]);
    assert_eq!(code, 0, "{err}");
    // The server logs a request after answering it, and its stderr is read by a thread:
    // the line may arrive after the command has exited.
    srv.proc.wait_for("POST /v1/tokens");
    // --dir alone means the local CA directory, not the profile.
    let (code, _, err) = run_in("elsewhere", &["devices", "list", "--dir", "nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("nowhere"), "{err}");

    let out = w.mg(&["logout"]).ok();
    assert!(out.starts_with("removed "), "{out}");
    assert!(!profile.exists());
    let (code, _, _) = run_in("elsewhere", &["devices", "list"]);
    assert_ne!(code, 0, "without the profile there is no CA here");
}

#[test]
fn an_expired_certificate_is_not_listed_as_active() {
    let w = Work::new();
    test_ca(&w, &Db::sqlite());
    let (tok, _) = token(&w, &[], &[]);
    let brief = Policy {
        default_lifetime: time::Duration::seconds(1),
        min_lifetime: time::Duration::seconds(1),
        ..Policy::default()
    };
    let (expired, _) = issued_id(enroll_with(&w, None, Some(&tok), "old", brief));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (tok, _) = token(&w, &[], &[]);
    let (fresh, _) = issued_id(enroll(&w, None, Some(&tok), "new"));
    let list = w.mg(&["devices", "list", "--dir", "ca"]).ok();
    let status_of = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {id} in {list}"))
            .to_string()
    };
    assert_eq!(status_of(&expired), "expired", "{list}");
    assert_eq!(status_of(&fresh), "active", "{list}");
    let show = w.mg(&["devices", "show", &expired, "--dir", "ca"]).ok();
    assert!(
        show.contains("Status:       active, but its certificate expired on "),
        "{show}"
    );
}

both!(a_revoked_device_id_enrolls_again_only_after_devices_allow);

/// A revoked device ID stays in the inventory (audit, CRL), and every command that meets it
/// says the same: it is revoked, and `devices allow ID` lets it enroll again with a new
/// token. `token create` and `cert issue client --device-id` refuse it until then (and
/// write nothing); after it, a token bound to the ID enrolls a new device under it, while
/// the old certificate stays revoked.
fn a_revoked_device_id_enrolls_again_only_after_devices_allow(db: crate::util::Db) {
    let w = Work::new();
    crate::util::test_ca(&w, &db);
    let flags = db.flags();
    let dbf: Vec<&str> = flags.iter().map(String::as_str).collect();
    let url = match &db {
        crate::util::Db::Postgres(u) => Some(u.as_str()),
        crate::util::Db::Sqlite => None,
    };
    let (tok, _) = token(&w, &["--device-id", "cam1"], &dbf);
    let (id, old) = issued_id(enroll(&w, url, Some(&tok), "cam1"));
    assert_eq!(id, "cam1.d.example.local");
    mg(&w, &["devices", "revoke", "cam1", "--dir", "ca"], &dbf).ok();
    let truth = format!(
        "device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token"
    );

    // Refused, with the way back, and nothing written.
    let err = mg(
        &w,
        &["token", "create", "--device-id", "cam1", "--dir", "ca"],
        &dbf,
    )
    .fails();
    assert!(err.contains(&truth), "{err}");
    let err = mg(
        &w,
        &[
            "cert",
            "issue",
            "client",
            "cam1-manual",
            "--device-id",
            "cam1",
            "--dir",
            "ca",
            "--out",
            "out",
        ],
        &dbf,
    )
    .fails();
    assert!(err.contains(&truth), "{err}");
    assert!(!w.path("out/cam1-manual.key").exists());
    assert!(!w.path("out/cam1-manual.crt").exists());
    for action in ["approve", "deny"] {
        let err = mg(&w, &["devices", action, "cam1", "--dir", "ca"], &dbf).fails();
        assert!(err.contains(&truth), "{action}: {err}");
    }

    // The way back: audited; the device stays revoked until it enrolled again.
    let out = mg(
        &w,
        &[
            "devices", "allow", "cam1", "--reason", "repaired", "--dir", "ca",
        ],
        &dbf,
    )
    .ok();
    assert!(
        out.contains(&format!(
            "Allowed to enroll again: device {id} stays revoked, and so do its certificates, until it enrolls with a new token: mtlsgate token create --device-id {id}"
        )),
        "{out}"
    );
    let (tok, _) = token(&w, &["--device-id", "cam1"], &dbf);
    let (again, new) = issued_id(enroll(&w, url, Some(&tok), "cam1-new"));
    assert_eq!(again, id);
    assert_ne!(new, old);
    let show = mg(&w, &["devices", "show", "cam1", "--dir", "ca"], &dbf).ok();
    assert!(show.contains("Status:       active"), "{show}");
    let actions: Vec<&str> = show
        .lines()
        .skip_while(|l| *l != "Audit:")
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        actions,
        vec!["token", "enroll", "revoke", "allow", "token", "enroll"],
        "{show}"
    );
    let certs = json(&mg(&w, &["ca", "list", "--json", "--dir", "ca"], &dbf).ok());
    let row = |serial: &str| {
        certs
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["serial"] == serial)
            .cloned()
            .unwrap_or_else(|| panic!("{serial} not in {certs}"))
    };
    assert_eq!(row(&old)["revocation_reason"], "cessationOfOperation");
    assert!(row(&new)["revoked_at"].is_null(), "{certs}");
    // Once it enrolled again, a bound token is refused as for any enrolled device.
    let err = mg(
        &w,
        &["token", "create", "--device-id", "cam1", "--dir", "ca"],
        &dbf,
    )
    .fails();
    assert!(
        err.contains(&format!("device {id} is already enrolled")),
        "{err}"
    );
}

both!(devices_import_a_fleet_grown_with_openssl);

/// A fleet grown with openssl (`openssl req -x509` for its own CA, `openssl x509 -req`
/// for the devices, `openssl ca` for one long expired) is imported with `devices import`:
/// with `--ca` its devices are recorded active with their certificates (serial, not-after
/// and fingerprint as openssl made them), and each file that cannot be imported is named
/// with its reason. A certificate `cert issue client` made says it is not in the
/// inventory yet, and `devices import FILE` records it. The listing then pages through
/// them with filters.
fn devices_import_a_fleet_grown_with_openssl(db: crate::util::Db) {
    let w = Work::new();
    test_ca(&w, &db);
    let flags = db.flags();
    let dbf: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ossl = |args: &[&str]| {
        let r = w.cmd("openssl", args);
        assert_eq!(r.code, 0, "openssl {args:?}: {}", r.stderr);
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.crt",
        "-subj",
        "/CN=Other CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    std::fs::create_dir(w.path("fleet")).expect("dir");
    for d in ["cam1", "cam2", "old"] {
        ossl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{d}.key"),
            "-out",
            &format!("{d}.csr"),
            "-subj",
            &format!("/CN={d}.fleet.example"),
        ]);
    }
    for d in ["cam1", "cam2"] {
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{d}.csr"),
            "-CA",
            "other.crt",
            "-CAkey",
            "other.key",
            "-CAcreateserial",
            "-out",
            &format!("fleet/{d}.crt"),
            "-days",
            "10",
        ]);
    }
    // Expired long ago: `openssl ca` takes explicit dates.
    std::fs::create_dir(w.path("newcerts")).expect("dir");
    w.write("index.txt", "");
    w.write("serial.txt", "1000\n");
    w.write(
        "ca.cnf",
        "[ca]\ndefault_ca = oca\n[oca]\ndatabase = index.txt\nnew_certs_dir = newcerts\nserial = serial.txt\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
    );
    ossl(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "other.crt",
        "-keyfile",
        "other.key",
        "-in",
        "old.csr",
        "-out",
        "fleet/old.crt",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200201000000Z",
        "-notext",
    ]);
    std::fs::copy(w.path("cam1.key"), w.path("fleet/cam1.key")).expect("copy");
    std::fs::copy(w.path("fleet/cam1.crt"), w.path("fleet/cam1-again.crt")).expect("copy");
    w.write("fleet/notes.txt", "not a certificate\n");

    let import = |extra: &[&str]| {
        let mut a = vec!["devices", "import"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--dir", "ca"]);
        mg(&w, &a, &dbf)
    };
    // Without --ca the openssl CA is not trusted: nothing is imported.
    let r = import(&["fleet"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "fleet/cam2.crt: the certificate of CN=cam2.fleet.example is not from a trusted CA"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Imported 0 device(s)"), "{}", r.stdout);

    let r = import(&["fleet", "--ca", "other.crt", "--tag", "openssl"]);
    assert_eq!(r.code, 1, "skips make the exit code 1: {}", r.stdout);
    let out = r.stdout;
    assert!(out.contains("imported cam1.fleet.example"), "{out}");
    assert!(out.contains("imported cam2.fleet.example"), "{out}");
    for why in [
        "skipped fleet/cam1.crt: device cam1.fleet.example is twice in this import (first in fleet/cam1-again.crt)",
        "skipped fleet/cam1.key: this is a private key, not a certificate",
        "skipped fleet/notes.txt: holds no certificate",
        "skipped fleet/old.crt: the certificate of CN=old.fleet.example expired on 2020-02-01",
        "Imported 2 device(s); skipped 4 file(s).",
    ] {
        assert!(out.contains(why), "{why}\n{out}");
    }
    // What the store recorded is what openssl made.
    let serial = w
        .cmd(
            "openssl",
            &["x509", "-in", "fleet/cam2.crt", "-noout", "-serial"],
        )
        .stdout;
    let serial = serial.trim().trim_start_matches("serial=").to_string();
    let fp = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "fleet/cam2.crt",
                "-noout",
                "-fingerprint",
                "-sha256",
            ],
        )
        .stdout;
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .expect("fp")
        .replace(':', "")
        .to_ascii_lowercase();
    let shown = json(
        &mg(
            &w,
            &[
                "devices",
                "show",
                "cam2.fleet.example",
                "--json",
                "--dir",
                "ca",
            ],
            &dbf,
        )
        .ok(),
    );
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["tags"], serde_json::json!(["openssl"]));
    assert_eq!(shown["cert_serial"].as_str(), Some(serial.as_str()));
    assert_eq!(
        shown["certificates"][0]["sha256"].as_str(),
        Some(fp.as_str())
    );

    // Again: both are in the inventory now.
    let again = import(&["fleet/cam2.crt", "--ca", "other.crt"]);
    assert!(
        again.stdout.contains(
            "skipped fleet/cam2.crt: a device cam2.fleet.example is already in the inventory"
        ),
        "{}",
        again.stdout
    );

    // A CSV list: the ID must be the certificate's CN.
    w.write(
        "list.csv",
        "# device_id,certificate_file\nwrong.fleet.example,own/x.crt\n",
    );
    mg(
        &w,
        &[
            "cert", "issue", "client", "x", "--dir", "ca", "--out", "own",
        ],
        &dbf,
    )
    .ok();
    let r = import(&["--csv", "list.csv"]);
    assert!(
        r.stdout
            .contains("the certificate names device x (its CN), not wrong.fleet.example"),
        "{}",
        r.stdout
    );

    // `cert issue client` says the device is not in the inventory, and how to record it.
    let out = mg(
        &w,
        &[
            "cert",
            "issue",
            "client",
            "cam9",
            "--device-id",
            "cam9",
            "--dir",
            "ca",
            "--out",
            "own",
        ],
        &dbf,
    )
    .ok();
    assert!(out.contains("inventory:  device cam9.d.example.local is not in the inventory, so gateways that allow by the inventory refuse it; record it: mtlsgate devices import own/cam9.crt --dir ca"), "{out}");
    let out = import(&["own/cam9.crt"]).ok();
    assert!(out.contains("imported cam9.d.example.local"), "{out}");
    let out = mg(
        &w,
        &[
            "cert",
            "issue",
            "client",
            "cam9b",
            "--device-id",
            "cam9",
            "--dir",
            "ca",
            "--out",
            "own",
        ],
        &dbf,
    )
    .ok();
    assert!(
        out.contains("inventory:  device cam9.d.example.local is active in the inventory"),
        "{out}"
    );

    // Listing page by page (one row a page), with filters.
    let lines = mg(
        &w,
        &[
            "devices",
            "list",
            "--json-lines",
            "--page-size",
            "1",
            "--dir",
            "ca",
        ],
        &dbf,
    )
    .ok();
    let ids: Vec<String> = lines
        .lines()
        .map(|l| json(l)["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "cam1.fleet.example",
            "cam2.fleet.example",
            "cam9.d.example.local"
        ]
    );
    let arr = json(
        &mg(
            &w,
            &[
                "devices",
                "list",
                "--json",
                "--page-size",
                "2",
                "--tag",
                "openssl",
                "--dir",
                "ca",
            ],
            &dbf,
        )
        .ok(),
    );
    assert_eq!(arr.as_array().map(Vec::len), Some(2));
    let arr = json(
        &mg(
            &w,
            &[
                "devices", "list", "--json", "--prefix", "cam9", "--dir", "ca",
            ],
            &dbf,
        )
        .ok(),
    );
    assert_eq!(arr[0]["id"], "cam9.d.example.local");
    assert_eq!(arr.as_array().map(Vec::len), Some(1));
    let empty = mg(
        &w,
        &[
            "devices", "list", "--json", "--search", "nothing", "--dir", "ca",
        ],
        &dbf,
    )
    .ok();
    assert_eq!(empty.trim(), "[]");
    let certs = mg(
        &w,
        &[
            "ca",
            "list",
            "--json-lines",
            "--page-size",
            "1",
            "--kind",
            "client",
            "--search",
            "fleet.example",
            "--dir",
            "ca",
        ],
        &dbf,
    )
    .ok();
    assert_eq!(certs.lines().count(), 2, "{certs}");
}
