//! `mtlsgate-dashboard`: the fleet dashboard of `mtlsgate ca serve --dashboard-listen`,
//! server-rendered HTML for operators in a browser. It owns
//!
//! - login: one-time links (`admin login-link`, [`create_login_link`]), sessions in the
//!   `__Host-mtlsgate_session` cookie, the per-session form token (CSRF) and the Origin
//!   check of every POST ([`session`]);
//! - the pages: overview, pending queue, devices list (filters, sort, paging, CSV) and one
//!   device, with approve, deny, allow and revoke ([`pages`]); bulk actions on the devices
//!   list, enrollment tokens, certificate search and the audit log with its export
//!   ([`more`]); templates are askama's, checked when the crate is built; the stylesheet
//!   is embedded;
//! - passkeys (WebAuthn, relying party `localhost`): the Account page where an operator
//!   registers and removes them, sign-in with one, and the one script of the dashboard,
//!   `static/passkey.js`, embedded and allowed on those two pages only ([`passkeys`]);
//!   every page reads without JavaScript;
//! - its plain-HTTP listener, on a loopback address only (the session cookie is `Secure`:
//!   browsers take it from `http://localhost`, a secure context, and from nowhere else on
//!   plain HTTP; remote operators reach it through an SSH tunnel).
//!
//! It owns no rules: every change is the authority's (`Authority::set_status`), made with
//! the actor `dashboard:NAME` in the audit log; sessions and links are the store's
//! (`mtlsgate-store`, `dashboard.rs`).

#![forbid(unsafe_code)]

mod more;
mod pages;
mod passkeys;
mod session;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mtlsgate_authority::Authority;
use tokio::net::TcpListener;

pub use session::{
    check_operator, create_login_link, LoginLink, COOKIE, LINK_PREFIX, LINK_TTL, SESSION_TTL,
};

/// What can go wrong starting the dashboard or making a login link.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("--dashboard-listen {0}: the dashboard serves plain HTTP, so it listens on a loopback address only (127.0.0.1:PORT or [::1]:PORT); reach it from elsewhere through an SSH tunnel")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for the dashboard: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("invalid operator name `{0}`: use 1 to 64 letters, digits and . _ @ -")]
    BadOperator(String),
    #[error("the login link's lifetime must be between 1 minute and 24 hours")]
    BadLifetime,
    #[error("passkeys: {0}")]
    Passkeys(String),
    #[error(transparent)]
    Store(#[from] mtlsgate_store::StoreError),
    #[error("dashboard server: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound dashboard, ready to run.
pub struct Dashboard {
    listener: TcpListener,
    auth: Arc<Authority>,
    webauthn: webauthn_rs::Webauthn,
    enroll_server: Option<String>,
}

impl Dashboard {
    /// Binds `addr` (a loopback address) for the dashboard of `auth`.
    pub async fn bind(auth: Arc<Authority>, addr: SocketAddr) -> Result<Self, DashboardError> {
        if !addr.ip().is_loopback() {
            return Err(DashboardError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|cause| DashboardError::Listen { addr, cause })?;
        let webauthn = passkeys::relying_party()?;
        Ok(Dashboard {
            listener,
            auth,
            webauthn,
            enroll_server: None,
        })
    }

    /// The CA server's URL (`https://HOST:PORT`) that the `agent enroll` command on the
    /// tokens page names.
    pub fn enroll_server(mut self, url: String) -> Self {
        self.enroll_server = Some(url);
        self
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, DashboardError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes; requests under way finish first.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let app = pages::router(Arc::new(pages::App {
            auth: self.auth,
            webauthn: self.webauthn,
            enroll_server: self.enroll_server,
        }));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
