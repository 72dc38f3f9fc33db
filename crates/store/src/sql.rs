//! Statements shared by several queries (the next revision, an audit record, a device
//! or certificate row) as macros over a transaction, and the column lists of the rows.

/// Takes the next revision inside transaction `$tx` (and, on PostgreSQL, queues the
/// notification sent when it commits). On PostgreSQL the counter's row stays locked until
/// the commit, so revisions become visible in the order they were taken: take it first.
macro_rules! next_revision {
    ($tx:ident, $pg:ident) => {{
        let rev: i64 = sqlx::query_scalar($crate::hot::REVISION_NEXT)
            .fetch_one(&mut *$tx)
            .await?;
        // When the revision was taken (Unix milliseconds), so that a gateway can measure
        // how long a change took to reach it (its commit-to-apply delay).
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('revision_ms', $1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind($crate::unix_millis())
        .execute(&mut *$tx)
        .await?;
        if $pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::NOTIFY_CHANNEL)
                .bind(rev.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        rev
    }};
}

/// `$q` with an audit record's six values bound, in `INSERT_AUDIT`'s order.
macro_rules! bind_audit {
    ($q:expr, $a:expr) => {{
        let a: &$crate::Audit = $a;
        $q.bind(a.at)
            .bind(&a.actor)
            .bind(&a.action)
            .bind(&a.device_id)
            .bind(&a.serial)
            .bind(&a.detail)
    }};
}

/// `$q` with a certificate row's nine values bound, in `INSERT_CERT`'s order.
macro_rules! bind_cert {
    ($q:expr, $c:expr) => {{
        let c: &$crate::CertRecord = $c;
        $q.bind(&c.serial)
            .bind(&c.kind)
            .bind(&c.subject)
            .bind(&c.device_id)
            .bind(c.not_before)
            .bind(c.not_after)
            .bind(&c.sha256)
            .bind(c.issued_at)
            .bind(&c.der)
    }};
}

macro_rules! write_audit {
    ($tx:ident, $a:expr) => {{
        let a: &$crate::Audit = $a;
        bind_audit!(sqlx::query($crate::sql::INSERT_AUDIT), a)
            .execute(&mut *$tx)
            .await?;
    }};
}

macro_rules! fetch_device {
    ($exec:expr, $id:expr) => {{
        let row: Option<$crate::model::DeviceRow> = sqlx::query_as(&$crate::hot::device_by_id())
            .bind($id)
            .fetch_optional($exec)
            .await?;
        row.map($crate::model::DeviceRow::into_device).transpose()?
    }};
}

macro_rules! insert_cert {
    ($tx:ident, $c:expr) => {{
        let c: &$crate::CertRecord = $c;
        let res = bind_cert!(sqlx::query($crate::sql::INSERT_CERT), c)
            .execute(&mut *$tx)
            .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err($crate::StoreError::Duplicate(c.serial.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }};
}

macro_rules! insert_device {
    ($tx:ident, $d:expr, $rev:expr, $cert:expr) => {{
        let d: &$crate::NewDevice = $d;
        let cert: Option<&$crate::CertRecord> = $cert;
        let res = sqlx::query(
            "INSERT INTO devices (id, status, tags, first_seen, last_seen, last_addr, agent_version,
                                  cert_serial, cert_not_after, lifetime_secs, created_by, revision,
                                  pending_csr, poll_hash)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&d.id)
        .bind(d.status.as_str())
        .bind($crate::model::tags_to_text(&d.tags))
        .bind(d.seen.at)
        .bind(&d.seen.addr)
        .bind(&d.seen.agent_version)
        .bind(cert.map(|c| c.serial.clone()))
        .bind(cert.map(|c| c.not_after))
        .bind(d.lifetime_secs)
        .bind(&d.created_by)
        .bind($rev)
        .bind(&d.pending_csr)
        .bind(&d.poll_hash)
        .execute(&mut *$tx)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err($crate::StoreError::DeviceExists(d.id.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }};
}

pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit (at, actor, action, device_id, serial, detail) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const INSERT_CERT: &str =
    "INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, der)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const INSERT_RECOVERY: &str =
    "INSERT INTO recovery (hash, device_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)";

pub(crate) const DEVICE_COLUMNS: &str = "id, status, tags, first_seen, last_seen, last_addr, agent_version, cert_serial, cert_not_after, prev_serial, lifetime_secs, created_by, revision, pending_csr, poll_hash";
pub(crate) const CERT_COLUMNS: &str = "serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, revoked_at, revocation_reason, der, revision";
pub(crate) const TOKEN_COLUMNS: &str =
    "hash, device_id, tags, lifetime_secs, expires_at, created_at, created_by, used_at, used_by";
