//! The audit log: writing a record, reading a device's newest records.

use crate::{Audit, AuditEntry, Inventory, Result};

impl Inventory {
    // ---- audit ----

    /// Writes one audit record.
    pub async fn log(&self, a: &Audit) -> Result<()> {
        transaction!(self, |tx, _pg| {
            write_audit!(tx, a);
        });
        Ok(())
    }

    /// The newest `limit` audit records of a device, oldest first.
    pub async fn audit_of(&self, device: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        let mut rows: Vec<AuditEntry> = on_pool!(self, |p| sqlx::query_as(crate::hot::AUDIT_OF)
            .bind(device)
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.reverse();
        Ok(rows)
    }
}
