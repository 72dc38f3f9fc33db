//! The access log: one line per request on standard output, as text (`… device=ID
//! verify="…" "METHOD TARGET" route=… status=… bytes=… latency=…ms`) or JSON. In the text
//! form every value a client controls (the device ID from its certificate, the request
//! target) is escaped as [`mtlsgate_pki::printable::printable`] escapes it, so no client can forge a line.
//!
//! Owns the log's output too: a line is formatted into a buffer reused by its thread (the
//! time from a string made once a second, the client's address and device ID from a text
//! made once a connection, kept in its `Conn`), then appended to the process's one output
//! buffer, which is written when it holds `access_log_buffer` bytes, by a flushing thread
//! at least every `access_log_flush`, and by [`flush_at_exit`] when the gateway stops — as
//! nginx's `access_log … buffer=32k flush=1s`. A crash loses at most the last interval's
//! lines; SIGTERM and a reload lose none. With `access_log_flush = 0` each line is written
//! at once.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client_auth::Verdict;
use crate::config::{AccessLog, GateConfig};
use crate::conn::Conn;
use crate::identity::VerifyOutcome;
use mtlsgate_pki::printable::extend_printable;

/// What one line says.
pub(crate) struct LogLine<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) verdict: &'a Verdict,
    pub(crate) method: &'a http::Method,
    /// The request target as the client sent it.
    pub(crate) target: &'a str,
    /// The prefix of the route that took the request, if any.
    pub(crate) route: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) bytes: Option<u64>,
    pub(crate) started: Instant,
}

/// Writes one access-log line as `cfg` says (format, flush interval, buffer size).
pub(crate) fn write(cfg: &GateConfig, l: &LogLine<'_>) {
    if cfg.access_log == AccessLog::Off {
        return;
    }
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        line.clear();
        format_line(&mut line, cfg.access_log, l, SystemTime::now());
        OUTPUT.push(&line, cfg.access_log_flush, cfg.access_log_buffer);
    });
}

/// Writes what is buffered, and every later line at once: called when the gateway stops
/// (after its connections drained), so that no line is lost to the process's exit.
pub(crate) fn flush_at_exit() {
    OUTPUT.closing.store(true, Relaxed);
    OUTPUT.flush();
}

thread_local! {
    /// The line being formatted, reused by the thread's next line.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// The time to the second (`2026-12-05T08:27:28`), made again when the second changes.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

static OUTPUT: Output = Output {
    buf: Mutex::new(Vec::new()),
    flush_ms: AtomicU64::new(1000),
    flusher: Once::new(),
    closing: AtomicBool::new(false),
};

/// The process's buffered standard output for access-log lines.
struct Output {
    buf: Mutex<Vec<u8>>,
    /// The flushing thread's interval, as the last line's configuration said.
    flush_ms: AtomicU64,
    flusher: Once,
    /// The gateway stopped: lines are written at once.
    closing: AtomicBool,
}

impl Output {
    fn push(&'static self, line: &[u8], flush: Duration, size: usize) {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if flush.is_zero() || self.closing.load(Relaxed) {
            // Buffered lines first, so lines keep their order when the setting changes.
            buf.extend_from_slice(line);
            write_out(&mut buf);
            return;
        }
        if buf.capacity() == 0 {
            buf.reserve(size);
        }
        buf.extend_from_slice(line);
        if buf.len() >= size {
            write_out(&mut buf);
        }
        drop(buf);
        let ms = flush.as_millis().max(1) as u64;
        if self.flush_ms.load(Relaxed) != ms {
            self.flush_ms.store(ms, Relaxed);
        }
        self.flusher.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("access-log-flush".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(self.flush_ms.load(Relaxed)));
                    self.flush();
                });
            if let Err(e) = spawned {
                // Without the thread, lines wait for a full buffer or the gateway's stop.
                tracing::warn!("access log: cannot start its flushing thread: {e}");
            }
        });
    }

    fn flush(&self) {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if !buf.is_empty() {
            write_out(&mut buf);
        }
    }
}

/// Writes `buf` (whole lines) to standard output and empties it. A failed write drops the
/// lines: the requests go on.
fn write_out(buf: &mut Vec<u8>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf);
    let _ = out.flush();
    buf.clear();
}

/// Formats one line (with its newline) into `out`.
fn format_line(out: &mut Vec<u8>, mode: AccessLog, l: &LogLine<'_>, now: SystemTime) {
    let identity = l.conn.identity();
    let elapsed = l.started.elapsed();
    match mode {
        // The keys in the order serde_json writes a map's: sorted.
        AccessLog::Json => {
            let ms = elapsed.as_secs_f64() * 1000.0;
            let device = identity.and_then(|i| i.device_id()).unwrap_or("-");
            out.extend_from_slice(b"{\"bytes\":");
            match l.bytes {
                Some(b) => decimal(out, b),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"device_id\":");
            json_str(out, device);
            out.extend_from_slice(b",\"latency_ms\":");
            let _ = serde_json::to_writer(&mut *out, &((ms * 1000.0).round() / 1000.0));
            out.extend_from_slice(b",\"method\":");
            json_str(out, l.method.as_str());
            out.extend_from_slice(b",\"path\":");
            json_str(out, l.target);
            out.extend_from_slice(b",\"remote\":\"");
            socket_addr(out, l.conn.remote);
            out.extend_from_slice(b"\",\"resumed\":");
            out.extend_from_slice(if l.conn.resumed { b"true" } else { b"false" });
            out.extend_from_slice(b",\"route\":");
            json_str(out, l.route.unwrap_or(""));
            out.extend_from_slice(b",\"status\":");
            decimal(out, u64::from(l.status));
            out.extend_from_slice(b",\"time\":\"");
            time_rfc3339(out, now);
            out.extend_from_slice(b"\",\"tls\":");
            json_str(out, l.conn.tls_protocol);
            out.extend_from_slice(b",\"verify\":\"");
            verify(out, &l.verdict.outcome, false);
            out.extend_from_slice(b"\"}\n");
        }
        // Written piece by piece, without `core::fmt`: at tens of thousands of requests a
        // second, formatting with `write!` was most of the log's cost.
        _ => {
            time_rfc3339(out, now);
            out.extend_from_slice(l.conn.log_prefix.get_or_init(|| {
                let mut p = Vec::with_capacity(64);
                p.push(b' ');
                socket_addr(&mut p, l.conn.remote);
                p.extend_from_slice(b" device=");
                // As `Identity::device_label` writes it, in one pass into the text.
                match identity.and_then(|i| i.device_id()) {
                    Some(d) => extend_printable(&mut p, d.as_bytes()),
                    None => p.push(b'-'),
                }
                p.extend_from_slice(b" verify=\"");
                p.into_boxed_slice()
            }));
            verify(out, &l.verdict.outcome, true);
            out.extend_from_slice(b"\" \"");
            out.extend_from_slice(l.method.as_str().as_bytes());
            out.push(b' ');
            extend_printable(out, l.target.as_bytes());
            out.extend_from_slice(b"\" route=");
            match l.route {
                Some(r) => extend_printable(out, r.as_bytes()),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" status=");
            decimal(out, u64::from(l.status));
            out.extend_from_slice(b" bytes=");
            match l.bytes {
                Some(b) => decimal(out, b),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" latency=");
            millis(out, elapsed);
            out.extend_from_slice(b"ms\n");
        }
    }
}

/// `n` in decimal.
fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `addr` as its `Display` writes it (`1.2.3.4:5`, `[::1]:5`); IPv4 without `core::fmt`.
fn socket_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(*octet));
            }
            out.push(b':');
            decimal(out, u64::from(a.port()));
        }
        std::net::SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// `d` in milliseconds with three decimals (`{:.3}` of the same in milliseconds, rounded
/// to the microsecond).
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    decimal(out, u64::try_from(micros / 1000).unwrap_or(u64::MAX));
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// nginx's `$ssl_client_verify` (`SUCCESS`, `NONE`, `FAILED:reason`), escaped for the text
/// form; the reasons are OpenSSL's fixed wording, which JSON needs no escape for.
fn verify(out: &mut Vec<u8>, v: &VerifyOutcome, text: bool) {
    match v {
        VerifyOutcome::Success => out.extend_from_slice(b"SUCCESS"),
        VerifyOutcome::None => out.extend_from_slice(b"NONE"),
        VerifyOutcome::Failed(f) => {
            out.extend_from_slice(b"FAILED:");
            let reason = f.openssl_reason();
            if text {
                extend_printable(out, reason.as_bytes());
            } else {
                let mut quoted = Vec::new();
                let _ = serde_json::to_writer(&mut quoted, reason);
                // Without its quotes: it continues the string opened before `FAILED:`.
                out.extend_from_slice(&quoted[1..quoted.len() - 1]);
            }
        }
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `now` as RFC 3339 in UTC, as the `time` crate's `Rfc3339` writes it (nanoseconds with
/// trailing zeros cut, none when zero); the part to the second is made once a second.
fn time_rfc3339(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            let t = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            let (h, mi, s) = (t.hour(), t.minute(), t.second());
            let mut b = [0u8; 19];
            let _ = write!(&mut b[..], "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            *c = (secs, b);
        }
        out.extend_from_slice(&c.1);
    });
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let mut digits = [0u8; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = digits.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_addresses_and_latencies_are_written_as_core_fmt_writes_them() {
        for n in [0u64, 7, 10, 200, 65_535, 1_234_567, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(String::from_utf8_lossy(&out), n.to_string());
        }
        for a in [
            "127.0.0.1:443",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.40:5060",
            "[::1]:8443",
            "[2001:db8::7]:1",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            let mut out = Vec::new();
            socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8_lossy(&out), addr.to_string());
        }
        // Away from a rounding tie, the same digits as `{:.3}` of the milliseconds.
        for nanos in [
            0u64,
            1_000,
            999_000,
            1_000_000,
            1_234_567,
            12_345_678_900,
            2_000_400,
        ] {
            let d = Duration::from_nanos(nanos);
            let mut out = Vec::new();
            millis(&mut out, d);
            let ms = d.as_secs_f64() * 1000.0;
            assert_eq!(
                String::from_utf8_lossy(&out),
                format!("{ms:.3}"),
                "{nanos} ns"
            );
        }
    }

    #[test]
    fn the_time_is_written_as_the_time_crate_writes_rfc3339() {
        let rfc = time::format_description::well_known::Rfc3339;
        for (secs, nanos) in [
            (0u64, 0u32),
            (1_764_921_600, 0),
            (1_764_921_600, 5),
            (1_764_921_600, 120_000_000),
            (1_764_921_601, 999_999_999),
            (1_799_999_999, 123_456_789),
            (4_102_444_799, 1_000),
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let mut out = Vec::new();
            time_rfc3339(&mut out, t);
            let expected = time::OffsetDateTime::from(t)
                .format(&rfc)
                .unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }
}
