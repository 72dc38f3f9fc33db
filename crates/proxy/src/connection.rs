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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mtlsgate_headwatch::Watched;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::client_auth::{recheck, Admitted, Lost};
use crate::config::Timeouts;
use crate::conn::{Clock, Conn, Expiry};

/// Sleeps until a timer runs out.
async fn watchdog(clock: &Clock, timeouts: &Timeouts) -> Expiry {
    loop {
        match clock.check(timeouts) {
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
        Ended::FirstRequestTimeout => {
            conn.state.metrics.header_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(remote = %conn.remote, "closed: no request within the first_request timeout after the handshake");
        }
        Ended::Idle => tracing::debug!(remote = %conn.remote, "closed: idle"),
        Ended::Refused => {}
    }
}

/// How [`drive`] ended.
enum Ended {
    Done(Result<(), hyper::Error>),
    HeaderTimeout,
    FirstRequestTimeout,
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
                Expiry::FirstRequest => return Ended::FirstRequestTimeout,
                Expiry::Idle => {
                    closing = true;
                    graceful(c.as_mut());
                    grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                }
            },
        }
    }
}
