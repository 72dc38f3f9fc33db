//! `pki::dn::rfc2253` over arbitrary certificate DER and bare DER names, and everything
//! `CertInfo::from_der` prints: no panic, and a DN string is printable ASCII only (it goes
//! into headers and log lines as nginx's `$ssl_client_s_dn`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::dn::rfc2253;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

fn check(dn: &str) {
    assert!(
        dn.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "DN string with a byte outside printable ASCII: {dn:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok((_, x)) = x509_parser::parse_x509_certificate(data) {
        check(&rfc2253(x.subject()));
        check(&rfc2253(x.issuer()));
        if let Ok(info) = CertInfo::from_der(data) {
            check(&info.subject);
            check(&info.issuer);
        }
    }
    if let Ok((_, name)) = X509Name::from_der(data) {
        check(&rfc2253(&name));
    }
});
