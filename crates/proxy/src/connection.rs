//! Serving HTTP/1.1 or HTTP/2 on one client connection after its TLS handshake (what is
//! known about it is [`Conn`], in `conn`), and the three ways it ends besides the client
//! leaving:
//! - **timers** (read from the connection's [`Clock`]): the first request must arrive within
//!   `first_request` of the handshake (for HTTP/2: a stream opened), a request head within
//!   `header_read` of its first byte — for HTTP/2 too, where a HEADERS frame is watched on
//!   the wire — and a connection with no request in flight closes after `idle`; bytes that
//!   complete no request (a trickled header, pings) do not keep it open;
//! - **a changed state**: when a reload or an inventory change swaps the snapshot, the
//!   client is checked again ([`crate::client_auth::recheck`]), and a connection whose
//!   certificate is now refused (revoked, expired, no longer trusted) or whose device the
//!   inventory closes is closed at once, not at its next request;
//! - **shutdown**: in-flight requests finish, then the connection closes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mtlsgate_headwatch::Watched;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::client_auth::{recheck, Admitted, Lost};
use crate::config::Timeouts;
use crate::conn::{Clock, Conn, Expiry};
use crate::rewound::{Lent, Rewound};
use crate::woken::OnWake;

/// How long a connection with nothing in flight keeps its buffers before letting them go:
/// on HTTP/1.1 hyper's whole state (its read and write buffers, 16 KiB or more; the next
/// request builds it again), on HTTP/2 h2's read and write buffers (the next frames take
/// new ones). nginx frees its buffers as soon as a kept-alive connection goes idle; waiting
/// a moment keeps a busy connection from taking new buffers for every request.
const SHED_AFTER: Duration = Duration::from_millis(250);

/// Sleeps until a timer runs out (with `shed`: [`Expiry::Shed`] too, unless nothing was in
/// flight since the connection was last shed: `shed_at` is its clock's
/// [`Clock::idle_since`] then).
async fn watchdog(
    clock: &Clock,
    timeouts: &Timeouts,
    shed: Option<Duration>,
    shed_at: Option<u64>,
) -> Expiry {
    loop {
        let shed = shed.filter(|_| shed_at != Some(clock.idle_since()));
        match clock.check(timeouts, shed) {
            Err(e) => return e,
            Ok(wait) => tokio::time::sleep(wait.max(Duration::from_millis(5))).await,
        }
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
    let handle = {
        let conn = conn.clone();
        move |req: hyper::Request<hyper::body::Incoming>| {
            if !conn.http2 && !hyper::body::Body::is_end_stream(req.body()) {
                conn.clock.body_begun();
            }
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&conn, req).await) }
        }
    };
    let mut generations = conn.state.subscribe();
    generations.mark_unchanged();
    let mut watch = Watch {
        conn: &conn,
        timeouts: &timeouts,
        stop: &mut stop,
        generations: &mut generations,
    };
    let ended = if conn.http2 {
        let io = TokioIo::new(Watched::new(io, conn.clock.clone(), true));
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(max_header as u32)
            .max_concurrent_streams(256);
        // hyper runs each stream's request in a task of its own and moves it (with the
        // request's future, several KiB) as it spawns it: with the future on the heap, a
        // pointer is moved instead. Measured with bench/ab.py: +4 % HTTP/2 requests per
        // CPU-second in 12 pairs (single runs on the test machine vary by 10 % or more, so
        // the gain is small and uncertain); allocations per request did not change.
        let svc = hyper::service::service_fn(move |req| Box::pin(handle(req)));
        // On the heap, so that the task of an HTTP/1.1 connection is not sized for it.
        let mut c = Box::pin(b.serve_connection(io, svc));
        watch
            .drive(c.as_mut(), Quiet::Trim, |c| c.graceful_shutdown())
            .await
    } else {
        serve_http1(
            &mut watch,
            io,
            hyper::service::service_fn(handle),
            max_header,
        )
        .await
    };
    match ended {
        Ended::Done(Err(e)) => tracing::debug!(remote = %conn.remote, "connection ended: {e}"),
        Ended::Done(Ok(())) | Ended::Upgraded => {}
        Ended::Failed(e) => tracing::debug!(remote = %conn.remote, "connection ended: {e}"),
        Ended::HeaderTimeout => {
            conn.state.metrics.header_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(remote = %conn.remote, "closed: no complete request head within the header_read timeout");
        }
        Ended::FirstRequestTimeout => {
            conn.state.metrics.header_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(remote = %conn.remote, "closed: no request within the first_request timeout after the handshake");
        }
        Ended::Idle => tracing::debug!(remote = %conn.remote, "closed: idle"),
        Ended::Refused => {}
    }
}

/// HTTP/1.1: hyper holds the stream only while requests come. Between stretches of
/// requests (once the connection has been quiet for [`SHED_AFTER`], and before the first
/// request) nothing of hyper's is kept: the connection waits for the client's next bytes
/// with no buffer, then lends the stream to a new hyper connection. A switch of protocols
/// (WebSocket) hands the stream, with any bytes hyper had read past the switch, to the
/// upgrade's bridge.
async fn serve_http1<T, S>(watch: &mut Watch<'_>, io: T, svc: S, max_header: usize) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::conn::Tracked>
        + Clone
        + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer (30 s by default) would also run while a kept-alive
    // connection waits for its next request, and close it before `idle`; the watchdog
    // keeps both header_read and idle.
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_header.max(8192));
    let conn = watch.conn;
    let mut io = Rewound::new(io);
    let keep_open = AtomicBool::new(false);
    loop {
        if let Some(ended) = watch.park(&mut io).await {
            return ended;
        }
        keep_open.store(false, Relaxed);
        conn.clock.bodies_reset();
        let lent = Lent {
            io: &mut io,
            keep_open: &keep_open,
        };
        // On the heap while it lives, so that the task, parked, is not sized for it.
        let mut c = Box::new(b.serve_connection(
            TokioIo::new(Watched::new(lent, conn.clock.clone(), false)),
            svc.clone(),
        ));
        let ended = watch
            .drive(Pin::new(&mut *c), Quiet::Shed(&keep_open), |c| {
                c.graceful_shutdown()
            })
            .await;
        if !matches!(ended, Ended::Done(Ok(()))) {
            return ended;
        }
        let left = c.into_parts().read_buf;
        io.unread(left);
        if let Some(bridge) = conn.take_upgrade() {
            // The switch was sent: the stream is the upgrade's now.
            let _ = bridge.send(Box::new(io));
            return Ended::Upgraded;
        }
        if !keep_open.load(Relaxed) {
            // hyper ended the connection (the client closed, or asked to): shut down.
            return ended;
        }
    }
}

/// What a connection's task watches besides its own stream: timers, shutdown, closes
/// asked for by refusals, and new snapshots (the client is checked again).
struct Watch<'a> {
    conn: &'a Conn,
    timeouts: &'a Timeouts,
    stop: &'a mut watch::Receiver<bool>,
    generations: &'a mut watch::Receiver<u64>,
}

/// How [`Watch::drive`] (or the HTTP/1.1 loop around it) ended.
enum Ended {
    Done(Result<(), hyper::Error>),
    HeaderTimeout,
    FirstRequestTimeout,
    Idle,
    /// The client's certificate is refused now (a reload or revocation).
    Refused,
    /// The stream went to an upgraded connection's bridge.
    Upgraded,
    /// Reading or closing the stream failed while no hyper connection held it.
    Failed(std::io::Error),
}

/// What [`Watch::drive`] does with a connection quiet for [`SHED_AFTER`].
#[derive(Clone, Copy)]
enum Quiet<'a> {
    /// HTTP/1.1: ends hyper's connection gracefully with this set, so that hyper lets go
    /// of the stream without closing it.
    Shed(&'a AtomicBool),
    /// HTTP/2: polls the connection once with h2's buffer release on
    /// ([`h2::release_buffers`]), so that it gives back its read and write buffers and
    /// stays open; the next time after the connection has had a request in flight again.
    Trim,
}

/// How long a connection asked to close gracefully may take before it is dropped.
const GRACE: Duration = Duration::from_secs(5);
/// How long a refused HTTP/2 connection waits for its reply to be written before the GOAWAY.
const REPLY_FIRST: Duration = Duration::from_millis(50);

/// Ends (with [`Ended::Refused`]) when a new snapshot refuses the client: each change of
/// generation checks it again.
async fn refusals(conn: &Conn, generations: &mut watch::Receiver<u64>) -> Ended {
    loop {
        if generations.changed().await.is_err() {
            // No more snapshots (the gateway is ending): nothing can refuse it now.
            std::future::pending::<()>().await;
        }
        if let Some(e) = refused_now(conn) {
            return e;
        }
    }
}

/// Checks the client again under a new snapshot: `Some(Ended::Refused)` when its
/// certificate or device is refused now.
fn refused_now(conn: &Conn) -> Option<Ended> {
    let snap = conn.state.load_full();
    let device = || {
        conn.identity()
            .map(|i| i.device_label().into_owned())
            .unwrap_or_else(|| "-".into())
    };
    let verdict = conn.verdict(&snap);
    match recheck(
        &verdict,
        conn.identity(),
        conn.state.inventory.as_deref(),
        Admitted::Connection,
    ) {
        Ok(()) => None,
        // Why was logged when the verdict was reached.
        Err(Lost::Certificate(_)) => {
            tracing::info!(remote = %conn.remote, device = %device(), "closing the connection: its client certificate is no longer accepted");
            Some(Ended::Refused)
        }
        Err(why) => {
            tracing::info!(remote = %conn.remote, device = %device(), "closing the connection: {why}");
            Some(Ended::Refused)
        }
    }
}

impl Watch<'_> {
    /// HTTP/1.1 between hyper connections: waits, holding no buffer, for the client's next
    /// bytes (given back to `io` to be read again; `None`), or for the connection to end
    /// (`Some`): the client closed, a timer ran out, shutdown, or a refusal.
    async fn park<T>(&mut self, io: &mut Rewound<T>) -> Option<Ended>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if io.has_unread() {
            // hyper let go with a request begun (pipelined): serve it.
            return None;
        }
        let conn = self.conn;
        let ended = 'parked: {
            if *self.stop.borrow() {
                break 'parked Ended::Done(Ok(()));
            }
            let timer = watchdog(&conn.clock, self.timeouts, None, None);
            let mut timer = pin!(timer);
            let mut refused = pin!(refusals(conn, self.generations));
            // Small on purpose: this lives in the connection's task for its whole life. The
            // rest of a TLS record stays with the stream until hyper reads it.
            let mut first = [0u8; 64];
            tokio::select! {
                r = io.read(&mut first) => match r {
                    Ok(0) => break 'parked Ended::Done(Ok(())),
                    Ok(n) => {
                        conn.clock.head_started();
                        io.unread(Bytes::copy_from_slice(&first[..n]));
                        return None;
                    }
                    Err(e) => return Some(Ended::Failed(e)),
                },
                _ = self.stop.changed() => break 'parked Ended::Done(Ok(())),
                _ = conn.close.notified() => break 'parked Ended::Idle,
                e = &mut refused => return Some(e),
                e = &mut timer => match e {
                    Expiry::HeaderRead => return Some(Ended::HeaderTimeout),
                    Expiry::FirstRequest => return Some(Ended::FirstRequestTimeout),
                    Expiry::Idle | Expiry::Shed => break 'parked Ended::Idle,
                },
            }
        };
        // As hyper ends a connection: TLS close_notify, then FIN.
        match tokio::time::timeout(GRACE, io.shutdown()).await {
            Ok(Err(e)) => Some(Ended::Failed(e)),
            _ => Some(ended),
        }
    }

    /// Runs a hyper connection until it ends, a timer runs out, the client is refused by a
    /// new snapshot, or shutdown is asked for (then lets in-flight requests finish). A
    /// connection quiet for [`SHED_AFTER`] lets go of its buffers as `quiet` says.
    async fn drive<C, F>(&mut self, mut c: Pin<&mut C>, quiet: Quiet<'_>, graceful: F) -> Ended
    where
        C: Future<Output = Result<(), hyper::Error>>,
        F: Fn(Pin<&mut C>),
    {
        let conn = self.conn;
        let mut stopping = *self.stop.borrow();
        if stopping {
            graceful(c.as_mut());
        }
        let mut closing = false;
        let mut close_asked = false;
        let mut grace = pin!(tokio::time::sleep(Duration::MAX));
        let shed_after = Some(SHED_AFTER);
        // When HTTP/2's buffers were last given back (the clock's `idle_since` then).
        let mut shed_at = None;
        // Each made once, not at every wake of the task (each one registers with, and on
        // drop leaves, a shared list under its lock), and polled only when it was woken
        // (`woken`): the task wakes two or three times a request, nearly always for `c`.
        let timer = pin!(watchdog(&conn.clock, self.timeouts, shed_after, None));
        let mut timer = OnWake::new(timer);
        let stop_asked = pin!(self.stop.changed());
        let mut stop_asked = OnWake::new(stop_asked);
        let close_wanted = pin!(conn.close.notified());
        let mut close_wanted = OnWake::new(close_wanted);
        let refused = pin!(refusals(conn, self.generations));
        let mut refused = OnWake::new(refused);
        loop {
            tokio::select! {
                r = c.as_mut() => return Ended::Done(r),
                _ = &mut stop_asked, if !stopping => {
                    stopping = true;
                    graceful(c.as_mut());
                }
                // A refusal asked to close: give the reply a moment to leave first (HTTP/2
                // sends a GOAWAY ahead of frames still queued), then close gracefully.
                _ = &mut close_wanted, if !closing && !close_asked => {
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
                e = &mut refused => return e,
                // Once closing, the grace timer bounds what is left.
                e = &mut timer, if !closing => match e {
                    Expiry::HeaderRead => return Ended::HeaderTimeout,
                    Expiry::FirstRequest => return Ended::FirstRequestTimeout,
                    Expiry::Idle => {
                        closing = true;
                        graceful(c.as_mut());
                        grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                    }
                    Expiry::Shed => {
                        match quiet {
                            // hyper is not being polled here, so a quiet clock (no request
                            // in flight, no head arriving, every request body read to its
                            // end) means hyper is between requests; bytes still in the
                            // socket stay there for the next connection.
                            Quiet::Shed(keep_open) if !stopping && conn.clock.quiet() => {
                                conn.upstream_timers.clear();
                                keep_open.store(true, Relaxed);
                                closing = true;
                                graceful(c.as_mut());
                                grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                            }
                            // One poll with h2's release on: it has nothing to do (no
                            // stream in flight), so it reads nothing new, flushes what is
                            // written and gives both buffers back.
                            Quiet::Trim if !stopping && conn.clock.quiet() => {
                                conn.upstream_timers.clear();
                                let polled = std::future::poll_fn(|cx| {
                                    Poll::Ready(h2::release_buffers(|| c.as_mut().poll(cx)))
                                })
                                .await;
                                if let Poll::Ready(r) = polled {
                                    return Ended::Done(r);
                                }
                                shed_at = Some(conn.clock.idle_since());
                            }
                            // Stopping: the connection is ending anyway, so time it
                            // without Shed (which would be due again at once).
                            _ => {}
                        }
                        let shed = shed_after.filter(|_| !stopping);
                        timer.inner().set(watchdog(&conn.clock, self.timeouts, shed, shed_at));
                        timer.rearm();
                    }
                },
            }
        }
    }
}
