//! The authority's rules and refusals, each run against SQLite and PostgreSQL
//! (`MTLSGATE_TEST_POSTGRES`, see mtlsgate_store::test_support). Times are passed in.

use std::collections::HashSet;
use std::sync::Arc;

use mtlsgate_pki::key::KeyType;
use mtlsgate_pki::pemfile;
use mtlsgate_store::test_support;
use rcgen::{CertificateParams, DnType, KeyPair, SigningKey};

use super::*;
use crate::enroll::rate_key;

const DOMAIN: &str = "d.example.local";

struct Fx {
    auth: Authority,
    _dir: tempfile::TempDir,
}

async fn fixture(database: Option<Location>) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let opts = InitOptions {
        name: "Test".into(),
        key_type: KeyType::P256,
        device_domain: DOMAIN.into(),
        passphrase: None,
        root_validity: Duration::days(30),
        intermediate_validity: Duration::days(30),
    };
    let made = Authority::init(&ca_dir, &opts, database.as_ref(), Duration::days(30))
        .await
        .expect("init");
    assert!(ca_dir.join("admin.crt").exists() && ca_dir.join("admin.key").exists());
    assert_eq!(made.admin.info.uris, vec![ADMIN_URI.to_string()]);
    let mut auth = Authority::open(&ca_dir, database.as_ref(), Policy::default())
        .await
        .expect("open");
    auth.load_keys(None).expect("keys");
    Fx { auth, _dir: dir }
}

async fn sqlite() -> Fx {
    fixture(None).await
}

async fn postgres() -> Fx {
    fixture(Some(Location::Postgres(test_support::new_database().await))).await
}

mtlsgate_store::both_backends!(
    tokens_enroll_one_device_each,
    device_csrs_are_checked_before_a_token_is_spent,
    a_pending_device_is_approved_then_collects_its_certificate,
    renewal_rules,
    recovery_rules_and_clones,
    status_changes_follow_the_machine,
    certificates_revocation_and_crl,
    a_thousand_concurrent_enrollments,
    a_token_enrolls_one_device_of_50_concurrent_enrollments,
    administrators_are_recognised_by_their_certificate,
    lifetimes_come_from_the_token_then_the_tags_then_the_default,
);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A CSR for `key` whose subject and SANs try to name another device.
fn csr(key: &KeyPair) -> Vec<u8> {
    let mut p = CertificateParams::new(vec!["victim.d.example.local".into()]).expect("params");
    p.distinguished_name
        .push(DnType::CommonName, "victim.d.example.local");
    p.serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
        .into_bytes()
}

/// A CSR made by openssl with a key rcgen will not make (`-newkey ARG [-pkeyopt OPT]`).
fn openssl_csr(newkey: &str, pkeyopt: Option<&str>) -> Vec<u8> {
    let mut args = vec![
        "req", "-new", "-newkey", newkey, "-nodes", "-subj", "/CN=weak",
    ];
    if let Some(o) = pkeyopt {
        args.extend(["-pkeyopt", o]);
    }
    args.extend(["-keyout", "/dev/null"]);
    let out = std::process::Command::new("openssl")
        .args(&args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    let blocks = pemfile::parse_blocks("chain", pem.as_bytes()).expect("pem");
    pemfile::certs_from_blocks("chain", blocks)
        .expect("certs")
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

async fn token(fx: &Fx, device_id: Option<&str>, tags: &[&str]) -> String {
    fx.auth
        .create_token(
            TokenRequest {
                device_id: device_id.map(str::to_string),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ttl: Duration::hours(1),
                lifetime: None,
            },
            "admin",
            now(),
        )
        .await
        .expect("token")
        .token
}

fn request(key: &KeyPair, token: Option<String>) -> EnrollRequest {
    EnrollRequest {
        csr: csr(key),
        token,
        agent_version: Some("0.1".into()),
        hostname: Some("pi".into()),
        addr: Some("127.0.0.1".into()),
        ..Default::default()
    }
}

async fn enroll(fx: &Fx, key: &KeyPair) -> DeviceIssued {
    let t = token(fx, None, &["lab"]).await;
    match fx
        .auth
        .enroll(request(key, Some(t)), now())
        .await
        .expect("enrolled")
    {
        Enrolled::Issued(i) => i,
        Enrolled::Pending { .. } => panic!("a token enrolls at once"),
    }
}

#[track_caller]
fn kind_of<T: fmt::Debug>(r: Result<T>, kind: ErrorKind) -> AuthorityError {
    let e = r.expect_err("refused");
    assert_eq!(e.kind(), kind, "{e}");
    e
}

async fn tokens_enroll_one_device_each(fx: Fx) {
    let key = KeyPair::generate().expect("key");
    let t = token(&fx, None, &["b", "a", "b"]).await;
    assert!(t.starts_with("mtg_") && t.len() == 47, "{t}");
    let i = match fx
        .auth
        .enroll(request(&key, Some(t.clone())), now())
        .await
        .expect("enrolled")
    {
        Enrolled::Issued(i) => i,
        Enrolled::Pending { .. } => panic!("pending"),
    };
    // A new random ID: 128 bits, lower-case hex, in the device domain.
    let (hexid, domain) = i.device_id.split_once('.').expect("dot");
    assert_eq!(domain, DOMAIN);
    assert!(
        hexid.len() == 32
            && hexid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(i.tags, vec!["a", "b"]);
    assert!(i.recovery_token.starts_with("mtr_"));
    // The certificate names the device, not what the CSR asked for.
    let c = chain(&i.certificate);
    assert_eq!(c.len(), 2, "leaf + intermediate");
    let info = CertInfo::from_der(&c[0]).expect("info");
    assert_eq!(info.subject, format!("CN={}", i.device_id));
    assert_eq!(info.dns_names, vec![i.device_id.clone()]);
    assert_eq!(info.extended_key_usages, vec!["clientAuth"]);
    assert_eq!(i.not_after, info.not_after.unix_timestamp());
    let lifetime = info.not_after - info.not_before;
    assert!(
        lifetime <= Duration::hours(24) + Duration::minutes(5),
        "{lifetime}"
    );
    // Recorded before it was returned.
    let rec = fx.auth.inventory().get(&i.serial).await.expect("recorded");
    assert_eq!(rec.device_id.as_deref(), Some(i.device_id.as_str()));
    // The token is spent.
    let e = kind_of(
        fx.auth.enroll(request(&key, Some(t)), now()).await,
        ErrorKind::Conflict,
    );
    assert!(
        e.to_string()
            .starts_with("the enrollment token was already used at ")
            && e.to_string()
                .contains(&format!("by device {}", i.device_id)),
        "{e}"
    );
    // Expired, malformed and foreign tokens.
    let short = fx
        .auth
        .create_token(
            TokenRequest {
                ttl: Duration::seconds(60),
                ..Default::default()
            },
            "admin",
            now(),
        )
        .await
        .expect("token");
    let e = kind_of(
        fx.auth
            .enroll(
                request(&key, Some(short.token)),
                now() + Duration::seconds(61),
            )
            .await,
        ErrorKind::Gone,
    );
    assert!(
        e.to_string().starts_with("the enrollment token expired at"),
        "{e}"
    );
    let e = kind_of(
        fx.auth
            .enroll(request(&key, Some("hunter2".into())), now())
            .await,
        ErrorKind::Unauthenticated,
    );
    assert_eq!(
        e.to_string(),
        "this is not an mtlsgate enrollment token (those start with mtg_)"
    );
    let foreign = new_secret(TOKEN_PREFIX);
    let e = kind_of(
        fx.auth.enroll(request(&key, Some(foreign)), now()).await,
        ErrorKind::Unauthenticated,
    );
    assert!(e.to_string().contains("not known to this CA"), "{e}");
    // A token bound to an ID enrolls that ID; another device's ID cannot be taken.
    let bound = token(&fx, Some("Dev7"), &[]).await;
    let d = match fx
        .auth
        .enroll(request(&key, Some(bound)), now())
        .await
        .expect("bound")
    {
        Enrolled::Issued(i) => i,
        Enrolled::Pending { .. } => panic!("pending"),
    };
    assert_eq!(d.device_id, "dev7.d.example.local");
    let e = kind_of(
        fx.auth
            .create_token(
                TokenRequest {
                    device_id: Some("dev7".into()),
                    ttl: Duration::hours(1),
                    ..Default::default()
                },
                "admin",
                now(),
            )
            .await,
        ErrorKind::Conflict,
    );
    assert!(
        e.to_string()
            .starts_with("device dev7.d.example.local is already enrolled"),
        "{e}"
    );
    // Two tokens bound to the same new ID: the second cannot take over the enrolled device,
    // and stays unused.
    let first = token(&fx, Some("dev9"), &[]).await;
    let second = token(&fx, Some("dev9"), &[]).await;
    assert!(matches!(
        fx.auth.enroll(request(&key, Some(first)), now()).await,
        Ok(Enrolled::Issued(i)) if i.device_id == "dev9.d.example.local"
    ));
    let e = kind_of(
        fx.auth
            .enroll(request(&key, Some(second.clone())), now())
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(
        e.to_string(),
        "device dev9.d.example.local is already enrolled; a token bound to that ID cannot enroll another device (make a token for a new ID)"
    );
    let unused = fx
        .auth
        .inventory()
        .token(&token_hash(&second))
        .await
        .expect("token")
        .expect("stored");
    assert_eq!(unused.used_at, None);
    // Lifetimes and tags are checked when the token is made.
    kind_of(
        fx.auth
            .create_token(
                TokenRequest {
                    ttl: Duration::hours(1),
                    lifetime: Some(Duration::days(365)),
                    ..Default::default()
                },
                "admin",
                now(),
            )
            .await,
        ErrorKind::BadInput,
    );
    kind_of(
        fx.auth
            .create_token(
                TokenRequest {
                    ttl: Duration::hours(1),
                    tags: vec!["no spaces".into()],
                    ..Default::default()
                },
                "admin",
                now(),
            )
            .await,
        ErrorKind::BadInput,
    );
}

async fn device_csrs_are_checked_before_a_token_is_spent(fx: Fx) {
    let t = token(&fx, None, &[]).await;
    for (newkey, opt, said) in [
        (
            "rsa:1024",
            None,
            "its RSA key is 1024 bits; at least 2048 bits are required",
        ),
        (
            "ec",
            Some("ec_paramgen_curve:secp256k1"),
            "its elliptic curve (1.3.132.0.10) is not accepted; use P-256, P-384 or P-521",
        ),
    ] {
        let mut r = request(&KeyPair::generate().expect("key"), Some(t.clone()));
        r.csr = openssl_csr(newkey, opt);
        let e = kind_of(fx.auth.enroll(r, now()).await, ErrorKind::BadInput);
        assert!(e.to_string().contains(said), "{e}");
    }
    let key = KeyPair::generate().expect("key");
    let mut r = request(&key, Some(t.clone()));
    let blocks = pemfile::parse_blocks("csr", &r.csr).expect("pem");
    let mut der = blocks[0].der.clone();
    let n = der.len();
    der[n - 3] ^= 0x42;
    r.csr = der;
    let e = kind_of(fx.auth.enroll(r, now()).await, ErrorKind::BadInput);
    assert!(
        e.to_string().contains("its signature does not verify"),
        "{e}"
    );
    let mut r = request(&key, Some(t.clone()));
    r.csr = b"not a csr".to_vec();
    kind_of(fx.auth.enroll(r, now()).await, ErrorKind::BadInput);
    // The token was not spent by the refusals.
    let stored = fx
        .auth
        .inventory()
        .token(&token_hash(&t))
        .await
        .expect("token")
        .expect("stored");
    assert_eq!(stored.used_at, None);
    assert!(matches!(
        fx.auth.enroll(request(&key, Some(t)), now()).await,
        Ok(Enrolled::Issued(_))
    ));
}

async fn a_pending_device_is_approved_then_collects_its_certificate(fx: Fx) {
    let key = KeyPair::generate().expect("key");
    let (id, poll) = match fx
        .auth
        .enroll(request(&key, None), now())
        .await
        .expect("registered")
    {
        Enrolled::Pending {
            device_id,
            poll_token,
            retry_after,
        } => {
            assert_eq!(retry_after, RETRY_AFTER_SECS);
            (device_id, poll_token)
        }
        Enrolled::Issued(_) => panic!("issued without approval"),
    };
    assert!(poll.starts_with("mtp_"));
    let d = fx.auth.device(&id).await.expect("device");
    assert_eq!(d.device.status, DeviceStatus::Pending);
    assert!(matches!(
        fx.auth.poll(&id, &poll, Seen::at(now())).await,
        Ok(Enrolled::Pending { .. })
    ));
    let wrong = new_secret(POLL_PREFIX);
    kind_of(
        fx.auth.poll(&id, &wrong, Seen::at(now())).await,
        ErrorKind::Unauthenticated,
    );
    fx.auth
        .set_status(&id, Action::Approve, "alice", Some("looks fine"), now())
        .await
        .expect("approve");
    let i = match fx
        .auth
        .poll(&id, &poll, Seen::at(now()))
        .await
        .expect("issued")
    {
        Enrolled::Issued(i) => i,
        Enrolled::Pending { .. } => panic!("still pending"),
    };
    assert_eq!(i.device_id, id);
    let info = CertInfo::from_der(&chain(&i.certificate)[0]).expect("info");
    assert_eq!(info.common_name.as_deref(), Some(id.as_str()));
    // The poll token is spent.
    let e = kind_of(
        fx.auth.poll(&id, &poll, Seen::at(now())).await,
        ErrorKind::Unauthenticated,
    );
    assert_eq!(
        e.to_string(),
        format!("the poll token does not belong to device {id}, or it was already spent")
    );
    let actions: Vec<(String, String)> = fx
        .auth
        .device(&id)
        .await
        .expect("device")
        .audit
        .into_iter()
        .map(|a| (a.action, a.actor))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("register".to_string(), id.clone()),
            ("approve".to_string(), "alice".to_string()),
            ("enroll".to_string(), id.clone())
        ]
    );
    // A denied registration never gets a certificate.
    let (id2, poll2) = match fx
        .auth
        .enroll(request(&key, None), now())
        .await
        .expect("reg")
    {
        Enrolled::Pending {
            device_id,
            poll_token,
            ..
        } => (device_id, poll_token),
        Enrolled::Issued(_) => panic!("issued"),
    };
    fx.auth
        .set_status(&id2, Action::Deny, "alice", None, now())
        .await
        .expect("deny");
    let e = kind_of(
        fx.auth.poll(&id2, &poll2, Seen::at(now())).await,
        ErrorKind::Forbidden,
    );
    assert_eq!(
        e.to_string(),
        format!(
            "device {id2} is denied; only active devices get certificates (an operator denied it)"
        )
    );
}

async fn renew(fx: &Fx, chain_pem: &str, key: &KeyPair) -> Result<DeviceIssued> {
    fx.auth
        .renew(&chain(chain_pem), &csr(key), Seen::at(now()))
        .await
}

async fn renewal_rules(fx: Fx) {
    let k1 = KeyPair::generate().expect("key");
    let a = enroll(&fx, &k1).await;
    let k2 = KeyPair::generate().expect("key");
    let b = renew(&fx, &a.certificate, &k2).await.expect("renewed");
    assert_eq!(b.device_id, a.device_id);
    assert_eq!(b.tags, vec!["lab"]);
    assert_ne!(b.serial, a.serial);
    assert_ne!(b.recovery_token, a.recovery_token);
    let old = fx
        .auth
        .inventory()
        .recovery(&token_hash(&a.recovery_token))
        .await
        .expect("rec")
        .expect("stored");
    assert!(old.replaced_at.is_some(), "the recovery token rotates");
    // The answer may have been lost: renewing once more with the replaced certificate works…
    let c = renew(&fx, &a.certificate, &k2).await.expect("retry");
    // …and revokes the abandoned answer…
    let abandoned = fx.auth.inventory().get(&b.serial).await.expect("b");
    assert_eq!(abandoned.revocation_reason.as_deref(), Some("superseded"));
    // …but after that it is superseded: a clone, quarantined.
    let e = kind_of(renew(&fx, &a.certificate, &k2).await, ErrorKind::Forbidden);
    assert_eq!(
        e.to_string(),
        format!(
            "device {0} renewed with certificate {1}, which was already replaced by {2}: another device holds the same identity (a clone). The device is quarantined; after checking it, an operator can allow it again (mtlsgate devices allow {0})",
            a.device_id, a.serial, c.serial
        )
    );
    fx.auth
        .set_status(&a.device_id, Action::Allow, "alice", None, now())
        .await
        .expect("allowed");
    // A certificate of another CA, or none, is not a device's.
    kind_of(
        fx.auth.renew(&[], &csr(&k2), Seen::at(now())).await,
        ErrorKind::Unauthenticated,
    );
    // Status: only active devices renew.
    let id = &a.device_id;
    for (action, status) in [
        (Action::Deny, "denied"),
        (Action::Allow, ""),
        (Action::Quarantine, "quarantined"),
        (Action::Allow, ""),
    ] {
        fx.auth
            .set_status(id, action, "alice", None, now())
            .await
            .expect("status");
        let r = renew(&fx, &c.certificate, &k2).await;
        if status.is_empty() {
            assert!(r.is_ok(), "{:?}", r.err());
            break;
        }
        let e = kind_of(r, ErrorKind::Forbidden);
        assert!(
            e.to_string().starts_with(&format!(
                "device {id} is {status}; only active devices get certificates"
            )),
            "{e}"
        );
    }
    // The current certificate after the loop.
    let cur = fx.auth.device(id).await.expect("device").device;
    let cur_pem = fx
        .auth
        .inventory()
        .get(cur.cert_serial.as_deref().expect("serial"))
        .await
        .expect("cert")
        .pem();
    let cur_chain = format!(
        "{cur_pem}{}",
        pemfile::to_pem("CERTIFICATE", &fx.auth.ca().intermediate_der)
    );
    // A revoked certificate renews nothing.
    fx.auth
        .revoke_cert(
            cur.cert_serial.as_deref().expect("serial"),
            Reason::KeyCompromise,
            "alice",
            now(),
        )
        .await
        .expect("revoke");
    let e = kind_of(renew(&fx, &cur_chain, &k2).await, ErrorKind::Forbidden);
    assert!(e.to_string().contains("was revoked"), "{e}");
    // A revoked device neither.
    fx.auth
        .set_status(id, Action::Revoke, "alice", None, now())
        .await
        .expect("revoke device");
    let e = kind_of(renew(&fx, &cur_chain, &k2).await, ErrorKind::Forbidden);
    assert!(
        e.to_string()
            .starts_with(&format!("device {id} is revoked")),
        "{e}"
    );
}

fn signature(key: &KeyPair, csr_pem: &[u8]) -> Vec<u8> {
    let blocks = pemfile::parse_blocks("csr", csr_pem).expect("pem");
    let digest = sha2::Sha256::digest(&blocks[0].der);
    key.sign(&digest).expect("sign")
}

async fn recovery_rules_and_clones(fx: Fx) {
    let k1 = KeyPair::generate().expect("key");
    let a = enroll(&fx, &k1).await;
    let other = enroll(&fx, &KeyPair::generate().expect("key")).await;
    let k2 = KeyPair::generate().expect("key");
    let new_csr = csr(&k2);
    let req = |token: &str, cert: &str, sig: Vec<u8>| RecoverRequest {
        device_id: a.device_id.to_uppercase(),
        recovery_token: token.into(),
        csr: new_csr.clone(),
        signature: sig,
        certificate: cert.as_bytes().to_vec(),
    };
    // Two days later: the certificate expired, the grace has not.
    let later = Seen::at(now() + Duration::days(2));
    let good_sig = signature(&k1, &new_csr);
    let e = kind_of(
        fx.auth
            .recover(
                req(&a.recovery_token, &a.certificate, signature(&k2, &new_csr)),
                later.clone(),
            )
            .await,
        ErrorKind::BadInput,
    );
    assert!(
        e.to_string()
            .starts_with("the recovery signature does not verify"),
        "{e}"
    );
    kind_of(
        fx.auth
            .recover(
                req(
                    &new_secret(RECOVERY_PREFIX),
                    &a.certificate,
                    good_sig.clone(),
                ),
                later.clone(),
            )
            .await,
        ErrorKind::Unauthenticated,
    );
    // Another device's recovery token is not this one's.
    kind_of(
        fx.auth
            .recover(
                req(&other.recovery_token, &a.certificate, good_sig.clone()),
                later.clone(),
            )
            .await,
        ErrorKind::Unauthenticated,
    );
    kind_of(
        fx.auth
            .recover(
                req(&a.recovery_token, &other.certificate, good_sig.clone()),
                later.clone(),
            )
            .await,
        ErrorKind::BadInput,
    );
    let too_late = Seen::at(now() + Duration::days(32));
    let e = kind_of(
        fx.auth
            .recover(
                req(&a.recovery_token, &a.certificate, good_sig.clone()),
                too_late,
            )
            .await,
        ErrorKind::Gone,
    );
    assert!(e.to_string().contains("recovery token expired at"), "{e}");
    let b = fx
        .auth
        .recover(
            req(&a.recovery_token, &a.certificate, good_sig.clone()),
            later.clone(),
        )
        .await
        .expect("recovered");
    assert_eq!(b.device_id, a.device_id);
    assert_eq!(b.tags, vec!["lab"]);
    // The old token again: someone else holds this identity.
    let e = kind_of(
        fx.auth
            .recover(req(&a.recovery_token, &a.certificate, good_sig), later)
            .await,
        ErrorKind::Forbidden,
    );
    assert!(matches!(e, AuthorityError::Clone { .. }), "{e}");
    let d = fx.auth.device(&a.device_id).await.expect("device");
    assert_eq!(d.device.status, DeviceStatus::Quarantined);
    assert_eq!(d.audit.last().map(|x| x.action.as_str()), Some("clone"));
    // And the legitimate holder cannot renew until an operator allows it again.
    kind_of(renew(&fx, &b.certificate, &k2).await, ErrorKind::Forbidden);
}

async fn status_changes_follow_the_machine(fx: Fx) {
    let key = KeyPair::generate().expect("key");
    let id = match fx
        .auth
        .enroll(request(&key, None), now())
        .await
        .expect("reg")
    {
        Enrolled::Pending { device_id, .. } => device_id,
        Enrolled::Issued(_) => panic!("issued"),
    };
    let refused = |e: AuthorityError| e.to_string();
    let e = kind_of(
        fx.auth
            .set_status(&id, Action::Allow, "a", None, now())
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(
        refused(e),
        format!("device {id} is pending; only denied or quarantined devices can be allowed")
    );
    fx.auth
        .set_status(&id, Action::Approve, "a", None, now())
        .await
        .expect("approve");
    let e = kind_of(
        fx.auth
            .set_status(&id, Action::Approve, "a", None, now())
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(refused(e), format!("device {id} is already active"));
    fx.auth
        .set_status(&id, Action::Revoke, "a", Some("stolen"), now())
        .await
        .expect("revoke");
    for action in [Action::Approve, Action::Deny, Action::Quarantine] {
        let e = kind_of(
            fx.auth.set_status(&id, action, "a", None, now()).await,
            ErrorKind::Conflict,
        );
        assert_eq!(
            refused(e),
            format!(
                "device {id} is revoked; run `mtlsgate devices allow {id}` (an operator, on the CA; its revoked certificates stay revoked) to let it enroll again with a new token"
            )
        );
    }
    // Allowing a revoked device lets its ID enroll again; it stays revoked until then.
    let d = fx
        .auth
        .set_status(&id, Action::Allow, "a", None, now())
        .await
        .expect("allowed to enroll again");
    assert_eq!(d.status, DeviceStatus::Revoked);
    kind_of(
        fx.auth
            .set_status("nobody", Action::Approve, "a", None, now())
            .await,
        ErrorKind::NotFound,
    );
    // Tags.
    let a = enroll(&fx, &key).await;
    let d = fx
        .auth
        .tag(
            &a.device_id,
            &["z".into(), "m".into()],
            &["lab".into()],
            "a",
            now(),
        )
        .await
        .expect("tag");
    assert_eq!(d.tags, vec!["m", "z"]);
    kind_of(
        fx.auth
            .tag(&a.device_id, &["bad tag".into()], &[], "a", now())
            .await,
        ErrorKind::BadInput,
    );
    let active = fx
        .auth
        .devices(&DeviceFilter {
            status: Some(DeviceStatus::Active),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(active.len(), 1);
    let soon = fx
        .auth
        .devices(&DeviceFilter {
            expiring_before: Some((now() + Duration::hours(25)).unix_timestamp()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(soon.len(), 1);
}

async fn certificates_revocation_and_crl(fx: Fx) {
    let root = CertInfo::from_der(&fx.auth.ca().root_der).expect("root");
    let e = kind_of(
        fx.auth
            .revoke_cert(&root.serial, Reason::KeyCompromise, "a", now())
            .await,
        ErrorKind::Conflict,
    );
    assert!(
        e.to_string()
            .contains("is the root CA: a root cannot be revoked"),
        "{e}"
    );
    let (admin, _) = fx
        .auth
        .issue(&admin_request("ops", Duration::days(1)), "a")
        .await
        .expect("admin");
    let rec = fx
        .auth
        .inventory()
        .get(&admin.info.serial)
        .await
        .expect("rec");
    assert_eq!(rec.kind, "admin");
    // Revoking a device revokes its certificate: the CRL lists it.
    let a = enroll(&fx, &KeyPair::generate().expect("key")).await;
    fx.auth
        .set_status(&a.device_id, Action::Revoke, "a", None, now())
        .await
        .expect("revoke");
    let set = fx.auth.crl(Duration::days(1)).await.expect("crl");
    assert_eq!(set.revoked_leaves, 1);
    let (_, crl) = x509_parser::parse_x509_crl(&set.crls.intermediate).expect("crl");
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode_upper(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![a.serial.clone()]);
    let changes = fx.auth.inventory().changes_since(0).await.expect("changes");
    assert!(changes.revoked.iter().any(|r| r.serial == a.serial));
}

async fn a_thousand_concurrent_enrollments(fx: Fx) {
    let auth = Arc::new(fx.auth);
    let mut tokens = Vec::new();
    for _ in 0..1000 {
        tokens.push(
            auth.create_token(
                TokenRequest {
                    ttl: Duration::hours(1),
                    ..Default::default()
                },
                "admin",
                now(),
            )
            .await
            .expect("token")
            .token,
        );
    }
    let mut tasks = Vec::new();
    for t in tokens {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let key = KeyPair::generate().expect("key");
            auth.enroll(request(&key, Some(t)), now()).await
        }));
    }
    let mut ids = HashSet::new();
    let mut serials = HashSet::new();
    for t in tasks {
        match t.await.expect("task").expect("enrolled") {
            Enrolled::Issued(i) => {
                ids.insert(i.device_id);
                serials.insert(i.serial);
            }
            Enrolled::Pending { .. } => panic!("pending"),
        }
    }
    assert_eq!((ids.len(), serials.len()), (1000, 1000));
    assert_eq!(
        auth.devices(&DeviceFilter::default())
            .await
            .expect("list")
            .len(),
        1000
    );
}

/// The real enrollment path raced: 50 devices present the same token at once; exactly
/// one is enrolled, the others are refused as "already used" (409) and leave nothing.
async fn a_token_enrolls_one_device_of_50_concurrent_enrollments(fx: Fx) {
    let auth = Arc::new(fx.auth);
    let t = token_with_ttl(&auth).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let auth = auth.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let key = KeyPair::generate().expect("key");
            auth.enroll(request(&key, Some(t)), now()).await
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(Enrolled::Issued(i)) => winners.push(i),
            Ok(Enrolled::Pending { .. }) => panic!("a token enrolls at once"),
            Err(e) => refusals.push(e),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one enrollment wins: {refusals:?}"
    );
    let winner = &winners[0].device_id;
    assert_eq!(refusals.len(), 49);
    for e in &refusals {
        assert!(
            matches!(e, AuthorityError::Store(StoreError::TokenUsed { by, .. }) if by == winner),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }
    let devices = auth.devices(&DeviceFilter::default()).await.expect("list");
    assert_eq!(devices.len(), 1);
    assert_eq!(&devices[0].id, winner);
    let clients = auth
        .certificates()
        .await
        .expect("certificates")
        .into_iter()
        .filter(|c| c.kind == "client")
        .count();
    assert_eq!(clients, 1, "the losers' certificates are not recorded");
}

async fn token_with_ttl(auth: &Authority) -> String {
    auth.create_token(
        TokenRequest {
            ttl: Duration::hours(1),
            ..Default::default()
        },
        "admin",
        now(),
    )
    .await
    .expect("token")
    .token
}

#[test]
fn secrets_are_never_in_debug_output() {
    let secret = "mtg_s3cr3t";
    let issued = DeviceIssued {
        device_id: "dev1".into(),
        serial: "4A".into(),
        certificate: "CERT".into(),
        ca_bundle: "BUNDLE".into(),
        not_after: 1,
        recovery_token: secret.into(),
        recovery_expires: 2,
        tags: vec![],
    };
    let shown = [
        format!(
            "{:?}",
            NewTokenSecret {
                token: secret.into(),
                expires_at: 1,
                device_id: None,
                tags: vec![],
                lifetime_secs: None,
            }
        ),
        format!("{issued:?}"),
        format!("{:?}", Enrolled::Issued(issued.clone())),
        format!(
            "{:?}",
            Enrolled::Pending {
                device_id: "dev1".into(),
                poll_token: secret.into(),
                retry_after: 5,
            }
        ),
        format!(
            "{:?}",
            EnrollRequest {
                token: Some(secret.into()),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            RecoverRequest {
                device_id: "dev1".into(),
                recovery_token: secret.into(),
                csr: vec![],
                signature: secret.as_bytes().to_vec(),
                certificate: vec![],
            }
        ),
    ];
    for s in &shown {
        assert!(!s.contains(secret) && !s.contains("109, 116, 103"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }
    assert!(shown[1].contains("device_id: \"dev1\""), "{}", shown[1]);
}

#[test]
fn the_root_cannot_be_revoked_and_other_certificates_can() {
    let rec = |kind: &str| CertRecord {
        serial: "4A01".into(),
        kind: kind.into(),
        subject: "CN=x".into(),
        device_id: None,
        not_before: 0,
        not_after: 1,
        sha256: String::new(),
        issued_at: 0,
        revoked_at: None,
        revocation_reason: None,
        der: Vec::new(),
        revision: None,
    };
    let e = check_revocable(&rec("root")).expect_err("root");
    assert_eq!(e.to_string(), "4A01 is the root CA: a root cannot be revoked by a CRL it signs itself; to retire it, create a new CA and remove this one from every trust bundle");
    for kind in ["intermediate", "client", "server", "admin"] {
        check_revocable(&rec(kind)).expect("revocable");
    }
}

#[test]
fn the_status_machine() {
    use DeviceStatus::*;
    let table = [
        (Pending, Action::Approve, Some(Active)),
        (Pending, Action::Deny, Some(Denied)),
        (Pending, Action::Allow, None),
        (Active, Action::Deny, Some(Denied)),
        (Active, Action::Revoke, Some(Revoked)),
        (Active, Action::Quarantine, Some(Quarantined)),
        (Active, Action::Approve, None),
        (Denied, Action::Allow, Some(Active)),
        (Denied, Action::Approve, None),
        (Quarantined, Action::Allow, Some(Active)),
        (Quarantined, Action::Deny, None),
        (Revoked, Action::Allow, None),
        (Revoked, Action::Revoke, None),
    ];
    for (from, action, to) in table {
        assert_eq!(
            transition("d", from, action).ok(),
            to,
            "{from} --{action}-->"
        );
    }
}

#[test]
fn secrets_have_their_format() {
    let t = new_secret(TOKEN_PREFIX);
    assert!(well_formed(&t, TOKEN_PREFIX));
    assert!(!well_formed(&t, RECOVERY_PREFIX));
    assert!(!well_formed("mtg_short", TOKEN_PREFIX));
    assert_ne!(new_secret(TOKEN_PREFIX), t);
    assert_eq!(token_hash(&t).len(), 64);
}

async fn administrators_are_recognised_by_their_certificate(fx: Fx) {
    let dir = fx.auth.ca().dir.clone();
    let admin = chain(&std::fs::read_to_string(dir.join("admin.crt")).expect("admin.crt"));
    let who = fx.auth.check_admin(&admin, now()).await.expect("admin");
    assert_eq!(who.actor, "admin (admin API)");
    // No certificate: 401, saying a certificate is needed.
    let e = kind_of(
        fx.auth.check_admin(&[], now()).await,
        ErrorKind::Unauthenticated,
    );
    assert!(
        e.to_string()
            .contains("no client certificate was presented"),
        "{e}"
    );
    // A device's certificate: 403.
    let key = KeyPair::generate().expect("key");
    let dev = enroll(&fx, &key).await;
    let e = kind_of(
        fx.auth.check_admin(&chain(&dev.certificate), now()).await,
        ErrorKind::Forbidden,
    );
    assert!(e.to_string().contains("is not an administrator's"), "{e}");
    // Expired (checked at a later time): 401.
    kind_of(
        fx.auth
            .check_admin(&admin, now() + Duration::days(400))
            .await,
        ErrorKind::Unauthenticated,
    );
    // Renewal without a certificate says what it needs.
    let e = kind_of(
        fx.auth.renew(&[], &csr(&key), Seen::at(now())).await,
        ErrorKind::Unauthenticated,
    );
    assert_eq!(
        e.to_string(),
        "renewal needs the device's current certificate, and no client certificate was presented"
    );
    // A revoked administrator certificate is refused.
    let serial = who.serial.clone();
    fx.auth
        .revoke_cert(&serial, Reason::KeyCompromise, "test", now())
        .await
        .expect("revoked");
    let e = kind_of(
        fx.auth.check_admin(&admin, now()).await,
        ErrorKind::Unauthenticated,
    );
    assert!(e.to_string().contains("was revoked"), "{e}");
}

async fn lifetimes_come_from_the_token_then_the_tags_then_the_default(mut fx: Fx) {
    fx.auth.policy.tag_lifetimes = vec![
        ("cams".into(), Duration::hours(2)),
        ("lab".into(), Duration::hours(6)),
    ];
    let tags = |t: &[&str]| t.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        fx.auth.lifetime(None, &tags(&["other"])),
        Duration::hours(24)
    );
    assert_eq!(fx.auth.lifetime(None, &tags(&["lab"])), Duration::hours(6));
    assert_eq!(
        fx.auth.lifetime(None, &tags(&["lab", "cams"])),
        Duration::hours(2)
    );
    assert_eq!(
        fx.auth.lifetime(Some(3 * 3600), &tags(&["cams"])),
        Duration::hours(3)
    );
    assert_eq!(fx.auth.lifetime(Some(1), &[]), Duration::seconds(60));
    assert_eq!(fx.auth.lifetime(Some(1 << 40), &[]), Duration::days(30));

    // Enrolled with a token tagged lab: the certificate lives six hours.
    let key = KeyPair::generate().expect("key");
    let i = enroll(&fx, &key).await;
    let c = chain(&i.certificate);
    let info = CertInfo::from_der(&c[0]).expect("info");
    let left = info.not_after - now();
    assert!(
        left > Duration::hours(6) - Duration::minutes(1) && left <= Duration::hours(6),
        "{left}"
    );
}

#[test]
fn token_less_allowances_are_per_ipv4_address_and_per_ipv6_64() {
    assert_eq!(rate_key("192.0.2.7"), "192.0.2.7");
    assert_eq!(rate_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    assert_eq!(rate_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
    assert_eq!(rate_key("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(rate_key("not an address"), "not an address");
}
