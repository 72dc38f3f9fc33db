//! Unit tests of the verifier: shared builders (a test CA, leaves, CRLs, v1 rewriting),
//! then one file per concern: the chain walk and webpki decisions (`chain`), the failure
//! labels and webpki mapping (`mapping`), every typed refusal's sentence (`sentences`),
//! and the RFC 5280 profile rules rebuilt from the x509-limbo families (`limbo`).

mod chain;
mod limbo;
mod mapping;
mod sentences;

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber, SigningKey,
};
use std::collections::HashSet;
use time::macros::datetime;
use time::Duration;
use time::OffsetDateTime;
use x509_parser::x509::X509Version;

/// "Now" for every test: fixed, so no test depends on the clock.
const T0: OffsetDateTime = datetime!(2030-06-01 12:00 UTC);

fn at(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).expect("after 1970"),
    ))
}

/// A CA: its certificate and what signs with it.
struct TestCa {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

fn root(name: &str) -> TestCa {
    let key = KeyPair::generate().expect("key");
    let p = ca_params(name, T0 - Duration::days(365), T0 + Duration::days(3650));
    let der = p.self_signed(&key).expect("self-signed").der().to_vec();
    TestCa {
        der,
        issuer: Issuer::new(p, key),
    }
}

/// An intermediate under `parent`; `is_ca: false` makes a certificate that is not a CA.
fn intermediate(parent: &TestCa, name: &str, not_after: OffsetDateTime, is_ca: bool) -> TestCa {
    let key = KeyPair::generate().expect("key");
    let mut p = ca_params(name, T0 - Duration::days(100), not_after);
    if !is_ca {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    let der = p
        .signed_by(&key, &parent.issuer)
        .expect("sign")
        .der()
        .to_vec();
    TestCa {
        der,
        issuer: Issuer::new(p, key),
    }
}

/// A client leaf valid from a day before T0 to 30 days after, unless `edit` says otherwise.
fn leaf_with(issuer: &TestCa, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["dev1.d.example.local".to_string()]).expect("params");
    p.distinguished_name
        .push(DnType::CommonName, "dev1.d.example.local");
    p.not_before = T0 - Duration::days(1);
    p.not_after = T0 + Duration::days(30);
    p.is_ca = IsCa::ExplicitNoCa;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    edit(&mut p);
    p.signed_by(&key, &issuer.issuer)
        .expect("sign")
        .der()
        .to_vec()
}

fn leaf(issuer: &TestCa) -> Vec<u8> {
    leaf_with(issuer, |_| {})
}

/// The same certificate as X.509 v1: the `[0]` version and `[3]` extensions dropped
/// from the TBSCertificate, re-signed by `signer` (rcgen cannot make v1 itself).
fn to_v1(der: &[u8], signer: &KeyPair) -> Vec<u8> {
    let signed = crate::der::split_signed(der).expect("certificate");
    let parts = crate::der::elements(signed.tbs.value).expect("tbs");
    let kept: Vec<&[u8]> = parts
        .iter()
        .filter(|t| t.tag != 0xa0 && t.tag != 0xa3)
        .map(|t| t.raw)
        .collect();
    let tbs = crate::der::encode(crate::der::SEQUENCE, &kept);
    let sig = signer.sign(&tbs).expect("sign");
    let out = crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
    let (_, x) = x509_parser::parse_x509_certificate(&out).expect("parses");
    assert_eq!(x.version(), X509Version::V1);
    out
}

fn serial_of(der: &[u8]) -> Vec<u8> {
    let (_, x) = x509_parser::parse_x509_certificate(der).expect("parses");
    x.raw_serial().to_vec()
}

/// A CRL signed by `ca` revoking `serials` two hours before T0.
fn crl(ca: &TestCa, serials: &[Vec<u8>]) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: T0 - Duration::days(1),
        next_update: T0 + Duration::days(7),
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: T0 - Duration::hours(2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .expect("crl")
    .der()
    .to_vec()
}

fn verifier(bundle: &[&[u8]], crls: Vec<Vec<u8>>, depth: usize) -> Verifier {
    Verifier::new(bundle.iter().map(|d| d.to_vec()).collect(), crls, depth).expect("verifier")
}

fn check(
    v: &Verifier,
    chain: &[&[u8]],
    purpose: Purpose,
    now: OffsetDateTime,
) -> std::result::Result<(), Failure> {
    let ders: Vec<CertificateDer<'_>> = chain.iter().map(|d| CertificateDer::from(*d)).collect();
    v.verify(&ders, purpose, at(now))
}

/// Asserts the variant (by label), OpenSSL's wording and the start of the message.
#[track_caller]
fn refused(
    r: std::result::Result<(), Failure>,
    label: &str,
    openssl: &str,
    start: &str,
) -> Failure {
    let f = r.expect_err("must be refused");
    assert_eq!(f.label(), label, "{f}");
    assert_eq!(f.openssl_reason(), openssl, "{f}");
    let msg = f.to_string();
    assert!(
        msg.starts_with(start),
        "{msg}\n  should start with\n{start}"
    );
    assert!(
        !msg.contains("Error") && !msg.contains('{'),
        "Debug text in {msg}"
    );
    f
}

/// Root → intermediate → leaf, as mtlsgate's own CA issues.
fn pki() -> (TestCa, TestCa) {
    let r = root("Test Root");
    let i = intermediate(&r, "Test Intermediate", T0 + Duration::days(1000), true);
    (r, i)
}
