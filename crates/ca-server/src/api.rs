//! The HTTP API of docs/device-lifecycle.md as an axum router: each handler reads its
//! request (JSON body, path, query, client certificate chain), calls the authority, and
//! writes the answer. No rules live here: the authority decides, and its error's kind
//! gives the status ([`crate::error`]). Every refusal — unreadable JSON, an unknown path,
//! a wrong method included — is `{"error": "<sentence>"}`.
//!
//! Admin endpoints first ask the authority whether the client certificate is an
//! administrator's ([`Authority::check_admin`]): 401 without one, 403 for another kind.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use mtlsgate_authority::{
    Action, Admin, Authority, AuthorityError, CertFilter, CertStatus, DeviceFilter, DeviceIssued,
    DeviceStatus, EnrollRequest, Enrolled, NewTokenSecret, RecoverRequest, Seen, TokenRequest,
    MAX_PAGE,
};
use mtlsgate_pki::pemfile;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::error::ApiError;
use crate::listener::{ClientChain, LoggedDevice, RemoteAddr};
use crate::wire::{
    CaBundle, EnrollBody, ImportBody, Issued, NewToken, Pending, RecoverBody, RenewBody,
    StatusBody, TagsBody, TokenBody,
};

/// The validity (nextUpdate) of the CRLs the server signs.
const CRL_NEXT_UPDATE: Duration = Duration::days(7);
/// A signed CRL is served again for this long while the inventory's revision is the same;
/// any change (a revocation takes a revision) has the next request sign a new one.
const CRL_REUSE: StdDuration = StdDuration::from_secs(5);
/// The largest request body read.
const MAX_BODY: usize = 256 * 1024;
const PEM: &str = "application/x-pem-file";

/// What the handlers share.
pub(crate) struct App {
    pub auth: Arc<Authority>,
    /// The CAs whose client certificates may enroll over EST without a token (into the
    /// approval queue), when `ca serve --est-bootstrap-ca` names any.
    pub est_bootstrap: Option<Arc<mtlsgate_pki::verify::Verifier>>,
    crl: tokio::sync::Mutex<Option<CachedCrl>>,
}

struct CachedCrl {
    revision: i64,
    made: Instant,
    der: Bytes,
    pem: Bytes,
}

impl App {
    pub fn new(auth: Arc<Authority>) -> Self {
        App {
            auth,
            est_bootstrap: None,
            crl: tokio::sync::Mutex::new(None),
        }
    }
}

type AppState = State<Arc<App>>;
type Result<T, E = ApiError> = std::result::Result<T, E>;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v0.2/ca-bundle", get(ca_bundle))
        .route("/v1/ca.pem", get(ca_pem))
        .route("/v1/crl", get(crl))
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/{device_id}", get(poll))
        .route("/v1/renew", post(renew))
        .route("/v1/recover", post(recover))
        .route("/v1/devices", get(devices))
        .route("/v1/certificates", get(certificates))
        .route("/v1/devices/import", post(import))
        .route("/v1/devices/{id}", get(device))
        .route("/v1/devices/{id}/tags", post(tags))
        .route("/v1/devices/{id}/{action}", post(set_status))
        .route("/v1/tokens", post(create_token))
        .merge(crate::est::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

// ---- plumbing ----

/// A JSON answer, with the device it concerns for the log line.
fn json<T: Serialize>(status: StatusCode, body: &T, device: Option<&str>) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the answer could not be written as JSON: {e}"),
            )
            .into_response()
        }
    };
    let mut r = (
        status,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if let Some(d) = device {
        r.extensions_mut().insert(LoggedDevice(d.to_string()));
    }
    r
}

/// The request body as `T` (JSON; the Content-Type is not insisted on).
fn body_required<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T> {
    let b =
        b.map_err(|e| ApiError::new(e.status(), format!("the request body cannot be read: {e}")))?;
    serde_json::from_slice(&b).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not the JSON this endpoint takes: {e}"
        ))
    })
}

/// Like [`body_required`], with an empty body meaning `T::default()`.
fn body<T: DeserializeOwned + Default>(b: Result<Bytes, BytesRejection>) -> Result<T> {
    match &b {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        _ => body_required(b),
    }
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("the request path is not valid: {e}")))
}

/// The contract's `Issued` of the authority's record.
fn issued(i: DeviceIssued) -> Issued {
    Issued {
        device_id: i.device_id,
        serial: i.serial,
        certificate: i.certificate,
        ca_bundle: i.ca_bundle,
        not_after: i.not_after,
        recovery_token: i.recovery_token,
        recovery_expires: i.recovery_expires,
        tags: i.tags,
    }
}

/// The contract's `Pending` answer.
fn pending(device_id: String, poll_token: Option<String>, retry_after: u32) -> Pending {
    Pending {
        device_id,
        status: DeviceStatus::Pending.to_string(),
        poll_token,
        retry_after: Some(u64::from(retry_after)),
    }
}

/// An answer that issued a certificate, naming the device in the log line.
fn issued_answer(status: StatusCode, i: DeviceIssued) -> Response {
    let i = issued(i);
    json(status, &i, Some(&i.device_id))
}

fn seen(addr: RemoteAddr, agent_version: Option<String>) -> Seen {
    Seen {
        now: OffsetDateTime::now_utc(),
        addr: Some(addr.0.ip().to_string()),
        agent_version,
    }
}

/// The client certificate's owner, if it is an administrator.
async fn admin(app: &App, chain: &ClientChain) -> Result<Admin> {
    Ok(app
        .auth
        .check_admin(&chain.0, OffsetDateTime::now_utc())
        .await?)
}

/// A device ID from a path: a short one (`dev1`) gets the CA's device domain.
fn device_id(app: &App, id: &str) -> Result<String> {
    let id = id.trim();
    if id.contains('.') {
        Ok(id.to_ascii_lowercase())
    } else {
        Ok(app.auth.device_id(id)?)
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "this CA server has no endpoint {method} {}",
            mtlsgate_pki::printable::printable(uri.path())
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method} requests",
            mtlsgate_pki::printable::printable(uri.path())
        ),
    )
}

// ---- public ----

async fn healthz() -> &'static str {
    "ok\n"
}

async fn ca_bundle(State(app): AppState) -> Response {
    json(
        StatusCode::OK,
        &CaBundle {
            ca_bundle: app.auth.bundle_pem(),
        },
        None,
    )
}

async fn ca_pem(State(app): AppState) -> Response {
    (
        [(http::header::CONTENT_TYPE, HeaderValue::from_static(PEM))],
        app.auth.bundle_pem(),
    )
        .into_response()
}

/// The CRLs: DER of the intermediate's by default, PEM of both with
/// `Accept: application/x-pem-file`.
async fn crl(State(app): AppState, headers: HeaderMap) -> Result<Response> {
    let wants_pem = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(PEM));
    let (der, pem) = signed_crls(&app).await?;
    Ok(if wants_pem {
        (
            [(http::header::CONTENT_TYPE, HeaderValue::from_static(PEM))],
            pem,
        )
            .into_response()
    } else {
        (
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/pkix-crl"),
            )],
            der,
        )
            .into_response()
    })
}

async fn signed_crls(app: &App) -> Result<(Bytes, Bytes)> {
    let mut cache = app.crl.lock().await;
    let revision = app
        .auth
        .inventory()
        .revision()
        .await
        .map_err(AuthorityError::from)?;
    if let Some(c) = cache.as_ref() {
        if c.revision == revision && c.made.elapsed() < CRL_REUSE {
            return Ok((c.der.clone(), c.pem.clone()));
        }
    }
    let set = app.auth.crl(CRL_NEXT_UPDATE).await?;
    let der = Bytes::from(set.crls.intermediate.clone());
    let pem = Bytes::from(format!(
        "{}{}",
        pemfile::to_pem("X509 CRL", &set.crls.intermediate),
        pemfile::to_pem("X509 CRL", &set.crls.root)
    ));
    *cache = Some(CachedCrl {
        revision,
        made: Instant::now(),
        der: der.clone(),
        pem: pem.clone(),
    });
    Ok((der, pem))
}

// ---- devices ----

async fn enroll(
    State(app): AppState,
    Extension(addr): Extension<RemoteAddr>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let b: EnrollBody = body_required(b)?;
    let r = EnrollRequest {
        csr: b.csr.into_bytes(),
        token: b.token,
        agent_version: b.agent_version,
        hostname: b.hostname,
        addr: Some(addr.0.ip().to_string()),
        ..Default::default()
    };
    Ok(match app.auth.enroll(r, OffsetDateTime::now_utc()).await? {
        Enrolled::Issued(i) => issued_answer(StatusCode::CREATED, i),
        Enrolled::Pending {
            device_id,
            poll_token,
            retry_after,
        } => json(
            StatusCode::ACCEPTED,
            &pending(device_id.clone(), Some(poll_token), retry_after),
            Some(&device_id),
        ),
    })
}

/// `GET /v1/enroll/{device_id}` with `Authorization: Bearer mtp_…`.
async fn poll(
    State(app): AppState,
    Extension(addr): Extension<RemoteAddr>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = path(p)?;
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the approval check needs the poll token of the enrollment answer, sent as `Authorization: Bearer mtp_…`",
            )
        })?;
    let agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("mtlsgate-agent/"))
        .map(str::to_string);
    Ok(match app.auth.poll(&id, token, seen(addr, agent)).await {
        Ok(Enrolled::Issued(i)) => issued_answer(StatusCode::OK, i),
        Ok(Enrolled::Pending {
            device_id,
            retry_after,
            ..
        }) => json(
            StatusCode::ACCEPTED,
            &pending(device_id.clone(), None, retry_after),
            Some(&device_id),
        ),
        Err(e) => logged(ApiError::from(e), &id),
    })
}

/// An error answer that names the device in the log line.
fn logged(e: ApiError, device: &str) -> Response {
    let mut r = e.into_response();
    r.extensions_mut().insert(LoggedDevice(device.to_string()));
    r
}

async fn renew(
    State(app): AppState,
    Extension(addr): Extension<RemoteAddr>,
    Extension(chain): Extension<ClientChain>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let b: RenewBody = body_required(b)?;
    let issued = app
        .auth
        .renew(&chain.0, b.csr.as_bytes(), seen(addr, b.agent_version))
        .await?;
    Ok(issued_answer(StatusCode::OK, issued))
}

async fn recover(
    State(app): AppState,
    Extension(addr): Extension<RemoteAddr>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let b: RecoverBody = body_required(b)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(b.signature.trim())
        .map_err(|_| {
            ApiError::bad_request("`signature` is not base64 (standard alphabet, with padding)")
        })?;
    let id = b.device_id.clone();
    let r = RecoverRequest {
        device_id: b.device_id,
        recovery_token: b.recovery_token,
        csr: b.csr.into_bytes(),
        signature,
        certificate: b.certificate.into_bytes(),
    };
    Ok(
        match app.auth.recover(r, seen(addr, b.agent_version)).await {
            Ok(i) => issued_answer(StatusCode::OK, i),
            Err(e) => logged(ApiError::from(e), &id),
        },
    )
}

// ---- admin ----

/// `GET /v1/devices`. With `limit` or `cursor` the answer is one page,
/// `{"items": [Device], "next": cursor or null}`; without either, every matching device
/// in one array (the answer of the versions before paging), read and sent a page at a time
/// ([`crate::stream`]) so that a million devices do not sit in the server's memory.
#[derive(Debug, Default, Deserialize)]
struct DevicesQuery {
    status: Option<String>,
    /// A duration (`24h`): only devices whose certificate expires within it.
    expiring: Option<String>,
    /// Unix seconds: only devices whose certificate expires before then (a listing that
    /// spans pages gives the same time on each).
    expiring_before: Option<i64>,
    tag: Option<String>,
    /// Devices whose ID starts with this.
    prefix: Option<String>,
    /// Devices whose ID contains this.
    search: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/certificates`: one page, `{"items": [CertRecord], "next": cursor or null}`.
#[derive(Debug, Default, Deserialize)]
struct CertificatesQuery {
    /// valid, revoked or expired.
    status: Option<String>,
    kind: Option<String>,
    /// Serials starting with these hex digits.
    serial: Option<String>,
    /// Subjects containing this text (`CN=dev1`).
    search: Option<String>,
    expiring: Option<String>,
    expiring_before: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A query string's text value: trimmed, `None` when empty.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The page size asked for: 1 to [`MAX_PAGE`].
fn limit(l: Option<u32>) -> Result<Option<u32>> {
    match l {
        Some(n) if n == 0 || n > MAX_PAGE => Err(ApiError::bad_request(format!(
            "invalid limit {n}: a page holds 1 to {MAX_PAGE} rows"
        ))),
        other => Ok(other),
    }
}

/// The end of the `expiring` window (a duration from now) or `expiring_before` (unix
/// seconds), whichever is earlier.
fn expiring_before(within: Option<&str>, before: Option<i64>) -> Result<Option<i64>> {
    let within = match within {
        Some(d) => {
            let d = mtlsgate_pki::duration::parse_duration(d)
                .map_err(|e| ApiError::bad_request(format!("invalid expiring: {e}")))?;
            Some((OffsetDateTime::now_utc() + d).unix_timestamp())
        }
        None => None,
    };
    Ok(match (within, before) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

async fn devices(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    q: Result<Query<DevicesQuery>, QueryRejection>,
) -> Result<Response> {
    admin(&app, &chain).await?;
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("the query string is not valid: {e}")))?;
    let status = match given(&q.status) {
        Some(s) => Some(DeviceStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid status `{}`: expected pending, active, denied, revoked or quarantined",
                mtlsgate_pki::printable::printable(s)
            ))
        })?),
        None => None,
    };
    let tag = match given(&q.tag) {
        Some(t) => Some(mtlsgate_authority::check_tag(t)?),
        None => None,
    };
    let f = DeviceFilter {
        status,
        expiring_before: expiring_before(given(&q.expiring), q.expiring_before)?,
        tag,
        id_prefix: given(&q.prefix).map(str::to_ascii_lowercase),
        id_contains: given(&q.search).map(str::to_ascii_lowercase),
    };
    let size = limit(q.limit)?;
    if size.is_none() && q.cursor.is_none() {
        // Every matching device, as one array sent a page at a time.
        let first = app.auth.devices_page(&f, None, Some(MAX_PAGE)).await?;
        let auth = app.auth.clone();
        let body = crate::stream::array(first, move |cursor| {
            let (auth, f) = (auth.clone(), f.clone());
            async move { auth.devices_page(&f, Some(&cursor), Some(MAX_PAGE)).await }
        });
        return Ok((
            StatusCode::OK,
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            axum::body::Body::from_stream(body),
        )
            .into_response());
    }
    let page = app.auth.devices_page(&f, q.cursor.as_deref(), size).await?;
    Ok(json(StatusCode::OK, &page, None))
}

async fn certificates(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    q: Result<Query<CertificatesQuery>, QueryRejection>,
) -> Result<Response> {
    admin(&app, &chain).await?;
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("the query string is not valid: {e}")))?;
    let status = match given(&q.status) {
        Some(s) => Some(CertStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid status `{}`: expected valid, revoked or expired",
                mtlsgate_pki::printable::printable(s)
            ))
        })?),
        None => None,
    };
    let f = CertFilter {
        status,
        kind: given(&q.kind).map(str::to_ascii_lowercase),
        serial_prefix: given(&q.serial).map(|s| s.replace(':', "").to_ascii_uppercase()),
        subject_contains: given(&q.search).map(str::to_string),
        expiring_before: expiring_before(given(&q.expiring), q.expiring_before)?,
        now: OffsetDateTime::now_utc().unix_timestamp(),
    };
    let page = app
        .auth
        .certificates_page(&f, q.cursor.as_deref(), limit(q.limit)?)
        .await?;
    Ok(json(StatusCode::OK, &page, None))
}

/// PEM certificates of an import's body, as DER.
fn import_certs(what: &str, pem: &str) -> Result<Vec<Vec<u8>>> {
    pemfile::parse_blocks(what, pem.as_bytes())
        .and_then(|b| pemfile::certs_from_blocks(what, b))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn import(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = admin(&app, &chain).await?;
    let b: ImportBody = body_required(b)?;
    let r = mtlsgate_authority::ImportRequest {
        chain: import_certs("`certificate`", &b.certificate)?,
        device_id: b.device_id,
        issuers: match &b.issuers {
            Some(p) => import_certs("`issuers`", p)?,
            None => Vec::new(),
        },
        tags: b.tags,
    };
    let d = app
        .auth
        .import_device(&r, &who.actor, OffsetDateTime::now_utc())
        .await?;
    Ok(json(StatusCode::CREATED, &d, Some(&d.id)))
}

async fn device(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response> {
    admin(&app, &chain).await?;
    let id = device_id(&app, &path(p)?)?;
    let detail = app.auth.device(&id).await?;
    Ok(json(StatusCode::OK, &detail, Some(&id)))
}

async fn set_status(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    p: Result<Path<(String, String)>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = admin(&app, &chain).await?;
    let (id, action) = path(p)?;
    let action = match action.as_str() {
        "approve" => Action::Approve,
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "revoke" => Action::Revoke,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "there is no device action `{}`: use approve, allow, deny, revoke or tags",
                    mtlsgate_pki::printable::printable(other)
                ),
            ))
        }
    };
    let id = device_id(&app, &id)?;
    let b: StatusBody = body(b)?;
    let d = app
        .auth
        .set_status(
            &id,
            action,
            &who.actor,
            b.reason.as_deref(),
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(json(StatusCode::OK, &d, Some(&id)))
}

async fn tags(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = admin(&app, &chain).await?;
    let id = device_id(&app, &path(p)?)?;
    let b: TagsBody = body(b)?;
    let d = app
        .auth
        .tag(
            &id,
            &b.add,
            &b.remove,
            &who.actor,
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(json(StatusCode::OK, &d, Some(&id)))
}

async fn create_token(
    State(app): AppState,
    Extension(chain): Extension<ClientChain>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = admin(&app, &chain).await?;
    let b: TokenBody = body_required(b)?;
    let made = app
        .auth
        .create_token(
            TokenRequest {
                device_id: b.device_id,
                tags: b.tags,
                ttl: Duration::seconds(b.ttl_secs),
                lifetime: b.lifetime_secs.map(Duration::seconds),
            },
            &who.actor,
            OffsetDateTime::now_utc(),
        )
        .await?;
    let NewTokenSecret {
        token,
        expires_at,
        device_id,
        tags,
        lifetime_secs,
    } = made;
    let made = NewToken {
        token,
        expires_at,
        device_id,
        tags,
        lifetime_secs,
    };
    Ok(json(StatusCode::CREATED, &made, made.device_id.as_deref()))
}
