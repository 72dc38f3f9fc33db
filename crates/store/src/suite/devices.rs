//! Devices: status compare-and-set and what gateways see of each change, the capped and
//! expiring approval queue.

use super::*;

crate::both_backends!(
    device_status_is_compare_and_set_and_gateways_see_each_change,
    pending_registrations_are_capped_and_expire,
);

async fn device_status_is_compare_and_set_and_gateways_see_each_change(fx: Fx) {
    let inv = &fx.inv;
    let mut listener = inv.listen().await.expect("listen");
    assert_eq!(listener.is_some(), inv.backend() == Backend::Postgres);
    let start = inv.revision().await.expect("revision");
    let id = "dev1.d.example.local";
    inv.insert_device(&new_device(id, DeviceStatus::Pending), &audit("register"))
        .await
        .expect("insert");
    let e = inv
        .insert_device(&new_device(id, DeviceStatus::Pending), &audit("register"))
        .await
        .expect_err("taken");
    assert_eq!(
        e.to_string(),
        "a device dev1.d.example.local is already in the inventory"
    );
    let d = inv
        .update_status(
            id,
            &[DeviceStatus::Pending],
            DeviceStatus::Active,
            None,
            &audit("approve"),
        )
        .await
        .expect("approve");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.revision, start + 2);
    let e = inv
        .update_status(
            id,
            &[DeviceStatus::Pending],
            DeviceStatus::Denied,
            None,
            &audit("deny"),
        )
        .await
        .expect_err("no longer pending");
    assert!(
        matches!(
            e,
            StoreError::StatusChanged {
                now: DeviceStatus::Active,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        inv.update_status(
            "nope",
            &[DeviceStatus::Pending],
            DeviceStatus::Active,
            None,
            &audit("approve")
        )
        .await,
        Err(StoreError::UnknownDevice(_))
    ));
    let d = inv
        .update_tags(
            id,
            &["z".into(), "a".into(), "z".into()],
            &audit("tag").device(id),
        )
        .await
        .expect("tags");
    assert_eq!(d.tags, vec!["a", "z"]);
    assert_eq!(d.revision, start + 3);
    // Revoking the device revokes its certificates (not expired ones) at the same revision.
    inv.record(&cert("0E01", "client", Some(id)))
        .await
        .expect("cert");
    let mut old = cert("0E00", "client", Some(id));
    old.not_after = 2;
    inv.record(&old).await.expect("cert");
    let d = inv
        .update_status(
            id,
            &[DeviceStatus::Active, DeviceStatus::Denied],
            DeviceStatus::Revoked,
            Some("cessationOfOperation"),
            &audit("revoke").device(id),
        )
        .await
        .expect("revoke");
    assert_eq!(d.revision, start + 4);
    let c = inv.get("0E01").await.expect("cert");
    assert_eq!(c.revision, Some(start + 4));
    assert_eq!(c.revocation_reason.as_deref(), Some("cessationOfOperation"));
    assert_eq!(inv.get("0E00").await.expect("cert").revoked_at, None);
    let all = inv.changes_since(0).await.expect("changes");
    assert_eq!(all.revision, start + 4);
    assert_eq!(all.devices.len(), 1);
    assert_eq!(all.devices[0].status, DeviceStatus::Revoked);
    assert_eq!(all.revoked.len(), 1);
    let none = inv.changes_since(start + 4).await.expect("changes");
    assert!(none.devices.is_empty() && none.revoked.is_empty());
    let since = inv.changes_since(start + 2).await.expect("changes");
    assert_eq!(since.devices.len(), 1);
    assert_eq!(
        inv.audit_of(id, 2)
            .await
            .expect("audit")
            .into_iter()
            .map(|a| a.action)
            .collect::<Vec<_>>(),
        vec!["tag", "revoke"],
        "the newest two, oldest first"
    );
    if let Some(l) = listener.as_mut() {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), l.recv())
                .await
                .expect("a notification within 10 s")
                .expect("notification");
            assert_eq!(n.channel(), NOTIFY_CHANNEL);
            seen.push(n.payload().parse::<i64>().expect("revision"));
        }
        assert_eq!(seen, vec![start + 1, start + 2, start + 3, start + 4]);
    }
    fx.inv.close().await;
}

// ---- integrity: PostgreSQL ----

async fn pending_registrations_are_capped_and_expire(fx: Fx) {
    let inv = &fx.inv;
    let pending = |n: u32| {
        let mut d = new_device(&format!("p{n}.d.example.local"), DeviceStatus::Pending);
        d.seen.at = i64::from(n);
        d
    };
    for n in 1..=3 {
        inv.insert_pending(&pending(n), &audit("register"), 3)
            .await
            .expect("registered");
    }
    let e = inv
        .insert_pending(&pending(4), &audit("register"), 3)
        .await
        .expect_err("full");
    assert!(matches!(e, StoreError::QueueFull { waiting: 3 }), "{e}");
    assert!(inv
        .device("p4.d.example.local")
        .await
        .expect("device")
        .is_none());
    // Registrations made before 3 go; an approved one stays.
    inv.update_status(
        "p1.d.example.local",
        &[DeviceStatus::Pending],
        DeviceStatus::Active,
        None,
        &audit("approve"),
    )
    .await
    .expect("approved");
    assert_eq!(inv.expire_pending(3).await.expect("expired"), 1);
    assert!(inv
        .device("p2.d.example.local")
        .await
        .expect("device")
        .is_none());
    assert!(inv
        .device("p1.d.example.local")
        .await
        .expect("device")
        .is_some());
    inv.insert_pending(&pending(4), &audit("register"), 3)
        .await
        .expect("room again");
}
