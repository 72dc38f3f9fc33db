//! The walk and webpki's decisions, one failure kind per test.

use super::*;

#[test]
fn good_chain_passes() {
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
    let v = verifier(&[&r.der, &i.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
}

#[test]
fn no_certificate() {
    let (r, _) = pki();
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[], Purpose::Client, T0),
        "no_certificate",
        "no certificate presented",
        "no certificate: ",
    );
}

#[test]
fn expired_leaf() {
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    let f = refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0 + Duration::days(33)),
        "expired",
        "certificate has expired",
        "expired: the certificate expired at 2030-07-01 12:00:00 UTC (3d 0h ago)",
    );
    assert!(matches!(f, Failure::Expired { is_leaf: true, .. }));
}

#[test]
fn expired_intermediate() {
    let r = root("Test Root");
    let i = intermediate(&r, "Old Intermediate", T0 - Duration::days(2), true);
    let l = leaf_with(&i, |p| p.not_before = T0 - Duration::days(50));
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    let f = refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "expired",
        "certificate has expired",
        "expired: the issuing CA certificate CN=Old Intermediate expired at ",
    );
    assert!(matches!(f, Failure::Expired { is_leaf: false, .. }));
}

#[test]
fn not_yet_valid() {
    let (r, i) = pki();
    let l = leaf_with(&i, |p| p.not_before = T0 + Duration::days(3));
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "not_yet_valid",
        "certificate is not yet valid",
        "not yet valid: CN=dev1.d.example.local becomes valid at 2030-06-04 12:00:00 UTC (in 3d 0h)",
    );
}

#[test]
fn unknown_issuer_with_the_intermediate_missing() {
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    let f = refused(
        check(&v, &[&l], Purpose::Client, T0),
        "unknown_issuer",
        "unable to get local issuer certificate",
        "unknown issuer: the certificate was issued by CN=Test Intermediate, which is neither in the file nor in the CA bundle; the intermediate certificate is missing",
    );
    assert!(matches!(
        f,
        Failure::UnknownIssuer {
            intermediate_missing: true,
            ..
        }
    ));
}

#[test]
fn unknown_issuer_another_ca() {
    let (_, i) = pki();
    let other = root("Other Root");
    let l = leaf(&i);
    let v = verifier(&[&other.der], vec![], DEFAULT_DEPTH);
    let f = refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "unknown_issuer",
        "unable to get local issuer certificate",
        "unknown issuer: the certificate was issued by CN=Test Root, which the CA bundle does not trust",
    );
    assert!(matches!(
        f,
        Failure::UnknownIssuer {
            intermediate_missing: false,
            ..
        }
    ));
}

#[test]
fn self_signed_not_in_bundle() {
    let (r, _) = pki();
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["me".to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "me");
    p.not_before = T0 - Duration::days(1);
    p.not_after = T0 + Duration::days(1);
    let me = p.self_signed(&key).expect("self-signed").der().to_vec();
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&me], Purpose::Client, T0),
        "self_signed",
        "self-signed certificate",
        "self-signed: CN=me signed itself and is not in the CA bundle",
    );
}

#[test]
fn wrong_eku() {
    let (r, i) = pki();
    let l = leaf_with(&i, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "wrong_eku",
        "unsupported certificate purpose",
        "wrong EKU: the certificate may be used for serverAuth but not for TLS client authentication (it lacks the clientAuth extended key usage)",
    );
    assert_eq!(check(&v, &[&l, &i.der], Purpose::Server, T0), Ok(()));
}

#[test]
fn revoked_leaf() {
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(
        &[&r.der],
        vec![crl(&i, &[serial_of(&l)]), crl(&r, &[])],
        DEFAULT_DEPTH,
    );
    let f = refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "revoked",
        "certificate revoked",
        "revoked: CN=dev1.d.example.local (serial ",
    );
    let msg = f.to_string();
    assert!(
        msg.contains(" was revoked at 2030-06-01 10:00:00 UTC (reason: keyCompromise)"),
        "{msg}"
    );
    // A random serial is not one a CRL entry could share with another certificate.
    assert!(!msg.contains("-set_serial"), "{msg}");
    // Another leaf of the same intermediate is not affected.
    let other = leaf(&i);
    assert_eq!(check(&v, &[&other, &i.der], Purpose::Client, T0), Ok(()));
}

#[test]
fn revoked_intermediate() {
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(
        &[&r.der],
        vec![crl(&i, &[]), crl(&r, &[serial_of(&i.der)])],
        DEFAULT_DEPTH,
    );
    refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "revoked",
        "certificate revoked",
        "revoked: CN=Test Intermediate (serial ",
    );
}

#[test]
fn crl_signed_by_another_key_refuses_instead_of_revoking() {
    let (r, i) = pki();
    let l = leaf(&i);
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    // Same name as the intermediate, different key: its CRL is not the intermediate's.
    let impostor = intermediate(&r, "Test Intermediate", T0 + Duration::days(10), true);
    let v = verifier(&[&r.der], vec![crl(&impostor, &[])], DEFAULT_DEPTH);
    // Fail closed, as webpki and OpenSSL ("CRL signature failure") do, v3 and v1 alike.
    for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
        let f = refused(
            check(&v, &chain, Purpose::Client, T0),
            "other",
            "certificate verify failed",
            "verification failed: ",
        );
        assert!(f.to_string().contains("CRL"), "{f}");
    }
    let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
    assert_eq!(check(&v, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
}

#[test]
fn strict_crls_refuse_a_missing_or_expired_crl_and_lenient_ones_do_not() {
    let (r, i) = pki();
    let l = leaf(&i);
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    // Only the intermediate's CRL: nothing says whether the intermediate was revoked.
    let v = verifier(&[&r.der], vec![crl(&i, &[])], DEFAULT_DEPTH);
    for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
        let f = refused(
            check(&v, &chain, Purpose::Client, T0),
            "crl_missing",
            "unable to get certificate CRL",
            "no CRL for ",
        );
        assert!(f.to_string().contains("crl_check = \"lenient\""), "{f}");
    }
    let lenient =
        verifier(&[&r.der], vec![crl(&i, &[])], DEFAULT_DEPTH).with_crl_check(CrlCheck::Lenient);
    assert_eq!(check(&lenient, &[&l, &i.der], Purpose::Client, T0), Ok(()));
    assert_eq!(check(&lenient, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
    // Both CRLs, but checked after their nextUpdate (7 days after T0).
    let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
    let later = T0 + Duration::days(8);
    for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
        refused(
            check(&v, &chain, Purpose::Client, later),
            "crl_expired",
            "CRL has expired",
            "CRL expired: the CRL of ",
        );
    }
    let lenient = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH)
        .with_crl_check(CrlCheck::Lenient);
    assert_eq!(
        check(&lenient, &[&l, &i.der], Purpose::Client, later),
        Ok(())
    );
}

#[test]
fn key_too_small() {
    let (r, i) = pki();
    // A 1024-bit RSA public key (openssl genrsa 1024); rcgen cannot generate one.
    let pem = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCmpxo4y7hY5q6mUQVyW09vsv8pZWC6k6cJdDfQ9+7BximF32/H+31R7H8vISYJjkbRePOAbhsanFBZJZziAegOJuofcD0bhq5R2vsJfd4y+/wipEzUi5pxjKMkmTETTMxyZGNwIeTViEuIcPTwefM/ySRo5KQjPRBYXHvHhoTm2QIDAQAB\n-----END PUBLIC KEY-----\n";
    let spki = rcgen::SubjectPublicKeyInfo::from_pem(pem).expect("spki");
    let mut p = CertificateParams::new(vec!["weak".to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "weak");
    p.not_before = T0 - Duration::days(1);
    p.not_after = T0 + Duration::days(1);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let l = p.signed_by(&spki, &i.issuer).expect("sign").der().to_vec();
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "key_too_small",
        "EE certificate key too small",
        "key too small: CN=weak has a 1024-bit RSA key; at least 2048 bits are required",
    );
    // The same as v1.
    let l1 = to_v1(&l, i.issuer.key());
    refused(
        check(&v, &[&l1, &i.der], Purpose::Client, T0),
        "key_too_small",
        "EE certificate key too small",
        "key too small: CN=weak has a 1024-bit RSA key",
    );
}

#[test]
fn ca_used_as_leaf() {
    let (r, i) = pki();
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&i.der], Purpose::Client, T0),
        "ca_as_leaf",
        "unsupported certificate purpose",
        "CA certificate used as a leaf: CN=Test Intermediate is a CA certificate",
    );
}

#[test]
fn bad_signature() {
    let (r, i) = pki();
    // Signed by another CA of the same name.
    let twin = root("Test Root");
    let twin_int = intermediate(&twin, "Test Intermediate", T0 + Duration::days(10), true);
    let l = leaf(&twin_int);
    let v = verifier(&[&r.der, &i.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l], Purpose::Client, T0),
        "bad_signature",
        "certificate signature failure",
        "bad signature: the signature on CN=dev1.d.example.local does not verify with its issuer's key",
    );
    let l1 = to_v1(&l, twin_int.issuer.key());
    refused(
        check(&v, &[&l1], Purpose::Client, T0),
        "bad_signature",
        "certificate signature failure",
        "bad signature: the signature on CN=dev1.d.example.local",
    );
}

#[test]
fn chain_too_long() {
    let (r, i) = pki();
    let i2 = intermediate(&i, "Second Intermediate", T0 + Duration::days(10), true);
    let l = leaf(&i2);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i2.der, &i.der], Purpose::Client, T0),
        "chain_too_long",
        "certificate chain too long",
        "chain too long: 4 certificates, but the verify depth allows 2 below the leaf",
    );
    let deeper = verifier(&[&r.der], vec![], 3);
    assert_eq!(
        check(&deeper, &[&l, &i2.der, &i.der], Purpose::Client, T0),
        Ok(())
    );
    let l1 = to_v1(&l, i2.issuer.key());
    refused(
        check(&v, &[&l1, &i2.der, &i.der], Purpose::Client, T0),
        "chain_too_long",
        "certificate chain too long",
        "chain too long: 4 certificates",
    );
}

#[test]
fn intermediate_that_is_not_a_ca() {
    let r = root("Test Root");
    let fake = intermediate(&r, "Not A CA", T0 + Duration::days(10), false);
    let l = leaf(&fake);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &fake.der], Purpose::Client, T0),
        "not_a_ca",
        "invalid CA certificate",
        "invalid CA: CN=Not A CA signs other certificates but is not a CA certificate",
    );
}

#[test]
fn pinned_leaf_expired_and_revoked() {
    let (r, i) = pki();
    let l = leaf(&i);
    // The leaf itself in the bundle: trusted as it is (pinned), even without its issuer.
    let v = verifier(&[&l], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
    refused(
        check(&v, &[&l], Purpose::Client, T0 + Duration::days(31)),
        "expired",
        "certificate has expired",
        "expired: the certificate expired at 2030-07-01 12:00:00 UTC (1d 0h ago)",
    );
    let v = verifier(
        &[&r.der, &i.der, &l],
        vec![crl(&i, &[serial_of(&l)])],
        DEFAULT_DEPTH,
    );
    refused(
        check(&v, &[&l], Purpose::Client, T0),
        "revoked",
        "certificate revoked",
        "revoked: CN=dev1.d.example.local (serial ",
    );
}

#[test]
fn v1_leaf_accepted_under_an_intermediate_and_a_root() {
    let (r, i) = pki();
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    // No EKU: any purpose.
    assert_eq!(check(&v, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
    assert_eq!(check(&v, &[&l1, &i.der], Purpose::Server, T0), Ok(()));
    let direct = to_v1(&leaf(&r), r.issuer.key());
    assert_eq!(check(&v, &[&direct], Purpose::Client, T0), Ok(()));
}

#[test]
fn v1_leaf_expired_and_not_yet_valid() {
    let (r, i) = pki();
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l1, &i.der], Purpose::Client, T0 + Duration::days(40)),
        "expired",
        "certificate has expired",
        "expired: the certificate expired at 2030-07-01 12:00:00 UTC (10d 0h ago)",
    );
    refused(
        check(&v, &[&l1, &i.der], Purpose::Client, T0 - Duration::days(2)),
        "not_yet_valid",
        "certificate is not yet valid",
        "not yet valid: CN=dev1.d.example.local becomes valid at ",
    );
}

#[test]
fn v1_leaf_of_another_ca() {
    let (_, i) = pki();
    let other = root("Other Root");
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    let v = verifier(&[&other.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l1], Purpose::Client, T0),
        "unknown_issuer",
        "unable to get local issuer certificate",
        "unknown issuer: the certificate was issued by CN=Test Intermediate, which is neither in the file nor in the CA bundle; the intermediate certificate is missing",
    );
    refused(
        check(&v, &[&l1, &i.der], Purpose::Client, T0),
        "unknown_issuer",
        "unable to get local issuer certificate",
        "unknown issuer: the certificate was issued by CN=Test Root, which the CA bundle does not trust",
    );
}

#[test]
fn v1_leaf_revoked_with_a_shared_small_serial() {
    let r = root("Test Root");
    // Two v1 certificates with serial 01, as `openssl x509 -req -set_serial 01` makes.
    let one = |name: &str| {
        let l = leaf_with(&r, |p| {
            p.serial_number = Some(SerialNumber::from_slice(&[1]));
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, name);
        });
        to_v1(&l, r.issuer.key())
    };
    let server = one("server");
    let client = one("client");
    let v = verifier(&[&r.der], vec![crl(&r, &[vec![1]])], DEFAULT_DEPTH);
    for (cert, cn) in [(&server, "server"), (&client, "client")] {
        let f = refused(
            check(&v, &[cert], Purpose::Client, T0),
            "revoked",
            "certificate revoked",
            &format!("revoked: CN={cn} (serial 01) was revoked at 2030-06-01 10:00:00 UTC (reason: keyCompromise); a CRL entry names an issuer and a serial, so every certificate this issuer signed with serial 01 is revoked with it (openssl x509 -set_serial reuses serials; give each certificate its own)"),
        );
        assert!(matches!(
            f,
            Failure::Revoked {
                small_serial: true,
                ..
            }
        ));
    }
}

#[test]
fn v1_intermediate_is_not_a_ca_but_a_v1_self_signed_root_is_an_anchor() {
    let r = root("Test Root");
    let i = intermediate(&r, "V1 Intermediate", T0 + Duration::days(10), true);
    let i1 = to_v1(&i.der, r.issuer.key());
    let l = to_v1(&leaf(&i), i.issuer.key());
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i1], Purpose::Client, T0),
        "not_a_ca",
        "invalid CA certificate",
        "invalid CA: CN=V1 Intermediate signs other certificates",
    );
    // A v1 self-signed root in the bundle anchors a v1 leaf, and a v3 one too.
    let r1 = to_v1(&r.der, r.issuer.key());
    let v = verifier(&[&r1], vec![], DEFAULT_DEPTH);
    let direct = to_v1(&leaf(&r), r.issuer.key());
    assert_eq!(check(&v, &[&direct], Purpose::Client, T0), Ok(()));
    // …but presented by the client instead, it is just a self-signed certificate.
    let v = verifier(&[&i.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&direct, &r1], Purpose::Client, T0),
        "self_signed",
        "self-signed certificate",
        "self-signed: CN=Test Root signed itself",
    );
}
