//! Enrollment tokens: the list (state, uses, expiry, who made each), making one with the
//! options of `mtlsgate token create` (the secret and the exact `mtlsgate agent enroll`
//! command are in the answer to that POST only: the inventory keeps the token's hash, so
//! no page can show it again), and withdrawing an unused one.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use mtlsgate_authority::TokenRequest;
use mtlsgate_store::Token;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::pages::{authorised, html, now, signed_in, unavailable, App, AppState, Chrome};
use crate::view;

/// Tokens per page.
const PAGE_SIZE: i64 = 50;

/// A token as a row of the list.
struct TokenRow {
    /// The first 16 hex digits of its hash: enough to tell tokens apart, no use to enroll.
    short: String,
    hash: String,
    device: String,
    tags: String,
    state: &'static str,
    detail: String,
    created: String,
    created_by: String,
    expires: String,
    lifetime: String,
    can_withdraw: bool,
}

impl TokenRow {
    fn of(t: &Token, now: i64) -> TokenRow {
        let (state, detail) = match (&t.used_at, &t.used_by) {
            (Some(at), by) => (
                "used",
                format!(
                    "by {} {}",
                    by.as_deref().unwrap_or("an unknown device"),
                    view::when(Some(*at))
                ),
            ),
            (None, _) if t.expires_at <= now => ("expired", String::new()),
            (None, _) => ("unused", String::new()),
        };
        TokenRow {
            short: t.hash.chars().take(16).collect(),
            hash: t.hash.clone(),
            device: t
                .device_id
                .clone()
                .unwrap_or_else(|| "any new device".into()),
            tags: t.tags.join(", "),
            state,
            detail,
            created: view::when(Some(t.created_at)),
            created_by: t.created_by.clone(),
            expires: format!(
                "{} ({})",
                view::when(Some(t.expires_at)),
                view::relative(t.expires_at, now)
            ),
            lifetime: t
                .lifetime_secs
                .map(mtlsgate_pki::certinfo::human_duration)
                .unwrap_or_else(|| "the CA's".into()),
            can_withdraw: state == "unused",
        }
    }
}

/// A token just made: shown in this answer only.
struct Made {
    token: String,
    command: String,
    summary: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct Tokens {
    chrome: Chrome,
    made: Option<Made>,
    error: String,
    form: CreateForm,
    rows: Vec<TokenRow>,
    total: i64,
    page: i64,
    pages: i64,
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    done: String,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    lifetime: String,
}

/// The page: `made` and `error` from a POST, the list's page `page`.
async fn render(
    app: &App,
    mut chrome: Chrome,
    status: StatusCode,
    made: Option<Made>,
    error: String,
    form: CreateForm,
    page: i64,
) -> Response {
    let page = page.clamp(1, 1_000_000);
    let (list, total) = match app
        .auth
        .inventory()
        .tokens_page(PAGE_SIZE, (page - 1) * PAGE_SIZE)
        .await
    {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let t = now();
    chrome.here = "tokens";
    html(
        status,
        &Tokens {
            chrome,
            made,
            error,
            form: CreateForm {
                csrf: String::new(),
                ttl: if form.ttl.is_empty() {
                    "1h".into()
                } else {
                    form.ttl
                },
                ..form
            },
            rows: list.iter().map(|x| TokenRow::of(x, t)).collect(),
            total,
            page,
            pages: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
        },
    )
}

pub(crate) async fn page(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (_, mut chrome) = match signed_in(&app, &headers, "tokens").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if q.done == "withdrawn" {
        chrome.notice = "Token withdrawn: it can no longer be used.".into();
    } else if q.done == "unchanged" {
        chrome.notice = "That token was used or had expired already; nothing changed.".into();
    }
    render(
        &app,
        chrome,
        StatusCode::OK,
        None,
        String::new(),
        CreateForm::default(),
        q.page.unwrap_or(1),
    )
    .await
}

/// Tags as typed: separated by commas or spaces.
fn tags_of(s: &str) -> Vec<String> {
    s.split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) async fn create(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (_, chrome) = match signed_in(&app, &headers, "tokens").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let bad = |chrome, msg: String, f: CreateForm| {
        let app = app.clone();
        async move { render(&app, chrome, StatusCode::BAD_REQUEST, None, msg, f, 1).await }
    };
    let ttl = match mtlsgate_pki::duration::parse_duration(if f.ttl.trim().is_empty() {
        "1h"
    } else {
        &f.ttl
    }) {
        Ok(d) => d,
        Err(e) => return bad(chrome, format!("Valid for: {e}"), f).await,
    };
    let lifetime = match f.lifetime.trim() {
        "" => None,
        l => match mtlsgate_pki::duration::parse_duration(l) {
            Ok(d) => Some(d),
            Err(e) => return bad(chrome, format!("Certificate lifetime: {e}"), f).await,
        },
    };
    let device_id = match f.device_id.trim() {
        "" => None,
        d => Some(d.to_string()),
    };
    let actor = format!("dashboard:{}", s.operator);
    let made = match app
        .auth
        .create_token(
            TokenRequest {
                device_id,
                tags: tags_of(&f.tags),
                ttl,
                lifetime,
            },
            &actor,
            OffsetDateTime::now_utc(),
        )
        .await
    {
        Ok(m) => m,
        Err(e) => return bad(chrome, e.to_string(), f).await,
    };
    tracing::info!("dashboard: {} made an enrollment token", s.operator);
    let server = app
        .enroll_server
        .clone()
        .unwrap_or_else(|| "https://CA-HOST:PORT".into());
    let fingerprint = mtlsgate_pki::verify::fingerprint_sha256(&app.auth.ca().root_der);
    let command = format!(
        "mtlsgate agent enroll --server {server} --root-fingerprint {fingerprint} --token {}",
        made.token
    );
    let mut summary = match &made.device_id {
        Some(id) => format!("For device {id}"),
        None => "For one new device (the CA assigns its ID)".into(),
    };
    summary.push_str(&format!(
        ", single use, valid until {}",
        view::when(Some(made.expires_at))
    ));
    if !made.tags.is_empty() {
        summary.push_str(&format!(
            "; the device gets the tags {}",
            made.tags.join(", ")
        ));
    }
    if let Some(secs) = made.lifetime_secs {
        summary.push_str(&format!(
            "; its certificates live {} each",
            mtlsgate_pki::certinfo::human_duration(secs)
        ));
    }
    summary.push('.');
    render(
        &app,
        chrome,
        StatusCode::OK,
        Some(Made {
            token: made.token.clone(),
            command,
            summary,
        }),
        String::new(),
        CreateForm::default(),
        1,
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct WithdrawForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    hash: String,
}

pub(crate) async fn withdraw(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<WithdrawForm>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let actor = format!("dashboard:{}", s.operator);
    match app
        .auth
        .withdraw_token(&f.hash, &actor, OffsetDateTime::now_utc())
        .await
    {
        Ok(true) => Redirect::to("/tokens?done=withdrawn").into_response(),
        Ok(false) => Redirect::to("/tokens?done=unchanged").into_response(),
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_on_commas_and_spaces() {
        assert_eq!(
            tags_of(" cameras, lobby  floor-2,"),
            ["cameras", "lobby", "floor-2"]
        );
        assert!(tags_of(" , ").is_empty());
    }
}
