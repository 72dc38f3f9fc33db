//! What one client connection is, once its handshake is done: [`Conn`] (the client's
//! certificate and verdict under the current snapshot, TLS details, the identity headers
//! rendered for it), its [`Clock`] (where request heads begin and end, requests in flight:
//! what the header and idle timers read), and [`Tracked`], the response body that ends a
//! request. `connection` serves HTTP over it; the request path (`pipeline`, `forward`,
//! `access_log`) reads it. Owns no socket; keeps the upstream-response timers of finished
//! requests for the next ([`UpstreamTimers`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mtlsgate_headwatch::HeadClock;
use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Notify};

use crate::client_auth::{CertProblem, Peer, Verdict};
use crate::config::Timeouts;
use crate::headers::{ConnectionHeaders, HeaderPlan, RenderCtx};
use crate::identity::ClientIdentity;
use crate::responses::Body;
use crate::rewound::ClientIo;
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
    pub(crate) close: Notify,
    /// The identity headers that are the same for every request, last rendered.
    headers: Mutex<Option<HeaderCache>>,
    /// Where the client's stream goes if the request in flight is upgraded (HTTP/1.1).
    upgrade: Mutex<Option<oneshot::Sender<ClientIo>>>,
    /// What the text access log writes for this connection between a line's time and its
    /// verdict (` ADDRESS device=ID verify="`), made at its first logged request.
    pub(crate) log_prefix: OnceLock<Box<[u8]>>,
    /// The `upstream_response` timers of requests that have finished, for the next.
    pub(crate) upstream_timers: UpstreamTimers,
}

/// The `upstream_response` timers of a connection's finished requests, kept for its next
/// ones. A new timer is entered in the runtime's timer wheel at its first poll and taken
/// out when dropped: about 1,200 instructions a request (callgrind), 2-3 % of one. A kept
/// timer is moved to a later deadline instead, which tokio does without touching the wheel
/// (the entry fires at its old deadline, sees the new one and is entered again: once per
/// timeout while requests keep coming). HTTP/1.1 keeps one; HTTP/2, whose requests run side
/// by side, up to [`UpstreamTimers::KEPT`]. A connection quiet long enough to let go of
/// hyper's state (or of h2's buffers) lets go of these too.
#[derive(Default)]
pub(crate) struct UpstreamTimers(Mutex<Vec<Pin<Box<tokio::time::Sleep>>>>);

impl UpstreamTimers {
    /// At most this many timers are kept.
    const KEPT: usize = 4;

    /// A timer that fires at `deadline`: a kept one moved there, or a new one.
    pub(crate) fn take(&self, deadline: tokio::time::Instant) -> Pin<Box<tokio::time::Sleep>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match kept {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps a timer for a later request (unless enough are kept).
    pub(crate) fn put(&self, timer: Pin<Box<tokio::time::Sleep>>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::KEPT {
            kept.push(timer);
        }
    }

    /// Lets go of the kept timers (a connection gone quiet keeps none: each holds the
    /// waker of the task that last waited on it, and with it that task's memory).
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Vec::new();
    }

    /// How many are kept (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
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
        tls: Option<&rustls::CommonState>,
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
            upgrade: Mutex::new(None),
            log_prefix: OnceLock::new(),
            upstream_timers: UpstreamTimers::default(),
        }
    }

    /// The client's side of an upgrade asked for by an HTTP/1.1 request: it receives the
    /// client's stream once the switch (101) is sent, or fails when the answer was
    /// another.
    pub(crate) fn expect_upgrade(&self) -> oneshot::Receiver<ClientIo> {
        let (tx, rx) = oneshot::channel();
        *self.upgrade.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Where the client's stream goes when hyper let it go after a switch: the side asked
    /// for by [`Conn::expect_upgrade`], if it still waits.
    pub(crate) fn take_upgrade(&self) -> Option<oneshot::Sender<ClientIo>> {
        self.upgrade
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|tx| !tx.is_closed())
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
    /// Whether a request has reached the gateway yet (until then, `first_request` runs
    /// from the end of the handshake, when the clock started).
    served: AtomicBool,
    /// HTTP/1.1 request bodies begun on the current hyper connection and not read to their
    /// end: while one is, hyper is not between requests, whatever the responses say.
    bodies: AtomicU32,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            bodies: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes of a request head arrived; starts the header deadline if it is not running.
    /// The watchdog is not woken: it never sleeps longer than `header_read`, so it sees the
    /// deadline in time (waking it on every request would cost a wake-up and a new timer
    /// per request on a kept-alive connection).
    pub(crate) fn head_started(&self) {
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
        if !self.served.load(Relaxed) {
            self.served.store(true, Relaxed);
        }
        if http1 {
            self.head_done();
        }
        InFlight(self.clone())
    }

    /// What the timers say now: which ran out, or how long the watchdog may sleep — never
    /// more than `header_read`, so that a request head that starts while it sleeps (which
    /// does not wake it) is timed from when it started: the watchdog wakes before that
    /// head's deadline and then sleeps until it. Until the first request arrives,
    /// `first_request` (from the end of the handshake) runs beside the other two.
    ///
    /// With `shed` (a connection holding buffers: hyper's state on HTTP/1.1, h2's buffers
    /// on HTTP/2), [`Expiry::Shed`] comes `shed` after the connection went idle: time to
    /// let them go; the watchdog then never sleeps longer than `shed`.
    pub(crate) fn check(&self, t: &Timeouts, shed: Option<Duration>) -> Result<Duration, Expiry> {
        let now = self.now_ms();
        let ms = |d: Duration| d.as_millis() as u64;
        let mut soonest: Option<(u64, Expiry)> = None;
        let mut consider = |deadline: u64, e: Expiry| {
            if soonest.is_none_or(|(d, _)| deadline < d) {
                soonest = Some((deadline, e));
            }
        };
        if !self.served.load(Relaxed) {
            consider(ms(t.first_request), Expiry::FirstRequest);
        }
        let head = self.head_since.load(Relaxed);
        if head != 0 {
            consider(head - 1 + ms(t.header_read), Expiry::HeaderRead);
        } else if self.in_flight.load(Relaxed) == 0 {
            let since = self.idle_since.load(Relaxed);
            consider(since + ms(t.idle), Expiry::Idle);
            // Exactly when [`Clock::quiet`] holds: an expiry it would refuse would only be
            // found again at once.
            if let (Some(shed), 0) = (shed, self.bodies.load(Relaxed)) {
                consider(since + ms(shed), Expiry::Shed);
            }
        }
        // Nothing wakes the watchdog when a request ends, so with `shed` it looks again at
        // least that often.
        let most = shed.map_or(t.header_read, |s| s.min(t.header_read));
        match soonest {
            Some((deadline, e)) if now >= deadline => Err(e),
            Some((deadline, _)) => Ok(Duration::from_millis(deadline - now).min(most)),
            // Requests in flight: nothing to time here (the upstream timeout covers them).
            None => Ok(most.min(t.idle)),
        }
    }
}

impl Clock {
    /// When the connection last had no request in flight left (milliseconds since it
    /// started; 0 if none has ended yet).
    pub(crate) fn idle_since(&self) -> u64 {
        self.idle_since.load(Relaxed)
    }

    /// Nothing in flight and no request head arriving: what hyper holds for the
    /// connection can go.
    pub(crate) fn quiet(&self) -> bool {
        self.in_flight.load(Relaxed) == 0
            && self.head_since.load(Relaxed) == 0
            && self.bodies.load(Relaxed) == 0
    }

    /// A request with a body reached the gateway (HTTP/1.1): hyper reads that body until
    /// [`Clock::body_ended`]. A body dropped before its end never ends: hyper then drains
    /// or closes the connection itself, and it is not let go of meanwhile.
    pub(crate) fn body_begun(&self) {
        self.bodies.fetch_add(1, Relaxed);
    }

    /// A request body was read to its end.
    pub(crate) fn body_ended(&self) {
        let _ = self
            .bodies
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// A new hyper connection starts: no body of it is begun.
    pub(crate) fn bodies_reset(&self) {
        self.bodies.store(0, Relaxed);
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
pub(crate) enum Expiry {
    /// No request arrived within `first_request` of the handshake.
    FirstRequest,
    HeaderRead,
    Idle,
    /// A connection has been idle long enough to let go of its buffers (hyper's state on
    /// HTTP/1.1, h2's buffers on HTTP/2); the connection stays open.
    Shed,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `t` once: has it fired?
    async fn fired(t: &mut Pin<Box<tokio::time::Sleep>>) -> bool {
        use std::future::Future;
        std::future::poll_fn(|cx| Poll::Ready(t.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_upstream_timer_fires_at_the_deadline_it_is_taken_for() {
        let timers = UpstreamTimers::default();
        let start = tokio::time::Instant::now();
        let s = Duration::from_secs;
        // A request that finished before its timer fired leaves the timer for the next.
        let mut t = timers.take(start + s(10));
        assert!(!fired(&mut t).await);
        timers.put(t);
        assert_eq!(timers.kept(), 1);
        // The next request, 5 s later, takes it with a later deadline: it does not fire
        // at the old one, and fires at the new one.
        tokio::time::advance(s(5)).await;
        let mut t = timers.take(start + s(15));
        assert_eq!(timers.kept(), 0);
        tokio::time::advance(s(6)).await;
        assert!(!fired(&mut t).await, "fired at the old deadline");
        tokio::time::advance(s(4)).await;
        assert!(fired(&mut t).await, "did not fire at the new deadline");
        // A timer that fired (a request that timed out), taken again, waits anew.
        timers.put(t);
        let mut t = timers.take(start + s(20));
        assert!(
            !fired(&mut t).await,
            "a fired timer refused the next request at once"
        );
        tokio::time::advance(s(5)).await;
        assert!(fired(&mut t).await);
        // An earlier deadline than the kept one's is honoured too.
        timers.put(t);
        timers.put(timers.take(start + s(60)));
        let mut t = timers.take(start + s(21));
        tokio::time::advance(s(1)).await;
        assert!(
            fired(&mut t).await,
            "did not fire at a deadline earlier than the kept one"
        );
        // Only a few are kept.
        for _ in 0..10 {
            timers.put(Box::pin(tokio::time::sleep(s(1))));
        }
        assert_eq!(timers.kept(), UpstreamTimers::KEPT);
    }

    #[test]
    fn idle_counts_only_without_requests_in_flight() {
        let clock = Arc::new(Clock::new());
        let t = Timeouts {
            idle: Duration::from_millis(0),
            header_read: Duration::from_secs(10),
            ..Timeouts::default()
        };
        let r = clock.request(true);
        assert!(clock.check(&t, None).is_ok());
        drop(r);
        assert_eq!(clock.check(&t, None), Err(Expiry::Idle));
        clock.head_started();
        let t = Timeouts {
            header_read: Duration::from_millis(0),
            ..t
        };
        assert_eq!(clock.check(&t, None), Err(Expiry::HeaderRead));
    }

    #[test]
    fn shed_comes_before_idle_and_only_when_asked_for() {
        let clock = Arc::new(Clock::new());
        let t = Timeouts {
            idle: Duration::from_secs(60),
            first_request: Duration::from_secs(60),
            ..Timeouts::default()
        };
        drop(clock.request(true));
        assert!(clock.quiet());
        assert_eq!(clock.check(&t, Some(Duration::ZERO)), Err(Expiry::Shed));
        assert!(clock.check(&t, None).is_ok());
        let wait = clock
            .check(&t, Some(Duration::from_millis(250)))
            .unwrap_or_default();
        assert!(wait <= Duration::from_millis(250), "{wait:?}");
        // A request body not read to its end holds it off, and the clock does not say
        // Shed meanwhile (the watchdog would find it again at once, for ever).
        clock.body_begun();
        assert!(!clock.quiet());
        assert!(clock.check(&t, Some(Duration::ZERO)).is_ok());
        clock.body_ended();
        assert!(clock.quiet());
        clock.body_ended();
        assert!(clock.quiet(), "an extra end is not counted below zero");
        clock.body_begun();
        clock.bodies_reset();
        assert!(clock.quiet());
        // A request in flight, or a head arriving, holds it off, and the watchdog looks
        // again within `shed` (nothing wakes it when the request ends).
        let r = clock.request(true);
        let wait = clock
            .check(&t, Some(Duration::from_millis(250)))
            .unwrap_or_default();
        assert!(wait <= Duration::from_millis(250), "{wait:?}");
        assert!(!clock.quiet());
        assert!(clock.check(&t, Some(Duration::ZERO)).is_ok());
        drop(r);
        clock.head_started();
        assert!(!clock.quiet());
        assert!(clock.check(&t, Some(Duration::ZERO)).is_ok());
    }

    #[test]
    fn first_request_counts_from_the_handshake_until_a_request_arrives() {
        let clock = Arc::new(Clock::new());
        let t = Timeouts {
            first_request: Duration::from_millis(0),
            ..Timeouts::default()
        };
        assert_eq!(clock.check(&t, None), Err(Expiry::FirstRequest));
        // A head that started does not stop it: only a whole request does.
        clock.head_started();
        assert_eq!(clock.check(&t, None), Err(Expiry::FirstRequest));
        drop(clock.request(true));
        assert!(clock.check(&t, None).is_ok());
        let fresh = Clock::new();
        let t = Timeouts {
            first_request: Duration::from_secs(3),
            ..Timeouts::default()
        };
        let wait = fresh.check(&t, None).unwrap_or_default();
        assert!(wait <= Duration::from_secs(3), "{wait:?}");
    }
}
