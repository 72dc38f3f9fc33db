//! The listener: `[server]` settings that belong to the socket and the process rather
//! than to a route (address, certificate, client verification, limits, the inventory,
//! timeouts), their validated types, and their lowering from the raw form. It never reads
//! a file: paths are resolved, not opened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::lower::parse_timeout;
use super::raw::{self, At, RawConfig, RawServer, RawTimeouts};
use super::settings::defaults;
use super::{ConfigError, Source};

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
    /// From the end of the handshake to the first request's header complete (HTTP/1; for
    /// HTTP/2 a stream opened), as HAProxy's `timeout http-request` and nginx's
    /// `client_header_timeout` time a new connection: a client that connects and says
    /// nothing is not held for all of `idle`.
    pub first_request: Duration,
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
            first_request: defaults::FIRST_REQUEST,
            header_read: defaults::HEADER_READ,
            idle: defaults::IDLE,
            upstream_connect: defaults::UPSTREAM_CONNECT,
            upstream_response: defaults::UPSTREAM_RESPONSE,
            drain: defaults::DRAIN,
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

/// The listener's settings, validated (the server block's share of a [`super::GateConfig`]).
pub(super) struct Listener {
    pub tls: Option<ListenerTls>,
    pub listen: SocketAddr,
    pub verify: VerifyMode,
    pub verify_depth: usize,
    pub admin_listen: Option<SocketAddr>,
    pub access_log: AccessLog,
    pub access_log_flush: Duration,
    pub access_log_buffer: usize,
    pub max_header_bytes: usize,
    pub threads: Option<usize>,
    pub inventory: Option<InventoryConfig>,
    pub timeouts: Timeouts,
}

/// Applies the defaults to the listener's settings of `s` and the `[timeouts]` section,
/// and validates them.
pub(super) fn listener_from_raw(
    s: &RawServer,
    t: RawTimeouts,
    src: Source<'_>,
) -> Result<Listener, ConfigError> {
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
        None if tls.is_none() => {
            parse_listen(defaults::LISTEN_PLAIN).map_err(|m| src.err("server.listen", 0..0, m))?
        }
        None => parse_listen(defaults::LISTEN).map_err(|m| src.err("server.listen", 0..0, m))?,
        Some(v) => parse_listen(v.get_ref()).map_err(|m| src.err("server.listen", span(v), m))?,
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
            parse_listen(a.get_ref()).map_err(|m| src.err("server.admin_listen", span(a), m))?,
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
    let access_log_flush = match &s.access_log_flush {
        None => defaults::ACCESS_LOG_FLUSH,
        Some(v) => (if v.get_ref().trim() == "0" {
            Some(Duration::ZERO)
        } else {
            parse_timeout(v.get_ref())
        })
        .filter(|d| *d <= Duration::from_secs(60))
        .ok_or_else(|| {
            src.err(
                "server.access_log_flush",
                span(v),
                format!(
                    "`{}` is not a duration from 0 (each line at once) to 1m, such as 1s or 500ms",
                    v.get_ref()
                ),
            )
        })?,
    };
    let access_log_buffer = match &s.access_log_buffer {
        None => defaults::ACCESS_LOG_BUFFER,
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (4096..=16 * 1024 * 1024).contains(&n) => n,
            _ => {
                return Err(src.err(
                    "server.access_log_buffer",
                    v.span(),
                    format!("{} is out of range: use 4096 to 16777216", v.get_ref()),
                ))
            }
        },
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
    for (key, val, slot) in [
        ("timeouts.handshake", t.handshake, &mut timeouts.handshake),
        (
            "timeouts.first_request",
            t.first_request,
            &mut timeouts.first_request,
        ),
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
    Ok(Listener {
        tls,
        listen,
        verify,
        verify_depth,
        admin_listen,
        access_log,
        access_log_flush,
        access_log_buffer,
        max_header_bytes,
        threads,
        inventory,
        timeouts,
    })
}
