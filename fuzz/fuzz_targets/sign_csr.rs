//! `Signer::sign_csr` with a fixed test CA (made once per process in a temporary
//! directory). The first byte picks the certificate kind, the rest is the CSR (PEM or
//! DER). No panic; a refusal is a sentence; and whatever is signed is a certificate with
//! the CSR's subject, byte for byte, that the CA's own verifier accepts for its purpose.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mtlsgate_pki::ca::{self, CertKind, InitOptions, Signer};
use mtlsgate_pki::key::KeyType;
use mtlsgate_pki::pemfile::parse_blocks;
use mtlsgate_pki::pki_types::{CertificateDer, UnixTime};
use mtlsgate_pki::verify::{Purpose, Verifier, DEFAULT_DEPTH};
use time::Duration;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

struct TestCa {
    _dir: tempfile::TempDir,
    signer: Signer,
    domain: String,
    root: Vec<u8>,
    intermediate: Vec<u8>,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let target = dir.path().join("ca");
        let opts = InitOptions {
            name: "Fuzz".into(),
            key_type: KeyType::P256,
            device_domain: "d.fuzz.example".into(),
            passphrase: None,
            root_validity: Duration::days(3650),
            intermediate_validity: Duration::days(1825),
        };
        let staged = ca::init(&target, &opts).expect("ca init");
        let path = staged.commit().expect("commit the CA");
        let opened = ca::Ca::open(&path).expect("open the CA");
        let signer = opened.signer(None).expect("load the CA keys");
        TestCa {
            domain: opened.meta.device_domain.clone(),
            root: opened.root_der.clone(),
            intermediate: opened.intermediate_der.clone(),
            signer,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, csr)) = data.split_first() else {
        return;
    };
    let (kind, purpose) = if first & 1 == 0 {
        (CertKind::Client, Purpose::Client)
    } else {
        (CertKind::Server, Purpose::Server)
    };
    let ca = test_ca();
    let issued = match ca
        .signer
        .sign_csr("fuzz.csr", csr, kind, Duration::days(30), &ca.domain)
    {
        Ok(i) => i,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // The CSR's subject, byte for byte.
    let blocks = parse_blocks("fuzz.csr", csr).expect("it was parsed once");
    let block = blocks
        .into_iter()
        .find(|b| b.label.contains("CERTIFICATE REQUEST") || b.label == "DER")
        .expect("it was found once");
    let (_, req) = X509CertificationRequest::from_der(&block.der).expect("it was read once");
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("it parses");
    assert_eq!(
        cert.subject().as_raw(),
        req.certification_request_info.subject.as_raw()
    );
    // The CA's own verifier accepts it, with the intermediate presented.
    let v = Verifier::new(vec![ca.root.clone()], Vec::new(), DEFAULT_DEPTH).expect("verifier");
    let chain = [
        CertificateDer::from(issued.der.as_slice()),
        CertificateDer::from(ca.intermediate.as_slice()),
    ];
    if let Err(f) = v.verify(&chain, purpose, UnixTime::now()) {
        panic!("the CA signed a certificate its own verifier refuses: {f}");
    }
});
