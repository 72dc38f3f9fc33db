//! `flood`: waves of new mTLS connections against the gateway, and its resident memory
//! after each, to see whether memory taken by a flood is given back.
//!
//! Each flood opens `--count` connections at once (full TLS 1.3 handshakes, the client
//! certificate presented, resumption off, as many distinct devices would), sends one
//! HTTP/1.1 request on each and reads its answer, holds them until every one has been
//! answered (so all are open together), then closes them all. After each flood and a
//! short pause it prints the gateway's RSS (`/proc/PID/status`), and after the last flood
//! it waits `--settle` seconds and prints it again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

pub struct Options {
    pub connect: SocketAddr,
    pub server_name: String,
    pub count: usize,
    pub floods: usize,
    pub pid: u32,
    pub settle: Duration,
}

/// The process's resident set size in KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}").into())
}

/// One connection of a flood: handshake, one request, its answer; the stream stays open.
async fn one(
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    request: Arc<Vec<u8>>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
    let mut tries = 0;
    let tcp = loop {
        // A full accept queue refuses or resets some connections: try again shortly.
        match tokio::net::TcpStream::connect(addr).await {
            Ok(t) => break t,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(&request).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let answer = b"Access Granted!\n";
    loop {
        let k = tls.read(&mut buf).await?;
        if k == 0 {
            return Err("closed before answering".into());
        }
        got.extend_from_slice(&buf[..k]);
        if got.windows(answer.len()).any(|w| w == answer) {
            return Ok(tls);
        }
    }
}

pub async fn run(opts: Options, mut tls: rustls::ClientConfig) -> Result<(), Error> {
    tls.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(opts.server_name.clone())?;
    let request =
        Arc::new(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", opts.server_name).into_bytes());
    println!("baseline: {} KiB", rss_kib(opts.pid)?);
    for flood in 1..=opts.floods {
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(opts.count);
        for _ in 0..opts.count {
            tasks.push(tokio::spawn(one(
                opts.connect,
                connector.clone(),
                name.clone(),
                request.clone(),
            )));
        }
        let mut held = Vec::with_capacity(opts.count);
        let mut failed = 0;
        for t in tasks {
            match t.await? {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        let peak = rss_kib(opts.pid)?;
        let took = started.elapsed();
        drop(held);
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "flood {flood}: {} answered, {failed} failed in {:.1} s; RSS {peak} KiB with them open, {} KiB 2 s after they closed",
            opts.count - failed,
            took.as_secs_f64(),
            rss_kib(opts.pid)?
        );
    }
    tokio::time::sleep(opts.settle).await;
    println!(
        "after {} s more: {} KiB",
        opts.settle.as_secs(),
        rss_kib(opts.pid)?
    );
    Ok(())
}
