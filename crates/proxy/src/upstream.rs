//! Connections to upstreams: one pooled client per route, plain HTTP/1.1 or TLS (nginx's
//! `proxy_ssl_*`): the upstream's certificate is verified against the route's CA bundle (or
//! the system's trust store) and its name (`upstream_server_name`, like `proxy_ssl_name`),
//! and a client certificate is presented when one is configured. HTTP/2 is used when the
//! upstream offers it by ALPN (on routes that send the upstream its own Host). The trust
//! anchors and the client certificate live behind swaps, so a reload (the agent renewing a short-lived certificate in place) takes effect
//! for new connections while pooled and in-flight ones finish undisturbed. Failed TLS
//! handshakes are described in words for the 502 page ([`tls_failure`]).
//!
//! Upstreams that speak HTTP/1.1 (plain ones, and TLS ones not offered h2) are reached
//! through [`idle`]: connections made with hyper's `client::conn::http1` and kept, between
//! requests, in a short list per worker thread (as HAProxy's `http-reuse`), so a request
//! takes a ready connection without the legacy pool's key hashing, checkout and channel
//! hand-off. A connection goes back to the list once its response head has arrived, is
//! taken again only when it is ready for a new request, and is closed once it has been
//! unused for [`IDLE_TIMEOUT`] (seen when that thread next keeps a connection), or when the
//! upstream closes it. Upstreams that may speak HTTP/2 keep hyper-util's pool, which
//! multiplexes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::uri::{Authority, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, SignatureScheme};

use crate::config::UpstreamTls;
use crate::conn::Clock;
use crate::error::GateError;

/// A route's upstream client (cheap to clone; clones share the pool).
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    inner: Inner,
    /// Names this client's connections in the per-thread lists (never reused, unlike an
    /// address): a client rebuilt from changed files never takes the old one's.
    id: u64,
    /// The Host header for the upstream URL's authority, when the request carries none.
    host: Arc<OnceLock<(Authority, HeaderValue)>>,
    /// What the client was built from, including a digest of the TLS files' contents:
    /// a reload reuses the client (and its pool) only when all of it is unchanged.
    pub(crate) built_from: BuiltFrom,
}

/// The settings and file contents a client was made from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BuiltFrom {
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<UpstreamTls>,
    /// SHA-256 over the CA bundle, the client certificate chain and key.
    pub(crate) material: [u8; 32],
}

#[derive(Clone)]
enum Inner {
    /// Plain HTTP/1.1: connections of our own, kept per thread.
    Plain(HttpConnector),
    /// TLS, HTTP/1.1 only (no h2 offered): connections of our own, kept per thread.
    Tls1(HttpsConnector<HttpConnector>),
    /// TLS with h2 offered: hyper-util's pool (an HTTP/2 connection is shared).
    Tls(Box<Client<HttpsConnector<HttpConnector>, RequestBody>>),
}

/// Why an upstream exchange failed: connecting (refused, unreachable, TLS), or the
/// exchange on a connection.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Exchange(hyper::Error),
    Pooled(hyper_util::client::legacy::Error),
}

impl UpstreamError {
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Exchange(_) => false,
            UpstreamError::Pooled(e) => e.is_connect(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Exchange(e) => e.fmt(f),
            UpstreamError::Pooled(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(&**e),
            UpstreamError::Exchange(e) => Some(e),
            UpstreamError::Pooled(e) => Some(e),
        }
    }
}

/// How long a kept upstream connection may wait unused before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many kept connections per worker thread; the oldest goes first.
const IDLE_MAX: usize = 1024;

/// The kept HTTP/1.1 upstream connections of one worker thread.
mod idle {
    use super::*;

    struct Kept {
        client: u64,
        authority: Authority,
        sender: SendRequest<RequestBody>,
        since: Instant,
    }

    thread_local! {
        /// Oldest first.
        static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
    }

    /// A kept connection of `client` to `authority` that is ready for a request (the most
    /// recently kept first); closed ones met on the way are dropped.
    pub(super) fn take(client: u64, authority: &Authority) -> Option<SendRequest<RequestBody>> {
        KEPT.with_borrow_mut(|kept| {
            let mut i = kept.len();
            while i > 0 {
                i -= 1;
                let k = &kept[i];
                if k.sender.is_closed() {
                    kept.remove(i);
                } else if k.client == client && k.sender.is_ready() && k.authority == *authority {
                    return Some(kept.remove(i).sender);
                }
            }
            None
        })
    }

    /// Keeps a connection for the next request; drops those unused for [`IDLE_TIMEOUT`].
    pub(super) fn put(client: u64, authority: &Authority, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        KEPT.with_borrow_mut(|kept| {
            let stale = kept
                .iter()
                .take_while(|k| now.saturating_duration_since(k.since) >= IDLE_TIMEOUT)
                .count();
            let over = (kept.len() + 1).saturating_sub(IDLE_MAX);
            kept.drain(..stale.max(over));
            kept.push(Kept {
                client,
                authority: authority.clone(),
                sender,
                since: now,
            });
        })
    }
}

/// A client's request body on its way upstream, noting whether reading it failed — a
/// malformed chunked body is the client's fault (400), not the upstream's (502).
pub(crate) struct RequestBody {
    inner: Incoming,
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// The HTTP/1.1 connection's clock, told when a body it counted is read to its end.
    ends: Option<Arc<Clock>>,
}

impl RequestBody {
    /// Wraps `inner`; the flag is set if reading it fails. With `clock` (an HTTP/1.1
    /// connection's), a body that has not ended yet tells the clock when it does.
    pub(crate) fn new(
        inner: Incoming,
        clock: Option<&Arc<Clock>>,
    ) -> (RequestBody, Arc<std::sync::atomic::AtomicBool>) {
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ends = clock
            .filter(|_| !hyper::body::Body::is_end_stream(&inner))
            .cloned();
        (
            RequestBody {
                inner,
                failed: failed.clone(),
                ends,
            },
            failed,
        )
    }
}

impl hyper::body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Err(_))) => {
                self.failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            std::task::Poll::Ready(None) => {
                if let Some(clock) = self.ends.take() {
                    clock.body_ended();
                }
            }
            std::task::Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                if let Some(clock) = self.ends.take() {
                    clock.body_ended();
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(connect_timeout));
    conn.set_keepalive(Some(Duration::from_secs(60)));
    conn.enforce_http(false);
    conn
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn pool<C>(connector: C) -> Client<C, RequestBody>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

impl UpstreamClient {
    /// What a client for these settings would be built from (reads the TLS files).
    pub(crate) fn plan(
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<(BuiltFrom, Option<Material>), GateError> {
        let (material, digest) = match tls {
            Some(t) => {
                let m = load_material(t)?;
                let d = m.digest;
                (Some(m), d)
            }
            None => (None, [0; 32]),
        };
        Ok((
            BuiltFrom {
                connect_timeout,
                tls: tls.cloned(),
                material: digest,
            },
            material,
        ))
    }

    /// A client for a route, from [`UpstreamClient::plan`].
    pub(crate) fn new(
        built_from: BuiltFrom,
        material: Option<Material>,
    ) -> Result<UpstreamClient, GateError> {
        let http = http_connector(built_from.connect_timeout);
        let (Some(t), Some(m)) = (&built_from.tls, material) else {
            return Ok(UpstreamClient::with(Inner::Plain(http), built_from));
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| GateError::UpstreamTls(format!("no usable TLS version ({e})")))?
            .with_webpki_verifier(m.verifier)
            .with_client_cert_resolver(Arc::new(Present(m.client_cert)));
        // ALPN (h2 when `t.http2`, http/1.1) is set by the connector builder below.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_only();
        let builder = match &t.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    GateError::UpstreamTls(format!("`{name}` is not a host name or IP address"))
                })?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let builder = builder.enable_http1();
        let inner = if t.http2 {
            Inner::Tls(Box::new(pool(builder.enable_http2().wrap_connector(http))))
        } else {
            Inner::Tls1(builder.wrap_connector(http))
        };
        Ok(UpstreamClient::with(inner, built_from))
    }

    fn with(inner: Inner, built_from: BuiltFrom) -> UpstreamClient {
        UpstreamClient {
            inner,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            host: Arc::new(OnceLock::new()),
            built_from,
        }
    }

    /// Sends a request (its URI names the upstream).
    pub(crate) async fn request(
        &self,
        req: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match &self.inner {
            Inner::Plain(c) => self.request_h1(c, req).await,
            Inner::Tls1(c) => self.request_h1(c, req).await,
            // On the heap: hyper-util's pooled request (checkout or connect) is large.
            Inner::Tls(c) => Box::pin(c.request(req))
                .await
                .map_err(UpstreamError::Pooled),
        }
    }

    /// An HTTP/1.1 exchange on a kept connection, or on a new one. A request that a kept
    /// connection did not take (the upstream closed it meanwhile) is sent on a new one,
    /// as hyper-util's pool does.
    async fn request_h1<C>(
        &self,
        connector: &C,
        req: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError>
    where
        C: tower_service::Service<Uri> + Clone,
        C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(UpstreamError::Connect(
                "the upstream request names no host".into(),
            ));
        };
        let scheme = req.uri().scheme().cloned();
        let req = self.origin_form(req, &authority);
        let req = match idle::take(self.id, &authority) {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.keep(&authority, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            },
            None => req,
        };
        // Only the scheme and authority matter to the connector.
        let mut target = http::uri::Parts::default();
        target.scheme = scheme;
        target.authority = Some(authority.clone());
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let target = Uri::from_parts(target).map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        // On the heap: connecting (the connector's and the handshake's steps) is rare on a
        // kept-alive path, and inline it would size every request's future for it.
        let mut sender = Box::pin(connect_h1(connector, target)).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(self.keep(&authority, sender, resp))
    }

    /// Keeps the connection for the next request, unless it was switched to another
    /// protocol (an upgrade owns it now).
    fn keep(
        &self,
        authority: &Authority,
        sender: SendRequest<RequestBody>,
        resp: http::Response<Incoming>,
    ) -> http::Response<Incoming> {
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            idle::put(self.id, authority, sender);
        }
        resp
    }

    /// The request as an HTTP/1.1 connection sends it: the path and query alone, and a
    /// Host header naming the upstream if the request has none (what hyper-util's client
    /// does).
    fn origin_form(
        &self,
        req: http::Request<RequestBody>,
        authority: &Authority,
    ) -> http::Request<RequestBody> {
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(http::header::HOST) {
            let host = self
                .host
                .get()
                .filter(|(a, _)| a == authority)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    let v = host_value(&parts.uri, authority)?;
                    let _ = self.host.set((authority.clone(), v.clone()));
                    Some(v)
                });
            if let Some(v) = host {
                parts.headers.insert(http::header::HOST, v);
            }
        }
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = None;
        uri.authority = None;
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        http::Request::from_parts(parts, body)
    }
}

/// The Host header for `authority`: its host, and its port unless the scheme's default.
fn host_value(uri: &Uri, authority: &Authority) -> Option<HeaderValue> {
    let default = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let text = match authority.port_u16() {
        Some(p) if Some(p) != default => authority.as_str(),
        _ => authority.host(),
    };
    HeaderValue::from_str(text).ok()
}

/// A new HTTP/1.1 connection to the upstream `target` names; its connection task runs
/// until the upstream or the gateway closes it (upgrades included).
async fn connect_h1<C>(
    connector: &C,
    target: Uri,
) -> Result<SendRequest<RequestBody>, UpstreamError>
where
    C: tower_service::Service<Uri> + Clone,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut c = connector.clone();
    std::future::poll_fn(|cx| c.poll_ready(cx))
        .await
        .map_err(|e| UpstreamError::Connect(e.into()))?;
    let io = c
        .call(target)
        .await
        .map_err(|e| UpstreamError::Connect(e.into()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// A TLS client configuration for a TCP tunnel's target (no ALPN: the tunnel carries any
/// protocol), and a digest of the files it was read from.
pub(crate) fn tunnel_client_config(
    t: &UpstreamTls,
) -> Result<(Arc<rustls::ClientConfig>, [u8; 32]), GateError> {
    let m = load_material(t)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GateError::UpstreamTls(format!("no usable TLS version ({e})")))?
        .with_webpki_verifier(m.verifier)
        .with_client_cert_resolver(Arc::new(Present(m.client_cert)));
    Ok((Arc::new(cfg), m.digest))
}

/// The trust anchors and client certificate of a TLS upstream, read from its files.
pub(crate) struct Material {
    verifier: Arc<WebPkiServerVerifier>,
    client_cert: Option<Arc<CertifiedKey>>,
    digest: [u8; 32],
}

fn load_material(t: &UpstreamTls) -> Result<Material, GateError> {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    let mut roots = rustls::RootCertStore::empty();
    if t.ca.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            digest.update(c.as_ref());
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(GateError::UpstreamTls(
                "no upstream_ca is given and the system's trust store is empty; set upstream_ca (--upstream-ca)".into(),
            ));
        }
    } else {
        for p in &t.ca {
            for der in mtlsgate_pki::pemfile::read_certs(p)? {
                digest.update(&der);
                roots.add(CertificateDer::from(der)).map_err(|e| {
                    GateError::UpstreamTls(format!(
                        "{}: a certificate cannot be a trust anchor ({e})",
                        p.display()
                    ))
                })?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| GateError::UpstreamTls(format!("cannot verify upstreams ({e})")))?;
    let client_cert = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let pass = match &t.key_passphrase_file {
                Some(f) => Some(mtlsgate_pki::key::read_passphrase(f)?),
                None => None,
            };
            let id = mtlsgate_pki::server_identity::load_server_identity(
                c,
                k,
                pass.as_deref().map(|p| p.as_slice()),
            )?;
            digest.update(id.key_pkcs8.as_slice());
            for d in &id.chain {
                digest.update(d);
            }
            let key = PrivateKeyDer::Pkcs8(id.key_pkcs8.to_vec().into());
            let signer =
                rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| {
                    GateError::UpstreamTls(format!("{}: the key cannot sign ({e})", k.display()))
                })?;
            let chain = id.chain.into_iter().map(CertificateDer::from).collect();
            Some(Arc::new(CertifiedKey::new(chain, signer)))
        }
        _ => None,
    };
    Ok(Material {
        verifier,
        client_cert,
        digest: digest.finalize().into(),
    })
}

/// Presents the client certificate, whatever CA names the upstream asks for (built without
/// rustls' own certificate parsing, which refuses X.509 version 1 certificates).
#[derive(Debug)]
struct Present(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// If `e` (or what caused it) is a TLS failure with the upstream, says what went wrong in
/// words: an unknown issuer, a name mismatch, the upstream refusing our certificate.
pub(crate) fn tls_failure(
    e: &(dyn std::error::Error + 'static),
    name: &str,
    have_cert: bool,
) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(t, name, have_cert));
        }
        // An io::Error that wraps another error (tokio-rustls and hyper-rustls wrap twice)
        // hides it from `source()`: look inside.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error, name: &str, have_cert: bool) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "the upstream's certificate is not signed by a CA it trusts (unknown issuer): add its CA to upstream_ca (--upstream-ca)".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the upstream's certificate is not valid for the name {name} (name mismatch): set upstream_server_name (--upstream-server-name) to a name it holds")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the upstream's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the upstream's certificate is not valid yet (check the clocks)".into()
            }
            CertificateError::Revoked => "the upstream's certificate is revoked".into(),
            CertificateError::BadSignature => {
                "the upstream's certificate has a bad signature".into()
            }
            CertificateError::BadEncoding => {
                "the upstream's certificate cannot be parsed".into()
            }
            _ => "the upstream's certificate was refused".into(),
        },
        E::AlertReceived(a) => {
            let refused_ours = matches!(
                a,
                AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::AccessDenied
            );
            let alert = alert_name(*a);
            match (refused_ours, have_cert) {
                (true, false) => format!(
                    "the upstream requires a client certificate and none is configured (TLS alert {alert}): set upstream_cert and upstream_key (--upstream-cert, --upstream-key)"
                ),
                (true, true) => format!("the upstream refused our client certificate (TLS alert {alert})"),
                _ => format!("the TLS handshake with the upstream failed (TLS alert {alert})"),
            }
        }
        E::PeerIncompatible(_) => {
            "the upstream and the gateway have no TLS version or cipher suite in common".into()
        }
        E::NoCertificatesPresented => "the upstream presented no certificate".into(),
        _ => "TLS with the upstream failed".into(),
    }
}

/// The RFC 8446 name of an alert (`bad_certificate`), or its number.
fn alert_name(a: AlertDescription) -> String {
    use AlertDescription as A;
    match a {
        A::CloseNotify => "close_notify".into(),
        A::HandshakeFailure => "handshake_failure".into(),
        A::BadCertificate => "bad_certificate".into(),
        A::UnsupportedCertificate => "unsupported_certificate".into(),
        A::CertificateRevoked => "certificate_revoked".into(),
        A::CertificateExpired => "certificate_expired".into(),
        A::CertificateUnknown => "certificate_unknown".into(),
        A::IllegalParameter => "illegal_parameter".into(),
        A::UnknownCA => "unknown_ca".into(),
        A::AccessDenied => "access_denied".into(),
        A::DecodeError => "decode_error".into(),
        A::DecryptError => "decrypt_error".into(),
        A::ProtocolVersion => "protocol_version".into(),
        A::InternalError => "internal_error".into(),
        A::CertificateRequired => "certificate_required".into(),
        A::NoApplicationProtocol => "no_application_protocol".into(),
        other => format!("number {}", u8::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_named_as_in_the_rfc() {
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
    }

    #[test]
    fn tls_failures_are_found_under_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let why = tls_failure(&io, "api.internal", false).unwrap_or_default();
        assert!(why.contains("unknown issuer"), "{why}");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        let why = tls_failure(&io, "api.internal", false).unwrap_or_default();
        assert!(
            why.contains("requires a client certificate and none is configured"),
            "{why}"
        );
    }
}
