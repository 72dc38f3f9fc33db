//! The listener: binds, accepts TCP, tells TLS from plain HTTP (which gets nginx's
//! "plain HTTP request was sent to HTTPS port" page), completes the TLS handshake within
//! its timeout, reaches the client's verdict (from the verify cache or computed), and hands
//! the connection to [`crate::connection::serve`]. On shutdown it stops accepting and waits
//! for open connections to drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client_auth::{CertProblem, Peer};
use crate::config::GateConfig;
use crate::conn::Conn;
use crate::connection;
use crate::error::GateError;
use crate::state::State;

/// A bound gateway, ready to run.
pub struct Gateway {
    state: Arc<State>,
    /// The HTTP listener (none for a gateway of TCP tunnels only).
    listener: Option<TcpListener>,
    /// One listener per `[[tcp]]` tunnel, in configuration order.
    tunnels: Vec<TcpListener>,
}

async fn bind_addr(addr: SocketAddr) -> Result<TcpListener, GateError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| GateError::Listen { addr, cause })
}

impl Gateway {
    /// Loads every file, builds the first snapshot and binds the listeners.
    pub async fn bind(cfg: GateConfig) -> Result<Gateway, GateError> {
        let listen = cfg.listen;
        let http = !cfg.routes.is_empty();
        let tunnel_addrs: Vec<SocketAddr> = cfg.tunnels.iter().map(|t| t.listen).collect();
        let inventory = match &cfg.inventory {
            Some(i) => Some((
                mtlsgate_store::Location::parse(&i.location)
                    .map_err(|e| GateError::Inventory(e.to_string()))?,
                inventory_roots(&cfg),
                i.poll,
            )),
            None => None,
        };
        let state = State::new(cfg)?;
        if let (Some((location, roots, poll)), Some(inv)) = (inventory, state.inventory.clone()) {
            let s = state.clone();
            tokio::spawn(crate::inventory::sync(
                inv,
                location,
                roots,
                poll,
                Arc::new(move || s.inventory_changed()),
            ));
        }
        let listener = match http {
            true => Some(bind_addr(listen).await?),
            false => None,
        };
        let mut tunnels = Vec::with_capacity(tunnel_addrs.len());
        for a in tunnel_addrs {
            tunnels.push(bind_addr(a).await?);
        }
        Ok(Gateway {
            state,
            listener,
            tunnels,
        })
    }

    /// The HTTP listener's bound address (useful with port 0), if there is one.
    pub fn local_addr(&self) -> Result<Option<SocketAddr>, GateError> {
        Ok(match &self.listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        })
    }

    /// The tunnels' bound addresses, in configuration order.
    pub fn tunnel_addrs(&self) -> Result<Vec<SocketAddr>, GateError> {
        Ok(self
            .tunnels
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?)
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting, asks every
    /// connection to finish its in-flight requests, and waits for them up to the drain
    /// timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), GateError> {
        // However `run` ends (returned, or dropped with the runtime), the access log's
        // buffered lines are written, and later ones at once.
        let _flush = FlushAccessLog;
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = tracker::Tracker::default();
        let mut shutdown = pin!(shutdown);
        let mut tunnel_tasks = Vec::new();
        for (i, l) in self.tunnels.into_iter().enumerate() {
            tunnel_tasks.push(tokio::spawn(crate::tunnel::run(
                self.state.clone(),
                i,
                l,
                stop_rx.clone(),
            )));
        }
        let Some(listener) = self.listener else {
            shutdown.await;
            let _ = stop_tx.send(true);
            for t in tunnel_tasks {
                let _ = t.await;
            }
            return Ok(());
        };
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, remote)) => {
                        let state = self.state.clone();
                        let stop = stop_rx.clone();
                        let token = tracker.token();
                        tokio::spawn(async move {
                            accept(state, tcp, remote, stop).await;
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
        drop(listener);
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
        for t in tunnel_tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

/// Writes the access log's buffer when dropped.
struct FlushAccessLog;

impl Drop for FlushAccessLog {
    fn drop(&mut self) {
        crate::access_log::flush_at_exit();
    }
}

/// The serials an inventory is checked against: it must belong to a CA the gateway trusts
/// for its clients, so one of the certificates of the client CA bundles (a root, or an
/// intermediate, which `ca init` records too) must be in it.
fn inventory_roots(cfg: &GateConfig) -> Vec<String> {
    let mut files: Vec<std::path::PathBuf> = cfg.client_ca.clone();
    for t in &cfg.tunnels {
        if let crate::config::TunnelSide::Server { client_ca, .. } = &t.side {
            files.extend(client_ca.iter().cloned());
        }
    }
    let mut roots = Vec::new();
    for f in files {
        for der in mtlsgate_pki::pemfile::read_certs(&f).unwrap_or_default() {
            if let Ok(info) = mtlsgate_pki::certinfo::CertInfo::from_der(&der) {
                if info.is_ca && !roots.contains(&info.serial) {
                    roots.push(info.serial);
                }
            }
        }
    }
    roots
}

/// Counts a connection as active while alive.
struct Active<'a>(&'a State);
impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections_active.fetch_sub(1, Relaxed);
    }
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// One accepted TCP connection, up to the end of its handshake.
async fn accept(
    state: Arc<State>,
    tcp: TcpStream,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let m = &state.metrics;
    m.connections_total.fetch_add(1, Relaxed);
    m.connections_active.fetch_add(1, Relaxed);
    let _active = Active(&state);
    let _ = tcp.set_nodelay(true);
    let snap = state.load_full();
    let handshake = snap.config.timeouts.handshake;
    if snap.servers[0].tls.is_none() {
        // A plain-HTTP (egress) listener: no certificate to ask for.
        let (peer, verdict) = (
            Arc::new(Peer::none()),
            Arc::new(
                snap.servers[0]
                    .auth
                    .check(&[], rustls::pki_types::UnixTime::now()),
            ),
        );
        drop(snap);
        let conn = Arc::new(Conn::new(state.clone(), remote, None, 0, peer, verdict));
        Box::pin(connection::serve(conn, tcp, stop)).await;
        return;
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(handshake, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
            m.plain_http.fetch_add(1, Relaxed);
            // Boxed, as the handshake below: a connection's task keeps the size of its
            // largest step for its whole life, and these steps are over once served.
            Box::pin(plain_http(tcp, handshake)).await;
            return;
        }
        Ok(_) => return,
        Err(_) => {
            m.handshake_timeouts.fetch_add(1, Relaxed);
            return;
        }
    }
    let (server, tls) =
        match tokio::time::timeout(handshake, Box::pin(handshake_for(&snap, tcp))).await {
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
    let session = tls.common();
    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        m.handshakes_resumed.fetch_add(1, Relaxed);
    } else {
        m.handshakes_full.fetch_add(1, Relaxed);
    }
    let auth = &snap.server(server).auth;
    let (peer, verdict) = match session.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let (peer, verdict, fresh) = state.cache.lookup(auth, chain, snap.config.verify_cache);
            if fresh {
                if let Some(CertProblem::Invalid(f)) = &verdict.problem {
                    tracing::info!(
                        %remote,
                        "client certificate refused: {}",
                        mtlsgate_pki::printable::printable(&f.to_string())
                    );
                }
            }
            (peer, verdict)
        }
        _ => (
            Arc::new(Peer::none()),
            Arc::new(auth.check(&[], rustls::pki_types::UnixTime::now())),
        ),
    };
    match &verdict.problem {
        Some(CertProblem::NoCertificate) => m.no_certificate(),
        Some(CertProblem::Invalid(f)) => m.verify_failure(f),
        None => {}
    }
    drop(snap);
    let conn = Arc::new(Conn::new(
        state.clone(),
        remote,
        Some(session),
        server,
        peer,
        verdict,
    ));
    match tls {
        // Boxed: the task holds only what serving needs, not the handshake's steps too.
        Tls::Unbuffered(s) => Box::pin(connection::serve(conn, s, stop)).await,
        Tls::Buffered(s) => Box::pin(connection::serve(conn, s, stop)).await,
    }
}

/// A client's TLS stream once the handshake is done. Boxed: the stream (over a kilobyte
/// of TLS state) is then held once, not once for each step of the connection's task that
/// it passes through.
enum Tls {
    /// On rustls' unbuffered API: holds no buffer while the connection is idle.
    Unbuffered(Box<crate::tunnel_tls::ServerTls>),
    /// tokio-rustls, for listeners with virtual hosts (the server block, and so the
    /// `ServerConfig`, is chosen from the ClientHello first).
    Buffered(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Tls {
    fn common(&self) -> &rustls::CommonState {
        match self {
            Tls::Unbuffered(s) => s.common(),
            Tls::Buffered(s) => s.get_ref().1,
        }
    }
}

/// The TLS handshake with the server block the client's SNI chooses (read from its
/// ClientHello first when the listener has virtual hosts); returns the block's number.
async fn handshake_for(
    snap: &crate::state::Snapshot,
    tcp: TcpStream,
) -> std::io::Result<(usize, Tls)> {
    if snap.servers.len() == 1 {
        let cfg = snap.servers[0].tls.clone().ok_or_else(no_tls)?;
        let tls = crate::tunnel_tls::accept(tcp, cfg).await?;
        return Ok((0, Tls::Unbuffered(Box::new(tls))));
    }
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let server = snap.server_for_sni(start.client_hello().server_name());
    let cfg = snap.server(server).tls.clone().ok_or_else(no_tls)?;
    Ok((
        server,
        Tls::Buffered(Box::new(start.into_stream(cfg).await?)),
    ))
}

fn no_tls() -> std::io::Error {
    std::io::Error::other("this server block has no TLS configuration")
}

/// Answers plain HTTP sent to the TLS port as nginx does, then closes.
async fn plain_http(tcp: TcpStream, timeout: Duration) {
    let svc = hyper::service::service_fn(|_req| async {
        Ok::<_, Infallible>(crate::responses::plain_http_page())
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), svc);
    let _ = tokio::time::timeout(timeout, conn).await;
}

/// A tiny connection tracker: tokens alive = connections open.
mod tracker {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub(crate) struct Tracker(Arc<Inner>);
    #[derive(Default)]
    pub(crate) struct Inner {
        open: AtomicUsize,
        done: Notify,
    }
    pub(crate) struct Token(Arc<Inner>);

    impl Tracker {
        pub(crate) fn token(&self) -> Token {
            self.0.open.fetch_add(1, Ordering::AcqRel);
            Token(self.0.clone())
        }
        pub(crate) fn open(&self) -> usize {
            self.0.open.load(Ordering::Acquire)
        }
        pub(crate) async fn wait(&self) {
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
