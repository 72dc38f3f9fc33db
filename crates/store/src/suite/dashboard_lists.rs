//! The dashboard's tokens and audit pages: tokens newest first, a token withdrawn once
//! (never a used one), the audit log filtered and keyset-paged newest first.

use super::*;

crate::both_backends!(
    tokens_list_newest_first_and_withdraw_once,
    audit_pages_filter_and_follow_their_keys,
);

async fn tokens_list_newest_first_and_withdraw_once(fx: Fx) {
    let inv = &fx.inv;
    for (hash, created) in [("t1", 1), ("t2", 3), ("t3", 2)] {
        let mut t = token(hash, 1_000);
        t.created_at = created;
        inv.insert_token(&t, &audit("token")).await.expect("token");
    }
    let (list, total) = inv.tokens_page(2, 0).await.expect("page");
    assert_eq!(total, 3);
    let hashes: Vec<&str> = list.iter().map(|t| t.hash.as_str()).collect();
    assert_eq!(hashes, ["t2", "t3"]);
    let (list, _) = inv.tokens_page(2, 2).await.expect("page 2");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tags, ["a", "b"]);

    // Withdrawn: it expires now, once, with its audit record.
    let w = Audit::new(50, "dashboard:alice", "token-withdraw");
    assert!(inv.withdraw_token("t1", 50, &w).await.expect("withdraw"));
    assert_eq!(
        inv.token("t1").await.expect("read").expect("t1").expires_at,
        50
    );
    assert!(!inv.withdraw_token("t1", 60, &w).await.expect("again"));
    assert!(!inv.withdraw_token("nope", 60, &w).await.expect("unknown"));
    let withdrawn = inv
        .audit_page(
            &AuditFilter {
                action: Some("token-withdraw".into()),
                ..AuditFilter::default()
            },
            None,
            10,
        )
        .await
        .expect("audit");
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    // A used token is not withdrawn.
    inv.record_issuance(&enrollment("dev1", "t2", "0A"))
        .await
        .expect("enroll");
    assert!(!inv.withdraw_token("t2", 60, &w).await.expect("used"));
    assert!(inv
        .token("t2")
        .await
        .expect("read")
        .expect("t2")
        .used_at
        .is_some());
}

async fn audit_pages_filter_and_follow_their_keys(fx: Fx) {
    let inv = &fx.inv;
    for i in 0..7_i64 {
        let actor = if i % 2 == 0 { "dashboard:alice" } else { "cli" };
        let a = Audit::new(100 + i * 10, actor, if i < 4 { "tag" } else { "revoke" })
            .device(&format!("dev{}", i % 3));
        inv.log(&a).await.expect("log");
    }
    let all = inv
        .audit_page(&AuditFilter::default(), None, 100)
        .await
        .expect("all");
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    // Pages of 3 by key: every record once, in order.
    let f = AuditFilter::default();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = inv.audit_page(&f, before, 3).await.expect("page");
        seen.extend(page.iter().map(|a| a.id));
        match page.last() {
            Some(a) if page.len() == 3 => before = Some(a.id),
            _ => break,
        }
    }
    assert_eq!(seen, all.iter().map(|a| a.id).collect::<Vec<_>>());
    // Filters, each and together.
    let count = |f: AuditFilter| async move {
        inv.audit_page(&f, None, 100).await.expect("filtered").len()
    };
    let alice = || AuditFilter {
        actor: Some("dashboard:alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(alice()).await, 4);
    assert_eq!(
        count(AuditFilter {
            action: Some("revoke".into()),
            ..alice()
        })
        .await,
        2
    );
    assert_eq!(
        count(AuditFilter {
            device: Some("dev0".into()),
            ..AuditFilter::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(AuditFilter {
            since: Some(120),
            until: Some(150),
            ..AuditFilter::default()
        })
        .await,
        3
    );
}
