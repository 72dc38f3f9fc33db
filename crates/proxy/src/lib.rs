//! mtlsgate-proxy: the mTLS gateway behind `mtlsgate serve`.
//!
//! - [`config`]: the TOML file and flag configuration, validated into a `GateConfig`.
//! - [`tls`]: rustls server config and the client-certificate verifier (nginx's modes).
//! - [`identity`]: the client's identity and verify outcome, computed once per connection.
//! - [`policy`]: per-route allowlists (device IDs, SPIFFE IDs, OUs, fingerprints).
//! - [`headers`]: nginx-variable header templates and identity-header stripping.
//! - [`state`]: the live snapshot (TLS, verifier, routes) swapped atomically on reload.
//! - [`server`]: accept, handshake, per-connection verification, HTTP proxying.
//! - [`metrics`] and [`admin`]: Prometheus counters, `/metrics` and `/healthz`.
//! - [`watch`]: SIGHUP and file changes trigger reloads.

pub mod admin;
pub mod config;
pub mod error;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod state;
pub mod tls;
pub mod watch;

pub use config::GateConfig;
pub use error::GateError;
pub use server::Gateway;
