//! Enrollment tokens: storing one (its hash only), reading one, and why one was refused
//! (unknown, used, expired). A token is consumed by [`Inventory::record_issuance`].

use crate::model::{tags_to_text, TokenRow};
use crate::{Audit, Inventory, NewToken, Result, StoreError, Token};

impl Inventory {
    // ---- tokens ----

    /// Stores an enrollment token (its hash) and writes `audit`.
    pub async fn insert_token(&self, t: &NewToken, audit: &Audit) -> Result<()> {
        transaction!(self, |tx, _pg| {
            sqlx::query(
                "INSERT INTO tokens (hash, device_id, tags, lifetime_secs, expires_at, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.hash)
            .bind(&t.device_id)
            .bind(tags_to_text(&t.tags))
            .bind(t.lifetime_secs)
            .bind(t.expires_at)
            .bind(t.created_at)
            .bind(&t.created_by)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit);
        });
        Ok(())
    }

    /// A token by hash, used or not.
    pub async fn token(&self, hash: &str) -> Result<Option<Token>> {
        let sql = crate::hot::token_by_hash();
        let row: Option<TokenRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(p)
            .await?);
        row.map(TokenRow::into_token).transpose()
    }

    /// Why a token could not be consumed.
    pub(crate) async fn why_token_refused(&self, hash: &str) -> StoreError {
        match self.token(hash).await {
            Err(e) => e,
            Ok(None) => StoreError::TokenUnknown,
            Ok(Some(t)) => match (t.used_at, t.used_by) {
                (Some(at), by) => StoreError::TokenUsed {
                    at,
                    by: by.unwrap_or_else(|| "an unknown device".into()),
                },
                (None, _) => StoreError::TokenExpired { at: t.expires_at },
            },
        }
    }
}
