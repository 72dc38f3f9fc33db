//! `soak-client`: the soak test's clients (bench/soak), many mTLS connections of three
//! well-behaved kinds held for a long time, counting what goes wrong.
//!
//! - **keep-alive**: one connection each, a `GET` every `--interval` seconds (jittered).
//! - **idle**: one request, then nothing for `--idle-ping` seconds (below the gateway's idle
//!   timeout), then one request again, and so on.
//! - **slow**: a `GET` whose head is trickled a few bytes at a time, then a `POST` whose
//!   body is trickled, each well within the gateway's `header_read` timeout; then a pause.
//!
//! Every client is *well behaved*: its requests are idempotent, it retries one that got a
//! 502, 503 or 504 (the upstream being restarted) after a short back-off for up to
//! `--retry-for` seconds, and when a kept-alive connection is closed under it before any
//! byte of the answer came (the race RFC 9112 §9.3.1 lets clients retry), it reconnects and
//! retries. A request **fails** when it has no `200` within its retries, gets any other
//! status, or its connection breaks in a way a client may not retry (a handshake refused, a
//! reset after part of the answer, a malformed answer). Gateway-closed connections are
//! counted apart (`closed`) so that they show even though they were retried.
//!
//! A JSON line of counters is printed every `--report` seconds and at the end (after
//! `--seconds`, or when stdin closes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Error;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

pub struct Options {
    pub connect: SocketAddr,
    pub server_name: String,
    pub keepalive: usize,
    pub idle: usize,
    pub slow: usize,
    pub interval: Duration,
    pub idle_ping: Duration,
    pub retry_for: Duration,
    pub seconds: Duration,
    pub report: Duration,
}

/// Counters of one class of client.
#[derive(Default)]
struct Class {
    /// Connections open now.
    open: AtomicU64,
    /// Requests answered 200 (after retries, if any).
    ok: AtomicU64,
    /// Attempts answered 502/503/504 and retried.
    retried: AtomicU64,
    /// Connections the gateway closed under a client (then reconnected).
    closed: AtomicU64,
    /// Requests that failed (see the module doc).
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Class {
    fn fail(&self, e: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }

    fn json(&self) -> String {
        let err = self.first_error.lock().ok().and_then(|f| f.clone());
        format!(
            "{{\"open\":{},\"ok\":{},\"retried\":{},\"closed\":{},\"failed\":{},\"first_error\":{}}}",
            self.open.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            crate::tunnel::json_string(err.as_deref()),
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    KeepAlive,
    Idle,
    Slow,
}

/// How one attempt at a request ended.
enum Attempt {
    Status(u16),
    /// The connection closed (or reset) before any byte of the answer: retry on a new one.
    ClosedBefore(String),
    /// Anything else: not retried.
    Broken(String),
}

struct Client {
    connector: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    /// Handshakes in progress at once: the client's own core is the limit when thousands
    /// start together, and a handshake waiting for it must not count as the gateway's delay.
    handshakes: tokio::sync::Semaphore,
}

impl Client {
    async fn connect(&self) -> Result<Tls, Error> {
        let _permit = self.handshakes.acquire().await?;
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connect timed out")??;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            Duration::from_secs(15),
            self.connector.connect(self.name.clone(), tcp),
        )
        .await
        .map_err(|_| "handshake timed out")??;
        Ok(tls)
    }
}

/// A small xorshift for jitter (no need for a random crate).
struct Jitter(u64);
impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `d` scaled by a factor in [0.5, 1.5).
    fn around(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.5 + (self.next() % 1000) as f64 / 1000.0)
    }
}

/// Writes `bytes`, in pieces of `piece` with `gap` between them when `piece` is not 0.
async fn send(tls: &mut Tls, bytes: &[u8], piece: usize, gap: Duration) -> std::io::Result<()> {
    if piece == 0 {
        tls.write_all(bytes).await?;
        return tls.flush().await;
    }
    for chunk in bytes.chunks(piece) {
        tls.write_all(chunk).await?;
        tls.flush().await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) and returns its status.
async fn response(tls: &mut Tls) -> Attempt {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 2048];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let r = tokio::time::timeout(Duration::from_secs(90), tls.read(&mut tmp)).await;
        match r {
            Err(_) => return Attempt::Broken("no answer within 90 s".into()),
            Ok(Ok(0)) if buf.is_empty() => return Attempt::ClosedBefore("closed".into()),
            Ok(Err(e)) if buf.is_empty() => return Attempt::ClosedBefore(e.to_string()),
            Ok(Ok(0)) => return Attempt::Broken("closed within the answer's head".into()),
            Ok(Err(e)) => return Attempt::Broken(format!("within the answer's head: {e}")),
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 64 * 1024 {
            return Attempt::Broken("an answer head over 64 KiB".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = match head.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None => {
            return Attempt::Broken(format!(
                "a malformed status line: {:?}",
                head.lines().next()
            ))
        }
    };
    let chunked = head.contains("transfer-encoding: chunked");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    loop {
        let done = if chunked {
            body.windows(5).any(|w| w == b"0\r\n\r\n")
        } else {
            body.len() >= length
        };
        if done {
            return Attempt::Status(status);
        }
        match tokio::time::timeout(Duration::from_secs(90), tls.read(&mut tmp)).await {
            Ok(Ok(0)) => return Attempt::Broken("closed within the answer's body".into()),
            Ok(Ok(n)) => body.extend_from_slice(&tmp[..n]),
            Ok(Err(e)) => return Attempt::Broken(format!("within the answer's body: {e}")),
            Err(_) => return Attempt::Broken("the answer's body stalled for 90 s".into()),
        }
    }
}

/// One request by a client of `kind` on `conn` (reconnecting when needed), retried as the
/// module doc says. Ok(()) when answered 200.
async fn request(
    client: &Client,
    conn: &mut Option<Tls>,
    kind: Kind,
    stats: &Class,
    retry_for: Duration,
) -> Result<(), String> {
    let host = client.name.to_str();
    let (req, piece, gap) = match kind {
        Kind::Slow => (
            format!(
                "POST /slow HTTP/1.1\r\nHost: {host}\r\nUser-Agent: soak-slow\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n{}",
                "b".repeat(64)
            ),
            8,
            Duration::from_millis(150),
        ),
        _ => (
            format!("GET /{} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: soak\r\n\r\n",
                if kind == Kind::Idle { "idle" } else { "ka" }),
            0,
            Duration::ZERO,
        ),
    };
    // The retry window opens at the first failed attempt (not at the connect, which may
    // wait behind thousands of others when all the clients start).
    let mut since: Option<Instant> = None;
    let mut fresh = false;
    loop {
        if conn.is_none() {
            match client.connect().await {
                Ok(c) => {
                    *conn = Some(c);
                    stats.open.fetch_add(1, Ordering::Relaxed);
                    fresh = true;
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        let Some(tls) = conn.as_mut() else {
            continue;
        };
        let outcome = match send(tls, req.as_bytes(), piece, gap).await {
            Err(e) => Attempt::ClosedBefore(format!("writing: {e}")),
            Ok(()) => response(tls).await,
        };
        match outcome {
            Attempt::Status(200) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Attempt::Status(502..=504)
                if since.get_or_insert_with(Instant::now).elapsed() < retry_for =>
            {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Attempt::Status(s) => return Err(format!("status {s}")),
            Attempt::ClosedBefore(why) => {
                *conn = None;
                stats.open.fetch_sub(1, Ordering::Relaxed);
                stats.closed.fetch_add(1, Ordering::Relaxed);
                // A connection that never answered its first request is not the keep-alive
                // race: that is a failure.
                if fresh {
                    return Err(format!("a new connection closed before answering: {why}"));
                }
                if since.get_or_insert_with(Instant::now).elapsed() >= retry_for {
                    return Err(format!("closed before answering: {why}"));
                }
            }
            Attempt::Broken(why) => {
                *conn = None;
                stats.open.fetch_sub(1, Ordering::Relaxed);
                return Err(why);
            }
        }
    }
}

/// Waits up to `d` on an idle connection; the gateway closing it meanwhile is counted, and
/// the connection is dropped so the next request reconnects.
async fn idle_wait(conn: &mut Option<Tls>, d: Duration, stats: &Class) {
    let Some(tls) = conn.as_mut() else {
        tokio::time::sleep(d).await;
        return;
    };
    let mut b = [0u8; 64];
    match tokio::time::timeout(d, tls.read(&mut b)).await {
        Err(_) => {}
        Ok(Ok(n)) if n > 0 => {
            // Bytes nobody asked for.
            stats.fail(format!("{n} unexpected bytes on an idle connection"));
            *conn = None;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(_) => {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            *conn = None;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn client_loop(
    client: Arc<Client>,
    kind: Kind,
    stats: Arc<Class>,
    o: Arc<Options>,
    end: Instant,
    seed: u64,
) {
    let mut conn: Option<Tls> = None;
    let mut jitter = Jitter(seed | 1);
    while Instant::now() < end {
        if let Err(e) = request(&client, &mut conn, kind, &stats, o.retry_for).await {
            stats.fail(e);
            // Do not hammer a refusing gateway.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let pause = match kind {
            Kind::KeepAlive => jitter.around(o.interval),
            Kind::Slow => jitter.around(Duration::from_secs(2)),
            Kind::Idle => jitter.around(o.idle_ping).min(o.idle_ping.mul_f64(1.2)),
        };
        let pause = pause.min(end.saturating_duration_since(Instant::now()));
        idle_wait(&mut conn, pause, &stats).await;
    }
    if conn.is_some() {
        stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn run(o: Options, tls: rustls::ClientConfig) -> Result<(), Error> {
    let o = Arc::new(o);
    let client = Arc::new(Client {
        connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        addr: o.connect,
        name: ServerName::try_from(o.server_name.clone())?,
        handshakes: tokio::sync::Semaphore::new(64),
    });
    let classes: [(Kind, &str, usize, Arc<Class>); 3] = [
        (Kind::KeepAlive, "keepalive", o.keepalive, Arc::default()),
        (Kind::Idle, "idle", o.idle, Arc::default()),
        (Kind::Slow, "slow", o.slow, Arc::default()),
    ];
    let t0 = Instant::now();
    let end = t0 + o.seconds;
    let print = |classes: &[(Kind, &str, usize, Arc<Class>)], last: bool| {
        let parts: Vec<String> = classes
            .iter()
            .map(|(_, name, _, c)| format!("\"{name}\":{}", c.json()))
            .collect();
        println!(
            "{{\"t\":{:.1},\"final\":{last},{}}}",
            t0.elapsed().as_secs_f64(),
            parts.join(",")
        );
    };
    // Start the clients spread over the first seconds (about 1,000 handshakes a second), so
    // that the gateway's accept queue never overflows.
    let mut tasks = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let total: usize = classes.iter().map(|c| c.2).sum();
    let mut started = 0usize;
    for (kind, _, n, stats) in &classes {
        for _ in 0..*n {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            tasks.push(tokio::spawn(client_loop(
                client.clone(),
                *kind,
                stats.clone(),
                o.clone(),
                end,
                seed,
            )));
            started += 1;
            if started.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("soak-client: {total} clients started");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let mut next = Instant::now() + o.report;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(end)) => {
                if Instant::now() >= end { break; }
                print(&classes, false);
                next += o.report;
            }
            r = stdin.read(&mut sink) => {
                if matches!(r, Ok(0) | Err(_)) { break; }
            }
        }
    }
    for t in &tasks {
        t.abort();
    }
    print(&classes, true);
    Ok(())
}
