//! Identity headers: templates in nginx's variable syntax (`$ssl_client_s_dn`,
//! `${ssl_client_verify}`), compiled once at load, rendered per request from the
//! per-connection identity; and the rule that strips every identity header a client sent.

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use time::OffsetDateTime;

use crate::config::HostHeader;
use crate::error::GateError;
use crate::identity::{ClientIdentity, VerifyOutcome};
use mtlsgate_pki::printable::printable;

/// A variable a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    SslClientSDn,
    SslClientIDn,
    SslClientVerify,
    SslClientSerial,
    SslClientFingerprint,
    SslClientFingerprintSha256,
    SslClientEscapedCert,
    SslClientVStart,
    SslClientVEnd,
    SslClientVRemain,
    SslProtocol,
    SslCipher,
    SslSessionReused,
    RemoteAddr,
    RemotePort,
    Host,
    Scheme,
    RequestUri,
    ClientDeviceId,
    ClientSpiffeId,
}

/// Every variable name a template may use: the one table the parser and its error
/// message read.
const VARS: &[(&str, Var)] = &[
    ("ssl_client_s_dn", Var::SslClientSDn),
    ("ssl_client_i_dn", Var::SslClientIDn),
    ("ssl_client_verify", Var::SslClientVerify),
    ("ssl_client_serial", Var::SslClientSerial),
    ("ssl_client_fingerprint", Var::SslClientFingerprint),
    (
        "ssl_client_fingerprint_sha256",
        Var::SslClientFingerprintSha256,
    ),
    ("ssl_client_escaped_cert", Var::SslClientEscapedCert),
    ("ssl_client_v_start", Var::SslClientVStart),
    ("ssl_client_v_end", Var::SslClientVEnd),
    ("ssl_client_v_remain", Var::SslClientVRemain),
    ("ssl_protocol", Var::SslProtocol),
    ("ssl_cipher", Var::SslCipher),
    ("ssl_session_reused", Var::SslSessionReused),
    ("remote_addr", Var::RemoteAddr),
    ("proxy_add_x_forwarded_for", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("host", Var::Host),
    ("scheme", Var::Scheme),
    ("request_uri", Var::RequestUri),
    ("client_device_id", Var::ClientDeviceId),
    ("client_spiffe_id", Var::ClientSpiffeId),
];

impl Var {
    fn parse(name: &str) -> Option<Var> {
        VARS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Whether the value can change from one request to the next on one connection (the
    /// request's Host and URI, the time left); every other variable depends only on the
    /// connection and the client's verdict.
    fn per_request(self) -> bool {
        matches!(self, Var::Host | Var::RequestUri | Var::SslClientVRemain)
    }
}

fn var_names() -> String {
    VARS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A compiled header value template.
#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    pieces: Vec<Piece>,
}

impl HeaderTemplate {
    /// Compiles `text`; unknown variables are an error naming the variable.
    pub fn parse(text: &str) -> Result<Self, GateError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}').ok_or_else(|| {
                    GateError::Template(format!("`{text}`: `${{` without a closing `}}`"))
                })?;
                (&r[..end], &r[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                lit.push('$');
                rest = after;
                continue;
            }
            let v = Var::parse(name).ok_or_else(|| {
                GateError::Template(format!(
                    "`{text}`: unknown variable `${name}`; known: {}",
                    var_names()
                ))
            })?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(v));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(HeaderTemplate { pieces })
    }

    /// Renders the template. Returns `None` for an empty result (nginx sends no header
    /// whose value is empty).
    /// Whether the template uses only connection-wide variables (see [`Var::per_request`]).
    fn connection_wide(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| !matches!(p, Piece::Var(v) if v.per_request()))
    }

    pub fn render(&self, cx: &RenderCtx<'_>) -> Option<HeaderValue> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => cx.push_var(*v, &mut out),
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// What a template can see.
pub struct RenderCtx<'a> {
    pub identity: Option<&'a ClientIdentity>,
    pub outcome: &'a VerifyOutcome,
    pub remote: SocketAddr,
    /// `remote.ip()` as text, formatted once per connection.
    pub remote_ip: &'a str,
    pub host: &'a str,
    pub request_uri: &'a str,
    /// `https`, or `http` on a plain-HTTP listener.
    pub scheme: &'a str,
    pub tls_protocol: &'a str,
    pub tls_cipher: &'a str,
    pub resumed: bool,
    /// The time, for `$ssl_client_v_remain` (any value when no template reads it).
    pub now: OffsetDateTime,
}

impl RenderCtx<'_> {
    fn push_var(&self, v: Var, out: &mut String) {
        use std::fmt::Write;
        let id = self.identity;
        match v {
            Var::SslClientSDn => out.push_str(id.map(|i| i.info.subject.as_str()).unwrap_or("")),
            Var::SslClientIDn => out.push_str(id.map(|i| i.info.issuer.as_str()).unwrap_or("")),
            Var::SslClientVerify => out.push_str(&self.outcome.nginx_value()),
            Var::SslClientSerial => out.push_str(id.map(|i| i.info.serial.as_str()).unwrap_or("")),
            Var::SslClientFingerprint => {
                out.push_str(id.map(|i| i.info.sha1_fingerprint.as_str()).unwrap_or(""))
            }
            Var::SslClientFingerprintSha256 => {
                out.push_str(id.map(|i| i.info.sha256_fingerprint.as_str()).unwrap_or(""))
            }
            Var::SslClientEscapedCert => out.push_str(id.map(|i| i.escaped_pem()).unwrap_or("")),
            Var::SslClientVStart => out.push_str(id.map(|i| i.v_start()).unwrap_or("")),
            Var::SslClientVEnd => out.push_str(id.map(|i| i.v_end()).unwrap_or("")),
            Var::SslClientVRemain => {
                if let Some(i) = id {
                    let _ = write!(out, "{}", i.v_remain(self.now));
                }
            }
            Var::SslProtocol => out.push_str(self.tls_protocol),
            Var::SslCipher => out.push_str(self.tls_cipher),
            Var::SslSessionReused => out.push_str(if self.resumed { "r" } else { "." }),
            Var::RemoteAddr => out.push_str(self.remote_ip),
            Var::RemotePort => {
                let _ = write!(out, "{}", self.remote.port());
            }
            Var::Host => out.push_str(self.host),
            Var::Scheme => out.push_str(self.scheme),
            Var::RequestUri => out.push_str(self.request_uri),
            // Certificate text that is not DN-escaped: control bytes written as `\xHH`.
            Var::ClientDeviceId => {
                out.push_str(&printable(id.and_then(|i| i.device_id()).unwrap_or("")))
            }
            Var::ClientSpiffeId => out.push_str(&printable(
                id.and_then(|i| i.info.spiffe_id.as_deref()).unwrap_or(""),
            )),
        }
    }
}

/// The identity headers the nginx client-certificate guides configure, sent by default.
const DEFAULT_HEADERS: &[(&str, &str)] = &[
    ("x-real-ip", "$remote_addr"),
    ("x-forwarded-for", "$remote_addr"),
    ("x-forwarded-proto", "$scheme"),
    ("ssl-client", "$ssl_client_s_dn"),
    ("ssl-client-verify", "$ssl_client_verify"),
];

/// Header name prefixes that are always identity headers, whatever the configuration.
const IDENTITY_PREFIXES: &[&str] = &[
    "ssl-client",
    "x-ssl-",
    "x-client-cert",
    "x-client-dn",
    "x-client-verify",
    "x-forwarded-client-cert",
    "x-mtlsgate-",
];

/// Compares header names as apps do: case-insensitively, with `_` the same as `-`
/// (WSGI, PHP and Rack turn both into `HTTP_SSL_CLIENT`).
fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The set of header names the gateway owns on a route; any the client sent is removed.
#[derive(Debug, Clone)]
pub(crate) struct HeaderPlan {
    pub(crate) set: Vec<(HeaderName, HeaderTemplate)>,
    owned: Vec<String>,
    pub(crate) xfcc: bool,
    /// Which Host the upstream receives.
    pub(crate) host: HostHeader,
    /// Whether a template reads the time (`$ssl_client_v_remain`): only then does a
    /// request read the clock for [`RenderCtx::now`].
    pub(crate) reads_time: bool,
}

impl HeaderPlan {
    pub(crate) fn build(
        extra: &[(String, String)],
        default_headers: bool,
        xfcc: bool,
        host: HostHeader,
    ) -> Result<HeaderPlan, GateError> {
        let mut set: Vec<(HeaderName, HeaderTemplate)> = Vec::new();
        if default_headers {
            for (n, t) in DEFAULT_HEADERS {
                set.push((HeaderName::from_static(n), HeaderTemplate::parse(t)?));
            }
        }
        for (n, t) in extra {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| GateError::Template(format!("`{n}` is not a valid header name")))?;
            if name == http::header::HOST
                || name == http::header::CONNECTION
                || name == http::header::UPGRADE
            {
                return Err(GateError::Template(format!(
                    "header `{n}` is managed by the gateway and cannot be set"
                )));
            }
            let tpl = HeaderTemplate::parse(t)?;
            set.retain(|(existing, _)| *existing != name);
            set.push((name, tpl));
        }
        let mut owned: Vec<String> = set.iter().map(|(n, _)| normalized(n.as_str())).collect();
        owned.push("x-forwarded-client-cert".into());
        let reads_time = set.iter().any(|(_, t)| {
            t.pieces
                .iter()
                .any(|p| matches!(p, Piece::Var(Var::SslClientVRemain)))
        });
        Ok(HeaderPlan {
            set,
            owned,
            xfcc,
            host,
            reads_time,
        })
    }

    /// Whether a header name is one of the gateway's (no allocation: runs per header).
    fn is_identity(&self, name: &str) -> bool {
        // HeaderName is already lower-case; only `_` needs mapping.
        let n = name.as_bytes();
        let eq = |a: &[u8], b: &[u8]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    let x = if *x == b'_' {
                        b'-'
                    } else {
                        x.to_ascii_lowercase()
                    };
                    x == *y
                })
        };
        self.owned.iter().any(|o| eq(n, o.as_bytes()))
            || IDENTITY_PREFIXES
                .iter()
                .any(|p| n.len() >= p.len() && eq(&n[..p.len()], p.as_bytes()))
    }

    /// The values of the headers whose templates use only connection-wide variables, and
    /// of `X-Forwarded-Client-Cert`: the same for every request on a connection (under one
    /// verdict), so a connection renders them once ([`HeaderPlan::apply`] takes them).
    pub(crate) fn render_connection_wide(&self, cx: &RenderCtx<'_>) -> ConnectionHeaders {
        ConnectionHeaders {
            values: self
                .set
                .iter()
                .map(|(_, tpl)| {
                    if tpl.connection_wide() {
                        Fixed::Value(tpl.render(cx))
                    } else {
                        Fixed::PerRequest
                    }
                })
                .collect(),
            xfcc: if self.xfcc { xfcc_value(cx) } else { None },
        }
    }

    /// Removes every identity header the client sent, then sets the gateway's; those in
    /// `fixed` (rendered for this plan and connection) are taken from there.
    pub(crate) fn apply(
        &self,
        headers: &mut HeaderMap,
        cx: &RenderCtx<'_>,
        fixed: Option<&ConnectionHeaders>,
    ) {
        if headers.keys().any(|k| self.is_identity(k.as_str())) {
            let spoofed: Vec<HeaderName> = headers
                .keys()
                .filter(|k| self.is_identity(k.as_str()))
                .cloned()
                .collect();
            for k in spoofed {
                headers.remove(&k);
            }
        }
        for (i, (name, tpl)) in self.set.iter().enumerate() {
            let value = match fixed.and_then(|f| f.values.get(i)) {
                Some(Fixed::Value(v)) => v.clone(),
                Some(Fixed::PerRequest) | None => tpl.render(cx),
            };
            if let Some(v) = value {
                headers.insert(name.clone(), v);
            }
        }
        if self.xfcc {
            let value = match fixed {
                Some(f) => f.xfcc.clone(),
                None => xfcc_value(cx),
            };
            if let Some(hv) = value {
                headers.insert(HeaderName::from_static("x-forwarded-client-cert"), hv);
            }
        }
    }
}

/// `X-Forwarded-Client-Cert` (Envoy's form) for a verified client.
fn xfcc_value(cx: &RenderCtx<'_>) -> Option<HeaderValue> {
    let id = cx.identity.filter(|_| cx.outcome.is_success())?;
    let mut v = format!(
        "Hash={};Subject=\"{}\"",
        id.info.sha256_fingerprint,
        id.info.subject.replace('\\', "\\\\").replace('"', "\\\"")
    );
    for u in &id.info.uris {
        v.push_str(";URI=");
        v.push_str(u);
    }
    for d in &id.info.dns_names {
        v.push_str(";DNS=");
        v.push_str(d);
    }
    HeaderValue::from_str(&v).ok()
}

/// One header of a plan as rendered for a connection.
#[derive(Debug, Clone)]
enum Fixed {
    /// The template uses only connection-wide variables: its value (None: rendered empty,
    /// so not set).
    Value(Option<HeaderValue>),
    /// The template uses a per-request variable: rendered for each request.
    PerRequest,
}

/// A plan's connection-wide headers, rendered once for a connection
/// ([`HeaderPlan::render_connection_wide`]).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHeaders {
    /// By position in the plan's `set`.
    values: Vec<Fixed>,
    xfcc: Option<HeaderValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_syntax() {
        let t = HeaderTemplate::parse("dn=$ssl_client_s_dn;v=${ssl_client_verify}!").expect("ok");
        assert_eq!(
            t.pieces,
            vec![
                Piece::Lit("dn=".into()),
                Piece::Var(Var::SslClientSDn),
                Piece::Lit(";v=".into()),
                Piece::Var(Var::SslClientVerify),
                Piece::Lit("!".into())
            ]
        );
        let e = HeaderTemplate::parse("$ssl_client_bogus").expect_err("unknown");
        assert!(e
            .to_string()
            .contains("unknown variable `$ssl_client_bogus`"));
    }

    #[test]
    fn connection_wide_headers_render_as_per_request_ones() {
        let plan = HeaderPlan::build(
            &[
                ("x-uri".into(), "$request_uri".into()),
                (
                    "x-mix".into(),
                    "$scheme://$host$request_uri from $remote_addr".into(),
                ),
                ("x-port".into(), "$remote_port".into()),
                ("x-empty".into(), "$ssl_client_s_dn".into()),
            ],
            true,
            true,
            HostHeader::Client,
        )
        .expect("plan");
        let outcome = VerifyOutcome::None;
        let cx = |uri: &'static str| RenderCtx {
            identity: None,
            outcome: &outcome,
            remote: "192.0.2.7:4711".parse().expect("addr"),
            remote_ip: "192.0.2.7",
            host: "api.example",
            request_uri: uri,
            scheme: "https",
            tls_protocol: "TLSv1.3",
            tls_cipher: "TLS_AES_128_GCM_SHA256",
            resumed: false,
            now: OffsetDateTime::now_utc(),
        };
        // Rendered for the connection's first request, applied to a later one.
        let fixed = plan.render_connection_wide(&cx("/first"));
        let mut cached = HeaderMap::new();
        plan.apply(&mut cached, &cx("/second?x=1"), Some(&fixed));
        let mut fresh = HeaderMap::new();
        plan.apply(&mut fresh, &cx("/second?x=1"), None);
        assert_eq!(cached, fresh);
        assert_eq!(cached["x-uri"], "/second?x=1");
        assert_eq!(
            cached["x-mix"],
            "https://api.example/second?x=1 from 192.0.2.7"
        );
        assert_eq!(cached["ssl-client-verify"], "NONE");
        assert_eq!(cached["x-port"], "4711");
        assert!(!cached.contains_key("x-empty"));
    }

    #[test]
    fn underscore_and_case_variants_are_identity_headers() {
        let plan = HeaderPlan::build(
            &[("X-Device".into(), "$client_device_id".into())],
            true,
            false,
            HostHeader::Client,
        )
        .expect("plan");
        for n in [
            "SSL_Client",
            "ssl-client-verify",
            "X-Device",
            "x_device",
            "X-SSL-Client-DN",
            "x-forwarded-client-cert",
        ] {
            assert!(plan.is_identity(n), "{n}");
        }
        assert!(!plan.is_identity("user-agent"));
    }
}
