//! Certificate search: by common name (starting with, or containing, the text) and by
//! serial (hex, with or without colons: a prefix), by status (valid, expired, revoked),
//! paged on the server by the inventory's keyset cursor (oldest first); each row links to
//! its device.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mtlsgate_store::{CertFilter, CertRecord, CertStatus, StoreError};
use serde::Deserialize;

use crate::pages::{enc, html, now, signed_in, unavailable, AppState, Chrome};
use crate::view;

/// Certificates per page.
const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    cn: String,
    /// `prefix` or `contains`.
    #[serde(default)]
    how: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

/// A serial as typed (`1a:2b:…`, `1A2B…`, with spaces) as the inventory writes it: upper
/// case hex without separators; `None` when it is not hex.
fn serial_prefix(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    (hex.bytes().all(|b| b.is_ascii_hexdigit()) && hex.len() <= 64).then_some(hex)
}

struct CertRow {
    serial: String,
    subject: String,
    kind: String,
    device: String,
    not_after: String,
    status: &'static str,
}

impl CertRow {
    fn of(c: &CertRecord, now: i64) -> CertRow {
        CertRow {
            serial: c.serial.clone(),
            subject: c.subject.clone(),
            kind: c.kind.clone(),
            device: c.device_id.clone().unwrap_or_default(),
            not_after: view::when(Some(c.not_after)),
            status: if c.revoked_at.is_some() {
                "revoked"
            } else if c.not_after < now {
                "expired"
            } else {
                "valid"
            },
        }
    }
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct Certificates {
    chrome: Chrome,
    cn: String,
    how: &'static str,
    serial: String,
    status: String,
    error: String,
    rows: Vec<CertRow>,
    /// The query string of this search (without the cursor).
    query: String,
    next: Option<String>,
    paged: bool,
}

pub(crate) async fn page(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let (_, chrome) = match signed_in(&app, &headers, "certificates").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = now();
    let cn = q.cn.trim().to_string();
    let how = if q.how == "contains" {
        "contains"
    } else {
        "prefix"
    };
    let status = CertStatus::parse(q.status.trim());
    let status_text = match status {
        Some(CertStatus::Valid) => "valid",
        Some(CertStatus::Expired) => "expired",
        Some(CertStatus::Revoked) => "revoked",
        None => "",
    };
    let mut error = String::new();
    let serial = serial_prefix(&q.serial);
    if serial.is_none() {
        error = format!(
            "The serial “{}” is not hexadecimal (digits 0-9 and A-F, colons allowed).",
            q.serial.trim()
        );
    }
    let f = CertFilter {
        status,
        kind: None,
        serial_prefix: serial.clone().filter(|s| !s.is_empty()),
        subject_contains: (!cn.is_empty()).then(|| {
            if how == "prefix" {
                format!("CN={cn}")
            } else {
                cn.clone()
            }
        }),
        expiring_before: None,
        now: t,
    };
    let query = format!(
        "cn={}&how={how}&serial={}&status={status_text}",
        enc(&cn),
        enc(serial.as_deref().unwrap_or_default())
    );
    let after = q.after.trim();
    let cursor = (!after.is_empty()).then_some(after);
    let (rows, next) = if error.is_empty() {
        match app
            .auth
            .certificates_page(&f, cursor, Some(PAGE_SIZE))
            .await
        {
            Ok(p) => (p.items.iter().map(|c| CertRow::of(c, t)).collect(), p.next),
            Err(e)
                if matches!(
                    &e,
                    mtlsgate_authority::AuthorityError::Store(StoreError::BadCursor(_))
                ) =>
            {
                error = "That page link is not valid any more; this is the first page.".into();
                match app.auth.certificates_page(&f, None, Some(PAGE_SIZE)).await {
                    Ok(p) => (p.items.iter().map(|c| CertRow::of(c, t)).collect(), p.next),
                    Err(e) => return unavailable(e),
                }
            }
            Err(e) => return unavailable(e),
        }
    } else {
        (Vec::new(), None)
    };
    html(
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        &Certificates {
            chrome,
            cn,
            how,
            serial: serial.unwrap_or_else(|| q.serial.trim().to_string()),
            status: status_text.into(),
            error,
            rows,
            query,
            next,
            paged: cursor.is_some(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_as_typed() {
        assert_eq!(serial_prefix("1a:2B:3c").as_deref(), Some("1A2B3C"));
        assert_eq!(serial_prefix(" 0f 0e ").as_deref(), Some("0F0E"));
        assert_eq!(serial_prefix("").as_deref(), Some(""));
        assert_eq!(serial_prefix("xyz"), None);
    }
}
