//! The commands and flags that help after an inventory error. The store's errors name no
//! CLI command, because the CA server sends the same texts to devices and admin clients;
//! the CLI, which knows its own commands, adds them here when it prints an error.

use mtlsgate_authority::AuthorityError;
use mtlsgate_store::StoreError;

/// The hint for the first inventory error in `e`'s chain, if there is one for it.
pub fn for_error(e: &anyhow::Error) -> Option<&'static str> {
    let store = e.chain().find_map(|c| {
        c.downcast_ref::<StoreError>()
            .or(match c.downcast_ref::<AuthorityError>() {
                Some(AuthorityError::Store(s)) => Some(s),
                _ => None,
            })
    })?;
    Some(match store {
        StoreError::Missing { .. } => "`mtlsgate ca init` creates a CA with its inventory; if this CA keeps its inventory in PostgreSQL, give --database URL or MTLSGATE_DATABASE",
        StoreError::NoInventory { .. } => "`mtlsgate ca init --database URL` creates a CA with its inventory there",
        StoreError::BadLocation(_) => "without --database the inventory is the CA directory's inventory.db",
        StoreError::UnknownSerial(_) => "see `mtlsgate ca list`",
        StoreError::UnknownDevice(_) => "see `mtlsgate devices list`",
        StoreError::TokenExpired { .. } => "with `mtlsgate token create`",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_errors_get_the_command_that_helps() {
        let e = anyhow::Error::from(StoreError::UnknownDevice("cam1".into()));
        assert_eq!(for_error(&e), Some("see `mtlsgate devices list`"));
        let e = anyhow::Error::from(AuthorityError::Store(StoreError::UnknownSerial(
            "01".into(),
        )))
        .context("revoking");
        assert_eq!(for_error(&e), Some("see `mtlsgate ca list`"));
        let e = anyhow::Error::from(StoreError::TokenUnknown);
        assert_eq!(for_error(&e), None);
    }
}
