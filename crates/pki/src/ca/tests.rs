//! Unit tests of the CA: database URLs in `ca.toml`, CSR subjects and names, issuing.

use super::dir::without_password;
use super::*;
use crate::der;
use rcgen::{CertificateParams, DistinguishedName, DnType, SigningKey};

#[test]
fn database_urls_are_recorded_without_their_password() {
    let cases = [
        ("postgres://u@h:5432/db", "postgres://u@h:5432/db", false),
        ("postgres://u:pw@h/db", "postgres://u@h/db", true),
        (
            "postgresql://u@h/db?sslmode=require&password=pw",
            "postgresql://u@h/db?sslmode=require",
            true,
        ),
        ("postgres://h/db", "postgres://h/db", false),
    ];
    for (url, bare, had) in cases {
        assert_eq!(without_password(url), (bare.to_string(), had), "{url}");
    }
}

const DOMAIN: &str = "d.example.local";

fn test_ca() -> (tempfile::TempDir, Ca, Signer) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");
    let opts = InitOptions {
        name: "Test".into(),
        key_type: KeyType::P256,
        device_domain: DOMAIN.into(),
        passphrase: None,
        root_validity: Duration::days(30),
        intermediate_validity: Duration::days(30),
    };
    init(&dir, &opts).expect("init").commit().expect("commit");
    let ca = Ca::open(&dir).expect("open");
    let signer = ca.signer(None).expect("signer");
    (tmp, ca, signer)
}

/// An AttributeTypeAndValue for `2.5.4.<n>` with a UTF8String value.
fn atv(n: u8, value: &str) -> Vec<u8> {
    let oid = der::encode(0x06, &[&[0x55, 0x04, n]]);
    let v = der::encode(0x0c, &[value.as_bytes()]);
    der::encode(der::SEQUENCE, &[&oid, &v])
}

fn rdn(atvs: &[Vec<u8>]) -> Vec<u8> {
    let parts: Vec<&[u8]> = atvs.iter().map(|a| a.as_slice()).collect();
    der::encode(0x31, &parts)
}

/// A CSR with exactly `subject_der` as its subject (rcgen cannot write multi-valued RDNs
/// or repeated attributes, so its request is re-signed with the subject spliced in).
fn csr_with_subject(subject_der: &[u8], sans: Vec<String>) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "placeholder");
    let csr = p.serialize_request(&key).expect("csr");
    let signed = der::split_signed(csr.der()).expect("signed");
    let mut parts: Vec<&[u8]> = der::elements(signed.tbs.value)
        .expect("info")
        .iter()
        .map(|t| t.raw)
        .collect();
    parts[1] = subject_der;
    let info = der::encode(der::SEQUENCE, &parts);
    let sig = key.sign(&info).expect("sign");
    (der::assemble_signed(&info, signed.algorithm.raw, &sig), key)
}

fn csr_with_cn(cn: &str, sans: Vec<String>) -> Vec<u8> {
    let name = der::encode(der::SEQUENCE, &[&rdn(&[atv(3, cn)])]);
    csr_with_subject(&name, sans).0
}

#[test]
fn sign_csr_copies_the_subject_verbatim() {
    let (_tmp, ca, signer) = test_ca();
    // C=SE / O=Acme+OU=R&D / OU=Fleet / OU=Ops / CN=dev9: a multi-valued RDN and
    // repeated OUs, which rcgen's DistinguishedName would flatten.
    let c = {
        let oid = der::encode(0x06, &[&[0x55, 0x04, 0x06]]);
        let v = der::encode(0x13, &[b"SE"]);
        der::encode(der::SEQUENCE, &[&oid, &v])
    };
    let name = der::encode(
        der::SEQUENCE,
        &[
            &rdn(&[c]),
            &rdn(&[atv(10, "Acme"), atv(11, "R&D")]),
            &rdn(&[atv(11, "Fleet")]),
            &rdn(&[atv(11, "Ops")]),
            &rdn(&[atv(3, "dev9.d.example.local")]),
        ],
    );
    let (csr, key) = csr_with_subject(&name, vec![]);
    let issued = signer
        .sign_csr(
            "test.csr",
            &csr,
            CertKind::Client,
            Duration::days(1),
            DOMAIN,
        )
        .expect("signed");
    let (_, x) = x509_parser::parse_x509_certificate(&issued.der).expect("parses");
    assert_eq!(x.subject().as_raw(), name.as_slice());
    assert_eq!(
        issued.info.subject,
        "CN=dev9.d.example.local,OU=Ops,OU=Fleet,OU=R&D+O=Acme,C=SE"
    );
    assert_eq!(
        issued.info.device_id.as_deref(),
        Some("dev9.d.example.local")
    );
    assert_eq!(
        issued.info.dns_names,
        vec!["dev9.d.example.local".to_string()]
    );
    // Signed by the intermediate, over the spliced TBSCertificate.
    let (_, int) = x509_parser::parse_x509_certificate(&ca.intermediate_der).expect("int");
    x.verify_signature(Some(int.public_key()))
        .expect("signature verifies with the intermediate's key");
    assert_eq!(x.public_key().raw, key.subject_public_key_info().as_slice());
    // And it is a certificate the verifier accepts.
    let v = crate::verify::Verifier::new(vec![ca.root_der.clone()], vec![], 2).expect("v");
    let chain = [
        rustls_pki_types::CertificateDer::from(issued.der.as_slice()),
        rustls_pki_types::CertificateDer::from(ca.intermediate_der.as_slice()),
    ];
    v.verify(
        &chain,
        crate::verify::Purpose::Client,
        rustls_pki_types::UnixTime::now(),
    )
    .expect("verifies");
}

#[test]
fn sign_csr_refuses_control_characters_and_other_devices() {
    let (_tmp, _ca, signer) = test_ca();
    let e = signer
        .sign_csr(
            "nl.csr",
            &csr_with_cn("dev1\r\nX-Device: admin", vec![]),
            CertKind::Client,
            Duration::days(1),
            DOMAIN,
        )
        .expect_err("refused");
    assert!(matches!(e, PkiError::ControlCharacter { .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "the CSR's subject CN contains a control character (dev1\\r\\nX-Device: admin)"
        ),
        "{e}"
    );
    let e = signer
        .sign_csr(
            "other.csr",
            &csr_with_cn("other.d.example.local", vec!["dev1.d.example.local".into()]),
            CertKind::Client,
            Duration::days(1),
            DOMAIN,
        )
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "the CSR's DNS SAN dev1.d.example.local names another device than its CN other.d.example.local; a client certificate names one device"
    );
    // The same SAN matching its CN is fine, and so is any SAN on a server certificate.
    signer
        .sign_csr(
            "ok.csr",
            &csr_with_cn("dev1.d.example.local", vec!["DEV1.d.example.local".into()]),
            CertKind::Client,
            Duration::days(1),
            DOMAIN,
        )
        .expect("one device");
    signer
        .sign_csr(
            "srv.csr",
            &csr_with_cn("api", vec!["dev1.d.example.local".into()]),
            CertKind::Server,
            Duration::days(1),
            DOMAIN,
        )
        .expect("server");
}

fn client(name: &str, device_id: Option<&str>, dns: &[&str], uris: &[&str]) -> LeafRequest {
    LeafRequest {
        kind: CertKind::Client,
        name: name.into(),
        dns: dns.iter().map(|d| d.to_string()).collect(),
        ips: vec![],
        uris: uris.iter().map(|d| d.to_string()).collect(),
        device_id: device_id.map(str::to_string),
        validity: Duration::days(1),
        key_type: KeyType::P256,
    }
}

#[test]
fn issue_refuses_a_dns_name_of_another_device() {
    let (_tmp, _ca, signer) = test_ca();
    let e = signer
        .issue(
            &client("c1", Some("dev1"), &["dev2.d.example.local"], &[]),
            DOMAIN,
        )
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "the DNS SAN dev2.d.example.local names another device than its CN dev1.d.example.local; a client certificate names one device"
    );
    let (issued, _) = signer
        .issue(
            &client(
                "c1",
                Some("dev1"),
                &["dev1.d.example.local", "dev1.example.com"],
                &[],
            ),
            DOMAIN,
        )
        .expect("same device, and a name outside the device domain");
    assert_eq!(
        issued.info.device_id.as_deref(),
        Some("dev1.d.example.local")
    );
    let e = signer
        .issue(
            &client("c1", None, &[], &["spiffe://x/\u{1b}]0;pwned\u{7}"]),
            DOMAIN,
        )
        .expect_err("refused");
    assert!(matches!(e, PkiError::ControlCharacter { .. }), "{e}");
}

/// The key rule is the profile's ([`crate::profile`]): a CSR whose key is on a curve no
/// TLS library mtlsgate talks to accepts (secp256k1) is refused for its curve, as a
/// device's CSR is, instead of later for a signature that does not verify.
#[test]
fn sign_csr_refuses_a_key_on_an_unaccepted_curve() {
    let (_tmp, _ca, signer) = test_ca();
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "dev1");
    let csr = p.serialize_request(&key).expect("csr");
    let signed = der::split_signed(csr.der()).expect("signed");
    let info = der::elements(signed.tbs.value).expect("info");
    let spki = crate::profile::with_secp256k1(info[2].raw);
    let parts: Vec<&[u8]> = vec![info[0].raw, info[1].raw, &spki, info[3].raw];
    let tbs = der::encode(der::SEQUENCE, &parts);
    let sig = key.sign(&tbs).expect("sign");
    let relabelled = der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
    let e = signer
        .sign_csr(
            "k1.csr",
            &relabelled,
            CertKind::Client,
            Duration::days(1),
            DOMAIN,
        )
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "CSR refused: its elliptic curve (1.3.132.0.10) is not accepted; use P-256, P-384 or P-521"
    );
}
