//! Gateway configuration. Two forms come in — the TOML file (`mtlsgate serve --config
//! gate.toml`) and the one-route flags — and both become a [`raw::RawConfig`] first; then
//! [`GateConfig::from_raw`] applies the defaults of [`settings::defaults`] and validates
//! everything once. Parse, don't validate twice: everything downstream takes a
//! `GateConfig` and trusts it. Errors name the file, line and key, or the flag.

pub mod raw;
pub mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mtlsgate_pki::verify::CrlCheck;
use raw::{At, RawConfig};
use settings::defaults;

/// How client certificates are checked; the names follow nginx's `ssl_verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// nginx `on`: a verified certificate is required.
    Require,
    /// A certificate is asked for; without one the request proceeds with `NONE`.
    Optional,
    /// Like optional, and an unknown or self-signed issuer is forgiven (the request
    /// proceeds with `FAILED:…`); an expired or revoked certificate is still refused.
    OptionalNoCa,
    /// No certificate is asked for.
    Off,
}

impl VerifyMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "require" | "on" => VerifyMode::Require,
            "optional" => VerifyMode::Optional,
            "optional_no_ca" => VerifyMode::OptionalNoCa,
            "off" => VerifyMode::Off,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Require => "require",
            VerifyMode::Optional => "optional",
            VerifyMode::OptionalNoCa => "optional_no_ca",
            VerifyMode::Off => "off",
        }
    }
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Text,
    Json,
    Off,
}

impl AccessLog {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => AccessLog::Text,
            "json" => AccessLog::Json,
            "off" => AccessLog::Off,
            _ => return None,
        })
    }
}

/// Timeouts and limits against slow or hostile peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// From the first byte of a request to the end of its header (HTTP/1 and HTTP/2).
    pub header_read: Duration,
    /// With no request in flight, the connection is closed after this long. Bytes that do
    /// not complete a request (pings, a trickled header) do not reset it.
    pub idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: defaults::HANDSHAKE,
            header_read: defaults::HEADER_READ,
            idle: defaults::IDLE,
            upstream_connect: defaults::UPSTREAM_CONNECT,
            upstream_response: defaults::UPSTREAM_RESPONSE,
            drain: defaults::DRAIN,
        }
    }
}

/// Who may use a route. Empty lists everywhere mean: any verified client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub device_ids: Vec<String>,
    pub spiffe_ids: Vec<String>,
    pub ous: Vec<String>,
    pub fingerprints: Vec<String>,
    pub allow_files: Vec<PathBuf>,
    /// The device must also be active in the inventory (and carry one of `tags`, if any).
    pub inventory: bool,
    pub tags: Vec<String>,
}

impl PolicyConfig {
    pub fn is_open(&self) -> bool {
        !self.inventory
            && self.device_ids.is_empty()
            && self.spiffe_ids.is_empty()
            && self.ous.is_empty()
            && self.fingerprints.is_empty()
            && self.allow_files.is_empty()
    }
}

/// How the gateway speaks TLS to an `https://` upstream (nginx's `proxy_ssl_*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// CA bundle(s) that sign the upstream's certificate (`proxy_ssl_trusted_certificate`);
    /// empty: the operating system's trust store.
    pub ca: Vec<PathBuf>,
    /// The client certificate and key presented to the upstream
    /// (`proxy_ssl_certificate`, `proxy_ssl_certificate_key`); reloaded when they change.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_passphrase_file: Option<PathBuf>,
    /// The name checked against the upstream's certificate and sent as SNI
    /// (`proxy_ssl_name`); by default the host of the upstream URL.
    pub server_name: Option<String>,
    /// Offer HTTP/2 by ALPN. Off for a route that keeps the client's Host: HTTP/2 names
    /// the server in `:authority`, which is the upstream's, so such a route speaks HTTP/1.1
    /// (as nginx's `proxy_pass`).
    pub http2: bool,
}

/// The Host an upstream receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's Host, as nginx's `proxy_set_header Host $http_host` (the default on a
    /// TLS listener, in front of an app).
    Client,
    /// The authority of the upstream URL, as nginx's `proxy_pass` sends by default
    /// (`$proxy_host`); over HTTP/2, as `:authority` alone (the egress listener's default).
    Upstream,
}

impl HostHeader {
    fn parse(s: &str) -> Option<HostHeader> {
        match s {
            "client" => Some(HostHeader::Client),
            "upstream" => Some(HostHeader::Upstream),
            _ => None,
        }
    }
}

/// The listener's certificate and key; without them the listener speaks plain HTTP (an
/// egress listener that sends its requests out over TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// File whose first line decrypts `key` (nginx's `ssl_password_file`).
    pub key_passphrase_file: Option<PathBuf>,
}

/// One route: a path prefix, an upstream, a policy, and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// A normalised path prefix (see [`crate::path`]).
    pub prefix: String,
    pub upstream: http::Uri,
    /// The path part of the upstream URL, if it has one: it then replaces the matched
    /// prefix, as nginx's `proxy_pass http://host/path/` does. Without one the request
    /// path passes (normalised).
    pub upstream_path: Option<String>,
    /// Set for `https://` upstreams.
    pub upstream_tls: Option<UpstreamTls>,
    pub policy: PolicyConfig,
    /// Extra or overriding headers: name → template (nginx variables).
    pub headers: Vec<(String, String)>,
    /// Send the default identity headers (Host, X-Real-IP, X-Forwarded-*, SSL-Client,
    /// SSL-Client-Verify).
    pub default_headers: bool,
    /// Also send Envoy's X-Forwarded-Client-Cert.
    pub xfcc: bool,
    /// The Host the upstream receives: by default the client's on a TLS listener, the
    /// upstream's on an egress (plain-HTTP) listener.
    pub host_header: HostHeader,
}

/// Where the gateway reads the device inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryConfig {
    /// A CA directory (its `inventory.db`) or a PostgreSQL URL, as given.
    pub location: String,
    /// How often an SQLite inventory is read for changes (PostgreSQL notifies).
    pub poll: Duration,
}

/// Flags given together with `--config`, which override the file at start-up and at every
/// reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
}

impl Overrides {
    /// Writes the overriding values into a raw configuration (as flags: no file position).
    pub fn apply(&self, raw: &mut RawConfig) {
        if let Some(a) = &self.admin_listen {
            raw.server.admin_listen = Some(raw::flag(a.clone()));
        }
        if let Some(t) = self.threads {
            raw.server.threads = Some(raw::flag(i64::try_from(t).unwrap_or(i64::MAX)));
        }
    }
}

/// One side of a TCP tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelSide {
    /// Terminates mTLS from clients (devices), applies the same verification and policy
    /// as an HTTP route, then carries bytes to a TCP backend.
    Server {
        tls: ListenerTls,
        client_ca: Vec<PathBuf>,
        crl: Vec<PathBuf>,
        crl_check: CrlCheck,
        pin_sha256: Vec<String>,
        verify_depth: usize,
        policy: PolicyConfig,
        /// Send a PROXY protocol v2 header to the backend: the client's address, and the
        /// device ID in the SSL TLV's CN field (HAProxy's `send-proxy-v2-ssl-cn`).
        proxy_protocol: bool,
    },
    /// Accepts plain TCP (on loopback unless told otherwise) and opens mTLS to a remote.
    Client { tls: UpstreamTls },
}

/// A TCP tunnel (`[[tcp]]` in gate.toml, or `mtlsgate tunnel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    pub listen: SocketAddr,
    /// `host:port` to connect to.
    pub target: String,
    pub side: TunnelSide,
    /// A tunnel with no bytes moving either way for this long is closed.
    pub idle: Duration,
    pub connect_timeout: Duration,
    /// Connections over this number are refused (closed at once).
    pub max_connections: usize,
}

/// A further `[[server]]` block on the listener: a virtual host chosen by SNI, with its own
/// certificate, client verification and routes. Only its server-level settings and routes
/// are used; the listener's settings are the first block's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    /// Lower-case names (`api.example.com`, `*.example.com`).
    pub names: Vec<String>,
    pub config: GateConfig,
}

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

/// Parses a duration such as `10s`, `500ms`, `2m`.
pub fn parse_timeout(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    mtlsgate_pki::duration::parse_duration(s)
        .ok()
        .and_then(|d| u64::try_from(d.whole_seconds()).ok())
        .map(Duration::from_secs)
}

/// Parses an upstream URL: `http://host:port[/path]`.
pub fn parse_upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(format!(
                "`{s}`: upstream scheme `{other}` is not supported; use http://HOST:PORT or https://HOST:PORT"
            ))
        }
        None => return Err(format!("`{s}` has no scheme; write http://{s}")),
    }
    if uri.authority().is_none() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(uri)
}

/// The path written in an upstream URL (`http://h:1/app/` → `/app/`), if any.
pub fn upstream_path(s: &str) -> Option<String> {
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    let i = rest.find('/')?;
    let p = &rest[i..];
    Some(p.split(['?', '#']).next().unwrap_or(p).to_string())
}

/// Parses a listen address like `0.0.0.0:8443`, `[::]:8443` or `:8443`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        s.to_string()
    };
    t.parse()
        .map_err(|_| format!("`{s}` is not an address:port such as 127.0.0.1:8443"))
}

/// Checks `server_name` values: host names, optionally `*.` wildcards; lower-cased.
fn check_server_names(names: &[String], src: &Source<'_>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let body = n.strip_prefix("*.").unwrap_or(n);
        let ok = !body.is_empty()
            && body
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            return Err(ConfigError::new(
                src.whole(),
                format!("server_name `{n}` is not a host name (or *.domain)"),
            ));
        }
        out.push(n.to_ascii_lowercase());
    }
    Ok(out)
}

/// Listener-wide settings written in a later `[[server]]` block.
fn block_conflicts(b: &raw::RawServer) -> Vec<&'static str> {
    let mut v = Vec::new();
    if b.listen.is_some() {
        v.push("listen");
    }
    if b.admin_listen.is_some() {
        v.push("admin_listen");
    }
    if b.threads.is_some() {
        v.push("threads");
    }
    if b.access_log.is_some() {
        v.push("access_log");
    }
    if b.max_header_bytes.is_some() {
        v.push("max_header_bytes");
    }
    if b.inventory.is_some() || b.inventory_poll.is_some() {
        v.push("inventory");
    }
    if b.resumption.is_some() {
        v.push("resumption");
    }
    if b.verify_cache.is_some() {
        v.push("verify_cache");
    }
    v
}

/// Reads `allow = { inventory = true, tags = [...] }` into `policy`.
fn apply_allow(
    allow: &Option<At<raw::RawAllow>>,
    key: &str,
    policy: &mut PolicyConfig,
    has_inventory: bool,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let Some(a) = allow else { return Ok(()) };
    let v = a.get_ref();
    if !v.tags.is_empty() && !v.inventory {
        return Err(src.err(
            key,
            a.span(),
            "tags come from the inventory: write allow = { inventory = true, tags = [...] }",
        ));
    }
    if v.inventory && !has_inventory {
        return Err(src.err(
            key,
            a.span(),
            "inventory = true needs the inventory's location: set server.inventory (--inventory) to the CA directory or a postgres:// URL",
        ));
    }
    for t in &v.tags {
        if t.is_empty() || t.chars().any(|c| c.is_control() || c == ',') {
            return Err(src.err(key, a.span(), format!("`{t}` is not a tag")));
        }
    }
    policy.inventory = v.inventory;
    policy.tags = v.tags.clone();
    Ok(())
}

/// Parses `crl_check` (`strict` or `lenient`).
fn crl_check(v: &Option<At<String>>, key: &str, src: &Source<'_>) -> Result<CrlCheck, ConfigError> {
    match v {
        None => Ok(CrlCheck::Strict),
        Some(v) => CrlCheck::parse(v.get_ref()).ok_or_else(|| {
            src.err(
                key,
                v.span(),
                format!("`{}` is not a CRL check; use strict (as nginx: a missing or expired CRL refuses) or lenient", v.get_ref()),
            )
        }),
    }
}

/// Validates one `[[tcp]]` section (or the `mtlsgate tunnel` flags).
/// The upstream TLS settings of a route or a tunnel, as written.
struct RawUpstreamTls<'a> {
    ca: raw::OneOrMany,
    cert: Option<&'a At<PathBuf>>,
    key: Option<&'a At<PathBuf>>,
    key_passphrase_file: Option<&'a At<PathBuf>>,
    server_name: Option<&'a At<String>>,
}

/// Resolves the paths of `t` and checks it: the server name must be a host name or an IP
/// address, and the client certificate and key come together. `key` names a setting of
/// the route or tunnel in messages.
fn upstream_tls(
    src: &Source<'_>,
    key: &dyn Fn(&str) -> String,
    t: RawUpstreamTls<'_>,
) -> Result<UpstreamTls, ConfigError> {
    let path = |p: Option<&At<PathBuf>>| p.map(|p| src.resolve(p.get_ref().clone()));
    if let Some(n) = t.server_name {
        if rustls::pki_types::ServerName::try_from(n.get_ref().as_str()).is_err() {
            return Err(src.err(
                &key("upstream_server_name"),
                n.span(),
                format!("`{}` is not a host name or IP address", n.get_ref()),
            ));
        }
    }
    if t.cert.is_some() != t.key.is_some() {
        let at = t.cert.or(t.key).map(|p| p.span()).unwrap_or(0..0);
        return Err(src.err(
            &key("upstream_cert"),
            at,
            "upstream_cert and upstream_key go together: give both, or neither",
        ));
    }
    Ok(UpstreamTls {
        ca: t
            .ca
            .into_vec()
            .into_iter()
            .map(|p| src.resolve(p))
            .collect(),
        cert: path(t.cert),
        key: path(t.key),
        key_passphrase_file: path(t.key_passphrase_file),
        server_name: t.server_name.map(|n| n.get_ref().clone()),
        // Set by the route (from its Host setting); tunnels offer no ALPN.
        http2: false,
    })
}

fn tunnel_from_raw(
    i: usize,
    t: raw::RawTunnel,
    src: &Source<'_>,
    has_inventory: bool,
) -> Result<TunnelConfig, ConfigError> {
    let key = |k: &str| format!("tcp[{i}].{k}");
    let side_server = t.cert.is_some() || t.key.is_some();
    let listen = match &t.listen {
        Some(v) => parse_listen(v.get_ref()).map_err(|m| src.err(&key("listen"), v.span(), m))?,
        None => {
            return Err(ConfigError::new(
                src.whole(),
                format!(
                    "{} is missing: the address the tunnel listens on, such as 0.0.0.0:8883",
                    key("listen")
                ),
            ))
        }
    };
    let target = match &t.target {
        Some(v) => {
            let s = v.get_ref();
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(src.err(
                    &key("target"),
                    v.span(),
                    format!("`{s}` is not HOST:PORT, such as 127.0.0.1:1883"),
                ));
            }
            s.clone()
        }
        None => {
            return Err(ConfigError::new(
                src.whole(),
                format!(
                    "{} is missing: the HOST:PORT to carry the bytes to",
                    key("target")
                ),
            ))
        }
    };
    let dur = |v: &Option<At<String>>, k: &str, d: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(d),
            Some(v) => parse_timeout(v.get_ref())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    src.err(
                        &key(k),
                        v.span(),
                        format!(
                            "`{}` is not a duration such as 10s, 500ms or 10m",
                            v.get_ref()
                        ),
                    )
                }),
        }
    };
    let idle = dur(&t.idle, "idle", defaults::TUNNEL_IDLE)?;
    let connect_timeout = dur(
        &t.connect_timeout,
        "connect_timeout",
        defaults::UPSTREAM_CONNECT,
    )?;
    let max_connections = match &t.max_connections {
        None => defaults::TUNNEL_MAX_CONNECTIONS,
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(src.err(
                    &key("max_connections"),
                    v.span(),
                    format!("{} is out of range: use 1 or more", v.get_ref()),
                ))
            }
        },
    };
    let side = if side_server {
        let (Some(c), Some(k)) = (&t.cert, &t.key) else {
            return Err(ConfigError::new(
                src.whole(),
                format!("{} and {} go together: give both (a tunnel that terminates mTLS) or neither (a tunnel that opens mTLS to its target)", key("cert"), key("key")),
            ));
        };
        let client_ca: Vec<PathBuf> = t
            .client_ca
            .into_vec()
            .into_iter()
            .map(|p| src.resolve(p))
            .collect();
        if client_ca.is_empty() && t.pin_sha256.is_empty() {
            return Err(ConfigError::new(
                src.whole(),
                format!("{} is missing: a tunnel that terminates mTLS verifies its clients against a CA bundle (--client-ca)", key("client_ca")),
            ));
        }
        if t.upstream_cert.is_some() || !t.upstream_ca.clone().into_vec().is_empty() {
            return Err(ConfigError::new(
                src.whole(),
                format!("{}: a tunnel either terminates mTLS (cert, key, client_ca) or opens it to its target (upstream_ca, upstream_cert, upstream_key), not both", key("cert")),
            ));
        }
        let verify_depth = match &t.verify_depth {
            None => defaults::VERIFY_DEPTH,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(d @ 1..=10) => d,
                _ => {
                    return Err(src.err(
                        &key("verify_depth"),
                        v.span(),
                        format!("{} is out of range: use 1 to 10", v.get_ref()),
                    ))
                }
            },
        };
        let mut policy = PolicyConfig {
            device_ids: t.allow_device_ids.clone(),
            spiffe_ids: t.allow_spiffe_ids.clone(),
            ous: t.allow_ous.clone(),
            fingerprints: t.allow_fingerprints.clone(),
            allow_files: t
                .allow_file
                .clone()
                .into_vec()
                .into_iter()
                .map(|p| src.resolve(p))
                .collect(),
            ..PolicyConfig::default()
        };
        apply_allow(&t.allow, &key("allow"), &mut policy, has_inventory, src)?;
        TunnelSide::Server {
            tls: ListenerTls {
                cert: src.resolve(c.get_ref().clone()),
                key: src.resolve(k.get_ref().clone()),
                key_passphrase_file: t
                    .key_passphrase_file
                    .as_ref()
                    .map(|p| src.resolve(p.get_ref().clone())),
            },
            client_ca,
            crl: t
                .crl
                .into_vec()
                .into_iter()
                .map(|p| src.resolve(p))
                .collect(),
            crl_check: crl_check(&t.crl_check, &key("crl_check"), src)?,
            pin_sha256: t.pin_sha256,
            verify_depth,
            policy,
            proxy_protocol: t.proxy_protocol.unwrap_or(false),
        }
    } else {
        if !t.client_ca.clone().into_vec().is_empty()
            || !t.allow_device_ids.is_empty()
            || !t.allow_file.clone().into_vec().is_empty()
        {
            return Err(ConfigError::new(
                src.whole(),
                format!("{}: client_ca and allowlists belong to a tunnel that terminates mTLS; give cert and key too", key("client_ca")),
            ));
        }
        let tls = upstream_tls(
            src,
            &key,
            RawUpstreamTls {
                ca: t.upstream_ca,
                cert: t.upstream_cert.as_ref(),
                key: t.upstream_key.as_ref(),
                key_passphrase_file: t.upstream_key_passphrase_file.as_ref(),
                server_name: t.upstream_server_name.as_ref(),
            },
        )?;
        TunnelSide::Client { tls }
    };
    Ok(TunnelConfig {
        listen,
        target,
        side,
        idle,
        connect_timeout,
        max_connections,
    })
}

impl GateConfig {
    /// Reads and validates a TOML configuration file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<GateConfig, ConfigError> {
        Self::from_file_with(path, &Overrides::default())
    }

    /// Like [`GateConfig::from_file`], with flags that override the file.
    pub fn from_file_with(path: &Path, overrides: &Overrides) -> Result<GateConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&name, format!("cannot read it: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut raw = Self::parse_toml(&name, &text)?;
        overrides.apply(&mut raw);
        let mut c = Self::from_raw(
            raw,
            Source::File {
                name: &name,
                text: &text,
                base,
            },
        )?;
        c.source = Some(path.to_path_buf());
        c.overrides = overrides.clone();
        Ok(c)
    }

    /// Parses configuration text (`name` is used in errors; `base` resolves paths).
    pub fn from_toml(name: &str, text: &str, base: &Path) -> Result<GateConfig, ConfigError> {
        let raw = Self::parse_toml(name, text)?;
        Self::from_raw(raw, Source::File { name, text, base })
    }

    fn parse_toml(name: &str, text: &str) -> Result<RawConfig, ConfigError> {
        let located = |e: toml::de::Error| {
            let at = e.span().map(|s| line_of(text, s)).unwrap_or_default();
            // Name the key when the error points into a `key = value` line.
            let key = e.span().and_then(|s| key_at(text, s.start));
            let message = match key {
                Some(k) if !e.message().contains(&format!("`{k}`")) => {
                    format!("{k}: {}", e.message())
                }
                _ => e.message().to_string(),
            };
            ConfigError::new(format!("{name}{at}"), message)
        };
        // `[[server]]` blocks (virtual hosts) or one `[server]`: the shape decides.
        let hosts = toml::from_str::<toml::Table>(text)
            .ok()
            .is_some_and(|t| t.get("server").is_some_and(|v| v.is_array()));
        if hosts {
            let h: raw::RawConfigHosts = toml::from_str(text).map_err(located)?;
            let mut servers = h.server.into_iter();
            let first = servers.next().unwrap_or_default();
            return Ok(RawConfig {
                server: first,
                vhosts: servers.collect(),
                timeouts: h.timeouts,
                routes: h.routes,
                tunnels: h.tunnels,
            });
        }
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_of(text, s)).unwrap_or_default();
            // Name the key when the error points into a `key = value` line.
            let key = e.span().and_then(|s| key_at(text, s.start));
            let message = match key {
                Some(k) if !e.message().contains(&format!("`{k}`")) => {
                    format!("{k}: {}", e.message())
                }
                _ => e.message().to_string(),
            };
            ConfigError::new(format!("{name}{at}"), message)
        })
    }

    /// Applies the defaults and validates: the one place both forms are checked.
    pub fn from_raw(mut raw: RawConfig, src: Source<'_>) -> Result<GateConfig, ConfigError> {
        let vhost_blocks = std::mem::take(&mut raw.vhosts);
        if !vhost_blocks.is_empty() && !raw.routes.is_empty() {
            return Err(ConfigError::new(
                src.whole(),
                "with several [[server]] blocks, each server's routes go inside it as [[server.route]]",
            ));
        }
        let mut s = raw.server;
        // Routes written inside the server block come first.
        let mut all_routes = std::mem::take(&mut s.routes);
        all_routes.append(&mut raw.routes);
        raw.routes = all_routes;
        let server_names = check_server_names(&s.server_name, &src)?;
        let span = |v: &At<String>| v.span();

        let tls = match (&s.cert, &s.key) {
            (None, None) => {
                if let Some(p) = &s.key_passphrase_file {
                    return Err(src.err(
                        "server.key_passphrase_file",
                        p.span(),
                        "is set but there is no key: give cert and key too",
                    ));
                }
                None
            }
            (Some(c), Some(k)) => Some(ListenerTls {
                cert: src.resolve(c.get_ref().clone()),
                key: src.resolve(k.get_ref().clone()),
                key_passphrase_file: s
                    .key_passphrase_file
                    .as_ref()
                    .map(|p| src.resolve(p.get_ref().clone())),
            }),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::new(
                    src.whole(),
                    match src {
                        Source::File { .. } => "server.cert and server.key go together: give both (a TLS listener) or neither (a plain-HTTP listener that sends requests out over TLS)",
                        Source::Flags => "--cert and --key go together: give both (a TLS listener) or neither (a plain-HTTP listener that sends requests out over TLS)",
                    },
                ));
            }
        };
        let listen = match &s.listen {
            None if tls.is_none() => parse_listen(defaults::LISTEN_PLAIN)
                .map_err(|m| src.err("server.listen", 0..0, m))?,
            None => {
                parse_listen(defaults::LISTEN).map_err(|m| src.err("server.listen", 0..0, m))?
            }
            Some(v) => {
                parse_listen(v.get_ref()).map_err(|m| src.err("server.listen", span(v), m))?
            }
        };
        let verify = match &s.verify_client {
            None if tls.is_none() => VerifyMode::Off,
            None => VerifyMode::parse(defaults::VERIFY_CLIENT).unwrap_or(VerifyMode::Require),
            Some(v) => VerifyMode::parse(v.get_ref()).ok_or_else(|| {
                src.err(
                    "server.verify_client",
                    span(v),
                    format!(
                        "`{}` is not a mode; use require, optional, optional_no_ca or off",
                        v.get_ref()
                    ),
                )
            })?,
        };
        let verify_depth = match &s.verify_depth {
            None => defaults::VERIFY_DEPTH,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(d @ 1..=10) => d,
                _ => {
                    return Err(src.err(
                        "server.verify_depth",
                        v.span(),
                        format!("{} is out of range: use 1 to 10", v.get_ref()),
                    ))
                }
            },
        };
        let admin_listen = match &s.admin_listen {
            None => None,
            Some(a) => Some(
                parse_listen(a.get_ref())
                    .map_err(|m| src.err("server.admin_listen", span(a), m))?,
            ),
        };
        if let Some(a) = admin_listen {
            if !a.ip().is_loopback() {
                let at = s.admin_listen.as_ref().map(|v| v.span()).unwrap_or(0..0);
                return Err(src.err(
                    "server.admin_listen",
                    at,
                    format!("{a} must be a loopback address (127.0.0.1 or [::1]): the admin listener has no authentication"),
                ));
            }
        }
        let access_log = match &s.access_log {
            None => AccessLog::parse(defaults::ACCESS_LOG).unwrap_or(AccessLog::Text),
            Some(v) => AccessLog::parse(v.get_ref()).ok_or_else(|| {
                src.err(
                    "server.access_log",
                    span(v),
                    format!("`{}` is not a format; use text, json or off", v.get_ref()),
                )
            })?,
        };
        let max_header_bytes = match &s.max_header_bytes {
            None => defaults::MAX_HEADER_BYTES,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if (1024..=1024 * 1024).contains(&n) => n,
                _ => {
                    return Err(src.err(
                        "server.max_header_bytes",
                        v.span(),
                        format!("{} is out of range: use 1024 to 1048576", v.get_ref()),
                    ))
                }
            },
        };
        let threads = match &s.threads {
            None => None,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n @ 1..=1024) => Some(n),
                _ => {
                    return Err(src.err(
                        "server.threads",
                        v.span(),
                        format!("{} is out of range: use 1 to 1024", v.get_ref()),
                    ))
                }
            },
        };

        let inventory = match &s.inventory {
            None => {
                if let Some(p) = &s.inventory_poll {
                    return Err(src.err(
                        "server.inventory_poll",
                        p.span(),
                        "is set but there is no inventory: set server.inventory too",
                    ));
                }
                None
            }
            Some(loc) => {
                let given = loc.get_ref().trim();
                if given.is_empty() {
                    return Err(src.err(
                        "server.inventory",
                        loc.span(),
                        "is empty: give a CA directory or a postgres:// URL",
                    ));
                }
                let location = if given.contains("://") || given.starts_with("sqlite:") {
                    given.to_string()
                } else {
                    src.resolve(PathBuf::from(given)).display().to_string()
                };
                mtlsgate_store::Location::parse(&location)
                    .map_err(|e| src.err("server.inventory", loc.span(), e.to_string()))?;
                let poll = match &s.inventory_poll {
                    None => defaults::INVENTORY_POLL,
                    Some(v) => parse_timeout(v.get_ref())
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            src.err(
                                "server.inventory_poll",
                                v.span(),
                                format!("`{}` is not a duration such as 1s or 500ms", v.get_ref()),
                            )
                        })?,
                };
                Some(InventoryConfig { location, poll })
            }
        };
        let mut timeouts = Timeouts::default();
        let t = raw.timeouts;
        for (key, val, slot) in [
            ("timeouts.handshake", t.handshake, &mut timeouts.handshake),
            (
                "timeouts.header_read",
                t.header_read,
                &mut timeouts.header_read,
            ),
            ("timeouts.idle", t.idle, &mut timeouts.idle),
            (
                "timeouts.upstream_connect",
                t.upstream_connect,
                &mut timeouts.upstream_connect,
            ),
            (
                "timeouts.upstream_response",
                t.upstream_response,
                &mut timeouts.upstream_response,
            ),
            ("timeouts.drain", t.drain, &mut timeouts.drain),
        ] {
            if let Some(v) = val {
                *slot = parse_timeout(v.get_ref())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        src.err(
                            key,
                            v.span(),
                            format!(
                                "`{}` is not a duration such as 10s, 500ms or 2m",
                                v.get_ref()
                            ),
                        )
                    })?;
            }
        }

        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let prefix = match &r.prefix {
                None => defaults::ROUTE_PREFIX.to_string(),
                Some(p) => {
                    crate::path::check_prefix(p.get_ref())
                        .map_err(|m| src.err(&key("prefix"), p.span(), m))?;
                    p.get_ref().clone()
                }
            };
            if routes.iter().any(|x: &RouteConfig| x.prefix == prefix) {
                let at = r.prefix.as_ref().map(|p| p.span()).unwrap_or(0..0);
                return Err(src.err(
                    &key("prefix"),
                    at,
                    format!("`{prefix}` is the prefix of an earlier route too; each prefix may appear once"),
                ));
            }
            let Some(up) = &r.upstream else {
                return Err(ConfigError::new(
                    src.whole(),
                    match src {
                        Source::File { .. } => format!("{} is missing: every [[route]] needs an upstream, such as upstream = \"http://127.0.0.1:8000\"", key("upstream")),
                        Source::Flags => "--upstream is missing: give the URL of your app, such as --upstream http://127.0.0.1:8000".into(),
                    },
                ));
            };
            let upstream = parse_upstream(up.get_ref())
                .map_err(|m| src.err(&key("upstream"), up.span(), m))?;
            let https = upstream.scheme_str() == Some("https");
            let upstream_tls = upstream_tls(
                &src,
                &key,
                RawUpstreamTls {
                    ca: r.upstream_ca,
                    cert: r.upstream_cert.as_ref(),
                    key: r.upstream_key.as_ref(),
                    key_passphrase_file: r.upstream_key_passphrase_file.as_ref(),
                    server_name: r.upstream_server_name.as_ref(),
                },
            )?;
            if !https && upstream_tls != UpstreamTls::default() {
                return Err(src.err(
                    &key("upstream"),
                    up.span(),
                    format!("`{}` is plain HTTP, but upstream TLS settings are given (upstream_ca, upstream_cert, upstream_key, upstream_server_name): write https://", up.get_ref()),
                ));
            }
            let host_header = match &r.host_header {
                None if tls.is_some() => HostHeader::Client,
                None => HostHeader::Upstream,
                Some(v) => HostHeader::parse(v.get_ref()).ok_or_else(|| {
                    src.err(
                        &key("host_header"),
                        v.span(),
                        format!(
                            "`{}` is not a Host to send; use client (the Host the client sent) or upstream (the host of the upstream URL)",
                            v.get_ref()
                        ),
                    )
                })?,
            };
            let mut headers = Vec::new();
            if let Some(table) = &r.headers {
                for (hname, v) in table.get_ref() {
                    let Some(v) = v.as_str() else {
                        return Err(src.err(
                            &key("headers"),
                            table.span(),
                            format!("header `{hname}` must be a string template"),
                        ));
                    };
                    headers.push((hname.clone(), v.to_string()));
                }
            }
            let mut policy = PolicyConfig {
                device_ids: r.allow_device_ids,
                spiffe_ids: r.allow_spiffe_ids,
                ous: r.allow_ous,
                fingerprints: r.allow_fingerprints,
                allow_files: r
                    .allow_file
                    .into_vec()
                    .into_iter()
                    .map(|p| src.resolve(p))
                    .collect(),
                ..PolicyConfig::default()
            };
            apply_allow(
                &r.allow,
                &key("allow"),
                &mut policy,
                inventory.is_some(),
                &src,
            )?;
            routes.push(RouteConfig {
                prefix,
                upstream_path: upstream_path(up.get_ref()),
                upstream_tls: https.then_some(UpstreamTls {
                    http2: host_header == HostHeader::Upstream,
                    ..upstream_tls
                }),
                upstream,
                policy,
                headers,
                default_headers: r.default_headers.unwrap_or(defaults::DEFAULT_HEADERS),
                xfcc: r.xfcc.unwrap_or(defaults::XFCC),
                host_header,
            });
        }
        let mut tunnels = Vec::new();
        for (i, t) in raw.tunnels.into_iter().enumerate() {
            tunnels.push(tunnel_from_raw(i, t, &src, inventory.is_some())?);
        }
        for (i, t) in tunnels.iter().enumerate() {
            if tunnels[..i].iter().any(|o| o.listen == t.listen)
                || (!routes.is_empty() && t.listen == listen)
            {
                return Err(ConfigError::new(
                    src.whole(),
                    format!(
                        "tcp[{i}].listen: {} is used twice; give every listener its own address",
                        t.listen
                    ),
                ));
            }
        }
        if routes.is_empty() && tunnels.is_empty() {
            return Err(ConfigError::new(
                src.whole(),
                match src {
                    Source::File { .. } => "no [[route]]: add at least one, e.g. [[route]] prefix = \"/\" upstream = \"http://127.0.0.1:8000\"",
                    Source::Flags => "--upstream is missing: give the URL of your app, such as --upstream http://127.0.0.1:8000",
                },
            ));
        }
        let resolve_all = |v: raw::OneOrMany| -> Vec<PathBuf> {
            v.into_vec().into_iter().map(|p| src.resolve(p)).collect()
        };
        let mut vhosts = Vec::with_capacity(vhost_blocks.len());
        for (i, mut block) in vhost_blocks.into_iter().enumerate() {
            let place = format!("server[{}]", i + 1);
            let names = check_server_names(&block.server_name, &src)?;
            if names.is_empty() {
                return Err(ConfigError::new(
                    src.whole(),
                    format!("{place}.server_name is missing: every [[server]] but the first (the default) names the hosts it serves"),
                ));
            }
            if let Some(other) = block_conflicts(&block).first() {
                return Err(ConfigError::new(
                    src.whole(),
                    format!("{place}.{other} is a setting of the listener: write it in the first [[server]] block only"),
                ));
            }
            if block.cert.is_none() || block.key.is_none() {
                return Err(ConfigError::new(
                    src.whole(),
                    format!("{place} needs its own cert and key: a virtual host is chosen by SNI during the TLS handshake"),
                ));
            }
            let routes = std::mem::take(&mut block.routes);
            if routes.is_empty() {
                return Err(ConfigError::new(
                    src.whole(),
                    format!("{place} has no [[server.route]]: give it at least one"),
                ));
            }
            let sub = GateConfig::from_raw(
                RawConfig {
                    server: block,
                    routes,
                    ..RawConfig::default()
                },
                src,
            )?;
            vhosts.push(VirtualHost { names, config: sub });
        }
        if !vhosts.is_empty() && tls.is_none() {
            return Err(ConfigError::new(
                src.whole(),
                "virtual hosts need TLS: the first [[server]] needs a cert and key too",
            ));
        }
        let all_names: Vec<&String> = server_names
            .iter()
            .chain(vhosts.iter().flat_map(|v| v.names.iter()))
            .collect();
        for (i, n) in all_names.iter().enumerate() {
            if all_names[..i].contains(n) {
                return Err(ConfigError::new(
                    src.whole(),
                    format!("server_name {n} is given to two servers; each name belongs to one"),
                ));
            }
        }
        let c = GateConfig {
            source: None,
            overrides: Overrides::default(),
            server_names,
            vhosts,
            listen,
            tls,
            client_ca: resolve_all(s.client_ca),
            trusted_ca: resolve_all(s.trusted_ca),
            verify,
            verify_depth,
            crl: resolve_all(s.crl),
            crl_check: crl_check(&s.crl_check, "server.crl_check", &src)?,
            pin_sha256: s.pin_sha256,
            pin_cert: resolve_all(s.pin_cert),
            reject_at_handshake: s
                .reject_at_handshake
                .unwrap_or(defaults::REJECT_AT_HANDSHAKE),
            verify_cache: s.verify_cache.unwrap_or(defaults::VERIFY_CACHE),
            resumption: s.resumption.unwrap_or(defaults::RESUMPTION),
            admin_listen,
            access_log,
            timeouts,
            max_header_bytes,
            routes,
            tunnels,
            threads,
            inventory,
        };
        if !c.routes.is_empty()
            && c.tls.is_none()
            && (c.verify != VerifyMode::Off || !c.client_ca.is_empty() || !c.crl.is_empty())
        {
            return Err(ConfigError::new(
                src.whole(),
                "client certificates are verified only on a TLS listener: give cert and key (--cert, --key), or leave out client_ca, crl and verify_client",
            ));
        }
        if !c.routes.is_empty()
            && c.verify != VerifyMode::Off
            && c.client_ca.is_empty()
            && c.trusted_ca.is_empty()
            && c.pin_sha256.is_empty()
            && c.pin_cert.is_empty()
        {
            return Err(ConfigError::new(
                src.whole(),
                "client certificates are verified but no client CA is given: set client_ca (--client-ca), pin certificates, or verify_client = \"off\" (--verify-client off)",
            ));
        }
        Ok(c)
    }

    /// Every file whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(t) = &self.tls {
            v.extend([t.cert.clone(), t.key.clone()]);
            v.extend(t.key_passphrase_file.iter().cloned());
        }
        v.extend(self.client_ca.iter().cloned());
        v.extend(self.trusted_ca.iter().cloned());
        v.extend(self.crl.iter().cloned());
        v.extend(self.pin_cert.iter().cloned());
        for r in &self.routes {
            v.extend(r.policy.allow_files.iter().cloned());
            if let Some(t) = &r.upstream_tls {
                v.extend(t.ca.iter().cloned());
                v.extend(t.cert.iter().cloned());
                v.extend(t.key.iter().cloned());
                v.extend(t.key_passphrase_file.iter().cloned());
            }
        }
        for t in &self.tunnels {
            match &t.side {
                TunnelSide::Server {
                    tls,
                    client_ca,
                    crl,
                    policy,
                    ..
                } => {
                    v.extend([tls.cert.clone(), tls.key.clone()]);
                    v.extend(tls.key_passphrase_file.iter().cloned());
                    v.extend(client_ca.iter().cloned());
                    v.extend(crl.iter().cloned());
                    v.extend(policy.allow_files.iter().cloned());
                }
                TunnelSide::Client { tls } => {
                    v.extend(tls.ca.iter().cloned());
                    v.extend(tls.cert.iter().cloned());
                    v.extend(tls.key.iter().cloned());
                    v.extend(tls.key_passphrase_file.iter().cloned());
                }
            }
        }
        for h in &self.vhosts {
            v.extend(h.config.watched_files());
        }
        if let Some(s) = &self.source {
            v.push(s.clone());
        }
        v
    }

    /// The keys of the settings that differ between this configuration and `next` (for the
    /// reload's log line), in the order of [`settings::SETTINGS`].
    pub fn changed_settings(&self, next: &GateConfig) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut diff = |key: &str, changed: bool| {
            if changed {
                out.push(key.to_string());
            }
        };
        let (a, b) = (self, next);
        diff("server.listen", a.listen != b.listen);
        let (la, lb) = (a.tls.as_ref(), b.tls.as_ref());
        diff("server.cert", la.map(|t| &t.cert) != lb.map(|t| &t.cert));
        diff("server.key", la.map(|t| &t.key) != lb.map(|t| &t.key));
        diff(
            "server.key_passphrase_file",
            la.map(|t| &t.key_passphrase_file) != lb.map(|t| &t.key_passphrase_file),
        );
        diff("server.client_ca", a.client_ca != b.client_ca);
        diff("server.trusted_ca", a.trusted_ca != b.trusted_ca);
        diff("server.verify_client", a.verify != b.verify);
        diff("server.verify_depth", a.verify_depth != b.verify_depth);
        diff("server.crl", a.crl != b.crl);
        diff("server.crl_check", a.crl_check != b.crl_check);
        diff("server.pin_sha256", a.pin_sha256 != b.pin_sha256);
        diff("server.pin_cert", a.pin_cert != b.pin_cert);
        diff(
            "server.reject_at_handshake",
            a.reject_at_handshake != b.reject_at_handshake,
        );
        diff("server.verify_cache", a.verify_cache != b.verify_cache);
        diff("server.resumption", a.resumption != b.resumption);
        diff("server.access_log", a.access_log != b.access_log);
        diff(
            "server.max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        );
        diff("server.admin_listen", a.admin_listen != b.admin_listen);
        diff("server.threads", a.threads != b.threads);
        let (ta, tb) = (&a.timeouts, &b.timeouts);
        diff("timeouts.handshake", ta.handshake != tb.handshake);
        diff("timeouts.header_read", ta.header_read != tb.header_read);
        diff("timeouts.idle", ta.idle != tb.idle);
        diff(
            "timeouts.upstream_connect",
            ta.upstream_connect != tb.upstream_connect,
        );
        diff(
            "timeouts.upstream_response",
            ta.upstream_response != tb.upstream_response,
        );
        diff("timeouts.drain", ta.drain != tb.drain);
        if a.routes.len() != b.routes.len() {
            out.push(format!(
                "route (now {} instead of {})",
                b.routes.len(),
                a.routes.len()
            ));
        } else {
            for (i, (ra, rb)) in a.routes.iter().zip(&b.routes).enumerate() {
                let k = |f: &str| format!("route[{i}].{f}");
                let mut d = |f: &str, changed: bool| {
                    if changed {
                        out.push(k(f));
                    }
                };
                d("prefix", ra.prefix != rb.prefix);
                d("upstream", ra.upstream != rb.upstream);
                let ut = |r: &RouteConfig| r.upstream_tls.clone().unwrap_or_default();
                let (ua, ub) = (ut(ra), ut(rb));
                d("upstream_ca", ua.ca != ub.ca);
                d("upstream_cert", ua.cert != ub.cert);
                d("upstream_key", ua.key != ub.key);
                d(
                    "upstream_key_passphrase_file",
                    ua.key_passphrase_file != ub.key_passphrase_file,
                );
                d("upstream_server_name", ua.server_name != ub.server_name);
                d("allow_file", ra.policy.allow_files != rb.policy.allow_files);
                d(
                    "allow_device_ids",
                    ra.policy.device_ids != rb.policy.device_ids,
                );
                d(
                    "allow_spiffe_ids",
                    ra.policy.spiffe_ids != rb.policy.spiffe_ids,
                );
                d("allow_ous", ra.policy.ous != rb.policy.ous);
                d(
                    "allow_fingerprints",
                    ra.policy.fingerprints != rb.policy.fingerprints,
                );
                d("headers", ra.headers != rb.headers);
                d("default_headers", ra.default_headers != rb.default_headers);
                d("xfcc", ra.xfcc != rb.xfcc);
                d("host_header", ra.host_header != rb.host_header);
                d(
                    "allow",
                    (ra.policy.inventory, &ra.policy.tags)
                        != (rb.policy.inventory, &rb.policy.tags),
                );
            }
        }
        if a.server_names != b.server_names {
            out.push("server.server_name".into());
        }
        if a.vhosts.len() != b.vhosts.len() {
            out.push(format!(
                "server (now {} blocks instead of {})",
                b.vhosts.len() + 1,
                a.vhosts.len() + 1
            ));
        } else {
            for (i, (va, vb)) in a.vhosts.iter().zip(&b.vhosts).enumerate() {
                if va != vb {
                    out.push(format!("server[{}]", i + 1));
                }
            }
        }
        if a.tunnels.len() != b.tunnels.len() {
            out.push(format!(
                "tcp (now {} instead of {})",
                b.tunnels.len(),
                a.tunnels.len()
            ));
        } else {
            for (i, (ta, tb)) in a.tunnels.iter().zip(&b.tunnels).enumerate() {
                if ta != tb {
                    out.push(format!("tcp[{i}]"));
                }
            }
        }
        out
    }

    /// The settings of `next` that a reload cannot apply, put back to this configuration's
    /// values; returns a sentence for each one that differed.
    pub fn keep_restart_settings(&self, next: &mut GateConfig) -> Vec<String> {
        let mut kept = Vec::new();
        if next.listen != self.listen {
            kept.push(format!(
                "server.listen changed to {} but needs a restart; still listening on {}",
                next.listen, self.listen
            ));
            next.listen = self.listen;
        }
        if next.admin_listen != self.admin_listen {
            let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or("off".into());
            kept.push(format!(
                "server.admin_listen changed to {} but needs a restart; still {}",
                show(next.admin_listen),
                show(self.admin_listen)
            ));
            next.admin_listen = self.admin_listen;
        }
        if next.threads != self.threads {
            let show = |t: Option<usize>| t.map(|t| t.to_string()).unwrap_or("one per core".into());
            kept.push(format!(
                "server.threads changed to {} but needs a restart; still {}",
                show(next.threads),
                show(self.threads)
            ));
            next.threads = self.threads;
        }
        if next.inventory.as_ref().map(|i| &i.location)
            != self.inventory.as_ref().map(|i| &i.location)
        {
            kept.push(format!(
                "server.inventory changed to {} but needs a restart; still {}",
                next.inventory
                    .as_ref()
                    .map(|i| i.location.as_str())
                    .unwrap_or("none"),
                self.inventory
                    .as_ref()
                    .map(|i| i.location.as_str())
                    .unwrap_or("none")
            ));
            next.inventory = self.inventory.clone();
        }
        let old: Vec<SocketAddr> = self.tunnels.iter().map(|t| t.listen).collect();
        let new: Vec<SocketAddr> = next.tunnels.iter().map(|t| t.listen).collect();
        if old != new {
            kept.push(format!(
                "the tcp listeners changed ({}) but need a restart; keeping the running ones and their settings",
                new.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ));
            next.tunnels = self.tunnels.clone();
        }
        debug_assert!(settings::SETTINGS
            .iter()
            .filter(|s| s.apply == settings::Apply::Restart)
            .all(|s| matches!(
                s.key,
                "server.listen"
                    | "server.admin_listen"
                    | "server.threads"
                    | "server.inventory"
                    | "server.inventory_poll"
                    | "tcp.listen"
            )));
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn host_header_defaults_by_listener_and_sets_http2() {
        let tls = GateConfig::from_toml("gate.toml", GOOD, Path::new(".")).expect("ok");
        assert_eq!(tls.routes[0].host_header, HostHeader::Client);
        let egress = "[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"https://api.example:8443\"\n";
        let c = GateConfig::from_toml("gate.toml", egress, Path::new(".")).expect("ok");
        assert_eq!(c.routes[0].host_header, HostHeader::Upstream);
        assert_eq!(
            c.routes[0].upstream_tls.as_ref().map(|t| t.http2),
            Some(true)
        );
        let keep = egress.replace("[[route]]\n", "[[route]]\nhost_header = \"client\"\n");
        let k = GateConfig::from_toml("gate.toml", &keep, Path::new(".")).expect("ok");
        assert_eq!(k.routes[0].host_header, HostHeader::Client);
        assert_eq!(
            k.routes[0].upstream_tls.as_ref().map(|t| t.http2),
            Some(false)
        );
        assert_eq!(c.changed_settings(&k), ["route[0].host_header"]);
        let bad = egress.replace("[[route]]\n", "[[route]]\nhost_header = \"mine\"\n");
        let e = GateConfig::from_toml("gate.toml", &bad, Path::new(".")).expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("gate.toml:4: route[0].host_header: `mine` is not a Host to send"),
            "{e}"
        );
    }

    #[test]
    fn parses_and_resolves_paths() {
        let c = GateConfig::from_toml("gate.toml", GOOD, Path::new("/etc/gate")).expect("ok");
        assert_eq!(
            c.tls.as_ref().map(|t| t.cert.clone()),
            Some(PathBuf::from("/etc/gate/server.crt"))
        );
        assert_eq!(
            c.routes[0].policy.allow_files,
            vec![PathBuf::from("/etc/gate/whitelist.txt")]
        );
        assert_eq!(c.verify, VerifyMode::Require);
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.max_header_bytes, defaults::MAX_HEADER_BYTES);
    }

    #[test]
    fn upstream_path_is_only_what_was_written() {
        assert_eq!(upstream_path("http://127.0.0.1:3000"), None);
        assert_eq!(upstream_path("http://127.0.0.1:3000/"), Some("/".into()));
        assert_eq!(upstream_path("http://h/app/?x=1"), Some("/app/".into()));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad = GOOD.replace(
            "upstream = \"http://127.0.0.1:3000\"",
            "upstream = \"ftp://x\"",
        );
        let e = GateConfig::from_toml("gate.toml", &bad, Path::new(".")).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "gate.toml:10: route[0].upstream: `ftp://x`: upstream scheme `ftp` is not supported; use http://HOST:PORT or https://HOST:PORT"
        );
        let bad = GOOD.replace("prefix = ", "prefx = ");
        let e = GateConfig::from_toml("gate.toml", &bad, Path::new(".")).expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("gate.toml:9: unknown field `prefx`"),
            "{e}"
        );
        let bad = GOOD.replace("prefix = \"/api/\"", "prefix = \"/api/../x/\"");
        let e = GateConfig::from_toml("gate.toml", &bad, Path::new(".")).expect_err("bad");
        assert!(
            e.to_string().starts_with("gate.toml:9: route[0].prefix: "),
            "{e}"
        );
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let mut raw = RawConfig::default();
        raw.server.cert = Some(raw::flag("s.crt".into()));
        raw.server.key = Some(raw::flag("s.key".into()));
        raw.server.client_ca = raw::OneOrMany::One("ca.crt".into());
        raw.server.verify_client = Some(raw::flag("sometimes".into()));
        raw.routes.push(raw::RawRoute {
            upstream: Some(raw::flag("http://127.0.0.1:1".into())),
            ..Default::default()
        });
        let e = GateConfig::from_raw(raw, Source::Flags).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "--verify-client: `sometimes` is not a mode; use require, optional, optional_no_ca or off"
        );
    }

    #[test]
    fn non_loopback_admin_is_a_config_error() {
        let t = GOOD.replace(
            "client_ca = \"ca.crt\"\n",
            "client_ca = \"ca.crt\"\nadmin_listen = \"0.0.0.0:9901\"\n",
        );
        let e = GateConfig::from_toml("gate.toml", &t, Path::new(".")).expect_err("bad");
        assert!(
            e.to_string().starts_with(
                "gate.toml:7: server.admin_listen: 0.0.0.0:9901 must be a loopback address"
            ),
            "{e}"
        );
    }

    #[test]
    fn changed_settings_name_every_kind_of_change() {
        let a = GateConfig::from_toml("gate.toml", GOOD, Path::new(".")).expect("ok");
        let mut b = a.clone();
        b.timeouts.upstream_connect = Duration::from_secs(1);
        b.routes[0].xfcc = true;
        b.verify = VerifyMode::Optional;
        assert_eq!(
            a.changed_settings(&b),
            vec![
                "server.verify_client",
                "timeouts.upstream_connect",
                "route[0].xfcc"
            ]
        );
        assert!(a.changed_settings(&a).is_empty());
    }

    #[test]
    fn restart_settings_are_kept_and_named() {
        let a = GateConfig::from_toml("gate.toml", GOOD, Path::new(".")).expect("ok");
        let mut b = GateConfig::from_toml(
            "gate.toml",
            &GOOD.replace("127.0.0.1:8443", "127.0.0.1:9443"),
            Path::new("."),
        )
        .expect("ok");
        b.threads = Some(3);
        let kept = a.keep_restart_settings(&mut b);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept[0].starts_with("server.listen changed to 127.0.0.1:9443"));
        assert!(kept[1].starts_with("server.threads changed to 3"));
        assert_eq!(a, b);
    }
}
