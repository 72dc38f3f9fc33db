//! `mtlsgate-fleet-load`: the load and latency tool of `bench/fleet` (device lifecycle).
//!
//! - `lifecycle --url URL [--url URL…] --ca-dir DIR [--database URL] --devices N [--concurrency C]`:
//!   makes N enrollment tokens through the authority library (before anything is timed),
//!   pre-generates 2N P-256 keys and CSRs, then times N enrollments (`POST /v1/enroll`)
//!   and N renewals (`POST /v1/renew` over mTLS with each device's certificate, a new key
//!   each), C at a time, a new TLS connection per request as an agent makes. Prints one
//!   JSON line: `{"enroll": {...}, "renew": {...}}` with ops/s and latency p50/p99.
//!   With several `--url` (CA servers on one database), request i goes to server i mod K.
//!   With `--admin CERT,KEY` (from `mtlsgate cert issue admin`), a third phase revokes
//!   each device (`POST /v1/devices/ID/revoke` with that identity) and reports `revoke`.
//! - `revoke --url URL --ca-dir DIR [--database URL] --devices N --gateway ADDR
//!   [--gateway ADDR…] -- CMD…`: enrolls N devices, then for each: one kept-alive
//!   HTTP/1.1 connection through each gateway (answered 200), then runs CMD with `{id}`
//!   replaced by the device ID (e.g. `mtlsgate devices revoke {id} --dir ca`), and
//!   measures from the command's start until each gateway closes the kept-alive
//!   connection and until a new request through it is refused. Prints one JSON line.
//!
//! The tool does not check the server's certificate (as `oha --insecure`): its single
//! core should not be the bottleneck; the servers still verify the client fully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use mtlsgate_authority::{Authority, Location, Policy, TokenRequest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> Error {
    "usage: mtlsgate-fleet-load lifecycle --url URL [--url URL…] --ca-dir DIR [--database URL] --devices N [--concurrency C] [--admin CERT,KEY]\n       mtlsgate-fleet-load revoke --url URL --ca-dir DIR [--database URL] --devices N --gateway ADDR [--gateway ADDR] -- CMD… ({id} = the device ID)".into()
}

struct Args {
    flags: Vec<String>,
    rest: Vec<String>,
}

impl Args {
    fn get(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.flags.get(i + 1).cloned())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.flags
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].clone())
            .collect()
    }
    fn need(&self, name: &str) -> Result<String, Error> {
        self.get(name)
            .ok_or_else(|| format!("{name} is missing\n{}", usage()).into())
    }
}

fn main() -> Result<(), Error> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (flags, rest) = match raw.iter().position(|a| a == "--") {
        Some(i) => (raw[..i].to_vec(), raw[i + 1..].to_vec()),
        None => (raw, vec![]),
    };
    let cmd = flags.first().cloned().ok_or_else(usage)?;
    let args = Args { flags, rest };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = Target::from_args(&args)?;
    let n: usize = args.need("--devices")?.parse()?;
    match cmd.as_str() {
        "lifecycle" => {
            let c: usize = args.get("--concurrency").unwrap_or("64".into()).parse()?;
            let admin = args
                .get("--admin")
                .map(|a| admin_identity(&a))
                .transpose()?;
            rt.block_on(lifecycle(target, n, c, admin))
        }
        "revoke" => {
            let gateways = args
                .all("--gateway")
                .iter()
                .map(|g| g.parse())
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            if gateways.is_empty() || args.rest.is_empty() {
                return Err(usage());
            }
            rt.block_on(revoke(target, n, gateways, args.rest.clone()))
        }
        _ => Err(usage()),
    }
}

/// The CA servers (one or more on one database) and the CA directory (for tokens).
struct Target {
    addrs: Vec<SocketAddr>,
    ca_dir: PathBuf,
    database: Option<String>,
}

impl Target {
    fn from_args(a: &Args) -> Result<Target, Error> {
        let mut addrs = Vec::new();
        for url in a.all("--url") {
            let hostport = url
                .strip_prefix("https://")
                .ok_or("--url must be https://HOST:PORT")?
                .trim_end_matches('/');
            addrs.push(
                std::net::ToSocketAddrs::to_socket_addrs(hostport)?
                    .next()
                    .ok_or("--url names no address")?,
            );
        }
        if addrs.is_empty() {
            return Err(format!("--url is missing\n{}", usage()).into());
        }
        Ok(Target {
            addrs,
            ca_dir: PathBuf::from(a.need("--ca-dir")?),
            database: a.get("--database"),
        })
    }
}

/// Accepts the server's certificate and handshake signature unchecked (load generation only).
#[derive(Debug)]
struct NoServerCheck(Vec<SignatureScheme>);

impl ServerCertVerifier for NoServerCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn client_config(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoServerCheck(schemes)));
    let mut cfg = match identity {
        Some((chain, key)) => b.with_client_auth_cert(chain, key)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// An administrator's identity (`--admin CERT,KEY`, PEM files) as a client configuration.
fn admin_identity(arg: &str) -> Result<Arc<ClientConfig>, Error> {
    let (cert, key) = arg
        .split_once(',')
        .ok_or("--admin takes CERT,KEY (two PEM files)")?;
    let read = |f: &str| std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"));
    let chain = mtlsgate_pki::pemfile::certs_from_blocks(
        cert,
        mtlsgate_pki::pemfile::parse_blocks(cert, &read(cert)?)?,
    )?
    .into_iter()
    .map(CertificateDer::from)
    .collect();
    let block = pem::parse(read(key)?).map_err(|e| format!("{key}: {e}"))?;
    let key_der = match block.tag() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(block.into_contents().into()),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(block.into_contents().into()),
        other => {
            return Err(format!("{key} holds a {other}, not an unencrypted private key").into())
        }
    };
    client_config(Some((chain, key_der)))
}

/// One request on a new TLS connection: (status, body).
async fn request(
    cfg: Arc<ClientConfig>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<(u16, Bytes), Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(Full::new(body))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    drop(send);
    conn.abort();
    Ok((status, body))
}

/// A CSR (PEM) for a new P-256 key, and the key's PKCS#8 DER.
fn new_csr() -> Result<(String, Vec<u8>), Error> {
    let key = rcgen::KeyPair::generate()?;
    let pem = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((pem, key.serialize_der()))
}

async fn make_tokens(t: &Target, n: usize) -> Result<Vec<String>, Error> {
    let loc = t.database.clone().map(Location::Postgres);
    let auth = Authority::open(&t.ca_dir, loc.as_ref(), Policy::default()).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tok = auth
            .create_token(
                TokenRequest {
                    ttl: time::Duration::hours(2),
                    ..Default::default()
                },
                "fleet benchmark",
                time::OffsetDateTime::now_utc(),
            )
            .await?;
        out.push(tok.token);
    }
    auth.close().await;
    Ok(out)
}

/// An enrolled device: its ID, certificate chain and key.
struct Device {
    id: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Device {
    fn config(&self) -> Result<Arc<ClientConfig>, Error> {
        client_config(Some((
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone().into()),
        )))
    }
}

fn issued(body: &[u8], key: Vec<u8>) -> Result<Device, Error> {
    let v: Value = serde_json::from_slice(body)?;
    let id = v["device_id"].as_str().ok_or("no device_id")?.to_string();
    let pem = v["certificate"].as_str().ok_or("no certificate")?;
    let chain = mtlsgate_pki::pemfile::certs_from_blocks(
        "answer",
        mtlsgate_pki::pemfile::parse_blocks("answer", pem.as_bytes())?,
    )?
    .into_iter()
    .map(CertificateDer::from)
    .collect();
    Ok(Device { id, chain, key })
}

/// Latencies (seconds) and the wall time of one timed phase.
#[derive(Default)]
struct Phase {
    lat: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    wall: f64,
}

impl Phase {
    fn report(&mut self) -> Value {
        self.lat.sort_by(f64::total_cmp);
        let ok = self.lat.len();
        json!({
            "ok": ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.wall,
            "ops_per_sec": if self.wall > 0.0 { ok as f64 / self.wall } else { 0.0 },
            "p50_ms": pct(&self.lat, 0.50) * 1000.0,
            "p99_ms": pct(&self.lat, 0.99) * 1000.0,
        })
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `jobs` (each a config, a path and a body) `c` at a time, job i on server
/// i mod K; returns the phase and each job's answer (None when it failed).
async fn run_phase(
    addrs: &[SocketAddr],
    jobs: Vec<(Arc<ClientConfig>, String, Bytes)>,
    c: usize,
    want: u16,
) -> (Phase, Vec<Option<Bytes>>) {
    let n = jobs.len();
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let addrs: Arc<[SocketAddr]> = addrs.into();
    for _ in 0..c.min(n).max(1) {
        let jobs = jobs.clone();
        let next = next.clone();
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((cfg, path, body)) = jobs.get(i) else {
                    break;
                };
                let addr = addrs[i % addrs.len()];
                let t = Instant::now();
                let r = request(cfg.clone(), addr, "POST", path, body.clone()).await;
                let dt = t.elapsed().as_secs_f64();
                done.push((
                    i,
                    dt,
                    match r {
                        Ok((s, b)) if s == want => Ok(b),
                        Ok((s, b)) => Err(format!("{s} {}", String::from_utf8_lossy(&b))),
                        Err(e) => Err(e.to_string()),
                    },
                ));
            }
            done
        }));
    }
    let mut phase = Phase::default();
    let mut answers = vec![None; n];
    for t in tasks {
        for (i, dt, r) in t.await.unwrap_or_default() {
            match r {
                Ok(b) => {
                    phase.lat.push(dt);
                    answers[i] = Some(b);
                }
                Err(e) => {
                    phase.errors += 1;
                    phase.first_error.get_or_insert(e);
                }
            }
        }
    }
    phase.wall = started.elapsed().as_secs_f64();
    (phase, answers)
}

/// Enrolls `n` devices, `c` at a time: the phase and the devices.
async fn enroll(t: &Target, n: usize, c: usize) -> Result<(Phase, Vec<Device>), Error> {
    let tokens = make_tokens(t, n).await?;
    let anon = client_config(None)?;
    let mut keys = Vec::with_capacity(n);
    let mut jobs = Vec::with_capacity(n);
    for tok in &tokens {
        let (csr, key) = new_csr()?;
        keys.push(key);
        let body = json!({"csr": csr, "token": tok, "agent_version": "fleet-load"});
        jobs.push((
            anon.clone(),
            "/v1/enroll".into(),
            Bytes::from(body.to_string()),
        ));
    }
    let (phase, answers) = run_phase(&t.addrs, jobs, c, 201).await;
    let mut devices = Vec::new();
    for (a, key) in answers.into_iter().zip(keys) {
        if let Some(b) = a {
            devices.push(issued(&b, key)?);
        }
    }
    Ok((phase, devices))
}

async fn lifecycle(
    t: Target,
    n: usize,
    c: usize,
    admin: Option<Arc<ClientConfig>>,
) -> Result<(), Error> {
    let (mut enrolled, devices) = enroll(&t, n, c).await?;
    // Renewal requests made before the clock starts: each device's TLS identity and a CSR
    // for a new key.
    let mut jobs = Vec::with_capacity(devices.len());
    for d in &devices {
        let (csr, _key) = new_csr()?;
        let body = json!({"csr": csr, "agent_version": "fleet-load"});
        jobs.push((
            d.config()?,
            "/v1/renew".into(),
            Bytes::from(body.to_string()),
        ));
    }
    let (mut renewed, _) = run_phase(&t.addrs, jobs, c, 200).await;
    let mut out = json!({"devices": n, "concurrency": c, "enroll": enrolled.report(), "renew": renewed.report()});
    if let Some(admin) = admin {
        let body = Bytes::from(json!({"reason": "fleet benchmark"}).to_string());
        let jobs = devices
            .iter()
            .map(|d| {
                (
                    admin.clone(),
                    format!("/v1/devices/{}/revoke", d.id),
                    body.clone(),
                )
            })
            .collect();
        let (mut revoked, _) = run_phase(&t.addrs, jobs, c, 200).await;
        out["revoke"] = revoked.report();
    }
    println!("{out}");
    Ok(())
}

/// A kept-alive HTTP/1.1 connection through a gateway, answered 200 once.
struct Held {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// Ends when the connection closes, with when it did.
    conn: tokio::task::JoinHandle<Instant>,
}

async fn get(cfg: Arc<ClientConfig>, addr: SocketAddr) -> Result<(u16, Held), Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let req = Request::builder()
        .uri("/")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok((status, Held { send, conn }))
}

/// How long after `t0` a new request through `gw` is refused (not 200), trying every 5 ms.
async fn refused_after(cfg: Arc<ClientConfig>, gw: SocketAddr, t0: Instant) -> f64 {
    loop {
        match get(cfg.clone(), gw).await {
            Ok((200, h)) => {
                drop(h.send);
                h.conn.abort();
            }
            _ => return t0.elapsed().as_secs_f64(),
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return f64::INFINITY;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn revoke(t: Target, n: usize, gws: Vec<SocketAddr>, cmd: Vec<String>) -> Result<(), Error> {
    let (_, devices) = enroll(&t, n, 16).await?;
    if devices.len() != n {
        return Err(format!("only {} of {n} devices enrolled", devices.len()).into());
    }
    let mut closed: Vec<Vec<f64>> = vec![vec![]; gws.len()];
    let mut refused: Vec<Vec<f64>> = vec![vec![]; gws.len()];
    let mut command = vec![];
    for d in &devices {
        let cfg = d.config()?;
        // One kept-alive connection per gateway, once the gateway knows the device.
        let mut held = Vec::new();
        for gw in &gws {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match get(cfg.clone(), *gw).await {
                    Ok((200, h)) => {
                        held.push(h);
                        break;
                    }
                    Ok((_, h)) => h.conn.abort(),
                    Err(_) => {}
                }
                if Instant::now() > deadline {
                    return Err(format!("gateway {gw} never let device {} in", d.id).into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let argv: Vec<String> = cmd.iter().map(|a| a.replace("{id}", &d.id)).collect();
        let t0 = Instant::now();
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut waits = Vec::new();
        for (h, gw) in held.into_iter().zip(&gws) {
            let Held { send, conn } = h;
            let probe = tokio::spawn(refused_after(cfg.clone(), *gw, t0));
            waits.push(async move {
                let c = match tokio::time::timeout(Duration::from_secs(30), conn).await {
                    Ok(Ok(at)) => at.duration_since(t0).as_secs_f64(),
                    _ => f64::INFINITY,
                };
                drop(send);
                (c, probe.await.unwrap_or(f64::INFINITY))
            });
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        command.push(t0.elapsed().as_secs_f64());
        for (g, w) in waits.into_iter().enumerate() {
            let (c, r) = w.await;
            closed[g].push(c);
            refused[g].push(r);
        }
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({"p50_ms": pct(v, 0.5) * 1000.0, "p99_ms": pct(v, 0.99) * 1000.0, "max_ms": v.last().copied().unwrap_or(0.0) * 1000.0})
    };
    // Every gateway's samples together: the figure for "revocation reached the fleet".
    let mut all_closed: Vec<f64> = closed.iter().flatten().copied().collect();
    let mut all_refused: Vec<f64> = refused.iter().flatten().copied().collect();
    let all = json!({"closed": stat(&mut all_closed), "refused": stat(&mut all_refused)});
    let per_gw: Vec<Value> = (0..gws.len())
        .map(|g| {
            json!({"gateway": gws[g].to_string(), "closed": stat(&mut closed[g]), "refused": stat(&mut refused[g])})
        })
        .collect();
    println!(
        "{}",
        json!({"devices": n, "command": stat(&mut command), "gateways": per_gw, "all": all})
    );
    Ok(())
}
