//! Records as the pages show them: times as text, a device as a table row, a pending
//! device's key fingerprint, CSV cells.

use mtlsgate_authority::{AuditEntry, CertRecord, Device, DeviceStatus};
use time::OffsetDateTime;

/// `2026-12-05 09:10 UTC`, or `-`.
pub(crate) fn when(t: Option<i64>) -> String {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|| "-".into())
}

/// How far `t` is from `now`: `in 3 h`, `5 d ago`.
pub(crate) fn relative(t: i64, now: i64) -> String {
    let d = t - now;
    let a = d.unsigned_abs();
    let amount = if a < 120 {
        format!("{a} s")
    } else if a < 7200 {
        format!("{} min", a / 60)
    } else if a < 172_800 {
        format!("{} h", a / 3600)
    } else {
        format!("{} d", a / 86_400)
    };
    if d >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The SHA-256 of a pending device's public key (its CSR's SubjectPublicKeyInfo), hex,
/// as `mtlsgate agent status` prints it on the device.
pub(crate) fn key_fingerprint(d: &Device) -> String {
    d.pending_csr
        .as_deref()
        .and_then(|pem| mtlsgate_pki::device::check_device_csr(pem.as_bytes()).ok())
        .map(|csr| mtlsgate_pki::verify::fingerprint_sha256(&csr.spki_der))
        .unwrap_or_else(|| "-".into())
}

/// A device as a row of the devices list.
pub(crate) struct Row {
    pub id: String,
    pub status: &'static str,
    pub tags: String,
    pub last_seen: String,
    pub expires: String,
    /// The expiry against the renewal time (the CSS class `exp-…`): `ok` (renewal not
    /// due yet), `due` (past the renewal time, not expired: the agent should have
    /// renewed), `expired`, or `none` (no current certificate).
    pub expiry: &'static str,
    pub serial: String,
    pub agent: String,
    pub addr: String,
}

/// Where a certificate ending at `not_after`, of `lifetime` seconds, stands at `now`
/// against its renewal time: the agent renews at two thirds of the lifetime, so a
/// certificate with less than a third left is overdue for renewal.
pub(crate) fn expiry_state(not_after: Option<i64>, lifetime: i64, now: i64) -> &'static str {
    match not_after {
        None => "none",
        Some(t) if t <= now => "expired",
        Some(t) if t - now < lifetime / 3 => "due",
        Some(_) => "ok",
    }
}

impl Row {
    /// `lifetime`: the seconds the device's certificates are issued for (the authority's
    /// policy for this device), which places its renewal time.
    pub(crate) fn of(d: &Device, now: i64, lifetime: i64) -> Row {
        let expired =
            d.status == DeviceStatus::Active && d.cert_not_after.is_some_and(|t| t <= now);
        Row {
            expiry: expiry_state(d.cert_not_after, lifetime, now),
            serial: d.cert_serial.clone().unwrap_or_else(|| "-".into()),
            id: d.id.clone(),
            status: if expired {
                "expired"
            } else {
                d.status.as_str()
            },
            tags: d.tags.join(", "),
            last_seen: d
                .last_seen
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "never".into()),
            expires: d
                .cert_not_after
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".into()),
            agent: d.agent_version.clone().unwrap_or_else(|| "-".into()),
            addr: d.last_addr.clone().unwrap_or_else(|| "-".into()),
        }
    }
}

/// An audit record as a row.
pub(crate) struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub device: String,
    pub detail: String,
}

impl AuditRow {
    pub(crate) fn of(a: &AuditEntry) -> AuditRow {
        AuditRow {
            at: when(Some(a.at)),
            actor: a.actor.clone(),
            action: a.action.clone(),
            device: a.device_id.clone().unwrap_or_default(),
            detail: [a.serial.as_deref(), a.detail.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A certificate as a row of the device page.
pub(crate) struct CertRow {
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub revoked: String,
}

impl CertRow {
    pub(crate) fn of(c: &CertRecord) -> CertRow {
        CertRow {
            serial: c.serial.clone(),
            not_before: when(Some(c.not_before)),
            not_after: when(Some(c.not_after)),
            revoked: match (c.revoked_at, &c.revocation_reason) {
                (Some(t), Some(r)) => format!("{} ({r})", when(Some(t))),
                (Some(t), None) => when(Some(t)),
                _ => "-".into(),
            },
        }
    }
}

/// The CSV header of the devices export.
pub(crate) const CSV_HEADER: &str =
    "id,status,tags,first_seen,last_seen,last_addr,agent_version,cert_serial,cert_not_after\r\n";

/// One CSV cell (RFC 4180): quoted when it holds a comma, quote or line break; a cell
/// a spreadsheet would take for a formula (`= + - @`, tab, CR) gets a leading `'`.
pub(crate) fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A device as a CSV line (times in unix seconds, as `devices list --json` has them;
/// tags separated by `;`).
pub(crate) fn csv_line(d: &Device) -> String {
    let num = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let cells = [
        d.id.clone(),
        d.status.as_str().to_string(),
        d.tags.join(";"),
        d.first_seen.to_string(),
        num(d.last_seen),
        d.last_addr.clone().unwrap_or_default(),
        d.agent_version.clone().unwrap_or_default(),
        d.cert_serial.clone().unwrap_or_default(),
        num(d.cert_not_after),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
    }

    #[test]
    fn expiry_is_placed_against_the_renewal_time() {
        let day = 86_400;
        // A 24 h certificate is renewed at 16 h: with 9 h left it is not due, with 7 h left
        // it is overdue.
        assert_eq!(expiry_state(Some(9 * 3600), day, 0), "ok");
        assert_eq!(expiry_state(Some(7 * 3600), day, 0), "due");
        assert_eq!(expiry_state(Some(0), day, 0), "expired");
        assert_eq!(expiry_state(Some(-5), day, 0), "expired");
        assert_eq!(expiry_state(None, day, 0), "none");
        // The same 7 h left on a 90-day certificate is long overdue; 40 d left is not.
        assert_eq!(expiry_state(Some(40 * day), 90 * day, 0), "ok");
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(100, 100), "in 0 s");
        assert_eq!(relative(0, 7200), "2 h ago");
        assert_eq!(relative(3 * 86_400, 0), "in 3 d");
    }
}
