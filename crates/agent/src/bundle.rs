//! What `ca.crt` holds. The server's current bundle comes first; certificates of the old
//! file that the server no longer lists stay until they expire, so that while a CA root is
//! rolled over the device trusts the old and the new root both.

use x509_parser::prelude::parse_x509_certificate;

/// The certificates for `ca.crt` at `now` (unix seconds): every certificate of `new` (in
/// its order, without duplicates), then every certificate of `old` that `new` lacks and
/// that is still valid at `now`. Certificates that cannot be parsed are dropped.
pub fn merge(old: &[Vec<u8>], new: &[Vec<u8>], now: i64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(old.len() + new.len());
    for der in new {
        if parse_x509_certificate(der).is_ok() && !out.contains(der) {
            out.push(der.clone());
        }
    }
    for der in old {
        if out.contains(der) {
            continue;
        }
        let alive = parse_x509_certificate(der)
            .map(|(_, x)| x.validity().not_after.timestamp() > now)
            .unwrap_or(false);
        if alive {
            out.push(der.clone());
        }
    }
    out
}

/// PEM text of certificates, one block each.
pub fn to_pem(certs: &[Vec<u8>]) -> String {
    certs
        .iter()
        .map(|d| mtlsgate_pki::pemfile::to_pem("CERTIFICATE", d))
        .collect()
}

/// The certificates of PEM text (`what` names it in errors).
pub fn from_pem(what: &str, pem: &str) -> mtlsgate_pki::Result<Vec<Vec<u8>>> {
    let blocks = mtlsgate_pki::pemfile::parse_blocks(what, pem.as_bytes())?;
    mtlsgate_pki::pemfile::certs_from_blocks(what, blocks)
}

/// The first self-signed certificate (a root), if any.
pub fn first_root(certs: &[Vec<u8>]) -> Option<&Vec<u8>> {
    certs.iter().find(|d| {
        parse_x509_certificate(d)
            .map(|(_, x)| x.subject().as_raw() == x.issuer().as_raw())
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str, not_after: time::OffsetDateTime) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_before = not_after - time::Duration::days(400);
        p.not_after = not_after;
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn new_roots_come_first_and_old_ones_stay_while_valid() {
        let now = time::OffsetDateTime::now_utc();
        let old_root = root("old", now + time::Duration::days(30));
        let expired_root = root("gone", now - time::Duration::days(1));
        let new_root = root("new", now + time::Duration::days(3650));
        let intermediate = root("int", now + time::Duration::days(365));
        let old = vec![old_root.clone(), expired_root, intermediate.clone()];
        let new = vec![new_root.clone(), intermediate.clone(), new_root.clone()];
        let merged = merge(&old, &new, now.unix_timestamp());
        assert_eq!(merged, vec![new_root, intermediate, old_root]);
    }

    #[test]
    fn unparsable_certificates_are_dropped() {
        let now = time::OffsetDateTime::now_utc();
        let good = root("r", now + time::Duration::days(3));
        let merged = merge(&[b"junk".to_vec()], &[good.clone(), vec![0x30, 0]], 0);
        assert_eq!(merged, vec![good]);
    }

    #[test]
    fn pem_round_trip_and_first_root() {
        let now = time::OffsetDateTime::now_utc();
        let a = root("a", now + time::Duration::days(3));
        let b = root("b", now + time::Duration::days(3));
        let pem = to_pem(&[a.clone(), b.clone()]);
        assert_eq!(from_pem("bundle", &pem).expect("parse"), vec![a.clone(), b]);
        assert_eq!(first_root(std::slice::from_ref(&a)), Some(&a));
        assert!(from_pem("bundle", "nothing").is_err());
    }
}
