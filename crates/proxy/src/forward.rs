//! Forwarding: the upstream exchange (clients in [`crate::upstream`]) with its timeouts (failures
//! become 502 and 504 refusals), and the bridge that carries an upgraded connection
//! (WebSocket) both ways — with the idle timeout, and closed when the client is refused by
//! a newer snapshot. Owns the hop-by-hop rule ([`strip_hop_by_hop`]) for both directions.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client_auth::{recheck, Admitted};
use crate::conn::Conn;
use crate::path::NormalPath;
use crate::responses::{full, BadRequest, Body, Refusal};
use crate::rewound::ClientIo;
use crate::state::{Route, Snapshot};
use crate::upstream::{tls_failure, RequestBody};

/// The client's side of an upgrade: its stream, once the switch (101) is sent.
pub(crate) type ClientUpgrade = tokio::sync::oneshot::Receiver<ClientIo>;

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Stage 5: sends the request upstream and returns its response (or bridges an upgrade).
pub(crate) async fn forward(
    conn: &Arc<Conn>,
    snap: &Snapshot,
    route: &Route,
    path: &NormalPath,
    req: Request<Incoming>,
    client_upgrade: Option<ClientUpgrade>,
) -> Result<Response<Body>, Refusal> {
    let timeout = snap.config.timeouts.upstream_response;
    // Named only in refusals: not formatted for requests that succeed.
    let upstream = || route.authority.to_string();
    let (parts, body) = req.into_parts();
    let (body, body_failed) = RequestBody::new(body, (!conn.http2).then_some(&conn.clock));
    let req = Request::from_parts(parts, body);
    let now = tokio::time::Instant::now();
    // A deadline past what an Instant holds (a timeout of years) is as good as none.
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
    let mut timer = conn.upstream_timers.take(deadline);
    let answered = {
        let exchange = route.upstream.request(req);
        let mut exchange = std::pin::pin!(exchange);
        // As tokio's `timeout`: the exchange first, then the timer.
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Ok(r));
            }
            timer.as_mut().poll(cx).map(Err)
        })
        .await
    };
    conn.upstream_timers.put(timer);
    let mut resp = match answered {
        Ok(Ok(r)) => r,
        Ok(Err(_)) if body_failed.load(Relaxed) => {
            return Err(Refusal::BadRequest(BadRequest::Body));
        }
        Ok(Err(e)) => {
            if let Some(t) = &route.upstream.built_from.tls {
                let name = t
                    .server_name
                    .clone()
                    .unwrap_or_else(|| route.authority.host().to_string());
                if let Some(why) = tls_failure(&e, &name, t.cert.is_some()) {
                    return Err(Refusal::UpstreamTls {
                        upstream: upstream(),
                        why,
                    });
                }
            }
            return Err(if e.is_connect() {
                Refusal::UpstreamUnreachable {
                    upstream: upstream(),
                    cause: root_cause(&e),
                }
            } else {
                Refusal::UpstreamFailed {
                    upstream: upstream(),
                    cause: root_cause(&e),
                }
            });
        }
        Err(_) => {
            return Err(Refusal::UpstreamTimeout {
                upstream: upstream(),
                after: timeout,
            })
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = client_upgrade else {
            // nginx answers 502 too: the client cannot follow a switch it did not ask for.
            return Err(Refusal::UpstreamFailed {
                upstream: upstream(),
                cause: "it switched protocols (101) on a request that asked for no upgrade".into(),
            });
        };
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(bridge(
            conn.clone(),
            path.decoded().to_vec(),
            client_side,
            upstream_side,
            snap.config.timeouts.idle,
        ));
        let (p, _) = resp.into_parts();
        return Ok(Response::from_parts(p, full(Bytes::new())));
    }
    // RFC 9112 §6.3: with Transfer-Encoding, a Content-Length is to be ignored; passing it
    // on would frame the body we relay with the wrong length.
    if resp.headers().contains_key(http::header::TRANSFER_ENCODING) {
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(resp.headers_mut());
    // The client's connection keeps its own protocol: an HTTP/1.0 upstream (Python's
    // http.server, Flask's development server) must not make hyper answer the client in
    // HTTP/1.0 and close its kept-alive connection. hyper still answers an HTTP/1.0 client
    // in HTTP/1.0.
    *resp.version_mut() = if conn.http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    Ok(resp.map(|b| b.boxed()))
}

/// Carries an upgraded connection both ways until either side closes, nothing moves for
/// `idle` (as nginx's `proxy_read_timeout`), or a newer snapshot refuses the client.
async fn bridge(
    conn: Arc<Conn>,
    path: Vec<u8>,
    client_side: ClientUpgrade,
    upstream_side: OnUpgrade,
    idle: Duration,
) {
    let client_side = async {
        client_side
            .await
            .map_err(|_| "the client's connection ended before the switch".to_string())
    };
    let upstream_side = async { upstream_side.await.map_err(|e| e.to_string()) };
    let (c, u) = match tokio::try_join!(client_side, upstream_side) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(remote = %conn.remote, "upgrade failed: {e}");
            return;
        }
    };
    let last = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut c = Moving {
        inner: c,
        last: last.clone(),
        started,
    };
    let mut u = TokioIo::new(u);
    let mut generations = conn.state.subscribe();
    generations.mark_unchanged();
    let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
    tokio::pin!(copy);
    loop {
        let since = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Relaxed)));
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep(idle.saturating_sub(since)) => {
                let since = started.elapsed().saturating_sub(Duration::from_millis(last.load(Relaxed)));
                if since >= idle {
                    tracing::debug!(remote = %conn.remote, "upgraded connection idle for {idle:?}: closed");
                    return;
                }
            }
            changed = generations.changed() => {
                if changed.is_err() {
                    continue;
                }
                if let Some(why) = still_allowed(&conn, &path) {
                    tracing::info!(remote = %conn.remote, "closing an upgraded connection: {why}");
                    return;
                }
            }
        }
    }
}

/// Checks an upgraded connection's client against the current snapshot: `Some(reason)`
/// when it is no longer let through.
fn still_allowed(conn: &Conn, path: &[u8]) -> Option<String> {
    let snap = conn.state.load_full();
    let verdict = conn.verdict(&snap);
    let route = snap.server(conn.server).routes.find(path);
    recheck(
        &verdict,
        conn.identity(),
        conn.state.inventory.as_deref(),
        Admitted::Bound(route.map(|r| (r.prefix.as_str(), &*r.policy))),
    )
    .err()
    .map(|lost| lost.to_string())
}

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Headers that belong to one hop but are not in `http::header`.
const HOP_BY_HOP_OTHER: &[&str] = &["keep-alive", "proxy-connection"];

/// Removes hop-by-hop headers, and those the Connection header names.
///
/// Runs on every request and response, so it makes one pass over the names and removes only
/// what that pass found: nginx as an upstream answers every request with `Connection:
/// keep-alive`, and for that one header the rule used to look up all nine names and
/// collect the named ones into a new vector.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Bit i: HOP_BY_HOP[i] is present; bit HOP_BY_HOP.len() + j: HOP_BY_HOP_OTHER[j].
    let mut present = 0u32;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        } else if let Some(j) = HOP_BY_HOP_OTHER.iter().position(|n| k == *n) {
            present |= 1 << (HOP_BY_HOP.len() + j);
        }
    }
    if present == 0 {
        return;
    }
    // Connection (HOP_BY_HOP[0]) goes first, with every header its values name.
    if present & 1 != 0 {
        if h.get_all(header::CONNECTION).iter().nth(1).is_none() {
            if let Some(v) = h.remove(header::CONNECTION) {
                remove_named(h, &v);
            }
        } else {
            let values: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
            h.remove(header::CONNECTION);
            for v in &values {
                remove_named(h, v);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    for (j, n) in HOP_BY_HOP_OTHER.iter().enumerate() {
        if present & (1 << (HOP_BY_HOP.len() + j)) != 0 {
            h.remove(*n);
        }
    }
}

/// Removes the headers a Connection header's value names.
fn remove_named(h: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(v) = connection.to_str() else { return };
    for name in v.split(',').map(str::trim) {
        // What upstreams send: `close` names no header, and a `Keep-Alive` header is
        // removed with the other hop-by-hop ones.
        if name.eq_ignore_ascii_case("close") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        h.remove(name);
    }
}

/// Records when bytes last moved through an upgraded connection (either way).
struct Moving<T> {
    inner: T,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl<T> Moving<T> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Moving<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Moving<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("a header name"),
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("content-type", "text/plain"),
            ("Connection", "Keep-Alive, X-Hop"),
            ("connection", "close ,x-other"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("X-Other", "2"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type", "x-kept"]);
        assert_eq!(h["x-kept"], "3");
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let pairs = [
            ("server", "nginx"),
            ("content-length", "16"),
            ("x-a", "1"),
            ("x-a", "2"),
        ];
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, map(&pairs));
    }

    #[test]
    fn connection_keep_alive_alone_leaves_the_other_headers() {
        let mut h = map(&[
            ("server", "nginx/1.22.1"),
            ("content-type", "text/plain"),
            ("connection", "keep-alive"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type", "server"]);
        // A Keep-Alive header is removed whether or not Connection names it, and a
        // Connection value that is not a header name is ignored.
        let mut h = map(&[
            ("keep-alive", "timeout=5"),
            ("connection", "bad name, x-a"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
