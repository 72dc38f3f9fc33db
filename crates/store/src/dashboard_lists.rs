//! What the dashboard's tokens and audit pages read and change: enrollment tokens newest
//! first (a page at a time), withdrawing an unused token, and the audit log filtered
//! (actor, device, action, time range) newest first, a page at a time by record ID (keyset:
//! a page starts below the last ID of the previous one, so a page costs the same deep in a
//! large log as at its top, and records written meanwhile never shift a page).

use crate::model::TokenRow;
use crate::paging::{Arg, Statement};
use crate::sql::TOKEN_COLUMNS;
use crate::{Audit, AuditEntry, Inventory, Result, Token};

/// Which audit records to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records of this actor exactly (`dashboard:alice`, `cli`, …).
    pub actor: Option<String>,
    /// Records about this device exactly.
    pub device: Option<String>,
    /// Records of this action exactly (`approve`, `tag`, …).
    pub action: Option<String>,
    /// Records at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Records before this time (unix seconds).
    pub until: Option<i64>,
}

/// The statement of one page of audit records matching `f`, newest first, below record
/// `before` (the last ID of the previous page).
fn audit_page_sql(f: &AuditFilter, before: Option<i64>, limit: i64) -> Statement {
    let mut args: Vec<Arg> = Vec::new();
    let mut wh: Vec<String> = Vec::new();
    let mut add = |args: &mut Vec<Arg>, cond: &str, a: Arg| {
        args.push(a);
        wh.push(cond.replace('?', &format!("${}", args.len())));
    };
    if let Some(b) = before {
        add(&mut args, "id < ?", Arg::Int(b));
    }
    if let Some(a) = &f.actor {
        add(&mut args, "actor = ?", Arg::Text(a.clone()));
    }
    if let Some(d) = &f.device {
        add(&mut args, "device_id = ?", Arg::Text(d.clone()));
    }
    if let Some(a) = &f.action {
        add(&mut args, "action = ?", Arg::Text(a.clone()));
    }
    if let Some(t) = f.since {
        add(&mut args, "at >= ?", Arg::Int(t));
    }
    if let Some(t) = f.until {
        add(&mut args, "at < ?", Arg::Int(t));
    }
    args.push(Arg::Int(limit));
    let n = args.len();
    let where_clause = if wh.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wh.join(" AND "))
    };
    Statement {
        sql: format!(
            "SELECT id, at, actor, action, device_id, serial, detail FROM audit{where_clause} ORDER BY id DESC LIMIT ${n}"
        ),
        args,
    }
}

impl Inventory {
    /// One page of enrollment tokens, newest first (`offset` rows in), and how many
    /// tokens the inventory holds.
    pub async fn tokens_page(&self, limit: i64, offset: i64) -> Result<(Vec<Token>, i64)> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, hash LIMIT $1 OFFSET $2"
        );
        let rows: Vec<TokenRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?);
        let total: i64 = on_pool!(self, |p| sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(p)
            .await?);
        let tokens = rows
            .into_iter()
            .map(TokenRow::into_token)
            .collect::<Result<Vec<_>>>()?;
        Ok((tokens, total))
    }

    /// Withdraws the unused, unexpired token `hash`: it expires at `now` (so a device that
    /// presents it is told it expired), and `audit` is written. Whether it was withdrawn
    /// (`false`: unknown, used or expired already; nothing changes).
    pub async fn withdraw_token(&self, hash: &str, now: i64, audit: &Audit) -> Result<bool> {
        let done = transaction!(self, |tx, _pg| {
            let n = sqlx::query(
                "UPDATE tokens SET expires_at = $2
                 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            write_audit!(tx, audit);
            true
        });
        Ok(done)
    }

    /// One page of the audit records `f` selects, newest first, below record `before`
    /// (`None`: from the newest); at most `limit` records.
    pub async fn audit_page(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let st = audit_page_sql(f, before, limit.clamp(1, 5_000));
        let rows: Vec<AuditEntry> =
            on_pool!(self, |p| bind_args!(sqlx::query_as(&st.sql), &st.args)
                .fetch_all(p)
                .await?);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_filters_number_their_placeholders_in_order() {
        let f = AuditFilter {
            actor: Some("dashboard:alice".into()),
            action: Some("tag".into()),
            since: Some(10),
            ..AuditFilter::default()
        };
        let st = audit_page_sql(&f, Some(99), 50);
        assert!(
            st.sql
                .contains("WHERE id < $1 AND actor = $2 AND action = $3 AND at >= $4"),
            "{}",
            st.sql
        );
        assert!(st.sql.ends_with("ORDER BY id DESC LIMIT $5"), "{}", st.sql);
        assert_eq!(st.args.len(), 5);
        let st = audit_page_sql(&AuditFilter::default(), None, 10);
        assert!(!st.sql.contains("WHERE"), "{}", st.sql);
    }
}
