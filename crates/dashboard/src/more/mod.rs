//! The pages beyond the devices: bulk actions on the devices list ([`bulk`]), enrollment
//! tokens ([`tokens`]), certificate search ([`certificates`]) and the audit log with its
//! export ([`audit`]). The same rules as [`crate::pages`]: every page needs a session,
//! every POST a same-origin request and the session's form token, and every change is the
//! authority's, with the actor `dashboard:NAME`.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::pages::App;

mod audit;
mod bulk;
mod certificates;
mod tokens;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/devices/bulk", post(bulk::bulk))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/withdraw", post(tokens::withdraw))
        .route("/certificates", get(certificates::page))
        .route("/audit", get(audit::page))
        .route("/audit.jsonl", get(audit::export_jsonl))
        .route("/audit.csv", get(audit::export_csv))
}

/// The pairs of an `application/x-www-form-urlencoded` body or query, in order (a name
/// may repeat: one `id` per ticked checkbox).
pub(crate) fn form_pairs(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of `name` in `pairs`, or "".
pub(crate) fn first<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_keep_repeated_names_and_decode() {
        let p = form_pairs("csrf=ab&id=dev1.d&id=dev%2B2&reason=lost+in+a%20fire&empty");
        assert_eq!(first(&p, "csrf"), "ab");
        let ids: Vec<&str> = p
            .iter()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(ids, ["dev1.d", "dev+2"]);
        assert_eq!(first(&p, "reason"), "lost in a fire");
        assert_eq!(first(&p, "empty"), "");
        assert_eq!(first(&p, "missing"), "");
    }
}
