//! The whitelist.txt appserver of the nginx client-certificate walkthrough, ported to Rust, for those who keep the allowlist check in their
//! app behind a gateway (mtlsgate or nginx) that forwards `SSL-Client` (the subject DN,
//! RFC 2253) and `SSL-Client-Verify`.
//!
//! Unlike the original Flask app, a refused device gets 403 (not 200), and the DN is
//! parsed by RFC 2253 rules (escaped commas, `+` multi-valued RDNs, hex escapes), so an
//! unusual subject is a clear 400 instead of a 500.
//!
//!     cargo run --example appserver -- --listen 127.0.0.1:8000 --whitelist whitelist.txt
//!
//! The whitelist is re-read on each request: one device ID per line, `#` comments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;

struct Config {
    whitelist: PathBuf,
}

/// Splits an RFC 2253 DN into (attribute, value) pairs, unescaping values.
/// Returns `None` when the string is not a well-formed DN.
fn parse_dn(dn: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = dn.chars().peekable();
    loop {
        let mut attr = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            attr.push(c);
        }
        let attr = attr.trim().to_string();
        if attr.is_empty()
            || !attr
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return None;
        }
        let mut raw: Vec<u8> = Vec::new();
        let mut ended = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let n = chars.next()?;
                    if n.is_ascii_hexdigit() {
                        let m = chars.next()?;
                        let byte = u8::from_str_radix(&format!("{n}{m}"), 16).ok()?;
                        raw.push(byte);
                    } else {
                        let mut b = [0u8; 4];
                        raw.extend_from_slice(n.encode_utf8(&mut b).as_bytes());
                    }
                }
                ',' | '+' => {
                    ended = true;
                    break;
                }
                _ => {
                    let mut b = [0u8; 4];
                    raw.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        out.push((attr, String::from_utf8(raw).ok()?));
        if !ended {
            return Some(out);
        }
    }
}

fn read_whitelist(path: &PathBuf) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

async fn check(State(cfg): State<Arc<Config>>, headers: HeaderMap) -> (StatusCode, String) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if header("ssl-client-verify") != Some("SUCCESS") {
        return (
            StatusCode::FORBIDDEN,
            "Access Denied: the client certificate was not verified (SSL-Client-Verify is not SUCCESS)\n".into(),
        );
    }
    let Some(dn) = header("ssl-client") else {
        return (
            StatusCode::BAD_REQUEST,
            "No SSL-Client header: is the gateway forwarding identity?\n".into(),
        );
    };
    let Some(cn) = parse_dn(dn).and_then(|rdns| {
        rdns.into_iter()
            .find(|(a, _)| a.eq_ignore_ascii_case("CN"))
            .map(|(_, v)| v)
    }) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("Cannot find a device ID (CN) in the subject `{dn}`\n"),
        );
    };
    let list = match read_whitelist(&cfg.whitelist) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("appserver: cannot read {}: {e}", cfg.whitelist.display());
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The whitelist cannot be read\n".into(),
            );
        }
    };
    if list.iter().any(|id| id.eq_ignore_ascii_case(&cn)) {
        (StatusCode::OK, "Access Granted!\n".into())
    } else {
        (
            StatusCode::FORBIDDEN,
            format!("Access Denied: device {cn} is not on the whitelist\n"),
        )
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:8000".parse()?;
    let mut whitelist = PathBuf::from("whitelist.txt");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs ADDR")?.parse()?,
            "--whitelist" => whitelist = args.next().ok_or("--whitelist needs FILE")?.into(),
            other => {
                return Err(
                    format!("unknown argument {other}; use --listen ADDR --whitelist FILE").into(),
                )
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("appserver listening on http://{}", listener.local_addr()?);
    let app = Router::new()
        .fallback(check)
        .with_state(Arc::new(Config { whitelist }));
    axum::serve(listener, app).await?;
    Ok(())
}
