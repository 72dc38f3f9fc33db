//! The request path, one named stage per function, in the order a request meets them:
//!
//! ```text
//! handle ─► authenticate ─► route ─► authorize ─► rewrite ─► forward ─► (log)
//!   │ 400 cert   │ 400 bad path/Host  │ 403        │ headers     │ 502/504
//!   │            │ 404 no route       │            │             │
//!   └──────────── any refusal ─► responses::rescue (page + metric + log line)
//! ```
//!
//! - [`authenticate`]: the connection's client verdict under the current snapshot
//!   (rules in [`crate::client_auth`]).
//! - [`route`]: Host checks, path normalisation ([`crate::path`]), longest-prefix route.
//! - [`authorize`]: the route's policy ([`crate::policy::Policy::authorize`]).
//! - [`rewrite`]: the upstream request — normalised path, hop-by-hop headers removed,
//!   client-sent identity headers stripped, the gateway's identity headers rendered.
//! - [`crate::forward::forward`]: the upstream exchange, upgrades included.
//!
//! Every stage returns `Result<_, Refusal>`; [`handle`] turns a refusal into its reply in
//! one place and writes one access-log line per request.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::access_log::{self, LogLine};
use crate::client_auth::{CertProblem, Verdict};
use crate::config::{AccessLog, HostHeader};
use crate::conn::{Conn, Tracked};
use crate::forward::{strip_hop_by_hop, ClientUpgrade};
use crate::headers::RenderCtx;
use crate::inventory::InventoryDenial;
use crate::path::{self, NormalPath};
use crate::policy::Denial;
use crate::responses::{rescue, BadRequest, Body, Refusal};
use crate::state::{Route, Snapshot};

/// Handles one request: runs the stages, answers refusals, logs.
pub(crate) async fn handle(conn: &Arc<Conn>, req: Request<Incoming>) -> Response<Tracked> {
    let in_flight = conn.clock.request(!conn.http2);
    let snap = conn.state.load_full();
    let verdict = conn.verdict(&snap);
    // What only the access log needs is kept only when it is on.
    let logging = snap.config.access_log != AccessLog::Off;
    // Shared bytes: keeping them copies no text; the clock is read only when logging.
    let seen = logging.then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    let mut routed: Option<&str> = None;
    let mut close_after = None;
    let resp = match stages(conn, &snap, &verdict, req, &mut routed).await {
        Ok(r) => r,
        Err(refusal) => {
            // HTTP/1 closes by the page's `Connection: close`; HTTP/2 needs a GOAWAY.
            if refusal.closes_connection() && conn.http2 {
                close_after = Some(conn.clone());
            }
            rescue(&refusal, &conn.state.metrics, conn.remote)
        }
    };
    let status = resp.status().as_u16();
    conn.state.metrics.response(status);
    if let Some((started, method, uri)) = &seen {
        // The target as the client sent it (an authority-form CONNECT target has no path).
        let whole;
        let target = match uri.path_and_query() {
            Some(p) => p.as_str(),
            None => {
                whole = uri.to_string();
                whole.as_str()
            }
        };
        access_log::write(
            &snap.config,
            &LogLine {
                conn,
                verdict: &verdict,
                method,
                target,
                route: routed,
                status,
                bytes: hyper::body::Body::size_hint(resp.body()).exact(),
                started: *started,
            },
        );
    }
    resp.map(|b| Tracked::new(b, in_flight, close_after))
}

async fn stages<'s>(
    conn: &Arc<Conn>,
    snap: &'s Snapshot,
    verdict: &Arc<Verdict>,
    req: Request<Incoming>,
    routed: &mut Option<&'s str>,
) -> Result<Response<Body>, Refusal> {
    authenticate(verdict)?;
    let target = route(snap, conn.server, &req)?;
    *routed = Some(&target.route.prefix);
    authorize(conn, verdict, target.route).await?;
    let (up, client_upgrade) = rewrite(conn, snap.generation, verdict, &target, req)?;
    crate::forward::forward(conn, snap, target.route, &target.path, up, client_upgrade).await
}

/// Stage 1: is the client's certificate acceptable at all (connection-wide)?
pub(crate) fn authenticate(verdict: &Verdict) -> Result<(), Refusal> {
    match &verdict.problem {
        None => Ok(()),
        Some(CertProblem::NoCertificate) => Err(Refusal::NoCertificate),
        Some(CertProblem::Invalid(f)) => Err(Refusal::BadCertificate(f.clone())),
    }
}

/// Where a request goes.
pub(crate) struct Target<'s> {
    pub(crate) route: &'s Route,
    pub(crate) path: NormalPath,
    /// nginx's `$host`: from the request target or the Host header, lower-cased, no port.
    pub(crate) host: String,
}

/// Stage 2: checks Host (a Host naming another virtual host than the one the connection's
/// SNI chose is misdirected, 421 as in nginx), normalises the path and finds the route.
pub(crate) fn route<'s>(
    snap: &'s Snapshot,
    server: usize,
    req: &Request<Incoming>,
) -> Result<Target<'s>, Refusal> {
    let host = host_of(req).map_err(Refusal::BadRequest)?;
    if snap.servers.len() > 1 {
        if let Some(named) = snap.server_named(&host) {
            if named != server {
                return Err(Refusal::Misdirected {
                    host: mtlsgate_pki::printable::printable(&host).into_owned(),
                });
            }
        }
    }
    let path =
        path::normalize(req.uri().path()).map_err(|e| Refusal::BadRequest(BadRequest::Path(e)))?;
    let Some(route) = snap.server(server).routes.find(path.decoded()) else {
        return Err(Refusal::NoRoute {
            path: mtlsgate_pki::printable::printable(path.encoded()).into_owned(),
        });
    };
    Ok(Target { route, path, host })
}

/// The Host rules of RFC 9112 §3.2 and RFC 9113 §8.3.1; returns nginx's `$host`.
fn host_of(req: &Request<Incoming>) -> Result<String, BadRequest> {
    let hosts = req.headers().get_all(header::HOST);
    let n = hosts.iter().count();
    if n > 1 {
        return Err(BadRequest::SeveralHosts(n));
    }
    let header = match hosts.iter().next() {
        Some(v) => Some(v.to_str().map_err(|_| BadRequest::BadHost)?),
        None => None,
    };
    let from_target = req.uri().authority().map(|a| a.as_str());
    let chosen = match (req.version(), from_target, header) {
        (Version::HTTP_2, Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(BadRequest::HostMismatch)
        }
        (Version::HTTP_11, _, None) => return Err(BadRequest::NoHost),
        (Version::HTTP_2, None, None) => return Err(BadRequest::NoHost),
        (_, Some(a), _) => a,
        (_, None, Some(h)) => h,
        (_, None, None) => "",
    };
    if chosen.is_empty() {
        return if req.version() == Version::HTTP_10 {
            Ok(String::new())
        } else {
            Err(BadRequest::BadHost)
        };
    }
    let authority: http::uri::Authority = chosen.parse().map_err(|_| BadRequest::BadHost)?;
    if chosen.contains('@') {
        return Err(BadRequest::BadHost);
    }
    Ok(authority.host().to_ascii_lowercase())
}

/// Stage 3: may this client use this route? A device the inventory view does not know is
/// asked about once more after a fresh read (it may have enrolled a moment ago), and while
/// the inventory has not been read at all the answer is 503, not a refusal.
pub(crate) async fn authorize(
    conn: &Conn,
    verdict: &Verdict,
    route: &Route,
) -> Result<(), Refusal> {
    let answer = policy_answer(conn, verdict, route);
    if let (Err(Denial::Inventory(InventoryDenial::Unknown { .. })), Some(inv), Some(device)) = (
        &answer,
        conn.state.inventory.as_deref(),
        conn.identity().and_then(|i| i.device_id()),
    ) {
        // On the heap: rare, and inline it would size every request's future for it.
        Box::pin(inv.catch_up(device)).await;
        return policy_answer(conn, verdict, route).map_err(refusal);
    }
    answer.map_err(refusal)
}

fn policy_answer(conn: &Conn, verdict: &Verdict, route: &Route) -> Result<(), Denial> {
    route.policy.authorize(
        &route.prefix,
        conn.identity(),
        verdict.outcome.is_success(),
        conn.state.inventory.as_deref(),
    )
}

fn refusal(d: Denial) -> Refusal {
    match d {
        Denial::Inventory(InventoryDenial::NotLoaded { location }) => {
            Refusal::InventoryStarting { location }
        }
        d => Refusal::Denied(d),
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Stage 4: the request the upstream receives, and the client's side of an upgrade.
fn rewrite(
    conn: &Conn,
    generation: u64,
    verdict: &Arc<Verdict>,
    target: &Target<'_>,
    req: Request<Incoming>,
) -> Result<(Request<Incoming>, Option<ClientUpgrade>), Refusal> {
    let route = target.route;
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| conn.expect_upgrade());
    let (mut parts, body) = req.into_parts();
    let pq = route.upstream_target(&target.path, parts.uri.query());
    let uri = http::Uri::builder()
        .scheme(route.scheme.clone())
        .authority(route.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| Refusal::BadRequest(BadRequest::Path(path::PathError::NotOriginForm)))?;
    match route.headers.host {
        // The upstream's own host: with no Host header, hyper's client sends the upstream
        // URL's authority — as `Host` over HTTP/1.1, as `:authority` alone over HTTP/2
        // (where a Host header beside it is refused as a duplicate).
        HostHeader::Upstream => {
            parts.headers.remove(header::HOST);
        }
        // The client's (such a route speaks HTTP/1.1 to its upstream: see
        // `UpstreamTls::http2`); an HTTP/2 client names it in `:authority`.
        HostHeader::Client => {
            if parts.version == Version::HTTP_2 {
                if let Some(a) = parts.uri.authority() {
                    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                        parts.headers.entry(header::HOST).or_insert(v);
                    }
                }
            }
        }
    }
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        parts.headers.insert(header::UPGRADE, u);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let request_uri = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let cx = RenderCtx {
        identity: conn.identity(),
        outcome: &verdict.outcome,
        remote: conn.remote,
        remote_ip: &conn.remote_ip,
        host: &target.host,
        request_uri,
        scheme: if conn.tls_protocol.is_empty() {
            "http"
        } else {
            "https"
        },
        tls_protocol: conn.tls_protocol,
        tls_cipher: conn.tls_cipher,
        resumed: conn.resumed,
        now: if route.headers.reads_time {
            OffsetDateTime::now_utc()
        } else {
            OffsetDateTime::UNIX_EPOCH
        },
    };
    let fixed = conn.connection_headers(generation, &route.headers, verdict, &cx);
    route.headers.apply(&mut parts.headers, &cx, Some(&fixed));
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    Ok((Request::from_parts(parts, body), client_upgrade))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// The size of the future `f` returns, read from its type: nothing is called.
    fn future_size<'a, F: Future>(_: impl FnOnce(&'a Arc<Conn>, Request<Incoming>) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is this size for its whole life, and hyper moves it (HTTP/2
    /// spawns a task per stream): the rare steps (a new upstream connection, hyper-util's
    /// pooled request, the inventory's catch-up) are boxed so that they do not size it.
    /// Measured with rustc 1.95: 3,576 bytes in the test build, 3,856 in a release build;
    /// with the new-connection step inline, 5,752 in the test build (this test failed
    /// then). The ceiling leaves room for compiler versions, not for another large step
    /// inline.
    const REQUEST_FUTURE_MAX: usize = 4_500;

    #[test]
    fn a_request_future_does_not_carry_the_rare_steps() {
        let size = future_size(handle);
        println!("pipeline::handle future: {size} bytes");
        assert!(
            size <= REQUEST_FUTURE_MAX,
            "a request's future is {size} bytes (ceiling {REQUEST_FUTURE_MAX}): box a rare step rather than raise it"
        );
    }
}
