//! `mqtt-pub`: MQTT 3.1.1 publishers through an mTLS tunnel, and a subscriber on the broker.
//!
//! A subscriber connects to the broker directly (`--broker`, plain TCP) and subscribes to
//! `bench/#`; then `--publishers` connections open through the tunnel (`--connect`, mTLS
//! with the client certificate), each sends CONNECT and waits for CONNACK; then all of them
//! publish QoS 0 messages (`bench/<n>`, `--payload` bytes) as fast as they can for
//! `--seconds`, one PUBLISH per write as a device would. The subscriber counts the PUBLISH
//! packets that reach it within that time. One JSON line: messages written, received in
//! the time, received in all (after a short drain), and the rates.
//!
//! Only what the benchmark needs of MQTT: CONNECT (clean session, no keep-alive),
//! CONNACK, SUBSCRIBE, SUBACK, PUBLISH at QoS 0, DISCONNECT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Error;

pub struct Options {
    pub connect: SocketAddr,
    pub broker: SocketAddr,
    pub publishers: usize,
    pub seconds: Duration,
    pub payload: usize,
    pub server_name: String,
}

/// MQTT's variable-length "remaining length".
fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&0u16.to_be_bytes()); // no keep-alive
    string(&mut body, client_id.as_bytes());
    packet(0x10, &body)
}

fn publish_packet(topic: &str, payload: usize) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    body.extend(std::iter::repeat_n(b'm', payload));
    packet(0x30, &body)
}

fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec(); // packet identifier
    string(&mut body, filter.as_bytes());
    body.push(0); // QoS 0
    packet(0x82, &body)
}

/// Reads one whole packet: (type nibble, body).
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<(u8, Vec<u8>), Error> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
        if shift > 21 {
            return Err("malformed remaining length".into());
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((first >> 4, body))
}

async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    client_id: &str,
) -> Result<(), Error> {
    s.write_all(&connect_packet(client_id)).await?;
    s.flush().await?;
    let (kind, body) = read_packet(s).await?;
    if kind != 2 || body.len() != 2 || body[1] != 0 {
        return Err(format!("CONNACK expected, got type {kind} {body:?}").into());
    }
    Ok(())
}

/// Counts PUBLISH packets as they arrive, split at `end`.
struct Counter {
    in_time: u64,
    total: u64,
}

/// Reads the subscriber's stream until `stop` (set after the drain), counting PUBLISHes.
async fn subscribe(
    mut s: TcpStream,
    start: Arc<AtomicBool>,
    end: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> Result<Counter, Error> {
    let mut c = Counter {
        in_time: 0,
        total: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf[have..]))
            .await
        {
            Err(_) => continue,
            Ok(r) => r?,
        };
        if n == 0 {
            return Err("the broker closed the subscriber's connection".into());
        }
        have += n;
        let now = Instant::now();
        let counting = start.load(Ordering::Relaxed);
        let before_end = end
            .lock()
            .ok()
            .and_then(|e| *e)
            .is_none_or(|end| now <= end);
        let mut pos = 0;
        let mut publishes = 0u64;
        loop {
            // The fixed header: type, then 1-4 bytes of remaining length.
            let mut len = 0usize;
            let mut i = pos + 1;
            let mut complete = false;
            while i < have && i < pos + 5 {
                let b = buf[i];
                len |= ((b & 0x7f) as usize) << (7 * (i - pos - 1));
                i += 1;
                if b & 0x80 == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete || have - i < len {
                break;
            }
            if buf[pos] >> 4 == 3 {
                publishes += 1;
            }
            pos = i + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            return Err("a packet larger than the subscriber's buffer".into());
        }
        if counting {
            c.total += publishes;
            if before_end {
                c.in_time += publishes;
            }
        }
    }
    Ok(c)
}

pub async fn run(o: Options, tls: rustls::ClientConfig) -> Result<(), Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(o.server_name.clone())?;
    let tag = std::process::id();

    // The subscriber, straight to the broker.
    let mut sub = TcpStream::connect(o.broker).await?;
    let _ = sub.set_nodelay(true);
    mqtt_connect(&mut sub, &format!("sub-{tag}")).await?;
    sub.write_all(&subscribe_packet("bench/#")).await?;
    let (kind, _) = read_packet(&mut sub).await?;
    if kind != 9 {
        return Err(format!("SUBACK expected, got type {kind}").into());
    }
    let start = Arc::new(AtomicBool::new(false));
    let end = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = tokio::spawn(subscribe(sub, start.clone(), end.clone(), stop.clone()));

    // The publishers, through the tunnel, connected in batches.
    let mut pubs = Vec::with_capacity(o.publishers);
    for first in (0..o.publishers).step_by(50) {
        let mut batch = Vec::new();
        for i in first..(first + 50).min(o.publishers) {
            let (connector, name) = (connector.clone(), name.clone());
            let addr = o.connect;
            batch.push(tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                let mut tls = connector.connect(name, tcp).await?;
                mqtt_connect(&mut tls, &format!("pub-{tag}-{i}")).await?;
                Ok::<_, Error>(tls)
            }));
        }
        for t in batch {
            pubs.push(t.await??);
        }
    }

    // Publish for the time given.
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + o.seconds;
    if let Ok(mut e) = end.lock() {
        *e = Some(deadline);
    }
    start.store(true, Ordering::Relaxed);
    let mut tasks = Vec::with_capacity(pubs.len());
    for (i, mut tls) in pubs.into_iter().enumerate() {
        let msg = publish_packet(&format!("bench/{i}"), o.payload);
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut result = Ok(());
            while Instant::now() < deadline {
                if let Err(e) = tls.write_all(&msg).await {
                    result = Err(e);
                    break;
                }
                n += 1;
                // One core runs every publisher: let the others (and the subscriber) in.
                if n.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            sent.fetch_add(n, Ordering::Relaxed);
            if result.is_ok() {
                let _ = tls.write_all(&[0xe0, 0x00]).await; // DISCONNECT
                let _ = tls.flush().await;
            }
            (tls, result)
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for t in tasks {
        let (tls, r) = t.await?;
        if let Err(e) = r {
            first_error.get_or_insert_with(|| e.to_string());
        }
        held.push(tls);
    }
    let sent = sent.load(Ordering::Relaxed);
    // Drain: what is still in flight arrives within a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = subscriber.await??;
    drop(held);
    let secs = o.seconds.as_secs_f64();
    println!(
        "{{\"publishers\":{},\"seconds\":{secs},\"payload\":{},\"sent\":{sent},\"received_in_time\":{},\"received_total\":{},\"sent_per_s\":{},\"received_per_s\":{},\"first_error\":{}}}",
        o.publishers,
        o.payload,
        counted.in_time,
        counted.total,
        sent as f64 / secs,
        counted.in_time as f64 / secs,
        crate::tunnel::json_string(first_error.as_deref()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_is_mqtts_varint() {
        let enc = |n| {
            let mut v = Vec::new();
            remaining_length(&mut v, n);
            v
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x80, 0x01]);
        assert_eq!(enc(16_383), vec![0xff, 0x7f]);
        assert_eq!(enc(16_384), vec![0x80, 0x80, 0x01]);
    }

    #[test]
    fn packets_are_well_formed() {
        let c = connect_packet("d1");
        assert_eq!(
            c,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'd', b'1']
        );
        let p = publish_packet("bench/1", 3);
        assert_eq!(p[0], 0x30);
        assert_eq!(p[1] as usize, p.len() - 2);
        assert_eq!(&p[2..4], &[0, 7]);
        assert_eq!(&p[11..], b"mmm");
        let s = subscribe_packet("bench/#");
        assert_eq!(
            s,
            [0x82, 12, 0, 1, 0, 7, b'b', b'e', b'n', b'c', b'h', b'/', b'#', 0]
        );
    }
}
