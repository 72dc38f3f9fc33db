//! Retention: `mtlsgate ca tidy` on a real inventory (its dry run, its refusal when the
//! audit export cannot be written, what it removes and keeps, the CRL `ca crl` signs
//! afterwards, read by openssl), and the tidy `ca serve` runs on its own.

use crate::util::{s, test_ca, CaServer, Db, Work};

both!(
    ca_tidy_removes_expired_certificates_and_keeps_every_crl_complete,
    ca_serve_tidies_on_its_own,
);

/// `cert issue client NAME --valid VALID` on `db`.
fn issue(w: &Work, db: &Db, name: &str, valid: &str) {
    let f = db.flags();
    let mut a = vec![
        "cert", "issue", "client", name, "--dir", "ca", "--valid", valid,
    ];
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// `NAME.crt`'s serial, as openssl prints it (uppercase hex).
fn serial(w: &Work, name: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-noout", "-serial", "-in", &format!("{name}.crt")],
        )
        .ok();
    out.trim().trim_start_matches("serial=").to_string()
}

fn revoke(w: &Work, db: &Db, name: &str) {
    let f = db.flags();
    let file = format!("{name}.crt");
    let mut a = vec!["ca", "revoke", "--dir", "ca", "--cert", &file];
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// The serials `ca list --json` shows.
fn listed(w: &Work, db: &Db) -> Vec<String> {
    let f = db.flags();
    let mut a = vec!["ca", "list", "--dir", "ca", "--json"];
    a.extend(s(&f));
    let v: serde_json::Value = serde_json::from_str(&w.mg(&a).ok()).expect("JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|c| c["serial"].as_str().expect("serial").to_string())
        .collect()
}

fn tidy(w: &Work, db: &Db, extra: &[&str]) -> crate::util::Run {
    let f = db.flags();
    let mut a = vec!["ca", "tidy", "--dir", "ca"];
    a.extend(s(&f));
    a.extend_from_slice(extra);
    w.mg(&a)
}

fn ca_tidy_removes_expired_certificates_and_keeps_every_crl_complete(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    issue(&w, &db, "gone", "1s");
    issue(&w, &db, "revoked-gone", "1s");
    issue(&w, &db, "valid", "7d");
    issue(&w, &db, "revoked-valid", "7d");
    revoke(&w, &db, "revoked-gone");
    revoke(&w, &db, "revoked-valid");
    let [gone, revoked_gone, valid, revoked_valid] =
        ["gone", "revoked-gone", "valid", "revoked-valid"].map(|n| serial(&w, n));
    // "Expired more than 1s ago" compares whole seconds (notAfter and now, both truncated):
    // a certificate valid for 1s qualifies up to 3 s after it was issued.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let before = listed(&w, &db);
    assert_eq!(
        before.len(),
        7,
        "root, intermediate, admin and four: {before:?}"
    );

    // The dry run says what would go, and changes nothing.
    let out = tidy(&w, &db, &["--keep-expired", "1s", "--dry-run"]).ok();
    assert!(
        out.contains("Would remove 2 certificates expired more than 1s ago (1 revoked: expired, no CRL needs it any more)")
            && out.contains("Nothing was changed (--dry-run)."),
        "{out}"
    );
    assert_eq!(listed(&w, &db), before);

    // An export directory that cannot be written: a clear refusal, nothing removed.
    std::fs::write(w.path("not-a-dir"), "x").expect("file");
    let err = tidy(
        &w,
        &db,
        &[
            "--keep-expired",
            "1s",
            "--keep-audit",
            "1s",
            "--audit-export",
            "not-a-dir",
        ],
    )
    .fails();
    assert!(
        err.contains("cannot write the audit export not-a-dir/audit-")
            && err.contains("no audit record was removed"),
        "{err}"
    );
    assert_eq!(listed(&w, &db), before);

    let out = tidy(&w, &db, &["--keep-expired", "1s", "--keep-audit", "1s"]).ok();
    assert!(
        out.starts_with("Removed 2 certificates expired more than 1s ago (1 revoked"),
        "{out}"
    );
    assert!(
        out.contains("audit records older than 1s, after writing them to ca/audit/audit-"),
        "{out}"
    );
    let after = listed(&w, &db);
    assert!(
        !after.contains(&gone) && !after.contains(&revoked_gone),
        "{after:?}"
    );
    assert!(
        after.contains(&valid) && after.contains(&revoked_valid),
        "{after:?}"
    );
    // The export: every record as a JSON line, the issuances among them.
    let files = w.listing("ca/audit");
    assert_eq!(files.len(), 1, "{files:?}");
    let text = w.read(&format!("ca/audit/{}", files[0]));
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(rows.iter().any(|r| r["serial"] == gone.as_str()), "{text}");

    // The CRL signed now still lists the revoked certificate that is valid.
    let f = db.flags();
    let mut a = vec!["ca", "crl", "--dir", "ca", "--out", "crl.pem"];
    a.extend(s(&f));
    w.mg(&a).ok();
    let crl = w
        .cmd("openssl", &["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok();
    assert!(crl.contains(&revoked_valid), "{crl}");
    assert!(!crl.contains(&revoked_gone), "{crl}");

    // Nothing more to do.
    let out = tidy(&w, &db, &["--keep-expired", "1s"]).ok();
    assert!(out.starts_with("Nothing was removed"), "{out}");
}

fn ca_serve_tidies_on_its_own(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    crate::util::fleet_server_cert(&w, &db);
    issue(&w, &db, "gone", "1s");
    let gone = serial(&w, "gone");
    // As above: whole seconds, so up to 3 s after issuance.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let mut srv = CaServer::start_for(&w, &db, &["--tidy-every", "1s", "--keep-expired", "1s"]);
    let said = srv.proc.wait_for("tidy: ");
    assert!(
        said.starts_with("Removed 1 certificate expired more than 1s ago"),
        "{said}"
    );
    assert!(!listed(&w, &db).contains(&gone));
}
