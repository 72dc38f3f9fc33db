//! The agent against a stand-in for `mtlsgate ca serve` (tests/stand_in): enrollment with a
//! token, with a CA file or a root fingerprint, pending approval and denial, renewal over
//! mTLS, recovery after expiry, refusals with the server's sentence, the CA bundle
//! refresh, `--on-renew`, and the run loop (renew when due, at once when told, back-off
//! while the server is away, clean stop).

mod stand_in;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mtlsgate_agent::{
    register, run, run_once, wait_for_approval, AgentError, Bootstrap, Control, EnrollOptions,
    Outcome, Registration, RunOptions, ServerUrl, StateDir,
};
use stand_in::StandIn;

const TIMEOUT: Duration = Duration::from_secs(10);

fn opts(s: &StandIn, dir: &Path, token: Option<&str>, bootstrap: Bootstrap) -> EnrollOptions {
    EnrollOptions {
        server: ServerUrl::parse(&s.url()).expect("url"),
        token: token.map(str::to_string),
        bootstrap,
        dir: dir.to_path_buf(),
        force: false,
        hostname: Some("test-host".into()),
        timeout: TIMEOUT,
    }
}

fn pin(s: &StandIn) -> Bootstrap {
    Bootstrap::Fingerprint(s.ca.root_sha256())
}

fn run_opts(dir: &Path, on_renew: Option<String>) -> RunOptions {
    RunOptions {
        dir: dir.to_path_buf(),
        on_renew,
        timeout: TIMEOUT,
    }
}

/// The directory's file names, sorted.
/// The names in `dir`, the set directory (`..<time>`, behind `..data`) shown as `..<set>`.
fn listing(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .map(|n| {
            if n.starts_with("..2") {
                "..<set>".to_string()
            } else {
                n
            }
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every file's name and bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap_or_default();
            (n, b)
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
}

fn certs(p: &Path) -> Vec<Vec<u8>> {
    mtlsgate_pki::pemfile::read_certs(p).expect("certs")
}

fn serial(p: &Path) -> String {
    mtlsgate_pki::certinfo::CertInfo::from_der(&certs(p)[0])
        .expect("cert")
        .serial
}

/// Enrolls with the token `mtg_good` and the root fingerprint.
async fn enrolled(s: &StandIn, dir: &Path) -> String {
    match register(&opts(s, dir, Some("mtg_good"), pin(s)))
        .await
        .expect("enrolled")
    {
        Registration::Issued(e) => e.device_id,
        other => panic!("not issued: {other:?}"),
    }
}

/// Makes the installed certificate due for renewal now (at its notBefore).
fn make_due(dir: &Path) {
    let sd = StateDir::new(dir);
    let mut st = sd.state().expect("state");
    let leaf =
        mtlsgate_pki::certinfo::CertInfo::from_der(&certs(&sd.client_crt())[0]).expect("leaf");
    st.next_renewal = Some(leaf.not_before.unix_timestamp());
    sd.write_state(&st).expect("write");
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn enroll_with_token_and_root_fingerprint_writes_the_four_files() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let id = enrolled(&s, &dir).await;
    assert_eq!(id, "dev-1.d.stand-in.test");

    assert_eq!(
        listing(&dir),
        [
            "..<set>",
            "..data",
            "agent.json",
            "ca.crt",
            "client.crt",
            "client.key"
        ]
    );
    assert_eq!(mode(&dir.join("client.key")), 0o600);
    assert_eq!(mode(&dir.join("agent.json")), 0o600);
    assert_eq!(mode(&dir.join("client.crt")), 0o644);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    assert_eq!(mode(&dir), 0o700);
    // The names are stable symlinks into the set directory `..data` points to (0700).
    for name in ["client.crt", "client.key", "ca.crt"] {
        assert_eq!(
            std::fs::read_link(dir.join(name)).expect("a symlink"),
            Path::new("..data").join(name)
        );
    }
    assert_eq!(mode(&dir.join("..data")), 0o700);

    // The chain certifies the key made here and names the device.
    let chain = certs(&dir.join("client.crt"));
    assert_eq!(chain.len(), 2, "leaf + intermediate");
    let info = mtlsgate_pki::certinfo::CertInfo::from_der(&chain[0]).expect("leaf");
    assert_eq!(info.device_id.as_deref(), Some(id.as_str()));
    let key = mtlsgate_pki::key::read_key(&dir.join("client.key"), None).expect("key");
    mtlsgate_pki::ca::check_pair(&chain[0], &key, Path::new("crt"), Path::new("key"))
        .expect("pair");
    // ca.crt holds the pinned root.
    assert!(certs(&dir.join("ca.crt")).contains(&s.ca.root_der));

    let st = StateDir::new(&dir).state().expect("state");
    assert_eq!(st.server, s.url());
    assert_eq!(st.device_id, id);
    assert_eq!(st.root_sha256, Some(hex::encode(s.ca.root_sha256())));
    assert!(st
        .recovery_token
        .as_deref()
        .is_some_and(|t| t.starts_with("mtr_")));
    assert_eq!(st.tags, ["stand-in"]);
    let (nb, na) = (
        info.not_before.unix_timestamp(),
        info.not_after.unix_timestamp(),
    );
    let next = st.next_renewal.expect("next renewal");
    let (life, center) = (na - nb, nb + (na - nb) * 2 / 3);
    assert!((next - center).abs() <= life / 20 + 1, "{next} vs {center}");

    // What went over the wire.
    let req = s.world().seen[0].clone();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/enroll")
    );
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    assert!(req
        .user_agent
        .as_deref()
        .is_some_and(|u| u.starts_with("mtlsgate-agent/")));
    let mut fields: Vec<&str> = req
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(fields, ["agent_version", "csr", "hostname", "token"]);
    assert_eq!(req.body["token"], "mtg_good");
    assert_eq!(req.body["hostname"], "test-host");
    assert!(req.body["csr"]
        .as_str()
        .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE REQUEST-----")));

    // status and whoami read it back.
    let st = mtlsgate_agent::status(&dir).expect("status");
    assert_eq!((st.state, st.device_id.as_str()), ("enrolled", id.as_str()));
    assert_eq!(st.serial.as_deref(), Some(info.serial.as_str()));
    assert_eq!(st.not_after, Some(na));

    // A second enrollment into the same directory is refused without --force.
    let e = register(&opts(&s, &dir, Some("mtg_good"), pin(&s)))
        .await
        .expect_err("already enrolled");
    assert!(matches!(e, AgentError::AlreadyEnrolled { .. }), "{e}");
}

#[tokio::test]
async fn enroll_with_a_ca_file() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let ca_file = tmp.path().join("root.pem");
    std::fs::write(
        &ca_file,
        mtlsgate_pki::pemfile::to_pem("CERTIFICATE", &s.ca.root_der),
    )
    .expect("write");
    let dir = tmp.path().join("state");
    let r = register(&opts(
        &s,
        &dir,
        Some("mtg_good"),
        Bootstrap::CaFile(ca_file),
    ))
    .await
    .expect("enrolled");
    assert!(matches!(r, Registration::Issued(_)), "{r:?}");
    let st = StateDir::new(&dir).state().expect("state");
    assert_eq!(st.root_sha256, Some(hex::encode(s.ca.root_sha256())));
    assert!(certs(&dir.join("ca.crt")).contains(&s.ca.root_der));
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_and_leaves_nothing_behind() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let e = register(&opts(
        &s,
        &dir,
        Some("mtg_good"),
        Bootstrap::Fingerprint([7; 32]),
    ))
    .await
    .expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "enrollment failed: TLS with {}: none of the 3 certificates the server presented has the pinned SHA-256 fingerprint 0707",
            s.url()
        )),
        "{msg}"
    );
    assert!(!dir.exists(), "the directory it created is gone again");
    assert_eq!(s.world().seen.len(), 0, "no request was sent");

    // Into an existing directory with other files: they stay exactly as they were.
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), b"mine").expect("write");
    let before = snapshot(&dir);
    register(&opts(
        &s,
        &dir,
        Some("mtg_good"),
        Bootstrap::Fingerprint([7; 32]),
    ))
    .await
    .expect_err("refused");
    assert_eq!(snapshot(&dir), before);
}

#[tokio::test]
async fn enroll_does_not_overwrite_a_key_it_did_not_write() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("client.key"), b"someone else's key").expect("write");
    let before = snapshot(&dir);
    let e = register(&opts(&s, &dir, Some("mtg_good"), pin(&s)))
        .await
        .expect_err("refused");
    assert!(matches!(e, AgentError::ForeignFiles { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("client.key, which no enrollment of this agent wrote"),
        "{e}"
    );
    assert_eq!(snapshot(&dir), before);
    assert!(s.world().seen.is_empty());
    // --force replaces it once the new certificate has arrived.
    let mut o = opts(&s, &dir, Some("mtg_good"), pin(&s));
    o.force = true;
    register(&o).await.expect("enrolled");
    assert_ne!(
        std::fs::read(dir.join("client.key")).expect("key"),
        b"someone else's key"
    );
}

#[tokio::test]
async fn a_refused_token_shows_the_server_sentence_and_leaves_the_directory_as_it_was() {
    let s = StandIn::start().await;
    s.world().tokens.insert("mtg_used".into(), true);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).expect("mkdir");
    let before = snapshot(&dir);
    let e = register(&opts(&s, &dir, Some("mtg_used"), pin(&s)))
        .await
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        format!(
            "enrollment refused by {}: the token was already used at 2026-01-01 00:00:00 UTC by dev-0.d.stand-in.test",
            s.url()
        )
    );
    assert_eq!(e.api().and_then(|a| a.status()), Some(409));
    assert_eq!(snapshot(&dir), before, "no key, no state");

    let e = register(&opts(&s, &dir, Some("mtg_nope"), pin(&s)))
        .await
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        format!("enrollment refused by {}: the token is unknown", s.url())
    );
    assert_eq!(snapshot(&dir), before);
}

#[tokio::test]
async fn a_server_that_is_away_leaves_the_directory_as_it_was() {
    let mut s = StandIn::start().await;
    s.stop();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let e = register(&opts(&s, &dir, Some("mtg_good"), pin(&s)))
        .await
        .expect_err("away");
    assert!(
        e.to_string()
            .starts_with(&format!("enrollment failed: cannot reach {}: ", s.url())),
        "{e}"
    );
    assert!(e.api().is_some_and(|a| a.is_transient()));
    assert!(!dir.exists());
}

#[tokio::test]
async fn enrollment_without_a_token_waits_for_approval_then_installs() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let p = match register(&opts(&s, &dir, None, pin(&s)))
        .await
        .expect("pending")
    {
        Registration::Pending(p) => p,
        other => panic!("not pending: {other:?}"),
    };
    assert_eq!(p.device_id, "dev-1.d.stand-in.test");
    assert_eq!(p.retry_after, Some(1));
    assert!(!p.resumed);
    assert_eq!(listing(&dir), ["pending.json", "pending.key"]);
    assert_eq!(mode(&dir.join("pending.key")), 0o600);
    assert_eq!(mode(&dir.join("pending.json")), 0o600);
    assert!(s.world().seen[0].body.get("token").is_none());
    let st = mtlsgate_agent::status(&dir).expect("status");
    assert_eq!(
        (st.state, st.device_id.as_str()),
        ("pending", p.device_id.as_str())
    );

    // Enrolling again resumes the wait instead of registering a second device.
    match register(&opts(&s, &dir, None, pin(&s)))
        .await
        .expect("resumed")
    {
        Registration::Pending(again) => assert!(again.resumed && again.device_id == p.device_id),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.world().count("POST", "/v1/enroll"), 1);

    let control = Control::new();
    let waiter = {
        let (dir, control) = (dir.clone(), control.clone());
        tokio::spawn(async move { wait_for_approval(&dir, TIMEOUT, &control).await })
    };
    let path = format!("/v1/enroll/{}", p.device_id);
    wait_until("two polls", Duration::from_secs(10), || {
        s.world().count("GET", &path) >= 2
    })
    .await;
    s.world().set_status(&p.device_id, "active");
    let e = waiter
        .await
        .expect("join")
        .expect("approved")
        .expect("not stopped");
    assert_eq!(e.device_id, p.device_id);
    assert_eq!(
        listing(&dir),
        [
            "..<set>",
            "..data",
            "agent.json",
            "ca.crt",
            "client.crt",
            "client.key"
        ]
    );
    let w = s.world();
    let polls: Vec<_> = w.seen.iter().filter(|r| r.path == path).collect();
    assert!(polls.iter().all(|r| r.method == "GET"
        && r.authorization.as_deref() == Some(&*format!("Bearer mtp_poll_{}", p.device_id))));
}

#[tokio::test]
async fn a_denied_enrollment_says_so_and_forgets_the_pending_files() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let Registration::Pending(p) = register(&opts(&s, &dir, None, pin(&s)))
        .await
        .expect("pending")
    else {
        panic!("not pending");
    };
    s.world().set_status(&p.device_id, "denied");
    let e = wait_for_approval(&dir, TIMEOUT, &Control::new())
        .await
        .expect_err("denied");
    assert!(matches!(e, AgentError::Denied { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "the enrollment of {id} was denied by {}: device {id} is denied: an operator refused its enrollment",
            s.url(),
            id = p.device_id
        )
    );
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
}

#[tokio::test]
async fn waiting_for_approval_stops_when_told() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    register(&opts(&s, &dir, None, pin(&s)))
        .await
        .expect("pending");
    let control = Control::new();
    control.stop();
    let r = wait_for_approval(&dir, TIMEOUT, &control)
        .await
        .expect("ok");
    assert!(r.is_none());
    assert_eq!(
        listing(&dir),
        ["pending.json", "pending.key"],
        "still pending"
    );
}

#[tokio::test]
async fn no_wait_then_run_once_finishes_the_enrollment_and_runs_the_hook() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let Registration::Pending(p) = register(&opts(&s, &dir, None, pin(&s)))
        .await
        .expect("pending")
    else {
        panic!("not pending");
    };
    let out = tmp.path().join("hook.out");
    let hook = format!("echo \"$MTLSGATE_DEVICE_ID\" > {}", out.display());
    let ro = run_opts(&dir, Some(hook));
    assert_eq!(
        run_once(&ro).await.expect("still pending"),
        Outcome::StillPending {
            device_id: p.device_id.clone()
        }
    );
    assert!(!out.exists());
    s.world().set_status(&p.device_id, "active");
    let Outcome::Approved(e) = run_once(&ro).await.expect("approved") else {
        panic!("not approved");
    };
    assert_eq!(e.device_id, p.device_id);
    assert_eq!(
        std::fs::read_to_string(&out).expect("hook ran").trim(),
        p.device_id
    );
    assert_eq!(
        listing(&dir),
        [
            "..<set>",
            "..data",
            "agent.json",
            "ca.crt",
            "client.crt",
            "client.key"
        ]
    );
}

#[tokio::test]
async fn run_once_does_nothing_before_the_renewal_time() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    enrolled(&s, &dir).await;
    let before = snapshot(&dir);
    let next = StateDir::new(&dir).state().expect("state").next_renewal;
    match run_once(&run_opts(&dir, None)).await.expect("once") {
        Outcome::NothingDue { next_renewal } => assert_eq!(Some(next_renewal), next),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&dir), before);
    assert_eq!(s.world().seen.len(), 1, "only the enrollment");
}

#[tokio::test]
async fn run_once_renews_over_mtls_with_a_new_key_and_runs_the_hook() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let id = enrolled(&s, &dir).await;
    let old_key = std::fs::read(dir.join("client.key")).expect("key");
    let old_serial = serial(&dir.join("client.crt"));
    let old_token = StateDir::new(&dir).state().expect("st").recovery_token;
    make_due(&dir);

    let out = tmp.path().join("hook.env");
    let hook = format!(
        "printf '%s\\n%s\\n%s\\n' \"$MTLSGATE_DEVICE_ID\" \"$MTLSGATE_CERT\" \"$MTLSGATE_KEY\" > {}",
        out.display()
    );
    let Outcome::Renewed(e) = run_once(&run_opts(&dir, Some(hook)))
        .await
        .expect("renewed")
    else {
        panic!("not renewed");
    };
    assert_eq!(e.device_id, id);
    assert_ne!(e.serial, old_serial);
    assert_eq!(serial(&dir.join("client.crt")), e.serial);
    assert_ne!(std::fs::read(dir.join("client.key")).expect("key"), old_key);
    assert_eq!(mode(&dir.join("client.key")), 0o600);
    let chain = certs(&dir.join("client.crt"));
    let key = mtlsgate_pki::key::read_key(&dir.join("client.key"), None).expect("key");
    mtlsgate_pki::ca::check_pair(&chain[0], &key, Path::new("crt"), Path::new("key"))
        .expect("the new key belongs to the new certificate");
    assert_eq!(
        listing(&dir),
        [
            "..<set>",
            "..data",
            "agent.json",
            "ca.crt",
            "client.crt",
            "client.key"
        ]
    );

    let st = StateDir::new(&dir).state().expect("state");
    assert!(st.last_renewal.is_some());
    assert_ne!(st.recovery_token, old_token, "the recovery token rotated");
    assert!(st.next_renewal.expect("next") > mtlsgate_agent::now_unix());

    let w = s.world();
    let renew: Vec<_> = w.seen.iter().filter(|r| r.path == "/v1/renew").collect();
    assert_eq!(renew.len(), 1);
    assert_eq!(renew[0].method, "POST");
    assert_eq!(
        renew[0].client_cn.as_deref(),
        Some(id.as_str()),
        "over mTLS"
    );
    let mut fields: Vec<&str> = renew[0]
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(fields, ["agent_version", "csr"]);
    assert_eq!(w.count("GET", "/v1/ca.pem"), 1, "ca.crt refreshed once");
    drop(w);

    let env = std::fs::read_to_string(&out).expect("hook ran");
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(lines[0], id);
    assert_eq!(
        Path::new(lines[1]),
        std::path::absolute(dir.join("client.crt")).expect("abs")
    );
    assert_eq!(
        Path::new(lines[2]),
        std::path::absolute(dir.join("client.key")).expect("abs")
    );
}

#[tokio::test]
async fn a_refused_renewal_shows_the_server_sentence_and_keeps_the_files() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let id = enrolled(&s, &dir).await;
    make_due(&dir);
    s.world().set_status(&id, "revoked");
    let certs_before: Vec<_> = snapshot(&dir)
        .into_iter()
        .filter(|(n, _)| n != "agent.json")
        .collect();
    let e = run_once(&run_opts(&dir, None)).await.expect_err("refused");
    assert_eq!(
        e.to_string(),
        format!("renewal refused by {}: the device is revoked", s.url())
    );
    let after: Vec<_> = snapshot(&dir)
        .into_iter()
        .filter(|(n, _)| n != "agent.json")
        .collect();
    assert_eq!(after, certs_before, "key and certificates untouched");
    let st = mtlsgate_agent::status(&dir).expect("status");
    let last = st.last_error.expect("last error recorded");
    assert_eq!(last.message, e.to_string());
}

#[tokio::test]
async fn a_server_under_an_unknown_root_is_refused_in_words() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    enrolled(&s, &dir).await;
    make_due(&dir);
    // The device now trusts another CA only (as after a root rollover it missed).
    let other = stand_in::Ca::new("Other").root_der;
    std::fs::write(
        dir.join("ca.crt"),
        mtlsgate_pki::pemfile::to_pem("CERTIFICATE", &other),
    )
    .expect("write");
    let e = run_once(&run_opts(&dir, None)).await.expect_err("refused");
    assert!(e.api().is_some_and(|a| a.is_unknown_issuer()), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "renewal failed: TLS with {}: the server's certificate was not issued by a CA this device trusts (--ca-file, or ca.crt in the state directory); if the CA's root was replaced, add the new root to ca.crt, or enroll again with the new --root-fingerprint",
            s.url()
        )
    );
    // The CA bundle download was tried too, and could not be trusted either.
    assert_eq!(
        s.world().seen.len(),
        1,
        "only the enrollment reached the server"
    );
    assert!(!dir.join("client.key.new").exists());
}

#[tokio::test]
async fn an_expired_certificate_is_recovered_with_the_recovery_token() {
    let s = StandIn::start().await;
    s.world().lifetime_secs = 2;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let id = enrolled(&s, &dir).await;
    let old_leaf = certs(&dir.join("client.crt"))[0].clone();
    let token = StateDir::new(&dir).state().expect("st").recovery_token;
    s.world().lifetime_secs = 3600;
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let Outcome::Recovered(e) = run_once(&run_opts(&dir, None)).await.expect("recovered") else {
        panic!("not recovered");
    };
    assert_eq!(e.device_id, id);
    assert!(e.not_after > mtlsgate_agent::now_unix() + 3000);

    let w = s.world();
    assert_eq!(
        w.count("POST", "/v1/renew"),
        0,
        "no mTLS with an expired certificate"
    );
    let rec: Vec<_> = w.seen.iter().filter(|r| r.path == "/v1/recover").collect();
    assert_eq!(rec.len(), 1);
    let b = &rec[0].body;
    let mut fields: Vec<&str> = b
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    // Every request body carries the agent's version: the server records it for the
    // device, after a recovery as after an enrollment or a renewal.
    assert_eq!(
        fields,
        [
            "agent_version",
            "certificate",
            "csr",
            "device_id",
            "recovery_token",
            "signature"
        ]
    );
    assert_eq!(b["agent_version"], mtlsgate_agent::AGENT_VERSION);
    assert_eq!(b["device_id"], id.as_str());
    assert_eq!(b["recovery_token"].as_str(), token.as_deref());
    assert_eq!(
        b["certificate"].as_str().expect("pem"),
        mtlsgate_pki::pemfile::to_pem("CERTIFICATE", &old_leaf),
        "the expired leaf"
    );
    assert_eq!(rec[0].client_cn, None);
}

#[tokio::test]
async fn an_expired_recovery_token_is_refused_with_the_server_sentence() {
    let s = StandIn::start().await;
    s.world().lifetime_secs = 1;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let id = enrolled(&s, &dir).await;
    s.world()
        .devices
        .get_mut(&id)
        .expect("device")
        .recovery_expired = true;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = run_once(&run_opts(&dir, None)).await.expect_err("gone");
    assert_eq!(e.api().and_then(|a| a.status()), Some(410));
    assert_eq!(
        e.to_string(),
        format!(
            "recovery refused by {}: the recovery token expired at 2026-01-01 00:00:00 UTC",
            s.url()
        )
    );
    assert!(!dir.join("client.key.new").exists());
}

#[tokio::test]
async fn the_ca_bundle_refresh_keeps_old_and_new_roots() {
    let s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    enrolled(&s, &dir).await;
    let next_root = stand_in::Ca::new("Next").root_der;
    s.world().extra_ca.push(next_root.clone());
    make_due(&dir);
    run_once(&run_opts(&dir, None)).await.expect("renewed");
    let ca = certs(&dir.join("ca.crt"));
    assert!(ca.contains(&s.ca.root_der), "old root kept");
    assert!(ca.contains(&next_root), "new root added");
    assert!(ca.contains(&s.ca.intermediate_der));
}

fn spawn_run(dir: &Path, control: &Control) -> tokio::task::JoinHandle<mtlsgate_agent::Result<()>> {
    let (dir, control): (PathBuf, Control) = (dir.to_path_buf(), control.clone());
    tokio::spawn(async move { run(&run_opts(&dir, None), &control).await })
}

#[tokio::test]
async fn run_renews_when_due_and_at_once_when_told_then_stops_cleanly() {
    let s = StandIn::start().await;
    // Long enough to still be valid when the agent starts on a loaded machine (with 3 s,
    // a slow enrollment left an expired certificate, which only recovery can replace).
    s.world().lifetime_secs = 8;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    enrolled(&s, &dir).await;
    s.world().lifetime_secs = 3600;
    let control = Control::new();
    let task = spawn_run(&dir, &control);
    // Due at two thirds of 8 s (± 5 %).
    wait_until("the scheduled renewal", Duration::from_secs(30), || {
        s.world().count("POST", "/v1/renew") == 1
    })
    .await;
    // Now an hour-long certificate: nothing is due, but told to renew, it renews.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.world().count("POST", "/v1/renew"), 1);
    control.renew_now();
    wait_until("the forced renewal", Duration::from_secs(20), || {
        s.world().count("POST", "/v1/renew") == 2
    })
    .await;
    control.stop();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped in time")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn run_backs_off_while_the_server_is_away_and_renews_when_it_is_back() {
    let mut s = StandIn::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    enrolled(&s, &dir).await;
    make_due(&dir);
    s.stop();
    let control = Control::new();
    let task = spawn_run(&dir, &control);
    // Attempts at about 0 s, 1 s and 3 s fail; the server is back at 2 s.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let st = mtlsgate_agent::status(&dir).expect("status");
    let last = st.last_error.expect("failure recorded");
    assert!(
        last.message
            .starts_with(&format!("renewal failed: cannot reach {}: ", s.url())),
        "{}",
        last.message
    );
    s.restart().await;
    wait_until(
        "the renewal after the back-off",
        Duration::from_secs(8),
        || s.world().count("POST", "/v1/renew") == 1,
    )
    .await;
    wait_until("the state to record it", Duration::from_secs(5), || {
        mtlsgate_agent::status(&dir)
            .map(|s| s.last_error.is_none() && s.last_renewal.is_some())
            .unwrap_or(false)
    })
    .await;
    control.stop();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped in time")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn run_without_an_enrolled_device_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = run(&run_opts(tmp.path(), None), &Control::new())
        .await
        .expect_err("not enrolled");
    assert_eq!(
        e.to_string(),
        format!(
            "no device is enrolled in {d}: run `mtlsgate agent enroll --dir {d} --server URL …` first",
            d = tmp.path().display()
        )
    );
}
