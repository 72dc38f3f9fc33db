//! Gateway configuration: the TOML file format (`mtlsgate serve --config gate.toml`), the
//! one-route flags, and the validated [`GateConfig`] both become. Parse, don't validate
//! twice: everything downstream takes a `GateConfig` and trusts it. Errors name the file,
//! the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

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
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Text,
    Json,
    Off,
}

/// Timeouts and limits against slow or hostile peers.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(75),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(60),
            drain: Duration::from_secs(30),
        }
    }
}

/// Who may use a route. Empty lists everywhere mean: any verified client.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub device_ids: Vec<String>,
    pub spiffe_ids: Vec<String>,
    pub ous: Vec<String>,
    pub fingerprints: Vec<String>,
    pub allow_files: Vec<PathBuf>,
}

impl PolicyConfig {
    pub fn is_open(&self) -> bool {
        self.device_ids.is_empty()
            && self.spiffe_ids.is_empty()
            && self.ous.is_empty()
            && self.fingerprints.is_empty()
            && self.allow_files.is_empty()
    }
}

/// One route: a path prefix, an upstream, a policy, and headers.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: http::Uri,
    /// The path part of the upstream URL, if it has one: it then replaces the matched
    /// prefix, as nginx's `proxy_pass http://host/path/` does. Without one the request
    /// URI passes unchanged.
    pub upstream_path: Option<String>,
    pub policy: PolicyConfig,
    /// Extra or overriding headers: name → template (nginx variables).
    pub headers: Vec<(String, String)>,
    /// Send the default identity headers (seed 000's set).
    pub default_headers: bool,
    /// Also send Envoy's X-Forwarded-Client-Cert.
    pub xfcc: bool,
}

/// The validated configuration of one gateway.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The TOML file it came from, if any (re-read on SIGHUP).
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Vec<PathBuf>,
    pub verify: VerifyMode,
    pub verify_depth: usize,
    pub crl: Vec<PathBuf>,
    pub pin_sha256: Vec<String>,
    pub pin_cert: Vec<PathBuf>,
    pub reject_at_handshake: bool,
    /// Reuse a verified chain for later connections presenting the same chain (same
    /// snapshot generation, before its first expiry). On by default.
    pub verify_cache: bool,
    pub resumption: bool,
    pub admin_listen: Option<SocketAddr>,
    pub access_log: AccessLog,
    pub timeouts: Timeouts,
    pub max_header_bytes: usize,
    pub routes: Vec<RouteConfig>,
    pub threads: Option<usize>,
}

/// A configuration error, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}{at}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub at: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            at: String::new(),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    server: RawServer,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Spanned<String>,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    client_ca: OneOrMany,
    #[serde(default)]
    verify_client: Option<Spanned<String>>,
    #[serde(default)]
    verify_depth: Option<usize>,
    #[serde(default)]
    crl: OneOrMany,
    #[serde(default)]
    pin_sha256: Vec<String>,
    #[serde(default)]
    pin_cert: OneOrMany,
    #[serde(default)]
    reject_at_handshake: bool,
    #[serde(default = "yes")]
    verify_cache: bool,
    #[serde(default = "yes")]
    resumption: bool,
    #[serde(default)]
    admin_listen: Option<Spanned<String>>,
    #[serde(default)]
    access_log: Option<Spanned<String>>,
    #[serde(default)]
    max_header_bytes: Option<usize>,
    #[serde(default)]
    threads: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    handshake: Option<Spanned<String>>,
    header_read: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
    upstream_connect: Option<Spanned<String>>,
    upstream_response: Option<Spanned<String>>,
    drain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default = "slash")]
    prefix: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default)]
    allow_device_ids: Vec<String>,
    #[serde(default)]
    allow_spiffe_ids: Vec<String>,
    #[serde(default)]
    allow_ous: Vec<String>,
    #[serde(default)]
    allow_fingerprints: Vec<String>,
    #[serde(default)]
    allow_file: OneOrMany,
    #[serde(default)]
    headers: toml::Table,
    #[serde(default = "yes")]
    default_headers: bool,
    #[serde(default)]
    xfcc: bool,
}

fn slash() -> Spanned<String> {
    Spanned::new(0..0, "/".to_string())
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
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "`{s}`: upstream scheme `{other}` is not supported; use http://HOST:PORT"
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

impl GateConfig {
    /// Reads and validates a TOML configuration file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<GateConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&name, format!("cannot read it: {e}")))?;
        let mut c = Self::from_toml(&name, &text, path.parent().unwrap_or(Path::new(".")))?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses configuration text (`name` is used in errors; `base` resolves paths).
    pub fn from_toml(name: &str, text: &str, base: &Path) -> Result<GateConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_of(text, s)).unwrap_or_default();
            // Name the key when the error points into a `key = value` line.
            let key = e.span().and_then(|s| key_at(text, s.start));
            ConfigError {
                file: name.into(),
                at,
                message: match key {
                    Some(k) if !e.message().contains(&format!("`{k}`")) => {
                        format!("{k}: {}", e.message())
                    }
                    _ => e.message().to_string(),
                },
            }
        })?;
        let err = |span: std::ops::Range<usize>, key: &str, msg: String| ConfigError {
            file: name.into(),
            at: line_of(text, span),
            message: format!("{key}: {msg}"),
        };
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let s = raw.server;
        let listen = parse_listen(s.listen.get_ref())
            .map_err(|m| err(s.listen.span(), "server.listen", m))?;
        let verify = match &s.verify_client {
            None => VerifyMode::Require,
            Some(v) => VerifyMode::parse(v.get_ref()).ok_or_else(|| {
                err(
                    v.span(),
                    "server.verify_client",
                    format!(
                        "`{}` is not a mode; use require, optional, optional_no_ca or off",
                        v.get_ref()
                    ),
                )
            })?,
        };
        let admin_listen = match &s.admin_listen {
            None => None,
            Some(a) => Some(
                parse_listen(a.get_ref()).map_err(|m| err(a.span(), "server.admin_listen", m))?,
            ),
        };
        let access_log = match s
            .access_log
            .as_ref()
            .map(|a| (a.get_ref().as_str(), a.span()))
        {
            None | Some(("text", _)) => AccessLog::Text,
            Some(("json", _)) => AccessLog::Json,
            Some(("off", _)) => AccessLog::Off,
            Some((other, span)) => {
                return Err(err(
                    span,
                    "server.access_log",
                    format!("`{other}` is not a format; use text, json or off"),
                ))
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
                *slot = parse_timeout(v.get_ref()).ok_or_else(|| {
                    err(
                        v.span(),
                        key,
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
            let prefix = r.prefix.get_ref().clone();
            if !prefix.starts_with('/') {
                return Err(err(
                    r.prefix.span(),
                    &key("prefix"),
                    format!("`{prefix}` must start with /"),
                ));
            }
            let upstream = parse_upstream(r.upstream.get_ref())
                .map_err(|m| err(r.upstream.span(), &key("upstream"), m))?;
            let mut headers = Vec::new();
            for (hname, v) in r.headers {
                let Some(v) = v.as_str() else {
                    return Err(ConfigError::new(
                        name,
                        format!(
                            "{}: header `{hname}` must be a string template",
                            key("headers")
                        ),
                    ));
                };
                headers.push((hname, v.to_string()));
            }
            routes.push(RouteConfig {
                prefix,
                upstream,
                upstream_path: upstream_path(r.upstream.get_ref()),
                policy: PolicyConfig {
                    device_ids: r.allow_device_ids,
                    spiffe_ids: r.allow_spiffe_ids,
                    ous: r.allow_ous,
                    fingerprints: r.allow_fingerprints,
                    allow_files: r.allow_file.into_vec().into_iter().map(rel).collect(),
                },
                headers,
                default_headers: r.default_headers,
                xfcc: r.xfcc,
            });
        }
        if routes.is_empty() {
            return Err(ConfigError::new(
                name,
                "no [[route]]: add at least one, e.g. [[route]] prefix = \"/\" upstream = \"http://127.0.0.1:8000\"",
            ));
        }
        let client_ca: Vec<PathBuf> = s.client_ca.into_vec().into_iter().map(rel).collect();
        let pin_cert: Vec<PathBuf> = s.pin_cert.into_vec().into_iter().map(rel).collect();
        let c = GateConfig {
            source: None,
            listen,
            cert: rel(s.cert),
            key: rel(s.key),
            client_ca,
            verify,
            verify_depth: s
                .verify_depth
                .unwrap_or(mtlsgate_pki::verify::DEFAULT_DEPTH),
            crl: s.crl.into_vec().into_iter().map(rel).collect(),
            pin_sha256: s.pin_sha256,
            pin_cert,
            reject_at_handshake: s.reject_at_handshake,
            verify_cache: s.verify_cache,
            resumption: s.resumption,
            admin_listen,
            access_log,
            timeouts,
            max_header_bytes: s.max_header_bytes.unwrap_or(16 * 1024),
            routes,
            threads: s.threads,
        };
        c.check().map_err(|m| ConfigError::new(name, m))?;
        Ok(c)
    }

    /// Cross-field checks shared by the file and the flags.
    pub fn check(&self) -> Result<(), String> {
        if self.verify != VerifyMode::Off
            && self.client_ca.is_empty()
            && self.pin_sha256.is_empty()
            && self.pin_cert.is_empty()
        {
            return Err("client certificates are verified but no client CA is given: set client_ca (--client-ca), pin certificates, or verify_client = \"off\"".into());
        }
        if self.verify_depth == 0 || self.verify_depth > 10 {
            return Err("verify_depth must be between 1 and 10".into());
        }
        if self.max_header_bytes < 1024 {
            return Err("max_header_bytes must be at least 1024".into());
        }
        Ok(())
    }

    /// Every file whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_ca.iter().cloned());
        v.extend(self.crl.iter().cloned());
        v.extend(self.pin_cert.iter().cloned());
        for r in &self.routes {
            v.extend(r.policy.allow_files.iter().cloned());
        }
        if let Some(s) = &self.source {
            v.push(s.clone());
        }
        v
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
    fn parses_and_resolves_paths() {
        let c = GateConfig::from_toml("gate.toml", GOOD, Path::new("/etc/gate")).expect("ok");
        assert_eq!(c.cert, PathBuf::from("/etc/gate/server.crt"));
        assert_eq!(
            c.routes[0].policy.allow_files,
            vec![PathBuf::from("/etc/gate/whitelist.txt")]
        );
        assert_eq!(c.verify, VerifyMode::Require);
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
            "gate.toml:10: route[0].upstream: `ftp://x`: upstream scheme `ftp` is not supported; use http://HOST:PORT"
        );
        let bad = GOOD.replace("prefix = ", "prefx = ");
        let e = GateConfig::from_toml("gate.toml", &bad, Path::new(".")).expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("gate.toml:9: unknown field `prefx`"),
            "{e}"
        );
    }
}
