//! EST (RFC 7030, updated by RFC 8951) under `/.well-known/est/` and
//! `/.well-known/est/LABEL/`: the wire format only. Each handler reads EST's shapes (base64
//! PKCS#10 bodies, HTTP Basic credentials, the TLS client certificate), calls the same
//! authority functions the agent's JSON endpoints call — one code path for tokens, device
//! ID binding, the approval queue and the inventory — and answers in EST's shapes:
//! certs-only CMS in base64, and refusals as a status with a plain-text sentence
//! (401 with `WWW-Authenticate`, 202 with `Retry-After` while a device waits for approval).
//!
//! A label selects which tokens may enroll there: an enrollment under
//! `/.well-known/est/LABEL/` needs a token carrying the tag LABEL, and a re-enrollment
//! there a device that has it.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use mtlsgate_authority::{AuthorityError, BootstrapRequest, EnrollRequest, Enrolled, Seen};
use mtlsgate_pki::pki_types::UnixTime;
use mtlsgate_pki::verify::{Purpose, Verifier};
use mtlsgate_pki::{certinfo::CertInfo, est as der_shapes, pemfile};
use time::OffsetDateTime;

use crate::api::App;
use crate::error::{status_of, RETRY_AFTER_TOO_MANY, RETRY_AFTER_UNAVAILABLE};
use crate::listener::{ClientChain, LoggedDevice, RemoteAddr};

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "Basic realm=\"mtlsgate EST\", charset=\"UTF-8\"";
const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
const CACERTS: &str = "application/pkcs7-mime";
const CSRATTRS: &str = "application/csrattrs";

/// Base64 as EST clients send it: standard alphabet, padding optional; line breaks and
/// other white space are removed before decoding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The EST routes, merged into the API's router.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/{label}/cacerts", get(cacerts))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/{label}/csrattrs", get(csrattrs))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route(
            "/.well-known/est/{label}/simpleenroll",
            post(simpleenroll_at),
        )
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route(
            "/.well-known/est/{label}/simplereenroll",
            post(simplereenroll_at),
        )
}

/// A refused EST request: a status and a sentence, sent as plain text (RFC 7030 §4.2.3).
#[derive(Debug)]
pub(crate) struct EstError {
    status: StatusCode,
    message: String,
}

impl EstError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        EstError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl From<AuthorityError> for EstError {
    fn from(e: AuthorityError) -> Self {
        let status = status_of(e.kind());
        if status.is_server_error() {
            tracing::warn!("{e}");
        }
        EstError::new(status, e.to_string())
    }
}

impl IntoResponse for EstError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            format!("{}\n", self.message),
        )
            .into_response();
        let h = r.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(REALM),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                h.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_TOO_MANY),
                );
            }
            _ => {}
        }
        r
    }
}

type Result<T, E = EstError> = std::result::Result<T, E>;

/// `der` as base64 in lines of 64 characters, as RFC 7030's examples and `openssl base64`
/// write it (some clients' decoders want the line breaks).
fn base64_lines(der: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(flat.len() + flat.len() / 64 + 1);
    for chunk in flat.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is whole characters.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A successful answer: `der` in base64 with EST's content type.
fn answer(content_type: &'static str, der: &[u8], device: Option<&str>) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            ),
            (
                http::header::HeaderName::from_static("content-transfer-encoding"),
                HeaderValue::from_static("base64"),
            ),
        ],
        base64_lines(der),
    )
        .into_response();
    if let Some(d) = device {
        r.extensions_mut().insert(LoggedDevice(d.to_string()));
    }
    r
}

/// The label of a labelled path, checked as a tag.
fn label(raw: &str) -> Result<String> {
    mtlsgate_authority::check_tag(raw).map_err(|e| {
        EstError::new(
            StatusCode::NOT_FOUND,
            format!("there is no EST label `{}` here: {e}", raw.escape_default()),
        )
    })
}

/// The CSR of a request body: base64 DER (with or without line breaks; any
/// `Content-Transfer-Encoding` is ignored, as RFC 8951 asks), or PEM.
fn csr(body: Result<Bytes, BytesRejection>) -> Result<Vec<u8>> {
    let body = body
        .map_err(|e| EstError::new(e.status(), format!("the request body cannot be read: {e}")))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EstError::bad_request(
            "the request has no body: it should be a PKCS#10 certificate request in base64 (Content-Type: application/pkcs10)",
        ));
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if body[start..].starts_with(b"-----BEGIN") {
        return Ok(body.to_vec());
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    LENIENT.decode(&compact).map_err(|e| {
        EstError::bad_request(format!(
            "the request body is not base64 (a PKCS#10 certificate request in base64 is expected): {e}"
        ))
    })
}

/// HTTP Basic credentials: (user, password).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| EstError::unauthorized("the Authorization header is not readable text"))?;
    let Some((scheme, rest)) = v.trim().split_once(' ') else {
        return Err(EstError::unauthorized(
            "the Authorization header should be `Basic` followed by base64 of user:password",
        ));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(EstError::unauthorized(format!(
            "this EST server takes HTTP Basic credentials (the enrollment token as the password), not `{}`",
            scheme.escape_default()
        )));
    }
    let raw = LENIENT.decode(rest.trim()).map_err(|_| {
        EstError::unauthorized("the Basic credentials are not base64 of user:password")
    })?;
    let text = String::from_utf8(raw)
        .map_err(|_| EstError::unauthorized("the Basic credentials are not UTF-8 text"))?;
    let (user, pass) = text.split_once(':').ok_or_else(|| {
        EstError::unauthorized("the Basic credentials have no `:` between user and password")
    })?;
    Ok(Some((user.trim().to_string(), pass.trim().to_string())))
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect())
}

/// The first certificate of a PEM chain, as DER.
fn leaf_der(chain_pem: &str) -> Result<Vec<u8>> {
    pemfile::parse_blocks("the issued certificate", chain_pem.as_bytes())
        .ok()
        .and_then(|blocks| {
            blocks
                .into_iter()
                .find(|b| b.label == "CERTIFICATE")
                .map(|b| b.der)
        })
        .ok_or_else(|| {
            EstError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the issued certificate could not be read back",
            )
        })
}

fn certs_only(der: &[u8], device: &str) -> Result<Response> {
    let cms = der_shapes::certs_only(&[der])
        .map_err(|e| EstError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(answer(CERTS_ONLY, &cms, Some(device)))
}

// ---- endpoints ----

/// `GET cacerts`: the root and the intermediate as certs-only CMS.
async fn cacerts(State(app): State<Arc<App>>) -> Result<Response> {
    let ca = app.auth.ca();
    let cms = der_shapes::certs_only(&[ca.intermediate_der.as_slice(), ca.root_der.as_slice()])
        .map_err(|e| EstError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(answer(CACERTS, &cms, None))
}

/// `GET csrattrs`: what this CA wants in a CSR.
async fn csrattrs() -> Result<Response> {
    let der = der_shapes::csr_attributes()
        .map_err(|e| EstError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(answer(CSRATTRS, &der, None))
}

async fn simpleenroll(
    State(app): State<Arc<App>>,
    Extension(addr): Extension<RemoteAddr>,
    Extension(chain): Extension<ClientChain>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    enroll(&app, addr, &chain, None, &headers, body).await
}

async fn simpleenroll_at(
    State(app): State<Arc<App>>,
    Extension(addr): Extension<RemoteAddr>,
    Extension(chain): Extension<ClientChain>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let l = label(&raw)?;
    enroll(&app, addr, &chain, Some(l), &headers, body).await
}

/// `POST simpleenroll`: a PKCS#10 request with an enrollment token as the Basic password
/// (the user name, when given, is the device ID asked for), or, without credentials, over
/// mTLS with a bootstrap certificate (`ca serve --est-bootstrap-ca`).
async fn enroll(
    app: &App,
    addr: RemoteAddr,
    chain: &ClientChain,
    label: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let Some((user, token)) = basic(headers)? else {
        if let (Some(bootstrap), false) = (&app.est_bootstrap, chain.0.is_empty()) {
            return bootstrapped(app, bootstrap, chain, addr, label, headers, body).await;
        }
        return Err(EstError::unauthorized(
            "enrollment needs credentials: HTTP Basic with an enrollment token as the password (the user name may be the device ID)",
        ));
    };
    if token.is_empty() {
        return Err(EstError::unauthorized(
            "the Basic password is empty: it should be an enrollment token (`mtlsgate token create`)",
        ));
    }
    let csr = csr(body)?;
    let r = EnrollRequest {
        csr,
        token: Some(token),
        agent_version: user_agent(headers),
        hostname: None,
        addr: Some(addr.0.ip().to_string()),
        device_id: (!user.is_empty()).then_some(user),
        label,
    };
    enrolled(app.auth.enroll(r, OffsetDateTime::now_utc()).await?)
}

/// A device with a bootstrap certificate (no Basic credentials): verified against the
/// bootstrap CAs, then into the approval queue under the ID its certificate names; the
/// same request again collects the certificate once an operator approved it.
async fn bootstrapped(
    app: &App,
    bootstrap: &Verifier,
    chain: &ClientChain,
    addr: RemoteAddr,
    label: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let now = OffsetDateTime::now_utc();
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    bootstrap
        .verify(&chain.0, Purpose::Client, at)
        .map_err(|f| {
            EstError::unauthorized(format!(
                "the client certificate is not one this CA takes for EST bootstrap: {f}"
            ))
        })?;
    let info = CertInfo::from_der(&chain.0[0]).map_err(|e| {
        EstError::unauthorized(format!("the bootstrap certificate cannot be read: {e}"))
    })?;
    let device_id = info
        .common_name
        .clone()
        .filter(|cn| !cn.trim().is_empty())
        .ok_or_else(|| {
            EstError::unauthorized(format!(
                "the bootstrap certificate {} names no device (it has no CN)",
                info.subject
            ))
        })?;
    let csr = csr(body)?;
    let r = BootstrapRequest {
        csr,
        device_id,
        bootstrap_subject: info.subject.clone(),
        tag: label,
        agent_version: user_agent(headers),
        addr: Some(addr.0.ip().to_string()),
    };
    enrolled(app.auth.enroll_bootstrapped(r, now).await?)
}

/// The answer to an enrollment: the certificate, or 202 while the device waits.
fn enrolled(e: Enrolled) -> Result<Response> {
    match e {
        Enrolled::Issued(i) => certs_only(&leaf_der(&i.certificate)?, &i.device_id),
        Enrolled::Pending {
            device_id,
            retry_after,
            ..
        } => {
            let mut r = (
                StatusCode::ACCEPTED,
                [(http::header::RETRY_AFTER, HeaderValue::from(retry_after))],
                format!("device {device_id} waits for an operator's approval; send the same request again later\n"),
            )
                .into_response();
            r.extensions_mut().insert(LoggedDevice(device_id));
            Ok(r)
        }
    }
}

async fn simplereenroll(
    State(app): State<Arc<App>>,
    Extension(addr): Extension<RemoteAddr>,
    Extension(chain): Extension<ClientChain>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    reenroll(&app, addr, chain, None, &headers, body).await
}

async fn simplereenroll_at(
    State(app): State<Arc<App>>,
    Extension(addr): Extension<RemoteAddr>,
    Extension(chain): Extension<ClientChain>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let l = label(&raw)?;
    reenroll(&app, addr, chain, Some(l), &headers, body).await
}

/// `POST simplereenroll`: over mTLS with the device's current certificate; the new
/// certificate keeps the device's subject and names (RFC 7030 §4.2.2) whatever the CSR
/// asks; the key may change. The authority's renewal decides, as for the agent.
async fn reenroll(
    app: &App,
    addr: RemoteAddr,
    chain: ClientChain,
    label: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    if chain.0.is_empty() {
        return Err(EstError::unauthorized(
            "re-enrollment needs the device's current certificate as the TLS client certificate",
        ));
    }
    let csr = csr(body)?;
    if let Some(label) = &label {
        // Only a device carrying the label's tag re-enrolls under it.
        let device = CertInfo::from_der(&chain.0[0])
            .ok()
            .and_then(|i| i.device_id)
            .map(|d| d.to_ascii_lowercase());
        if let Some(id) = device {
            let tagged = match app.auth.device(&id).await {
                Ok(d) => d.device.tags.iter().any(|t| t == label),
                Err(_) => false,
            };
            if !tagged {
                return Err(EstError::new(
                    StatusCode::FORBIDDEN,
                    format!("device {id} does not have the tag of EST label `{label}`"),
                ));
            }
        }
    }
    let seen = Seen {
        now: OffsetDateTime::now_utc(),
        addr: Some(addr.0.ip().to_string()),
        agent_version: user_agent(headers),
    };
    let issued = app.auth.renew(&chain.0, &csr, seen).await?;
    certs_only(&leaf_der(&issued.certificate)?, &issued.device_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_with_or_without_line_breaks_and_padding() {
        let der = b"\x30\x82\x01\x0a some bytes of a request".to_vec();
        let flat = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines = base64_lines(&der);
        let unpadded = flat.trim_end_matches('=').to_string();
        for body in [flat.clone(), lines, unpadded, format!("\r\n{flat}\r\n")] {
            assert_eq!(csr(Ok(Bytes::from(body))).expect("decoded"), der);
        }
        let e = csr(Ok(Bytes::from_static(b"not base64 at all!"))).expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not base64"), "{}", e.message);
        let e = csr(Ok(Bytes::from_static(b"  \n"))).expect_err("refused");
        assert!(e.message.contains("no body"), "{}", e.message);
    }

    #[test]
    fn basic_credentials() {
        let mut h = HeaderMap::new();
        assert!(basic(&h).expect("none").is_none());
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("dev1:mtg_secret")
        );
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&v).expect("value"),
        );
        assert_eq!(
            basic(&h).expect("read"),
            Some(("dev1".into(), "mtg_secret".into()))
        );
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            basic(&h).expect_err("refused").status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn every_401_carries_a_challenge() {
        let r = EstError::unauthorized("x").into_response();
        assert_eq!(
            r.headers().get(http::header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static(REALM))
        );
        let r = EstError::bad_request("x").into_response();
        assert!(r.headers().get(http::header::WWW_AUTHENTICATE).is_none());
    }
}
