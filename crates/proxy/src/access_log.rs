//! The access log: one line per request on standard output, as text (`… device=ID
//! verify="…" "METHOD TARGET" route=… status=… bytes=… latency=…ms`) or JSON. In the text
//! form every value a client controls (the device ID from its certificate, the request
//! target) is escaped with [`mtlsgate_pki::printable::printable`], so no client can forge a line.

use std::io::Write;
use std::time::Instant;

use crate::client_auth::Verdict;
use crate::config::AccessLog;
use crate::conn::Conn;
use mtlsgate_pki::printable::printable;

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

/// Writes one access-log line in `mode`.
pub(crate) fn write(mode: AccessLog, l: &LogLine<'_>) {
    if mode == AccessLog::Off {
        return;
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let identity = l.conn.identity();
    let verify = l.verdict.outcome.nginx_value();
    let ms = l.started.elapsed().as_secs_f64() * 1000.0;
    let line = match mode {
        AccessLog::Json => serde_json::json!({
            "time": now,
            "remote": l.conn.remote.to_string(),
            "device_id": identity.and_then(|i| i.device_id()).unwrap_or("-"),
            "verify": verify,
            "method": l.method.as_str(),
            "path": l.target,
            "route": l.route.unwrap_or(""),
            "status": l.status,
            "bytes": l.bytes,
            "latency_ms": (ms * 1000.0).round() / 1000.0,
            "tls": l.conn.tls_protocol,
            "resumed": l.conn.resumed,
        })
        .to_string(),
        _ => format!(
            "{now} {} device={} verify=\"{}\" \"{} {}\" route={} status={} bytes={} latency={ms:.3}ms",
            l.conn.remote,
            identity
                .map(|i| i.device_label())
                .unwrap_or(std::borrow::Cow::Borrowed("-")),
            printable(&verify),
            l.method,
            printable(l.target),
            l.route.map(printable).unwrap_or(std::borrow::Cow::Borrowed("-")),
            l.status,
            l.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
