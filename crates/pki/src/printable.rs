//! Text someone else controls — certificate subjects, CNs and SANs (even of unverified
//! self-signed certificates), request paths — made safe to print in a log line, an error page or a
//! header. Control bytes (CR, LF, NUL, ESC …), `"`, `\` and bytes above 0x7e are written as
//! `\xHH`, as nginx writes them in its access log, so a client cannot forge log lines,
//! split a page, or send escape sequences to an operator's terminal.

use std::borrow::Cow;

/// For each byte, whether it is written as `\xHH`: a table, because the access log asks
/// for every byte of every line's client-controlled text.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x7f || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

fn needs_escape(b: u8) -> bool {
    ESCAPED[usize::from(b)]
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
    let mut out = Vec::with_capacity(s.len() + 16);
    extend_printable(&mut out, s);
    // Only printable ASCII was written: always UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// Appends `s` to `out` with unsafe bytes written as `\xHH`, in one pass and without an
/// allocation: the access log escapes a client's text on every line this way, and
/// [`printable_bytes`] is built on it.
pub fn extend_printable(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    while let Some(i) = rest.iter().position(|b| needs_escape(*b)) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_quotes_backslash_and_non_ascii_are_the_escaped_bytes() {
        for b in 0..=255u8 {
            let escaped = !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\';
            assert_eq!(needs_escape(b), escaped, "byte {b:#04x}");
        }
    }

    #[test]
    fn extend_printable_appends_the_escaped_text() {
        for (s, want) in [
            (&b""[..], ""),
            (b"dev1.d.example.local", "dev1.d.example.local"),
            (b"x\r\ny=\"1\"", "x\\x0D\\x0Ay=\\x221\\x22"),
            (b"\x1b[31mred\0", "\\x1B[31mred\\x00"),
            (b"a\\b", "a\\x5Cb"),
            ("\u{e9}t".as_bytes(), "\\xC3\\xA9t"),
            (b"\xff\x80 end\x7f", "\\xFF\\x80 end\\x7F"),
        ] {
            let mut out = b"prefix ".to_vec();
            extend_printable(&mut out, s);
            assert_eq!(String::from_utf8_lossy(&out), format!("prefix {want}"));
        }
    }

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
