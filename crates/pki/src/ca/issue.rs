//! Leaves the CA makes: certificates issued with a fresh key (`cert issue`), device
//! certificates for a checked CSR key, and the name rules both apply (file-safe names,
//! DNS names, device IDs, URIs).

use std::net::IpAddr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::Duration;

use super::{now, random_serial, CertKind, Issued, LeafRequest, Signer};
use crate::error::{PkiError, Result};
use crate::key::KeyType;
use crate::names::{self, Origin, San};

/// Checks a file-name-safe certificate name (`NAME.crt`, `NAME.key`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "name",
            value: name.into(),
            reason: "use letters, digits, `.`, `-` and `_` only (it becomes NAME.crt and NAME.key), not starting with `.` or `-`".into(),
        })
    }
}

/// Checks a DNS name for a SAN.
pub(super) fn check_dns(name: &str) -> Result<()> {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "DNS name",
            value: name.into(),
            reason:
                "expected a host name such as api.example.com (labels of letters, digits and `-`)"
                    .into(),
        })
    }
}

/// Turns `dev1` into `dev1.<domain>`; an ID that already ends in the domain is kept.
pub fn normalize_device_id(id: &str, domain: &str) -> Result<String> {
    let id = id.trim().trim_end_matches('.');
    let full = if domain.is_empty()
        || id.eq_ignore_ascii_case(domain)
        || id
            .to_ascii_lowercase()
            .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
    {
        id.to_string()
    } else {
        format!("{id}.{domain}")
    };
    check_dns(&full).map_err(|_| PkiError::InvalidInput {
        what: "device ID",
        value: id.into(),
        reason: "a device ID becomes a DNS name: use letters, digits and `-` (for example dev1 or MyDeviceId)".into(),
    })?;
    Ok(full)
}

/// URI SANs that give a certificate a role in mtlsgate (`urn:mtlsgate:role:admin`): a CSR
/// never gets one; only the CA's own requests (`cert issue admin`) carry it.
pub const ROLE_URI_PREFIX: &str = "urn:mtlsgate:role:";

pub(super) fn leaf_base(kind: CertKind, validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match kind {
        CertKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let n = now();
    // Backdated for clocks a little behind the CA's: five minutes, or a tenth of a short
    // lifetime, so that most of a short-lived certificate's life (and the renewal point
    // an agent computes from notBefore) lies ahead.
    p.not_before = n - Duration::minutes(5).min(validity / 10);
    p.not_after = n + validity;
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

pub(super) fn rsa_key_usage(p: &mut CertificateParams, is_rsa: bool) {
    if is_rsa {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
}

impl Signer {
    /// Issues a leaf with a freshly generated key. Returns the certificate and its key.
    pub fn issue(&self, req: &LeafRequest, device_domain: &str) -> Result<(Issued, KeyPair)> {
        let key = req.key_type.generate()?;
        let is_rsa = matches!(
            req.key_type,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
        );
        let mut p = leaf_base(req.kind, req.validity);
        rsa_key_usage(&mut p, is_rsa);
        let mut dn = DistinguishedName::new();
        let mut sans = Vec::new();
        match req.kind {
            CertKind::Server => {
                check_name(&req.name)?;
                dn.push(DnType::CommonName, req.name.as_str());
                let mut dns = req.dns.clone();
                if dns.is_empty() && req.ips.is_empty() {
                    dns.push(req.name.clone());
                }
                for d in &dns {
                    check_dns(d)?;
                    sans.push(SanType::DnsName(d.as_str().try_into()?));
                }
            }
            CertKind::Client => {
                check_name(&req.name)?;
                let cn = match &req.device_id {
                    Some(id) => {
                        let full = normalize_device_id(id, device_domain)?;
                        sans.push(SanType::DnsName(full.as_str().try_into()?));
                        full
                    }
                    None => req.name.clone(),
                };
                dn.push(DnType::CommonName, cn);
                for d in &req.dns {
                    check_dns(d)?;
                    sans.push(SanType::DnsName(d.as_str().try_into()?));
                }
            }
            CertKind::Root | CertKind::Intermediate => {
                return Err(PkiError::InvalidInput {
                    what: "certificate kind",
                    value: req.kind.as_str().into(),
                    reason: "only server and client certificates are issued as leaves".into(),
                })
            }
        }
        for u in &req.uris {
            check_uri(u)?;
        }
        let cn = dn_cn(&dn);
        let text_sans: Vec<San<'_>> = sans
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(d) => Some(San::Dns(d.as_str())),
                _ => None,
            })
            .chain(req.uris.iter().map(|u| San::Uri(u.as_str())))
            .collect();
        let subject: Vec<(&str, &str)> = cn.iter().map(|c| ("CN", c.as_str())).collect();
        names::check_leaf_names(req.kind, &subject, &text_sans, device_domain, Origin::Issue)?;
        for ip in &req.ips {
            sans.push(SanType::IpAddress(*ip));
        }
        for u in &req.uris {
            sans.push(SanType::URI(u.as_str().try_into()?));
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((Issued::new(req.kind, cert.der().to_vec())?, key))
    }

    /// Signs a device's certificate for the key of a checked CSR
    /// ([`crate::device::check_device_csr`]): the CA names the device — the device ID is
    /// the subject CN and the only DNS SAN — and the certificate is for TLS client
    /// authentication only, valid for `validity`.
    pub fn sign_device(
        &self,
        csr: &crate::device::DeviceCsr,
        device_id: &str,
        validity: Duration,
    ) -> Result<Issued> {
        check_dns(device_id).map_err(|_| PkiError::InvalidInput {
            what: "device ID",
            value: device_id.into(),
            reason: "a device ID becomes a DNS name: use letters, digits and `-`".into(),
        })?;
        let mut p = leaf_base(CertKind::Client, validity);
        rsa_key_usage(&mut p, csr.is_rsa);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::DnsName(device_id.try_into()?)];
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let cert = p.signed_by(&spki, &self.issuer)?;
        Issued::new(CertKind::Client, cert.der().to_vec())
    }
}

/// The CN of a name rcgen is about to write.
pub(super) fn dn_cn(dn: &DistinguishedName) -> Option<String> {
    match dn.get(&DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

pub(super) fn check_uri(u: &str) -> Result<()> {
    let ok = u
        .split_once(':')
        .map(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && !rest.trim_start_matches('/').is_empty()
                && !rest.contains(char::is_whitespace)
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "URI",
            value: u.into(),
            reason: "expected an absolute URI such as spiffe://example.org/ns/prod/sa/api or urn:example:name".into(),
        })
    }
}

pub(super) fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}
