//! The schema: the SQLite and PostgreSQL migration sets (`migrations/sqlite`,
//! `migrations/postgres`), applied when an inventory is opened; they must describe the same
//! tables and columns (see the schema parity test).

use crate::pool::Pool;
use crate::{Inventory, Result, StoreError};

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Inventory {
    /// How many of the inventory's marker tables (`certificates`, `_sqlx_migrations`) a
    /// PostgreSQL database has in its current schema.
    pub(crate) async fn postgres_tables(&self) -> Result<i64> {
        let n: i64 = on_pool!(self, |p| {
            sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name IN ('certificates', '_sqlx_migrations')"
        )
        .fetch_one(p)
        .await?
        });
        Ok(n)
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        let res = match &self.pool {
            Pool::Sqlite(c) => match c.take().await {
                Ok(mut conn) => match conn.as_mut() {
                    Some(conn) => SQLITE_MIGRATIONS.run_direct(conn).await,
                    None => Err(sqlx::Error::PoolClosed.into()),
                },
                Err(e) => Err(e.into()),
            },
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        match res {
            Ok(()) => Ok(()),
            Err(cause) => {
                let path = self.location.to_string();
                self.clone().close().await;
                Err(StoreError::Migrate { path, cause })
            }
        }
    }
}
