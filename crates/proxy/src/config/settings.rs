//! The one table of gateway settings: every key gate.toml accepts, the flag that sets it
//! on the command line, whether a reload applies it or it needs a restart, and how to read
//! its value from a validated [`GateConfig`]. Each setting is written here once (as
//! ripgrep's `flags/defs.rs` defines each flag once); everything that goes over "all the
//! settings" is derived from [`SETTINGS`]:
//! - the reload's diff and its log line ([`GateConfig::changed_settings`]), per server block
//!   for the settings the table reads per block ([`Read::Server`]),
//! - the restart-only settings a reload keeps and warns about
//!   ([`GateConfig::keep_restart_settings`]),
//! - the files a change of which triggers a reload ([`GateConfig::watched_files`]),
//! - the flag named in an error about a value given on the command line,
//! - `mtlsgate serve --help`'s list of restart-only flags and the flags `--config` excludes
//!   (in the CLI crate, from [`restart_flags`] and the `flag` column).
//!
//! Defaults are named constants in [`defaults`] and nowhere else. The unit tests go over
//! every key: each is a field of the raw form (and every raw field is a key), each change
//! is reported by the reload, each restart-only change is kept and logged, each reloadable
//! change reaches the new configuration, and a further `[[server]]` block accepts exactly
//! the per-block ([`Read::Server`]) settings. The CLI's tests go over every flag.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{GateConfig, RouteConfig, TunnelConfig, TunnelSide};

/// Puts a restart-only setting of the running configuration back into the next one.
pub type Keep = fn(running: &GateConfig, next: &mut GateConfig);

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy)]
pub enum Apply {
    /// A reload (SIGHUP, or a change to a watched file) applies it.
    Reload,
    /// Bound at start-up: a reload keeps the running value (with this function) and says
    /// so in the log.
    Restart(Keep),
}

impl Apply {
    pub fn needs_restart(self) -> bool {
        matches!(self, Apply::Restart(_))
    }
}

/// A setting's value as the reload compares and logs it: files (which are also watched),
/// or anything else in a printable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Files(Vec<PathBuf>),
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Files(v) if v.is_empty() => f.write_str("none"),
            Value::Files(v) => {
                let names: Vec<String> = v.iter().map(|p| p.display().to_string()).collect();
                f.write_str(&names.join(", "))
            }
            Value::Other(s) => f.write_str(s),
        }
    }
}

/// Where a setting lives, and how to read it there.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// A setting of the listener and the process (`[timeouts]`, and the `[server]` keys
    /// written in the first `[[server]]` block only): once per configuration.
    Listener(fn(&GateConfig) -> Value),
    /// A setting of one server block (`[server]`, each `[[server]]`): its certificate,
    /// client verification, names.
    Server(fn(&GateConfig) -> Value),
    /// `[[route]]`: once per route.
    Route(fn(&RouteConfig) -> Value),
    /// `[[tcp]]`: once per tunnel.
    Tunnel(fn(&TunnelConfig) -> Value),
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in gate.toml (`server.listen`, `timeouts.idle`, `route.upstream`).
    pub key: &'static str,
    /// The flag of `mtlsgate serve` (`server.*`, `route.*`) or `mtlsgate tunnel` (`tcp.*`)
    /// that sets it, if any.
    pub flag: Option<&'static str>,
    pub apply: Apply,
    pub read: Read,
}

const fn listener(
    key: &'static str,
    flag: Option<&'static str>,
    apply: Apply,
    read: fn(&GateConfig) -> Value,
) -> Setting {
    Setting {
        key,
        flag,
        apply,
        read: Read::Listener(read),
    }
}

const fn server(
    key: &'static str,
    flag: Option<&'static str>,
    read: fn(&GateConfig) -> Value,
) -> Setting {
    Setting {
        key,
        flag,
        apply: Reload,
        read: Read::Server(read),
    }
}

const fn route(
    key: &'static str,
    flag: Option<&'static str>,
    read: fn(&RouteConfig) -> Value,
) -> Setting {
    Setting {
        key,
        flag,
        apply: Reload,
        read: Read::Route(read),
    }
}

const fn tcp(
    key: &'static str,
    flag: Option<&'static str>,
    apply: Apply,
    read: fn(&TunnelConfig) -> Value,
) -> Setting {
    Setting {
        key,
        flag,
        apply,
        read: Read::Tunnel(read),
    }
}

fn other<T: fmt::Debug>(v: T) -> Value {
    Value::Other(format!("{v:?}"))
}

fn files<'a>(v: impl IntoIterator<Item = &'a PathBuf>) -> Value {
    Value::Files(v.into_iter().cloned().collect())
}

fn shown<T: fmt::Display>(v: Option<T>, none: &str) -> Value {
    Value::Other(v.map(|v| v.to_string()).unwrap_or_else(|| none.to_string()))
}

/// A setting of a tunnel that terminates mTLS (`none` for one that opens it).
fn served(t: &TunnelConfig, read: impl Fn(&super::ServedTunnel<'_>) -> Value) -> Value {
    match t.served() {
        Some(s) => read(&s),
        None => Value::Other("none".into()),
    }
}

/// The TLS a tunnel opens to its target (the default for one that terminates mTLS).
fn opened(t: &TunnelConfig) -> super::UpstreamTls {
    match &t.side {
        TunnelSide::Client { tls } => tls.clone(),
        TunnelSide::Server { .. } => super::UpstreamTls::default(),
    }
}

/// A route's upstream TLS (the default for a plain-HTTP upstream).
fn upstream(r: &RouteConfig) -> super::UpstreamTls {
    r.upstream_tls.clone().unwrap_or_default()
}

use Apply::Reload;

/// Every setting, in the order gate.toml documents them.
pub const SETTINGS: &[Setting] = &[
    server("server.server_name", None, |c| other(&c.server_names)),
    listener(
        "server.listen",
        Some("--listen"),
        Apply::Restart(|run, next| next.listen = run.listen),
        |c| Value::Other(c.listen.to_string()),
    ),
    server("server.cert", Some("--cert"), |c| {
        files(c.tls.as_ref().map(|t| &t.cert))
    }),
    server("server.key", Some("--key"), |c| {
        files(c.tls.as_ref().map(|t| &t.key))
    }),
    server(
        "server.key_passphrase_file",
        Some("--key-passphrase-file"),
        |c| files(c.tls.as_ref().and_then(|t| t.key_passphrase_file.as_ref())),
    ),
    server("server.client_ca", Some("--client-ca"), |c| {
        files(&c.client_ca)
    }),
    server("server.trusted_ca", Some("--trusted-ca"), |c| {
        files(&c.trusted_ca)
    }),
    server("server.verify_client", Some("--verify-client"), |c| {
        other(c.verify)
    }),
    server("server.verify_depth", Some("--verify-depth"), |c| {
        other(c.verify_depth)
    }),
    server("server.crl", Some("--crl"), |c| files(&c.crl)),
    server("server.crl_check", Some("--crl-check"), |c| {
        other(c.crl_check)
    }),
    server("server.pin_sha256", Some("--pin-sha256"), |c| {
        other(&c.pin_sha256)
    }),
    server("server.pin_cert", None, |c| files(&c.pin_cert)),
    server(
        "server.reject_at_handshake",
        Some("--reject-at-handshake"),
        |c| other(c.reject_at_handshake),
    ),
    listener(
        "server.verify_cache",
        Some("--no-verify-cache"),
        Reload,
        |c| other(c.verify_cache),
    ),
    listener("server.resumption", Some("--no-resumption"), Reload, |c| {
        other(c.resumption)
    }),
    listener("server.access_log", Some("--access-log"), Reload, |c| {
        other(c.access_log)
    }),
    listener(
        "server.access_log_flush",
        Some("--access-log-flush"),
        Reload,
        |c| other(c.access_log_flush),
    ),
    listener("server.access_log_buffer", None, Reload, |c| {
        other(c.access_log_buffer)
    }),
    listener("server.max_header_bytes", None, Reload, |c| {
        other(c.max_header_bytes)
    }),
    listener(
        "server.admin_listen",
        Some("--admin-listen"),
        Apply::Restart(|run, next| next.admin_listen = run.admin_listen),
        |c| shown(c.admin_listen, "off"),
    ),
    listener(
        "server.threads",
        Some("--threads"),
        Apply::Restart(|run, next| next.threads = run.threads),
        |c| shown(c.threads, "one per core"),
    ),
    listener(
        "server.inventory",
        Some("--inventory"),
        Apply::Restart(|run, next| next.inventory = run.inventory.clone()),
        |c| shown(c.inventory.as_ref().map(|i| &i.location), "none"),
    ),
    // The sync task reads the inventory at the interval it started with.
    listener(
        "server.inventory_poll",
        Some("--inventory-poll"),
        Apply::Restart(|run, next| {
            if let (Some(r), Some(n)) = (&run.inventory, &mut next.inventory) {
                n.poll = r.poll;
            }
        }),
        |c| {
            shown(
                c.inventory.as_ref().map(|i| format!("{:?}", i.poll)),
                "none",
            )
        },
    ),
    listener("timeouts.handshake", None, Reload, |c| {
        other(c.timeouts.handshake)
    }),
    listener("timeouts.first_request", None, Reload, |c| {
        other(c.timeouts.first_request)
    }),
    listener("timeouts.header_read", None, Reload, |c| {
        other(c.timeouts.header_read)
    }),
    listener("timeouts.idle", None, Reload, |c| other(c.timeouts.idle)),
    listener("timeouts.upstream_connect", None, Reload, |c| {
        other(c.timeouts.upstream_connect)
    }),
    listener("timeouts.upstream_response", None, Reload, |c| {
        other(c.timeouts.upstream_response)
    }),
    listener("timeouts.drain", None, Reload, |c| other(c.timeouts.drain)),
    route("route.prefix", None, |r| other(&r.prefix)),
    route("route.upstream", Some("--upstream"), |r| other(&r.upstream)),
    route("route.upstream_ca", Some("--upstream-ca"), |r| {
        files(&upstream(r).ca)
    }),
    route("route.upstream_cert", Some("--upstream-cert"), |r| {
        files(&upstream(r).cert)
    }),
    route("route.upstream_key", Some("--upstream-key"), |r| {
        files(&upstream(r).key)
    }),
    route(
        "route.upstream_key_passphrase_file",
        Some("--upstream-key-passphrase-file"),
        |r| files(&upstream(r).key_passphrase_file),
    ),
    route(
        "route.upstream_server_name",
        Some("--upstream-server-name"),
        |r| other(upstream(r).server_name),
    ),
    route("route.allow_file", Some("--allow-file"), |r| {
        files(&r.policy.allow_files)
    }),
    route("route.allow_device_ids", Some("--allow-device-id"), |r| {
        other(&r.policy.device_ids)
    }),
    route("route.allow_spiffe_ids", None, |r| {
        other(&r.policy.spiffe_ids)
    }),
    route("route.allow_ous", None, |r| other(&r.policy.ous)),
    route("route.allow_fingerprints", None, |r| {
        other(&r.policy.fingerprints)
    }),
    route("route.headers", Some("--header"), |r| other(&r.headers)),
    route("route.default_headers", None, |r| other(r.default_headers)),
    route("route.xfcc", Some("--xfcc"), |r| other(r.xfcc)),
    route("route.host_header", Some("--host-header"), |r| {
        other(r.host_header)
    }),
    route("route.allow", Some("--inventory"), |r| {
        other((r.policy.inventory, &r.policy.tags))
    }),
    tcp(
        "tcp.listen",
        Some("--listen"),
        // A tunnel's listener is bound at start-up: all of them are kept, with their
        // settings (a changed list cannot be matched to the running listeners).
        Apply::Restart(|run, next| next.tunnels = run.tunnels.clone()),
        |t| Value::Other(t.listen.to_string()),
    ),
    tcp("tcp.target", Some("--target"), Reload, |t| other(&t.target)),
    tcp("tcp.cert", Some("--cert"), Reload, |t| {
        served(t, |s| files([&s.tls.cert]))
    }),
    tcp("tcp.key", Some("--key"), Reload, |t| {
        served(t, |s| files([&s.tls.key]))
    }),
    tcp(
        "tcp.key_passphrase_file",
        Some("--key-passphrase-file"),
        Reload,
        |t| served(t, |s| files(&s.tls.key_passphrase_file)),
    ),
    tcp("tcp.client_ca", Some("--client-ca"), Reload, |t| {
        served(t, |s| files(s.client_ca))
    }),
    tcp("tcp.crl", Some("--crl"), Reload, |t| {
        served(t, |s| files(s.crl))
    }),
    tcp("tcp.crl_check", Some("--crl-check"), Reload, |t| {
        served(t, |s| other(s.crl_check))
    }),
    tcp("tcp.pin_sha256", Some("--pin-sha256"), Reload, |t| {
        served(t, |s| other(s.pin_sha256))
    }),
    tcp("tcp.verify_depth", Some("--verify-depth"), Reload, |t| {
        served(t, |s| other(s.verify_depth))
    }),
    tcp(
        "tcp.allow_device_ids",
        Some("--allow-device-id"),
        Reload,
        |t| served(t, |s| other(&s.policy.device_ids)),
    ),
    tcp("tcp.allow_spiffe_ids", None, Reload, |t| {
        served(t, |s| other(&s.policy.spiffe_ids))
    }),
    tcp("tcp.allow_ous", None, Reload, |t| {
        served(t, |s| other(&s.policy.ous))
    }),
    tcp("tcp.allow_fingerprints", None, Reload, |t| {
        served(t, |s| other(&s.policy.fingerprints))
    }),
    tcp("tcp.allow_file", Some("--allow-file"), Reload, |t| {
        served(t, |s| files(&s.policy.allow_files))
    }),
    tcp(
        "tcp.proxy_protocol",
        Some("--proxy-protocol"),
        Reload,
        |t| served(t, |s| other(s.proxy_protocol)),
    ),
    tcp("tcp.upstream_ca", Some("--upstream-ca"), Reload, |t| {
        files(&opened(t).ca)
    }),
    tcp("tcp.upstream_cert", Some("--upstream-cert"), Reload, |t| {
        files(&opened(t).cert)
    }),
    tcp("tcp.upstream_key", Some("--upstream-key"), Reload, |t| {
        files(&opened(t).key)
    }),
    tcp(
        "tcp.upstream_key_passphrase_file",
        Some("--upstream-key-passphrase-file"),
        Reload,
        |t| files(&opened(t).key_passphrase_file),
    ),
    tcp(
        "tcp.upstream_server_name",
        Some("--upstream-server-name"),
        Reload,
        |t| other(opened(t).server_name),
    ),
    tcp("tcp.idle", Some("--idle-timeout"), Reload, |t| {
        other(t.idle)
    }),
    tcp(
        "tcp.connect_timeout",
        Some("--connect-timeout"),
        Reload,
        |t| other(t.connect_timeout),
    ),
    tcp(
        "tcp.max_connections",
        Some("--max-connections"),
        Reload,
        |t| other(t.max_connections),
    ),
    tcp("tcp.allow", Some("--inventory"), Reload, |t| {
        served(t, |s| other((s.policy.inventory, &s.policy.tags)))
    }),
];

/// The setting for a key; `route[3].upstream` and `route.upstream` name the same one.
pub fn setting(key: &str) -> Option<&'static Setting> {
    let plain = match (key.find('['), key.find(']')) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &key[..a], &key[b + 1..]),
        _ => key.to_string(),
    };
    SETTINGS.iter().find(|s| s.key == plain)
}

/// The flag that sets `key`, if there is one.
pub fn flag_of(key: &str) -> Option<&'static str> {
    setting(key).and_then(|s| s.flag)
}

/// The flags of settings whose prefix is `section` (`server.`, `tcp.`) that a reload
/// cannot apply, in table order and without repeats (for `--help`).
pub fn restart_flags(section: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in SETTINGS {
        if let (true, true, Some(f)) = (s.apply.needs_restart(), s.key.starts_with(section), s.flag)
        {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// Default values. The clap flags use the string forms in their `default_value`.
pub mod defaults {
    use super::Duration;

    pub const LISTEN: &str = "0.0.0.0:8443";
    /// A plain-HTTP (egress) listener binds loopback unless told otherwise.
    pub const LISTEN_PLAIN: &str = "127.0.0.1:8080";
    pub const VERIFY_CLIENT: &str = "require";
    /// Leaf → intermediate → root, as nginx's `ssl_verify_depth 2`.
    pub const VERIFY_DEPTH: usize = mtlsgate_pki::verify::DEFAULT_DEPTH;
    pub const ACCESS_LOG: &str = "text";
    /// nginx's `access_log … buffer=32k flush=1s`: a line waits at most this long.
    pub const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(1);
    pub const ACCESS_LOG_FLUSH_TEXT: &str = "1s";
    pub const ACCESS_LOG_BUFFER: usize = 32 * 1024;
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const RESUMPTION: bool = true;
    pub const VERIFY_CACHE: bool = true;
    pub const REJECT_AT_HANDSHAKE: bool = false;
    pub const ROUTE_PREFIX: &str = "/";
    pub const DEFAULT_HEADERS: bool = true;
    pub const XFCC: bool = false;

    pub const HANDSHAKE: Duration = Duration::from_secs(10);
    /// From the handshake to the first request head: nginx's `client_header_timeout`
    /// default is 60 s; a device that connects means to send at once.
    pub const FIRST_REQUEST: Duration = Duration::from_secs(10);
    pub const HEADER_READ: Duration = Duration::from_secs(10);
    /// nginx's `keepalive_timeout` default.
    pub const IDLE: Duration = Duration::from_secs(75);
    pub const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);
    pub const UPSTREAM_RESPONSE: Duration = Duration::from_secs(60);
    pub const DRAIN: Duration = Duration::from_secs(30);
    /// nginx's stream `proxy_timeout` default: long-lived, mostly idle device connections
    /// (MQTT keep-alives are often a minute or more apart).
    pub const TUNNEL_IDLE: Duration = Duration::from_secs(600);
    pub const TUNNEL_MAX_CONNECTIONS: usize = 100_000;
    /// How often a gateway reads an SQLite inventory for changes.
    pub const INVENTORY_POLL: Duration = Duration::from_millis(500);
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
