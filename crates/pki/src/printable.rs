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

/// Appends `s` to `out` as [`printable_bytes`] writes it, in one pass and without an
/// allocation: for the access log, which escapes a client's text on every line.
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
    fn extend_printable_writes_what_printable_bytes_writes() {
        for s in [
            &b""[..],
            b"dev1.d.example.local",
            b"x\r\n2026 device=dev1 verify=\"SUCCESS\"",
            b"\x1b[31mred\0",
            b"a\\b",
            "\u{e9}t\u{e9}".as_bytes(),
            b"\xff\x80 end\x7f",
        ] {
            let mut out = b"prefix ".to_vec();
            extend_printable(&mut out, s);
            assert_eq!(
                out,
                [&b"prefix "[..], printable_bytes(s).as_bytes()].concat()
            );
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
