//! Issuances: the one winner of a token, many concurrent enrollments, the condition of
//! each kind of issuance, recovery rotation, and enrolling a revoked device again.

use std::collections::HashSet;

use super::*;

crate::both_backends!(
    a_token_enrolls_one_device_of_50_concurrent_issuances,
    a_thousand_concurrent_enrollments_are_all_recorded,
    concurrent_issuances_each_get_the_outcome_they_would_have_alone,
    issuance_conditions_and_recovery_rotation,
    a_revoked_device_enrolls_again_only_while_it_is_revoked,
);

/// The path every enrollment takes ([`Inventory::record_issuance`] with a token): of 50
/// concurrent issuances presenting the same token exactly one records its device and
/// certificate; the others are refused as "already used" and leave nothing behind.
async fn a_token_enrolls_one_device_of_50_concurrent_issuances(fx: Fx) {
    let inv = fx.inv.clone();
    inv.insert_token(&token("h1", 100), &audit("token"))
        .await
        .expect("token");
    let t = inv.token("h1").await.expect("token").expect("stored");
    assert_eq!(t.tags, vec!["a", "b"], "sorted, unique");
    let before = inv.revision().await.expect("revision");
    let mut tasks = Vec::new();
    for n in 0..50 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = enrollment(&format!("dev{n}"), "h1", &format!("{:04X}", 0x1000 + n));
            if let Some(d) = i.device.as_mut() {
                d.seen.at = 50;
            }
            inv.record_issuance(&i).await
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            Ok(d) => winners.push((n, d)),
            Err(e) => refusals.push(e),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one issuance wins: {refusals:?}");
    let (n, device) = &winners[0];
    let winner = format!("dev{n}");
    assert_eq!(
        device.as_ref().map(|d| d.id.as_str()),
        Some(winner.as_str())
    );
    assert_eq!(refusals.len(), 49);
    for e in &refusals {
        assert!(
            matches!(e, StoreError::TokenUsed { at: 50, by } if *by == winner),
            "{e}"
        );
    }
    assert_eq!(
        refusals[0].to_string(),
        format!("the enrollment token was already used at 1970-01-01 00:00:50 UTC by device {winner}; each token enrolls one device")
    );
    let t = inv.token("h1").await.expect("token").expect("stored");
    assert_eq!(
        (t.used_at, t.used_by.as_deref()),
        (Some(50), Some(winner.as_str()))
    );
    // The losers left nothing: one device, one certificate besides the root, one revision.
    let devices = inv
        .devices(&DeviceFilter::default())
        .await
        .expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(inv.list().await.expect("certs").len(), 2);
    assert_eq!(inv.revision().await.expect("revision"), before + 1);
    // Unknown and expired tokens are told apart, and an expired one stays unused.
    assert!(matches!(
        inv.record_issuance(&enrollment("x1", "nope", "2001")).await,
        Err(StoreError::TokenUnknown)
    ));
    inv.insert_token(&token("h2", 5), &audit("token"))
        .await
        .expect("token");
    assert!(matches!(
        inv.record_issuance(&enrollment("x2", "h2", "2002")).await,
        Err(StoreError::TokenExpired { at: 5 })
    ));
    assert!(inv
        .token("h2")
        .await
        .expect("token")
        .is_some_and(|t| t.used_at.is_none()));
    fx.inv.close().await;
}

async fn a_thousand_concurrent_enrollments_are_all_recorded(fx: Fx) {
    let inv = fx.inv.clone();
    for n in 0..1000 {
        inv.insert_token(&token(&format!("t{n}"), 100), &audit("token"))
            .await
            .expect("token");
    }
    let mut tasks = Vec::new();
    for n in 0..1000 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("d{n}.d.example.local");
            inv.record_issuance(&enrollment(&id, &format!("t{n}"), &format!("{n:04X}")))
                .await
        }));
    }
    for t in tasks {
        let d = t.await.expect("task").expect("recorded");
        assert!(d.is_some_and(|d| d.status == DeviceStatus::Active));
    }
    let devices = inv.devices(&DeviceFilter::default()).await.expect("list");
    assert_eq!(devices.len(), 1000);
    // On SQLite, issuances queued while the connection was busy were recorded together
    // (group commit): far fewer transactions than issuances.
    if let Pool::Sqlite(c) = &inv.pool {
        let committed = c.issuances.committed();
        assert!(
            committed < 250,
            "1000 concurrent issuances took {committed} transactions"
        );
    }
    let revisions: HashSet<i64> = devices.iter().map(|d| d.revision).collect();
    assert_eq!(
        revisions.len(),
        1000,
        "each enrollment has its own revision"
    );
    assert_eq!(inv.list().await.expect("certs").len(), 1001);
    fx.inv.close().await;
}

async fn issuance_conditions_and_recovery_rotation(fx: Fx) {
    let inv = &fx.inv;
    let id = "dev1.d.example.local";
    inv.insert_token(&token("tok", 100), &audit("token"))
        .await
        .expect("token");
    let d = inv
        .record_issuance(&enrollment(id, "tok", "0A01"))
        .await
        .expect("enrolled")
        .expect("device");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.cert_serial.as_deref(), Some("0A01"));
    assert_eq!(d.tags, vec!["lab"]);
    // The token is spent: a second enrollment with it records nothing.
    let e = inv
        .record_issuance(&enrollment("dev2.d.example.local", "tok", "0A02"))
        .await
        .expect_err("spent");
    assert!(matches!(e, StoreError::TokenUsed { .. }), "{e}");
    assert!(inv.get("0A02").await.is_err());
    assert!(inv
        .device("dev2.d.example.local")
        .await
        .expect("device")
        .is_none());
    // A token whose device ID is taken: nothing is recorded, the token stays unused.
    inv.insert_token(&token("tok2", 100), &audit("token"))
        .await
        .expect("token");
    let e = inv
        .record_issuance(&enrollment(id, "tok2", "0A03"))
        .await
        .expect_err("taken");
    assert!(matches!(e, StoreError::DeviceExists(_)), "{e}");
    assert!(inv
        .token("tok2")
        .await
        .expect("token")
        .is_some_and(|t| t.used_at.is_none()));
    let first = inv.recovery("rec-0A01").await.expect("rec").expect("rec");
    assert_eq!(first.replaced_at, None);
    // Renewal with the current certificate.
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Renewal {
                serial: "0A01".into(),
            },
            "0B01",
        ))
        .await
        .expect("renewed")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0B01"));
    assert_eq!(d.prev_serial.as_deref(), Some("0A01"));
    assert_eq!(d.last_addr.as_deref(), Some("10.0.0.9"));
    assert_eq!(d.agent_version.as_deref(), Some("1.1"));
    let first = inv.recovery("rec-0A01").await.expect("rec").expect("rec");
    assert_eq!(first.replaced_at, Some(7), "rotated");
    // Renewal against a certificate that is no longer current: nothing recorded.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Renewal {
                serial: "0A01".into(),
            },
            "0B02",
        ))
        .await
        .expect_err("stale");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0B02").await.is_err());
    // Recovery needs the current recovery token.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Recovery {
                serial: "0B01".into(),
                recovery_hash: "rec-0A01".into(),
            },
            "0C01",
        ))
        .await
        .expect_err("replaced token");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Recovery {
                serial: "0B01".into(),
                recovery_hash: "rec-0B01".into(),
            },
            "0C02",
        ))
        .await
        .expect("recovered")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0C02"));
    let current: Vec<Recovery> = futures_recoveries(inv, &["rec-0A01", "rec-0B01", "rec-0C02"])
        .await
        .into_iter()
        .filter(|r| r.replaced_at.is_none())
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].hash, "rec-0C02");
    // The retry of a lost answer: the previous certificate (0B01) renews once more; the
    // abandoned current one (0C02) is revoked at a revision, and no previous serial is kept.
    let before = inv.revision().await.expect("revision");
    let d = inv
        .record_issuance(&renewal(
            id,
            Via::Retry {
                abandoned: "0C02".into(),
                presented: "0B01".into(),
                reason: "superseded".into(),
            },
            "0D01",
        ))
        .await
        .expect("retried")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0D01"));
    assert_eq!(d.prev_serial, None);
    let abandoned = inv.get("0C02").await.expect("0C02");
    assert_eq!(abandoned.revocation_reason.as_deref(), Some("superseded"));
    let changes = inv.changes_since(before).await.expect("changes");
    assert!(
        changes.revoked.iter().any(|r| r.serial == "0C02"),
        "{changes:?}"
    );
    // Only once.
    let e = inv
        .record_issuance(&renewal(
            id,
            Via::Retry {
                abandoned: "0D01".into(),
                presented: "0B01".into(),
                reason: "superseded".into(),
            },
            "0D02",
        ))
        .await
        .expect_err("second retry");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0D01").await.expect("0D01").revoked_at.is_none());
    // A pending device collects its certificate once it is approved, with its poll token.
    let mut p = new_device("dev3.d.example.local", DeviceStatus::Pending);
    p.pending_csr = Some("CSR".into());
    p.poll_hash = Some("poll".into());
    inv.insert_device(&p, &audit("register"))
        .await
        .expect("pending");
    let poll = |serial: &str| {
        renewal(
            "dev3.d.example.local",
            Via::Poll {
                poll_hash: "poll".into(),
            },
            serial,
        )
    };
    let e = inv
        .record_issuance(&poll("0D01"))
        .await
        .expect_err("pending");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    inv.update_status(
        "dev3.d.example.local",
        &[DeviceStatus::Pending],
        DeviceStatus::Active,
        None,
        &audit("approve"),
    )
    .await
    .expect("approve");
    let d = inv
        .record_issuance(&poll("0D02"))
        .await
        .expect("collected")
        .expect("device");
    assert_eq!(d.cert_serial.as_deref(), Some("0D02"));
    assert_eq!((d.pending_csr, d.poll_hash), (None, None));
    let e = inv.record_issuance(&poll("0D03")).await.expect_err("spent");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    let log: Vec<String> = inv
        .audit_of(id, 10)
        .await
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(log, vec!["enroll", "renew", "renew", "renew"]);
    fx.inv.close().await;
}

async fn futures_recoveries(inv: &Inventory, hashes: &[&str]) -> Vec<Recovery> {
    let mut v = Vec::new();
    for h in hashes {
        v.push(inv.recovery(h).await.expect("rec").expect("stored"));
    }
    v
}

/// `Via::Reenroll`: a token bound to a revoked device's ID turns its row active again with
/// the new certificate (first sighting kept, old recovery tokens gone, old certificate still
/// revoked), at a new revision; once the row is no longer revoked nothing is recorded and
/// the token stays unused.
async fn a_revoked_device_enrolls_again_only_while_it_is_revoked(fx: Fx) {
    let inv = &fx.inv;
    let id = "cam1.d.example.local";
    inv.insert_token(&token("tok", 100), &audit("token"))
        .await
        .expect("token");
    inv.record_issuance(&enrollment(id, "tok", "0B01"))
        .await
        .expect("enrolled");
    inv.update_status(
        id,
        &[DeviceStatus::Active],
        DeviceStatus::Revoked,
        Some("cessationOfOperation"),
        &audit("revoke").device(id),
    )
    .await
    .expect("revoked");
    let before = inv.revision().await.expect("revision");
    let again = |hash: &str, serial: &str| {
        let mut i = enrollment(id, hash, serial);
        if let Some(d) = i.device.as_mut() {
            let Via::Token { hash, device } = d.via.clone() else {
                unreachable!("enrollment() is by token")
            };
            let mut device = device;
            device.tags = vec!["cam".into()];
            device.seen.at = 9;
            d.via = Via::Reenroll { hash, device };
        }
        i
    };
    inv.insert_token(&token("tok2", 100), &audit("token"))
        .await
        .expect("token");
    let d = inv
        .record_issuance(&again("tok2", "0B02"))
        .await
        .expect("enrolled again")
        .expect("device");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.cert_serial.as_deref(), Some("0B02"));
    assert_eq!(d.prev_serial, None);
    assert_eq!(d.tags, vec!["cam"]);
    assert_eq!(d.first_seen, 5, "the first sighting is kept");
    assert!(d.revision > before, "gateways see it");
    assert!(inv.get("0B01").await.expect("old").revoked_at.is_some());
    assert!(inv.recovery("rec-0B01").await.expect("read").is_none());
    assert!(inv.recovery("rec-0B02").await.expect("read").is_some());
    assert!(inv
        .token("tok2")
        .await
        .expect("read")
        .expect("tok2")
        .used_at
        .is_some());
    // Active again: a second re-enrollment records nothing and spends no token.
    inv.insert_token(&token("tok3", 100), &audit("token"))
        .await
        .expect("token");
    let e = inv
        .record_issuance(&again("tok3", "0B03"))
        .await
        .expect_err("not revoked");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(inv.get("0B03").await.is_err());
    assert!(inv
        .token("tok3")
        .await
        .expect("read")
        .expect("tok3")
        .used_at
        .is_none());
}

crate::both_backends!(an_imported_device_is_active_with_its_certificate);

async fn an_imported_device_is_active_with_its_certificate(fx: Fx) {
    let inv = &fx.inv;
    let id = "cam1.fleet.example";
    let start = inv.revision().await.expect("revision");
    let c = cert("7E57", "client", Some(id));
    let d = inv
        .import_device(
            &new_device(id, DeviceStatus::Active),
            &c,
            &audit("import").device(id),
        )
        .await
        .expect("import");
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.cert_serial.as_deref(), Some("7E57"));
    assert_eq!(d.cert_not_after, Some(c.not_after));
    assert_eq!(d.revision, start + 1, "gateways see it");
    assert_eq!(inv.get("7e57").await.expect("recorded"), c);
    let again = inv
        .import_device(
            &new_device(id, DeviceStatus::Active),
            &cert("7E58", "client", Some(id)),
            &audit("import"),
        )
        .await
        .expect_err("twice");
    assert!(matches!(again, StoreError::DeviceExists(_)), "{again}");
    let other = "cam2.fleet.example";
    let dup = inv
        .import_device(
            &new_device(other, DeviceStatus::Active),
            &CertRecord {
                sha256: "another certificate".into(),
                ..cert("7E57", "client", Some(other))
            },
            &audit("import"),
        )
        .await
        .expect_err("serial recorded");
    assert!(matches!(dup, StoreError::Duplicate(_)), "{dup}");
    assert!(
        inv.device(other).await.expect("read").is_none(),
        "nothing recorded"
    );
    // The certificate this CA issued (recorded, no device yet) is kept as it is.
    let own = cert("0E1E", "client", Some("own1"));
    inv.record(&own).await.expect("issued");
    let d = inv
        .import_device(
            &new_device("own1", DeviceStatus::Active),
            &own,
            &audit("import"),
        )
        .await
        .expect("own certificate");
    assert_eq!(d.cert_serial.as_deref(), Some("0E1E"));
    assert!(matches!(
        inv.get("7E58").await,
        Err(StoreError::UnknownSerial(_))
    ));
}

/// Issuances that arrive together each get the outcome they would have had alone: a
/// refused token or a serial already recorded among them refuses that one only, leaves
/// nothing of it behind, and costs the others nothing (on SQLite, where they queue to be
/// recorded together, their shared transaction is rolled back and each recorded alone).
async fn concurrent_issuances_each_get_the_outcome_they_would_have_alone(fx: Fx) {
    let inv = fx.inv.clone();
    inv.record(&cert("0BAD", "client", None))
        .await
        .expect("a certificate recorded before");
    for n in 0..60 {
        inv.insert_token(&token(&format!("t{n}"), 100), &audit("token"))
            .await
            .expect("token");
    }
    let mut tasks = Vec::new();
    for n in 0..60 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("m{n}.d.example.local");
            let (hash, serial) = match n % 3 {
                0 => (format!("unknown{n}"), format!("{:04X}", 0x3000 + n)),
                1 => (format!("t{n}"), format!("{:04X}", 0x3000 + n)),
                _ => (format!("t{n}"), "0BAD".to_string()),
            };
            inv.record_issuance(&enrollment(&id, &hash, &serial)).await
        }));
    }
    for (n, t) in tasks.into_iter().enumerate() {
        let out = t.await.expect("task");
        let id = format!("m{n}.d.example.local");
        match n % 3 {
            0 => assert!(matches!(out, Err(StoreError::TokenUnknown)), "{n}: {out:?}"),
            1 => assert_eq!(
                out.expect("recorded").map(|d| (d.id, d.status)),
                Some((id, DeviceStatus::Active)),
                "{n}"
            ),
            _ => assert!(
                matches!(&out, Err(StoreError::Duplicate(s)) if s == "0BAD"),
                "{n}: {out:?}"
            ),
        }
    }
    let devices = inv.devices(&DeviceFilter::default()).await.expect("list");
    assert_eq!(
        devices.len(),
        20,
        "only the issuances that stood left a device"
    );
    // Root, the certificate recorded before, and one per device.
    assert_eq!(inv.list().await.expect("certs").len(), 22);
    for n in 0..60 {
        let t = inv
            .token(&format!("t{n}"))
            .await
            .expect("token")
            .expect("kept");
        assert_eq!(t.used_at.is_some(), n % 3 == 1, "token t{n}");
    }
    fx.inv.close().await;
}
