//! Routes: a `[[route]]` (or the one route of `mtlsgate serve`'s flags) — its prefix,
//! upstream, TLS towards the upstream, policy and headers — and the pieces a tunnel shares
//! with it (the policy's `allow`, the upstream TLS settings). Lowering checks what can be
//! checked without the network or the files.

use std::path::PathBuf;

use super::listener::ListenerTls;
use super::raw::{self, At};
use super::settings::defaults;
use super::{ConfigError, Source};

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

/// Reads `allow = { inventory = true, tags = [...] }` into `policy`.
pub(super) fn apply_allow(
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

/// The upstream TLS settings of a route or a tunnel, as written.
pub(super) struct RawUpstreamTls<'a> {
    pub ca: raw::OneOrMany,
    pub cert: Option<&'a At<PathBuf>>,
    pub key: Option<&'a At<PathBuf>>,
    pub key_passphrase_file: Option<&'a At<PathBuf>>,
    pub server_name: Option<&'a At<String>>,
}

/// Resolves the paths of `t` and checks it: the server name must be a host name or an IP
/// address, and the client certificate and key come together. `key` names a setting of
/// the route or tunnel in messages.
pub(super) fn upstream_tls(
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

/// Applies the defaults to route `i` and validates it. `earlier` are the routes before it
/// (a prefix may appear once); `tls` says whether the listener speaks TLS (which decides
/// the default Host); `has_inventory` whether `allow = { inventory = true }` can work.
pub(super) fn route_from_raw(
    i: usize,
    r: raw::RawRoute,
    src: Source<'_>,
    earlier: &[RouteConfig],
    tls: Option<&ListenerTls>,
    has_inventory: bool,
) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| format!("route[{i}].{k}");
    let prefix = match &r.prefix {
        None => defaults::ROUTE_PREFIX.to_string(),
        Some(p) => {
            crate::path::check_prefix(p.get_ref())
                .map_err(|m| src.err(&key("prefix"), p.span(), m))?;
            p.get_ref().clone()
        }
    };
    if earlier.iter().any(|x| x.prefix == prefix) {
        let at = r.prefix.as_ref().map(|p| p.span()).unwrap_or(0..0);
        return Err(src.err(
            &key("prefix"),
            at,
            format!(
                "`{prefix}` is the prefix of an earlier route too; each prefix may appear once"
            ),
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
    let upstream =
        parse_upstream(up.get_ref()).map_err(|m| src.err(&key("upstream"), up.span(), m))?;
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
    apply_allow(&r.allow, &key("allow"), &mut policy, has_inventory, &src)?;
    Ok(RouteConfig {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GateConfig, GOOD};
    use std::path::Path;

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
    fn upstream_path_is_only_what_was_written() {
        assert_eq!(upstream_path("http://127.0.0.1:3000"), None);
        assert_eq!(upstream_path("http://127.0.0.1:3000/"), Some("/".into()));
        assert_eq!(upstream_path("http://h/app/?x=1"), Some("/app/".into()));
    }
}
