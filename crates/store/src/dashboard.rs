//! What the fleet dashboard (crates/dashboard) keeps and reads: one-time login links and
//! operators' sessions (each by the SHA-256 hex of its secret), the fleet's counts for the
//! overview, the newest audit records, and one page of the devices list (filtered, sorted,
//! `LIMIT`/`OFFSET`).

use crate::model::DeviceRow;
use crate::{Audit, AuditEntry, Device, DeviceStatus, Inventory, Result};

/// Opens `session` for `operator` inside the transaction `tx` (either back end), first
/// removing the sessions that expired by `now`: what every way of signing in ends with.
macro_rules! open_session {
    ($tx:ident, $operator:expr, $session:expr, $now:expr) => {{
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (hash, operator, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&$session.hash)
        .bind($operator)
        .bind(&$session.csrf)
        .bind($session.created_at)
        .bind($session.expires_at)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// An operator's dashboard session.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// The operator's name (as `admin login-link --user` gave it).
    pub operator: String,
    /// The session's form token: every state-changing form carries it.
    pub csrf: String,
    pub expires_at: i64,
}

crate::debug_hiding!(DashboardSession { operator, expires_at } hiding { csrf });

/// A session to create (its cookie's hash, never the cookie).
pub struct NewSession {
    pub hash: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The column the devices list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSort {
    Id,
    Status,
    FirstSeen,
    LastSeen,
    Expires,
}

impl DeviceSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            DeviceSort::Id => "id",
            DeviceSort::Status => "status",
            DeviceSort::FirstSeen => "first_seen",
            DeviceSort::LastSeen => "last_seen",
            DeviceSort::Expires => "cert_not_after",
        }
    }
}

/// Which devices, in which order, which page.
#[derive(Debug, Clone)]
pub struct DeviceQuery {
    pub status: Option<DeviceStatus>,
    /// Part of the device ID (lower-case).
    pub search: Option<String>,
    /// Devices carrying this tag.
    pub tag: Option<String>,
    pub sort: DeviceSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Default)]
pub struct FleetCounts {
    /// Devices per status (every status, zero included), in [`DeviceStatus::ALL`] order.
    pub by_status: Vec<(DeviceStatus, i64)>,
    /// Active devices whose certificate expires within 24 hours / 7 days (not yet expired).
    pub expiring_day: i64,
    pub expiring_week: i64,
    /// Active devices whose certificate has expired.
    pub expired: i64,
    /// Active devices not seen since the given time (or never).
    pub not_seen: i64,
}

/// `s` for a `LIKE … ESCAPE '\'` pattern, matching itself only.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Inventory {
    // ---- dashboard: login links and sessions ----

    /// Stores a login link for `operator` (its hash), and writes `audit`.
    pub async fn insert_login_link(
        &self,
        hash: &str,
        operator: &str,
        created_at: i64,
        expires_at: i64,
        audit: &Audit,
    ) -> Result<()> {
        transaction!(self, |tx, _pg| {
            sqlx::query(
                "INSERT INTO dashboard_links (hash, operator, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash)
            .bind(operator)
            .bind(created_at)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit);
        });
        Ok(())
    }

    /// Uses the login link `link_hash` (once: it must be unused and unexpired at `now`)
    /// and opens `session` for its operator, in one transaction, writing an audit record
    /// (action `dashboard-login`, actor `dashboard:NAME`). The operator's name, or `None`
    /// when the link is unknown, used or expired (then nothing changes).
    pub async fn login_with_link(
        &self,
        link_hash: &str,
        now: i64,
        session: &NewSession,
    ) -> Result<Option<String>> {
        let operator = transaction!(self, |tx, _pg| {
            let operator: Option<String> = sqlx::query_scalar(
                "UPDATE dashboard_links SET used_at = $2
                 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING operator",
            )
            .bind(link_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(operator) = operator else {
                return Ok(None);
            };
            open_session!(tx, &operator, session, now);
            let audit = Audit::new(now, &format!("dashboard:{operator}"), "dashboard-login");
            write_audit!(tx, &audit);
            operator
        });
        Ok(Some(operator))
    }

    /// The session whose cookie hashes to `hash`, unless it expired by `now`.
    pub async fn dashboard_session(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<DashboardSession>> {
        let row: Option<(String, String, i64)> = on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT operator, csrf, expires_at FROM dashboard_sessions WHERE hash = $1 AND expires_at > $2"
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(p)
        .await?
        });
        Ok(row.map(|(operator, csrf, expires_at)| DashboardSession {
            operator,
            csrf,
            expires_at,
        }))
    }

    /// Ends a session (logout).
    pub async fn delete_dashboard_session(&self, hash: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "DELETE FROM dashboard_sessions WHERE hash = $1"
        )
        .bind(hash)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    // ---- dashboard: what the pages show ----

    /// Devices per status, expiring and unseen active devices, at `now`; `unseen_since`:
    /// the time before which an active device counts as not seen.
    pub async fn fleet_counts(&self, now: i64, unseen_since: i64) -> Result<FleetCounts> {
        let rows: Vec<(String, i64)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT status, COUNT(*) FROM devices GROUP BY status"
        )
        .fetch_all(p)
        .await?);
        let expiring = crate::hot::ACTIVE_EXPIRING;
        let expiring_day: i64 = on_pool!(self, |p| sqlx::query_scalar(expiring)
            .bind(now)
            .bind(now + 86_400)
            .fetch_one(p)
            .await?);
        let expiring_week: i64 = on_pool!(self, |p| sqlx::query_scalar(expiring)
            .bind(now)
            .bind(now + 7 * 86_400)
            .fetch_one(p)
            .await?);
        let expired: i64 = on_pool!(self, |p| sqlx::query_scalar(crate::hot::ACTIVE_EXPIRED)
            .bind(now)
            .fetch_one(p)
            .await?);
        let not_seen: i64 = on_pool!(self, |p| sqlx::query_scalar(crate::hot::ACTIVE_UNSEEN)
            .bind(unseen_since)
            .fetch_one(p)
            .await?);
        let by_status = DeviceStatus::ALL
            .into_iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |(_, n)| *n);
                (s, n)
            })
            .collect();
        Ok(FleetCounts {
            by_status,
            expiring_day,
            expiring_week,
            expired,
            not_seen,
        })
    }

    /// How many devices wait for approval (the badge on every page).
    pub async fn pending_count(&self) -> Result<i64> {
        let n: i64 = on_pool!(self, |p| sqlx::query_scalar(crate::hot::PENDING_COUNT)
            .fetch_one(p)
            .await?);
        Ok(n)
    }

    /// The newest `limit` audit records of the whole inventory, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditEntry> = on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, at, actor, action, device_id, serial, detail FROM audit ORDER BY id DESC LIMIT $1"
        )
        .bind(limit)
        .fetch_all(p)
        .await?
        });
        Ok(rows)
    }

    /// One page of the devices `q` selects, in its order (NULLs last, then by ID), and how
    /// many devices it selects in all.
    pub async fn device_page(&self, q: &DeviceQuery) -> Result<(Vec<Device>, i64)> {
        let filter = crate::hot::DASHBOARD_FILTER;
        let sql = crate::hot::dashboard_page(q.sort.column(), q.descending);
        let count_sql = format!("SELECT COUNT(*) FROM devices {filter}");
        let status = q.status.map(|s| s.as_str().to_string());
        let search = q
            .search
            .as_ref()
            .map(|s| format!("%{}%", like_escape(&s.to_ascii_lowercase())));
        // Tags are stored as a JSON array of strings: `"tag"` matches one whole tag.
        let tag = q
            .tag
            .as_ref()
            .map(|t| format!("%{}%", like_escape(&format!("\"{t}\""))));
        let rows: Vec<DeviceRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&status)
            .bind(&search)
            .bind(&tag)
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(p)
            .await?);
        let total: i64 = on_pool!(self, |p| sqlx::query_scalar(&count_sql)
            .bind(&status)
            .bind(&search)
            .bind(&tag)
            .fetch_one(p)
            .await?);
        let devices = rows
            .into_iter()
            .map(DeviceRow::into_device)
            .collect::<Result<Vec<_>>>()?;
        Ok((devices, total))
    }
}

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn like_patterns_match_themselves_only() {
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
        assert_eq!(like_escape("dev1"), "dev1");
    }
}
