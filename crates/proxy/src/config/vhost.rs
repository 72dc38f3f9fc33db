//! Virtual hosts: further `[[server]]` blocks on the one listener, chosen by SNI, each with
//! its own certificate, client verification and routes. Owns the `server_name` checks and
//! the rule that listener-wide settings are written in the first block only.

use super::listener::ListenerTls;
use super::raw::{self, RawConfig};
use super::{ConfigError, GateConfig, Source};

/// A further `[[server]]` block on the listener: a virtual host chosen by SNI, with its own
/// certificate, client verification and routes. Only its server-level settings and routes
/// are used; the listener's settings are the first block's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    /// Lower-case names (`api.example.com`, `*.example.com`).
    pub names: Vec<String>,
    pub config: GateConfig,
}

/// Checks `server_name` values: host names, optionally `*.` wildcards; lower-cased.
pub(super) fn check_server_names(
    names: &[String],
    src: &Source<'_>,
) -> Result<Vec<String>, ConfigError> {
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
    if b.access_log_flush.is_some() {
        v.push("access_log_flush");
    }
    if b.access_log_buffer.is_some() {
        v.push("access_log_buffer");
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

/// Lowers the `[[server]]` blocks after the first into virtual hosts, and checks that
/// every server name (`default_names`, the first block's, and theirs) belongs to one
/// server.
pub(super) fn vhosts_from_raw(
    blocks: Vec<raw::RawServer>,
    default_names: &[String],
    tls: Option<&ListenerTls>,
    src: Source<'_>,
) -> Result<Vec<VirtualHost>, ConfigError> {
    let mut vhosts = Vec::with_capacity(blocks.len());
    for (i, mut block) in blocks.into_iter().enumerate() {
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
    let all_names: Vec<&String> = default_names
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
    Ok(vhosts)
}
