//! The audit log: newest first, filtered by actor, device, action and a range of days
//! (UTC), the filters kept in the query string, paged on the server by record ID; and the
//! filtered records exported as JSON lines or CSV, streamed a thousand records at a time
//! (the export is never built whole in memory).

use std::pin::Pin;
use std::task::{Context, Poll};

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mtlsgate_store::{AuditEntry, AuditFilter};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::pages::{enc, html, signed_in, unavailable, AppState, Chrome};
use crate::view::{csv_cell, AuditRow};

/// Records per page.
const PAGE_SIZE: i64 = 100;
/// Records per read of an export.
const EXPORT_CHUNK: i64 = 1000;

#[derive(Deserialize, Default, Clone)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    action: String,
    /// First day (`YYYY-MM-DD`, UTC), included.
    #[serde(default)]
    from: String,
    /// Last day (`YYYY-MM-DD`, UTC), included.
    #[serde(default)]
    to: String,
    /// Records below this ID (the next page).
    #[serde(default)]
    before: Option<i64>,
}

/// The start of a day `YYYY-MM-DD` (UTC) in unix seconds.
fn day_start(s: &str) -> Option<i64> {
    let mut p = s.trim().splitn(3, '-');
    let y: i32 = p.next()?.parse().ok()?;
    let m: u8 = p.next()?.parse().ok()?;
    let d: u8 = p.next()?.parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// The filter a query asks for, or the sentence saying what is wrong with it.
fn filter_of(q: &AuditQuery) -> Result<AuditFilter, String> {
    let text = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    let day = |s: &str, what: &str| match s.trim() {
        "" => Ok(None),
        d => day_start(d)
            .map(Some)
            .ok_or_else(|| format!("The {what} day “{d}” is not a date (YYYY-MM-DD).")),
    };
    Ok(AuditFilter {
        actor: text(&q.actor),
        device: text(&q.device).map(|d| d.to_ascii_lowercase()),
        action: text(&q.action),
        since: day(&q.from, "first")?,
        until: day(&q.to, "last")?.map(|t| t + 86_400),
    })
}

impl AuditQuery {
    /// The filters as a query string (without the page).
    fn query_string(&self) -> String {
        format!(
            "actor={}&device={}&action={}&from={}&to={}",
            enc(self.actor.trim()),
            enc(self.device.trim()),
            enc(self.action.trim()),
            enc(self.from.trim()),
            enc(self.to.trim())
        )
    }
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditLog {
    chrome: Chrome,
    actor: String,
    device: String,
    action: String,
    from: String,
    to: String,
    error: String,
    audit: Vec<AuditRow>,
    query: String,
    next: Option<i64>,
    paged: bool,
}

pub(crate) async fn page(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let (_, chrome) = match signed_in(&app, &headers, "audit").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (rows, error) = match filter_of(&q) {
        Ok(f) => match app
            .auth
            .inventory()
            .audit_page(&f, q.before, PAGE_SIZE + 1)
            .await
        {
            Ok(r) => (r, String::new()),
            Err(e) => return unavailable(e),
        },
        Err(e) => (Vec::new(), e),
    };
    let mut rows = rows;
    let next = if rows.len() as i64 > PAGE_SIZE {
        rows.truncate(PAGE_SIZE as usize);
        rows.last().map(|a| a.id)
    } else {
        None
    };
    html(
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        &AuditLog {
            chrome,
            actor: q.actor.trim().into(),
            device: q.device.trim().into(),
            action: q.action.trim().into(),
            from: q.from.trim().into(),
            to: q.to.trim().into(),
            error,
            audit: rows.iter().map(AuditRow::of).collect(),
            query: q.query_string(),
            next,
            paged: q.before.is_some(),
        },
    )
}

/// The chunks of an export as they are read, for the response body.
struct Chunks(mpsc::Receiver<Result<String, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<String, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The export's formats.
#[derive(Clone, Copy)]
enum Format {
    JsonLines,
    Csv,
}

const CSV_HEADER: &str = "id,at,actor,action,device_id,serial,detail\r\n";

fn line(a: &AuditEntry, format: Format) -> String {
    match format {
        Format::JsonLines => {
            let mut s = serde_json::to_string(a).unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        }
        Format::Csv => {
            let cells = [
                a.id.to_string(),
                a.at.to_string(),
                a.actor.clone(),
                a.action.clone(),
                a.device_id.clone().unwrap_or_default(),
                a.serial.clone().unwrap_or_default(),
                a.detail.clone().unwrap_or_default(),
            ];
            let mut s = cells
                .iter()
                .map(|c| csv_cell(c))
                .collect::<Vec<_>>()
                .join(",");
            s.push_str("\r\n");
            s
        }
    }
}

async fn export(app: AppState, headers: HeaderMap, q: AuditQuery, format: Format) -> Response {
    let State(app) = app;
    if let Err(r) = signed_in(&app, &headers, "audit").await {
        return r;
    }
    let f = match filter_of(&q) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Format::Csv = format {
            if tx.send(Ok(CSV_HEADER.to_string())).await.is_err() {
                return;
            }
        }
        let mut before = None;
        loop {
            let rows = match app
                .auth
                .inventory()
                .audit_page(&f, before, EXPORT_CHUNK)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("dashboard: the audit export stopped: {e}");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let chunk: String = rows.iter().map(|a| line(a, format)).collect();
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return; // the browser went away
            }
            match rows.last() {
                Some(a) if rows.len() as i64 == EXPORT_CHUNK => before = Some(a.id),
                _ => return,
            }
        }
    });
    let (ctype, name) = match format {
        Format::JsonLines => ("application/x-ndjson", "audit.jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "audit.csv"),
    };
    (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

pub(crate) async fn export_jsonl(
    app: AppState,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    export(app, headers, q, Format::JsonLines).await
}

pub(crate) async fn export_csv(
    app: AppState,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    export(app, headers, q, Format::Csv).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_filters() {
        assert_eq!(day_start("1970-01-02"), Some(86_400));
        assert_eq!(day_start("2026-02-30"), None);
        assert_eq!(day_start("yesterday"), None);
        let q = AuditQuery {
            actor: " dashboard:alice ".into(),
            device: "CAM-A.d".into(),
            from: "1970-01-02".into(),
            to: "1970-01-02".into(),
            ..AuditQuery::default()
        };
        let f = filter_of(&q).expect("a good filter");
        assert_eq!(f.actor.as_deref(), Some("dashboard:alice"));
        assert_eq!(f.device.as_deref(), Some("cam-a.d"));
        assert_eq!((f.since, f.until), (Some(86_400), Some(2 * 86_400)));
        let bad = AuditQuery {
            to: "2026-13-01".into(),
            ..AuditQuery::default()
        };
        assert!(filter_of(&bad)
            .expect_err("a bad day")
            .contains("2026-13-01"));
    }

    #[test]
    fn csv_lines_quote_what_they_must() {
        let a = AuditEntry {
            id: 7,
            at: 1,
            actor: "dashboard:alice".into(),
            action: "revoke".into(),
            device_id: Some("cam-b.d".into()),
            serial: None,
            detail: Some("stolen, from the \"lobby\"".into()),
        };
        assert_eq!(
            line(&a, Format::Csv),
            "7,1,dashboard:alice,revoke,cam-b.d,,\"stolen, from the \"\"lobby\"\"\"\r\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(line(&a, Format::JsonLines).trim_end()).expect("json");
        assert_eq!(j["actor"], "dashboard:alice");
    }
}
