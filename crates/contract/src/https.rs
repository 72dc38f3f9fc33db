//! The one HTTPS exchange with the CA server, shared by the agent and the admin client:
//! one HTTP/1.1 connection per request (hyper over tokio-rustls), a time limit on the whole
//! exchange (connection and handshake included), a cap on the answer read, and the
//! reading of a refusal's `{"error": "<sentence>"}` body — made safe to print.
//!
//! Which certificates are trusted, and which client certificate is shown, is the caller's
//! [`ClientConfig`]; this module never builds or loosens one. What a failure means to the
//! caller (which operation failed, whether to retry) is the caller's too: errors here say
//! only what happened on the wire.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use crate::url::ServerUrl;
use crate::wire::ErrorBody;

/// The largest answer read unless [`Client::with_max_answer`] says otherwise.
pub const DEFAULT_MAX_ANSWER: usize = 1 << 20;

/// The most characters of a server's sentence that are shown.
const MAX_SHOWN: usize = 500;

/// An exchange that did not bring an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The TLS handshake or the connection failed with this rustls error (a certificate
    /// that does not verify, an unknown issuer, a refused client certificate …).
    #[error("TLS with {server}: {error}")]
    Tls {
        server: String,
        error: rustls::Error,
    },
    #[error("{server} did not answer within {secs} s")]
    Timeout { server: String, secs: u64 },
    /// An answer came, but not whole.
    #[error("{server} answered what cannot be read: {reason}")]
    BadAnswer { server: String, reason: String },
}

/// One request.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    /// The endpoint's path (`/v1/renew`), appended to the server URL's prefix.
    pub path: &'a str,
    /// `Authorization: Bearer …`.
    pub bearer: Option<&'a str>,
    /// `Authorization: Basic …` of (user, password), as EST takes an enrollment token.
    pub basic: Option<(&'a str, &'a str)>,
    pub accept: &'a str,
    /// The body, sent with `Content-Type: content_type`.
    pub body: Option<Vec<u8>>,
    pub content_type: &'a str,
}

impl<'a> Call<'a> {
    /// `GET path`, accepting JSON.
    pub fn get(path: &'a str) -> Self {
        Call {
            method: Method::GET,
            path,
            bearer: None,
            basic: None,
            accept: "application/json",
            body: None,
            content_type: "application/json",
        }
    }

    /// `POST path` with a JSON body, accepting JSON.
    pub fn post(path: &'a str, body: Vec<u8>) -> Self {
        Call {
            method: Method::POST,
            body: Some(body),
            ..Call::get(path)
        }
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The sentence of a refusal's `{"error": "<sentence>"}` body, made safe to print;
    /// `None` when the body has none.
    pub fn sentence(&self) -> Option<String> {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => Some(shown(&b.error)),
            // EST's refusals are one sentence of plain text (RFC 7030 §4.2.3).
            Err(_) => std::str::from_utf8(&self.body)
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.starts_with('<') && !t.starts_with('{'))
                .map(shown),
        }
        .filter(|m| !m.is_empty())
    }

    /// The server's sentence of a refusal ([`Answer::sentence`]), or, when the body has
    /// none, `HTTP 502 Bad Gateway (without an error message)`.
    pub fn refusal(&self) -> String {
        self.sentence().unwrap_or_else(|| {
            format!(
                "HTTP {} {} (without an error message)",
                self.status.as_u16(),
                self.status.canonical_reason().unwrap_or("")
            )
        })
    }
}

/// One server, one TLS configuration: where requests go and how.
#[derive(Debug, Clone)]
pub struct Client {
    server: ServerUrl,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    max_answer: usize,
    user_agent: String,
}

impl Client {
    /// A client of `server` over `tls` (which should offer ALPN `http/1.1`), with a time
    /// limit on each whole exchange, sending `User-Agent: user_agent`.
    pub fn new(
        server: &ServerUrl,
        tls: Arc<ClientConfig>,
        timeout: Duration,
        user_agent: impl Into<String>,
    ) -> Self {
        Client {
            server: server.clone(),
            tls,
            timeout,
            max_answer: DEFAULT_MAX_ANSWER,
            user_agent: user_agent.into(),
        }
    }

    /// Reads answers of up to `bytes` (default [`DEFAULT_MAX_ANSWER`]).
    pub fn with_max_answer(mut self, bytes: usize) -> Self {
        self.max_answer = bytes;
        self
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request on a new connection and reads the whole answer, whatever its
    /// status, within the time limit.
    pub async fn exchange(&self, call: Call<'_>) -> Result<Answer, ExchangeError> {
        match tokio::time::timeout(self.timeout, self.exchange_unlimited(call)).await {
            Ok(r) => r,
            Err(_) => Err(ExchangeError::Timeout {
                server: self.server.to_string(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    async fn exchange_unlimited(&self, call: Call<'_>) -> Result<Answer, ExchangeError> {
        let server = self.server.as_str();
        let unreachable = |reason: String| ExchangeError::Unreachable {
            server: server.to_string(),
            reason,
        };
        let tls_error = |error: &rustls::Error| ExchangeError::Tls {
            server: server.to_string(),
            error: error.clone(),
        };
        let tcp = tokio::net::TcpStream::connect((self.server.host(), self.server.port()))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server.server_name(), tcp)
            .await
            .map_err(|e| match find_rustls(&e) {
                Some(r) => tls_error(r),
                None => unreachable(format!("the TLS handshake broke off ({e})")),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(call.method)
            .uri(format!("{}{}", self.server.prefix(), call.path))
            .header(http::header::HOST, self.server.authority())
            .header(http::header::USER_AGENT, self.user_agent.as_str())
            .header(http::header::ACCEPT, call.accept);
        if let Some(t) = call.bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some((user, password)) = call.basic {
            let creds =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {creds}"));
        }
        if call.body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, call.content_type);
        }
        let req = req
            .body(Full::new(Bytes::from(call.body.unwrap_or_default())))
            .map_err(|e| unreachable(format!("the request cannot be built ({e})")))?;
        let max = self.max_answer;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| match find_rustls(&e) {
                    Some(r) => tls_error(r),
                    None => unreachable(format!("no answer ({e})")),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| ExchangeError::BadAnswer {
                    server: server.to_string(),
                    reason: format!(
                        "its answer could not be read whole (over {}, or cut off: {e})",
                        size(max)
                    ),
                })?
                .to_bytes();
            Ok(Answer { status, body })
        }
        .await;
        driver.abort();
        result
    }
}

/// `1 MiB`, `64 MiB`, or bytes.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.trailing_zeros() >= 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The rustls error somewhere in an error's sources, if any.
pub fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
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

/// Text from the server, safe to print: trimmed, control characters written as `\u{…}` (so
/// an answer cannot forge log lines or send escape sequences to a terminal), other
/// characters kept as they are, at most 500 characters.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if i >= MAX_SHOWN {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_shown_without_control_characters() {
        assert_eq!(shown(" the device is revoked \n"), "the device is revoked");
        assert_eq!(shown("a\nb\u{1b}[31m"), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(shown("l’appareil « x »"), "l’appareil « x »");
        assert_eq!(shown("invalid tag `a\"b`"), "invalid tag `a\"b`");
        assert_eq!(shown(&"x".repeat(600)).chars().count(), 501);
    }

    #[test]
    fn refusals_give_the_server_sentence_or_the_status() {
        let a = Answer {
            status: StatusCode::FORBIDDEN,
            body: Bytes::from_static(br#"{"error": "the device is revoked\n"}"#),
        };
        assert_eq!(a.refusal(), "the device is revoked");
        for body in [&b"<html>"[..], br#"{"error": " "}"#, b""] {
            let a = Answer {
                status: StatusCode::BAD_GATEWAY,
                body: Bytes::copy_from_slice(body),
            };
            assert_eq!(
                a.refusal(),
                "HTTP 502 Bad Gateway (without an error message)"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
