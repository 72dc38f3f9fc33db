//! PEM/DER loading, as `cert verify`, `serve` and `ca` read files: `pemfile::parse_blocks`,
//! `certs_from_blocks`, `crls_from_blocks` (CRL loading), `CertInfo::from_der`, and
//! `Verifier::new` over what was found (trust anchors and CRLs into rustls-webpki), then
//! the whole verification and its explanation with the certificates as the chain, at a
//! time inside the leaf's validity. No panic; every refusal is a sentence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::pemfile::{certs_from_blocks, crls_from_blocks, parse_blocks};
use mtlsgate_pki::pki_types::{CertificateDer, UnixTime};
use mtlsgate_pki::verify::{Purpose, Verifier};

/// A moment inside `der`'s validity (verification then gets past the dates).
fn inside(der: &[u8]) -> UnixTime {
    let mid = x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, x)| {
            let nb = x.validity().not_before.timestamp();
            let na = x.validity().not_after.timestamp();
            nb / 2 + na / 2
        })
        .unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(mid).unwrap_or(0),
    ))
}

fuzz_target!(|data: &[u8]| {
    let Ok(blocks) = parse_blocks("fuzz.pem", data) else {
        return;
    };
    let certs = certs_from_blocks("fuzz.pem", blocks).ok();
    let crls = parse_blocks("fuzz.pem", data)
        .ok()
        .and_then(|b| crls_from_blocks("fuzz.pem", b).ok());
    for der in certs.iter().flatten() {
        let _ = CertInfo::from_der(der);
    }
    let bundle = certs.clone().unwrap_or_default();
    let verifier = match Verifier::new(bundle, crls.unwrap_or_default(), 3) {
        Ok(v) => v,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let Some(chain) = certs else {
        return;
    };
    let ders: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    // As a chain presented to the bundle made of the same certificates, and with only the
    // leaf trusted by an empty bundle (every path refuses).
    let now = inside(&chain[0]);
    for purpose in [Purpose::Client, Purpose::Server] {
        if let Err(f) = verifier.verify(&ders, purpose, now) {
            let msg = f.to_string();
            assert!(!msg.is_empty());
            assert!(!f.openssl_reason().is_empty());
        }
        let _ = verifier.explain(&ders, purpose, now, None);
    }
    if let Ok(empty) = Verifier::new(Vec::new(), Vec::new(), 2) {
        assert!(empty.verify(&ders, Purpose::Client, now).is_err());
    }
});
