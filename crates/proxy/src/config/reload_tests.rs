//! Unit tests of the reload's diff, kept settings and watched files.

use std::path::Path;
use std::time::Duration;

use crate::config::settings::{Apply, Read, Value, SETTINGS};
use crate::config::{GateConfig, VerifyMode, GOOD};

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

/// A configuration with every kind of place a setting lives: a TLS server with an
/// inventory, an https route, a tunnel that terminates mTLS (`tcp[0]`) and one that opens
/// it (`tcp[1]`).
const EVERY_PLACE: &[(&str, &[&str])] = &[
    (
        "[server]",
        &[
            "listen = \"127.0.0.1:8443\"",
            "cert = \"server.crt\"",
            "key = \"server.key\"",
            "client_ca = \"ca.crt\"",
            "inventory = \"ca\"",
        ],
    ),
    ("[timeouts]", &[]),
    (
        "[[route]]",
        &[
            "prefix = \"/api/\"",
            "upstream = \"https://127.0.0.1:3000\"",
            "upstream_cert = \"client.crt\"",
            "upstream_key = \"client.key\"",
            "allow = { inventory = true }",
        ],
    ),
    (
        "[[tcp]]",
        &[
            "listen = \"127.0.0.1:8883\"",
            "target = \"127.0.0.1:1883\"",
            "cert = \"tunnel.crt\"",
            "key = \"tunnel.key\"",
            "client_ca = \"ca.crt\"",
        ],
    ),
    (
        "[[tcp]]",
        &[
            "listen = \"127.0.0.1:1884\"",
            "target = \"broker.example:8883\"",
            "upstream_cert = \"client.crt\"",
            "upstream_key = \"client.key\"",
        ],
    ),
];

/// A change of each setting: which block of [`EVERY_PLACE`] it is written in, and the
/// line. A setting added to the table without a change here fails
/// [`every_setting_is_reported_and_kept_or_applied_on_reload`].
fn change_of(key: &str) -> Option<(usize, &'static str)> {
    Some(match key {
        "server.server_name" => (0, "server_name = [\"gate.example\"]"),
        "server.listen" => (0, "listen = \"127.0.0.1:9443\""),
        "server.cert" => (0, "cert = \"new.crt\""),
        "server.key" => (0, "key = \"new.key\""),
        "server.key_passphrase_file" => (0, "key_passphrase_file = \"pass.txt\""),
        "server.client_ca" => (0, "client_ca = [\"ca.crt\", \"ca2.crt\"]"),
        "server.trusted_ca" => (0, "trusted_ca = \"more.crt\""),
        "server.verify_client" => (0, "verify_client = \"optional\""),
        "server.verify_depth" => (0, "verify_depth = 3"),
        "server.crl" => (0, "crl = \"crl.pem\""),
        "server.crl_check" => (0, "crl_check = \"lenient\""),
        "server.pin_sha256" => (0, "pin_sha256 = [\"ab\"]"),
        "server.pin_cert" => (0, "pin_cert = \"pinned.crt\""),
        "server.reject_at_handshake" => (0, "reject_at_handshake = true"),
        "server.verify_cache" => (0, "verify_cache = false"),
        "server.resumption" => (0, "resumption = false"),
        "server.access_log" => (0, "access_log = \"json\""),
        "server.access_log_flush" => (0, "access_log_flush = \"0\""),
        "server.access_log_buffer" => (0, "access_log_buffer = 65536"),
        "server.max_header_bytes" => (0, "max_header_bytes = 2048"),
        "server.admin_listen" => (0, "admin_listen = \"127.0.0.1:9901\""),
        "server.threads" => (0, "threads = 2"),
        "server.inventory" => (0, "inventory = \"other-ca\""),
        "server.inventory_poll" => (0, "inventory_poll = \"2s\""),
        "timeouts.handshake" => (1, "handshake = \"3s\""),
        "timeouts.first_request" => (1, "first_request = \"3s\""),
        "timeouts.header_read" => (1, "header_read = \"3s\""),
        "timeouts.idle" => (1, "idle = \"3s\""),
        "timeouts.upstream_connect" => (1, "upstream_connect = \"3s\""),
        "timeouts.upstream_response" => (1, "upstream_response = \"3s\""),
        "timeouts.drain" => (1, "drain = \"3s\""),
        "route.prefix" => (2, "prefix = \"/other/\""),
        "route.upstream" => (2, "upstream = \"https://127.0.0.1:3001\""),
        "route.upstream_ca" => (2, "upstream_ca = \"upstream-ca.crt\""),
        "route.upstream_cert" => (2, "upstream_cert = \"new-client.crt\""),
        "route.upstream_key" => (2, "upstream_key = \"new-client.key\""),
        "route.upstream_key_passphrase_file" => (2, "upstream_key_passphrase_file = \"p.txt\""),
        "route.upstream_server_name" => (2, "upstream_server_name = \"api.example\""),
        "route.allow_file" => (2, "allow_file = \"allow.txt\""),
        "route.allow_device_ids" => (2, "allow_device_ids = [\"dev1\"]"),
        "route.allow_spiffe_ids" => (2, "allow_spiffe_ids = [\"spiffe://example.org/x\"]"),
        "route.allow_ous" => (2, "allow_ous = [\"Fleet\"]"),
        "route.allow_fingerprints" => (2, "allow_fingerprints = [\"ab\"]"),
        "route.headers" => (2, "headers = { \"X-Device\" = \"$client_device_id\" }"),
        "route.default_headers" => (2, "default_headers = false"),
        "route.xfcc" => (2, "xfcc = true"),
        "route.host_header" => (2, "host_header = \"upstream\""),
        "route.allow" => (2, "allow = { inventory = true, tags = [\"cameras\"] }"),
        "tcp.listen" => (3, "listen = \"127.0.0.1:9883\""),
        "tcp.target" => (3, "target = \"127.0.0.1:1999\""),
        "tcp.cert" => (3, "cert = \"new-tunnel.crt\""),
        "tcp.key" => (3, "key = \"new-tunnel.key\""),
        "tcp.key_passphrase_file" => (3, "key_passphrase_file = \"pass.txt\""),
        "tcp.client_ca" => (3, "client_ca = \"ca2.crt\""),
        "tcp.crl" => (3, "crl = \"crl.pem\""),
        "tcp.crl_check" => (3, "crl_check = \"lenient\""),
        "tcp.pin_sha256" => (3, "pin_sha256 = [\"ab\"]"),
        "tcp.verify_depth" => (3, "verify_depth = 3"),
        "tcp.allow_device_ids" => (3, "allow_device_ids = [\"dev1\"]"),
        "tcp.allow_spiffe_ids" => (3, "allow_spiffe_ids = [\"spiffe://example.org/x\"]"),
        "tcp.allow_ous" => (3, "allow_ous = [\"Fleet\"]"),
        "tcp.allow_fingerprints" => (3, "allow_fingerprints = [\"ab\"]"),
        "tcp.allow_file" => (3, "allow_file = \"allow.txt\""),
        "tcp.proxy_protocol" => (3, "proxy_protocol = true"),
        "tcp.upstream_ca" => (4, "upstream_ca = \"upstream-ca.crt\""),
        "tcp.upstream_cert" => (4, "upstream_cert = \"new-client.crt\""),
        "tcp.upstream_key" => (4, "upstream_key = \"new-client.key\""),
        "tcp.upstream_key_passphrase_file" => (4, "upstream_key_passphrase_file = \"p.txt\""),
        "tcp.upstream_server_name" => (4, "upstream_server_name = \"broker.example\""),
        "tcp.idle" => (3, "idle = \"1m\""),
        "tcp.connect_timeout" => (3, "connect_timeout = \"1s\""),
        "tcp.max_connections" => (3, "max_connections = 10"),
        "tcp.allow" => (3, "allow = { inventory = true }"),
        _ => return None,
    })
}

/// `places` as gate.toml, with `line` written in block `block` (replacing the line of the
/// same key).
fn toml_of(places: &[(&str, &[&str])], change: Option<(usize, &str)>) -> String {
    let mut text = String::new();
    for (i, (header, lines)) in places.iter().enumerate() {
        text.push_str(header);
        text.push('\n');
        let mut lines: Vec<&str> = lines.to_vec();
        if let Some((_, line)) = change.filter(|(b, _)| *b == i) {
            let name = line.split(" =").next().unwrap_or(line);
            lines.retain(|l| l.split(" =").next() != Some(name));
            lines.push(line);
        }
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

fn every_place_with(change: Option<(usize, &str)>) -> String {
    toml_of(EVERY_PLACE, change)
}

/// The key a change in `block` of [`EVERY_PLACE`] is reported under.
fn reported_key(key: &str, block: usize) -> String {
    let (section, field) = key.split_once('.').unwrap_or((key, ""));
    match section {
        "route" => format!("route[0].{field}"),
        "tcp" => format!("tcp[{}].{field}", block - 3),
        _ => key.to_string(),
    }
}

/// Goes over every key of the table: a change of it is reported by the reload under that
/// key (and nothing else); a restart-only setting is kept at its running value and named
/// in a warning; any other reaches the configuration the reload builds from; a setting
/// that names files has them watched.
#[test]
fn every_setting_is_reported_and_kept_or_applied_on_reload() {
    let parse = |text: &str| GateConfig::from_toml("gate.toml", text, Path::new("/etc/gate"));
    let running = parse(&every_place_with(None)).expect("the base configuration is valid");
    assert!(running.changed_settings(&running).is_empty());
    for s in SETTINGS {
        let Some((block, line)) = change_of(s.key) else {
            panic!("{}: no change of it in change_of(); add one", s.key);
        };
        let text = every_place_with(Some((block, line)));
        let next = parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.key));
        let key = reported_key(s.key, block);
        assert_eq!(
            running.changed_settings(&next),
            std::slice::from_ref(&key),
            "{}",
            s.key
        );
        let mut reloaded = next.clone();
        let kept = running.keep_restart_settings(&mut reloaded);
        match s.apply {
            Apply::Restart(_) => {
                assert_eq!(kept.len(), 1, "{}: {kept:?}", s.key);
                assert!(
                    kept[0].starts_with(&format!("{} changed to", s.key))
                        && kept[0].contains("needs a restart"),
                    "{}: {}",
                    s.key,
                    kept[0]
                );
                assert!(
                    running.changed_settings(&reloaded).is_empty(),
                    "{}: still changed after a reload: {:?}",
                    s.key,
                    running.changed_settings(&reloaded)
                );
            }
            Apply::Reload => {
                assert!(kept.is_empty(), "{}: {kept:?}", s.key);
                assert_eq!(reloaded, next, "{}: not applied", s.key);
            }
        }
        for (k, value) in next.values_of(s) {
            if let (true, Value::Files(files)) = (k == key, value) {
                let watched = next.watched_files();
                for f in files {
                    assert!(
                        watched.contains(&f),
                        "{}: {} not watched",
                        s.key,
                        f.display()
                    );
                }
            }
        }
    }
}

#[test]
fn watched_files_are_every_file_setting_and_the_config_file() {
    let c =
        GateConfig::from_toml("gate.toml", &every_place_with(None), Path::new("/g")).expect("ok");
    let watched: Vec<String> = c
        .watched_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        watched,
        [
            "/g/server.crt",
            "/g/server.key",
            "/g/ca.crt",
            "/g/client.crt",
            "/g/client.key",
            "/g/tunnel.crt",
            "/g/tunnel.key",
            "/g/ca.crt",
            "/g/client.crt",
            "/g/client.key",
        ]
    );
}

#[test]
fn a_changed_inventory_poll_is_kept_and_named() {
    let text = every_place_with(None);
    let a = GateConfig::from_toml("gate.toml", &text, Path::new(".")).expect("ok");
    let mut b = GateConfig::from_toml(
        "gate.toml",
        &every_place_with(Some((0, "inventory_poll = \"2s\""))),
        Path::new("."),
    )
    .expect("ok");
    let kept = a.keep_restart_settings(&mut b);
    assert_eq!(
        kept,
        ["server.inventory_poll changed to 2s but needs a restart; still 500ms"]
    );
    assert_eq!(a, b);
}

/// Two server blocks on one listener: the second (`server[1]`) is a virtual host.
const TWO_SERVERS: &[(&str, &[&str])] = &[
    (
        "[[server]]",
        &[
            "listen = \"127.0.0.1:8443\"",
            "cert = \"server.crt\"",
            "key = \"server.key\"",
            "client_ca = \"ca.crt\"",
        ],
    ),
    (
        "[[server.route]]",
        &["upstream = \"http://127.0.0.1:3000\""],
    ),
    (
        "[[server]]",
        &[
            "server_name = [\"other.example\"]",
            "cert = \"other.crt\"",
            "key = \"other.key\"",
            "client_ca = \"ca.crt\"",
        ],
    ),
    (
        "[[server.route]]",
        &["upstream = \"http://127.0.0.1:3001\""],
    ),
];

/// Goes over every `server.*` key of the table in a further `[[server]]` block: a setting
/// of one server block is accepted there and its change reported as `server[1].KEY`; a
/// setting of the listener is refused there.
#[test]
fn every_server_setting_of_a_virtual_host_is_reported_and_listener_ones_are_refused() {
    let parse = |text: &str| GateConfig::from_toml("gate.toml", text, Path::new("/etc/gate"));
    let running = parse(&toml_of(TWO_SERVERS, None)).expect("the base configuration is valid");
    for s in SETTINGS.iter().filter(|s| s.key.starts_with("server.")) {
        let Some((_, line)) = change_of(s.key) else {
            panic!("{}: no change of it in change_of(); add one", s.key);
        };
        let text = toml_of(TWO_SERVERS, Some((2, line)));
        let field = &s.key["server.".len()..];
        match s.read {
            Read::Server(_) => {
                let next = parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.key));
                assert_eq!(
                    running.changed_settings(&next),
                    [format!("server[1].{field}")],
                    "{}",
                    s.key
                );
            }
            Read::Listener(_) => {
                let e = parse(&text).expect_err(s.key).to_string();
                assert!(e.contains("is a setting of the listener"), "{}: {e}", s.key);
            }
            Read::Route(_) | Read::Tunnel(_) => panic!("{} is read from a route or tunnel", s.key),
        }
    }
    let next = parse(&toml_of(TWO_SERVERS, Some((3, "xfcc = true")))).expect("ok");
    assert_eq!(running.changed_settings(&next), ["server[1].route[0].xfcc"]);
}
