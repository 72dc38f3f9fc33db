//! What keeps one client from holding the server: connection caps (in all, and per client
//! address) checked at accept, and per-connection deadlines kept by a watchdog:
//! - **first request**: a connection that has sent no request closes after `first_request`
//!   (a client that finishes TLS and sends nothing, or only HTTP/2 SETTINGS);
//! - **header**: a request head must arrive within `header_read` of its first byte — for
//!   HTTP/2 too, where HEADERS/CONTINUATION frames are followed on the wire;
//! - **body**: a request body must arrive within `body_read` of its head;
//! - **idle**: a connection with no request in flight closes after `idle`.
//!
//! Bytes that complete no request (a trickled head, pings) keep nothing open. The approach
//! is the gateway's (crates/proxy/src/connection.rs), with the body deadline and the caps
//! added.

use mtlsgate_headwatch::HeadClock;
pub(crate) use mtlsgate_headwatch::Watched;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// Deadlines and caps of the CA server's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From the end of the TLS handshake to the first request's first byte.
    pub first_request: Duration,
    /// From a request head's first byte to its end.
    pub header_read: Duration,
    /// From the end of a request head to the end of its body.
    pub body_read: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle: Duration,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one IP address; more are closed at accept.
    pub max_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            first_request: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_connections: 512,
            max_per_address: 256,
        }
    }
}

/// Counts open connections, in all and per address.
pub(crate) struct Caps {
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_address: usize,
    /// When a refusal was last logged (ms since `started`, +1; 0: never).
    last_warned: AtomicU64,
    started: Instant,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    Address,
}

/// One admitted connection; dropping it gives its places back.
pub(crate) struct Admitted {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Caps {
    pub(crate) fn new(limits: &Limits) -> Arc<Caps> {
        Arc::new(Caps {
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            max_total: limits.max_connections.max(1),
            max_per_address: limits.max_per_address.max(1),
            last_warned: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Admits a connection from `ip`, or says which cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Full> {
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Relaxed) >= self.max_total {
            return Err(Full::Total);
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Full::Address);
        }
        *n += 1;
        self.total.fetch_add(1, Relaxed);
        Ok(Admitted {
            caps: self.clone(),
            ip,
        })
    }

    /// Whether a refusal may be logged now (at most one line every 10 s).
    pub(crate) fn may_warn(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warned.load(Relaxed);
        if last != 0 && now < last + 10_000 {
            return false;
        }
        self.last_warned
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per = self
            .caps
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
        self.caps.total.fetch_sub(1, Relaxed);
    }
}

/// When a connection last did something that counts, for its deadlines. Times are
/// milliseconds since the connection's handshake ended.
pub(crate) struct Clock {
    started: Instant,
    in_flight: AtomicU32,
    /// Whether a request has come.
    served: AtomicBool,
    /// When the connection last had no request in flight left.
    idle_since: AtomicU64,
    /// 1 + when the head of a request began arriving; 0 when none is arriving.
    head_since: AtomicU64,
    /// A request body missed its deadline.
    body_expired: AtomicBool,
    wake: Notify,
}

/// Which deadline ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    FirstRequest,
    HeaderRead,
    BodyRead,
    Idle,
}

impl Expiry {
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Expiry::FirstRequest => "no request within the first-request deadline",
            Expiry::HeaderRead => "no complete request head within the header deadline",
            Expiry::BodyRead => "no complete request body within the body deadline",
            Expiry::Idle => "idle",
        }
    }
}

impl Clock {
    pub(crate) fn new() -> Arc<Clock> {
        Arc::new(Clock {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            body_expired: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes of a request head arrived; starts the header deadline if it is not running.
    /// The watchdog never sleeps longer than `header_read`, so it sees the deadline in time.
    fn head_started(&self) {
        if self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now_ms() + 1, Relaxed);
        }
    }

    fn head_done(&self) {
        self.head_since.store(0, Relaxed);
    }

    /// A request arrived; the returned guard ends it when dropped.
    pub(crate) fn request(self: &Arc<Self>, http1: bool) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.served.store(true, Relaxed);
        if http1 {
            self.head_done();
        }
        InFlight(self.clone())
    }

    /// What the deadlines say now: which ran out, or how long the watchdog may sleep.
    fn check(&self, l: &Limits) -> Result<Duration, Expiry> {
        if self.body_expired.load(Relaxed) {
            return Err(Expiry::BodyRead);
        }
        let now = self.now_ms();
        let ms = |d: Duration| d.as_millis() as u64;
        let head = self.head_since.load(Relaxed);
        if head != 0 {
            let deadline = head - 1 + ms(l.header_read);
            return if now >= deadline {
                Err(Expiry::HeaderRead)
            } else {
                Ok(Duration::from_millis(deadline - now))
            };
        }
        if self.in_flight.load(Relaxed) == 0 {
            let (limit, expiry) = match self.served.load(Relaxed) {
                true => (l.idle, Expiry::Idle),
                false => (l.first_request, Expiry::FirstRequest),
            };
            let deadline = self.idle_since.load(Relaxed) + ms(limit);
            return if now >= deadline {
                Err(expiry)
            } else {
                Ok(Duration::from_millis(deadline - now).min(l.header_read))
            };
        }
        // Requests in flight: their bodies are timed by [`TimedBody`].
        Ok(l.header_read.min(l.idle))
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

/// Sleeps until a deadline runs out.
pub(crate) async fn watchdog(clock: &Clock, limits: &Limits) -> Expiry {
    loop {
        match clock.check(limits) {
            Err(e) => return e,
            Ok(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                    _ = clock.wake.notified() => {}
                }
            }
        }
    }
}

/// A request body that must arrive within the body deadline; when it does not, the read
/// fails and the connection is closed (by the watchdog).
pub(crate) struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    clock: Arc<Clock>,
    done: bool,
}

impl TimedBody {
    pub(crate) fn new(inner: hyper::body::Incoming, limit: Duration, clock: Arc<Clock>) -> Self {
        let done = hyper::body::Body::is_end_stream(&inner);
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            clock,
            done,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.done && this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.clock.body_expired.store(true, Relaxed);
            this.clock.wake.notify_one();
            return Poll::Ready(Some(Err(
                "the request body did not arrive within the body deadline".into(),
            )));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(f))) => {
                if hyper::body::Body::is_end_stream(&this.inner) {
                    this.done = true;
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_address() {
        let caps = Caps::new(&Limits {
            max_connections: 3,
            max_per_address: 2,
            ..Limits::default()
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = caps.admit(a).expect("a1");
        let _a2 = caps.admit(a).expect("a2");
        assert_eq!(caps.admit(a).err(), Some(Full::Address));
        let _b1 = caps.admit(b).expect("b1");
        assert_eq!(caps.admit(b).err(), Some(Full::Total));
        drop(a1);
        assert!(caps.admit(a).is_ok());
    }

    #[test]
    fn a_connection_without_requests_is_timed_by_the_first_request_deadline() {
        let clock = Clock::new();
        let l = Limits {
            first_request: Duration::ZERO,
            idle: Duration::from_secs(100),
            ..Limits::default()
        };
        assert_eq!(clock.check(&l), Err(Expiry::FirstRequest));
        drop(clock.request(true));
        assert!(clock.check(&l).is_ok(), "then by the idle deadline");
    }
}
