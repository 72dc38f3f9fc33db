//! What names a leaf certificate may carry: one rule, used by both [`Signer::issue`] and
//! [`Signer::sign_csr`], so a CSR cannot get a certificate `cert issue` would refuse.
//!
//! - **No control characters** (bytes below 0x20, and 0x7f: CR, LF, NUL, ESC, …) in any
//!   subject attribute or subject alternative name. They forge log lines, split headers
//!   and rewrite terminals wherever a name is printed.
//! - **The device ID is the subject CN.** A client certificate names one device: its CN
//!   (`dev1.d.example.local`), which is what the gateway puts in its identity headers and
//!   matches against allowlists. A DNS SAN inside the CA's device domain
//!   (`*.{device_domain}`) must therefore be the CN itself (case-insensitive); a SAN naming
//!   another device is refused, as is a client CSR with several CNs. DNS SANs outside the
//!   device domain are not device IDs and are left alone.
//!
//! [`Signer::issue`]: crate::ca::Signer::issue
//! [`Signer::sign_csr`]: crate::ca::Signer::sign_csr

use crate::ca::CertKind;
use crate::error::{PkiError, Result};

/// Where the names come from, for the wording of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A certificate signing request (`cert sign`).
    Csr,
    /// Names given on the command line (`cert issue`).
    Issue,
}

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Origin::Csr => "the CSR's ",
            Origin::Issue => "the ",
        }
    }
}

/// A subject alternative name, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum San<'a> {
    Dns(&'a str),
    Uri(&'a str),
    Email(&'a str),
}

/// Checks the names of a leaf certificate. `subject` lists the subject's attributes as
/// (short name, value), in order; `sans` the text SANs.
pub fn check_leaf_names(
    kind: CertKind,
    subject: &[(&str, &str)],
    sans: &[San<'_>],
    device_domain: &str,
    origin: Origin,
) -> Result<()> {
    let p = origin.prefix();
    for (attr, value) in subject {
        if has_control(value) {
            return Err(PkiError::ControlCharacter {
                field: format!("{p}subject {attr}"),
                shown: escape(value),
            });
        }
    }
    for san in sans {
        let (what, v) = match san {
            San::Dns(v) => ("DNS SAN", v),
            San::Uri(v) => ("URI SAN", v),
            San::Email(v) => ("email SAN", v),
        };
        if has_control(v) {
            return Err(PkiError::ControlCharacter {
                field: format!("{p}{what}"),
                shown: escape(v),
            });
        }
    }
    if kind != CertKind::Client {
        return Ok(());
    }
    let cns: Vec<&str> = subject
        .iter()
        .filter(|(a, _)| *a == "CN")
        .map(|(_, v)| *v)
        .collect();
    if cns.len() > 1 {
        return Err(PkiError::CsrRefused(format!(
            "it has {} CNs; a client certificate's CN is its device ID, so it must have exactly one",
            cns.len()
        )));
    }
    let cn = cns.first().copied();
    for san in sans {
        let San::Dns(d) = san else { continue };
        if !in_device_domain(d, device_domain) {
            continue;
        }
        if cn.is_some_and(|c| {
            c.trim_end_matches('.')
                .eq_ignore_ascii_case(d.trim_end_matches('.'))
        }) {
            continue;
        }
        return Err(PkiError::OtherDevice {
            san: format!("{p}DNS SAN {d}"),
            cn: match cn {
                Some(c) => format!("its CN {c}"),
                None => "its CN (it has none)".into(),
            },
        });
    }
    Ok(())
}

/// `name` is `*.{domain}`: a device ID (or a wildcard over device IDs).
fn in_device_domain(name: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return false;
    }
    name.trim_end_matches('.')
        .to_ascii_lowercase()
        .ends_with(&format!(".{domain}"))
}

/// True if `s` holds a C0 control character or DEL.
pub fn has_control(s: &str) -> bool {
    s.chars().any(|c| c < ' ' || c == '\u{7f}')
}

/// `s` with control characters written as escapes, short enough for one line.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars().take(100) {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    if s.chars().count() > 100 {
        out.push('…');
    }
    out
}

/// The text of a directory string attribute value as the parties reading it see it:
/// UTF8String as UTF-8, BMPString as UTF-16, UniversalString as UTF-32, and the 8-bit
/// string types byte by byte. `None` for values that are not strings (dumped as hex by
/// OpenSSL and nginx, so they cannot smuggle control characters into text).
pub(crate) fn attribute_text(tag: u32, bytes: &[u8]) -> Option<String> {
    match tag {
        12 => Some(String::from_utf8_lossy(bytes).into_owned()),
        18..=22 | 25..=27 => Some(bytes.iter().map(|b| char::from(*b)).collect()),
        30 => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        28 => Some(
            bytes
                .chunks(4)
                .map(|c| {
                    let mut b = [0u8; 4];
                    b[..c.len()].copy_from_slice(c);
                    char::from_u32(u32::from_be_bytes(b)).unwrap_or('\u{fffd}')
                })
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "d.example.local";

    #[test]
    fn control_characters_are_refused_in_subject_and_sans() {
        let e = check_leaf_names(
            CertKind::Client,
            &[("O", "Acme"), ("CN", "dev1\r\nX-Injected: 1")],
            &[],
            DOMAIN,
            Origin::Csr,
        )
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the CSR's subject CN contains a control character (dev1\\r\\nX-Injected: 1): names with control characters (CR, LF, NUL, ESC, …) can forge log lines, headers and terminal output, so they are refused"
        );
        let e = check_leaf_names(
            CertKind::Server,
            &[("CN", "api")],
            &[San::Uri("spiffe://x/\u{1b}[31m")],
            DOMAIN,
            Origin::Issue,
        )
        .expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("the URI SAN contains a control character (spiffe://x/\\x1b[31m)"),
            "{e}"
        );
        for bad in ["a\0b", "a\u{7f}", "\tx"] {
            assert!(has_control(bad), "{bad:?}");
        }
        assert!(!has_control("Jérôme #1, Inc."));
    }

    #[test]
    fn a_client_names_one_device() {
        // The CN itself as a SAN, in any case, and SANs outside the device domain are fine.
        check_leaf_names(
            CertKind::Client,
            &[("CN", "dev1.d.example.local")],
            &[
                San::Dns("DEV1.d.example.local"),
                San::Dns("dev1.example.com"),
            ],
            DOMAIN,
            Origin::Csr,
        )
        .expect("one device");
        let e = check_leaf_names(
            CertKind::Client,
            &[("CN", "other.d.example.local")],
            &[San::Dns("dev1.d.example.local")],
            DOMAIN,
            Origin::Csr,
        )
        .expect_err("two devices");
        assert_eq!(
            e.to_string(),
            "the CSR's DNS SAN dev1.d.example.local names another device than its CN other.d.example.local; a client certificate names one device"
        );
        let e = check_leaf_names(
            CertKind::Client,
            &[("O", "Acme")],
            &[San::Dns("*.d.example.local")],
            DOMAIN,
            Origin::Issue,
        )
        .expect_err("wildcard over devices");
        assert_eq!(
            e.to_string(),
            "the DNS SAN *.d.example.local names another device than its CN (it has none); a client certificate names one device"
        );
        let e = check_leaf_names(
            CertKind::Client,
            &[("CN", "a.d.example.local"), ("CN", "b.d.example.local")],
            &[],
            DOMAIN,
            Origin::Csr,
        )
        .expect_err("two CNs");
        assert!(e.to_string().contains("it has 2 CNs"), "{e}");
        // Servers are not devices.
        check_leaf_names(
            CertKind::Server,
            &[("CN", "api")],
            &[San::Dns("dev1.d.example.local")],
            DOMAIN,
            Origin::Csr,
        )
        .expect("servers may name anything");
    }

    #[test]
    fn attribute_text_decodes_string_types() {
        assert_eq!(attribute_text(12, "é\n".as_bytes()).as_deref(), Some("é\n"));
        assert_eq!(attribute_text(19, b"Acme").as_deref(), Some("Acme"));
        assert_eq!(
            attribute_text(30, &[0, b'A', 0, 0x0a]).as_deref(),
            Some("A\n")
        );
        assert_eq!(
            attribute_text(28, &[0, 0, 0, 0x1b]).as_deref(),
            Some("\u{1b}")
        );
        assert_eq!(attribute_text(4, b"\n"), None);
    }
}
