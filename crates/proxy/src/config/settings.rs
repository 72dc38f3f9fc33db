//! The one table of gateway settings: every key gate.toml accepts, the flag that sets it
//! on the one-route command line, its default, and whether a reload applies it or it
//! needs a restart. Defaults are named constants here and nowhere else; `mtlsgate serve
//! --help`, the TOML file and the flags all take them from this module, and the reload
//! enforces (and logs) the `Apply` column.

use std::time::Duration;

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// A reload (SIGHUP, or a change to a watched file) applies it.
    Reload,
    /// Bound at start-up: a reload keeps the running value and says so in the log.
    Restart,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in gate.toml (`server.listen`, `timeouts.idle`, `route.upstream`).
    pub key: &'static str,
    /// The flag of `mtlsgate serve` that sets it, if any.
    pub flag: Option<&'static str>,
    pub apply: Apply,
}

const fn s(key: &'static str, flag: Option<&'static str>, apply: Apply) -> Setting {
    Setting { key, flag, apply }
}

use Apply::{Reload, Restart};

/// Every setting, in the order gate.toml documents them.
pub const SETTINGS: &[Setting] = &[
    s("server.listen", Some("--listen"), Restart),
    s("server.cert", Some("--cert"), Reload),
    s("server.key", Some("--key"), Reload),
    s(
        "server.key_passphrase_file",
        Some("--key-passphrase-file"),
        Reload,
    ),
    s("server.client_ca", Some("--client-ca"), Reload),
    s("server.trusted_ca", Some("--trusted-ca"), Reload),
    s("server.verify_client", Some("--verify-client"), Reload),
    s("server.verify_depth", Some("--verify-depth"), Reload),
    s("server.crl", Some("--crl"), Reload),
    s("server.crl_check", Some("--crl-check"), Reload),
    s("server.pin_sha256", Some("--pin-sha256"), Reload),
    s("server.pin_cert", None, Reload),
    s(
        "server.reject_at_handshake",
        Some("--reject-at-handshake"),
        Reload,
    ),
    s("server.verify_cache", Some("--no-verify-cache"), Reload),
    s("server.resumption", Some("--no-resumption"), Reload),
    s("server.access_log", Some("--access-log"), Reload),
    s("server.max_header_bytes", None, Reload),
    s("server.admin_listen", Some("--admin-listen"), Restart),
    s("server.threads", Some("--threads"), Restart),
    s("server.inventory", Some("--inventory"), Restart),
    s("server.inventory_poll", Some("--inventory-poll"), Restart),
    s("timeouts.handshake", None, Reload),
    s("timeouts.header_read", None, Reload),
    s("timeouts.idle", None, Reload),
    s("timeouts.upstream_connect", None, Reload),
    s("timeouts.upstream_response", None, Reload),
    s("timeouts.drain", None, Reload),
    s("route.prefix", None, Reload),
    s("route.upstream", Some("--upstream"), Reload),
    s("route.upstream_ca", Some("--upstream-ca"), Reload),
    s("route.upstream_cert", Some("--upstream-cert"), Reload),
    s("route.upstream_key", Some("--upstream-key"), Reload),
    s(
        "route.upstream_key_passphrase_file",
        Some("--upstream-key-passphrase-file"),
        Reload,
    ),
    s(
        "route.upstream_server_name",
        Some("--upstream-server-name"),
        Reload,
    ),
    s("route.allow_file", Some("--allow-file"), Reload),
    s("route.allow_device_ids", Some("--allow-device-id"), Reload),
    s("route.allow_spiffe_ids", None, Reload),
    s("route.allow_ous", None, Reload),
    s("route.allow_fingerprints", None, Reload),
    s("route.headers", Some("--header"), Reload),
    s("route.default_headers", None, Reload),
    s("route.xfcc", Some("--xfcc"), Reload),
    s("route.host_header", Some("--host-header"), Reload),
    s("route.allow", Some("--inventory"), Reload),
    s("tcp.listen", Some("--listen"), Restart),
    s("tcp.target", Some("--target"), Reload),
    s("tcp.cert", Some("--cert"), Reload),
    s("tcp.key", Some("--key"), Reload),
    s(
        "tcp.key_passphrase_file",
        Some("--key-passphrase-file"),
        Reload,
    ),
    s("tcp.client_ca", Some("--client-ca"), Reload),
    s("tcp.crl", Some("--crl"), Reload),
    s("tcp.crl_check", Some("--crl-check"), Reload),
    s("tcp.pin_sha256", Some("--pin-sha256"), Reload),
    s("tcp.verify_depth", Some("--verify-depth"), Reload),
    s("tcp.allow_device_ids", Some("--allow-device-id"), Reload),
    s("tcp.allow_spiffe_ids", None, Reload),
    s("tcp.allow_ous", None, Reload),
    s("tcp.allow_fingerprints", None, Reload),
    s("tcp.allow_file", Some("--allow-file"), Reload),
    s("tcp.proxy_protocol", Some("--proxy-protocol"), Reload),
    s("tcp.upstream_ca", Some("--upstream-ca"), Reload),
    s("tcp.upstream_cert", Some("--upstream-cert"), Reload),
    s("tcp.upstream_key", Some("--upstream-key"), Reload),
    s(
        "tcp.upstream_key_passphrase_file",
        Some("--upstream-key-passphrase-file"),
        Reload,
    ),
    s(
        "tcp.upstream_server_name",
        Some("--upstream-server-name"),
        Reload,
    ),
    s("tcp.idle", Some("--idle-timeout"), Reload),
    s("tcp.connect_timeout", Some("--connect-timeout"), Reload),
    s("tcp.max_connections", Some("--max-connections"), Reload),
    s("tcp.allow", Some("--inventory"), Reload),
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

/// Default values. The clap flags use the string forms in their `default_value`.
pub mod defaults {
    use super::Duration;

    pub const LISTEN: &str = "0.0.0.0:8443";
    /// A plain-HTTP (egress) listener binds loopback unless told otherwise.
    pub const LISTEN_PLAIN: &str = "127.0.0.1:8080";
    pub const VERIFY_CLIENT: &str = "require";
    /// Leaf → intermediate → root, like nginx's `ssl_verify_depth 2` in the seeds.
    pub const VERIFY_DEPTH: usize = mtlsgate_pki::verify::DEFAULT_DEPTH;
    pub const ACCESS_LOG: &str = "text";
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const RESUMPTION: bool = true;
    pub const VERIFY_CACHE: bool = true;
    pub const REJECT_AT_HANDSHAKE: bool = false;
    pub const ROUTE_PREFIX: &str = "/";
    pub const DEFAULT_HEADERS: bool = true;
    pub const XFCC: bool = false;

    pub const HANDSHAKE: Duration = Duration::from_secs(10);
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
mod tests {
    use super::*;

    #[test]
    fn indexed_keys_find_their_setting() {
        assert_eq!(
            setting("route[2].upstream").map(|s| s.flag),
            Some(Some("--upstream"))
        );
        assert_eq!(
            setting("server.listen").map(|s| s.apply),
            Some(Apply::Restart)
        );
        assert!(setting("server.nonsense").is_none());
    }

    #[test]
    fn keys_are_unique() {
        for (i, a) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[i + 1..].iter().all(|b| b.key != a.key),
                "{} twice",
                a.key
            );
        }
    }
}
