//! Helpers for the benchmark harness (`bench/`), kept out of the measured processes:
//!
//! - `mtlsgate-bench upstream --listen ADDR`: the fixed upstream every gateway proxies to;
//!   answers `Access Granted!` to anything, HTTP/1.1 keep-alive, one thread.
//! - `mtlsgate-bench idle --connect ADDR --count N --ca F --cert F --key F`: opens N mTLS
//!   connections (TLS 1.3, one HTTP/1.1 request each so the gateway has verified the client
//!   and proxied once), prints `open N`, and holds them until stdin closes.

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
    "usage: mtlsgate-bench upstream --listen ADDR | idle --connect ADDR --count N --ca F --cert F --key F [--server-name NAME]".into()
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
            rt.block_on(idle(addr, count, files, name))
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
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
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

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in mtlsgate_pki::pemfile::read_certs(ca)? {
        roots.add(CertificateDer::from(der))?;
    }
    let chain: Vec<CertificateDer<'static>> = mtlsgate_pki::pemfile::read_certs(cert)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let block = mtlsgate_pki::pemfile::read_blocks(key)?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or("no private key")?;
    let key = PrivateKeyDer::Pkcs8(block.der.into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn idle(
    addr: SocketAddr,
    count: usize,
    (ca, cert, key): (PathBuf, PathBuf, PathBuf),
    name: String,
) -> Result<(), Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &cert, &key)?));
    let server_name = ServerName::try_from(name.clone())?;
    let mut held = Vec::with_capacity(count);
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n");
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
                    if got.windows(16).any(|w| w == b"Access Granted!\n") {
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
