//! Prometheus counters and gauges: plain atomics, updated on the hot path without locks,
//! rendered as text exposition format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use mtlsgate_pki::verify::Failure;

use crate::responses::Refusal;

/// Every counter the gateway keeps.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicI64,
    pub(crate) handshakes_full: AtomicU64,
    pub(crate) handshakes_resumed: AtomicU64,
    pub(crate) handshake_errors: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    /// TCP tunnels open now, and connections refused for the connection limit.
    pub(crate) tunnels_active: AtomicI64,
    pub(crate) tunnels_refused: AtomicU64,
    /// Plain HTTP sent to the TLS port.
    pub(crate) plain_http: AtomicU64,
    /// Connections closed because a request head did not arrive in time.
    pub(crate) header_timeouts: AtomicU64,
    /// Client certificates refused, by [`Failure::slot`].
    verify_failures: [AtomicU64; Failure::LABELS.len()],
    /// Refused or failed requests, by [`Refusal::slot`].
    refusals: [AtomicU64; Refusal::LABELS.len()],
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    /// Unix time at which the server certificate expires.
    pub(crate) server_cert_not_after: AtomicI64,
    /// Unix time at which the first client CA certificate expires (0: none).
    pub(crate) client_ca_not_after: AtomicI64,
    pub(crate) allowlist_entries: AtomicU64,
}

impl Metrics {
    pub(crate) fn verify_failure(&self, f: &Failure) {
        self.verify_failures[f.slot()].fetch_add(1, Relaxed);
    }

    pub(crate) fn no_certificate(&self) {
        self.verify_failure(&Failure::NoCertificate);
    }

    pub(crate) fn refusal(&self, r: &Refusal) {
        self.refusals[r.slot()].fetch_add(1, Relaxed);
    }

    pub(crate) fn response(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[i].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self, now_unix: i64) -> String {
        let mut o = String::with_capacity(4096);
        let c = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        c(
            &mut o,
            "mtlsgate_connections_total",
            "TCP connections accepted.",
            self.connections_total.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP mtlsgate_connections_active Connections open now.\n# TYPE mtlsgate_connections_active gauge\nmtlsgate_connections_active {}",
            self.connections_active.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP mtlsgate_handshakes_total Completed TLS handshakes.\n# TYPE mtlsgate_handshakes_total counter");
        let _ = writeln!(
            o,
            "mtlsgate_handshakes_total{{kind=\"full\"}} {}",
            self.handshakes_full.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "mtlsgate_handshakes_total{{kind=\"resumed\"}} {}",
            self.handshakes_resumed.load(Relaxed)
        );
        c(
            &mut o,
            "mtlsgate_handshake_errors_total",
            "TLS handshakes that failed.",
            self.handshake_errors.load(Relaxed),
        );
        c(
            &mut o,
            "mtlsgate_handshake_timeouts_total",
            "TLS handshakes that timed out.",
            self.handshake_timeouts.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP mtlsgate_tunnels_active TCP tunnels open now.\n# TYPE mtlsgate_tunnels_active gauge\nmtlsgate_tunnels_active {}",
            self.tunnels_active.load(Relaxed)
        );
        c(
            &mut o,
            "mtlsgate_tunnels_refused_total",
            "Tunnel connections refused because the connection limit was reached.",
            self.tunnels_refused.load(Relaxed),
        );
        c(
            &mut o,
            "mtlsgate_plain_http_total",
            "Plain HTTP requests sent to the TLS port (answered with 400).",
            self.plain_http.load(Relaxed),
        );
        c(
            &mut o,
            "mtlsgate_header_timeouts_total",
            "Connections closed because a request head did not arrive within header_read (or the first request within first_request of the handshake).",
            self.header_timeouts.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP mtlsgate_verify_failures_total Client certificates refused, by reason.\n# TYPE mtlsgate_verify_failures_total counter");
        for (i, l) in Failure::LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "mtlsgate_verify_failures_total{{reason=\"{l}\"}} {}",
                self.verify_failures[i].load(Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP mtlsgate_refusals_total Requests refused or failed by the gateway, by reason.\n# TYPE mtlsgate_refusals_total counter");
        for (i, l) in Refusal::LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "mtlsgate_refusals_total{{reason=\"{l}\"}} {}",
                self.refusals[i].load(Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP mtlsgate_responses_total Responses sent, by status class.\n# TYPE mtlsgate_responses_total counter");
        for (i, r) in self.responses.iter().enumerate() {
            let _ = writeln!(
                o,
                "mtlsgate_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                r.load(Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP mtlsgate_reloads_total Configuration reloads.\n# TYPE mtlsgate_reloads_total counter");
        let _ = writeln!(
            o,
            "mtlsgate_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "mtlsgate_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Relaxed)
        );
        let days = |t: i64| (t - now_unix) as f64 / 86400.0;
        let _ = writeln!(
            o,
            "# HELP mtlsgate_server_certificate_days_remaining Days until the server certificate expires.\n# TYPE mtlsgate_server_certificate_days_remaining gauge\nmtlsgate_server_certificate_days_remaining {:.3}",
            days(self.server_cert_not_after.load(Relaxed))
        );
        let ca = self.client_ca_not_after.load(Relaxed);
        if ca != 0 {
            let _ = writeln!(
                o,
                "# HELP mtlsgate_client_ca_days_remaining Days until the first client CA certificate expires.\n# TYPE mtlsgate_client_ca_days_remaining gauge\nmtlsgate_client_ca_days_remaining {:.3}",
                days(ca)
            );
        }
        let _ = writeln!(
            o,
            "# HELP mtlsgate_allowlist_entries Entries in all allowlists.\n# TYPE mtlsgate_allowlist_entries gauge\nmtlsgate_allowlist_entries {}",
            self.allowlist_entries.load(Relaxed)
        );
        o
    }
}
