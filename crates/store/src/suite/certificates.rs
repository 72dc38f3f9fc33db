//! Certificates: recorded, listed, revoked at a revision, the CRL number.

use super::*;

crate::both_backends!(certificates_are_recorded_listed_and_revoked_at_a_revision,);

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
