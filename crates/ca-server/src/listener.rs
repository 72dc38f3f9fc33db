//! Connections: accept TCP, complete the TLS handshake (TLS 1.3 and 1.2, ALPN h2 and
//! http/1.1) within a time limit, and serve HTTP/1.1 or HTTP/2 with hyper-util. The
//! handshake requests a client certificate but does not require one, and accepts any chain
//! (the client still proves it holds the key); what the chain is worth is decided per
//! request — by the authority for renewal and admin requests, and here with pki's
//! [`Verifier`] for the access log's device ID. Each request carries the chain and the
//! peer's address as extensions ([`ClientChain`], [`RemoteAddr`]), and gets one log line:
//! method, path, status, device ID when known, latency.
//!
//! Connections are capped at accept and kept to deadlines (first request, request head,
//! request body, idle; see [`crate::deadlines`]). When accept fails (out of file
//! descriptors) the loop backs off, up to a second, instead of spinning.
//!
//! On shutdown the listener stops accepting, open connections finish their requests
//! (HTTP/2 gets a GOAWAY), and what is still open after the drain time is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use mtlsgate_pki::verify::{Purpose, Verifier};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};

use crate::deadlines::{self, Caps, Clock, Full, Limits, TimedBody, Watched};
use crate::error::ServerError;
use crate::server_cert::Resolver;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight on one HTTP/2 connection.
const MAX_STREAMS: u32 = 100;
/// How long open connections may take to finish after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS client certificate chain of the connection a request came on (leaf first;
/// empty when the client sent none). Unverified: whoever uses it verifies it.
#[derive(Debug, Clone, Default)]
pub struct ClientChain(pub Arc<Vec<CertificateDer<'static>>>);

/// The address a request came from.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Set by a handler on its response: the device the request was about, for the log line.
#[derive(Debug, Clone)]
pub struct LoggedDevice(pub String);

/// Requests a client certificate, requires none, accepts any chain: the handshake only
/// checks that the client holds the key of the certificate it sent.
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server's TLS configuration: the certificate from `resolver`, client certificates
/// requested (CA names `hint_certs` sent as hints), h2 and http/1.1, AES-128-GCM
/// preferred ([`prefer_aes128`]).
pub(crate) fn tls_config(
    resolver: Arc<Resolver>,
    hint_certs: &[&[u8]],
) -> Result<Arc<ServerConfig>, ServerError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    prefer_aes128(&mut provider.cipher_suites);
    let provider = Arc::new(provider);
    let verifier = Arc::new(RequestClientCert {
        hints: hint_certs
            .iter()
            .filter_map(|der| mtlsgate_pki::certinfo::raw_subject(der))
            .map(DistinguishedName::from)
            .collect(),
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerError::Tls(format!("no usable TLS version ({e})")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order decides, as nginx's `ssl_prefer_server_ciphers on`: rustls and
    // OpenSSL clients (the agent among them) list AES-256-GCM first.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// Puts the AES-128-GCM suites (TLS 1.3's mandatory one, and TLS 1.2's) first, the others
/// in their order after them, as Go's TLS and BoringSSL prefer. Every handshake's key
/// schedule then hashes with SHA-256, which processors compute in hardware far more often
/// than SHA-384's SHA-512 (on the machine measured, SHA-384 was 4 % of the CA server's
/// samples during renewals); both key sizes are strong enough.
fn prefer_aes128(suites: &mut [rustls::SupportedCipherSuite]) {
    use rustls::CipherSuite as C;
    suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
}

/// Accepts connections on `listener` until `shutdown` completes, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    verifier: Arc<Verifier>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let caps = Caps::new(&limits);
    let limits = Arc::new(limits);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let admitted = match caps.admit(remote.ip()) {
                        Ok(a) => a,
                        Err(full) => {
                            // Closed at once: a descriptor held by no one.
                            drop(tcp);
                            if caps.may_warn() {
                                match full {
                                    Full::Total => tracing::warn!(
                                        "{} connections are open (--max-connections); closing new ones",
                                        limits.max_connections
                                    ),
                                    Full::Address => tracing::warn!(
                                        "{} connections are open from {} (--max-connections-per-address); closing new ones from it",
                                        limits.max_per_address,
                                        remote.ip()
                                    ),
                                }
                            }
                            continue;
                        }
                    };
                    let conn = Connection {
                        acceptor: acceptor.clone(),
                        router: router.clone(),
                        verifier: verifier.clone(),
                        limits: limits.clone(),
                        remote,
                    };
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        conn.run(tcp, watcher).await;
                        drop(admitted);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off (longer each time, up
                    // to a second), keep serving.
                    if backoff == ACCEPT_BACKOFF_MIN {
                        tracing::warn!("accept failed: {e}; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {} s; closing them",
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

/// The first and the longest wait after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Connection {
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    verifier: Arc<Verifier>,
    limits: Arc<Limits>,
    remote: SocketAddr,
}

impl Connection {
    async fn run(self, tcp: TcpStream, watcher: Watcher) {
        let _ = tcp.set_nodelay(true);
        let remote = self.remote;
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::debug!(%remote, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        let session = tls.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let chain: Vec<CertificateDer<'static>> = session
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        let chain = ClientChain(Arc::new(chain));
        let verifier = self.verifier;
        let router = self.router;
        let limits = self.limits;
        let clock = Clock::new();
        let svc = {
            let clock = clock.clone();
            let body_read = limits.body_read;
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let chain = chain.clone();
                let mut router = router.clone();
                let verifier = verifier.clone();
                let clock = clock.clone();
                async move {
                    let _in_flight = clock.request(!h2);
                    let started = Instant::now();
                    let method = req.method().clone();
                    let path = req.uri().path().to_string();
                    let mut req =
                        req.map(|b| Body::new(TimedBody::new(b, body_read, clock.clone())));
                    req.extensions_mut().insert(chain.clone());
                    req.extensions_mut().insert(RemoteAddr(remote));
                    let resp: Response<Body> =
                        match tower_service::Service::call(&mut router, req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        };
                    let device = resp
                        .extensions()
                        .get::<LoggedDevice>()
                        .map(|d| d.0.clone())
                        .or_else(|| verified_device(&verifier, &chain));
                    tracing::info!(
                        "{remote} {method} {} {} device={} {:.1}ms",
                        mtlsgate_pki::printable::printable(&path),
                        resp.status().as_u16(),
                        device
                            .as_deref()
                            .map(|d| mtlsgate_pki::printable::printable(d).into_owned())
                            .unwrap_or_else(|| "-".into()),
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // The protocol ALPN chose, only: the deadlines follow its framing.
        let mut builder = match h2 {
            true => builder.http2_only(),
            false => builder.http1_only(),
        };
        // hyper's own header timer would also run while a kept-alive connection waits for
        // its next request; the watchdog keeps the header and idle deadlines instead.
        // Header names in title case (`Content-Type`): HTTP/1 says case does not matter,
        // but some EST clients (libest's estclient) compare them case-sensitively.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .title_case_headers(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS);
        let io = TokioIo::new(crate::header_case::HeaderCase::new(
            Watched::new(tls, clock.clone(), h2),
            !h2,
        ));
        let conn = builder.serve_connection(io, svc);
        tokio::select! {
            r = watcher.watch(conn.into_owned()) => {
                if let Err(e) = r {
                    tracing::debug!(%remote, "connection ended: {e}");
                }
            }
            e = deadlines::watchdog(&clock, &limits) => {
                tracing::debug!(%remote, "connection closed: {}", e.explain());
            }
        }
    }
}

/// The device ID of a client chain that verifies with this CA now, for the log.
fn verified_device(verifier: &Verifier, chain: &ClientChain) -> Option<String> {
    let leaf = chain.0.first()?;
    verifier
        .verify(&chain.0, Purpose::Client, UnixTime::now())
        .ok()?;
    mtlsgate_pki::certinfo::CertInfo::from_der(leaf)
        .ok()?
        .device_id
}
