//! `mtlsgate-ca-server`: the CA's HTTPS API, `mtlsgate ca serve` (contract:
//! docs/device-lifecycle.md, "HTTP API"). It owns
//!
//! - the API: routes, JSON shapes ([`wire`]), status codes, and the mapping of authority
//!   errors to them ([`error`]) — `api` has one handler per endpoint;
//! - the listener: rustls over tokio, HTTP/1.1 and HTTP/2 with hyper-util, client
//!   certificates requested but not required, one log line per request, graceful shutdown;
//! - its own server certificate, issued by the CA, kept in memory and renewed by the server
//!   at two thirds of its lifetime (`server_cert`);
//! - the admin client ([`client`]) that `mtlsgate devices … --server URL` and
//!   `mtlsgate token create --server URL` use.
//!
//! It owns no rules: every decision (tokens, CSRs, the device status machine, renewal,
//! recovery, who is an administrator) is the authority's (`mtlsgate-authority`).

#![forbid(unsafe_code)]

mod api;
pub mod client;
mod deadlines;
pub mod error;
mod listener;
mod server_cert;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mtlsgate_authority::Authority;
use mtlsgate_pki::verify::{Verifier, DEFAULT_DEPTH};
use tokio::net::TcpListener;

pub use deadlines::Limits;
pub use error::{ApiError, ServerError};
pub use server_cert::{Presented, ServerNames};

use server_cert::ServerCert;

/// A bound CA server, ready to run.
pub struct CaServer {
    auth: Arc<Authority>,
    listener: TcpListener,
    cert: Arc<ServerCert>,
    tls: Arc<rustls::ServerConfig>,
    verifier: Arc<Verifier>,
    limits: Limits,
}

impl CaServer {
    /// Issues the server's certificate for `names` and binds `listen`. The authority's keys
    /// must be loaded.
    pub async fn bind(
        auth: Authority,
        listen: SocketAddr,
        names: ServerNames,
    ) -> Result<CaServer, ServerError> {
        let cert = ServerCert::new(&auth, names)
            .await
            .map_err(ServerError::ServerCertificate)?;
        let ca = auth.ca();
        let tls = listener::tls_config(
            cert.resolver.clone(),
            &[ca.root_der.as_slice(), ca.intermediate_der.as_slice()],
        )?;
        let verifier = Verifier::new(
            vec![ca.root_der.clone(), ca.intermediate_der.clone()],
            vec![],
            DEFAULT_DEPTH,
        )
        .map_err(|e| ServerError::Tls(e.to_string()))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|cause| ServerError::Listen {
                addr: listen,
                cause,
            })?;
        Ok(CaServer {
            auth: Arc::new(auth),
            listener,
            cert: Arc::new(cert),
            tls,
            verifier: Arc::new(verifier),
            limits: Limits::default(),
        })
    }

    /// Sets the connections' deadlines and caps (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> CaServer {
        self.limits = limits;
        self
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// The server certificate presented now.
    pub fn presented(&self) -> Presented {
        self.cert.presented()
    }

    pub fn authority(&self) -> &Authority {
        &self.auth
    }

    /// Serves until `shutdown` completes, renewing the server certificate meanwhile; then
    /// stops accepting, lets open connections finish, and closes the inventory.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let renewal = tokio::spawn(self.cert.clone().renew_forever(self.auth.clone(), stop_rx));
        let app = Arc::new(api::App::new(self.auth.clone()));
        listener::serve(
            self.listener,
            self.tls,
            api::router(app),
            self.verifier,
            self.limits,
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
        let _ = renewal.await;
        if let Ok(auth) = Arc::try_unwrap(self.auth) {
            auth.close().await;
        }
        Ok(())
    }
}
