//! The dashboard's passkeys (WebAuthn): each operator's credentials, kept as the opaque
//! JSON the dashboard gives (public key, signature counter, backup state), and the state of
//! each registration or sign-in under way ("ceremonies"), kept here rather than in one
//! process's memory so that several `ca serve` processes on one PostgreSQL can share them.
//! A ceremony is found by the SHA-256 hex of its handle, expires quickly and is taken
//! (deleted) by the one request that finishes it.

use crate::{Audit, Inventory, NewSession, Result};

/// One registered passkey.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PasskeyRecord {
    /// The credential ID, base64url.
    pub id: String,
    pub operator: String,
    /// What the operator called it.
    pub name: String,
    /// The credential as the dashboard serialised it (JSON).
    pub credential: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Registering a passkey for a signed-in operator.
    Register,
    /// Signing in with a passkey.
    SignIn,
}

impl CeremonyKind {
    fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::SignIn => "sign-in",
        }
    }
}

/// A ceremony to keep until it is finished or expires.
#[derive(Clone)]
pub struct NewCeremony {
    /// SHA-256 hex of the handle given to the browser.
    pub hash: String,
    pub kind: CeremonyKind,
    pub operator: String,
    /// The challenge state (JSON).
    pub state: String,
    pub expires_at: i64,
}

crate::debug_hiding!(NewCeremony { hash, kind, operator, expires_at } hiding { state });

impl Inventory {
    /// Keeps a ceremony (and forgets those expired by `now`).
    pub async fn insert_passkey_ceremony(&self, c: &NewCeremony, now: i64) -> Result<()> {
        transaction!(self, |tx, _pg| {
            sqlx::query("DELETE FROM dashboard_ceremonies WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO dashboard_ceremonies (hash, kind, operator, state, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&c.hash)
            .bind(c.kind.as_str())
            .bind(&c.operator)
            .bind(&c.state)
            .bind(c.expires_at)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Takes the ceremony `hash` of `kind` (it is deleted: a second take finds nothing):
    /// its operator and state, or `None` when it is unknown, of another kind, already
    /// taken or expired at `now`.
    pub async fn take_passkey_ceremony(
        &self,
        hash: &str,
        kind: CeremonyKind,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        let row: Option<(String, String, i64)> = on_pool!(self, |p| {
            sqlx::query_as(
                "DELETE FROM dashboard_ceremonies WHERE hash = $1 AND kind = $2
                 RETURNING operator, state, expires_at",
            )
            .bind(hash)
            .bind(kind.as_str())
            .fetch_optional(p)
            .await?
        });
        Ok(row
            .filter(|(_, _, expires_at)| *expires_at > now)
            .map(|(operator, state, _)| (operator, state)))
    }

    /// The passkeys of `operator`, oldest first.
    pub async fn passkeys_of(&self, operator: &str) -> Result<Vec<PasskeyRecord>> {
        let rows: Vec<PasskeyRecord> = on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT id, operator, name, credential, created_at, last_used_at
                 FROM dashboard_passkeys WHERE operator = $1 ORDER BY created_at, id",
            )
            .bind(operator)
            .fetch_all(p)
            .await?
        });
        Ok(rows)
    }

    /// Adds a passkey and writes `audit`; false (and nothing written) when a passkey with
    /// its credential ID is there already.
    pub async fn add_passkey(&self, k: &PasskeyRecord, audit: &Audit) -> Result<bool> {
        let added = transaction!(self, |tx, _pg| {
            let n = sqlx::query(
                "INSERT INTO dashboard_passkeys (id, operator, name, credential, created_at, last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&k.id)
            .bind(&k.operator)
            .bind(&k.name)
            .bind(&k.credential)
            .bind(k.created_at)
            .bind(k.last_used_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                write_audit!(tx, audit);
            }
            n == 1
        });
        Ok(added)
    }

    /// Removes `operator`'s passkey `id` and writes `audit`; false (nothing written) when
    /// `operator` has no such passkey.
    pub async fn remove_passkey(&self, operator: &str, id: &str, audit: &Audit) -> Result<bool> {
        let removed = transaction!(self, |tx, _pg| {
            let n = sqlx::query("DELETE FROM dashboard_passkeys WHERE id = $1 AND operator = $2")
                .bind(id)
                .bind(operator)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                write_audit!(tx, audit);
            }
            n == 1
        });
        Ok(removed)
    }

    /// Signs `operator` in with their passkey `id`, in one transaction: the passkey's
    /// credential becomes `credential` (its new counter and backup state) and its last use
    /// `now`, `session` opens, and an audit record is written (action
    /// `dashboard-login-passkey`, actor `dashboard:NAME`). False (nothing changes) when
    /// `operator` has no passkey `id` (another operator's, or removed meanwhile).
    pub async fn login_with_passkey(
        &self,
        operator: &str,
        id: &str,
        credential: &str,
        now: i64,
        session: &NewSession,
    ) -> Result<bool> {
        let done = transaction!(self, |tx, _pg| {
            let n = sqlx::query(
                "UPDATE dashboard_passkeys SET credential = $3, last_used_at = $4
                 WHERE id = $1 AND operator = $2",
            )
            .bind(id)
            .bind(operator)
            .bind(credential)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            open_session!(tx, operator, session, now);
            let audit = Audit::new(
                now,
                &format!("dashboard:{operator}"),
                "dashboard-login-passkey",
            )
            .detail(format!("with passkey {id}"));
            write_audit!(tx, &audit);
            true
        });
        Ok(done)
    }
}
