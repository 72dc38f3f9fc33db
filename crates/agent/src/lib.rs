//! `mtlsgate-agent`: the device side of enrollment (`mtlsgate agent …`).
//!
//! The agent makes its key on the device (ECDSA P-256; the key never leaves it), enrolls
//! with `mtlsgate ca serve` (with a token, or by waiting for an operator's approval), keeps
//! the certificate fresh (renewal at two thirds of its lifetime, over mTLS, with a new key
//! each time), recovers with its recovery token after the certificate expired, and keeps
//! the state directory whole: `client.crt`, `client.key`, `ca.crt` — the names curl takes —
//! and `agent.json`, each replaced whole or not at all. The HTTP API and the state
//! directory are specified in `docs/device-lifecycle.md`.
//!
//! Module map:
//! - [`enroll`]: registering, waiting for approval, installing the first certificate.
//! - [`run`]: the renewal loop and `--once`, recovery, the `--on-renew` command, signals.
//! - [`schedule`]: when renewal is due, jitter and back-off — pure functions of the time.
//! - [`state`]: the state directory, `agent.json`, whole-or-nothing installs, the lock.
//! - [`bundle`]: what `ca.crt` holds while CA roots overlap.
//! - [`trust`]: how the server is trusted (a CA file, or a pinned root fingerprint).
//! - [`http`]: the agent's requests to the contract's endpoints and their errors (the wire
//!   types and the HTTPS exchange are `mtlsgate-contract`'s).
//! - [`status`]: what `agent status` and `agent whoami` show.
//!
//! The agent never holds CA keys and never switches TLS verification off.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod enroll;
pub mod error;
pub mod http;
mod keys;
pub mod run;
pub mod schedule;
pub mod state;
pub mod status;
pub mod trust;

pub use enroll::{register, wait_for_approval, EnrollOptions, Enrolled, Pending, Registration};
pub use error::{AgentError, Result};
pub use http::{ApiError, ServerUrl};
pub use run::{run, run_once, Control, Outcome, RunOptions};
pub use state::{AgentState, LastError, PendingState, StateDir};
pub use status::{status, Status};
pub use trust::Bootstrap;

/// Where the agent keeps its state unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/mtlsgate-agent";

/// The version sent as `agent_version` in enrollment and renewal requests.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The current time as unix seconds (the unit of every time in the contract).
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
