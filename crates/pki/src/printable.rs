//! Text someone else controls — certificate subjects, CNs and SANs (even of unverified
//! self-signed certificates), request paths — made safe to print in a log line, an error page or a
//! header. Control bytes (CR, LF, NUL, ESC …), `"`, `\` and bytes above 0x7e are written as
//! `\xHH`, as nginx writes them in its access log, so a client cannot forge log lines,
//! split a page, or send escape sequences to an operator's terminal.

use std::borrow::Cow;

fn needs_escape(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
}

/// `s` with unsafe bytes written as `\xHH` (borrowed when nothing needs escaping).
pub fn printable(s: &str) -> Cow<'_, str> {
    printable_bytes(s.as_bytes())
}

/// Like [`printable`], for bytes that may not be UTF-8.
pub fn printable_bytes(s: &[u8]) -> Cow<'_, str> {
    if !s.iter().any(|b| needs_escape(*b)) {
        // Every byte is printable ASCII.
        return match std::str::from_utf8(s) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => Cow::Owned(String::new()),
        };
    }
    let mut out = String::with_capacity(s.len() + 16);
    for &b in s {
        if needs_escape(b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_quotes_and_non_ascii_are_escaped() {
        assert_eq!(printable("dev1.d.example.local"), "dev1.d.example.local");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("x\r\n2026 device=dev1 verify=\"SUCCESS\""),
            "x\\x0D\\x0A2026 device=dev1 verify=\\x22SUCCESS\\x22"
        );
        assert_eq!(printable("\u{1b}[31mred\0"), "\\x1B[31mred\\x00");
        assert_eq!(printable("a\\b"), "a\\x5Cb");
        assert_eq!(printable("é"), "\\xC3\\xA9");
    }
}
