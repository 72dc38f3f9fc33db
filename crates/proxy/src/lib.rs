//! mtlsgate-proxy: the mTLS gateway behind `mtlsgate serve`.
//!
//! What other crates use is re-exported here and nothing more: [`Gateway`] (bind, run),
//! [`State`] and its [`Snapshot`] (the running configuration, reload), [`GateConfig`] and
//! the [`config`] module (gate.toml and flags), [`admin`] (the admin listener), [`watch`]
//! (what triggers a reload), [`GateError`]. Every other module is private, so the compiler
//! reports what nothing uses; the fuzz targets reach the parsers they drive through
//! `internal`, which is not an API.
//!
//! A request meets these modules in this order (see ARCHITECTURE.md):
//! - `listener`: accept, plain-HTTP detection, TLS handshake, the client's verdict.
//! - `connection`: HTTP/1.1 or HTTP/2 on one connection, its timers, closing it when the
//!   client is refused by a newer snapshot (`woken`: what its task waits on is polled
//!   only when woken, and the client's socket read only when tokio woke its last read);
//!   `conn`: what is known about that connection (client, verdict, TLS details, its
//!   clock, the upstream-response timers it keeps between requests), which the request
//!   path reads.
//! - `pipeline`: the stages of a request: authenticate → route → authorize → rewrite →
//!   forward, one function each; `responses` turns every refusal into its reply.
//! - `forward`: the upstream exchange and upgraded connections; `upstream`: pooled
//!   clients to plain and TLS upstreams (client certificates, reloaded in place).
//! - `access_log`: one line per request.
//! - `tunnel`: TCP tunnels (mTLS in or out, bytes both ways, decided in the handshake);
//!   `tunnel_tls`: its server side's TLS stream; `tunnel_buf`: the buffers both borrow.
//!
//! What the stages consult: `client_auth` (nginx's `ssl_verify_client` rules, the verify
//! cache, the re-check of a live connection's client against a newer snapshot), `identity`
//! (who the client is; the device ID rule), `path` (request path normalisation), `policy`
//! (allow/deny), `inventory` (the device inventory, kept current), `headers` (identity
//! headers), `state` (the snapshot, reload), [`config`] (gate.toml and flags, one table of
//! settings), `tls`, `metrics`, [`admin`], [`watch`].

mod access_log;
pub mod admin;
mod client_auth;
pub mod config;
mod conn;
mod connection;
mod error;
mod forward;
mod headers;
mod identity;
mod inventory;
mod listener;
mod metrics;
mod path;
mod pipeline;
mod policy;
mod responses;
mod rewound;
mod state;
mod tls;
mod tunnel;
mod tunnel_buf;
mod tunnel_tls;
mod upstream;
pub mod watch;
mod woken;

pub use config::GateConfig;
pub use error::GateError;
pub use listener::Gateway;
pub use state::{display_location, Snapshot, State};

/// What the fuzz targets (`fuzz/fuzz_targets/`) drive directly: the parsers behind
/// allowlists, header templates and request paths. Not an API: it changes with them.
#[doc(hidden)]
pub mod internal {
    pub use crate::headers::{HeaderTemplate, RenderCtx};
    pub use crate::identity::{ClientIdentity, VerifyOutcome};
    pub use crate::path::{check_prefix, normalize, NormalPath, PathError};
    pub use crate::policy::{parse_list, Load, Policy};
}
