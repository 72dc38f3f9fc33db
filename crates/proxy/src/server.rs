//! The listener: accepts TCP, completes the TLS handshake (with a timeout), verifies the
//! client once per connection — new or resumed — and serves HTTP/1.1 or HTTP/2 (by ALPN),
//! proxying each request to its route's upstream over pooled keep-alive connections.
//!
//! Per connection: the verification outcome and the client's identity, re-checked only if
//! the snapshot changed (a reload: new CRL, new CA) or the certificate expired meanwhile.
//! Per request: route lookup, allowlist check (hash lookups), header rewrite, forward.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mtlsgate_pki::verify::{Failure, Purpose};
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{AccessLog, GateConfig, VerifyMode};
use crate::error::GateError;
use crate::headers::RenderCtx;
use crate::identity::{ClientIdentity, VerifyOutcome};
use crate::state::{Snapshot, State};
use crate::tls::forgiven_by_no_ca;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = HttpClient<HttpConnector, Incoming>;

/// Why a connection's requests are refused with 400 (nginx's 496 and 495).
#[derive(Debug, Clone)]
enum Refusal {
    NoCertificate,
    Invalid(Failure),
}

/// The verification state of a client chain against one snapshot generation.
struct Auth {
    generation: u64,
    outcome: VerifyOutcome,
    refusal: Option<Refusal>,
}

/// A client certificate chain and what it says, shared by every connection presenting it.
struct Client {
    chain: Vec<CertificateDer<'static>>,
    identity: Option<Arc<ClientIdentity>>,
    /// Unix time when the first certificate of the chain expires: a cached success is
    /// not trusted past it.
    valid_until: i64,
}

/// Verified chains, keyed by the SHA-256 of the chain, so that a client reconnecting (or
/// holding many connections) is parsed and verified once per snapshot generation rather
/// than once per connection. Entries are only reused for the generation they were
/// verified in and before the chain's first expiry.
pub(crate) struct VerifyCache {
    map: Mutex<HashMap<[u8; 32], Cached>>,
    enabled: bool,
}

type Cached = (Arc<Client>, Arc<Auth>);

const VERIFY_CACHE_MAX: usize = 16 * 1024;

impl VerifyCache {
    fn new(enabled: bool) -> Self {
        VerifyCache {
            map: Mutex::new(HashMap::new()),
            enabled,
        }
    }

    fn key(chain: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut h = Sha256::new();
        for c in chain {
            h.update((c.len() as u32).to_be_bytes());
            h.update(c.as_ref());
        }
        h.finalize().into()
    }

    /// The client and its verification for `snap`, from the cache or computed.
    fn lookup(
        &self,
        snap: &Snapshot,
        chain: &[CertificateDer<'_>],
    ) -> (Arc<Client>, Arc<Auth>, bool) {
        if !self.enabled {
            let client = Arc::new(Client::new(chain));
            let auth = Arc::new(verify_chain(snap, &client.chain));
            return (client, auth, false);
        }
        let key = Self::key(chain);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let cached = self.map.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((client, auth)) = cached {
            if auth.generation == snap.generation && now < client.valid_until {
                return (client, auth, true);
            }
        }
        let client = Arc::new(Client::new(chain));
        let auth = Arc::new(verify_chain(snap, &client.chain));
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= VERIFY_CACHE_MAX {
                m.clear();
            }
            m.insert(key, (client.clone(), auth.clone()));
        }
        (client, auth, false)
    }
}

impl Client {
    fn new(chain: &[CertificateDer<'_>]) -> Client {
        let chain: Vec<CertificateDer<'static>> =
            chain.iter().map(|d| d.clone().into_owned()).collect();
        let identity = chain
            .first()
            .and_then(|leaf| ClientIdentity::new(leaf))
            .map(Arc::new);
        let valid_until = chain
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok())
            .map(|(_, x)| x.validity().not_after.timestamp())
            .min()
            .unwrap_or(i64::MAX);
        Client {
            chain,
            identity,
            valid_until,
        }
    }

    fn none() -> Client {
        Client {
            chain: Vec::new(),
            identity: None,
            valid_until: i64::MAX,
        }
    }
}

/// What is known about a connection once its handshake is done.
struct ConnCtx {
    remote: SocketAddr,
    remote_ip: String,
    tls_protocol: &'static str,
    tls_cipher: &'static str,
    resumed: bool,
    http2: bool,
    client: Arc<Client>,
    identity: Option<Arc<ClientIdentity>>,
    auth: Mutex<Arc<Auth>>,
}

fn verify_chain(snap: &Snapshot, chain: &[CertificateDer<'static>]) -> Auth {
    let (outcome, refusal) = if snap.mode == VerifyMode::Off {
        (VerifyOutcome::None, None)
    } else if chain.is_empty() {
        let r = (snap.mode == VerifyMode::Require).then_some(Refusal::NoCertificate);
        (VerifyOutcome::None, r)
    } else {
        match snap
            .verifier
            .verify(chain, Purpose::Client, UnixTime::now())
        {
            Ok(()) => (VerifyOutcome::Success, None),
            Err(f) => {
                let forgiven = snap.mode == VerifyMode::OptionalNoCa && forgiven_by_no_ca(&f);
                let r = (!forgiven).then(|| Refusal::Invalid(f.clone()));
                (VerifyOutcome::Failed(f), r)
            }
        }
    };
    Auth {
        generation: snap.generation,
        outcome,
        refusal,
    }
}

impl ConnCtx {
    /// The connection's verification result for this snapshot, recomputed when the
    /// snapshot changed or a certificate of the chain has expired since it was checked.
    fn auth(&self, snap: &Snapshot) -> Arc<Auth> {
        let mut a = match self.auth.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        let expired = matches!(a.outcome, VerifyOutcome::Success)
            && OffsetDateTime::now_utc().unix_timestamp() >= self.client.valid_until;
        if a.generation != snap.generation || expired {
            *a = Arc::new(verify_chain(snap, &self.client.chain));
        }
        a.clone()
    }
}

/// A bound gateway, ready to run.
pub struct Gateway {
    state: Arc<State>,
    listener: TcpListener,
    upstream: Upstream,
    cache: Arc<VerifyCache>,
}

impl Gateway {
    /// Loads every file, builds the first snapshot and binds the listener.
    pub async fn bind(cfg: GateConfig) -> Result<Gateway, GateError> {
        let listen = cfg.listen;
        let timeouts = cfg.timeouts.clone();
        let verify_cache = cfg.verify_cache;
        let state = State::new(cfg)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|cause| GateError::Listen {
                addr: listen,
                cause,
            })?;
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(timeouts.upstream_connect));
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let upstream = HttpClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(conn);
        Ok(Gateway {
            state,
            listener,
            upstream,
            cache: Arc::new(VerifyCache::new(verify_cache)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, GateError> {
        Ok(self.listener.local_addr()?)
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting, asks every
    /// connection to finish its in-flight requests, and waits for them up to the drain
    /// timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), GateError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = tokio_util_tracker::Tracker::default();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((tcp, remote)) => {
                        let state = self.state.clone();
                        let upstream = self.upstream.clone();
                        let cache = self.cache.clone();
                        let stop = stop_rx.clone();
                        let token = tracker.token();
                        tokio::spawn(async move {
                            serve_conn(state, upstream, cache, tcp, remote, stop).await;
                            drop(token);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = self.state.load().config.timeouts.drain;
        let open = tracker.open();
        if open > 0 {
            tracing::info!("draining {open} connection(s), at most {drain:?}");
        }
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(
                "{} connection(s) still open after {drain:?}; closing them",
                tracker.open()
            );
        }
        Ok(())
    }
}

/// A tiny connection tracker: tokens alive = connections open.
mod tokio_util_tracker {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub struct Tracker(Arc<Inner>);
    #[derive(Default)]
    pub struct Inner {
        open: AtomicUsize,
        done: Notify,
    }
    pub struct Token(Arc<Inner>);

    impl Tracker {
        pub fn token(&self) -> Token {
            self.0.open.fetch_add(1, Ordering::AcqRel);
            Token(self.0.clone())
        }
        pub fn open(&self) -> usize {
            self.0.open.load(Ordering::Acquire)
        }
        pub async fn wait(&self) {
            loop {
                let n = self.0.done.notified();
                if self.open() == 0 {
                    return;
                }
                n.await;
            }
        }
    }
    impl Drop for Token {
        fn drop(&mut self) {
            if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.0.done.notify_waiters();
            }
        }
    }
}

struct ActiveGuard<'a>(&'a State);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections_active.fetch_sub(1, Relaxed);
    }
}

/// OpenSSL's name for a cipher suite, as nginx's `$ssl_cipher` shows it.
fn cipher_name(s: rustls::SupportedCipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    }
}

async fn serve_conn(
    state: Arc<State>,
    upstream: Upstream,
    cache: Arc<VerifyCache>,
    tcp: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let m = &state.metrics;
    m.connections_total.fetch_add(1, Relaxed);
    m.connections_active.fetch_add(1, Relaxed);
    let _active = ActiveGuard(&state);
    let _ = tcp.set_nodelay(true);
    let snap = state.load_full();
    let timeouts = snap.config.timeouts.clone();
    let max_header = snap.config.max_header_bytes;
    let acceptor = tokio_rustls::TlsAcceptor::from(snap.tls.clone());
    let tls = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            m.handshake_errors.fetch_add(1, Relaxed);
            tracing::debug!(%remote, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            m.handshake_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if resumed {
        m.handshakes_resumed.fetch_add(1, Relaxed);
    } else {
        m.handshakes_full.fetch_add(1, Relaxed);
    }
    let tls_protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let tls_cipher = conn
        .negotiated_cipher_suite()
        .map(cipher_name)
        .unwrap_or("");
    let http2 = conn.alpn_protocol() == Some(b"h2");
    let (client, auth) = match conn.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let (client, auth, hit) = cache.lookup(&snap, chain);
            if !hit {
                if let Some(Refusal::Invalid(f)) = &auth.refusal {
                    tracing::info!(%remote, "client certificate refused: {f}");
                }
            }
            (client, auth)
        }
        _ => (Arc::new(Client::none()), Arc::new(verify_chain(&snap, &[]))),
    };
    match &auth.refusal {
        Some(Refusal::NoCertificate) => m.no_certificate(),
        Some(Refusal::Invalid(f)) => m.verify_failure(f),
        None => {}
    }
    drop(snap);
    let ctx = Arc::new(ConnCtx {
        remote,
        remote_ip: remote.ip().to_string(),
        tls_protocol,
        tls_cipher,
        resumed,
        http2,
        identity: client.identity.clone(),
        client,
        auth: Mutex::new(auth),
    });

    let activity = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let io = TokioIo::new(Activity {
        inner: tls,
        last: activity.clone(),
        started,
    });
    let svc = {
        let state = state.clone();
        let ctx = ctx.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            let ctx = ctx.clone();
            let upstream = upstream.clone();
            async move { Ok::<_, Infallible>(handle(&state, &ctx, &upstream, req).await) }
        })
    };
    let idle = timeouts.idle;
    let idle_check = async {
        loop {
            let last = Duration::from_millis(activity.load(Relaxed));
            let since = started.elapsed().saturating_sub(last);
            if since >= idle {
                return;
            }
            tokio::time::sleep(idle - since).await;
        }
    };
    let result = if http2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(max_header as u32)
            .max_concurrent_streams(256);
        let conn = b.serve_connection(io, svc);
        drive(conn, &mut stop, idle_check, |c| c.graceful_shutdown()).await
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .max_buf_size(max_header.max(8192));
        let conn = b.serve_connection(io, svc).with_upgrades();
        drive(conn, &mut stop, idle_check, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        tracing::debug!(%remote, "connection ended: {e}");
    }
}

/// Runs a hyper connection until it ends, it idles out, or shutdown is asked for (then
/// lets in-flight requests finish).
async fn drive<C, F>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    graceful: F,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
    F: Fn(Pin<&mut C>),
{
    let mut conn = pin!(conn);
    let mut idle = pin!(idle);
    let mut stopping = *stop.borrow();
    if stopping {
        graceful(conn.as_mut());
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                graceful(conn.as_mut());
            }
            _ = idle.as_mut() => return Ok(()),
        }
    }
}

/// Wraps the TLS stream and records when bytes last moved, for the idle timeout.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
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

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// A plain-text reply from the gateway itself.
fn page(status: StatusCode, title: &str, detail: Option<&str>, close: bool) -> Response<Body> {
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

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
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

/// nginx's `$host`: the Host (or :authority) without port, lower-cased.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let no_port = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    no_port.to_ascii_lowercase()
}

struct LogLine<'a> {
    ctx: &'a ConnCtx,
    auth: Option<&'a Auth>,
    method: &'a http::Method,
    path: &'a str,
    route: &'a str,
    status: u16,
    bytes: Option<u64>,
    started: Instant,
}

fn access_log(mode: AccessLog, l: LogLine<'_>) {
    if mode == AccessLog::Off {
        return;
    }
    use std::io::Write;
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let device = l
        .ctx
        .identity
        .as_ref()
        .map(|i| i.device_id())
        .unwrap_or("-");
    let verify = l
        .auth
        .map(|a| a.outcome.nginx_value())
        .unwrap_or_else(|| "-".into());
    let ms = l.started.elapsed().as_secs_f64() * 1000.0;
    let line = match mode {
        AccessLog::Json => serde_json::json!({
            "time": now,
            "remote": l.ctx.remote.to_string(),
            "device_id": device,
            "verify": verify,
            "method": l.method.as_str(),
            "path": l.path,
            "route": l.route,
            "status": l.status,
            "bytes": l.bytes,
            "latency_ms": (ms * 1000.0).round() / 1000.0,
            "tls": l.ctx.tls_protocol,
            "resumed": l.ctx.resumed,
        })
        .to_string(),
        _ => format!(
            "{now} {} device={device} verify=\"{verify}\" \"{} {}\" route={} status={} bytes={} latency={ms:.3}ms",
            l.ctx.remote,
            l.method,
            l.path,
            if l.route.is_empty() { "-" } else { l.route },
            l.status,
            l.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

async fn handle(
    state: &State,
    ctx: &ConnCtx,
    upstream: &Upstream,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let snap = state.load_full();
    let log_mode = snap.config.access_log;
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let auth = ctx.auth(&snap);
    let close = !ctx.http2;
    let mut route_prefix = "";
    let resp = 'resp: {
        match &auth.refusal {
            Some(Refusal::NoCertificate) => {
                break 'resp page(
                    StatusCode::BAD_REQUEST,
                    "No required SSL certificate was sent",
                    None,
                    close,
                )
            }
            Some(Refusal::Invalid(f)) => {
                break 'resp page(
                    StatusCode::BAD_REQUEST,
                    "The SSL certificate error",
                    Some(&f.to_string()),
                    close,
                )
            }
            None => {}
        }
        let Some(route) = snap.route(req.uri().path()) else {
            break 'resp page(
                StatusCode::NOT_FOUND,
                "no route for this path",
                Some(&format!(
                    "{} matches no configured route prefix",
                    req.uri().path()
                )),
                false,
            );
        };
        route_prefix = route.prefix.as_str();
        if !route.policy.is_open() {
            let denied = match (&ctx.identity, auth.outcome.is_success()) {
                (Some(id), true) => route.policy.check(id).err().map(|d| {
                    format!(
                        "device {} is not on the allowlist for {}",
                        d.device_id, route.prefix
                    )
                }),
                (Some(id), false) => Some(format!(
                    "device {} presented a certificate that was not verified",
                    id.device_id()
                )),
                (None, _) => Some(format!(
                    "{} is open only to listed devices; present a client certificate",
                    route.prefix
                )),
            };
            if let Some(why) = denied {
                state.metrics.denied.fetch_add(1, Relaxed);
                tracing::info!(remote = %ctx.remote, "denied: {why}");
                break 'resp page(StatusCode::FORBIDDEN, "access denied", Some(&why), false);
            }
        }
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let host = host_of(&req);
        let (mut parts, body) = req.into_parts();
        let pq = route.upstream_path(&path_and_query);
        let uri = http::Uri::builder()
            .scheme(route.scheme.clone())
            .authority(route.authority.clone())
            .path_and_query(pq)
            .build();
        let Ok(uri) = uri else {
            break 'resp page(StatusCode::BAD_REQUEST, "bad request path", None, false);
        };
        if parts.version == Version::HTTP_2 {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.entry(header::HOST).or_insert(v);
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
        let cx = RenderCtx {
            identity: ctx.identity.as_deref(),
            outcome: &auth.outcome,
            remote: ctx.remote,
            remote_ip: &ctx.remote_ip,
            host: &host,
            request_uri: &path_and_query,
            tls_protocol: ctx.tls_protocol,
            tls_cipher: ctx.tls_cipher,
            resumed: ctx.resumed,
            now: OffsetDateTime::now_utc(),
        };
        route.headers.apply(&mut parts.headers, &cx);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let up_req = Request::from_parts(parts, body);
        let timeout = snap.config.timeouts.upstream_response;
        let authority = route.authority.clone();
        let mut resp = match tokio::time::timeout(timeout, upstream.request(up_req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                state.metrics.upstream_errors.fetch_add(1, Relaxed);
                let why = if e.is_connect() {
                    format!(
                        "the upstream {authority} cannot be reached ({})",
                        root_cause(&e)
                    )
                } else {
                    format!("the upstream {authority} failed ({})", root_cause(&e))
                };
                tracing::warn!("{why}");
                break 'resp page(
                    StatusCode::BAD_GATEWAY,
                    "upstream unavailable",
                    Some(&why),
                    false,
                );
            }
            Err(_) => {
                state.metrics.upstream_timeouts.fetch_add(1, Relaxed);
                let why = format!(
                    "the upstream {authority} did not answer within {}s",
                    timeout.as_secs_f64()
                );
                tracing::warn!("{why}");
                break 'resp page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream timed out",
                    Some(&why),
                    false,
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((c, u)) => {
                            let mut c = TokioIo::new(c);
                            let mut u = TokioIo::new(u);
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        }
                        Err(e) => tracing::debug!("upgrade failed: {e}"),
                    }
                });
                let (p, _) = resp.into_parts();
                break 'resp Response::from_parts(p, full(Bytes::new()));
            }
        }
        strip_hop_by_hop(resp.headers_mut());
        resp.map(|b| b.boxed())
    };
    let status = resp.status().as_u16();
    state.metrics.response(status);
    if log_mode != AccessLog::Off {
        let bytes = hyper::body::Body::size_hint(resp.body()).exact();
        access_log(
            log_mode,
            LogLine {
                ctx,
                auth: Some(&auth),
                method: &method,
                path: &path_and_query,
                route: route_prefix,
                status,
                bytes,
                started,
            },
        );
    }
    resp
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
