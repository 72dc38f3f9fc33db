//! Recovery tokens: reading one by hash (they are written and rotated by
//! [`Inventory::record_issuance`]).

use crate::{Inventory, Recovery, Result};

impl Inventory {
    // ---- recovery ----

    /// A recovery token by hash (`replaced_at` set means it was rotated: presenting it
    /// again is the sign of a clone).
    pub async fn recovery(&self, hash: &str) -> Result<Option<Recovery>> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(crate::hot::RECOVERY_BY_HASH)
                .bind(hash)
                .fetch_optional(p)
                .await?
        }))
    }
}
