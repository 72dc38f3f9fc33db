//! `mtlsgate serve`: turns flags or a TOML file into a `GateConfig`, sets up logging and
//! the runtime (`--threads`), and runs the gateway, the admin listener, the reload
//! triggers and graceful shutdown on SIGTERM / Ctrl-C.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use mtlsgate_proxy::config::{
    parse_listen, parse_upstream, upstream_path, AccessLog, GateConfig, PolicyConfig, RouteConfig,
    Timeouts, VerifyMode,
};
use mtlsgate_proxy::{admin, watch, Gateway};

use crate::flags::Serve;

/// Builds the configuration from the one-route flags.
fn from_flags(s: &Serve) -> Result<GateConfig> {
    let listen = parse_listen(&s.listen).map_err(|m| anyhow!("--listen: {m}"))?;
    let verify = VerifyMode::parse(&s.verify_client).ok_or_else(|| {
        anyhow!(
            "--verify-client: `{}` is not a mode; use require, optional, optional_no_ca or off",
            s.verify_client
        )
    })?;
    let access_log = match s.access_log.as_str() {
        "text" => AccessLog::Text,
        "json" => AccessLog::Json,
        "off" => AccessLog::Off,
        other => bail!("--access-log: `{other}` is not a format; use text, json or off"),
    };
    let upstream = s
        .upstream
        .as_deref()
        .ok_or_else(|| anyhow!("--upstream is required without --config"))?;
    let upstream = parse_upstream(upstream).map_err(|m| anyhow!("--upstream: {m}"))?;
    let mut headers = Vec::new();
    for h in &s.header {
        let (n, t) = h.split_once('=').ok_or_else(|| {
            anyhow!("--header `{h}`: write NAME=TEMPLATE, e.g. 'X-Device=$client_device_id'")
        })?;
        headers.push((n.trim().to_string(), t.to_string()));
    }
    let c = GateConfig {
        source: None,
        listen,
        cert: s
            .cert
            .clone()
            .ok_or_else(|| anyhow!("--cert is required"))?,
        key: s.key.clone().ok_or_else(|| anyhow!("--key is required"))?,
        client_ca: s.client_ca.clone(),
        verify,
        verify_depth: s
            .verify_depth
            .unwrap_or(mtlsgate_pki::verify::DEFAULT_DEPTH),
        crl: s.crl.clone(),
        pin_sha256: s.pin_sha256.clone(),
        pin_cert: Vec::new(),
        reject_at_handshake: s.reject_at_handshake,
        verify_cache: !s.no_verify_cache,
        resumption: !s.no_resumption,
        admin_listen: None,
        access_log,
        timeouts: Timeouts::default(),
        max_header_bytes: 16 * 1024,
        routes: vec![RouteConfig {
            prefix: "/".into(),
            upstream_path: s.upstream.as_deref().and_then(upstream_path),
            upstream,
            policy: PolicyConfig {
                device_ids: s.allow_device_id.clone(),
                allow_files: s.allow_file.clone(),
                ..PolicyConfig::default()
            },
            headers,
            default_headers: true,
            xfcc: s.xfcc,
        }],
        threads: None,
    };
    c.check().map_err(|m| anyhow!("{m}"))?;
    Ok(c)
}

/// Resolves flags or file into the configuration to run.
pub fn config(s: &Serve) -> Result<GateConfig> {
    let mut c = match &s.config {
        Some(path) => GateConfig::from_file(path)?,
        None => from_flags(s)?,
    };
    if let Some(a) = &s.admin_listen {
        c.admin_listen = Some(parse_listen(a).map_err(|m| anyhow!("--admin-listen: {m}"))?);
    }
    if let Some(t) = s.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        c.threads = Some(t);
    }
    if let Some(a) = c.admin_listen {
        admin::check_addr(a)?;
    }
    Ok(c)
}

/// Sets up stderr logging (RUST_LOG overrides the default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    let _watcher = watch::start(state.clone());
    watch::on_sighup(state.clone()).context("cannot install the SIGHUP handler")?;
    let snap = state.load();
    let c = &snap.config;
    tracing::info!(
        "listening on {addr} (client verification: {:?}, {} route(s), resumption {})",
        c.verify,
        c.routes.len(),
        if c.resumption { "on" } else { "off" }
    );
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
    let cfg = config(&s)?;
    init_logging();
    let rt = runtime(cfg.threads)?;
    rt.block_on(run_gateway(cfg, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
