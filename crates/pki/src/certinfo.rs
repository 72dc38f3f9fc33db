//! What a certificate says, extracted once: DN strings (nginx-compatible), serial,
//! fingerprints, SANs, device ID, SPIFFE ID, key description, EKUs and validity.
//! Used by `cert inspect`, by the inventory, and by the gateway's per-connection identity.

use std::fmt;

use serde::Serialize;
use sha1::Digest as _;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use crate::dn;
use crate::error::{PkiError, Result};
use crate::profile::{self, Curve, OID_ED25519};

/// A public key, described for people ("ECDSA P-256", 256 bits).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyDescription {
    pub algorithm: String,
    pub bits: usize,
}

impl fmt::Display for KeyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bits)", self.algorithm, self.bits)
    }
}

/// Everything `cert inspect` shows, and what the gateway derives identity from.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Subject DN, RFC 2253, byte-identical to nginx's `$ssl_client_s_dn`.
    pub subject: String,
    /// Issuer DN, likewise (`$ssl_client_i_dn`).
    pub issuer: String,
    /// Serial as nginx prints `$ssl_client_serial`: uppercase hex.
    pub serial: String,
    pub sha256_fingerprint: String,
    pub sha1_fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub common_name: Option<String>,
    pub organizational_units: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    /// The device ID. **The device ID is the subject CN** (the first CN attribute, as
    /// nginx's `$ssl_client_s_dn_cn`-style extraction sees it; for example
    /// `MyDeviceId.d.wott.local`), never a SAN: mtlsgate refuses to issue or sign a client
    /// certificate whose DNS SAN inside the device domain names another device than its CN
    /// (see [`crate::names`]). `None` for CA certificates and for certificates without a CN.
    pub device_id: Option<String>,
    /// The first `spiffe://` URI SAN.
    pub spiffe_id: Option<String>,
    pub key: KeyDescription,
    /// Extended key usages by name (`serverAuth`, `clientAuth`, …).
    pub extended_key_usages: Vec<String>,
    pub is_ca: bool,
    pub self_signed: bool,
    /// X.509 version: 3, or 1 for certificates made without extensions (`openssl x509
    /// -req` without `-extfile`), which have no SANs and no EKU (any purpose).
    pub version: u32,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, x) =
            x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCertificate {
                path: "certificate".into(),
                reason: format!("cannot be parsed: {}", crate::error::parse_reason(&e)),
            })?;
        Ok(Self::from_parsed(der, &x))
    }

    /// Builds from an already parsed certificate.
    pub fn from_parsed(der: &[u8], x: &X509Certificate<'_>) -> Self {
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        let mut uris = Vec::new();
        let mut emails = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for gn in &san.value.general_names {
                match gn {
                    GeneralName::DNSName(d) => dns.push((*d).to_string()),
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::RFC822Name(e) => emails.push((*e).to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            ips.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let cn = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        let ous = x
            .subject()
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect();
        let spiffe = uris.iter().find(|u| u.starts_with("spiffe://")).cloned();
        let ekus = eku_names(x);
        let is_ca = x
            .basic_constraints()
            .ok()
            .flatten()
            .map(|b| b.value.ca)
            .unwrap_or(false);
        let self_signed =
            x.subject().as_raw() == x.issuer().as_raw() && x.verify_signature(None).is_ok();
        CertInfo {
            subject: dn::rfc2253(x.subject()),
            issuer: dn::rfc2253(x.issuer()),
            serial: serial_hex(x.raw_serial()),
            sha256_fingerprint: hex::encode(sha2::Sha256::digest(der)),
            sha1_fingerprint: hex::encode(sha1::Sha1::digest(der)),
            not_before: asn1_to_time(x.validity().not_before.timestamp()),
            not_after: asn1_to_time(x.validity().not_after.timestamp()),
            // A self-signed certificate may be a client's own (pinned, as nginx trusts one
            // named in ssl_client_certificate), even though openssl marks it CA:TRUE.
            device_id: if is_ca && !self_signed {
                None
            } else {
                cn.clone()
            },
            common_name: cn,
            organizational_units: ous,
            dns_names: dns,
            ip_addresses: ips,
            uris,
            emails,
            spiffe_id: spiffe,
            key: describe_key(x),
            extended_key_usages: ekus,
            is_ca,
            self_signed,
            version: x.version().0 + 1,
        }
    }

    /// Seconds until `not_after` (negative once expired).
    pub fn seconds_remaining(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_seconds()
    }
}

/// The subject public key (the BIT STRING's contents, as signature algorithms take it) of
/// an X.509 version 1 certificate; `None` for any other certificate. The gateway checks a
/// v1 client's CertificateVerify with it, since rustls cannot parse v1 certificates.
pub fn v1_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    (x.version() == x509_parser::x509::X509Version::V1)
        .then(|| x.public_key().subject_public_key.data.to_vec())
}

/// When a DER CRL stops being current (its nextUpdate), if it says.
pub fn crl_next_update(der: &[u8]) -> Option<OffsetDateTime> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    crl.next_update().map(|t| asn1_to_time(t.timestamp()))
}

/// The DER of a certificate's subject name (for TLS CertificateRequest hints).
pub fn raw_subject(der: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(x.subject().as_raw().to_vec())
}

/// The earliest notAfter in a DER chain: when the chain as a whole stops being valid.
/// `None` if the chain is empty or a certificate in it cannot be parsed.
pub fn chain_not_after(chain: &[impl AsRef<[u8]>]) -> Option<OffsetDateTime> {
    let mut earliest: Option<OffsetDateTime> = None;
    for der in chain {
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let t = OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp()).ok()?;
        earliest = Some(earliest.map_or(t, |e| e.min(t)));
    }
    earliest
}

fn asn1_to_time(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(std::net::IpAddr::from(a))
        }
        16 => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(std::net::IpAddr::from(a))
        }
        _ => None,
    }
}

/// Serial number as OpenSSL's `i2a_ASN1_INTEGER` prints it (what nginx puts in
/// `$ssl_client_serial`): uppercase hex of the magnitude, at least two digits.
pub fn serial_hex(raw: &[u8]) -> String {
    let mut bytes = raw;
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    if bytes.is_empty() {
        return "00".into();
    }
    hex::encode_upper(bytes)
}

/// Names of the extended key usages, OpenSSL short names where known.
pub fn eku_names(x: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(eku)) = x.extended_key_usage() {
        let e = eku.value;
        if e.any {
            out.push("anyExtendedKeyUsage".into());
        }
        if e.server_auth {
            out.push("serverAuth".into());
        }
        if e.client_auth {
            out.push("clientAuth".into());
        }
        if e.code_signing {
            out.push("codeSigning".into());
        }
        if e.email_protection {
            out.push("emailProtection".into());
        }
        if e.time_stamping {
            out.push("timeStamping".into());
        }
        if e.ocsp_signing {
            out.push("OCSPSigning".into());
        }
        for o in &e.other {
            out.push(o.to_id_string());
        }
    }
    out
}

/// Describes the subject public key.
pub fn describe_key(x: &X509Certificate<'_>) -> KeyDescription {
    let spki = x.public_key();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(r)) => KeyDescription {
            algorithm: "RSA".into(),
            bits: r.key_size(),
        },
        Ok(PublicKey::EC(ec)) => {
            match profile::curve_oid(spki)
                .as_deref()
                .and_then(Curve::from_oid)
            {
                Some(c) => KeyDescription {
                    algorithm: format!("ECDSA {}", c.name()),
                    bits: c.bits(),
                },
                None => KeyDescription {
                    algorithm: "ECDSA".into(),
                    bits: ec.key_size(),
                },
            }
        }
        _ => match alg_oid.as_str() {
            OID_ED25519 => KeyDescription {
                algorithm: "Ed25519".into(),
                bits: 256,
            },
            "1.3.101.113" => KeyDescription {
                algorithm: "Ed448".into(),
                bits: 456,
            },
            other => KeyDescription {
                algorithm: format!("unknown ({other})"),
                bits: spki.subject_public_key.data.len() * 8,
            },
        },
    }
}

/// A time the way OpenSSL's `ASN1_TIME_print` writes it, as nginx's `$ssl_client_v_start`
/// and `$ssl_client_v_end` show it: `Nov 27 10:15:48 2026 GMT` (day padded with a space).
pub fn openssl_time(t: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// A UTC time for people: `2026-11-27 10:15:48 UTC`.
pub fn human_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A duration for people: `3d 4h`, `5h 2m`, `42s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_strips_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0xC3, 0x01]), "C301");
        assert_eq!(serial_hex(&[0x01]), "01");
        assert_eq!(serial_hex(&[]), "00");
    }

    fn cert(not_after: OffsetDateTime) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).expect("params");
        p.not_before = not_after - time::Duration::days(10);
        p.not_after = not_after;
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn chain_not_after_is_the_earliest() {
        let a = time::macros::datetime!(2031-01-01 00:00 UTC);
        let b = time::macros::datetime!(2030-03-04 05:06:07 UTC);
        let c = time::macros::datetime!(2035-01-01 00:00 UTC);
        let chain = vec![cert(a), cert(b), cert(c)];
        assert_eq!(chain_not_after(&chain), Some(b));
        assert_eq!(chain_not_after(&chain[..1]), Some(a));
        let borrowed: Vec<&[u8]> = chain.iter().map(|d| d.as_slice()).collect();
        assert_eq!(chain_not_after(&borrowed), Some(b));
        assert_eq!(chain_not_after(&Vec::<Vec<u8>>::new()), None);
        assert_eq!(chain_not_after(&[cert(a), b"junk".to_vec()]), None);
    }

    #[test]
    fn unparsable_certificate_is_explained_without_debug_text() {
        let e = CertInfo::from_der(b"\x30\x03\x02\x01").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.starts_with("certificate: cannot be parsed: "), "{msg}");
        assert!(
            !msg.contains("Parsing Error") && !msg.contains("Incomplete("),
            "{msg}"
        );
    }

    #[test]
    fn openssl_time_pads_day_with_space() {
        let t = time::macros::datetime!(2026-11-07 01:02:03 UTC);
        assert_eq!(openssl_time(t), "Nov  7 01:02:03 2026 GMT");
    }
}
