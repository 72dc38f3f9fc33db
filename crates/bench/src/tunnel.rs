//! The TCP tunnel figures' helpers: an echo backend, and a client that opens mTLS
//! connections as fast as it can.
//!
//! `tls-connect` runs `--concurrency` tasks; each opens a TCP connection, completes a full
//! TLS 1.3 handshake presenting the client certificate (resumption off), sends one byte
//! and reads it back (so the tunnel has reached its backend), and closes; then starts
//! over, until `--seconds` are up. It prints one JSON line: connections completed within
//! the time, failures, and the rate. Like oha's `--insecure` in the HTTP figures, it does
//! not check the *server's* certificate, so that the load generator's one core is not the
//! limit; the servers still verify the client fully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::Error;

/// Echoes whatever each connection sends, until it closes.
pub async fn echo(listen: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("echo listening on {}", listener.local_addr()?);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                eprintln!("echo: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut tcp = tcp;
            let mut buf = [0u8; 2048];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tcp.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Accepts any server certificate (the load generator's shortcut; see the module doc).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn one(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &ServerName<'static>,
) -> Result<(), Error> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector.connect(name.clone(), tcp).await?;
    tls.write_all(b"x").await?;
    tls.flush().await?;
    let mut b = [0u8; 1];
    if tls.read(&mut b).await? != 1 {
        return Err("closed before echoing".into());
    }
    Ok(())
}

pub async fn tls_connect(
    addr: SocketAddr,
    (cert, key): (&Path, &Path),
    concurrency: usize,
    seconds: Duration,
    name: String,
) -> Result<(), Error> {
    let (chain, key) = crate::client_identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)?;
    cfg.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from(name)?;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let end = start + seconds;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (connector, name) = (connector.clone(), name.clone());
        let (ok, failed, first_error) = (ok.clone(), failed.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = tokio::time::timeout(Duration::from_secs(10), one(&connector, addr, &name))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                // Only what completed within the time counts.
                if Instant::now() > end {
                    break;
                }
                match r {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert_with(|| e.to_string());
                        }
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = seconds.as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    let error = first_error.lock().ok().and_then(|f| f.clone());
    println!(
        "{{\"ok\":{ok},\"failed\":{},\"seconds\":{secs},\"per_s\":{},\"first_error\":{}}}",
        failed.load(Ordering::Relaxed),
        ok as f64 / secs,
        json_string(error.as_deref()),
    );
    Ok(())
}

/// A JSON string (or null) for a short message.
pub fn json_string(s: Option<&str>) -> String {
    match s {
        None => "null".into(),
        Some(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}
