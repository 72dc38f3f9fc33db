//! Login links, sessions, and what every POST must show: the session's form token and a
//! same-origin `Origin` (or `Sec-Fetch-Site`).
//!
//! Secrets (link tokens, session cookies, form tokens) are 32 random bytes in hex; the
//! store keeps the SHA-256 of link tokens and session cookies only. A link is used once,
//! atomically, by the POST of its login page (a GET that a mail scanner or a link preview
//! makes uses nothing).

use http::header::{COOKIE as COOKIE_HEADER, HOST, ORIGIN};
use http::HeaderMap;
use mtlsgate_store::{Audit, DashboardSession, Inventory, NewSession};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::DashboardError;

/// The session cookie: `__Host-` (no Domain, Path=/, Secure), HttpOnly, SameSite=Strict.
pub const COOKIE: &str = "__Host-mtlsgate_session";
/// Prefix of login link tokens.
pub const LINK_PREFIX: &str = "mtd_";
/// How long a login link stays usable by default (seconds).
pub const LINK_TTL: i64 = 10 * 60;
/// How long a session lasts (seconds).
pub const SESSION_TTL: i64 = 8 * 60 * 60;

/// 32 random bytes, hex.
pub(crate) fn secret() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 hex of a secret: what the store keeps.
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks an operator's name: 1–64 letters, digits and `. _ @ -`.
pub fn check_operator(name: &str) -> Result<String, DashboardError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(name.to_string())
    } else {
        Err(DashboardError::BadOperator(name.into()))
    }
}

/// A login link just made.
pub struct LoginLink {
    /// The token (`mtd_…`); shown once, stored hashed.
    pub token: String,
    pub expires_at: i64,
}

/// Makes a one-time login link for `operator`, valid `ttl` seconds from `now`, recorded in
/// the audit log as made by `actor`.
pub async fn create_login_link(
    inv: &Inventory,
    operator: &str,
    ttl: i64,
    actor: &str,
    now: i64,
) -> Result<LoginLink, DashboardError> {
    let operator = check_operator(operator)?;
    if !(60..=86_400).contains(&ttl) {
        return Err(DashboardError::BadLifetime);
    }
    let token = format!("{LINK_PREFIX}{}", secret());
    let expires_at = now + ttl;
    let audit = Audit::new(now, actor, "dashboard-login-link")
        .detail(format!("for operator {operator}, valid {} min", ttl / 60));
    inv.insert_login_link(&hash(&token), &operator, now, expires_at, &audit)
        .await?;
    Ok(LoginLink { token, expires_at })
}

/// The session cookie's value in a request, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The session of a request, if its cookie names a live one.
pub(crate) async fn session_of(
    inv: &Inventory,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<(String, DashboardSession)>, DashboardError> {
    let Some(c) = cookie(headers) else {
        return Ok(None);
    };
    let h = hash(&c);
    Ok(inv.dashboard_session(&h, now).await?.map(|s| (h, s)))
}

/// A new session: the cookie's value and what the store keeps.
pub(crate) fn new_session(now: i64) -> (String, NewSession) {
    let value = secret();
    let s = NewSession {
        hash: hash(&value),
        csrf: secret(),
        created_at: now,
        expires_at: now + SESSION_TTL,
    };
    (value, s)
}

/// `Set-Cookie` for a session cookie (`value` empty: the cookie is removed).
pub(crate) fn set_cookie(value: &str) -> String {
    let age = if value.is_empty() { 0 } else { SESSION_TTL };
    format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={age}")
}

/// Whether a POST comes from a page of this dashboard: its `Origin` is this host's (a
/// browser sends it with every form POST), or, without one, `Sec-Fetch-Site` says
/// same-origin, or neither is there (not a browser: the form token still decides).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    match headers.get(ORIGIN).map(|o| o.to_str().ok()) {
        Some(Some(origin)) => host.is_some_and(|h| origin == format!("http://{h}")),
        Some(None) => false,
        None => headers
            .get("sec-fetch-site")
            .map(|v| v.as_bytes() == b"same-origin" || v.as_bytes() == b"none")
            .unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn operator_names() {
        assert!(check_operator("alice").is_ok());
        assert!(check_operator("a.b_c@d-e").is_ok());
        for bad in ["", "a b", "dashboard:x", "<script>", &"a".repeat(65)] {
            assert!(check_operator(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE_HEADER,
            HeaderValue::from_static("a=1; __Host-mtlsgate_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE_HEADER,
            HeaderValue::from_static("mtlsgate_session=abc"),
        );
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("localhost:8445"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://localhost:8445"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.remove(ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn comparison() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }

    #[test]
    fn the_cookie_has_every_attribute() {
        let c = set_cookie("x");
        for a in [
            "__Host-mtlsgate_session=x",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(c.contains(a), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
