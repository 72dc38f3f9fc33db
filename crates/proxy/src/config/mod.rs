//! Gateway configuration. Two forms come in — the TOML file (`mtlsgate serve --config
//! gate.toml`) and the one-route flags — and both become a [`raw::RawConfig`] first; then
//! [`GateConfig::from_raw`] applies the defaults of [`settings::defaults`] and validates
//! everything once. Parse, don't validate twice: everything downstream takes a
//! `GateConfig` and trusts it. Errors name the file, line and key, or the flag.
//!
//! Where things are:
//! - [`settings`]: the one table of settings (key, flag, reload or restart, how to read it)
//!   and the defaults; everything that goes over all the settings derives from it.
//! - [`raw`]: the raw form, unchecked.
//! - `lower`: raw form → `GateConfig` (reading the file, `from_raw`, shared value parsers).
//! - `listener`, `route`, `tunnel`, `vhost`: each concern's validated types and lowering.
//! - `reload`: what a reload compares, keeps and watches, derived from the table.
//!
//! This module owns [`GateConfig`] and how errors name their place ([`Source`],
//! [`ConfigError`]). Nothing here opens a certificate or a socket.

mod listener;
mod lower;
pub mod raw;
mod reload;
mod route;
pub mod settings;
mod tunnel;
mod vhost;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use listener::{
    parse_listen, AccessLog, InventoryConfig, ListenerTls, Overrides, Timeouts, VerifyMode,
};
pub use lower::parse_timeout;
pub use mtlsgate_pki::verify::CrlCheck;
pub use route::{
    parse_upstream, upstream_path, HostHeader, PolicyConfig, RouteConfig, UpstreamTls,
};
use tunnel::ServedTunnel;
pub use tunnel::{TunnelConfig, TunnelSide};
pub use vhost::VirtualHost;

/// The validated configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// The TOML file it came from, if any (re-read on reload).
    pub source: Option<PathBuf>,
    /// Flags that override the file.
    pub overrides: Overrides,
    /// The names the first (default) server answers to; empty: any.
    pub server_names: Vec<String>,
    /// Further servers on the same listener, chosen by SNI.
    pub vhosts: Vec<VirtualHost>,
    pub listen: SocketAddr,
    /// `None`: a plain-HTTP listener (egress), which verifies no clients.
    pub tls: Option<ListenerTls>,
    pub client_ca: Vec<PathBuf>,
    /// Verify clients but are not named to them (nginx's `ssl_trusted_certificate`).
    pub trusted_ca: Vec<PathBuf>,
    pub verify: VerifyMode,
    pub verify_depth: usize,
    pub crl: Vec<PathBuf>,
    /// What a missing or expired CRL means (strict, as nginx, by default).
    pub crl_check: CrlCheck,
    pub pin_sha256: Vec<String>,
    pub pin_cert: Vec<PathBuf>,
    pub reject_at_handshake: bool,
    /// Reuse a verified chain for later connections presenting the same chain (same
    /// snapshot generation, before its first expiry).
    pub verify_cache: bool,
    pub resumption: bool,
    pub admin_listen: Option<SocketAddr>,
    pub access_log: AccessLog,
    /// How long an access-log line may wait in the buffer before it is written (zero: each
    /// line is written at once), as nginx's `access_log … flush=`.
    pub access_log_flush: Duration,
    /// Buffered lines are written once they fill this many bytes (nginx's `buffer=`).
    pub access_log_buffer: usize,
    pub timeouts: Timeouts,
    pub max_header_bytes: usize,
    /// HTTP routes; without any, no HTTP listener is started (a tunnel-only gateway).
    pub routes: Vec<RouteConfig>,
    pub tunnels: Vec<TunnelConfig>,
    pub threads: Option<usize>,
    pub inventory: Option<InventoryConfig>,
}

/// Where the raw configuration came from: how errors name places, and how relative paths
/// are resolved.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A TOML file: its name (for errors), its text (for line numbers) and its directory
    /// (relative paths in it are relative to the file).
    File {
        name: &'a str,
        text: &'a str,
        base: &'a Path,
    },
    /// The one-route flags of `mtlsgate serve`; paths are relative to the working directory.
    Flags,
}

/// A configuration error, with where it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{place}: {message}")]
pub struct ConfigError {
    /// `gate.toml:12: route[0].upstream`, `gate.toml`, `--upstream` or `the command line`.
    pub place: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            place: place.into(),
            message: message.into(),
        }
    }
}

impl Source<'_> {
    /// Names the place of `key` (written at `span` in a file).
    /// A value with no position in the file (an empty span) was given by a flag that
    /// overrides the file (`--threads`, `--admin-listen`), and is named by that flag.
    fn place(&self, key: &str, span: std::ops::Range<usize>) -> String {
        debug_assert!(
            settings::setting(key).is_some(),
            "an error names {key}, which is not in the settings table"
        );
        match (self, settings::flag_of(key)) {
            (Source::File { name, text, .. }, _) if span.end > 0 => {
                format!("{name}{}: {key}", line_of(text, span))
            }
            (_, Some(f)) => f.to_string(),
            (Source::File { name, .. }, None) => format!("{name}: {key}"),
            (Source::Flags, None) => format!("the command line ({key})"),
        }
    }

    /// Names the configuration as a whole (for cross-field errors).
    fn whole(&self) -> String {
        match self {
            Source::File { name, .. } => (*name).to_string(),
            Source::Flags => "the command line".into(),
        }
    }

    fn err(&self, key: &str, span: std::ops::Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.place(key, span), msg)
    }

    fn resolve(&self, p: PathBuf) -> PathBuf {
        match self {
            Source::File { base, .. } if p.is_relative() => base.join(p),
            _ => p,
        }
    }
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> String {
    if span.end == 0 {
        return String::new();
    }
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(":{line}")
}

/// The key of the `key = value` line containing byte `pos`, if any.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[pos..]
        .find('\n')
        .map(|i| pos + i)
        .unwrap_or(text.len());
    let line = &text[start..end];
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('[') && !k.starts_with('#')).then(|| k.to_string())
}

/// A small valid gate.toml for the unit tests of the submodules.
#[cfg(test)]
const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"

[[route]]
prefix = "/api/"
upstream = "http://127.0.0.1:3000"
allow_file = "whitelist.txt"
headers = { "X-Client" = "$ssl_client_s_dn" }
"#;
