//! `mtlsgate tunnel`: one TCP tunnel from flags, lowered into the raw form gate.toml's
//! `[[tcp]]` sections parse into, and run like `serve`.

use std::process::ExitCode;

use anyhow::Result;
use mtlsgate_proxy::config::raw::{flag, RawConfig, RawServer, RawTunnel};
use mtlsgate_proxy::config::{GateConfig, Source};

use crate::cmd_serve::{init_logging, run_gateway, runtime, shutdown_signal};
use crate::flags::Tunnel;

/// Lowers the flags into one `[[tcp]]` section.
fn lower(t: &Tunnel) -> RawConfig {
    RawConfig {
        server: RawServer {
            admin_listen: t.admin_listen.clone().map(flag),
            inventory: t.inventory.inventory.clone().map(flag),
            inventory_poll: t.inventory.inventory_poll.clone().map(flag),
            threads: t
                .threads
                .map(|n| flag(i64::try_from(n).unwrap_or(i64::MAX))),
            ..RawServer::default()
        },
        vhosts: Vec::new(),
        timeouts: Default::default(),
        routes: Vec::new(),
        tunnels: vec![RawTunnel {
            listen: Some(flag(t.listen.clone())),
            target: Some(flag(t.target.clone())),
            cert: t.cert.clone().map(flag),
            key: t.key.clone().map(flag),
            key_passphrase_file: t.key_passphrase_file.clone().map(flag),
            client_ca: t.client_ca.clone().into(),
            crl: t.crl.clone().into(),
            crl_check: t.crl_check.clone().map(flag),
            pin_sha256: t.pin_sha256.clone(),
            verify_depth: t.verify_depth.map(flag),
            allow_device_ids: t.allow_device_id.clone(),
            allow_file: t.allow_file.clone().into(),
            proxy_protocol: t.proxy_protocol.then_some(true),
            upstream_ca: t.upstream_tls.upstream_ca.clone().into(),
            upstream_cert: t.upstream_tls.upstream_cert.clone().map(flag),
            upstream_key: t.upstream_tls.upstream_key.clone().map(flag),
            upstream_key_passphrase_file: t
                .upstream_tls
                .upstream_key_passphrase_file
                .clone()
                .map(flag),
            upstream_server_name: t.upstream_tls.upstream_server_name.clone().map(flag),
            idle: t.idle_timeout.clone().map(flag),
            connect_timeout: t.connect_timeout.clone().map(flag),
            max_connections: t.max_connections.map(flag),
            allow: t.inventory.allow(),
            ..RawTunnel::default()
        }],
    }
}

/// The configuration the flags make.
pub fn config(t: &Tunnel) -> Result<GateConfig> {
    Ok(GateConfig::from_raw(lower(t), Source::Flags)?)
}

pub fn run(t: Tunnel) -> Result<ExitCode> {
    let cfg = config(&t)?;
    init_logging();
    let rt = runtime(cfg.threads)?;
    rt.block_on(run_gateway(cfg, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
