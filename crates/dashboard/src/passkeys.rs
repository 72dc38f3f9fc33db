//! Passkeys (WebAuthn): the Account page (an operator's passkeys: list, register,
//! remove), sign-in with a passkey on the login page, and the script both use
//! (`static/passkey.js`, embedded; the only script of the dashboard, allowed on those two
//! pages by their content security policy).
//!
//! The relying party is `localhost` on any port: browsers treat `http://localhost` as a
//! secure context, and an IP address cannot be a relying party ID, so passkeys work when
//! the dashboard is opened at `http://localhost:PORT` (the URL `admin login-link` prints).
//! The checks of each ceremony (challenge, origin, signature, user verification, counter)
//! are `webauthn-rs`'s; its state waits in the inventory (`dashboard_ceremonies`) under the
//! SHA-256 of a random handle, for [`CEREMONY_TTL`] seconds, and is taken by the request
//! that finishes it, so it is used once and works across `ca serve` processes sharing one
//! PostgreSQL. A sign-in names the operator first: only that operator's passkeys are
//! offered and accepted, and the store opens the session only if the passkey used is still
//! that operator's (not removed meanwhile). Registration, removal and sign-in are written
//! to the audit log with the actor `dashboard:NAME`.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mtlsgate_store::{Audit, CeremonyKind, NewCeremony, PasskeyRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::pages::{
    authorised, html, message, now, signed_in, unavailable, AppState, Chrome, CSP_WITH_SCRIPT,
};
use crate::session::{self, check_operator, same_origin};
use crate::view;
use crate::DashboardError;

/// The relying party ID.
pub const RP_ID: &str = "localhost";
/// How long a registration or sign-in may take, from its challenge (seconds).
pub const CEREMONY_TTL: i64 = 5 * 60;
/// The script of the passkey ceremonies, embedded.
const JS: &str = include_str!("../static/passkey.js");

/// The relying party: `localhost`, any port.
pub(crate) fn relying_party() -> Result<Webauthn, DashboardError> {
    let origin = Url::parse("http://localhost")
        .map_err(|e| DashboardError::Passkeys(format!("the relying party's origin: {e}")))?;
    WebauthnBuilder::new(RP_ID, &origin)
        .and_then(|b| {
            b.rp_name("mtlsgate fleet dashboard")
                .allow_any_port(true)
                .build()
        })
        .map_err(|e| DashboardError::Passkeys(e.to_string()))
}

pub(crate) fn routes() -> Router<Arc<crate::pages::App>> {
    Router::new()
        .route("/account", get(account))
        .route("/account/passkeys/begin", post(register_begin))
        .route("/account/passkeys/finish", post(register_finish))
        .route("/account/passkeys/{id}/remove", post(remove))
        .route("/login/passkey/begin", post(login_begin))
        .route("/login/passkey/finish", post(login_finish))
        .route("/static/passkey.js", get(script))
}

/// The URL where passkeys work, when a request reached the dashboard under another host
/// name than `localhost` (e.g. `127.0.0.1:8445`); `None` at `localhost`.
pub(crate) fn elsewhere(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let (name, port) = match host.strip_prefix('[') {
        // [::1]:PORT
        Some(rest) => match rest.split_once(']') {
            Some((n, p)) => (n, p.strip_prefix(':')),
            None => (rest, None),
        },
        None => match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    if name.eq_ignore_ascii_case(RP_ID) {
        return None;
    }
    Some(match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            format!("http://localhost:{p}/")
        }
        _ => "http://localhost/".to_string(),
    })
}

/// A user handle for `operator`: stable, and the same in every process (no table needed).
fn user_id(operator: &str) -> Uuid {
    let d = Sha256::digest(format!("mtlsgate-dashboard-operator:{operator}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

/// A JSON answer for the script.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// A refusal for the script: one sentence it shows.
fn refuse(status: StatusCode, why: &str) -> Response {
    answer(status, json!({ "error": why }))
}

/// The answer to a begin request made without the script (a form submitted with
/// JavaScript off).
fn needs_script(back: &str) -> Response {
    message(
        StatusCode::BAD_REQUEST,
        Chrome::anonymous(),
        "JavaScript needed",
        "Passkeys need JavaScript in this browser (the dashboard's own script, /static/passkey.js); nothing was changed.",
        back,
    )
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// A passkey's credential ID as the store keys it (base64url).
fn key_id(k: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(k.cred_id())
}

/// The handle of a new ceremony, and the hash the store keeps.
fn handle() -> (String, String) {
    let h = session::secret();
    let hash = session::hash(&h);
    (h, hash)
}

// ---- the account page ----

struct KeyRow {
    id: String,
    name: String,
    created: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct Account {
    chrome: Chrome,
    operator: String,
    passkeys: Vec<KeyRow>,
    elsewhere: Option<String>,
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
}

async fn account(State(app): AppState, headers: HeaderMap, Query(done): Query<Done>) -> Response {
    let (s, mut chrome) = match signed_in(&app, &headers, "account").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    chrome.notice = match done.done.as_str() {
        "registered" => "Passkey registered: you can sign in with it now.".into(),
        "removed" => "Passkey removed: it no longer signs you in.".into(),
        _ => String::new(),
    };
    let keys = match app.auth.inventory().passkeys_of(&s.operator).await {
        Ok(k) => k,
        Err(e) => return unavailable(e),
    };
    let passkeys = keys
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            name: k.name,
            created: view::when(Some(k.created_at)),
            last_used: k
                .last_used_at
                .map_or_else(|| "never".into(), |t| view::when(Some(t))),
        })
        .collect();
    let mut r = html(
        StatusCode::OK,
        &Account {
            chrome,
            operator: s.operator,
            passkeys,
            elsewhere: elsewhere(&headers),
        },
    );
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_WITH_SCRIPT),
    );
    r
}

// ---- registration ----

#[derive(Deserialize)]
struct RegisterBegin {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Set by the script: without it the form was submitted with JavaScript off.
    #[serde(default)]
    js: String,
}

/// What a registration ceremony keeps.
#[derive(Serialize, Deserialize)]
struct Registering {
    name: String,
    state: PasskeyRegistration,
}

async fn register_begin(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<RegisterBegin>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if f.js != "1" {
        return needs_script("/account");
    }
    if let Some(url) = elsewhere(&headers) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("Passkeys work at {url} only; open the dashboard there and register again."),
        );
    }
    let name = f.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Give the passkey a name of 1 to 64 characters.",
        );
    }
    let inv = app.auth.inventory();
    let existing = match inv.passkeys_of(&s.operator).await {
        Ok(k) => k,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e)),
    };
    let exclude = existing
        .iter()
        .filter_map(|k| URL_SAFE_NO_PAD.decode(&k.id).ok())
        .collect::<Vec<_>>();
    let (options, state) = match app.webauthn.start_passkey_registration(
        user_id(&s.operator),
        &s.operator,
        &s.operator,
        Some(exclude),
    ) {
        Ok(x) => x,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The registration could not start: {e}."),
            )
        }
    };
    keep(
        &app,
        CeremonyKind::Register,
        &s.operator,
        &Registering {
            name: name.to_string(),
            state,
        },
        json!(options),
    )
    .await
}

/// Keeps a ceremony's state and answers the script with its handle and the options for
/// the browser.
async fn keep(
    app: &crate::pages::App,
    kind: CeremonyKind,
    operator: &str,
    state: &impl Serialize,
    options: serde_json::Value,
) -> Response {
    let state = match serde_json::to_string(state) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The passkey challenge could not be kept: {e}."),
            )
        }
    };
    let (h, hash) = handle();
    let t = now();
    let c = NewCeremony {
        hash,
        kind,
        operator: operator.to_string(),
        state,
        expires_at: t + CEREMONY_TTL,
    };
    if let Err(e) = app.auth.inventory().insert_passkey_ceremony(&c, t).await {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e));
    }
    answer(StatusCode::OK, json!({ "ceremony": h, "options": options }))
}

fn inventory_error(e: impl std::fmt::Display) -> String {
    tracing::warn!("dashboard: {e}");
    format!("The inventory could not be reached ({e}); nothing was changed.")
}

#[derive(Deserialize)]
struct Finish {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    credential: String,
}

/// The ceremony a finish request names, if it is still there (it is taken: used once).
async fn take(
    app: &crate::pages::App,
    ceremony: &str,
    kind: CeremonyKind,
) -> Result<(String, String), Response> {
    match app
        .auth
        .inventory()
        .take_passkey_ceremony(&session::hash(ceremony), kind, now())
        .await
    {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "This passkey request is unknown, was used already or took longer than 5 minutes; try again.",
        )),
        Err(e) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e))),
    }
}

async fn register_finish(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<Finish>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (operator, state) = match take(&app, &f.ceremony, CeremonyKind::Register).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if operator != s.operator {
        return refuse(
            StatusCode::FORBIDDEN,
            "This registration was started by another operator; nothing was changed.",
        );
    }
    let Ok(reg) = serde_json::from_str::<Registering>(&state) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The registration's stored state could not be read; try again.",
        );
    };
    let cred: RegisterPublicKeyCredential = match serde_json::from_str(&f.credential) {
        Ok(c) => c,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The browser's answer is not a passkey registration; nothing was changed.",
            )
        }
    };
    let key = match app.webauthn.finish_passkey_registration(&cred, &reg.state) {
        Ok(k) => k,
        Err(e) => {
            tracing::info!("dashboard: {operator}: a passkey registration failed: {e}");
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("The passkey could not be verified ({e}); nothing was changed."),
            );
        }
    };
    let Ok(credential) = serde_json::to_string(&key) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The passkey could not be stored; nothing was changed.",
        );
    };
    let t = now();
    let id = key_id(&key);
    let record = PasskeyRecord {
        id: id.clone(),
        operator: operator.clone(),
        name: reg.name.clone(),
        credential,
        created_at: t,
        last_used_at: None,
    };
    let audit = Audit::new(
        t,
        &format!("dashboard:{operator}"),
        "dashboard-passkey-register",
    )
    .detail(format!("passkey \"{}\" ({id})", reg.name));
    match app.auth.inventory().add_passkey(&record, &audit).await {
        Ok(true) => {
            tracing::info!("dashboard: {operator} registered a passkey");
            answer(
                StatusCode::OK,
                json!({ "next": "/account?done=registered" }),
            )
        }
        Ok(false) => refuse(
            StatusCode::CONFLICT,
            "This passkey is registered already; nothing was changed.",
        ),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e)),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn remove(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = now();
    let audit = Audit::new(
        t,
        &format!("dashboard:{}", s.operator),
        "dashboard-passkey-remove",
    )
    .detail(format!("passkey {id}"));
    match app
        .auth
        .inventory()
        .remove_passkey(&s.operator, &id, &audit)
        .await
    {
        Ok(true) => {
            tracing::info!("dashboard: {} removed a passkey", s.operator);
            Redirect::to("/account?done=removed").into_response()
        }
        Ok(false) => message(
            StatusCode::NOT_FOUND,
            Chrome::anonymous(),
            "No such passkey",
            "You have no passkey with this ID (removed already?); nothing was changed.",
            "/account",
        ),
        Err(e) => unavailable(e),
    }
}

// ---- sign-in ----

#[derive(Deserialize)]
struct LoginBegin {
    #[serde(default)]
    operator: String,
    #[serde(default)]
    js: String,
}

async fn login_begin(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<LoginBegin>,
) -> Response {
    if !same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This request came from another site.",
        );
    }
    if f.js != "1" {
        return needs_script("/login");
    }
    if let Some(url) = elsewhere(&headers) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("Passkeys work at {url} only; open the dashboard there and sign in again."),
        );
    }
    let Ok(operator) = check_operator(f.operator.trim()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Give your operator name: 1 to 64 letters, digits and . _ @ -.",
        );
    };
    let keys = match app.auth.inventory().passkeys_of(&operator).await {
        Ok(k) => k,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e)),
    };
    let keys: Vec<Passkey> = keys
        .iter()
        .filter_map(|k| serde_json::from_str(&k.credential).ok())
        .collect();
    if keys.is_empty() {
        return refuse(
            StatusCode::NOT_FOUND,
            &format!("{operator} has no passkey; sign in with a link (mtlsgate admin login-link --user {operator}) and register one on the Account page."),
        );
    }
    let (options, state) = match app.webauthn.start_passkey_authentication(&keys) {
        Ok(x) => x,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The sign-in could not start: {e}."),
            )
        }
    };
    keep(
        &app,
        CeremonyKind::SignIn,
        &operator,
        &state,
        json!(options),
    )
    .await
}

async fn login_finish(State(app): AppState, headers: HeaderMap, Form(f): Form<Finish>) -> Response {
    if !same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This request came from another site.",
        );
    }
    let (operator, state) = match take(&app, &f.ceremony, CeremonyKind::SignIn).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(state) = serde_json::from_str::<PasskeyAuthentication>(&state) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The sign-in's stored state could not be read; try again.",
        );
    };
    let cred: PublicKeyCredential = match serde_json::from_str(&f.credential) {
        Ok(c) => c,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The browser's answer is not a passkey sign-in.",
            )
        }
    };
    let result = match app.webauthn.finish_passkey_authentication(&cred, &state) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("dashboard: a passkey sign-in as {operator} failed: {e}");
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("The passkey was not accepted ({e}); you are not signed in."),
            );
        }
    };
    let inv = app.auth.inventory();
    // The passkey as stored now: the sign-in counts only if it is still this operator's.
    let id = URL_SAFE_NO_PAD.encode(result.cred_id());
    let stored = match inv.passkeys_of(&operator).await {
        Ok(k) => k.into_iter().find(|k| k.id == id),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e)),
    };
    let Some(mut key) = stored.and_then(|k| serde_json::from_str::<Passkey>(&k.credential).ok())
    else {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "This passkey is not registered for {operator} (removed?); you are not signed in."
            ),
        );
    };
    key.update_credential(&result);
    let Ok(credential) = serde_json::to_string(&key) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The passkey's new state could not be stored; you are not signed in.",
        );
    };
    let t = now();
    let (cookie, new) = session::new_session(t);
    match inv
        .login_with_passkey(&operator, &id, &credential, t, &new)
        .await
    {
        Ok(true) => {
            tracing::info!("dashboard: {operator} signed in with a passkey");
            let mut r = answer(StatusCode::OK, json!({ "next": "/" }));
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&cookie)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(false) => refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "This passkey is not registered for {operator} (removed?); you are not signed in."
            ),
        ),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &inventory_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_static(h));
        m
    }

    #[test]
    fn passkeys_work_at_localhost_only() {
        assert_eq!(elsewhere(&host("localhost:8445")), None);
        assert_eq!(elsewhere(&host("LOCALHOST:1")), None);
        assert_eq!(
            elsewhere(&host("127.0.0.1:8445")).as_deref(),
            Some("http://localhost:8445/")
        );
        assert_eq!(
            elsewhere(&host("[::1]:9000")).as_deref(),
            Some("http://localhost:9000/")
        );
        assert!(relying_party().is_ok());
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_id("alice"), user_id("alice"));
        assert_ne!(user_id("alice"), user_id("bob"));
    }
}
