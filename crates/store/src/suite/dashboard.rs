//! The dashboard's store: login links used once, sessions, the overview's counts, and
//! the devices list's filters, order and pages.

use super::*;

crate::both_backends!(
    a_login_link_opens_one_session_once,
    device_pages_filter_sort_and_page,
);

fn session(hash: &str, now: i64) -> NewSession {
    NewSession {
        hash: hash.into(),
        csrf: format!("csrf-{hash}"),
        created_at: now,
        expires_at: now + 100,
    }
}

async fn a_login_link_opens_one_session_once(fx: Fx) {
    let inv = &fx.inv;
    inv.insert_login_link("L1", "alice", 10, 20, &audit("dashboard-login-link"))
        .await
        .expect("link");
    inv.insert_login_link("L2", "bob", 10, 20, &audit("dashboard-login-link"))
        .await
        .expect("link");
    // Unknown and expired links open nothing.
    assert_eq!(
        inv.login_with_link("nope", 11, &session("S0", 11))
            .await
            .expect("q"),
        None
    );
    assert_eq!(
        inv.login_with_link("L2", 20, &session("S0", 20))
            .await
            .expect("q"),
        None
    );
    assert_eq!(inv.dashboard_session("S0", 20).await.expect("q"), None);
    // A link works once.
    assert_eq!(
        inv.login_with_link("L1", 11, &session("S1", 11))
            .await
            .expect("q")
            .as_deref(),
        Some("alice")
    );
    assert_eq!(
        inv.login_with_link("L1", 12, &session("S2", 12))
            .await
            .expect("q"),
        None
    );
    assert_eq!(inv.dashboard_session("S2", 12).await.expect("q"), None);
    let s = inv
        .dashboard_session("S1", 12)
        .await
        .expect("q")
        .expect("session");
    assert_eq!((s.operator.as_str(), s.csrf.as_str()), ("alice", "csrf-S1"));
    assert!(format!("{s:?}").contains("<redacted>"));
    // Sessions end at their expiry, or when deleted.
    assert_eq!(inv.dashboard_session("S1", 111).await.expect("q"), None);
    inv.delete_dashboard_session("S1").await.expect("delete");
    assert_eq!(inv.dashboard_session("S1", 12).await.expect("q"), None);
    let log = inv.recent_audit(10).await.expect("audit");
    assert_eq!(log[0].actor, "dashboard:alice");
    assert_eq!(log[0].action, "dashboard-login");
    assert_eq!(log.len(), 3, "{log:?}");
}

async fn device_pages_filter_sort_and_page(fx: Fx) {
    let inv = &fx.inv;
    for (i, id) in ["c.d.x", "a.d.x", "b_1.d.x", "b1.d.x"].iter().enumerate() {
        let mut d = new_device(id, DeviceStatus::Pending);
        d.seen.at = 100 - i as i64;
        if *id == "b_1.d.x" {
            d.tags = vec!["cam_1".into()];
        }
        inv.insert_device(&d, &audit("register"))
            .await
            .expect("insert");
    }
    inv.update_status(
        "a.d.x",
        &[DeviceStatus::Pending],
        DeviceStatus::Active,
        None,
        &audit("approve"),
    )
    .await
    .expect("approve");
    let q = |status, search: Option<&str>, tag: Option<&str>, sort, descending, limit, offset| {
        DeviceQuery {
            status,
            search: search.map(str::to_string),
            tag: tag.map(str::to_string),
            sort,
            descending,
            limit,
            offset,
        }
    };
    let ids = |v: (Vec<Device>, i64)| (v.0.into_iter().map(|d| d.id).collect::<Vec<_>>(), v.1);
    let all = inv
        .device_page(&q(None, None, None, DeviceSort::Id, false, 10, 0))
        .await
        .expect("q");
    assert_eq!(
        ids(all),
        (
            vec![
                "a.d.x".into(),
                "b1.d.x".into(),
                "b_1.d.x".into(),
                "c.d.x".into()
            ],
            4
        )
    );
    let page2 = inv
        .device_page(&q(None, None, None, DeviceSort::Id, true, 2, 2))
        .await
        .expect("q");
    assert_eq!(ids(page2), (vec!["b1.d.x".into(), "a.d.x".into()], 4));
    let seen = inv
        .device_page(&q(None, None, None, DeviceSort::FirstSeen, false, 10, 0))
        .await
        .expect("q");
    assert_eq!(ids(seen).0, vec!["b1.d.x", "b_1.d.x", "a.d.x", "c.d.x"]);
    // `_` in a search or tag is a character, not a wildcard.
    let s = inv
        .device_page(&q(None, Some("B_1"), None, DeviceSort::Id, false, 10, 0))
        .await
        .expect("q");
    assert_eq!(ids(s), (vec!["b_1.d.x".into()], 1));
    let t = inv
        .device_page(&q(None, None, Some("cam_1"), DeviceSort::Id, false, 10, 0))
        .await
        .expect("q");
    assert_eq!(ids(t).0, vec!["b_1.d.x"]);
    let t = inv
        .device_page(&q(None, None, Some("cam"), DeviceSort::Id, false, 10, 0))
        .await
        .expect("q");
    assert_eq!(ids(t).1, 0, "a tag matches whole");
    let p = inv
        .device_page(&q(
            Some(DeviceStatus::Active),
            None,
            None,
            DeviceSort::Id,
            false,
            10,
            0,
        ))
        .await
        .expect("q");
    assert_eq!(ids(p), (vec!["a.d.x".into()], 1));
    let c = inv.fleet_counts(50, 0).await.expect("counts");
    assert_eq!(c.by_status[0], (DeviceStatus::Pending, 3));
    assert_eq!(c.by_status[1], (DeviceStatus::Active, 1));
    assert_eq!(c.by_status.len(), 5);
    assert_eq!(c.not_seen, 0);
    assert_eq!(
        inv.fleet_counts(50, 1000).await.expect("counts").not_seen,
        1
    );
    assert_eq!(inv.pending_count().await.expect("count"), 3);
    // Sorted by certificate expiry: devices without a certificate come last either way,
    // among themselves by ID in the same direction.
    for (n, (id, not_after)) in [("late.d.x", 900_000), ("early.d.x", 200_000)]
        .into_iter()
        .enumerate()
    {
        let hash = format!("tok{n}");
        inv.insert_token(&token(&hash, 100), &audit("token"))
            .await
            .expect("token");
        let mut e = enrollment(id, &hash, &format!("0B0{n}"));
        e.cert.not_after = not_after;
        inv.record_issuance(&e).await.expect("enrolled");
    }
    for (descending, want) in [
        (
            false,
            [
                "early.d.x",
                "late.d.x",
                "a.d.x",
                "b1.d.x",
                "b_1.d.x",
                "c.d.x",
            ],
        ),
        (
            true,
            [
                "late.d.x",
                "early.d.x",
                "c.d.x",
                "b_1.d.x",
                "b1.d.x",
                "a.d.x",
            ],
        ),
    ] {
        let page = inv
            .device_page(&q(None, None, None, DeviceSort::Expires, descending, 10, 0))
            .await
            .expect("q");
        assert_eq!(ids(page).0, want, "descending: {descending}");
    }
    let c = inv.fleet_counts(150_000, 0).await.expect("counts");
    assert_eq!((c.expiring_day, c.expiring_week, c.expired), (1, 1, 0));
    let c = inv.fleet_counts(300_000, 0).await.expect("counts");
    assert_eq!((c.expiring_day, c.expiring_week, c.expired), (0, 1, 1));
}
