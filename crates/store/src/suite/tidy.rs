//! Retention: what `tidy` removes and keeps, the audit export, the dry run.

use super::*;

crate::both_backends!(
    tidy_removes_what_expired_past_retention_and_keeps_every_crl_complete,
    tidy_removes_nothing_when_the_audit_export_cannot_be_written,
    two_tidies_at_once_remove_each_record_once,
);

const DAY: i64 = 86_400;
const NOW: i64 = 1_000 * DAY;

/// A certificate of `device` that expires at `not_after`, revoked if `revoked`.
async fn cert_until(inv: &Inventory, serial: &str, not_after: i64, revoked: bool) {
    inv.record(&CertRecord {
        not_after,
        ..cert(serial, "client", None)
    })
    .await
    .expect("record");
    if revoked {
        inv.revoke(
            serial,
            NOW - 50 * DAY,
            Some("keyCompromise"),
            &audit("revoke"),
        )
        .await
        .expect("revoke");
    }
}

async fn audit_at(inv: &Inventory, at: i64, action: &str) {
    inv.log(&Audit::new(at, "test", action)).await.expect("log");
}

/// The fleet every test tidies: see the comments for what must stay.
async fn fleet(inv: &Inventory) {
    cert_until(inv, "A1", NOW - 40 * DAY, false).await; // goes
    cert_until(inv, "A2", NOW - 10 * DAY, false).await; // expired within retention
    cert_until(inv, "A3", NOW + 5 * DAY, true).await; // revoked, still valid: in the CRL
    cert_until(inv, "A4", NOW - 40 * DAY, true).await; // revoked, long expired: goes
    cert_until(inv, "A5", NOW - 10 * DAY, true).await; // revoked, expired within retention
    cert_until(inv, "A6", NOW + DAY, false).await; // valid
                                                   // A device whose current certificate expired long ago (it may still recover).
    let mut e = enrollment("dev1", "h1", "A7");
    e.cert.not_after = NOW - 40 * DAY;
    inv.insert_token(&token("h1", NOW), &audit("token"))
        .await
        .expect("token");
    inv.record_issuance(&e).await.expect("enroll");
    // Replaced recovery tokens: one expired long ago (goes), one still valid.
    for (hash, expires) in [("old", NOW - 40 * DAY), ("young", NOW + DAY)] {
        replaced_recovery(inv, hash, expires)
            .await
            .expect("recovery");
    }
    for at in [NOW - 400 * DAY, NOW - 380 * DAY, NOW - 366 * DAY] {
        audit_at(inv, at, "old").await;
    }
    audit_at(inv, NOW - DAY, "recent").await;
}

fn retention(dir: &Path, dry_run: bool) -> Retention {
    Retention {
        now: NOW,
        keep_expired: 30 * DAY,
        keep_audit: 365 * DAY,
        audit_export: dir.to_path_buf(),
        dry_run,
    }
}

async fn serials(inv: &Inventory) -> Vec<String> {
    let mut s: Vec<String> = inv
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    s.sort();
    s
}

async fn replaced_recovery(inv: &Inventory, hash: &str, expires: i64) -> Result<()> {
    on_pool!(inv, |p| sqlx::query(
        "INSERT INTO recovery (hash, device_id, issued_at, expires_at, replaced_at)
         VALUES ($1, 'dev1', 1, $2, 2)",
    )
    .bind(hash)
    .bind(expires)
    .execute(p)
    .await
    .map(|_| ())?);
    Ok(())
}

async fn column(inv: &Inventory, sql: &str) -> Result<Vec<String>> {
    Ok(on_pool!(inv, |p| sqlx::query_scalar(sql)
        .fetch_all(p)
        .await?))
}

async fn audit_actions(inv: &Inventory) -> Vec<String> {
    column(inv, "SELECT action FROM audit ORDER BY id")
        .await
        .expect("audit")
}

async fn recovery_hashes(inv: &Inventory) -> Vec<String> {
    column(inv, "SELECT hash FROM recovery ORDER BY hash")
        .await
        .expect("recovery")
}

async fn tidy_removes_what_expired_past_retention_and_keeps_every_crl_complete(fx: Fx) {
    let inv = &fx.inv;
    fleet(inv).await;
    let out = tempfile::tempdir().expect("tempdir");
    let export = out.path().join("audit");
    let all = serials(inv).await;
    let audit_before = audit_actions(inv).await;

    // The dry run counts and changes nothing.
    let dry = inv.tidy(&retention(&export, true)).await.expect("dry run");
    assert_eq!(
        (
            dry.certificates,
            dry.revoked,
            dry.recovery_tokens,
            dry.audit
        ),
        (2, 1, 1, 8),
        "{dry:?}"
    );
    assert_eq!(serials(inv).await, all);
    assert_eq!(audit_actions(inv).await, audit_before);
    assert!(!export.exists(), "a dry run writes no export");

    let t = inv.tidy(&retention(&export, false)).await.expect("tidy");
    assert_eq!(
        (t.certificates, t.revoked, t.recovery_tokens, t.audit),
        (2, 1, 1, 8),
        "{t:?}"
    );
    assert!(!t.skipped);
    assert_eq!(t.size.is_some(), inv.backend() == Backend::Sqlite);
    // Still valid, revoked or not, expired within retention, a device's current one, the
    // root: kept.
    assert_eq!(serials(inv).await, ["4A01", "A2", "A3", "A5", "A6", "A7"]);
    let crl: Vec<String> = inv
        .revoked()
        .await
        .expect("revoked")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(
        crl,
        ["A3", "A5"],
        "every revoked certificate not long expired"
    );
    assert_eq!(recovery_hashes(inv).await, ["rec-A7", "young"]);
    // The old audit records are in the export, as JSON lines, and only there.
    assert_eq!(t.audit_files.len(), 1);
    let text = std::fs::read_to_string(&t.audit_files[0]).expect("export");
    let lines: Vec<AuditEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // (The three "old" records, and the five the fleet's set-up wrote at time 5.)
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|a| a.at < NOW - 365 * DAY));
    assert_eq!(lines.iter().filter(|a| a.action == "old").count(), 3);
    assert!(!audit_actions(inv).await.contains(&"old".to_string()));
    assert!(audit_actions(inv).await.contains(&"recent".to_string()));
    let names: Vec<_> = std::fs::read_dir(&export)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");

    // Again: nothing more goes.
    let again = inv.tidy(&retention(&export, false)).await.expect("again");
    assert_eq!(
        (again.certificates, again.recovery_tokens, again.audit),
        (0, 0, 0)
    );

    // A revoked certificate leaves the CRL once it has expired plus the retention period.
    let later = Retention {
        now: NOW + 36 * DAY,
        ..retention(&export, false)
    };
    let t = inv.tidy(&later).await.expect("later");
    assert_eq!((t.certificates, t.revoked), (4, 2), "{t:?}"); // A2, A3, A5, A6
    assert_eq!(serials(inv).await, ["4A01", "A7"]);
    assert!(inv.revoked().await.expect("revoked").is_empty());
}

async fn tidy_removes_nothing_when_the_audit_export_cannot_be_written(fx: Fx) {
    let inv = &fx.inv;
    fleet(inv).await;
    let out = tempfile::tempdir().expect("tempdir");
    // A file where the directory should be: no user, root included, can write in it.
    let export = out.path().join("not-a-directory");
    std::fs::write(&export, "x").expect("file");
    let all = serials(inv).await;
    let audit_before = audit_actions(inv).await;
    let e = inv
        .tidy(&retention(&export, false))
        .await
        .expect_err("cannot export");
    assert!(matches!(e, StoreError::AuditExport { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot write the audit export {}",
            export.display()
        )) && text.ends_with("no audit record was removed"),
        "{text}"
    );
    assert_eq!(serials(inv).await, all);
    assert_eq!(audit_actions(inv).await, audit_before);
}

async fn two_tidies_at_once_remove_each_record_once(fx: Fx) {
    let inv = &fx.inv;
    fleet(inv).await;
    let out = tempfile::tempdir().expect("tempdir");
    let r = retention(out.path(), false);
    let other = inv.clone();
    let (a, b) = tokio::join!(inv.tidy(&r), other.tidy(&r));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.certificates + b.certificates, 2, "{a:?} {b:?}");
    assert_eq!(a.audit + b.audit, 8, "{a:?} {b:?}");
    assert_eq!(serials(inv).await, ["4A01", "A2", "A3", "A5", "A6", "A7"]);
}
