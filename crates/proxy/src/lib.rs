//! mtlsgate-proxy: the mTLS gateway behind `mtlsgate serve`.
//!
//! A request meets these modules in this order (see ARCHITECTURE.md):
//! - [`listener`]: accept, plain-HTTP detection, TLS handshake, the client's verdict.
//! - [`connection`]: HTTP/1.1 or HTTP/2 on one connection, its timers, closing it when the
//!   client is refused by a newer snapshot.
//! - [`pipeline`]: the stages of a request: authenticate → route → authorize → rewrite →
//!   forward, one function each; [`responses`] turns every refusal into its reply.
//! - [`forward`]: the upstream exchange and upgraded connections; [`upstream`]: pooled
//!   clients to plain and TLS upstreams (client certificates, reloaded in place).
//! - [`access_log`]: one line per request.
//! - [`tunnel`]: TCP tunnels (mTLS in or out, bytes both ways, decided in the handshake).
//!
//! What the stages consult: [`client_auth`] (nginx's `ssl_verify_client` rules, the verify
//! cache), [`identity`] (who the client is; the device ID rule), [`path`] (request path
//! normalisation), [`policy`] (allow/deny), [`inventory`] (the device inventory, kept current), [`headers`] (identity headers), [`state`] (the
//! snapshot, reload), [`config`] (gate.toml and flags, one table of settings), [`tls`], [`metrics`], [`admin`], [`watch`].

pub mod access_log;
pub mod admin;
pub mod client_auth;
pub mod config;
pub mod connection;
pub mod error;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod inventory;
pub mod listener;
pub mod metrics;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod responses;
pub mod state;
pub mod tls;
pub mod tunnel;
pub mod tunnel_tls;
pub mod upstream;
pub mod watch;

pub use config::GateConfig;
pub use error::GateError;
pub use listener::Gateway;
