//! The raw configuration: what gate.toml parses into, and what the one-route flags of
//! `mtlsgate serve` are lowered into. Nothing is checked or defaulted here; every value is
//! optional and keeps where it came from (its span in the file), so that
//! [`super::GateConfig::from_raw`] validates both forms once, with one set of defaults and
//! one set of error messages.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// A value and where it was written (a byte range in the file; `0..0` for a flag).
pub type At<T> = Spanned<T>;

/// Wraps a value given on the command line (no position in a file).
pub fn flag<T>(v: T) -> At<T> {
    Spanned::new(0..0, v)
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    /// Further `[[server]]` blocks on the same listener (virtual hosts chosen by SNI); the
    /// first block is `server`.
    #[serde(skip)]
    pub vhosts: Vec<RawServer>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    #[serde(default, rename = "tcp")]
    pub tunnels: Vec<RawTunnel>,
}

/// gate.toml with `[[server]]` blocks (virtual hosts) instead of one `[server]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawConfigHosts {
    pub server: Vec<RawServer>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    #[serde(default, rename = "tcp")]
    pub tunnels: Vec<RawTunnel>,
}

/// A `[[tcp]]` section: a TCP tunnel. With `cert` and `key` it terminates mTLS from its
/// clients; without, it opens mTLS to its target.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    pub listen: Option<At<String>>,
    pub target: Option<At<String>>,
    pub cert: Option<At<PathBuf>>,
    pub key: Option<At<PathBuf>>,
    pub key_passphrase_file: Option<At<PathBuf>>,
    #[serde(default)]
    pub client_ca: OneOrMany,
    #[serde(default)]
    pub crl: OneOrMany,
    pub crl_check: Option<At<String>>,
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    pub verify_depth: Option<At<i64>>,
    #[serde(default)]
    pub allow_device_ids: Vec<String>,
    #[serde(default)]
    pub allow_spiffe_ids: Vec<String>,
    #[serde(default)]
    pub allow_ous: Vec<String>,
    #[serde(default)]
    pub allow_fingerprints: Vec<String>,
    #[serde(default)]
    pub allow_file: OneOrMany,
    pub proxy_protocol: Option<bool>,
    #[serde(default)]
    pub upstream_ca: OneOrMany,
    pub upstream_cert: Option<At<PathBuf>>,
    pub upstream_key: Option<At<PathBuf>>,
    pub upstream_key_passphrase_file: Option<At<PathBuf>>,
    pub upstream_server_name: Option<At<String>>,
    pub idle: Option<At<String>>,
    pub connect_timeout: Option<At<String>>,
    pub max_connections: Option<At<i64>>,
    pub allow: Option<At<RawAllow>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// The names this server answers to (SNI and Host), as nginx's `server_name`:
    /// `api.example.com` or `*.example.com`.
    #[serde(default)]
    pub server_name: Vec<String>,
    /// Routes of this server block (`[[server.route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    pub listen: Option<At<String>>,
    pub cert: Option<At<PathBuf>>,
    pub key: Option<At<PathBuf>>,
    pub key_passphrase_file: Option<At<PathBuf>>,
    #[serde(default)]
    pub client_ca: OneOrMany,
    /// CAs that verify clients without being named in the CertificateRequest (nginx's
    /// `ssl_trusted_certificate`).
    #[serde(default)]
    pub trusted_ca: OneOrMany,
    pub verify_client: Option<At<String>>,
    pub verify_depth: Option<At<i64>>,
    #[serde(default)]
    pub crl: OneOrMany,
    pub crl_check: Option<At<String>>,
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    #[serde(default)]
    pub pin_cert: OneOrMany,
    pub reject_at_handshake: Option<bool>,
    pub verify_cache: Option<bool>,
    pub resumption: Option<bool>,
    pub admin_listen: Option<At<String>>,
    pub access_log: Option<At<String>>,
    pub access_log_flush: Option<At<String>>,
    pub access_log_buffer: Option<At<i64>>,
    pub max_header_bytes: Option<At<i64>>,
    pub threads: Option<At<i64>>,
    /// A CA directory or a PostgreSQL URL: the device inventory routes may consult.
    pub inventory: Option<At<String>>,
    pub inventory_poll: Option<At<String>>,
}

/// `allow = { inventory = true, tags = ["…"] }` on a route or tunnel.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub inventory: bool,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A path or a list of paths (`client_ca = "ca.crt"` or `client_ca = ["a.crt", "b.crt"]`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

impl From<Vec<PathBuf>> for OneOrMany {
    fn from(v: Vec<PathBuf>) -> Self {
        if v.is_empty() {
            OneOrMany::None
        } else {
            OneOrMany::Many(v)
        }
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub handshake: Option<At<String>>,
    pub first_request: Option<At<String>>,
    pub header_read: Option<At<String>>,
    pub idle: Option<At<String>>,
    pub upstream_connect: Option<At<String>>,
    pub upstream_response: Option<At<String>>,
    pub drain: Option<At<String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<At<String>>,
    pub upstream: Option<At<String>>,
    #[serde(default)]
    pub upstream_ca: OneOrMany,
    pub upstream_cert: Option<At<PathBuf>>,
    pub upstream_key: Option<At<PathBuf>>,
    pub upstream_key_passphrase_file: Option<At<PathBuf>>,
    pub upstream_server_name: Option<At<String>>,
    #[serde(default)]
    pub allow_device_ids: Vec<String>,
    #[serde(default)]
    pub allow_spiffe_ids: Vec<String>,
    #[serde(default)]
    pub allow_ous: Vec<String>,
    #[serde(default)]
    pub allow_fingerprints: Vec<String>,
    #[serde(default)]
    pub allow_file: OneOrMany,
    /// Header name → template. From a file, a TOML table (values must be strings).
    #[serde(default)]
    pub headers: Option<At<toml::Table>>,
    pub default_headers: Option<bool>,
    pub xfcc: Option<bool>,
    /// `client` or `upstream`.
    pub host_header: Option<At<String>>,
    pub allow: Option<At<RawAllow>>,
}
