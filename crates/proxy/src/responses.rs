//! Every way the gateway refuses or fails a request, as one type ([`Refusal`]), and the one
//! function ([`rescue`]) that turns a refusal into its response page, its metric and its
//! log line. The labels of [`Refusal::LABELS`] are the metric's label values; adding a
//! refusal means adding a variant and a label, nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use mtlsgate_pki::verify::Failure;

use crate::metrics::Metrics;
use crate::path::PathError;
use crate::policy::Denial;
use mtlsgate_pki::printable::printable;

/// The body type of every response the gateway sends.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// A body holding `s`.
pub(crate) fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// Why a request is malformed (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadRequest {
    Path(PathError),
    /// HTTP/1.1 requires a Host header (RFC 9112 §3.2).
    NoHost,
    /// More than one Host header (RFC 9112 §3.2).
    SeveralHosts(usize),
    /// HTTP/2: the Host header names another authority than `:authority` (RFC 9113 §8.3.1).
    HostMismatch,
    /// A Host value that is not a host name, address or port.
    BadHost,
    /// The request body could not be read (a malformed chunked encoding, or the client
    /// went away mid-body).
    Body,
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::Path(p) => write!(f, "{p}"),
            BadRequest::NoHost => {
                f.write_str("the request has no Host header, which HTTP/1.1 requires")
            }
            BadRequest::SeveralHosts(n) => write!(f, "the request has {n} Host headers; send one"),
            BadRequest::HostMismatch => {
                f.write_str("the Host header names another server than the request's :authority")
            }
            BadRequest::BadHost => f.write_str("the Host header is not a host name or address"),
            BadRequest::Body => f.write_str(
                "the request body could not be read (malformed chunked encoding, or the client stopped sending it)",
            ),
        }
    }
}

/// Every refusal and failure of a request.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// `verify_client = require` and no certificate was sent (nginx's 496).
    NoCertificate,
    /// The certificate failed verification (nginx's 495), with why.
    BadCertificate(Failure),
    BadRequest(BadRequest),
    /// No route's prefix matches the (normalised) path.
    NoRoute {
        path: String,
    },
    /// The Host names another virtual host than the one the connection's SNI chose.
    Misdirected {
        host: String,
    },
    /// The route's policy refused the client.
    Denied(Denial),
    /// The route asks the device inventory, which has not been read yet (the gateway is
    /// starting, or its inventory has been unreachable since it started): 503 with
    /// `Retry-After`, never 403, since nothing has refused the device.
    InventoryStarting {
        location: String,
    },
    UpstreamUnreachable {
        upstream: String,
        cause: String,
    },
    UpstreamFailed {
        upstream: String,
        cause: String,
    },
    UpstreamTimeout {
        upstream: String,
        after: Duration,
    },
    /// TLS with an `https://` upstream failed: unknown issuer, name mismatch, our client
    /// certificate refused …
    UpstreamTls {
        upstream: String,
        why: String,
    },
}

impl Refusal {
    /// Metric label values, one per variant, in [`Refusal::slot`] order.
    pub(crate) const LABELS: &'static [&'static str] = &[
        "no_certificate",
        "bad_certificate",
        "bad_request",
        "no_route",
        "denied",
        "upstream_unreachable",
        "upstream_failed",
        "upstream_timeout",
        "upstream_tls",
        "misdirected",
        "inventory_starting",
    ];

    pub(crate) fn slot(&self) -> usize {
        match self {
            Refusal::NoCertificate => 0,
            Refusal::BadCertificate(_) => 1,
            Refusal::BadRequest(_) => 2,
            Refusal::NoRoute { .. } => 3,
            Refusal::Denied(_) => 4,
            Refusal::UpstreamUnreachable { .. } => 5,
            Refusal::UpstreamFailed { .. } => 6,
            Refusal::UpstreamTimeout { .. } => 7,
            Refusal::UpstreamTls { .. } => 8,
            Refusal::Misdirected { .. } => 9,
            Refusal::InventoryStarting { .. } => 10,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoCertificate | Refusal::BadCertificate(_) | Refusal::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::NoRoute { .. } => StatusCode::NOT_FOUND,
            Refusal::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Refusal::Denied(_) => StatusCode::FORBIDDEN,
            Refusal::UpstreamUnreachable { .. }
            | Refusal::UpstreamFailed { .. }
            | Refusal::UpstreamTls { .. } => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::InventoryStarting { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The page title (nginx's wording for the certificate pages).
    pub(crate) fn title(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "No required SSL certificate was sent",
            Refusal::BadCertificate(_) => "The SSL certificate error",
            Refusal::BadRequest(_) => "bad request",
            Refusal::NoRoute { .. } => "no route for this path",
            Refusal::Misdirected { .. } => "misdirected request",
            Refusal::Denied(_) => "access denied",
            Refusal::UpstreamUnreachable { .. } | Refusal::UpstreamFailed { .. } => {
                "upstream unavailable"
            }
            Refusal::UpstreamTls { .. } => "upstream TLS failed",
            Refusal::UpstreamTimeout { .. } => "upstream timed out",
            Refusal::InventoryStarting { .. } => "starting",
        }
    }

    /// The line under the title: what exactly happened, in words (client-controlled text
    /// escaped).
    pub(crate) fn detail(&self) -> Option<String> {
        match self {
            Refusal::NoCertificate => None,
            Refusal::BadCertificate(f) => Some(printable(&f.to_string()).into_owned()),
            Refusal::BadRequest(b) => Some(b.to_string()),
            Refusal::NoRoute { path } => Some(format!("{path} matches no configured route prefix")),
            Refusal::Misdirected { host } => Some(format!(
                "this connection was opened (TLS SNI) for another server than {host}; open a new connection for {host}"
            )),
            Refusal::Denied(d) => Some(d.to_string()),
            Refusal::UpstreamUnreachable { upstream, cause } => Some(format!(
                "the upstream {upstream} cannot be reached ({cause})"
            )),
            Refusal::UpstreamFailed { upstream, cause } => {
                Some(format!("the upstream {upstream} failed ({cause})"))
            }
            Refusal::UpstreamTimeout { upstream, after } => Some(format!(
                "the upstream {upstream} did not answer within {}s",
                after.as_secs_f64()
            )),
            Refusal::UpstreamTls { upstream, why } => Some(format!("{upstream}: {why}")),
            Refusal::InventoryStarting { location } => Some(
                crate::inventory::InventoryDenial::NotLoaded {
                    location: location.clone(),
                }
                .to_string(),
            ),
        }
    }

    /// Whether the connection is closed after the reply: a client whose certificate is
    /// refused gets one answer per connection (nginx closes after its 495/496 pages), and
    /// a malformed request leaves the connection in an unknown state.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::NoCertificate | Refusal::BadCertificate(_) | Refusal::BadRequest(_)
        )
    }
}

/// Turns a refusal into its response, counts it, and logs it (certificate refusals are
/// logged once per connection when verified, not per request).
pub(crate) fn rescue(r: &Refusal, metrics: &Metrics, remote: SocketAddr) -> Response<Body> {
    metrics.refusal(r);
    let detail = r.detail();
    let why = detail.as_deref().unwrap_or(r.title());
    match r {
        Refusal::NoCertificate | Refusal::BadCertificate(_) => {}
        Refusal::BadRequest(_) => tracing::info!(%remote, "bad request: {why}"),
        Refusal::NoRoute { .. } => tracing::debug!(%remote, "no route: {why}"),
        Refusal::Misdirected { .. } => tracing::info!(%remote, "misdirected: {why}"),
        Refusal::Denied(_) => tracing::info!(%remote, "denied: {why}"),
        Refusal::InventoryStarting { .. } => tracing::info!(%remote, "not yet: {why}"),
        Refusal::UpstreamUnreachable { .. }
        | Refusal::UpstreamFailed { .. }
        | Refusal::UpstreamTimeout { .. }
        | Refusal::UpstreamTls { .. } => tracing::warn!(%remote, "{why}"),
    }
    let mut resp = page(
        r.status(),
        r.title(),
        detail.as_deref(),
        r.closes_connection(),
    );
    if let Refusal::InventoryStarting { .. } = r {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A plain-text reply from the gateway itself: `STATUS REASON: TITLE`, then the detail.
pub(crate) fn page(
    status: StatusCode,
    title: &str,
    detail: Option<&str>,
    close: bool,
) -> Response<Body> {
    let mut text = format!(
        "{} {}: {title}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(d) = detail {
        text.push_str(d);
        text.push('\n');
    }
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::SERVER, HeaderValue::from_static("mtlsgate"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The answer to plain HTTP sent to the TLS port, in nginx's words.
pub(crate) fn plain_http_page() -> Response<Body> {
    page(
        StatusCode::BAD_REQUEST,
        "The plain HTTP request was sent to HTTPS port",
        Some("this port speaks HTTPS: use https:// in the URL"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_own_label() {
        let all = [
            Refusal::NoCertificate,
            Refusal::BadCertificate(Failure::Webpki(
                mtlsgate_pki::verify::WebpkiRefusal::Unnamed,
            )),
            Refusal::BadRequest(BadRequest::NoHost),
            Refusal::NoRoute { path: "/x".into() },
            Refusal::Denied(Denial::NoCertificate { prefix: "/".into() }),
            Refusal::UpstreamUnreachable {
                upstream: "u".into(),
                cause: "c".into(),
            },
            Refusal::UpstreamFailed {
                upstream: "u".into(),
                cause: "c".into(),
            },
            Refusal::UpstreamTimeout {
                upstream: "u".into(),
                after: Duration::from_secs(1),
            },
            Refusal::UpstreamTls {
                upstream: "u".into(),
                why: "w".into(),
            },
            Refusal::Misdirected { host: "h".into() },
            Refusal::InventoryStarting {
                location: "l".into(),
            },
        ];
        assert_eq!(all.len(), Refusal::LABELS.len());
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.slot(), i);
        }
    }

    #[test]
    fn certificate_text_in_pages_is_escaped() {
        let r = Refusal::BadCertificate(Failure::SelfSigned {
            subject: "CN=x\r\n200 OK".into(),
        });
        let d = r.detail().unwrap_or_default();
        assert!(!d.contains('\r') && !d.contains('\n'), "{d}");
        assert!(d.contains("x\\x0D\\x0A200 OK"), "{d}");
    }
}
