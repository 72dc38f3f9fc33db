//! `mtlsgate serve`: turns flags or a TOML file into a `GateConfig`, sets up logging and
//! the runtime (`--threads`), and runs the gateway, the admin listener, the reload
//! triggers and graceful shutdown on SIGTERM / Ctrl-C.

use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_proxy::config::raw::{flag, RawAllow, RawConfig, RawRoute, RawServer};
use mtlsgate_proxy::config::{GateConfig, Overrides, Source};
use mtlsgate_proxy::{admin, watch, Gateway};

use crate::flags::{InventoryFlags, Serve};

/// Lowers the one-route flags into the raw form gate.toml parses into.
fn lower(s: &Serve) -> Result<RawConfig> {
    let mut headers = toml::Table::new();
    for h in &s.header {
        let (n, t) = h.split_once('=').with_context(|| {
            format!("--header `{h}`: write NAME=TEMPLATE, e.g. 'X-Device=$client_device_id'")
        })?;
        headers.insert(n.trim().to_string(), toml::Value::String(t.to_string()));
    }
    Ok(RawConfig {
        server: RawServer {
            server_name: Vec::new(),
            routes: Vec::new(),
            listen: s.listen.clone().map(flag),
            cert: s.cert.clone().map(flag),
            key: s.key.clone().map(flag),
            key_passphrase_file: s.key_passphrase_file.clone().map(flag),
            client_ca: s.client_ca.clone().into(),
            trusted_ca: s.trusted_ca.clone().into(),
            verify_client: s.verify_client.clone().map(flag),
            verify_depth: Some(flag(s.verify_depth)),
            crl: s.crl.clone().into(),
            crl_check: s.crl_check.clone().map(flag),
            pin_sha256: s.pin_sha256.clone(),
            pin_cert: Default::default(),
            reject_at_handshake: s.reject_at_handshake.then_some(true),
            verify_cache: s.no_verify_cache.then_some(false),
            resumption: s.no_resumption.then_some(false),
            admin_listen: s.admin_listen.clone().map(flag),
            access_log: Some(flag(s.access_log.clone())),
            access_log_flush: Some(flag(s.access_log_flush.clone())),
            access_log_buffer: None,
            max_header_bytes: None,
            inventory: s.inventory.inventory.clone().map(flag),
            inventory_poll: s.inventory.inventory_poll.clone().map(flag),
            threads: s
                .threads
                .map(|t| flag(i64::try_from(t).unwrap_or(i64::MAX))),
        },
        vhosts: Vec::new(),
        timeouts: Default::default(),
        routes: vec![RawRoute {
            upstream: s.upstream.clone().map(flag),
            upstream_ca: s.upstream_tls.upstream_ca.clone().into(),
            upstream_cert: s.upstream_tls.upstream_cert.clone().map(flag),
            upstream_key: s.upstream_tls.upstream_key.clone().map(flag),
            upstream_key_passphrase_file: s
                .upstream_tls
                .upstream_key_passphrase_file
                .clone()
                .map(flag),
            upstream_server_name: s.upstream_tls.upstream_server_name.clone().map(flag),
            allow_device_ids: s.allow_device_id.clone(),
            allow_file: s.allow_file.clone().into(),
            headers: (!headers.is_empty()).then(|| flag(headers)),
            xfcc: s.xfcc.then_some(true),
            host_header: s.host_header.clone().map(flag),
            allow: s.inventory.allow(),
            ..RawRoute::default()
        }],
        tunnels: Vec::new(),
    })
}

impl InventoryFlags {
    /// `allow = { inventory = true, tags = […] }` when --inventory is given.
    pub fn allow(&self) -> Option<mtlsgate_proxy::config::raw::At<RawAllow>> {
        self.inventory.as_ref().map(|_| {
            flag(RawAllow {
                inventory: true,
                tags: self.allow_tag.clone(),
            })
        })
    }
}

/// Resolves flags or file into the configuration to run.
pub fn config(s: &Serve) -> Result<GateConfig> {
    Ok(match &s.config {
        Some(path) => {
            let overrides = Overrides {
                admin_listen: s.admin_listen.clone(),
                threads: s.threads,
            };
            GateConfig::from_file_with(path, &overrides)?
        }
        None => GateConfig::from_raw(lower(s)?, Source::Flags)?,
    })
}

/// Sets up stderr logging (RUST_LOG overrides the default `info`). A line that cannot be
/// written is dropped (see [`crate::log_sink`]).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_sink::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Builds a runtime with `threads` workers (a single-threaded one for 1).
pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    rt.context("cannot start the async runtime")
}

/// `serve --check`: everything start-up reads and checks, without binding or serving.
fn check(s: &Serve) -> Result<ExitCode> {
    let what = match &s.config {
        Some(p) => p.display().to_string(),
        None => "the flags".to_string(),
    };
    let cfg = config(s).with_context(|| format!("{what}: the configuration is not valid"))?;
    let summary = format!(
        "{} route(s), {} tunnel(s), {} server block(s){}",
        cfg.routes.len(),
        cfg.tunnels.len(),
        1 + cfg.vhosts.len(),
        match &cfg.inventory {
            Some(i) => format!(
                ", inventory {}",
                mtlsgate_proxy::display_location(&i.location)
            ),
            None => String::new(),
        }
    );
    let listen = cfg.listen;
    let built = crate::block_on(async move { mtlsgate_proxy::State::new(cfg).map(drop) })?;
    built.with_context(|| format!("{what}: the configuration is not valid"))?;
    println!("{what}: the configuration is valid: listen {listen}, {summary}; every file it names was read");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
                _ = i.recv() => tracing::info!("interrupted: finishing in-flight requests"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a gateway with its admin listener and reload triggers until `stop` completes.
pub async fn run_gateway(
    cfg: GateConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let admin_addr = cfg.admin_listen;
    let gw = Gateway::bind(cfg).await?;
    let state = gw.state();
    let addr = gw.local_addr()?;
    let admin_listener = match admin_addr {
        Some(a) => Some(admin::bind(a).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = admin_listener {
        let a = l.local_addr()?;
        tracing::info!("admin listener on http://{a} (/healthz, /metrics)");
        let mut rx = stop_rx.clone();
        tokio::spawn(admin::serve(l, state.clone(), async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
    }
    let _watching = watch::start(state.clone()).context("cannot install the SIGHUP handler")?;
    let snap = state.load();
    let c = &snap.config;
    if let Some(addr) = addr {
        if c.tls.is_none() {
            tracing::info!(
                "plain-HTTP listener: requests are sent on over TLS to each route's upstream"
            );
            if !addr.ip().is_loopback() {
                tracing::warn!("the plain-HTTP listener on {addr} can be reached from other machines, and whoever reaches it uses the gateway's client certificate; listen on 127.0.0.1 unless that is what you want");
            }
        }
        tracing::info!(
            "listening on {addr} (client verification: {}, {} route(s), resumption {})",
            c.verify.as_str(),
            c.routes.len(),
            if c.resumption { "on" } else { "off" }
        );
    }
    for (t, a) in c.tunnels.iter().zip(gw.tunnel_addrs()?) {
        use mtlsgate_proxy::config::TunnelSide;
        match &t.side {
            TunnelSide::Server { proxy_protocol, .. } => tracing::info!(
                "tunnel listening on {a}: mTLS in, plain TCP to {}{}",
                t.target,
                if *proxy_protocol {
                    " with a PROXY v2 header"
                } else {
                    ""
                }
            ),
            TunnelSide::Client { .. } => {
                tracing::info!(
                    "tunnel listening on {a}: plain TCP in, mTLS to {}",
                    t.target
                );
                if !a.ip().is_loopback() {
                    tracing::warn!("the plain TCP side of the tunnel on {a} can be reached from other machines, and whoever reaches it uses the tunnel's client certificate");
                }
            }
        }
    }
    drop(snap);
    gw.run(async move {
        stop.await;
        let _ = stop_tx.send(true);
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

pub fn run(s: Serve) -> Result<ExitCode> {
    if s.check {
        return check(&s);
    }
    let cfg = config(&s)?;
    init_logging();
    let rt = runtime(cfg.threads)?;
    rt.block_on(run_gateway(cfg, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;
    use mtlsgate_proxy::config::settings::{Read, Value, SETTINGS};
    use mtlsgate_proxy::config::GateConfig;

    use crate::flags::{Cli, Command};

    /// A gateway from flags: a TLS server with an inventory and an https upstream with a
    /// client certificate, so that every flag has something to change.
    const SERVE: &[&str] = &[
        "serve",
        "--cert",
        "s.crt",
        "--key",
        "s.key",
        "--client-ca",
        "ca.crt",
        "--inventory",
        "ca",
        "--upstream",
        "https://127.0.0.1:3000",
        "--upstream-cert",
        "c.crt",
        "--upstream-key",
        "c.key",
    ];

    /// A tunnel that terminates mTLS, and one that opens it.
    const TUNNEL_IN: &[&str] = &[
        "tunnel",
        "--listen",
        "127.0.0.1:8883",
        "--target",
        "127.0.0.1:1883",
        "--cert",
        "t.crt",
        "--key",
        "t.key",
        "--client-ca",
        "ca.crt",
        "--inventory",
        "ca",
    ];
    const TUNNEL_OUT: &[&str] = &[
        "tunnel",
        "--listen",
        "127.0.0.1:1884",
        "--target",
        "broker.example:8883",
        "--upstream-cert",
        "c.crt",
        "--upstream-key",
        "c.key",
    ];

    /// What to add to the base command line to change each setting that has a flag. A
    /// flag added to the table without an entry here fails
    /// [`every_flag_is_lowered_into_its_setting`].
    fn change_of(key: &str) -> Option<&'static [&'static str]> {
        Some(match key {
            "server.listen" => &["--listen", "127.0.0.1:9443"],
            "server.cert" => &["--cert", "new.crt"],
            "server.key" => &["--key", "new.key"],
            "server.key_passphrase_file" => &["--key-passphrase-file", "p.txt"],
            "server.client_ca" => &["--client-ca", "ca2.crt"],
            "server.trusted_ca" => &["--trusted-ca", "t.crt"],
            "server.verify_client" => &["--verify-client", "optional"],
            "server.verify_depth" => &["--verify-depth", "3"],
            "server.crl" => &["--crl", "crl.pem"],
            "server.crl_check" => &["--crl-check", "lenient"],
            "server.pin_sha256" => &["--pin-sha256", "ab"],
            "server.reject_at_handshake" => &["--reject-at-handshake"],
            "server.verify_cache" => &["--no-verify-cache"],
            "server.resumption" => &["--no-resumption"],
            "server.access_log" => &["--access-log", "json"],
            "server.access_log_flush" => &["--access-log-flush", "0"],
            "server.admin_listen" => &["--admin-listen", "127.0.0.1:9901"],
            "server.threads" => &["--threads", "2"],
            "server.inventory" => &["--inventory", "other-ca"],
            "server.inventory_poll" => &["--inventory-poll", "2s"],
            "route.upstream" => &["--upstream", "https://127.0.0.1:3001"],
            "route.upstream_ca" => &["--upstream-ca", "u.crt"],
            "route.upstream_cert" => &["--upstream-cert", "new.crt"],
            "route.upstream_key" => &["--upstream-key", "new.key"],
            "route.upstream_key_passphrase_file" => &["--upstream-key-passphrase-file", "p.txt"],
            "route.upstream_server_name" => &["--upstream-server-name", "api.example"],
            "route.allow_file" => &["--allow-file", "a.txt"],
            "route.allow_device_ids" => &["--allow-device-id", "dev1"],
            "route.headers" => &["--header", "X-Device=$client_device_id"],
            "route.xfcc" => &["--xfcc"],
            "route.host_header" => &["--host-header", "upstream"],
            "route.allow" => &["--allow-tag", "cameras"],
            "tcp.listen" => &["--listen", "127.0.0.1:9883"],
            "tcp.target" => &["--target", "127.0.0.1:1999"],
            "tcp.cert" => &["--cert", "new.crt"],
            "tcp.key" => &["--key", "new.key"],
            "tcp.key_passphrase_file" => &["--key-passphrase-file", "p.txt"],
            "tcp.client_ca" => &["--client-ca", "ca2.crt"],
            "tcp.crl" => &["--crl", "crl.pem"],
            "tcp.crl_check" => &["--crl-check", "lenient"],
            "tcp.pin_sha256" => &["--pin-sha256", "ab"],
            "tcp.verify_depth" => &["--verify-depth", "3"],
            "tcp.allow_device_ids" => &["--allow-device-id", "dev1"],
            "tcp.allow_file" => &["--allow-file", "a.txt"],
            "tcp.proxy_protocol" => &["--proxy-protocol"],
            "tcp.upstream_ca" => &["--upstream-ca", "u.crt"],
            "tcp.upstream_cert" => &["--upstream-cert", "new.crt"],
            "tcp.upstream_key" => &["--upstream-key", "new.key"],
            "tcp.upstream_key_passphrase_file" => &["--upstream-key-passphrase-file", "p.txt"],
            "tcp.upstream_server_name" => &["--upstream-server-name", "b.example"],
            "tcp.idle" => &["--idle-timeout", "1m"],
            "tcp.connect_timeout" => &["--connect-timeout", "1s"],
            "tcp.max_connections" => &["--max-connections", "10"],
            "tcp.allow" => &["--allow-tag", "cameras"],
            _ => return None,
        })
    }

    /// The configuration `base` makes with `change` (a flag already in `base` gets the
    /// new value; another is added).
    fn lowered(base: &[&str], change: &[&str]) -> GateConfig {
        let mut args: Vec<&str> = std::iter::once("mtlsgate")
            .chain(base.iter().copied())
            .collect();
        match (change, args.iter().position(|a| Some(a) == change.first())) {
            ([_, value], Some(i)) => args[i + 1] = value,
            _ => args.extend(change),
        }
        let m = crate::flags::command()
            .try_get_matches_from(&args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let cli = Cli::from_arg_matches(&m).expect("parsed");
        let cfg = match cli.command {
            Command::Serve(s) => super::config(&s),
            Command::Tunnel(t) => crate::cmd_tunnel::config(&t),
            _ => panic!("not a gateway command"),
        };
        cfg.unwrap_or_else(|e| panic!("{args:?}: {e:#}"))
    }

    fn values(c: &GateConfig, read: Read) -> Vec<Value> {
        match read {
            Read::Listener(f) | Read::Server(f) => vec![f(c)],
            Read::Route(f) => c.routes.iter().map(f).collect(),
            Read::Tunnel(f) => c.tunnels.iter().map(f).collect(),
        }
    }

    /// Goes over every setting of the table that has a flag: giving the flag changes that
    /// setting of the configuration the command line is lowered into.
    #[test]
    fn every_flag_is_lowered_into_its_setting() {
        for s in SETTINGS.iter().filter(|s| s.flag.is_some()) {
            let change = change_of(s.key)
                .unwrap_or_else(|| panic!("{}: no change of it in change_of(); add one", s.key));
            let base = if s.key.starts_with("tcp.upstream") {
                TUNNEL_OUT
            } else if s.key.starts_with("tcp.") {
                TUNNEL_IN
            } else {
                SERVE
            };
            let (a, b) = (lowered(base, &[]), lowered(base, change));
            let moved = values(&a, s.read) != values(&b, s.read);
            assert!(moved, "{}: {change:?} did not change it", s.key);
        }
    }

    /// The flags that may be given with `--config` override the file.
    #[test]
    fn the_overrides_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = dir.path().join("gate.toml");
        std::fs::write(
            &gate,
            "[server]\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n[[route]]\nupstream = \"http://127.0.0.1:1\"\n",
        )
        .expect("write gate.toml");
        let gate = gate.display().to_string();
        let base = ["serve", "--config", gate.as_str()];
        for flag in crate::flags::OVERRIDES {
            let s = SETTINGS
                .iter()
                .find(|s| s.flag == Some(flag) && !s.key.starts_with("tcp."))
                .unwrap_or_else(|| panic!("{flag} sets no setting"));
            let change = change_of(s.key).unwrap_or_else(|| panic!("{}: no change", s.key));
            let (a, b) = (lowered(&base, &[]), lowered(&base, change));
            assert_ne!(
                values(&a, s.read),
                values(&b, s.read),
                "{flag} ignored with --config"
            );
        }
    }
}
