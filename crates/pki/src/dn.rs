//! Distinguished names printed exactly as OpenSSL's `X509_NAME_print_ex(.., XN_FLAG_RFC2253)`
//! prints them, which is what nginx (>= 1.11.6) puts in `$ssl_client_s_dn` and
//! `$ssl_client_i_dn`: most specific RDN first, `,` between RDNs, `+` inside a multi-valued
//! RDN, OpenSSL short names, RFC 2253 escaping, bytes above 0x7f as `\XX`, and values of
//! unknown attribute types or string types dumped as `#` + hex of their DER.

use x509_parser::der_parser::asn1_rs::{Any, Class};
use x509_parser::x509::X509Name;

/// OpenSSL's short name for an attribute type OID, if it has one.
pub(crate) fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.16" => "postalAddress",
        "2.5.4.17" => "postalCode",
        "2.5.4.18" => "postOfficeBox",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.72" => "role",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.2.840.113549.1.9.2" => "unstructuredName",
        "1.2.840.113549.1.9.8" => "unstructuredAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// Bytes per character for the universal string types OpenSSL knows how to print
/// (`tag2nbyte` in OpenSSL's a_strex.c); `None` means "dump as hex".
fn char_width(tag: u32) -> Option<u8> {
    match tag {
        12 => Some(0),      // UTF8String: printed byte by byte
        18..=20 => Some(1), // Numeric, Printable, T61
        22..=24 => Some(1), // IA5, UTCTime, GeneralizedTime
        26 | 27 => Some(1), // Visible, General
        28 => Some(4),      // Universal
        30 => Some(2),      // BMP
        _ => None,
    }
}

/// Formats a name the way nginx's `$ssl_client_s_dn` does.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut entries = Vec::new();
    for (set, rdn) in name.iter_rdn().enumerate() {
        for atv in rdn.iter() {
            entries.push((set, atv));
        }
    }
    let mut out = String::with_capacity(name.as_raw().len());
    let mut prev: Option<usize> = None;
    for (set, atv) in entries.into_iter().rev() {
        if let Some(p) = prev {
            out.push(if p == set { '+' } else { ',' });
        }
        prev = Some(set);
        let oid = atv.attr_type().to_id_string();
        match short_name(&oid) {
            Some(sn) => {
                out.push_str(sn);
                out.push('=');
                push_value(&mut out, atv.attr_value());
            }
            None => {
                out.push_str(&oid);
                out.push('=');
                push_dump(&mut out, atv.attr_value());
            }
        }
    }
    out
}

fn push_dump(out: &mut String, any: &Any<'_>) {
    out.push('#');
    let h = &any.header;
    let class: u8 = match h.class() {
        Class::Universal => 0,
        Class::Application => 1,
        Class::ContextSpecific => 2,
        Class::Private => 3,
    };
    let tag = h.tag().0;
    let mut der = Vec::with_capacity(any.data.len() + 6);
    let ident = (class << 6) | if h.is_constructed() { 0x20 } else { 0 };
    if tag < 31 {
        der.push(ident | tag as u8);
    } else {
        der.push(ident | 0x1f);
        let mut stack = Vec::new();
        let mut t = tag;
        stack.push((t & 0x7f) as u8);
        t >>= 7;
        while t > 0 {
            stack.push(((t & 0x7f) as u8) | 0x80);
            t >>= 7;
        }
        der.extend(stack.into_iter().rev());
    }
    let len = any.data.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (bytes.len() - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(any.data);
    for b in der {
        out.push_str(&format!("{b:02X}"));
    }
}

fn push_value(out: &mut String, any: &Any<'_>) {
    let tag = any.header.tag().0;
    let width = if any.header.class() == Class::Universal {
        char_width(tag)
    } else {
        None
    };
    let Some(width) = width else {
        push_dump(out, any);
        return;
    };
    // Decode into code points per OpenSSL's do_buf.
    let data = any.data;
    let chars: Vec<u32> = match width {
        0 | 1 => data.iter().map(|b| u32::from(*b)).collect(),
        2 => data
            .chunks(2)
            .map(|c| c.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
            .collect(),
        _ => data
            .chunks(4)
            .map(|c| c.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
            .collect(),
    };
    let n = chars.len();
    for (i, c) in chars.into_iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == n;
        if width == 0 {
            // UTF8String: each byte is its own "character" (no double conversion).
            esc_byte(out, c as u8, first, last);
        } else {
            // Convert to UTF-8, then escape each byte.
            let mut buf = [0u8; 4];
            let s = char::from_u32(c)
                .unwrap_or('\u{FFFD}')
                .encode_utf8(&mut buf);
            let bytes = s.as_bytes();
            let m = bytes.len();
            for (j, b) in bytes.iter().enumerate() {
                esc_byte(out, *b, first && j == 0, last && j + 1 == m);
            }
        }
    }
}

fn esc_byte(out: &mut String, b: u8, first: bool, last: bool) {
    if !(0x20..0x7f).contains(&b) {
        out.push_str(&format!("\\{b:02X}"));
        return;
    }
    let c = b as char;
    let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
        || (first && (c == '#' || c == ' '))
        || (last && c == ' ');
    if special {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn_of(params: rcgen::DistinguishedName) -> String {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = params;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("cert");
        let (_, x) = x509_parser::parse_x509_certificate(cert.der()).expect("parse");
        rfc2253(x.subject())
    }

    #[test]
    fn order_and_escaping() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "SE");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::CommonName, " #lead+trail ");
        assert_eq!(dn_of(dn), r"CN=\ #lead\+trail\ ,O=Acme\, Inc.,C=SE");
    }

    #[test]
    fn non_ascii_is_hex_escaped() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "Jérôme");
        assert_eq!(dn_of(dn), r"CN=J\C3\A9r\C3\B4me");
    }
}
