//! `mtlsgate quickstart`: the README's first command, the whole system on one machine. It
//! creates a CA (SQLite inventory) and a server certificate for localhost, starts the CA
//! server (`ca serve`), enrolls device dev1 through the real agent (`agent enroll` with a
//! token), issues dev2 a certificate by hand (so it is not in the inventory), and runs a
//! demo app behind a gateway that lets in the devices the inventory says are active. It
//! prints the curl commands to try and the revoke command that shuts dev1 out. Run again,
//! it reuses what exists and renews dev1 if due (`agent run --once`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::{Authority, Policy};
use mtlsgate_ca_server::{CaServer, ServerNames};

use crate::flags::Quickstart;

/// The device domain of the demo CA.
const DOMAIN: &str = "d.example.local";

/// Runs `mtlsgate ARGS` (this executable) and returns its standard output; fails with its
/// standard error.
fn run_self(args: &[&str]) -> Result<String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run_self`] off the runtime's threads (the CA server answers on them meanwhile).
async fn run_self_async(args: Vec<String>) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_self(&a)
    })
    .await
    .context("the mtlsgate child process was lost")?
}

/// How to call this program in the commands printed for the user: `mtlsgate` when that is
/// what the shell finds, else the path of this executable (e.g. under target/release).
fn program() -> String {
    let exe = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let candidate = d.join("mtlsgate");
            candidate.is_file()
                && exe.as_ref().is_some_and(|e| {
                    std::fs::canonicalize(&candidate).ok() == std::fs::canonicalize(e).ok()
                })
        })
    });
    if on_path {
        return "mtlsgate".into();
    }
    match (exe, std::env::current_dir()) {
        (Some(e), Ok(cwd)) => match e.strip_prefix(&cwd) {
            Ok(rel) => format!("./{}", rel.display()),
            Err(_) => e.display().to_string(),
        },
        _ => "mtlsgate".into(),
    }
}

pub fn run(q: Quickstart) -> Result<ExitCode> {
    let dir = q.dir.clone();
    let ca = dir.join("ca");
    if ca.join("ca.toml").exists() {
        println!("Using the existing CA in {}", ca.display());
    } else {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        run_self(&[
            "ca",
            "init",
            "--dir",
            s(&ca)?,
            "--name",
            "mtlsgate quickstart",
            "--device-domain",
            DOMAIN,
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
            s(&dir)?,
        ])?;
        // dev2 holds a certificate from this CA, made by hand: valid, but never enrolled.
        run_self(&[
            "cert",
            "issue",
            "client",
            "dev2",
            "--device-id",
            "dev2",
            "--dir",
            s(&ca)?,
            "--out",
            s(&dir)?,
        ])?;
        println!("Created a CA and certificates in {}", dir.display());
    }
    let ca_listen = crate::cmd_ca_serve::listen_addr(&q.ca_listen)
        .map_err(|e| anyhow::anyhow!("--ca-listen: {e:#}"))?;
    let listen = mtlsgate_proxy::config::parse_listen(&q.listen)
        .map_err(|m| anyhow::anyhow!("--listen: {m}"))?;
    crate::cmd_serve::init_logging();
    let rt = crate::cmd_serve::runtime(None)?;
    rt.block_on(async move {
        let ca_server = start_ca_server(&ca, ca_listen).await?;
        let ca_url = format!("https://localhost:{}", ca_server.addr.port());
        let dev1 = enroll_dev1(&dir, &ca, &ca_url).await;
        let outcome = match dev1 {
            Err(e) => Err(e),
            Ok(()) if q.no_serve => {
                print_files(&dir);
                Ok(())
            }
            Ok(()) => {
                let dev1 = dev1_state(&ca).await;
                serve_demo(&dir, &ca, &ca_url, listen, &dev1).await
            }
        };
        ca_server.stop().await;
        outcome
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The CA server running in this process, and how to stop it.
struct RunningCa {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), mtlsgate_ca_server::ServerError>>,
}

impl RunningCa {
    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the CA server: {e}"),
            Err(e) => tracing::warn!("the CA server stopped abnormally: {e}"),
        }
    }
}

async fn start_ca_server(ca: &Path, listen: std::net::SocketAddr) -> Result<RunningCa> {
    let mut auth = Authority::open(ca, None, Policy::default()).await?;
    auth.load_keys(None)?;
    let names = ServerNames {
        dns: vec!["localhost".into()],
        ips: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        lifetime: time::Duration::days(30),
    };
    let server = CaServer::bind(auth, listen, names).await.context(
        "cannot start the CA server; if the port is taken, pick another with --ca-listen 127.0.0.1:PORT",
    )?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    tracing::info!(
        "the CA server (mtlsgate ca serve) answers on https://localhost:{}",
        addr.port()
    );
    Ok(RunningCa { addr, stop, task })
}

/// Enrolls dev1 through the agent with a token bound to its ID; if it enrolled before,
/// lets the agent renew it when due.
async fn enroll_dev1(dir: &Path, ca: &Path, ca_url: &str) -> Result<()> {
    let dev1 = dir.join("dev1");
    if dev1.join("client.crt").exists() {
        let renewed = run_self_async(own(&["agent", "run", "--once", "--dir", s(&dev1)?])).await;
        match renewed {
            Ok(_) => println!(
                "Using device dev1 in {} (its agent renewed it if due)",
                dev1.display()
            ),
            Err(e) => println!(
                "Using device dev1 in {}; its agent could not renew it: {e:#}",
                dev1.display()
            ),
        }
        return Ok(());
    }
    let out = run_self_async(own(&[
        "token",
        "create",
        "--dir",
        s(ca)?,
        "--device-id",
        "dev1",
        "--ttl",
        "10m",
    ]))
    .await?;
    let token = out
        .lines()
        .last()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .context("`token create` printed no token")?
        .to_string();
    let ca_file = ca.join("ca.crt");
    run_self_async(own(&[
        "agent",
        "enroll",
        "--server",
        ca_url,
        "--token",
        &token,
        "--ca-file",
        s(&ca_file)?,
        "--dir",
        s(&dev1)?,
    ]))
    .await?;
    println!(
        "Enrolled device dev1 through the agent: its key was made in {} and never left it",
        dev1.display()
    );
    Ok(())
}

/// What the inventory says of dev1, which an earlier run may have left revoked or denied,
/// or whose certificate may have expired: decides what the printed curl command promises.
enum Dev1 {
    Active,
    Expired(String),
    Not(mtlsgate_authority::DeviceStatus),
    /// The inventory could not be read (the gateway will say why it refuses, if it does).
    Unknown,
}

async fn dev1_state(ca: &Path) -> Dev1 {
    let detail = async {
        let auth = Authority::open(ca, None, Policy::default()).await?;
        let d = auth.device(&format!("dev1.{DOMAIN}")).await;
        auth.close().await;
        anyhow::Ok(d?)
    }
    .await;
    let Ok(detail) = detail else {
        return Dev1::Unknown;
    };
    let d = detail.device;
    if d.status != mtlsgate_authority::DeviceStatus::Active {
        return Dev1::Not(d.status);
    }
    match d
        .cert_not_after
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
    {
        Some(t) if t <= time::OffsetDateTime::now_utc() => {
            Dev1::Expired(mtlsgate_pki::certinfo::human_time(t))
        }
        _ => Dev1::Active,
    }
}

fn own(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

fn print_files(dir: &Path) {
    let d = dir.display();
    println!();
    println!("  CA (keys, inventory):  {d}/ca/");
    println!("  CA bundle:             {d}/ca.crt");
    println!("  server certificate:    {d}/localhost.crt (key {d}/localhost.key)");
    println!("  device dev1:           {d}/dev1/client.crt, client.key, ca.crt (enrolled by the agent: dev1.{DOMAIN}; `devices list` shows its status)");
    println!("  device dev2:           {d}/dev2.crt (issued by hand: dev2.{DOMAIN}, not in the inventory)");
}

/// The demo app: an appserver that answers every request that reaches it, and shows who
/// the gateway says the client is.
async fn demo_app(headers: axum::http::HeaderMap) -> String {
    let who = headers
        .get("ssl-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no SSL-Client header)");
    format!("Access Granted!\nSSL-Client: {who}\n")
}

async fn serve_demo(
    dir: &Path,
    ca: &Path,
    ca_url: &str,
    listen: std::net::SocketAddr,
    dev1: &Dev1,
) -> Result<()> {
    use mtlsgate_proxy::config::raw::{flag, RawAllow, RawConfig, RawRoute, RawServer};
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
            inventory: Some(flag(s(ca)?.to_string())),
            ..RawServer::default()
        },
        vhosts: Vec::new(),
        timeouts: Default::default(),
        routes: vec![RawRoute {
            upstream: Some(flag(format!("http://{app_addr}"))),
            allow: Some(flag(RawAllow {
                inventory: true,
                tags: Vec::new(),
            })),
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
    // The commands printed below are meant to be tried at once: have the gateway read
    // the inventory before printing them (else the first try could be 503, starting).
    if !state
        .inventory_read(std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!("the gateway has not read the device inventory yet; until it has, requests are answered 503");
    }
    let _watching =
        mtlsgate_proxy::watch::start(state).context("cannot install the SIGHUP handler")?;
    let d = dir.display();
    let c = ca.display();
    let url = format!("https://localhost:{}/", addr.port());
    let me = program();
    tracing::info!("listening on {addr}");
    print_files(dir);
    println!();
    println!("The CA server is on {ca_url}; the demo app (an appserver that answers Access Granted!) is on http://{app_addr};");
    println!(
        "the gateway listens on {addr} and lets in the devices the inventory says are active."
    );
    println!("Try these from another terminal:");
    println!();
    println!("  # no certificate: 400 No required SSL certificate was sent");
    println!("  curl --cacert {d}/ca.crt {url}");
    println!();
    let id = format!("dev1.{DOMAIN}");
    match dev1 {
        Dev1::Active | Dev1::Unknown => {
            println!("  # dev1 enrolled through the agent: 200 Access Granted!")
        }
        Dev1::Expired(when) => println!(
            "  # dev1's certificate expired on {when} and its agent could not renew it: 400, the certificate has expired"
        ),
        Dev1::Not(status) => println!(
            "  # dev1 is {status} (on an earlier run): 403 device {id} is {status}; remove {d} and run quickstart again to start afresh"
        ),
    }
    println!("  curl --cacert {d}/dev1/ca.crt --cert {d}/dev1/client.crt --key {d}/dev1/client.key {url}");
    println!();
    println!(
        "  # dev2 holds a certificate from the same CA but never enrolled: 403, naming the device"
    );
    println!("  curl --cacert {d}/ca.crt --cert {d}/dev2.crt --key {d}/dev2.key {url}");
    println!();
    if matches!(dev1, Dev1::Active | Dev1::Unknown) {
        println!("  # revoke dev1: within a second the gateway refuses it (403 ... is revoked)");
        println!("  {me} devices revoke {id} --dir {c}");
        println!();
    }
    println!("  # enroll another device through the CA server (its key is made in {d}/dev3)");
    println!("  {me} agent enroll --server {ca_url} --ca-file {c}/ca.crt --dir {d}/dev3 \\");
    println!("      --token \"$({me} token create --dir {c} --device-id dev3 | tail -n 1)\"");
    println!("  {me} devices list --dir {c}");
    println!();
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
