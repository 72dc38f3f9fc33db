//! One client connection after its TLS handshake: what is known about it ([`Conn`]: the
//! client's certificate and verdict, TLS details), serving HTTP/1.1 or HTTP/2 over it, and
//! the three ways it ends besides the client leaving:
//! - **timers** ([`Clock`]): a request head must arrive within `header_read` of its first
//!   byte — for HTTP/2 too, where a HEADERS frame is watched on the wire — and a connection
//!   with no request in flight closes after `idle`; bytes that complete no request (a
//!   trickled header, pings) do not keep it open;
//! - **a changed state**: when a reload or an inventory change swaps the snapshot, the
//!   client is checked again, and a connection whose certificate is now refused (revoked,
//!   expired, no longer trusted) is closed at once, not at its next request;
//! - **shutdown**: in-flight requests finish, then the connection closes.

use mtlsgate_headwatch::{HeadClock, Watched};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

use crate::client_auth::{recheck, Admitted, CertProblem, Lost, Peer, Verdict};
use crate::config::Timeouts;
use crate::headers::{ConnectionHeaders, HeaderPlan, RenderCtx};
use crate::identity::ClientIdentity;
use crate::responses::Body;
use crate::state::{Snapshot, State};

/// What is known about a connection once its handshake is done.
pub(crate) struct Conn {
    pub(crate) state: Arc<State>,
    pub(crate) remote: SocketAddr,
    /// `remote.ip()` as text, formatted once.
    pub(crate) remote_ip: String,
    pub(crate) tls_protocol: &'static str,
    pub(crate) tls_cipher: &'static str,
    pub(crate) resumed: bool,
    pub(crate) http2: bool,
    /// The server block the connection chose by SNI (0: the default).
    pub(crate) server: usize,
    pub(crate) peer: Arc<Peer>,
    verdict: Mutex<Arc<Verdict>>,
    pub(crate) clock: Arc<Clock>,
    /// Asks the connection to finish what is in flight and close (HTTP/2 GOAWAY).
    close: Notify,
    /// The identity headers that are the same for every request, last rendered.
    headers: Mutex<Option<HeaderCache>>,
}

/// A route's connection-wide identity headers as rendered for this connection, and what
/// they were rendered for: the snapshot's generation and the route's plan in it (a plan
/// is never moved or freed while its snapshot lives, and generations are never reused),
/// and the client's verdict (held, so its address cannot be reused meanwhile).
struct HeaderCache {
    generation: u64,
    plan: usize,
    verdict: Arc<Verdict>,
    rendered: Arc<ConnectionHeaders>,
}

impl Conn {
    pub(crate) fn new(
        state: Arc<State>,
        remote: SocketAddr,
        tls: Option<&rustls::ServerConnection>,
        server: usize,
        peer: Arc<Peer>,
        verdict: Arc<Verdict>,
    ) -> Conn {
        Conn {
            state,
            remote,
            remote_ip: remote.ip().to_string(),
            tls_protocol: tls.map_or("", |t| crate::tls::protocol_name(t.protocol_version())),
            tls_cipher: tls
                .and_then(|t| t.negotiated_cipher_suite())
                .map(crate::tls::cipher_name)
                .unwrap_or(""),
            resumed: tls
                .is_some_and(|t| t.handshake_kind() == Some(rustls::HandshakeKind::Resumed)),
            http2: tls.is_some_and(|t| t.alpn_protocol() == Some(b"h2")),
            server,
            peer,
            verdict: Mutex::new(verdict),
            clock: Arc::new(Clock::new()),
            close: Notify::new(),
            headers: Mutex::new(None),
        }
    }

    /// The connection-wide identity headers of `plan` (a route of snapshot `generation`)
    /// under `verdict`: rendered by the first request that needs them, then reused.
    pub(crate) fn connection_headers(
        &self,
        generation: u64,
        plan: &HeaderPlan,
        verdict: &Arc<Verdict>,
        cx: &RenderCtx<'_>,
    ) -> Arc<ConnectionHeaders> {
        let key = plan as *const HeaderPlan as usize;
        let mut cache = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.generation == generation && c.plan == key && Arc::ptr_eq(&c.verdict, verdict) {
                return c.rendered.clone();
            }
        }
        let rendered = Arc::new(plan.render_connection_wide(cx));
        *cache = Some(HeaderCache {
            generation,
            plan: key,
            verdict: verdict.clone(),
            rendered: rendered.clone(),
        });
        rendered
    }

    pub(crate) fn identity(&self) -> Option<&ClientIdentity> {
        self.peer.identity.as_deref()
    }

    /// The client's verdict under `snap`, checked again when the snapshot changed or a
    /// certificate of the chain expired since it was reached.
    pub(crate) fn verdict(&self, snap: &Snapshot) -> Arc<Verdict> {
        let mut v = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let auth = &snap.server(self.server).auth;
        if !self.peer.still_holds(&v, auth, now) {
            *v = Arc::new(auth.check(&self.peer.chain, UnixTime::now()));
            if let Some(CertProblem::Invalid(f)) = &v.problem {
                self.state.metrics.verify_failure(f);
                tracing::info!(
                    remote = %self.remote,
                    "client certificate refused: {}",
                    mtlsgate_pki::printable::printable(&f.to_string())
                );
            }
        }
        v.clone()
    }

    /// Asks the connection to close once the current reply is sent (HTTP/1 closes by the
    /// `Connection: close` header; HTTP/2 needs a GOAWAY).
    fn close_after_reply(&self) {
        self.close.notify_one();
    }
}

/// When a connection last did something that counts, for its timers. Times are
/// milliseconds since the connection started.
pub(crate) struct Clock {
    started: Instant,
    in_flight: AtomicU32,
    /// When the connection last had no request in flight left.
    idle_since: AtomicU64,
    /// 1 + when the head of a request began arriving; 0 when none is arriving.
    head_since: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes of a request head arrived; starts the header deadline if it is not running.
    /// The watchdog is not woken: it never sleeps longer than `header_read`, so it sees the
    /// deadline in time (waking it on every request would cost a wake-up and a new timer
    /// per request on a kept-alive connection).
    fn head_started(&self) {
        if self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now_ms() + 1, Relaxed);
        }
    }

    fn head_done(&self) {
        self.head_since.store(0, Relaxed);
    }

    /// A request reached the gateway; the returned guard ends it when dropped (with the
    /// response body, which may stream long after the headers).
    pub(crate) fn request(self: &Arc<Self>, http1: bool) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        if http1 {
            self.head_done();
        }
        InFlight(self.clone())
    }

    /// What the timers say now: which ran out, or how long the watchdog may sleep — never
    /// more than `header_read`, so that a request head that starts while it sleeps (which
    /// does not wake it) is timed from when it started: the watchdog wakes before that
    /// head's deadline and then sleeps until it.
    fn check(&self, t: &Timeouts) -> Result<Duration, Expiry> {
        let now = self.now_ms();
        let ms = |d: Duration| d.as_millis() as u64;
        let head = self.head_since.load(Relaxed);
        if head != 0 {
            let deadline = head - 1 + ms(t.header_read);
            return if now >= deadline {
                Err(Expiry::HeaderRead)
            } else {
                Ok(Duration::from_millis(deadline - now))
            };
        }
        if self.in_flight.load(Relaxed) == 0 {
            let deadline = self.idle_since.load(Relaxed) + ms(t.idle);
            return if now >= deadline {
                Err(Expiry::Idle)
            } else {
                Ok(Duration::from_millis(deadline - now).min(t.header_read))
            };
        }
        // Requests in flight: nothing to time here (the upstream timeout covers them).
        Ok(t.header_read.min(t.idle))
    }
}

impl HeadClock for Clock {
    fn head_started(&self) {
        Clock::head_started(self)
    }
    fn head_done(&self) {
        Clock::head_done(self)
    }
    fn requests_in_flight(&self) -> bool {
        self.in_flight.load(Relaxed) > 0
    }
}

/// One request in flight; dropping it ends the request.
pub(crate) struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Relaxed);
        }
    }
}

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    HeaderRead,
    Idle,
}

/// Sleeps until a timer runs out.
async fn watchdog(clock: &Clock, timeouts: &Timeouts) -> Expiry {
    loop {
        match clock.check(timeouts) {
            Err(e) => return e,
            Ok(wait) => tokio::time::sleep(wait.max(Duration::from_millis(5))).await,
        }
    }
}

/// A response body that ends its request (for the idle timer) when it is dropped, and,
/// for a refusal that closes the connection, asks an HTTP/2 connection to close then —
/// after the reply, so the GOAWAY follows the response rather than overtaking it.
pub(crate) struct Tracked {
    inner: Body,
    _request: InFlight,
    close_after: Option<Arc<Conn>>,
}

impl Tracked {
    pub(crate) fn new(inner: Body, request: InFlight, close_after: Option<Arc<Conn>>) -> Tracked {
        Tracked {
            inner,
            _request: request,
            close_after,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(c) = self.close_after.take() {
            c.close_after_reply();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves HTTP on a connection whose handshake is done, until it ends.
pub(crate) async fn serve<T>(conn: Arc<Conn>, io: T, mut stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snap = conn.state.load_full();
    let timeouts = snap.config.timeouts.clone();
    let max_header = snap.config.max_header_bytes;
    drop(snap);
    let io = TokioIo::new(Watched::new(io, conn.clock.clone(), conn.http2));
    let svc = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&conn, req).await) }
        })
    };
    let ended = if conn.http2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(max_header as u32)
            .max_concurrent_streams(256);
        let c = b.serve_connection(io, svc);
        drive(c, &conn, &timeouts, &mut stop, |c| c.graceful_shutdown()).await
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        // hyper's own header timer (30 s by default) would also run while a kept-alive
        // connection waits for its next request, and close it before `idle`; the watchdog
        // below keeps both header_read and idle.
        b.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(max_header.max(8192));
        let c = b.serve_connection(io, svc).with_upgrades();
        drive(c, &conn, &timeouts, &mut stop, |c| c.graceful_shutdown()).await
    };
    match ended {
        Ended::Done(Err(e)) => tracing::debug!(remote = %conn.remote, "connection ended: {e}"),
        Ended::Done(Ok(())) => {}
        Ended::HeaderTimeout => {
            conn.state.metrics.header_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(remote = %conn.remote, "closed: no complete request head within the header_read timeout");
        }
        Ended::Idle => tracing::debug!(remote = %conn.remote, "closed: idle"),
        Ended::Refused => {}
    }
}

/// How [`drive`] ended.
enum Ended {
    Done(Result<(), hyper::Error>),
    HeaderTimeout,
    Idle,
    /// The client's certificate is refused now (a reload or revocation).
    Refused,
}

/// How long a connection asked to close gracefully may take before it is dropped.
const GRACE: Duration = Duration::from_secs(5);
/// How long a refused HTTP/2 connection waits for its reply to be written before the GOAWAY.
const REPLY_FIRST: Duration = Duration::from_millis(50);

/// Runs a hyper connection until it ends, a timer runs out, the client is refused by a new
/// snapshot, or shutdown is asked for (then lets in-flight requests finish).
async fn drive<C, F>(
    c: C,
    conn: &Conn,
    timeouts: &Timeouts,
    stop: &mut watch::Receiver<bool>,
    graceful: F,
) -> Ended
where
    C: Future<Output = Result<(), hyper::Error>>,
    F: Fn(Pin<&mut C>),
{
    let mut c = pin!(c);
    let mut generations = conn.state.subscribe();
    generations.mark_unchanged();
    let mut stopping = *stop.borrow();
    if stopping {
        graceful(c.as_mut());
    }
    let mut closing = false;
    let mut close_asked = false;
    let mut grace = pin!(tokio::time::sleep(Duration::MAX));
    let timer = watchdog(&conn.clock, timeouts);
    let mut timer = pin!(timer);
    loop {
        tokio::select! {
            r = c.as_mut() => return Ended::Done(r),
            _ = stop.changed(), if !stopping => {
                stopping = true;
                graceful(c.as_mut());
            }
            // A refusal asked to close: give the reply a moment to leave first (HTTP/2 sends
            // a GOAWAY ahead of frames still queued), then close gracefully.
            _ = conn.close.notified(), if !closing && !close_asked => {
                close_asked = true;
                grace.as_mut().reset(tokio::time::Instant::now() + REPLY_FIRST);
            }
            _ = &mut grace, if close_asked || closing => {
                if closing {
                    return Ended::Idle;
                }
                closing = true;
                graceful(c.as_mut());
                grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
            }
            changed = generations.changed() => {
                if changed.is_err() {
                    continue;
                }
                let snap = conn.state.load_full();
                let device = || conn.identity().map(|i| i.device_label().into_owned()).unwrap_or_else(|| "-".into());
                let verdict = conn.verdict(&snap);
                match recheck(&verdict, conn.identity(), conn.state.inventory.as_deref(), Admitted::Connection) {
                    Ok(()) => {}
                    // Why was logged when the verdict was reached.
                    Err(Lost::Certificate(_)) => {
                        tracing::info!(remote = %conn.remote, device = %device(), "closing the connection: its client certificate is no longer accepted");
                        return Ended::Refused;
                    }
                    Err(why) => {
                        tracing::info!(remote = %conn.remote, device = %device(), "closing the connection: {why}");
                        return Ended::Refused;
                    }
                }
            }
            // Once closing, the grace timer bounds what is left.
            e = &mut timer, if !closing => match e {
                Expiry::HeaderRead => return Ended::HeaderTimeout,
                Expiry::Idle => {
                    closing = true;
                    graceful(c.as_mut());
                    grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_counts_only_without_requests_in_flight() {
        let clock = Arc::new(Clock::new());
        let t = Timeouts {
            idle: Duration::from_millis(0),
            header_read: Duration::from_secs(10),
            ..Timeouts::default()
        };
        let r = clock.request(true);
        assert!(clock.check(&t).is_ok());
        drop(r);
        assert_eq!(clock.check(&t), Err(Expiry::Idle));
        clock.head_started();
        let t = Timeouts {
            header_read: Duration::from_millis(0),
            ..t
        };
        assert_eq!(clock.check(&t), Err(Expiry::HeaderRead));
    }
}
