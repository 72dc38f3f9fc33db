//! TCP tunnels (`[[tcp]]` in gate.toml, `mtlsgate tunnel`): bytes carried both ways
//! between a client and a target, with TLS on one side.
//!
//! - **Server side** (the tunnel has a certificate): terminates mTLS from devices. Since TCP
//!   carries no headers to answer with, the decision is made in the handshake — client
//!   verification and the tunnel's allowlist — and a refused client gets a TLS alert
//!   (`access_denied` for the allowlist) and a log line naming its device ID. Optionally a
//!   PROXY protocol v2 header tells the backend the client's address and device ID.
//! - **Client side** (no certificate): accepts plain TCP and opens mTLS to the target,
//!   presenting the configured client certificate.
//!
//! Bytes are copied without per-byte work, and **no buffer is held while a connection is
//! idle**: the copy waits for a socket to become readable, takes a buffer from a small
//! per-thread pool (`tunnel_buf`), moves what is there, and gives the buffer back. A
//! direction whose destination would block keeps its bytes (and the buffer) until that
//! side is writable, while the other direction goes on moving: two peers that each write
//! before they read (an echo server under a bulk upload) cannot deadlock the tunnel. The
//! server side's TLS does the same with its record buffers (`tunnel_tls`, on rustls'
//! unbuffered API), and the client's certificate chain is read from the TLS session when a
//! reload rechecks it, not copied. Half-close is passed on; a tunnel with nothing moving
//! for `idle` is closed; when a reload (or an inventory change) refuses a connected device,
//! its tunnel is closed at once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client_auth::{recheck, Admitted};
use crate::identity::ClientIdentity;
use crate::state::{State, TunnelRuntime};
use crate::tunnel_buf::{HasSocket, Loan};
use crate::tunnel_tls::{self, ServerTls};

/// Bytes read from one side that the other side has not taken yet, in a buffer on loan
/// (held only while the other side is not writable), or a flush still owed.
struct Backlog {
    loan: Loan,
    start: usize,
    end: usize,
}

/// A direction's backlog and since when it has been blocked.
type Blocked = Option<(Backlog, Instant)>;

/// How a transfer ended.
enum Moved {
    /// Bytes moved (or none were ready); the source stays open.
    Some,
    /// The source sent its end (FIN or TLS close_notify).
    Eof,
    /// The destination would block: these bytes (or a flush) wait for it to be writable.
    /// Meanwhile the other direction keeps moving, so two peers that each write before
    /// they read cannot deadlock the tunnel.
    Blocked(Backlog),
}

/// Moves whatever `src` has ready into `dst`, first finishing `backlog`, without ever
/// waiting: reads, writes and the flush are polled once with a no-op waker. Pending means
/// the socket said WouldBlock and its readiness was cleared, so the caller waits for it
/// again: for `src` to be readable, or, when `dst` would block, for `dst` to be writable.
fn transfer<S, D>(src: &mut S, dst: &mut D, backlog: Option<Backlog>) -> std::io::Result<Moved>
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut loan = match backlog {
        Some(mut b) => {
            while b.start < b.end {
                match Pin::new(&mut *dst).poll_write(&mut cx, &b.loan.buf()[b.start..b.end]) {
                    Poll::Pending => return Ok(Moved::Blocked(b)),
                    Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => b.start += n,
                    Poll::Ready(Err(e)) => return Err(e),
                }
            }
            b.loan
        }
        None => Loan::take(),
    };
    let result = loop {
        let n = {
            let mut rb = ReadBuf::new(loan.buf());
            match Pin::new(&mut *src).poll_read(&mut cx, &mut rb) {
                Poll::Pending => break Moved::Some,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    break Moved::Eof
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => rb.filled().len(),
            }
        };
        if n == 0 {
            break Moved::Eof;
        }
        let mut start = 0;
        while start < n {
            match Pin::new(&mut *dst).poll_write(&mut cx, &loan.buf()[start..n]) {
                Poll::Pending => {
                    return Ok(Moved::Blocked(Backlog {
                        loan,
                        start,
                        end: n,
                    }))
                }
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(w)) => start += w,
                Poll::Ready(Err(e)) => return Err(e),
            }
        }
    };
    // A TLS destination may hold a record it could not send yet.
    match Pin::new(&mut *dst).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(result),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending if matches!(result, Moved::Eof) => Ok(result),
        Poll::Pending => Ok(Moved::Blocked(Backlog {
            loan,
            start: 0,
            end: 0,
        })),
    }
}

/// `io` within `idle`, or a `TimedOut` error.
async fn stalled<T>(
    idle: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(idle, io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer stopped reading",
        )),
    }
}

/// One direction's turn: finishes its backlog and moves what is ready ([`transfer`]),
/// keeping a new backlog in `blocked` with the time it became blocked (which only bytes
/// moving resets), and `last` at the last bytes moved. `Ok(true)`: the source ended.
fn direction<S, D>(
    src: &mut S,
    dst: &mut D,
    blocked: &mut Blocked,
    last: &mut Instant,
) -> std::io::Result<bool>
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    let (backlog, since) = match blocked.take() {
        Some((b, at)) => (Some(b), Some(at)),
        None => (None, None),
    };
    let before = backlog.as_ref().map(|b| (b.start, b.end));
    match transfer(src, dst, backlog)? {
        Moved::Some => *last = Instant::now(),
        Moved::Blocked(b) => {
            let progressed = before != Some((b.start, b.end));
            if progressed {
                *last = Instant::now();
            }
            let at = match since {
                Some(at) if !progressed => at,
                _ => Instant::now(),
            };
            *blocked = Some((b, at));
        }
        Moved::Eof => return Ok(true),
    }
    Ok(false)
}

/// Why a tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    Closed,
    Idle,
    Refused(String),
    Error(String),
    Shutdown,
}

/// Carries bytes both ways until both sides have closed, nothing moves for `idle`,
/// `recheck` (called with `a` when the snapshot changes) refuses the client, or shutdown.
async fn pump<A, B>(
    mut a: A,
    mut b: B,
    idle: Duration,
    mut generations: Option<watch::Receiver<u64>>,
    recheck: impl Fn(&A) -> Option<String>,
    mut stop: watch::Receiver<bool>,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin + HasSocket,
    B: AsyncRead + AsyncWrite + Unpin + HasSocket,
{
    enum Ev {
        A,
        B,
        Changed,
        Idle,
        Stop,
    }
    let (mut a_eof, mut b_eof) = (false, false);
    // Bytes from A waiting for B to be writable, and from B waiting for A, with the time
    // each direction became blocked: a peer that stops reading for `idle` ends the tunnel.
    let (mut ab, mut ba): (Blocked, Blocked) = (None, None);
    let mut last = Instant::now();
    // Bytes may already wait inside the TLS session (sent with the handshake).
    let mut first = true;
    loop {
        let deadline = [
            Some(last + idle),
            ab.as_ref().map(|(_, at)| *at + idle),
            ba.as_ref().map(|(_, at)| *at + idle),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(last + idle);
        let ev = if first {
            first = false;
            Ev::A
        } else {
            tokio::select! {
                r = a.socket().readable(), if !a_eof && ab.is_none() => match r { Ok(()) => Ev::A, Err(e) => return Ended::Error(e.to_string()) },
                r = b.socket().writable(), if ab.is_some() => match r { Ok(()) => Ev::A, Err(e) => return Ended::Error(e.to_string()) },
                r = b.socket().readable(), if !b_eof && ba.is_none() => match r { Ok(()) => Ev::B, Err(e) => return Ended::Error(e.to_string()) },
                r = a.socket().writable(), if ba.is_some() => match r { Ok(()) => Ev::B, Err(e) => return Ended::Error(e.to_string()) },
                c = async { match generations.as_mut() { Some(g) => g.changed().await, None => std::future::pending().await } } => {
                    if c.is_err() { generations = None; continue; }
                    Ev::Changed
                }
                _ = tokio::time::sleep_until(deadline) => Ev::Idle,
                _ = stop.changed() => Ev::Stop,
            }
        };
        match ev {
            Ev::A => match direction(&mut a, &mut b, &mut ab, &mut last) {
                Ok(false) => {}
                Ok(true) => {
                    a_eof = true;
                    let _ = stalled(idle, b.shutdown()).await;
                }
                Err(e) => return Ended::Error(e.to_string()),
            },
            Ev::B => match direction(&mut b, &mut a, &mut ba, &mut last) {
                Ok(false) => {}
                Ok(true) => {
                    b_eof = true;
                    let _ = stalled(idle, a.shutdown()).await;
                }
                Err(e) => return Ended::Error(e.to_string()),
            },
            Ev::Changed => {
                if let Some(why) = recheck(&a) {
                    return Ended::Refused(why);
                }
            }
            Ev::Idle => {
                let now = Instant::now();
                let stuck = |d: &Blocked| d.as_ref().is_some_and(|(_, at)| now >= *at + idle);
                if now >= last + idle || stuck(&ab) || stuck(&ba) {
                    return Ended::Idle;
                }
            }
            Ev::Stop => return Ended::Shutdown,
        }
        if a_eof && b_eof && ab.is_none() && ba.is_none() {
            return Ended::Closed;
        }
    }
}

/// Accepts connections for tunnel number `index` until `stop`, then waits (up to the
/// drain timeout) for open tunnels.
pub(crate) async fn run(
    state: Arc<State>,
    index: usize,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut stop_accept = stop.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let snap = state.load_full();
                    let Some(t) = snap.tunnels.get(index) else { continue };
                    if active.load(Ordering::Relaxed) >= t.config.max_connections {
                        state.metrics.tunnels_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%remote, "tunnel {}: {} connections open, the limit: refused", t.config.listen, t.config.max_connections);
                        continue;
                    }
                    active.fetch_add(1, Ordering::Relaxed);
                    state.metrics.tunnels_active.fetch_add(1, Ordering::Relaxed);
                    let guard = ActiveTunnel(active.clone(), state.clone());
                    let (state, stop) = (state.clone(), stop.clone());
                    drop(snap);
                    tokio::spawn(async move {
                        serve(state, index, tcp, remote, stop).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    tracing::warn!("tunnel accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop_accept.changed() => break,
        }
    }
    drop(listener);
    let drain = state.load().config.timeouts.drain;
    let deadline = Instant::now() + drain;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct ActiveTunnel(Arc<AtomicUsize>, Arc<State>);
impl Drop for ActiveTunnel {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1
            .metrics
            .tunnels_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn with_timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, f).await.ok()
}

async fn serve(
    state: Arc<State>,
    index: usize,
    tcp: TcpStream,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let snap = state.load_full();
    let Some(t) = snap.tunnels.get(index) else {
        return;
    };
    let handshake = snap.config.timeouts.handshake;
    let (listen, target, idle, connect) = (
        t.config.listen,
        t.config.target.clone(),
        t.config.idle,
        t.config.connect_timeout,
    );
    match &t.side {
        TunnelRuntime::Server {
            tls,
            proxy_protocol,
            ..
        } => {
            let proxy_protocol = *proxy_protocol;
            let config = tls.clone();
            drop(snap);
            let tls = match with_timeout(handshake, tunnel_tls::accept(tcp, config)).await {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    // Refusals were logged, with the device ID, by the handshake verifier.
                    tracing::debug!(%remote, "tunnel {listen}: handshake failed: {e}");
                    return;
                }
                None => {
                    tracing::debug!(%remote, "tunnel {listen}: handshake timed out");
                    return;
                }
            };
            // The chain stays in the TLS session (no copy per tunnel); rechecks read it there.
            let chain = tls.peer_certificates().unwrap_or_default();
            let identity = chain.first().and_then(|leaf| ClientIdentity::new(leaf));
            let device = identity
                .as_ref()
                .map(|i| i.device_label().into_owned())
                .unwrap_or_else(|| "-".into());
            // Checked again after the handshake: the state may have changed meanwhile.
            if let Some(why) = refused(&state, index, chain, identity.as_ref()) {
                tracing::info!(%remote, %device, "tunnel {listen}: refused: {why}");
                return;
            }
            let backend = match with_timeout(connect, TcpStream::connect(&target)).await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    tracing::warn!(%remote, %device, "tunnel {listen}: the target {target} cannot be reached ({e})");
                    return;
                }
                None => {
                    tracing::warn!(%remote, %device, "tunnel {listen}: the target {target} did not accept within {connect:?}");
                    return;
                }
            };
            let _ = backend.set_nodelay(true);
            let mut backend = backend;
            if proxy_protocol {
                let local = backend.local_addr().ok();
                let header = proxy_v2_header(
                    remote,
                    local.unwrap_or(remote),
                    identity.as_ref().and_then(|i| i.device_id()),
                    crate::tls::protocol_name(tls.protocol_version()),
                );
                if let Err(e) = backend.write_all(&header).await {
                    tracing::warn!(%remote, "tunnel {listen}: cannot send the PROXY header to {target} ({e})");
                    return;
                }
            }
            tracing::info!(%remote, %device, "tunnel {listen}: open to {target}");
            let st = state.clone();
            let ended = pump(
                tls,
                backend,
                idle,
                Some(state.subscribe()),
                move |tls: &ServerTls| {
                    let chain = tls.peer_certificates().unwrap_or_default();
                    refused(&st, index, chain, identity.as_ref())
                },
                stop,
            )
            .await;
            log_end(&ended, remote, &device, listen);
        }
        TunnelRuntime::Client {
            connector,
            server_name,
        } => {
            let (connector, server_name) = (connector.clone(), server_name.clone());
            drop(snap);
            let remote_tcp = match with_timeout(connect, TcpStream::connect(&target)).await {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::warn!(%remote, "tunnel {listen}: the target {target} cannot be reached ({e})");
                    return;
                }
                None => {
                    tracing::warn!(%remote, "tunnel {listen}: the target {target} did not accept within {connect:?}");
                    return;
                }
            };
            let _ = remote_tcp.set_nodelay(true);
            let tls = match with_timeout(handshake, connector.connect(server_name, remote_tcp))
                .await
            {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    let name = target.clone();
                    let why = crate::upstream::tls_failure(&e, &name, true)
                        .unwrap_or_else(|| e.to_string());
                    tracing::warn!(%remote, "tunnel {listen}: TLS with {target} failed: {why}");
                    return;
                }
                None => {
                    tracing::warn!(%remote, "tunnel {listen}: the TLS handshake with {target} timed out");
                    return;
                }
            };
            tracing::info!(%remote, "tunnel {listen}: open to {target}");
            let ended = pump(tcp, tls, idle, None, |_| None, stop).await;
            log_end(&ended, remote, "-", listen);
        }
    }
}

fn log_end(ended: &Ended, remote: SocketAddr, device: &str, listen: SocketAddr) {
    match ended {
        Ended::Refused(why) => {
            tracing::info!(%remote, %device, "tunnel {listen}: closed, the client is no longer let in: {why}")
        }
        Ended::Idle => {
            tracing::debug!(%remote, %device, "tunnel {listen}: closed after the idle timeout")
        }
        Ended::Error(e) => tracing::debug!(%remote, %device, "tunnel {listen}: ended: {e}"),
        Ended::Closed | Ended::Shutdown => {
            tracing::debug!(%remote, %device, "tunnel {listen}: closed")
        }
    }
}

/// Whether the current snapshot refuses this client on tunnel `index` (a revoked or
/// expired certificate, a device no longer listed): `Some(reason)`.
fn refused(
    state: &State,
    index: usize,
    chain: &[CertificateDer<'static>],
    identity: Option<&ClientIdentity>,
) -> Option<String> {
    let snap = state.load_full();
    let t = snap.tunnels.get(index)?;
    let TunnelRuntime::Server { auth, policy, .. } = &t.side else {
        return None;
    };
    let (_, verdict, _) = state.cache.lookup(auth, chain, snap.config.verify_cache);
    let name = format!("tunnel {}", t.config.listen);
    recheck(
        &verdict,
        identity,
        state.inventory.as_deref(),
        Admitted::Bound(Some((&name, policy))),
    )
    .err()
    .map(|lost| lost.to_string())
}

/// A PROXY protocol v2 header (HAProxy's spec): the client's and our addresses, and an SSL
/// TLV saying the client connected over TLS with a verified certificate, with its TLS
/// version and the device ID as the CN sub-TLV (what HAProxy sends with
/// `send-proxy-v2-ssl-cn`).
fn proxy_v2_header(
    src: SocketAddr,
    dst: SocketAddr,
    device_id: Option<&str>,
    tls_version: &str,
) -> Vec<u8> {
    const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    const PP2_TYPE_SSL: u8 = 0x20;
    const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
    const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
    const PP2_CLIENT_SSL: u8 = 0x01;
    const PP2_CLIENT_CERT_CONN: u8 = 0x02;
    let v6 = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut addrs = Vec::with_capacity(36);
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            addrs.extend_from_slice(&v6(s).octets());
            addrs.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    let mut ssl = vec![PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, 0, 0, 0];
    let mut sub = |kind: u8, value: &[u8]| {
        let n = value.len().min(u16::MAX as usize);
        ssl.push(kind);
        ssl.extend_from_slice(&(n as u16).to_be_bytes());
        ssl.extend_from_slice(&value[..n]);
    };
    if !tls_version.is_empty() {
        sub(PP2_SUBTYPE_SSL_VERSION, tls_version.as_bytes());
    }
    if let Some(d) = device_id {
        sub(PP2_SUBTYPE_SSL_CN, d.as_bytes());
    }
    let mut tlv = vec![PP2_TYPE_SSL];
    tlv.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
    tlv.extend_from_slice(&ssl);
    let len = (addrs.len() + tlv.len()) as u16;
    let mut out = Vec::with_capacity(16 + len as usize);
    out.extend_from_slice(SIG);
    out.push(0x21);
    out.push(family);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&addrs);
    out.extend_from_slice(&tlv);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_carries_addresses_and_the_device_id() {
        let src: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let dst: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let h = proxy_v2_header(src, dst, Some("dev1.d.example.local"), "TLSv1.3");
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21, "version 2, PROXY");
        assert_eq!(h[13], 0x11, "TCP over IPv4");
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..20], &[192, 0, 2, 7]);
        assert_eq!(&h[20..24], &[127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 40000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 1883);
        // The SSL TLV: client flags, verify = 0 (success), then the sub-TLVs.
        assert_eq!(h[28], 0x20);
        let tlv_len = u16::from_be_bytes([h[29], h[30]]) as usize;
        assert_eq!(h.len(), 31 + tlv_len);
        assert_eq!(h[31], 0x03);
        assert_eq!(&h[32..36], &[0, 0, 0, 0]);
        assert_eq!(h[36], 0x21);
        assert_eq!(&h[39..46], b"TLSv1.3");
        assert_eq!(h[46], 0x22);
        assert_eq!(u16::from_be_bytes([h[47], h[48]]), 20);
        assert_eq!(&h[49..], b"dev1.d.example.local");
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let src: SocketAddr = "[2001:db8::1]:5".parse().expect("addr");
        let dst: SocketAddr = "127.0.0.1:6".parse().expect("addr");
        let h = proxy_v2_header(src, dst, None, "");
        assert_eq!(h[13], 0x21);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]) as usize, 36 + 3 + 5);
    }
}
