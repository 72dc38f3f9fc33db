//! The routes: login and logout, overview, pending queue, devices list and CSV, one
//! device, and the POSTs that change a device. Every page but login needs a session; every
//! POST needs a same-origin request and the session's form token, and is checked again by
//! the authority's status machine.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mtlsgate_authority::{Action, Authority, AuthorityError, DeviceStatus};
use mtlsgate_store::{DashboardSession, DeviceQuery, DeviceSort};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::session::{self, same, same_origin};
use crate::view::{self, AuditRow, CertRow, Row};

/// Devices per page of the list.
const PAGE_SIZE: i64 = 50;
/// An active device not seen for this many hours counts as not seen on the overview.
const UNSEEN_HOURS: i64 = 24;
/// Audit records on the overview.
const OVERVIEW_AUDIT: i64 = 15;
/// The stylesheet, embedded.
const CSS: &str = include_str!("../static/dashboard.css");

pub(crate) struct App {
    pub auth: Arc<Authority>,
    /// The WebAuthn relying party (`localhost`, any port) for passkeys.
    pub webauthn: webauthn_rs::Webauthn,
    /// The CA server's URL for the `agent enroll` command the tokens page shows.
    pub enroll_server: Option<String>,
}

pub(crate) type AppState = State<Arc<App>>;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/pending", get(pending))
        .route("/devices", get(devices))
        .route("/devices.csv", get(devices_csv))
        .route("/devices/{id}", get(device))
        .route("/devices/{id}/{action}", post(change))
        .route("/static/dashboard.css", get(css))
        .merge(crate::passkeys::routes())
        .merge(crate::more::routes())
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The content security policy of every page: nothing may run.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The policy of the two pages with the passkey script (login, account): the same, plus
/// scripts from this origin (`/static/passkey.js` only: no inline script) and requests
/// from them to this origin (the ceremonies' POSTs).
pub(crate) const CSP_WITH_SCRIPT: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers on every answer (a page may set its own policy: [`CSP_WITH_SCRIPT`]): nothing may run, be framed, be cached or leak the URL to
/// another site (`same-origin`, not `no-referrer`: with that, Chromium sends `Origin: null`
/// on a form POST, and the Origin check would refuse every form).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// What the layout shows around a page.
pub(crate) struct Chrome {
    pub operator: Option<String>,
    pub csrf: String,
    pub here: &'static str,
    pub pending: i64,
    pub notice: String,
}

impl Chrome {
    pub(crate) fn anonymous() -> Chrome {
        Chrome {
            operator: None,
            csrf: String::new(),
            here: "",
            pending: 0,
            notice: String::new(),
        }
    }
}

/// A page rendered, or the error page when it cannot be.
pub(crate) fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("dashboard: a page could not be rendered: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message {
    chrome: Chrome,
    heading: String,
    text: String,
    back: String,
}

pub(crate) fn message(
    status: StatusCode,
    chrome: Chrome,
    heading: &str,
    text: &str,
    back: &str,
) -> Response {
    html(
        status,
        &Message {
            chrome,
            heading: heading.into(),
            text: text.into(),
            back: back.into(),
        },
    )
}

/// The answer when the inventory fails.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!("dashboard: {e}");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        Chrome::anonymous(),
        "Inventory unavailable",
        &format!("The inventory could not be read: {e}"),
        "/",
    )
}

/// The session of a page request, and the layout for it; or the answer to give instead
/// (to the login page without a session).
pub(crate) async fn signed_in(
    app: &App,
    headers: &HeaderMap,
    here: &'static str,
) -> Result<(DashboardSession, Chrome), Response> {
    let inv = app.auth.inventory();
    let s = match session::session_of(inv, headers, now()).await {
        Ok(Some((_, s))) => s,
        Ok(None) => return Err(Redirect::to("/login").into_response()),
        Err(e) => return Err(unavailable(e)),
    };
    let pending = match inv.pending_count().await {
        Ok(n) => n,
        Err(e) => return Err(unavailable(e)),
    };
    let chrome = Chrome {
        operator: Some(s.operator.clone()),
        csrf: s.csrf.clone(),
        here,
        pending,
        notice: String::new(),
    };
    Ok((s, chrome))
}

/// The session of a POST if it may change anything: same origin, a live session, and its
/// form token. Otherwise the 403 to answer (and nothing changes).
pub(crate) async fn authorised(
    app: &App,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(String, DashboardSession), Response> {
    let refuse = |why: &str| {
        message(
            StatusCode::FORBIDDEN,
            Chrome::anonymous(),
            "Refused",
            why,
            "/",
        )
    };
    if !same_origin(headers) {
        return Err(refuse(
            "This request came from another site; nothing was changed.",
        ));
    }
    let s = match session::session_of(app.auth.inventory(), headers, now()).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(refuse(
                "You are not signed in (or your session ended); nothing was changed.",
            ))
        }
        Err(e) => return Err(unavailable(e)),
    };
    if !same(csrf, &s.1.csrf) {
        return Err(refuse("The form's token does not match your session (reload the page and try again); nothing was changed."));
    }
    Ok(s)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

pub(crate) async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        Chrome::anonymous(),
        "Not found",
        "There is no such page.",
        "/",
    )
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    chrome: Chrome,
    token: String,
    /// Where passkeys work, when this page was opened elsewhere (e.g. at 127.0.0.1).
    passkey_elsewhere: Option<String>,
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

async fn login_page(headers: HeaderMap, Query(q): Query<TokenForm>) -> Response {
    let token = if q.token.starts_with(session::LINK_PREFIX) && q.token.len() < 200 {
        q.token
    } else {
        String::new()
    };
    let mut r = html(
        StatusCode::OK,
        &Login {
            chrome: Chrome::anonymous(),
            token,
            passkey_elsewhere: crate::passkeys::elsewhere(&headers),
        },
    );
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_WITH_SCRIPT),
    );
    r
}

async fn login(State(app): AppState, headers: HeaderMap, Form(f): Form<TokenForm>) -> Response {
    if !same_origin(&headers) {
        return message(
            StatusCode::FORBIDDEN,
            Chrome::anonymous(),
            "Refused",
            "This request came from another site.",
            "/login",
        );
    }
    let t = now();
    let (cookie, new) = session::new_session(t);
    match app
        .auth
        .inventory()
        .login_with_link(&session::hash(&f.token), t, &new)
        .await
    {
        Ok(Some(operator)) => {
            tracing::info!("dashboard: {operator} signed in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, session::set_cookie(&cookie)),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response()
        }
        Ok(None) => message(
            StatusCode::FORBIDDEN,
            Chrome::anonymous(),
            "Link not valid",
            "This login link is unknown, was used already, or has expired. Ask for a new one: mtlsgate admin login-link --user NAME",
            "/login",
        ),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let (hash, _) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = app.auth.inventory().delete_dashboard_session(&hash).await {
        return unavailable(e);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie("")),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

// ---- overview ----

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    by_status: Vec<(&'static str, i64)>,
    pending: i64,
    expiring_day: i64,
    expiring_week: i64,
    expired: i64,
    not_seen: i64,
    unseen_hours: i64,
    root_expires: String,
    intermediate_expires: String,
    revoked: usize,
    crl_expires: String,
    audit: Vec<AuditRow>,
}

fn cert_expiry(der: &[u8], now: i64) -> String {
    match mtlsgate_pki::certinfo::CertInfo::from_der(der) {
        Ok(c) => {
            let t = c.not_after.unix_timestamp();
            format!("{} ({})", view::when(Some(t)), view::relative(t, now))
        }
        Err(_) => "unknown (unreadable certificate)".into(),
    }
}

async fn overview(State(app): AppState, headers: HeaderMap) -> Response {
    let (_, chrome) = match signed_in(&app, &headers, "overview").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = now();
    let inv = app.auth.inventory();
    let counts = match inv.fleet_counts(t, t - UNSEEN_HOURS * 3600).await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let audit = match inv.recent_audit(OVERVIEW_AUDIT).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let revoked = match inv.revoked().await {
        Ok(r) => r.len(),
        Err(e) => return unavailable(e),
    };
    let ca = app.auth.ca();
    html(
        StatusCode::OK,
        &Overview {
            pending: chrome.pending,
            chrome,
            by_status: counts
                .by_status
                .iter()
                .map(|(s, n)| (s.as_str(), *n))
                .collect(),
            expiring_day: counts.expiring_day,
            expiring_week: counts.expiring_week,
            expired: counts.expired,
            not_seen: counts.not_seen,
            unseen_hours: UNSEEN_HOURS,
            root_expires: cert_expiry(&ca.root_der, t),
            intermediate_expires: cert_expiry(&ca.intermediate_der, t),
            revoked,
            // `/v1/crl` signs a CRL when it is fetched (again after any revocation), valid
            // for 7 days: one fetched now has this next update.
            crl_expires: view::when(Some(t + 7 * 86_400)),
            audit: audit.iter().map(AuditRow::of).collect(),
        },
    )
}

// ---- pending ----

struct PendingRow {
    id: String,
    registered: String,
    addr: String,
    fingerprint: String,
}

#[derive(Template)]
#[template(path = "pending.html")]
struct Pending {
    chrome: Chrome,
    devices: Vec<PendingRow>,
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
    #[serde(default)]
    id: String,
}

impl Done {
    /// The notice after an action, from a fixed list of actions.
    fn notice(&self) -> String {
        let what = match self.done.as_str() {
            "approve" => "approved",
            "deny" => "denied",
            "allow" => "allowed again",
            "revoke" => "revoked",
            _ => return String::new(),
        };
        format!("Device {} {what}.", self.id)
    }
}

async fn pending(State(app): AppState, headers: HeaderMap, Query(done): Query<Done>) -> Response {
    let (_, mut chrome) = match signed_in(&app, &headers, "pending").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    chrome.notice = done.notice();
    let q = DeviceQuery {
        status: Some(DeviceStatus::Pending),
        search: None,
        tag: None,
        sort: DeviceSort::FirstSeen,
        descending: false,
        limit: 500,
        offset: 0,
    };
    let (devices, _) = match app.auth.inventory().device_page(&q).await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let devices = devices
        .iter()
        .map(|d| PendingRow {
            id: d.id.clone(),
            registered: view::when(Some(d.first_seen)),
            addr: d.last_addr.clone().unwrap_or_else(|| "-".into()),
            fingerprint: view::key_fingerprint(d),
        })
        .collect();
    html(StatusCode::OK, &Pending { chrome, devices })
}

// ---- devices ----

#[derive(Deserialize, Default, Clone)]
struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    page: Option<i64>,
}

const SORTS: [(&str, &str, DeviceSort); 5] = [
    ("id", "Device ID", DeviceSort::Id),
    ("status", "Status", DeviceSort::Status),
    ("first_seen", "First seen", DeviceSort::FirstSeen),
    ("last_seen", "Last seen", DeviceSort::LastSeen),
    ("expires", "Certificate expiry", DeviceSort::Expires),
];

/// A list query as the store takes it, and as canonical query-string values.
struct Parsed {
    query: DeviceQuery,
    status: String,
    q: String,
    tag: String,
    sort: &'static str,
    dir: &'static str,
    page: i64,
}

fn parse_list(l: &ListQuery) -> Parsed {
    let status = DeviceStatus::parse(l.status.trim());
    let q = l.q.trim().to_ascii_lowercase();
    let tag = l.tag.trim().to_string();
    let (sort_name, _, sort) = SORTS
        .iter()
        .find(|(n, _, _)| *n == l.sort)
        .copied()
        .unwrap_or(SORTS[0]);
    let descending = l.dir == "desc";
    let page = l.page.unwrap_or(1).clamp(1, 1_000_000);
    Parsed {
        query: DeviceQuery {
            status,
            search: (!q.is_empty()).then(|| q.clone()),
            tag: (!tag.is_empty()).then(|| tag.clone()),
            sort,
            descending,
            limit: PAGE_SIZE,
            offset: (page - 1) * PAGE_SIZE,
        },
        status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
        q,
        tag,
        sort: sort_name,
        dir: if descending { "desc" } else { "asc" },
        page,
    }
}

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Parsed {
    /// The filters and order as a query string (without the page).
    fn query_string(&self) -> String {
        format!(
            "status={}&q={}&tag={}&sort={}&dir={}",
            enc(&self.status),
            enc(&self.q),
            enc(&self.tag),
            self.sort,
            self.dir
        )
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct Devices {
    chrome: Chrome,
    tabs: Vec<(&'static str, &'static str, bool)>,
    sorts: Vec<(&'static str, &'static str)>,
    status: String,
    q: String,
    tag: String,
    sort: &'static str,
    dir: &'static str,
    total: i64,
    page: i64,
    pages: i64,
    query: String,
    rows: Vec<Row>,
}

/// The seconds `d`'s certificates are issued for, by the authority's policy.
fn lifetime_of(app: &App, d: &mtlsgate_authority::Device) -> i64 {
    app.auth.lifetime(d.lifetime_secs, &d.tags).whole_seconds()
}

async fn devices(State(app): AppState, headers: HeaderMap, Query(l): Query<ListQuery>) -> Response {
    let (_, chrome) = match signed_in(&app, &headers, "devices").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let p = parse_list(&l);
    let (list, total) = match app.auth.inventory().device_page(&p.query).await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let t = now();
    let mut tabs = vec![("", "All", p.status.is_empty())];
    tabs.extend(
        DeviceStatus::ALL
            .iter()
            .map(|s| (s.as_str(), s.as_str(), p.status == s.as_str())),
    );
    html(
        StatusCode::OK,
        &Devices {
            chrome,
            tabs,
            sorts: SORTS.iter().map(|(n, l, _)| (*n, *l)).collect(),
            query: p.query_string(),
            status: p.status.clone(),
            q: p.q.clone(),
            tag: p.tag.clone(),
            sort: p.sort,
            dir: p.dir,
            total,
            page: p.page,
            pages: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
            rows: list
                .iter()
                .map(|d| Row::of(d, t, lifetime_of(&app, d)))
                .collect(),
        },
    )
}

/// Every device the list's filters select, in its order, as CSV.
async fn devices_csv(
    State(app): AppState,
    headers: HeaderMap,
    Query(l): Query<ListQuery>,
) -> Response {
    if let Err(r) = signed_in(&app, &headers, "devices").await {
        return r;
    }
    let mut p = parse_list(&l);
    // Large pages: each one skips the rows before it (OFFSET), so few pages read far less.
    p.query.limit = 10_000;
    p.query.offset = 0;
    let mut out = String::from(view::CSV_HEADER);
    loop {
        let (list, _) = match app.auth.inventory().device_page(&p.query).await {
            Ok(d) => d,
            Err(e) => return unavailable(e),
        };
        for d in &list {
            out.push_str(&view::csv_line(d));
        }
        if (list.len() as i64) < p.query.limit {
            break;
        }
        p.query.offset += p.query.limit;
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"devices.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

// ---- one device ----

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    chrome: Chrome,
    id: String,
    row: Row,
    first_seen: String,
    last_seen: String,
    serial: String,
    expires: String,
    created_by: String,
    pending: bool,
    fingerprint: String,
    actions: Vec<(&'static str, &'static str)>,
    can_revoke: bool,
    certs: Vec<CertRow>,
    audit: Vec<AuditRow>,
}

async fn device(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let (_, mut chrome) = match signed_in(&app, &headers, "devices").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    chrome.notice = done.notice();
    let d = match app.auth.device(&id).await {
        Ok(d) => d,
        Err(e) if e.kind() == mtlsgate_authority::ErrorKind::NotFound => {
            return message(
                StatusCode::NOT_FOUND,
                chrome,
                "No such device",
                &e.to_string(),
                "/devices",
            )
        }
        Err(e) => return unavailable(e),
    };
    let t = now();
    let status = d.device.status;
    let actions: Vec<(&str, &str)> = [
        (Action::Approve, "approve", "Approve"),
        (Action::Allow, "allow", "Allow again"),
        (Action::Deny, "deny", "Deny"),
    ]
    .into_iter()
    // A revoked device may be allowed to enroll again (it stays revoked until it does).
    .filter(|(a, _, _)| {
        a.sources().contains(&status) || (*a == Action::Allow && status == DeviceStatus::Revoked)
    })
    .map(|(_, n, l)| (n, l))
    .collect();
    let mut audit: Vec<AuditRow> = d.audit.iter().map(AuditRow::of).collect();
    audit.reverse();
    html(
        StatusCode::OK,
        &DevicePage {
            chrome,
            id: d.device.id.clone(),
            row: Row::of(&d.device, t, lifetime_of(&app, &d.device)),
            first_seen: view::when(Some(d.device.first_seen)),
            last_seen: view::when(d.device.last_seen),
            serial: d
                .device
                .cert_serial
                .clone()
                .unwrap_or_else(|| "none".into()),
            expires: view::when(d.device.cert_not_after),
            created_by: d.device.created_by.clone(),
            pending: status == DeviceStatus::Pending,
            fingerprint: view::key_fingerprint(&d.device),
            actions,
            can_revoke: Action::Revoke.sources().contains(&status),
            certs: d.certificates.iter().map(CertRow::of).collect(),
            audit,
        },
    )
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    back: String,
}

async fn change(
    State(app): AppState,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let (_, s) = match authorised(&app, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let action = match action.as_str() {
        "approve" => Action::Approve,
        "deny" => Action::Deny,
        "allow" => Action::Allow,
        "revoke" => Action::Revoke,
        _ => return not_found().await,
    };
    let reason = f.reason.trim();
    if action == Action::Revoke && reason.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            Chrome::anonymous(),
            "Reason needed",
            "Say why the device is revoked; nothing was changed.",
            &format!("/devices/{}", enc(&id)),
        );
    }
    let actor = format!("dashboard:{}", s.operator);
    let reason = (!reason.is_empty()).then_some(reason);
    match app
        .auth
        .set_status(&id, action, &actor, reason, OffsetDateTime::now_utc())
        .await
    {
        Ok(d) => {
            tracing::info!("dashboard: {} {} {}", s.operator, action.as_str(), d.id);
            let back = if f.back == "/pending" {
                "/pending".to_string()
            } else {
                format!("/devices/{}", enc(&d.id))
            };
            let to = format!("{back}?done={}&id={}", action.as_str(), enc(&d.id));
            Redirect::to(&to).into_response()
        }
        Err(e) => {
            let status = match &e {
                AuthorityError::Transition { .. } => StatusCode::CONFLICT,
                e if e.kind() == mtlsgate_authority::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            message(
                status,
                Chrome::anonymous(),
                "Not done",
                &e.to_string(),
                &format!("/devices/{}", enc(&id)),
            )
        }
    }
}
