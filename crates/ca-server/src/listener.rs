//! Connections: accept TCP, complete the TLS handshake (TLS 1.3 and 1.2, ALPN h2 and
//! http/1.1) within a time limit, and serve HTTP/1.1 or HTTP/2 with hyper-util. The
//! handshake requests a client certificate but does not require one, and accepts any chain
//! (the client still proves it holds the key); what the chain is worth is decided per
//! request — by the authority for renewal and admin requests, and here with pki's
//! [`Verifier`] for the access log's device ID. Each request carries the chain and the
//! peer's address as extensions ([`ClientChain`], [`RemoteAddr`]), and gets one log line:
//! method, path, status, device ID when known, latency.
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

use crate::error::ServerError;
use crate::server_cert::Resolver;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request head may take to arrive (HTTP/1.1; a slow client loses the
/// connection instead of holding it).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
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
/// requested (CA names `hint_certs` sent as hints), h2 and http/1.1.
pub(crate) fn tls_config(
    resolver: Arc<Resolver>,
    hint_certs: &[&[u8]],
) -> Result<Arc<ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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
    Ok(Arc::new(cfg))
}

/// Accepts connections on `listener` until `shutdown` completes, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let conn = Connection {
                        acceptor: acceptor.clone(),
                        router: router.clone(),
                        verifier: verifier.clone(),
                        remote,
                    };
                    tokio::spawn(conn.run(tcp, graceful.watcher()));
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

struct Connection {
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    verifier: Arc<Verifier>,
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
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        let chain = ClientChain(Arc::new(chain));
        let verifier = self.verifier;
        let router = self.router;
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let chain = chain.clone();
            let mut router = router.clone();
            let verifier = verifier.clone();
            async move {
                let started = Instant::now();
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let mut req = req.map(Body::new);
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
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS);
        let conn = builder.serve_connection(TokioIo::new(tls), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%remote, "connection ended: {e}");
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
