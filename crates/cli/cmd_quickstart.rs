//! `mtlsgate quickstart`: the README's first command. Creates a CA, a server certificate
//! for localhost and client certificates in a directory of their own, and shows how to use
//! them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::flags::Quickstart;

fn run_self(args: &[&str]) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the mtlsgate executable")?;
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .context("cannot run mtlsgate")?;
    if !out.status.success() {
        anyhow::bail!(
            "`mtlsgate {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run(q: Quickstart) -> Result<ExitCode> {
    let dir = &q.dir;
    let ca = dir.join("ca");
    if ca.join("ca.toml").exists() {
        println!("Using the existing CA in {}", ca.display());
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        run_self(&[
            "ca",
            "init",
            "--dir",
            s(&ca)?,
            "--name",
            "mtlsgate quickstart",
            "--device-domain",
            "d.example.local",
        ])?;
        run_self(&[
            "cert",
            "issue",
            "server",
            "localhost",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--dir",
            s(&ca)?,
            "--out",
            s(dir)?,
        ])?;
        for id in ["dev1", "dev2"] {
            run_self(&[
                "cert",
                "issue",
                "client",
                id,
                "--device-id",
                id,
                "--dir",
                s(&ca)?,
                "--out",
                s(dir)?,
            ])?;
        }
        println!("Created a CA and certificates in {}", dir.display());
    }
    let allow = dir.join("whitelist.txt");
    if !allow.exists() {
        mtlsgate_pki::fsutil::write_atomic(
            &allow,
            b"# Devices allowed through the gateway, one ID per line (a whitelist.txt as apps behind nginx keep it).\n# Edit this file while the gateway runs: it reloads by itself.\ndev1.d.example.local\n",
            0o644,
        )?;
    }
    if q.no_serve {
        print_files(dir);
        return Ok(ExitCode::SUCCESS);
    }
    let listen = mtlsgate_proxy::config::parse_listen(&q.listen)
        .map_err(|m| anyhow::anyhow!("--listen: {m}"))?;
    crate::cmd_serve::init_logging();
    let rt = crate::cmd_serve::runtime(None)?;
    rt.block_on(serve_demo(dir, listen, allow))?;
    Ok(ExitCode::SUCCESS)
}

fn print_files(dir: &Path) {
    let d = dir.display();
    println!();
    println!("  CA bundle:          {d}/ca.crt");
    println!("  server certificate: {d}/localhost.crt (key {d}/localhost.key)");
    println!("  device dev1:        {d}/dev1.crt (device ID dev1.d.example.local, allowed)");
    println!("  device dev2:        {d}/dev2.crt (device ID dev2.d.example.local, not allowed)");
    println!("  allowlist:          {d}/whitelist.txt");
}

/// Seed 001's appserver, minus the check the gateway now does: it answers every request
/// that reaches it, and shows who the gateway says the client is.
async fn demo_app(headers: axum::http::HeaderMap) -> String {
    let who = headers
        .get("ssl-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no SSL-Client header)");
    format!("Access Granted!\nSSL-Client: {who}\n")
}

async fn serve_demo(
    dir: &Path,
    listen: std::net::SocketAddr,
    allow: std::path::PathBuf,
) -> Result<()> {
    use mtlsgate_proxy::config::raw::{flag, RawConfig, RawRoute, RawServer};
    use mtlsgate_proxy::config::{GateConfig, Source};

    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the demo app on 127.0.0.1")?;
    let app_addr = app_listener.local_addr()?;
    let (app_stop_tx, app_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().fallback(demo_app);
    let app_task = tokio::spawn(async move {
        axum::serve(app_listener, app)
            .with_graceful_shutdown(async move {
                let _ = app_stop_rx.await;
            })
            .await
    });
    let raw = RawConfig {
        server: RawServer {
            listen: Some(flag(listen.to_string())),
            cert: Some(flag(dir.join("localhost.crt"))),
            key: Some(flag(dir.join("localhost.key"))),
            client_ca: vec![dir.join("ca.crt")].into(),
            ..RawServer::default()
        },
        vhosts: Vec::new(),
        timeouts: Default::default(),
        routes: vec![RawRoute {
            upstream: Some(flag(format!("http://{app_addr}"))),
            allow_file: vec![allow].into(),
            ..RawRoute::default()
        }],
        tunnels: Vec::new(),
    };
    let cfg = GateConfig::from_raw(raw, Source::Flags)?;
    let gw = mtlsgate_proxy::Gateway::bind(cfg).await.context(
        "cannot start the gateway; if the port is taken, pick another with --listen 127.0.0.1:PORT",
    )?;
    let addr = gw
        .local_addr()?
        .context("the demo gateway has no HTTP listener")?;
    let state = gw.state();
    let _watching =
        mtlsgate_proxy::watch::start(state).context("cannot install the SIGHUP handler")?;
    let d = dir.display();
    let url = format!("https://localhost:{}/", addr.port());
    tracing::info!("listening on {addr}");
    print_files(dir);
    println!();
    println!(
        "The demo app (an appserver that answers Access Granted!) is on http://{app_addr}; the gateway listens on {addr}."
    );
    println!("Try these from another terminal:");
    println!();
    println!("  # no certificate: 400 No required SSL certificate was sent");
    println!("  curl --cacert {d}/ca.crt {url}");
    println!();
    println!("  # dev1 is on the allowlist: 200 Access Granted!");
    println!("  curl --cacert {d}/ca.crt --cert {d}/dev1.crt --key {d}/dev1.key {url}");
    println!();
    println!("  # dev2 is not: 403, naming the device");
    println!("  curl --cacert {d}/ca.crt --cert {d}/dev2.crt --key {d}/dev2.key {url}");
    println!();
    println!("Add dev2.d.example.local to {d}/whitelist.txt and try again: no restart needed.");
    println!("Press Ctrl-C to stop.");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    gw.run(crate::cmd_serve::shutdown_signal()).await?;
    let _ = app_stop_tx.send(());
    if let Ok(Err(e)) = app_task.await {
        tracing::warn!("demo app: {e}");
    }
    println!("Stopped.");
    Ok(())
}

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}
