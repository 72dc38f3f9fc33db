//! Certificates: recorded, listed, revoked at a revision, the CRL number.

use super::*;

crate::both_backends!(
    certificates_are_recorded_listed_and_revoked_at_a_revision,
    a_gateway_reads_the_changes_row_by_row_without_expired_certificates,
    a_full_read_in_chunks_gives_every_device_once_as_stored,
);

/// A full read crosses many chunks (small ones in tests): every device comes once, with
/// its ID, status, tags and revision exactly as stored, whatever characters they hold.
async fn a_full_read_in_chunks_gives_every_device_once_as_stored(fx: Fx) {
    let inv = &fx.inv;
    let odd = [
        "a:1;b.d.example.local",
        "12:34;.d.example.local",
        "ünïcode-é.d.example.local",
        "with space;and:colon",
        ";",
        ":",
        "9",
    ];
    let mut ids: Vec<String> = (0..400)
        .map(|i| format!("dev-{i:04}.d.example.local"))
        .collect();
    ids.extend(odd.iter().map(|s| s.to_string()));
    for (i, id) in ids.iter().enumerate() {
        let mut d = new_device(id, DeviceStatus::Active);
        d.tags = match i % 3 {
            0 => vec![],
            1 => vec!["x:1;".into(), "ü".into()],
            _ => vec!["lab".into()],
        };
        inv.insert_device(&d, &audit("enroll"))
            .await
            .expect("insert");
    }
    // Changed rows move (a new row version on PostgreSQL, elsewhere in the table).
    for id in ids.iter().step_by(9) {
        inv.update_status(
            id,
            &[DeviceStatus::Active],
            DeviceStatus::Denied,
            None,
            &audit("deny"),
        )
        .await
        .expect("deny");
    }
    let mut got = Vec::new();
    inv.read_changes(0, 0, |row| {
        if let GatewayRow::Device {
            id,
            status,
            tags,
            revision,
        } = row
        {
            got.push((id.to_string(), status, tags.to_string(), revision));
        }
        Ok(())
    })
    .await
    .expect("read");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<_> = inv
        .changes_since(0)
        .await
        .expect("changes")
        .devices
        .into_iter()
        .map(|d| (d.id, d.status, tags_to_json(&d.tags), d.revision))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), ids.len());
    assert_eq!(got, want);
    fx.inv.close().await;
}

/// What [`Inventory::read_changes`] gives, as owned values: devices (ID, status, tags
/// text), revoked serials with expiry, and the head.
async fn gateway_read(
    inv: &Inventory,
    since: i64,
    valid_at: i64,
) -> (
    Vec<(String, DeviceStatus, String)>,
    Vec<(String, i64)>,
    ChangesHead,
) {
    let (mut devices, mut revoked) = (Vec::new(), Vec::new());
    let head = inv
        .read_changes(since, valid_at, |row| {
            match row {
                GatewayRow::Device {
                    id, status, tags, ..
                } => devices.push((id.to_string(), status, tags.to_string())),
                GatewayRow::Revoked { serial, not_after } => {
                    revoked.push((serial.to_string(), not_after))
                }
            }
            Ok(())
        })
        .await
        .expect("read");
    devices.sort_by(|a, b| a.0.cmp(&b.0));
    revoked.sort();
    (devices, revoked, head)
}

async fn a_gateway_reads_the_changes_row_by_row_without_expired_certificates(fx: Fx) {
    let inv = &fx.inv;
    let start = inv.revision().await.expect("revision");
    inv.insert_device(
        &new_device("dev1.d.example.local", DeviceStatus::Active),
        &audit("enroll"),
    )
    .await
    .expect("insert");
    inv.record(&cert("0A01", "client", Some("dev1.d.example.local")))
        .await
        .expect("record");
    let mut old = cert("0A00", "client", Some("dev1.d.example.local"));
    old.not_after = 500;
    inv.record(&old).await.expect("record");
    inv.revoke("0A00", 10, None, &audit("revoke_cert"))
        .await
        .expect("revoke");
    inv.revoke("0A01", 11, None, &audit("revoke_cert"))
        .await
        .expect("revoke");
    let (devices, revoked, head) = gateway_read(inv, 0, 400).await;
    assert_eq!(head.revision, start + 3);
    assert_eq!(
        devices,
        vec![(
            "dev1.d.example.local".to_string(),
            DeviceStatus::Active,
            r#"["lab"]"#.to_string()
        )]
    );
    assert_eq!(
        parse_tags("dev1.d.example.local", &devices[0].2).expect("tags"),
        vec!["lab".to_string()]
    );
    assert_eq!(revoked, vec![("0A00".into(), 500), ("0A01".into(), 10_000)]);
    // Expired by then: left out.
    let (_, revoked, _) = gateway_read(inv, 0, 501).await;
    assert_eq!(revoked, vec![("0A01".into(), 10_000)]);
    // Only what changed after a revision.
    let (devices, revoked, head) = gateway_read(inv, start + 2, 0).await;
    assert!(devices.is_empty());
    assert_eq!(revoked, vec![("0A01".into(), 10_000)]);
    assert_eq!(head.revision, start + 3);
    // The same as changes_since, less the columns and expired certificates.
    let all = inv.changes_since(0).await.expect("changes");
    assert_eq!(all.revision, head.revision);
    assert_eq!(all.revision_ms, head.revision_ms);
    assert_eq!(all.revoked.len(), 2);
    // An error of the reader ends the read.
    let e = inv
        .read_changes(0, 0, |_| Err(StoreError::Duplicate("stop".into())))
        .await
        .expect_err("stopped");
    assert!(matches!(e, StoreError::Duplicate(_)), "{e}");
    // The inventory still answers afterwards.
    assert_eq!(inv.revision().await.expect("revision"), start + 3);
    fx.inv.close().await;
}

async fn certificates_are_recorded_listed_and_revoked_at_a_revision(fx: Fx) {
    let inv = &fx.inv;
    let c = cert("77AA", "client", Some("dev1.d.example.local"));
    inv.record(&c).await.expect("record");
    assert!(matches!(
        inv.record(&c).await,
        Err(StoreError::Duplicate(s)) if s == "77AA"
    ));
    inv.record(&cert("77AB", "server", None))
        .await
        .expect("record");
    let kinds: Vec<String> = inv
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, vec!["root", "client", "server"]);
    assert_eq!(inv.get("0x00:77:aa").await.expect("get"), c);
    let before = inv.revision().await.expect("revision");
    let r = inv
        .revoke("77aa", 10, Some("keyCompromise"), &audit("revoke_cert"))
        .await
        .expect("revoke");
    assert_eq!(r.revoked_at, Some(10));
    assert_eq!(r.revision, Some(before + 1));
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    let e = inv
        .revoke("77AA", 11, None, &audit("revoke_cert"))
        .await
        .expect_err("twice");
    assert_eq!(
        e.to_string(),
        "certificate 77AA is already revoked (since 1970-01-01 00:00:10 UTC)"
    );
    // A refused revocation takes no revision.
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    assert!(matches!(
        inv.revoke("FF", 11, None, &audit("revoke_cert")).await,
        Err(StoreError::UnknownSerial(s)) if s == "FF"
    ));
    assert_eq!(inv.revoked().await.expect("revoked").len(), 1);
    assert_eq!(inv.next_crl_number().await.expect("crl"), 1);
    assert_eq!(inv.next_crl_number().await.expect("crl"), 2);
    // A revoked certificate is never forgotten; an unissued one is.
    inv.forget_unissued("77AA").await.expect("forget");
    inv.forget_unissued("77ab").await.expect("forget");
    assert_eq!(inv.list().await.expect("list").len(), 2);
    let ch = inv.changes_since(before).await.expect("changes");
    assert_eq!(ch.revision, before + 1);
    assert_eq!(
        ch.revoked,
        vec![RevokedSerial {
            serial: "77AA".into(),
            device_id: Some("dev1.d.example.local".into()),
            revision: Some(before + 1)
        }]
    );
    assert!(inv
        .changes_since(before + 1)
        .await
        .expect("changes")
        .revoked
        .is_empty());
    fx.inv.close().await;
}
