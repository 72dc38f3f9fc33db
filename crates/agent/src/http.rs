//! The HTTPS client for `mtlsgate ca serve` (contract: `docs/device-lifecycle.md`): one
//! HTTP/1.1 connection per request (hyper over tokio-rustls), JSON bodies, a time limit on
//! the whole exchange, and errors that say what the agent was doing and, when the server
//! refused, the server's own sentence from its `{"error": "…"}` body:
//! `renewal refused by https://ca.example:8444: the device is revoked`.
//!
//! Requests sent (every one with `Host`, `User-Agent: mtlsgate-agent/VERSION` and
//! `Accept`; those with a body with `Content-Type: application/json`):
//!
//! | request | body | auth |
//! |---|---|---|
//! | `POST /v1/enroll` | `{"csr", "token"?, "agent_version", "hostname"?}` | the token in the body, or none |
//! | `GET /v1/enroll/{device_id}` | – | `Authorization: Bearer mtp_…` |
//! | `POST /v1/renew` | `{"csr", "agent_version"}` | mTLS with `client.crt`/`client.key` |
//! | `POST /v1/recover` | `{"device_id", "recovery_token", "csr", "signature", "certificate"}` | the proof in the body |
//! | `GET /v1/ca.pem` | – | none (`Accept: application/x-pem-file`) |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// How long one request may take, connection and TLS handshake included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer the agent reads.
const MAX_ANSWER: usize = 1 << 20;

/// The server's base URL (`--server`): `https://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    text: String,
    authority: String,
    host: String,
    port: u16,
    prefix: String,
}

impl ServerUrl {
    /// Parses an `https://` URL; plain HTTP, user info, queries and fragments are refused.
    pub fn parse(url: &str) -> Result<Self, AgentError> {
        let bad = |reason: &str| AgentError::BadServerUrl {
            url: url.into(),
            reason: reason.into(),
        };
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|_| bad("it is not a URL; write it like https://ca.example.com:8444"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => return Err(bad("the CA server speaks HTTPS only; write https://")),
            _ => {
                return Err(bad(
                    "write it with https://, like https://ca.example.com:8444",
                ))
            }
        }
        let auth = uri.authority().ok_or_else(|| bad("it names no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user names and passwords in the URL are not supported"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(bad("a query or fragment is not allowed in the server URL"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let port = auth.port_u16().unwrap_or(443);
        let prefix = uri.path().trim_end_matches('/').to_string();
        let text = format!("https://{}{}", auth.as_str(), prefix);
        Ok(ServerUrl {
            text,
            authority: auth.as_str().to_string(),
            host: host.to_string(),
            port,
            prefix,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn server_name(&self) -> Result<ServerName<'static>, AgentError> {
        ServerName::try_from(self.host.clone()).map_err(|_| AgentError::BadServerUrl {
            url: self.text.clone(),
            reason: "its host is neither a DNS name nor an IP address".into(),
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the agent was doing when a request failed (the start of its error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Enrollment,
    ApprovalCheck,
    Renewal,
    Recovery,
    CaDownload,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Enrollment => "enrollment",
            Op::ApprovalCheck => "the check for approval",
            Op::Renewal => "renewal",
            Op::Recovery => "recovery",
            Op::CaDownload => "the CA bundle download",
        })
    }
}

/// A request to the server that did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The server answered with an error status; `message` is its `error` sentence.
    #[error("{op} refused by {server}: {message}")]
    Refused {
        op: Op,
        server: String,
        status: u16,
        message: String,
    },
    #[error("{op} failed: cannot reach {server}: {reason}")]
    Unreachable {
        op: Op,
        server: String,
        reason: String,
    },
    #[error("{op} failed: TLS with {server}: {reason}")]
    Tls {
        op: Op,
        server: String,
        reason: String,
        /// The server's certificate was issued by a CA this device does not trust.
        unknown_issuer: bool,
    },
    #[error("{op} failed: {server} did not answer within {secs} s")]
    Timeout { op: Op, server: String, secs: u64 },
    #[error("{op} failed: {server} answered what this agent does not understand: {reason}")]
    BadAnswer {
        op: Op,
        server: String,
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's certificate was issued by a CA this device does not trust.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(
            self,
            ApiError::Tls {
                unknown_issuer: true,
                ..
            }
        )
    }

    /// The server is away or overloaded: worth retrying soon. Refusals and TLS
    /// verification failures are not (the agent still retries them, at the longest
    /// back-off).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::Timeout { .. } => true,
            ApiError::Refused { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ApiError::Tls { .. } | ApiError::BadAnswer { .. } => false,
        }
    }
}

/// `Issued` (contract): what enrollment, approval, renewal and recovery return.
#[derive(Clone, Deserialize)]
pub struct Issued {
    pub device_id: String,
    /// PEM: leaf + intermediate.
    pub certificate: String,
    /// PEM: root + intermediate.
    pub ca_bundle: String,
    pub not_after: i64,
    pub recovery_token: String,
    pub recovery_expires: i64,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("device_id", &self.device_id)
            .field("not_after", &self.not_after)
            .field("recovery_token", &"<secret>")
            .field("recovery_expires", &self.recovery_expires)
            .field("tags", &self.tags)
            .finish()
    }
}

/// The 202 answer: the enrollment waits for an operator's approval.
#[derive(Clone, Deserialize)]
pub struct PendingAnswer {
    pub device_id: String,
    #[serde(default)]
    pub status: String,
    /// Present in the answer to `POST /v1/enroll`.
    #[serde(default)]
    pub poll_token: Option<String>,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer")
            .field("device_id", &self.device_id)
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// The answer to an enrollment or an approval check.
#[derive(Debug)]
pub enum Answer {
    Issued(Issued),
    Pending(PendingAnswer),
}

#[derive(Serialize)]
struct EnrollBody<'a> {
    csr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    agent_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
}

#[derive(Serialize)]
struct RenewBody<'a> {
    csr: &'a str,
    agent_version: &'a str,
}

/// The body of `POST /v1/recover`.
#[derive(Serialize)]
pub(crate) struct RecoverBody<'a> {
    pub device_id: &'a str,
    pub recovery_token: &'a str,
    pub csr: &'a str,
    pub signature: &'a str,
    pub certificate: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Text from the server, safe to print: control characters are written as `\u{…}` (so an
/// answer cannot forge log lines or send escape sequences to a terminal), at most 500
/// characters.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if i >= 500 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The rustls error somewhere in an error's sources, if any.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

/// One server, one TLS configuration.
pub(crate) struct Api {
    server: ServerUrl,
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

impl Api {
    pub fn new(server: &ServerUrl, tls: Arc<ClientConfig>, timeout: Duration) -> Self {
        Api {
            server: server.clone(),
            tls,
            timeout,
        }
    }

    fn tls_error(&self, op: Op, e: &rustls::Error) -> ApiError {
        let (reason, unknown_issuer) = crate::trust::tls_failure(e);
        ApiError::Tls {
            op,
            server: self.server.text.clone(),
            reason,
            unknown_issuer,
        }
    }

    fn unreachable(&self, op: Op, reason: String) -> ApiError {
        ApiError::Unreachable {
            op,
            server: self.server.text.clone(),
            reason,
        }
    }

    fn bad_answer(&self, op: Op, reason: String) -> ApiError {
        ApiError::BadAnswer {
            op,
            server: self.server.text.clone(),
            reason,
        }
    }

    /// Sends one request and reads the whole answer.
    async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        accept: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        match tokio::time::timeout(
            self.timeout,
            self.exchange(op, method, path, bearer, accept, body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout {
                op,
                server: self.server.text.clone(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    async fn exchange(
        &self,
        op: Op,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        accept: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let name = self
            .server
            .server_name()
            .map_err(|e| self.unreachable(op, e.to_string()))?;
        let tcp = tokio::net::TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|e| self.unreachable(op, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match find_rustls(&e) {
                Some(r) => self.tls_error(op, r),
                None => self.unreachable(op, format!("the TLS handshake broke off ({e})")),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.unreachable(op, e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.server.prefix, path))
            .header(http::header::HOST, self.server.authority.as_str())
            .header(
                http::header::USER_AGENT,
                format!("mtlsgate-agent/{}", crate::AGENT_VERSION),
            )
            .header(http::header::ACCEPT, accept);
        if let Some(t) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let has_body = body.is_some();
        if has_body {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.unreachable(op, format!("the request cannot be built ({e})")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| match find_rustls(&e) {
                    Some(r) => self.tls_error(op, r),
                    None => self.unreachable(op, format!("no answer ({e})")),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    self.bad_answer(
                        op,
                        format!("its answer could not be read whole (over 1 MiB, or cut off: {e})"),
                    )
                })?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }

    /// Turns an error status into [`ApiError::Refused`] with the server's sentence.
    fn refused(&self, op: Op, status: StatusCode, body: &[u8]) -> ApiError {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| shown(&b.error))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "HTTP {} {} (without an error message)",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
            });
        ApiError::Refused {
            op,
            server: self.server.text.clone(),
            status: status.as_u16(),
            message,
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, op: Op, body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            self.bad_answer(
                op,
                format!("its JSON does not have the expected fields ({e})"),
            )
        })
    }

    fn answer(&self, op: Op, status: StatusCode, body: &[u8]) -> Result<Answer, ApiError> {
        match status.as_u16() {
            200 | 201 => Ok(Answer::Issued(self.json(op, body)?)),
            202 => Ok(Answer::Pending(self.json(op, body)?)),
            _ => Err(self.refused(op, status, body)),
        }
    }

    fn issued(&self, op: Op, status: StatusCode, body: &[u8]) -> Result<Issued, ApiError> {
        match status.as_u16() {
            200 | 201 => self.json(op, body),
            _ => Err(self.refused(op, status, body)),
        }
    }

    /// `POST /v1/enroll`.
    pub async fn enroll(
        &self,
        csr_pem: &str,
        token: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Answer, ApiError> {
        let body = serde_json::to_vec(&EnrollBody {
            csr: csr_pem,
            token,
            agent_version: crate::AGENT_VERSION,
            hostname,
        })
        .unwrap_or_default();
        let op = Op::Enrollment;
        let (status, b) = self
            .call(
                op,
                Method::POST,
                "/v1/enroll",
                None,
                "application/json",
                Some(body),
            )
            .await?;
        self.answer(op, status, &b)
    }

    /// `GET /v1/enroll/{device_id}` with the poll token.
    pub async fn poll(&self, device_id: &str, poll_token: &str) -> Result<Answer, ApiError> {
        let op = Op::ApprovalCheck;
        let path = format!("/v1/enroll/{device_id}");
        let (status, b) = self
            .call(
                op,
                Method::GET,
                &path,
                Some(poll_token),
                "application/json",
                None,
            )
            .await?;
        self.answer(op, status, &b)
    }

    /// `POST /v1/renew` (the TLS configuration carries the client certificate).
    pub async fn renew(&self, csr_pem: &str) -> Result<Issued, ApiError> {
        let body = serde_json::to_vec(&RenewBody {
            csr: csr_pem,
            agent_version: crate::AGENT_VERSION,
        })
        .unwrap_or_default();
        let op = Op::Renewal;
        let (status, b) = self
            .call(
                op,
                Method::POST,
                "/v1/renew",
                None,
                "application/json",
                Some(body),
            )
            .await?;
        self.issued(op, status, &b)
    }

    /// `POST /v1/recover`.
    pub async fn recover(&self, body: &RecoverBody<'_>) -> Result<Issued, ApiError> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let op = Op::Recovery;
        let (status, b) = self
            .call(
                op,
                Method::POST,
                "/v1/recover",
                None,
                "application/json",
                Some(body),
            )
            .await?;
        self.issued(op, status, &b)
    }

    /// `GET /v1/ca.pem`: the CA bundle, PEM.
    pub async fn ca_pem(&self) -> Result<String, ApiError> {
        let op = Op::CaDownload;
        let (status, b) = self
            .call(
                op,
                Method::GET,
                "/v1/ca.pem",
                None,
                "application/x-pem-file",
                None,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(self.refused(op, status, &b));
        }
        String::from_utf8(b.to_vec())
            .map_err(|_| self.bad_answer(op, "the CA bundle is not PEM text".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://ca.example:8444").expect("url");
        assert_eq!(u.as_str(), "https://ca.example:8444");
        assert_eq!((u.host.as_str(), u.port), ("ca.example", 8444));
        assert_eq!(u.prefix, "");
        let u = ServerUrl::parse("https://ca.example/mtlsgate/").expect("url");
        assert_eq!(u.as_str(), "https://ca.example/mtlsgate");
        assert_eq!((u.port, u.prefix.as_str()), (443, "/mtlsgate"));
        let u = ServerUrl::parse("https://[::1]:8444").expect("url");
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:8444")
        );
        assert!(u.server_name().is_ok());
        for bad in [
            "http://ca.example",
            "ca.example:8444",
            "https://user:pw@ca.example",
            "https://ca.example/?x=1",
            "https://ca.example/#top",
            "",
        ] {
            let e = ServerUrl::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid --server `"), "{e}");
        }
    }

    #[test]
    fn server_text_is_shown_without_control_characters() {
        assert_eq!(shown("the device is revoked"), "the device is revoked");
        assert_eq!(shown("a\nb\u{1b}[31m"), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(shown("l’appareil « x »"), "l’appareil « x »");
        assert_eq!(shown(&"x".repeat(600)).chars().count(), 501);
    }

    #[test]
    fn refusals_carry_the_server_sentence_after_what_was_done() {
        let api = Api::new(
            &ServerUrl::parse("https://ca.example:8444").expect("url"),
            crate::trust::config_with_verifier(Arc::new(crate::trust::PinnedRootVerifier::new(
                [0; 32],
            )))
            .expect("cfg"),
            DEFAULT_TIMEOUT,
        );
        let e = api.refused(
            Op::Renewal,
            StatusCode::FORBIDDEN,
            br#"{"error": "the device is revoked"}"#,
        );
        assert_eq!(
            e.to_string(),
            "renewal refused by https://ca.example:8444: the device is revoked"
        );
        assert_eq!(e.status(), Some(403));
        assert!(!e.is_transient());
        let e = api.refused(Op::Enrollment, StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(
            e.to_string(),
            "enrollment refused by https://ca.example:8444: HTTP 502 Bad Gateway (without an error message)"
        );
        assert!(e.is_transient());
    }
}
