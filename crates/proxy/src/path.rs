//! Request paths: the one rule for what path a request names. Routes are matched on the
//! normalised path, and the normalised path is what the upstream receives, so an upstream
//! cannot read a request differently from the way the gateway authorised it.
//!
//! The rule (nginx matches locations the same way; the refusals follow Spring Security's
//! `StrictHttpFirewall`, because upstreams disagree about those forms):
//! 1. The path must be in origin form (`/…`); the query is kept as it is and never decoded.
//! 2. Percent-escapes are decoded (`%61dmin` is `admin`, `%2e%2e` is `..`). A `%` not
//!    followed by two hex digits is refused.
//! 3. Refused, because servers read them differently: an encoded `/` (`%2F`), a backslash
//!    (raw or `%5C`), a `;` (path parameters: `/admin;x/` is `/admin/` to Tomcat and Spring),
//!    NUL and other control characters (raw or encoded).
//! 4. Repeated slashes are merged (`//admin` is `/admin`), `.` segments are removed and
//!    `..` removes the segment before it; a `..` above the root is refused.
//! 5. The result is percent-encoded canonically (unreserved characters, sub-delimiters,
//!    `:`, `@` and `/` as they are; every other byte as `%XX`) and forwarded.

use std::fmt;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    BadEscape,
    EncodedSlash,
    Backslash,
    Semicolon,
    ControlCharacter,
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "the request target is not a path starting with /",
            PathError::BadEscape => "the path has a % that is not followed by two hex digits",
            PathError::EncodedSlash => {
                "the path has an encoded slash (%2F), which servers read differently; send a plain / or encode the segment differently"
            }
            PathError::Backslash => {
                "the path has a backslash (\\ or %5C), which some servers read as a slash"
            }
            PathError::Semicolon => {
                "the path has a ; (path parameters), which some servers strip before routing"
            }
            PathError::ControlCharacter => "the path has a control character (such as %00)",
            PathError::AboveRoot => "the path climbs above the root with ..",
        })
    }
}

impl std::error::Error for PathError {}

/// A request path after normalisation.
#[derive(Debug, Clone)]
pub struct NormalPath {
    /// The decoded, normalised path, as bytes (it may hold any octet `%XX` decoded to):
    /// what routes are matched against. `None`: the same bytes as `encoded` (a path that
    /// was canonical as sent, the usual case: one allocation instead of two).
    decoded: Option<Vec<u8>>,
    /// The same path, canonically percent-encoded: what the upstream receives.
    encoded: String,
}

impl PartialEq for NormalPath {
    fn eq(&self, other: &Self) -> bool {
        self.decoded() == other.decoded() && self.encoded == other.encoded
    }
}

impl Eq for NormalPath {}

impl NormalPath {
    pub fn decoded(&self) -> &[u8] {
        self.decoded.as_deref().unwrap_or(self.encoded.as_bytes())
    }

    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The canonical encoding of the part after the first `n` decoded bytes (for a route
    /// whose upstream URL replaces its prefix).
    pub fn encoded_after(&self, n: usize) -> String {
        encode(self.decoded().get(n..).unwrap_or_default())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises the path of a request target (the part before `?`).
pub fn normalize(raw: &str) -> Result<NormalPath, PathError> {
    if is_canonical(raw.as_bytes()) {
        return Ok(NormalPath {
            decoded: None,
            encoded: raw.to_owned(),
        });
    }
    normalize_any(raw)
}

/// Whether a path is its own normal form: only bytes that [`encode`] keeps (so no `%`, no
/// `\`, `;` or control character), no empty segment but a last one (`//`), no `.` or `..`
/// segment.
fn is_canonical(raw: &[u8]) -> bool {
    let Some(rest) = raw.strip_prefix(b"/") else {
        return false;
    };
    if !raw.iter().all(|b| keep(*b)) {
        return false;
    }
    let mut segments = rest.split(|b| *b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"" if last => {}
            b"" | b"." | b".." => return false,
            _ => {}
        }
    }
    true
}

/// [`normalize`] for any path, canonical or not.
fn normalize_any(raw: &str) -> Result<NormalPath, PathError> {
    let raw = raw.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    // 1. Decode, refusing the ambiguous forms.
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let (byte, escaped) = if b == b'%' {
            let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            ((h << 4) | l, true)
        } else {
            i += 1;
            (b, false)
        };
        match byte {
            b'/' if escaped => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => bytes.push(byte),
        }
    }
    // 2. Merge slashes and resolve dot segments.
    let mut segments: Vec<&[u8]> = Vec::new();
    let trailing_slash =
        bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes.ends_with(b"/..") || bytes == b"/";
    for seg in bytes.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    for s in &segments {
        decoded.push(b'/');
        decoded.extend_from_slice(s);
    }
    if decoded.is_empty() || (trailing_slash && !decoded.ends_with(b"/")) {
        decoded.push(b'/');
    }
    let encoded = encode(&decoded);
    Ok(NormalPath {
        decoded: Some(decoded),
        encoded,
    })
}

/// Bytes kept as they are in a canonical path: unreserved, sub-delimiters (but `;`, which
/// is refused before), `:`, `@` and `/`.
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// Checks a route prefix: it must already be a normalised path, so that what the operator
/// wrote is what requests are matched against.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("`{prefix}` must start with /"));
    }
    match normalize(prefix) {
        Ok(n) if n.encoded() == prefix => Ok(()),
        Ok(n) => Err(format!(
            "`{prefix}` is not a normalised path; write `{}`",
            n.encoded()
        )),
        Err(e) => Err(format!("`{prefix}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p).map(|n| n.encoded().to_string())
    }

    #[test]
    fn canonical_paths_take_the_short_way_to_the_same_result() {
        for p in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "/a/b",
            "/a/b/",
            "/a//b",
            "/.",
            "/..",
            "/./",
            "/a/.",
            "/a/..",
            "/a/./b",
            "/a/../b",
            "/.a",
            "/..a",
            "/a..",
            "/a.b/c",
            "/a%2Fb",
            "/a%62",
            "/a;b",
            "/a\\b",
            "/~user/@x:y!$&'()*+,=",
            "/a b",
            "/\u{e9}",
            "a",
            "",
            "/%2e",
            "/a/%2e%2e/",
            "/A/B/",
        ] {
            let short = normalize(p);
            let long = normalize_any(p);
            assert_eq!(short, long, "{p:?}");
            if let (Ok(s), Ok(l)) = (&short, &long) {
                assert_eq!(s.decoded(), l.decoded(), "{p:?}");
                assert_eq!(s.encoded(), l.encoded(), "{p:?}");
            }
        }
        assert!(is_canonical(b"/api/v1/items/"));
        assert!(!is_canonical(b"/api//items"));
    }

    #[test]
    fn bypass_variants_become_the_path_they_mean() {
        for p in [
            "/admin/secret.txt",
            "/%61dmin/secret.txt",
            "/%61%64%6D%69%6E/secret.txt",
            "//admin/secret.txt",
            "///admin//secret.txt",
            "/./admin/secret.txt",
            "/admin/./secret.txt",
            "/public.txt/../admin/secret.txt",
            "/x/y/../../admin/secret.txt",
            "/%2e/admin/secret.txt",
            "/public/%2e%2e/admin/secret.txt",
            "/public/%2E%2E/admin/secret.txt",
            "/public/.%2e/admin/secret.txt",
            "/admin/secret%2etxt",
        ] {
            assert_eq!(norm(p).as_deref(), Ok("/admin/secret.txt"), "{p}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        assert_eq!(norm("/admin%2fsecret"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/admin%2Fsecret"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/admin\\secret"), Err(PathError::Backslash));
        assert_eq!(norm("/admin%5csecret"), Err(PathError::Backslash));
        assert_eq!(norm("/admin;x=1/secret"), Err(PathError::Semicolon));
        assert_eq!(norm("/admin%3b/secret"), Err(PathError::Semicolon));
        assert_eq!(norm("/admin%00.txt"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/a%0d%0ab"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/../secret.txt"), Err(PathError::AboveRoot));
        assert_eq!(norm("/api/../../secret.txt"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/secret.txt"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
        assert_eq!(norm("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn dot_segments_keep_the_directory_form() {
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("/api/..").as_deref(), Ok("/"));
        assert_eq!(norm("/api/../").as_deref(), Ok("/"));
        assert_eq!(norm("/api/.").as_deref(), Ok("/api/"));
        assert_eq!(norm("/api/x/..").as_deref(), Ok("/api/"));
        assert_eq!(norm("/api").as_deref(), Ok("/api"));
        assert_eq!(norm("/api/../secret.txt").as_deref(), Ok("/secret.txt"));
    }

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/100%25").as_deref(), Ok("/100%25"));
        assert_eq!(norm("/%252e%252e/x").as_deref(), Ok("/%252e%252e/x"));
        assert_eq!(norm("/a%7eb").as_deref(), Ok("/a~b"));
        assert_eq!(norm("/x+y@z:1,2").as_deref(), Ok("/x+y@z:1,2"));
        assert_eq!(norm("/%22%3c%3e").as_deref(), Ok("/%22%3C%3E"));
        // Normalising the forwarded form changes nothing.
        for p in ["/a%20b", "/caf%C3%A9", "/100%25", "/%252e%252e/x"] {
            assert_eq!(norm(p).as_deref(), Ok(p));
        }
    }

    #[test]
    fn prefixes_must_be_normal() {
        assert!(check_prefix("/api/").is_ok());
        assert!(check_prefix("/").is_ok());
        assert!(check_prefix("api/").is_err());
        assert!(check_prefix("/api//").is_err());
        assert!(check_prefix("/a/../b/").is_err());
        assert!(check_prefix("/%61pi/").is_err());
    }
}
