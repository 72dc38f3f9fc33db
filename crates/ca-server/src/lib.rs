//! `mtlsgate-ca-server`: the CA's HTTPS API, `mtlsgate ca serve` (contract:
//! docs/device-lifecycle.md, "HTTP API"). It owns
//!
//! - the API: routes, status codes, and the mapping of authority errors to them
//!   ([`error`]) — `api` has one handler per endpoint. The JSON shapes are the contract's
//!   (`mtlsgate-contract`, re-exported as [`wire`]), which the agent and the admin client
//!   read;
//! - the listener: rustls over tokio, HTTP/1.1 and HTTP/2 with hyper-util, client
//!   certificates requested but not required, one log line per request, graceful shutdown;
//! - its own server certificate, issued by the CA, kept in memory and renewed by the server
//!   at two thirds of its lifetime (`server_cert`);
//! - EST (RFC 7030) under `/.well-known/est/` (`est`), over the same authority calls.
//!
//! It owns no rules: every decision (tokens, CSRs, the device status machine, renewal,
//! recovery, who is an administrator) is the authority's (`mtlsgate-authority`).

#![forbid(unsafe_code)]

mod api;
mod deadlines;
pub mod error;
mod est;
mod header_case;
mod listener;
mod server_cert;
mod stream;
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

/// How often a server on a SQLite inventory checkpoints its write-ahead log, from a
/// connection of its own (see `mtlsgate_store::BackgroundCheckpoints`).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A bound CA server, ready to run.
pub struct CaServer {
    auth: Arc<Authority>,
    listener: TcpListener,
    cert: Arc<ServerCert>,
    tls: Arc<rustls::ServerConfig>,
    verifier: Arc<Verifier>,
    limits: Limits,
    est_bootstrap: Option<Arc<Verifier>>,
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
            est_bootstrap: None,
        })
    }

    /// Sets the connections' deadlines and caps (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> CaServer {
        self.limits = limits;
        self
    }

    /// Lets EST clients holding a certificate from one of `cas` (DER; roots, or
    /// intermediates trusted as anchors) enroll without a token: they wait in the approval
    /// queue under the device ID their certificate names.
    pub fn with_est_bootstrap(mut self, cas: Vec<Vec<u8>>) -> Result<CaServer, ServerError> {
        let v = Verifier::new(cas, vec![], DEFAULT_DEPTH)
            .map_err(|e| ServerError::Tls(format!("the EST bootstrap CAs cannot be used: {e}")))?;
        self.est_bootstrap = Some(Arc::new(v));
        Ok(self)
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

    /// A shared handle on the authority, for another listener of the same process (the
    /// fleet dashboard). Stop that listener before this server's run ends, or the
    /// inventory is closed only when the last handle goes.
    pub fn shared_authority(&self) -> Arc<Authority> {
        self.auth.clone()
    }

    /// Serves until `shutdown` completes, renewing the server certificate meanwhile; then
    /// stops accepting, lets open connections finish, and closes the inventory.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let renewal = tokio::spawn(self.cert.clone().renew_forever(self.auth.clone(), stop_rx));
        // A failure here leaves SQLite checkpointing on the writer's path, as a command
        // does: slower under load, never wrong.
        let checkpoints = match self
            .auth
            .inventory()
            .checkpoint_in_background(CHECKPOINT_EVERY)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("checkpoints stay on the writer's path: {e}");
                None
            }
        };
        let mut app = api::App::new(self.auth.clone());
        app.est_bootstrap = self.est_bootstrap.clone();
        let app = Arc::new(app);
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
        if let Some(c) = checkpoints {
            c.stop().await;
        }
        if let Ok(auth) = Arc::try_unwrap(self.auth) {
            auth.close().await;
        }
        Ok(())
    }
}
