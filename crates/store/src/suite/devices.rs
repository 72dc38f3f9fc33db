//! Devices: status compare-and-set and what gateways see of each change, the capped and
//! expiring approval queue.

use super::*;

crate::both_backends!(
    device_status_is_compare_and_set_and_gateways_see_each_change,
    pending_registrations_are_capped_and_expire,
    a_device_is_read_with_the_state_of_the_certificate_it_presents,
);

/// What a renewal reads before it signs, in one query: the device, and whether the
/// certificate it presented is known, revoked, and which fingerprint it has.
async fn a_device_is_read_with_the_state_of_the_certificate_it_presents(fx: Fx) {
    let inv = &fx.inv;
    let id = "dev2.d.example.local";
    inv.insert_token(&token("h1", 100), &audit("token"))
        .await
        .expect("token");
    inv.record_issuance(&enrollment(id, "h1", "0A01"))
        .await
        .expect("enrolled");
    inv.record(&cert("0A02", "client", Some(id)))
        .await
        .expect("second certificate");
    inv.revoke("0A02", 7, Some("keyCompromise"), &audit("revoke"))
        .await
        .expect("revoked");
    let (d, c) = inv
        .device_with_certificate(id, "0a01")
        .await
        .expect("read")
        .expect("the device");
    assert_eq!(
        (d.id.as_str(), d.cert_serial.as_deref()),
        (id, Some("0A01"))
    );
    assert_eq!(
        c,
        Some(CertState {
            revoked_at: None,
            sha256: "sha-0A01".into()
        }),
        "the serial is read as the inventory writes it"
    );
    let (_, c) = inv
        .device_with_certificate(id, "0A02")
        .await
        .expect("read")
        .expect("the device");
    assert_eq!(c.map(|c| c.revoked_at), Some(Some(7)));
    let (_, c) = inv
        .device_with_certificate(id, "0A03")
        .await
        .expect("read")
        .expect("the device");
    assert_eq!(c, None, "no such certificate");
    assert!(inv
        .device_with_certificate("nobody.d.example.local", "0A01")
        .await
        .expect("read")
        .is_none());
}

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

crate::both_backends!(
    paging_returns_every_device_once_while_devices_enroll,
    paging_filters_devices_and_certificates_in_the_database,
);

fn registration(n: u32, at: i64, tags: &[&str]) -> NewDevice {
    let mut d = new_device(&format!("dev{n:04}.d.example.local"), DeviceStatus::Pending);
    d.seen.at = at;
    d.tags = tags.iter().map(|t| t.to_string()).collect();
    d
}

/// Every device that exists for the whole listing comes back exactly once, in order,
/// while others are added before, among and after the listed ones (same first-seen
/// times included); an added one comes back at most once.
async fn paging_returns_every_device_once_while_devices_enroll(fx: Fx) {
    let inv = fx.inv.clone();
    let mut before = std::collections::BTreeSet::new();
    for n in 0..300u32 {
        let d = registration(n, 1000 + i64::from(n / 3), &["lab"]);
        inv.insert_device(&d, &audit("register"))
            .await
            .expect("insert");
        before.insert(d.id);
    }
    let adder = {
        let inv = inv.clone();
        tokio::spawn(async move {
            for n in 300..500u32 {
                // Before, among and after the existing ones.
                let at = [900, 1050, 5000][(n % 3) as usize];
                inv.insert_device(&registration(n, at, &[]), &audit("register"))
                    .await
                    .expect("insert");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen: Vec<Device> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = inv
            .devices_page(&DeviceFilter::default(), cursor.as_deref(), Some(7))
            .await
            .expect("page");
        assert!(page.items.len() <= 7);
        seen.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    adder.await.expect("adder");
    let mut ids: Vec<&str> = seen.iter().map(|d| d.id.as_str()).collect();
    let keys: Vec<(i64, &str)> = seen.iter().map(|d| (d.first_seen, d.id.as_str())).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "not in key order");
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a device came back twice");
    for id in &before {
        assert!(ids.contains(&id.as_str()), "{id} was skipped");
    }
    // Every device, listed again now that no more are added, with the largest pages.
    assert_eq!(
        inv.devices(&DeviceFilter::default())
            .await
            .expect("all")
            .len(),
        500
    );
    let e = inv
        .devices_page(&DeviceFilter::default(), Some("not-a-cursor"), None)
        .await
        .expect_err("bad cursor");
    assert!(matches!(e, StoreError::BadCursor(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("the cursor `not-a-cursor` is not one this inventory gave out"),
        "{e}"
    );
}

async fn paging_filters_devices_and_certificates_in_the_database(fx: Fx) {
    let inv = &fx.inv;
    for n in 0..20u32 {
        let tags: &[&str] = if n % 4 == 0 {
            &["cam", "lab"]
        } else {
            &["lab_x"]
        };
        inv.insert_device(
            &registration(n, 1000 + i64::from(n), tags),
            &audit("register"),
        )
        .await
        .expect("insert");
        let mut c = cert(&format!("{:04X}", 0xA000 + n), "client", None);
        c.issued_at = 2000 + i64::from(n);
        c.not_after = 10_000 + i64::from(n);
        c.subject = format!("CN=dev{n:04}.d.example.local");
        inv.record(&c).await.expect("record");
    }
    inv.update_status(
        "dev0003.d.example.local",
        &[DeviceStatus::Pending],
        DeviceStatus::Denied,
        None,
        &audit("deny"),
    )
    .await
    .expect("deny");
    let ids = |f: DeviceFilter| async move {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = inv
                .devices_page(&f, cursor.as_deref(), Some(3))
                .await
                .expect("page");
            out.extend(p.items.into_iter().map(|d| d.id[3..7].to_string()));
            match p.next {
                Some(n) => cursor = Some(n),
                None => return out,
            }
        }
    };
    assert_eq!(
        ids(DeviceFilter {
            tag: Some("cam".into()),
            ..Default::default()
        })
        .await,
        ["0000", "0004", "0008", "0012", "0016"]
    );
    // `lab` is not `lab_x`: a tag matches whole.
    assert_eq!(
        ids(DeviceFilter {
            tag: Some("lab".into()),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        ids(DeviceFilter {
            status: Some(DeviceStatus::Denied),
            ..Default::default()
        })
        .await,
        ["0003"]
    );
    assert_eq!(
        ids(DeviceFilter {
            id_prefix: Some("dev001".into()),
            ..Default::default()
        })
        .await,
        ["0010", "0011", "0012", "0013", "0014", "0015", "0016", "0017", "0018", "0019"]
    );
    assert_eq!(
        ids(DeviceFilter {
            id_contains: Some("7.d.".into()),
            ..Default::default()
        })
        .await,
        ["0007", "0017"]
    );
    assert!(ids(DeviceFilter {
        id_contains: Some("%".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    let serials = |f: CertFilter| async move {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = inv
                .certificates_page(&f, cursor.as_deref(), Some(4))
                .await
                .expect("page");
            out.extend(p.items.into_iter().map(|c| c.serial));
            match p.next {
                Some(n) => cursor = Some(n),
                None => return out,
            }
        }
    };
    assert_eq!(
        serials(CertFilter::default()).await.len(),
        21,
        "the root and 20"
    );
    assert_eq!(
        serials(CertFilter {
            serial_prefix: Some("A01".into()),
            ..Default::default()
        })
        .await,
        ["A010", "A011", "A012", "A013"]
    );
    assert_eq!(
        serials(CertFilter {
            subject_contains: Some("dev0005".into()),
            ..Default::default()
        })
        .await,
        ["A005"]
    );
    assert_eq!(
        serials(CertFilter {
            expiring_before: Some(10_002),
            kind: Some("client".into()),
            ..Default::default()
        })
        .await,
        ["A000", "A001"]
    );
    inv.revoke("A002", 50, None, &audit("revoke"))
        .await
        .expect("revoke");
    assert_eq!(
        serials(CertFilter {
            status: Some(CertStatus::Revoked),
            ..Default::default()
        })
        .await,
        ["A002"]
    );
    assert_eq!(
        serials(CertFilter {
            status: Some(CertStatus::Expired),
            now: 10_005,
            kind: Some("client".into()),
            ..Default::default()
        })
        .await,
        ["A000", "A001", "A003", "A004"]
    );
    let e = inv
        .certificates_page(&CertFilter::default(), Some(&"64".repeat(4)), None)
        .await
        .expect_err("a device cursor is not a certificate cursor");
    assert!(matches!(e, StoreError::BadCursor(_)), "{e}");
}
