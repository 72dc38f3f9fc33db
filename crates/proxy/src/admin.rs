//! The admin listener: `/healthz` and Prometheus `/metrics`. Off unless asked for, and
//! only on a loopback address, so it is never exposed by accident.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::error::GateError;
use crate::state::State;

/// Refuses admin addresses that are not loopback.
fn check_addr(addr: SocketAddr) -> Result<(), GateError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(GateError::AdminNotLoopback(addr))
    }
}

/// Binds the admin listener (so that errors surface at start-up).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, GateError> {
    check_addr(addr)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| GateError::Listen { addr, cause })
}

/// Serves `/healthz` and `/metrics` until the future `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let s2 = state.clone();
    let s3 = state.clone();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || {
                let s = s3.clone();
                async move {
                    // Serving, perhaps from the last known inventory: the body says which. Until
                    // the inventory is first read, 503 (a load balancer sends no one yet).
                    use crate::inventory::SyncHealth;
                    match s.inventory.as_ref().map(|i| i.health()) {
                        None | Some(SyncHealth::Ok) => (http::StatusCode::OK, "ok\n".to_string()),
                        Some(SyncHealth::Degraded(why)) => {
                            (http::StatusCode::OK, format!("ok, degraded: {why}\n"))
                        }
                        Some(SyncHealth::Starting(why)) => (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("starting: {why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let s = s2.clone();
                async move {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let mut text = s.metrics.render(now);
                    if let Some(i) = &s.inventory {
                        i.render(&mut text, now);
                    }
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        text,
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("admin listener stopped: {e}");
    }
}
