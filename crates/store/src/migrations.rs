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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::{test_support, Inventory, Location, Result};

    /// Columns only one back end has, and why.
    const ONE_SIDED: &[(&str, &str, &str)] = &[(
        "postgres",
        "certificates.seq",
        "insertion order; SQLite has its rowid",
    )];

    /// Tables of the migration bookkeeping, not of the inventory.
    fn bookkeeping(table: &str) -> bool {
        table == "_sqlx_migrations" || table.starts_with("sqlite_")
    }

    /// A column type's family, the same on both back ends (SQLite `INTEGER` is 64 bits,
    /// as PostgreSQL's `bigint`).
    fn family(declared: &str) -> String {
        let t = declared.to_ascii_lowercase();
        match t.as_str() {
            "integer" | "bigint" | "int" | "int8" | "int4" | "smallint" => "integer".into(),
            "text" | "character varying" | "varchar" => "text".into(),
            other => other.into(),
        }
    }

    /// `table.column` → type family.
    type Schema = BTreeMap<String, String>;

    async fn schema(inv: &Inventory) -> Result<Schema> {
        let rows: Vec<(String, String, String)> = on_pool!(inv, |p| match inv.backend() {
            crate::Backend::Sqlite => {
                sqlx::query_as(
                    "SELECT m.name, c.name, c.type FROM sqlite_master m, pragma_table_info(m.name) c
                     WHERE m.type = 'table'",
                )
                .fetch_all(p)
                .await?
            }
            crate::Backend::Postgres => {
                sqlx::query_as(
                    "SELECT table_name::text, column_name::text, data_type::text
                     FROM information_schema.columns WHERE table_schema = current_schema()",
                )
                .fetch_all(p)
                .await?
            }
        });
        Ok(rows
            .into_iter()
            .filter(|(t, _, _)| !bookkeeping(t))
            .map(|(t, c, ty)| (format!("{t}.{c}"), family(&ty)))
            .collect())
    }

    /// What `a` has that `b` lacks or types otherwise, as lines.
    fn missing(a: &Schema, b: &Schema, a_name: &str, b_name: &str) -> Vec<String> {
        a.iter()
            .filter(|(col, _)| {
                !ONE_SIDED
                    .iter()
                    .any(|(side, c, _)| *side == a_name && c == col)
            })
            .filter_map(|(col, ty)| match b.get(col) {
                None => Some(format!("{col} ({ty}) is in {a_name} only")),
                Some(other) if other != ty && a_name == "sqlite" => {
                    Some(format!("{col} is {ty} in {a_name} but {other} in {b_name}"))
                }
                _ => None,
            })
            .collect()
    }

    /// The two migration sets describe the same tables and columns, of the same type
    /// families: a column added to one set only fails here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_and_postgres_schemas_have_the_same_tables_and_columns() -> Result<()> {
        let dir = tempfile::tempdir().map_err(sqlx::Error::Io)?;
        let lite = Inventory::create(&Location::Sqlite(dir.path().join("inventory.db"))).await?;
        let pg = Inventory::create(&Location::Postgres(test_support::new_database().await)).await?;
        let (a, b) = (schema(&lite).await?, schema(&pg).await?);
        lite.close().await;
        pg.close().await;
        assert!(a.contains_key("certificates.serial") && a.contains_key("devices.poll_hash"));
        assert!(b.contains_key("certificates.serial") && b.contains_key("devices.poll_hash"));
        let mut differences = missing(&a, &b, "sqlite", "postgres");
        differences.extend(missing(&b, &a, "postgres", "sqlite"));
        assert!(
            differences.is_empty(),
            "the SQLite and PostgreSQL migrations differ:\n  {}",
            differences.join("\n  ")
        );
        for (side, col, _) in ONE_SIDED {
            let has = if *side == "postgres" { &b } else { &a };
            assert!(has.contains_key(*col), "{col} is no longer in {side}");
        }
        Ok(())
    }
}
