//! What a person reads when something is wrong: sentences, never Rust's Debug text
//! (`Other(OtherError(UnsupportedCertVersion))`, `Some(…)`, `Error { kind: … }`).

use crate::util::*;

/// Names with a lower-to-upper hump that are words, not Rust identifiers.
const PROPER_NOUNS: &[&str] = &["OpenSSL", "PostgreSQL", "SQLite", "WebSocket", "macOS"];

/// Fails when `text` looks like Debug output: a Rust-style identifier with a hump
/// (`UnsupportedCertVersion`, `OtherError`), a capitalised word followed by `(` or ` {`
/// (`Other(`, `Error {`), or the wrappers `Some(`, `Ok(`, `Err(`.
#[track_caller]
fn assert_no_debug(what: &str, text: &str) {
    let mut pos = 0;
    for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let start = text[pos..].find(w).map(|i| pos + i).unwrap_or(pos);
        pos = start + w.len();
        if w.is_empty() || PROPER_NOUNS.contains(&w) {
            continue;
        }
        let b = w.as_bytes();
        let hump = b
            .windows(2)
            .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase());
        assert!(!hump, "{what}: Debug-like identifier `{w}` in:\n{text}");
        let after = &text[pos..];
        if b[0].is_ascii_uppercase() {
            assert!(
                !(after.starts_with('(') || after.starts_with(" {")),
                "{what}: Debug text `{w}{}` in:\n{text}",
                &after[..1]
            );
        }
    }
    for wrapper in ["Some(", "Ok(", "Err(", "None)"] {
        assert!(
            !text.contains(wrapper),
            "{what}: Debug text `{wrapper}` in:\n{text}"
        );
    }
}

#[test]
fn refusals_are_sentences_not_debug_text() {
    let w = Work::new();
    pki(&w);
    w.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    w.write("junk.der", "\u{30}\u{3}\u{1}\u{1}\u{1}");
    w.write("bad.toml", "[server]\nlisten = 5\n");
    w.write(
        "tmpl.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"localhost.crt\"\nkey = \"localhost.key\"\nclient_ca = \"ca.crt\"\n[[route]]\nupstream = \"http://127.0.0.1:1\"\nheaders = { \"X\" = \"$nope\" }\nallow_fingerprints = [\"zz\"]\n",
    );
    // A version 1 certificate from openssl, verified against the wrong CA.
    w.cmd(
        "sh",
        &[
            "-c",
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout v1ca.key -out v1ca.crt -subj /CN=V1CA -days 2 && \
             openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout v1.key -out v1.csr -subj /CN=v1 && \
             openssl x509 -req -in v1.csr -CA v1ca.crt -CAkey v1ca.key -set_serial 7 -days 2 -out v1.crt",
        ],
    )
    .ok();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "verify garbage",
            vec!["cert", "verify", "garbage.pem", "--ca", "ca.crt"],
        ),
        (
            "verify junk DER",
            vec!["cert", "verify", "junk.der", "--ca", "ca.crt"],
        ),
        (
            "verify v1 against another CA",
            vec!["cert", "verify", "v1.crt", "--ca", "ca.crt"],
        ),
        (
            "verify with a key as the CA",
            vec!["cert", "verify", "dev1.crt", "--ca", "dev2.key"],
        ),
        ("inspect junk", vec!["cert", "inspect", "junk.der"]),
        ("config type error", vec!["serve", "--config", "bad.toml"]),
        (
            "template and fingerprint",
            vec!["serve", "--config", "tmpl.toml"],
        ),
        (
            "key of another certificate",
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cert",
                "localhost.crt",
                "--key",
                "dev1.key",
                "--client-ca",
                "ca.crt",
                "--upstream",
                "http://127.0.0.1:1",
            ],
        ),
        (
            "garbage CRL",
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cert",
                "localhost.crt",
                "--key",
                "localhost.key",
                "--client-ca",
                "ca.crt",
                "--crl",
                "garbage.pem",
                "--upstream",
                "http://127.0.0.1:1",
            ],
        ),
        (
            "non-loopback admin",
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cert",
                "localhost.crt",
                "--key",
                "localhost.key",
                "--client-ca",
                "ca.crt",
                "--upstream",
                "http://127.0.0.1:1",
                "--admin-listen",
                "0.0.0.0:9",
            ],
        ),
    ];
    for (what, args) in cases {
        let e = w.mg(&args).fails();
        assert!(!e.trim().is_empty(), "{what}: no message");
        assert_no_debug(what, &e);
    }
}
