//! Lowering: from the raw form (gate.toml parsed, or the flags lowered by the CLI) to a
//! validated [`GateConfig`]. Reads the file and names errors by file, line and key;
//! [`GateConfig::from_raw`] applies the defaults and checks each concern in its own module
//! (listener, routes, tunnels, virtual hosts), then the rules that span them. As ripgrep's
//! `hiargs.rs` lowers its flags per concern.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mtlsgate_pki::verify::CrlCheck;

use super::listener::{listener_from_raw, Listener, Overrides, VerifyMode};
use super::raw::{self, At, RawConfig};
use super::route::route_from_raw;
use super::settings::defaults;
use super::tunnel::{check_listeners, tunnel_from_raw};
use super::vhost::{check_server_names, vhosts_from_raw};
use super::{key_at, line_of, ConfigError, GateConfig, Source};

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

/// Parses `crl_check` (`strict` or `lenient`).
pub(super) fn crl_check(
    v: &Option<At<String>>,
    key: &str,
    src: &Source<'_>,
) -> Result<CrlCheck, ConfigError> {
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
        toml::from_str(text).map_err(located)
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
        let server_names = check_server_names(&s.server_name, &src)?;
        let Listener {
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
        } = listener_from_raw(&s, raw.timeouts, src)?;

        let mut routes = Vec::new();
        for (i, r) in all_routes.into_iter().enumerate() {
            let route = route_from_raw(i, r, src, &routes, tls.as_ref(), inventory.is_some())?;
            routes.push(route);
        }
        let mut tunnels = Vec::new();
        for (i, t) in raw.tunnels.into_iter().enumerate() {
            tunnels.push(tunnel_from_raw(i, t, src, inventory.is_some())?);
        }
        check_listeners(&tunnels, (!routes.is_empty()).then_some(listen), src)?;
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
        let vhosts = vhosts_from_raw(vhost_blocks, &server_names, tls.as_ref(), src)?;
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
            access_log_flush,
            access_log_buffer,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{raw, PathBuf, Timeouts, GOOD};

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
}
