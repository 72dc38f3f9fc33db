//! `mtlsgate-contract`: the device↔CA contract of `docs/device-lifecycle.md` ("HTTP API"),
//! written once and used by both sides — the server (`mtlsgate-ca-server`) writes these
//! types and the clients (the agent, the CLI's admin client) read them, so a field cannot
//! be added on one side and forgotten on the other.
//!
//! It owns
//! - [`wire`]: the JSON bodies of requests and answers, the refusal body
//!   `{"error": "<sentence>"}` included. Secrets in them (tokens, recovery tokens) never
//!   appear in Debug output;
//! - [`url`]: the server URL (`--server https://host[:port][/prefix]`);
//! - [`https`]: the one HTTPS exchange (one HTTP/1.1 connection per request, a time limit
//!   on the whole of it, a cap on the answer) and the reading of a refusal's sentence.
//!
//! It holds no rules and no keys: what a request means is the authority's business, and
//! which certificates to trust is the caller's (it passes a rustls client configuration).
//! It must stay light: every device's agent links it.

#![forbid(unsafe_code)]

pub mod https;
pub mod url;
pub mod wire;

pub use https::{Answer, Call, Client, ExchangeError};
pub use url::{ServerUrl, UrlError};
