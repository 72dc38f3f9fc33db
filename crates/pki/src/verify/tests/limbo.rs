//! RFC 5280 rules webpki does not apply (the x509-limbo families), each rebuilt from
//! our own certificates.

use super::*;

// ---- RFC 5280 rules webpki does not apply (the x509-limbo families), each rebuilt
// from our own certificates.

/// A root made from `ca_params` after `edit`.
fn root_with(name: &str, edit: impl FnOnce(&mut CertificateParams)) -> TestCa {
    let key = KeyPair::generate().expect("key");
    let mut p = ca_params(name, T0 - Duration::days(365), T0 + Duration::days(3650));
    edit(&mut p);
    let der = p.self_signed(&key).expect("self-signed").der().to_vec();
    TestCa {
        der,
        issuer: Issuer::new(p, key),
    }
}

/// Rewrites the extensions of a signed certificate (`ext_tag` 0xa3) or CRL (0xa0) and
/// signs it again with `signer`. `edit` gets each extension's DER.
fn rewrite_extensions(
    der: &[u8],
    signer: &KeyPair,
    ext_tag: u8,
    mut edit: impl FnMut(&mut Vec<Vec<u8>>),
) -> Vec<u8> {
    let signed = crate::der::split_signed(der).expect("signed");
    let parts = crate::der::elements(signed.tbs.value).expect("tbs");
    let mut rebuilt: Vec<Vec<u8>> = Vec::new();
    for t in &parts {
        if t.tag != ext_tag {
            rebuilt.push(t.raw.to_vec());
            continue;
        }
        let seq = crate::der::read_one(t.value).expect("extensions");
        let mut exts: Vec<Vec<u8>> = crate::der::elements(seq.value)
            .expect("extension list")
            .iter()
            .map(|e| e.raw.to_vec())
            .collect();
        edit(&mut exts);
        let refs: Vec<&[u8]> = exts.iter().map(|e| e.as_slice()).collect();
        let seq = crate::der::encode(crate::der::SEQUENCE, &refs);
        rebuilt.push(crate::der::encode(ext_tag, &[&seq]));
    }
    let refs: Vec<&[u8]> = rebuilt.iter().map(|e| e.as_slice()).collect();
    let tbs = crate::der::encode(crate::der::SEQUENCE, &refs);
    let sig = signer.sign(&tbs).expect("sign");
    crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig)
}

/// The OID (DER contents) of an extension.
fn ext_oid(ext: &[u8]) -> Vec<u8> {
    let e = crate::der::read_one(ext).expect("extension");
    crate::der::elements(e.value).expect("fields")[0]
        .value
        .to_vec()
}

/// The extension with the same OID and value, marked critical.
fn make_critical(ext: &[u8]) -> Vec<u8> {
    let e = crate::der::read_one(ext).expect("extension");
    let f = crate::der::elements(e.value).expect("fields");
    let value = f.last().expect("value").raw;
    crate::der::encode(
        crate::der::SEQUENCE,
        &[f[0].raw, &[0x01, 0x01, 0xff], value],
    )
}

const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
const AKI: &[u8] = &[0x55, 0x1d, 0x23];
const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];

fn with_critical(der: &[u8], signer: &KeyPair, ext_tag: u8, oid: &[u8]) -> Vec<u8> {
    rewrite_extensions(der, signer, ext_tag, |exts| {
        let e = exts
            .iter_mut()
            .find(|e| ext_oid(e) == oid)
            .expect("extension present");
        *e = make_critical(e);
    })
}

#[track_caller]
fn refused_other(r: std::result::Result<(), Failure>, has: &str) {
    let f = refused(
        r,
        "other",
        "certificate verify failed",
        "verification failed: ",
    );
    assert!(f.to_string().contains(has), "{f}\n  should contain\n{has}");
}

#[test]
fn critical_key_identifiers_are_refused() {
    // limbo rfc5280::ski::critical-ski, rfc5280::aki::critical-aki
    let (r, i) = pki();
    let l = leaf(&i);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
    // The root's SKI marked critical (same key and name, so the chain still links).
    let bad_root = with_critical(&r.der, r.issuer.key(), 0xa3, SKI);
    let v = verifier(&[&bad_root], vec![], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "CN=Test Root marks its subject key identifier extension critical",
    );
    // The same root under a v1 leaf (decided by the walk, not webpki).
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    refused_other(
        check(&v, &[&l1, &i.der], Purpose::Client, T0),
        "subject key identifier extension critical",
    );
    // A leaf whose AKI is critical.
    let with_aki = leaf_with(&i, |p| p.use_authority_key_identifier_extension = true);
    let bad_leaf = with_critical(&with_aki, i.issuer.key(), 0xa3, AKI);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&with_aki, &i.der], Purpose::Client, T0), Ok(()));
    refused_other(
        check(&v, &[&bad_leaf, &i.der], Purpose::Client, T0),
        "CN=dev1.d.example.local marks its authority key identifier extension critical",
    );
}

#[test]
fn a_root_with_an_unknown_critical_extension_is_refused() {
    // limbo rfc5280::unknown-critical-extension-root
    let odd = |critical: bool| {
        root_with("Odd Root", |p| {
            let mut e = rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 55738, 666, 1],
                vec![0x05, 0x00],
            );
            e.set_criticality(critical);
            p.custom_extensions = vec![e];
        })
    };
    let r = odd(true);
    let l = leaf(&r);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l], Purpose::Client, T0),
        "CN=Odd Root has a critical extension (1.3.6.1.4.1.55738.666.1)",
    );
    // Not critical: ignored, as RFC 5280 says.
    let r = odd(false);
    let l = leaf(&r);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
}

#[test]
fn key_usage_must_agree_with_basic_constraints() {
    use rcgen::KeyUsagePurpose as Ku;
    // limbo rfc5280::root-inconsistent-ca-extensions: cA=TRUE without keyCertSign.
    let r = root_with("Inconsistent Root", |p| {
        p.key_usages = vec![Ku::DigitalSignature, Ku::CrlSign]
    });
    let l = leaf(&r);
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l], Purpose::Client, T0),
        "CN=Inconsistent Root is a CA certificate, but its key usage does not allow signing certificates (keyCertSign is missing)",
    );
    // The way mtlsgate's own CA makes roots is fine.
    let r = root_with("Good Root", |p| {
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign]
    });
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&leaf(&r)], Purpose::Client, T0), Ok(()));
    // limbo rfc5280::leaf-ku-keycertsign: a leaf that is no CA may not sign certificates.
    let l = leaf_with(&r, |p| {
        p.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign]
    });
    refused_other(
        check(&v, &[&l], Purpose::Client, T0),
        "CN=dev1.d.example.local is not a CA certificate, but its key usage allows signing certificates (keyCertSign)",
    );
    let l = leaf_with(&r, |p| p.key_usages = vec![Ku::DigitalSignature]);
    assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
}

#[test]
fn name_constraints_in_a_leaf_are_refused() {
    // limbo rfc5280::nc::not-allowed-in-ee-{critical,noncritical}
    let (r, i) = pki();
    let l = leaf_with(&i, |p| {
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.local".into())],
            excluded_subtrees: vec![],
        })
    });
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "CN=dev1.d.example.local is not a CA certificate, but it carries name constraints",
    );
}

#[test]
fn the_trust_anchor_must_be_valid_and_named() {
    // limbo rfc5280::validity::expired-root: webpki reads only the anchor's name and key.
    let key = KeyPair::generate().expect("key");
    let p = ca_params(
        "Old Root",
        T0 - Duration::days(3650),
        T0 - Duration::days(2),
    );
    let r = TestCa {
        der: p.self_signed(&key).expect("root").der().to_vec(),
        issuer: Issuer::new(p, key),
    };
    let i = intermediate(&r, "Young Intermediate", T0 + Duration::days(100), true);
    let l = leaf_with(&i, |p| p.not_before = T0 - Duration::days(10));
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    refused(
        check(&v, &[&l, &i.der], Purpose::Client, T0),
        "expired",
        "certificate has expired",
        "expired: the issuing CA certificate CN=Old Root expired at ",
    );
    assert_eq!(
        check(&v, &[&l, &i.der], Purpose::Client, T0 - Duration::days(3)),
        Ok(())
    );
    // limbo rfc5280::ca-empty-subject: a CA must have a subject name.
    let nameless = root_with("x", |p| {
        p.distinguished_name = rcgen::DistinguishedName::new()
    });
    let l = leaf(&nameless);
    let v = verifier(&[&nameless.der], vec![], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l], Purpose::Client, T0),
        "the CA certificate that issued CN=dev1.d.example.local has an empty subject name",
    );
}

#[test]
fn leaf_keys_tls_cannot_use_are_refused() {
    // limbo webpki::forbidden-p192-leaf, webpki::forbidden-dsa-leaf (public keys made
    // with openssl; rcgen cannot generate them).
    let p192 = "-----BEGIN PUBLIC KEY-----\nMEkwEwYHKoZIzj0CAQYIKoZIzj0DAQEDMgAENYiG5eW9m1y7VI5g1+/uaNA6z+3j\nfBDlBrhJzL0M8vQO7VkPpqM8lqv3sMFHEeJS\n-----END PUBLIC KEY-----\n";
    let dsa = "-----BEGIN PUBLIC KEY-----\nMIIBvjCCATMGByqGSM44BAEwggEmAoGBAIOslAzRyZtWGbT0ox7qInzreUN2HS8H\nwUiGtTiaveDLya04OKfIjr7cyBT3bh35Om0yXCl2xxVkiOeTdvTqE7crcXw0O6sX\nUTE/JuQjr6VaNdNwmB35t8Rgcb88JZrS9Sli2GPOI4kqbZuEGJiJXsh3emzLyqYE\n0QIGCWGUqiCbAh0A4widfMpBG8TjpdtdwEHx5DPzKf8zt2+OKA//JwKBgDBHw1q1\nwEbSwJ46MAxc84m5uOngGg+/A0XdXPq2oHxF0q5Y3+ygACAoummH/lnANFM/MJ13\nYxTJ4qid/FM6aSNEG7ExxGwiUkE22E7Myi5m2E6bDemTgEL7G8jNfyV1n2ZmBon4\nMRkN/mhTVF3IKwtHeRoi0PCUxebg3J+HEHDuA4GEAAKBgA0ttXj3r3j1/eZBE40W\nYQ5dvFlqgqietKuLVqm0wELpBqoQKtQJXKn2T6csi/UbpTtCMK1C+js/wLWDdrtP\nvnNSKnyB9Hi+KSdB8UnsMknteFCaEGyaILA2BqChnNMYK9eKPq9x4Uh1/no+QBxG\nXkc8QP2ocwSXoj/sF9iI1/m1\n-----END PUBLIC KEY-----\n";
    let (r, i) = pki();
    let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
    for (pem, what) in [
        (
            p192,
            "an ECDSA key on an unsupported curve (1.2.840.10045.3.1.1)",
        ),
        (dsa, "a DSA key"),
    ] {
        // A P-256 leaf with its public key swapped for this one, signed again.
        let spki = pem::parse(pem).expect("pem").into_contents();
        let l = leaf_with(&i, |p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "odd");
        });
        let signed = crate::der::split_signed(&l).expect("signed");
        let parts = crate::der::elements(signed.tbs.value).expect("tbs");
        let mut fields: Vec<&[u8]> = parts.iter().map(|t| t.raw).collect();
        fields[6] = &spki; // version, serial, algorithm, issuer, validity, subject, key
        let tbs = crate::der::encode(crate::der::SEQUENCE, &fields);
        let sig = i.issuer.key().sign(&tbs).expect("sign");
        let l = crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
        refused_other(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            &format!("CN=odd has {what}, which TLS cannot use"),
        );
    }
}

#[test]
fn crls_without_a_crl_number_or_with_a_critical_one_cannot_be_used() {
    // limbo crl::crlnumber-missing, crl::crlnumber-critical
    let (r, i) = pki();
    let l = leaf(&i);
    let good = crl(&i, &[]);
    let missing = rewrite_extensions(&good, i.issuer.key(), 0xa0, |exts| {
        exts.retain(|e| ext_oid(e) != CRL_NUMBER)
    });
    let critical = with_critical(&good, i.issuer.key(), 0xa0, CRL_NUMBER);
    let l1 = to_v1(&leaf(&i), i.issuer.key());
    for (bad, why) in [
        (&missing, "it has no CRL number"),
        (&critical, "its CRL number extension is marked critical"),
    ] {
        let v = verifier(&[&r.der], vec![bad.clone(), crl(&r, &[])], DEFAULT_DEPTH);
        for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
            refused_other(
                check(&v, &chain, Purpose::Client, T0),
                &format!("the CRL of CN=Test Intermediate cannot be used: {why}"),
            );
        }
        // Lenient checking takes a CRL it cannot use for a missing one.
        let lenient = verifier(&[&r.der], vec![bad.clone(), crl(&r, &[])], DEFAULT_DEPTH)
            .with_crl_check(CrlCheck::Lenient);
        assert_eq!(check(&lenient, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        // A conforming CRL of the same CA beside it is enough.
        let v = verifier(
            &[&r.der],
            vec![bad.clone(), good.clone(), crl(&r, &[])],
            DEFAULT_DEPTH,
        );
        assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
    }
}

#[test]
fn a_crl_from_a_ca_without_crlsign_cannot_be_used() {
    use rcgen::KeyUsagePurpose as Ku;
    // limbo crl::issuer-missing-crlsign: the root's key usage is keyCertSign only.
    let key = KeyPair::generate().expect("key");
    let mut p = ca_params(
        "Cert-only Root",
        T0 - Duration::days(365),
        T0 + Duration::days(3650),
    );
    p.key_usages = vec![Ku::KeyCertSign];
    let r = TestCa {
        der: p.self_signed(&key).expect("root").der().to_vec(),
        issuer: Issuer::new(
            p.clone(),
            KeyPair::from_pem(&key.serialize_pem()).expect("key"),
        ),
    };
    // rcgen will not sign a CRL for it: sign with the same key and name, usage unsaid.
    p.key_usages = vec![];
    let crl_signer = TestCa {
        der: r.der.clone(),
        issuer: Issuer::new(p, key),
    };
    let l = leaf(&r);
    let v = verifier(&[&r.der], vec![crl(&crl_signer, &[])], DEFAULT_DEPTH);
    refused_other(
        check(&v, &[&l], Purpose::Client, T0),
        "the CRL of CN=Cert-only Root cannot be used: the CA's key usage does not allow signing CRLs (cRLSign is missing)",
    );
    let r = root_with("Full Root", |p| {
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign]
    });
    let v = verifier(&[&r.der], vec![crl(&r, &[])], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&leaf(&r)], Purpose::Client, T0), Ok(()));
    // No key usage at all allows everything (limbo crl::issuer-no-keyusage-extension).
    let (r, i) = pki();
    let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
    assert_eq!(check(&v, &[&leaf(&i), &i.der], Purpose::Client, T0), Ok(()));
}
