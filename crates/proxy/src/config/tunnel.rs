//! TCP tunnels: a `[[tcp]]` section (or `mtlsgate tunnel`'s flags) — the side that
//! terminates mTLS in front of a TCP backend, or the side that opens mTLS to a remote — its
//! validated type, and its lowering from the raw form.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mtlsgate_pki::verify::CrlCheck;

use super::listener::{parse_listen, ListenerTls};
use super::lower::{crl_check, parse_timeout};
use super::raw::{self, At};
use super::route::{apply_allow, upstream_tls, PolicyConfig, RawUpstreamTls, UpstreamTls};
use super::settings::defaults;
use super::{ConfigError, Source};

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

/// The settings of a tunnel that terminates mTLS, borrowed (see [`TunnelConfig::served`]).
pub(crate) struct ServedTunnel<'a> {
    pub tls: &'a ListenerTls,
    pub client_ca: &'a [PathBuf],
    pub crl: &'a [PathBuf],
    pub crl_check: CrlCheck,
    pub pin_sha256: &'a [String],
    pub verify_depth: usize,
    pub policy: &'a PolicyConfig,
    pub proxy_protocol: bool,
}

impl TunnelConfig {
    /// The settings of the side that terminates mTLS; `None` for a tunnel that opens it.
    pub(crate) fn served(&self) -> Option<ServedTunnel<'_>> {
        match &self.side {
            TunnelSide::Server {
                tls,
                client_ca,
                crl,
                crl_check,
                pin_sha256,
                verify_depth,
                policy,
                proxy_protocol,
            } => Some(ServedTunnel {
                tls,
                client_ca,
                crl,
                crl_check: *crl_check,
                pin_sha256,
                verify_depth: *verify_depth,
                policy,
                proxy_protocol: *proxy_protocol,
            }),
            TunnelSide::Client { .. } => None,
        }
    }
}

/// Validates one `[[tcp]]` section (or the `mtlsgate tunnel` flags).
pub(super) fn tunnel_from_raw(
    i: usize,
    t: raw::RawTunnel,
    src: Source<'_>,
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
        apply_allow(&t.allow, &key("allow"), &mut policy, has_inventory, &src)?;
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
            crl_check: crl_check(&t.crl_check, &key("crl_check"), &src)?,
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
            &src,
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

/// Every listener has its own address: the tunnels' among themselves, and the HTTP
/// listener's (`http`, when it has routes).
pub(super) fn check_listeners(
    tunnels: &[TunnelConfig],
    http: Option<SocketAddr>,
    src: Source<'_>,
) -> Result<(), ConfigError> {
    for (i, t) in tunnels.iter().enumerate() {
        if tunnels[..i].iter().any(|o| o.listen == t.listen) || Some(t.listen) == http {
            return Err(ConfigError::new(
                src.whole(),
                format!(
                    "tcp[{i}].listen: {} is used twice; give every listener its own address",
                    t.listen
                ),
            ));
        }
    }
    Ok(())
}
