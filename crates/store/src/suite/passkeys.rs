//! The dashboard's passkeys: ceremonies taken once and only before they expire, passkeys
//! per operator, sign-in with one (never as another operator, never once removed), and the
//! audit records of each change.

use super::*;

crate::both_backends!(
    a_ceremony_is_taken_once_and_only_in_time,
    passkeys_belong_to_one_operator,
    another_process_finishes_a_ceremony_once,
);

fn ceremony(hash: &str, kind: CeremonyKind, expires_at: i64) -> NewCeremony {
    NewCeremony {
        hash: hash.into(),
        kind,
        operator: "alice".into(),
        state: format!("{{\"state\":\"{hash}\"}}"),
        expires_at,
    }
}

fn passkey(id: &str, operator: &str) -> PasskeyRecord {
    PasskeyRecord {
        id: id.into(),
        operator: operator.into(),
        name: format!("key {id}"),
        credential: "{\"counter\":0}".into(),
        created_at: 10,
        last_used_at: None,
    }
}

fn session(hash: &str, now: i64) -> NewSession {
    NewSession {
        hash: hash.into(),
        csrf: format!("csrf-{hash}"),
        created_at: now,
        expires_at: now + 100,
    }
}

async fn a_ceremony_is_taken_once_and_only_in_time(fx: Fx) {
    let inv = &fx.inv;
    inv.insert_passkey_ceremony(&ceremony("C1", CeremonyKind::Register, 20), 10)
        .await
        .expect("insert");
    inv.insert_passkey_ceremony(&ceremony("C2", CeremonyKind::SignIn, 20), 10)
        .await
        .expect("insert");
    inv.insert_passkey_ceremony(&ceremony("C3", CeremonyKind::SignIn, 20), 10)
        .await
        .expect("insert");
    // Another kind finds nothing (and leaves it).
    assert_eq!(
        inv.take_passkey_ceremony("C1", CeremonyKind::SignIn, 11)
            .await
            .expect("take"),
        None
    );
    let (op, state) = inv
        .take_passkey_ceremony("C1", CeremonyKind::Register, 11)
        .await
        .expect("take")
        .expect("there");
    assert_eq!(
        (op.as_str(), state.as_str()),
        ("alice", "{\"state\":\"C1\"}")
    );
    // Once only.
    assert_eq!(
        inv.take_passkey_ceremony("C1", CeremonyKind::Register, 11)
            .await
            .expect("take"),
        None
    );
    // Not after it expired (and it is gone then too).
    assert_eq!(
        inv.take_passkey_ceremony("C2", CeremonyKind::SignIn, 20)
            .await
            .expect("take"),
        None
    );
    assert_eq!(
        inv.take_passkey_ceremony("C2", CeremonyKind::SignIn, 11)
            .await
            .expect("take"),
        None
    );
    // Expired ones are forgotten when the next is kept.
    inv.insert_passkey_ceremony(&ceremony("C4", CeremonyKind::SignIn, 40), 30)
        .await
        .expect("insert");
    assert_eq!(
        inv.take_passkey_ceremony("C3", CeremonyKind::SignIn, 11)
            .await
            .expect("take"),
        None
    );
    assert!(inv
        .take_passkey_ceremony("C4", CeremonyKind::SignIn, 31)
        .await
        .expect("take")
        .is_some());
    assert!(!format!("{:?}", ceremony("C5", CeremonyKind::SignIn, 1)).contains("state\\\":"));
}

async fn passkeys_belong_to_one_operator(fx: Fx) {
    let inv = &fx.inv;
    let a = Audit::new(10, "dashboard:alice", "dashboard-passkey-register");
    assert!(inv
        .add_passkey(&passkey("K1", "alice"), &a)
        .await
        .expect("add"));
    assert!(inv
        .add_passkey(&passkey("K2", "alice"), &a)
        .await
        .expect("add"));
    let b = Audit::new(10, "dashboard:bob", "dashboard-passkey-register");
    assert!(inv
        .add_passkey(&passkey("K3", "bob"), &b)
        .await
        .expect("add"));
    // The same credential twice: refused, nothing written.
    assert!(!inv
        .add_passkey(&passkey("K1", "bob"), &b)
        .await
        .expect("add"));
    let ids = |v: Vec<PasskeyRecord>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(inv.passkeys_of("alice").await.expect("q")),
        ["K1", "K2"]
    );
    assert_eq!(ids(inv.passkeys_of("bob").await.expect("q")), ["K3"]);

    // Alice's passkey does not sign bob in, and changes nothing.
    assert!(!inv
        .login_with_passkey("bob", "K1", "{\"counter\":9}", 20, &session("S0", 20))
        .await
        .expect("login"));
    assert_eq!(inv.dashboard_session("S0", 20).await.expect("q"), None);
    assert_eq!(
        inv.passkeys_of("alice").await.expect("q")[0].credential,
        "{\"counter\":0}"
    );
    // Her own: the session opens, the counter and last use are kept.
    assert!(inv
        .login_with_passkey("alice", "K1", "{\"counter\":1}", 21, &session("S1", 21))
        .await
        .expect("login"));
    let s = inv
        .dashboard_session("S1", 22)
        .await
        .expect("q")
        .expect("session");
    assert_eq!(s.operator, "alice");
    let k1 = inv.passkeys_of("alice").await.expect("q").remove(0);
    assert_eq!(
        (k1.credential.as_str(), k1.last_used_at),
        ("{\"counter\":1}", Some(21))
    );

    // Bob cannot remove alice's passkey; she can; then it signs nobody in.
    let r = Audit::new(30, "dashboard:bob", "dashboard-passkey-remove");
    assert!(!inv.remove_passkey("bob", "K1", &r).await.expect("remove"));
    let r = Audit::new(30, "dashboard:alice", "dashboard-passkey-remove");
    assert!(inv.remove_passkey("alice", "K1", &r).await.expect("remove"));
    assert!(!inv.remove_passkey("alice", "K1", &r).await.expect("remove"));
    assert!(!inv
        .login_with_passkey("alice", "K1", "{}", 31, &session("S2", 31))
        .await
        .expect("login"));
    assert_eq!(inv.dashboard_session("S2", 31).await.expect("q"), None);
    assert_eq!(ids(inv.passkeys_of("alice").await.expect("q")), ["K2"]);

    let log = inv.recent_audit(20).await.expect("audit");
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("dashboard:alice", "dashboard-passkey-remove"),
            ("dashboard:alice", "dashboard-login-passkey"),
            ("dashboard:bob", "dashboard-passkey-register"),
            ("dashboard:alice", "dashboard-passkey-register"),
            ("dashboard:alice", "dashboard-passkey-register"),
        ]
    );
}

/// Two `ca serve` processes on one inventory: a ceremony begun by one is finished by the
/// other, and then by neither again.
async fn another_process_finishes_a_ceremony_once(fx: Fx) {
    let other = Inventory::open(fx.inv.location(), ROOT)
        .await
        .expect("second handle");
    fx.inv
        .insert_passkey_ceremony(&ceremony("C1", CeremonyKind::SignIn, 20), 10)
        .await
        .expect("insert");
    assert!(other
        .take_passkey_ceremony("C1", CeremonyKind::SignIn, 11)
        .await
        .expect("take")
        .is_some());
    assert_eq!(
        fx.inv
            .take_passkey_ceremony("C1", CeremonyKind::SignIn, 11)
            .await
            .expect("take"),
        None
    );
    other.close().await;
}
