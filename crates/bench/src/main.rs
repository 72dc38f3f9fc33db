//! Helpers for the benchmark harness (`bench/`), kept out of the measured processes:
//!
//! - `mtlsgate-bench upstream --listen ADDR`: the fixed upstream every gateway proxies to;
//!   answers `Access Granted!` to anything, HTTP/1.1 keep-alive, one thread.
//! - `mtlsgate-bench idle --connect ADDR --count N --ca F --cert F --key F`: opens N mTLS
//!   connections (TLS 1.3, one HTTP/1.1 request each so the gateway has verified the client
//!   and proxied once), prints `open N`, and holds them until stdin closes. With `--echo` the
//!   request is one byte, read back from an echo backend through a TCP tunnel; with `--h2`
//!   the connections speak HTTP/2 (one request each, then idle).
//! - `mtlsgate-bench echo --listen ADDR`: a TCP echo backend for the tunnel figures.
//! - `mtlsgate-bench tls-connect ...`: new mTLS connections as fast as N tasks can (see
//!   [`tunnel`]).
//! - `mtlsgate-bench mqtt-pub ...`: MQTT 3.1.1 publishers through a tunnel and a subscriber
//!   on the broker (see [`mqtt`]).
//! - `mtlsgate-bench soak-client ...`: the soak test's long-lived well-behaved clients (see
//!   [`soak`]).
//! - `mtlsgate-bench seed-inventory --db CA_DIR|URL --devices N --cert PEM`: adds N devices
//!   to an inventory straight with SQL (see [`seed`]).
//! - `mtlsgate-bench flood ...`: waves of new mTLS connections and the gateway's RSS after
//!   each (see [`flood`]).

mod flood;
mod mqtt;
mod seed;
mod soak;
mod tunnel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> Error {
    "usage: mtlsgate-bench upstream --listen ADDR
       mtlsgate-bench echo --listen ADDR
       mtlsgate-bench idle --connect ADDR --count N --ca F --cert F --key F [--server-name NAME] [--echo | --h2]
       mtlsgate-bench tls-connect --connect ADDR --cert F --key F [--concurrency N] [--seconds S] [--server-name NAME]
       mtlsgate-bench mqtt-pub --connect ADDR --broker ADDR --ca F --cert F --key F [--publishers K] [--seconds S] [--payload BYTES] [--server-name NAME]
       mtlsgate-bench soak-client --connect ADDR --ca F --cert F --key F [--keepalive N] [--idle N] [--slow N] [--interval S] [--idle-ping S] [--retry-for S] [--seconds S] [--report S]
       mtlsgate-bench seed-inventory --db CA_DIR|URL --devices N --cert PEM
       mtlsgate-bench flood --connect ADDR --pid PID --ca F --cert F --key F [--count N] [--floods K] [--settle S] [--server-name NAME]".into()
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().ok_or_else(usage)?;
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd.as_str() {
        "upstream" => {
            let listen: SocketAddr = flag("--listen").ok_or_else(usage)?.parse()?;
            rt.block_on(upstream(listen))
        }
        "idle" => {
            let addr: SocketAddr = flag("--connect").ok_or_else(usage)?.parse()?;
            let count: usize = flag("--count").ok_or_else(usage)?.parse()?;
            let files = (
                PathBuf::from(flag("--ca").ok_or_else(usage)?),
                PathBuf::from(flag("--cert").ok_or_else(usage)?),
                PathBuf::from(flag("--key").ok_or_else(usage)?),
            );
            let name = flag("--server-name").unwrap_or_else(|| "localhost".into());
            let echo = args.iter().any(|a| a == "--echo");
            if args.iter().any(|a| a == "--h2") {
                return rt.block_on(idle_h2(addr, count, files, name));
            }
            rt.block_on(idle(addr, count, files, name, echo))
        }
        "echo" => {
            let listen: SocketAddr = flag("--listen").ok_or_else(usage)?.parse()?;
            rt.block_on(tunnel::echo(listen))
        }
        "tls-connect" => {
            let addr: SocketAddr = flag("--connect").ok_or_else(usage)?.parse()?;
            let cert = PathBuf::from(flag("--cert").ok_or_else(usage)?);
            let key = PathBuf::from(flag("--key").ok_or_else(usage)?);
            let concurrency: usize = flag("--concurrency")
                .unwrap_or_else(|| "32".into())
                .parse()?;
            let seconds: f64 = flag("--seconds").unwrap_or_else(|| "5".into()).parse()?;
            let name = flag("--server-name").unwrap_or_else(|| "localhost".into());
            rt.block_on(tunnel::tls_connect(
                addr,
                (&cert, &key),
                concurrency,
                std::time::Duration::from_secs_f64(seconds),
                name,
            ))
        }
        "seed-inventory" => {
            let db = flag("--db").ok_or_else(usage)?;
            let devices: u64 = flag("--devices").ok_or_else(usage)?.parse()?;
            let cert = flag("--cert").ok_or_else(usage)?;
            rt.block_on(seed::seed(&db, devices, &cert))
        }
        "mqtt-pub" => {
            let opts = mqtt::Options {
                connect: flag("--connect").ok_or_else(usage)?.parse()?,
                broker: flag("--broker").ok_or_else(usage)?.parse()?,
                publishers: flag("--publishers")
                    .unwrap_or_else(|| "100".into())
                    .parse()?,
                seconds: std::time::Duration::from_secs_f64(
                    flag("--seconds").unwrap_or_else(|| "5".into()).parse()?,
                ),
                payload: flag("--payload").unwrap_or_else(|| "32".into()).parse()?,
                server_name: flag("--server-name").unwrap_or_else(|| "localhost".into()),
            };
            let tls = client_config(
                Path::new(&flag("--ca").ok_or_else(usage)?),
                Path::new(&flag("--cert").ok_or_else(usage)?),
                Path::new(&flag("--key").ok_or_else(usage)?),
                None,
            )?;
            rt.block_on(mqtt::run(opts, tls))
        }
        "flood" => {
            let opts = flood::Options {
                connect: flag("--connect").ok_or_else(usage)?.parse()?,
                server_name: flag("--server-name").unwrap_or_else(|| "localhost".into()),
                count: flag("--count").unwrap_or_else(|| "5000".into()).parse()?,
                floods: flag("--floods").unwrap_or_else(|| "4".into()).parse()?,
                pid: flag("--pid").ok_or_else(usage)?.parse()?,
                settle: std::time::Duration::from_secs_f64(
                    flag("--settle").unwrap_or_else(|| "10".into()).parse()?,
                ),
            };
            let tls = client_config(
                Path::new(&flag("--ca").ok_or_else(usage)?),
                Path::new(&flag("--cert").ok_or_else(usage)?),
                Path::new(&flag("--key").ok_or_else(usage)?),
                Some(b"http/1.1"),
            )?;
            rt.block_on(flood::run(opts, tls))
        }
        "soak-client" => {
            let secs = |name: &str, default: &str| -> Result<std::time::Duration, Error> {
                Ok(std::time::Duration::from_secs_f64(
                    flag(name).unwrap_or_else(|| default.into()).parse()?,
                ))
            };
            let count = |name: &str, default: &str| -> Result<usize, Error> {
                Ok(flag(name).unwrap_or_else(|| default.into()).parse()?)
            };
            let opts = soak::Options {
                connect: flag("--connect").ok_or_else(usage)?.parse()?,
                server_name: flag("--server-name").unwrap_or_else(|| "localhost".into()),
                keepalive: count("--keepalive", "1000")?,
                idle: count("--idle", "8000")?,
                slow: count("--slow", "1000")?,
                interval: secs("--interval", "2")?,
                idle_ping: secs("--idle-ping", "50")?,
                retry_for: secs("--retry-for", "10")?,
                seconds: secs("--seconds", "600")?,
                report: secs("--report", "5")?,
            };
            let tls = client_config(
                Path::new(&flag("--ca").ok_or_else(usage)?),
                Path::new(&flag("--cert").ok_or_else(usage)?),
                Path::new(&flag("--key").ok_or_else(usage)?),
                Some(b"http/1.1"),
            )?;
            rt.block_on(soak::run(opts, tls))
        }
        _ => Err(usage()),
    }
}

async fn upstream(listen: SocketAddr) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("upstream listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // The body (the soak test's slow POSTs) is read before the answer.
            let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"Access Granted!\n",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The client's certificate chain and key, from PEM files.
fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain: Vec<CertificateDer<'static>> = mtlsgate_pki::pemfile::read_certs(cert)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let block = mtlsgate_pki::pemfile::read_blocks(key)?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or("no private key")?;
    Ok((chain, PrivateKeyDer::Pkcs8(block.der.into())))
}

/// TLS 1.3, the server verified against `ca`, the client certificate presented, `alpn`
/// offered if given.
fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    alpn: Option<&[u8]>,
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in mtlsgate_pki::pemfile::read_certs(ca)? {
        roots.add(CertificateDer::from(der))?;
    }
    let (chain, key) = client_identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    Ok(cfg)
}

async fn idle(
    addr: SocketAddr,
    count: usize,
    (ca, cert, key): (PathBuf, PathBuf, PathBuf),
    name: String,
    echo: bool,
) -> Result<(), Error> {
    let alpn = (!echo).then_some(&b"http/1.1"[..]);
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &cert, &key, alpn)?));
    let server_name = ServerName::try_from(name.clone())?;
    let mut held = Vec::with_capacity(count);
    // Through a tunnel to an echo backend, one byte there and back says the tunnel is open.
    let (request, answer): (String, &'static [u8]) = if echo {
        ("x".into(), b"x")
    } else {
        (
            format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n"),
            b"Access Granted!\n",
        )
    };
    // Open in small batches so the gateway's accept queue never overflows.
    for chunk_start in (0..count).step_by(100) {
        let n = (count - chunk_start).min(100);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let mut tls = connector.connect(server_name, tcp).await?;
                tls.write_all(request.as_bytes()).await?;
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                loop {
                    let k = tls.read(&mut buf).await?;
                    if k == 0 {
                        return Err::<_, Error>("closed before answering".into());
                    }
                    got.extend_from_slice(&buf[..k]);
                    if got.windows(answer.len()).any(|w| w == answer) {
                        break;
                    }
                }
                Ok(tls)
            }));
        }
        for t in tasks {
            held.push(t.await??);
        }
    }
    println!("open {}", held.len());
    // Hold until stdin closes.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.unwrap_or(0) > 0 {}
    drop(held);
    Ok(())
}

/// `idle --h2`: like [`idle`], over HTTP/2 (ALPN h2, one GET each).
async fn idle_h2(
    addr: SocketAddr,
    count: usize,
    (ca, cert, key): (PathBuf, PathBuf, PathBuf),
    name: String,
) -> Result<(), Error> {
    use http_body_util::{BodyExt, Empty};
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &cert, &key, Some(b"h2"))?));
    let server_name = ServerName::try_from(name.clone())?;
    let mut held = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(100) {
        let n = (count - chunk_start).min(100);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let uri = format!("https://{name}/");
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector.connect(server_name, tcp).await?;
                let (mut send, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tls),
                )
                .await?;
                let driver = tokio::spawn(conn);
                let req = Request::get(uri).body(Empty::<Bytes>::new())?;
                let resp = send.send_request(req).await?;
                let body = resp.into_body().collect().await?.to_bytes();
                if !body.starts_with(b"Access Granted!") {
                    return Err::<_, Error>("unexpected answer".into());
                }
                Ok((send, driver))
            }));
        }
        for t in tasks {
            held.push(t.await??);
        }
    }
    println!("open {}", held.len());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.unwrap_or(0) > 0 {}
    for (_, driver) in &held {
        driver.abort();
    }
    drop(held);
    Ok(())
}
