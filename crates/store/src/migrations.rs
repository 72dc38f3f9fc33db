//! The schema: the SQLite and PostgreSQL migration sets (`migrations/sqlite`,
//! `migrations/postgres`), applied when an inventory is opened; they must describe the same
//! tables and columns (see the schema parity test). Between migration 0003 (a DER column)
//! and 0004 (no PEM column), the PEM of the rows already there is converted to DER here.

use std::borrow::Cow;

use sqlx::migrate::{MigrateError, Migrator};

use crate::pool::Pool;
use crate::{Inventory, Result, StoreError};

pub(crate) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

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
        let all = match self.backend() {
            crate::Backend::Sqlite => &SQLITE_MIGRATIONS,
            crate::Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let path = self.location.to_string();
        let migrate = |cause| StoreError::Migrate {
            path: path.clone(),
            cause,
        };
        let res = async {
            // Up to the DER column, then the PEM of older rows becomes DER, then the rest
            // (which removes the PEM column). An inventory past all that (the usual case)
            // takes one run, as before.
            if !self.has_migration(PEM_DROPPED).await {
                self.run_migrations(&up_to(all, DER_ADDED))
                    .await
                    .map_err(migrate)?;
                self.convert_pem_to_der().await.map_err(|e| match e {
                    MigrateError::Source(detail) => StoreError::Convert {
                        path: path.clone(),
                        detail: detail.to_string(),
                    },
                    other => migrate(other),
                })?;
            }
            self.run_migrations(all).await.map_err(migrate)
        }
        .await;
        if res.is_err() {
            self.clone().close().await;
        }
        res
    }

    /// Whether migration `version` was applied (false when that cannot be read, e.g. in
    /// a new database without the bookkeeping table).
    async fn has_migration(&self, version: i64) -> bool {
        let found: Result<i64> = async {
            Ok(on_pool!(self, |p| sqlx::query_scalar(
                "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = $1 AND success"
            )
            .bind(version)
            .fetch_one(p)
            .await?))
        }
        .await;
        matches!(found, Ok(n) if n > 0)
    }

    async fn run_migrations(&self, m: &Migrator) -> std::result::Result<(), MigrateError> {
        match &self.pool {
            Pool::Sqlite(c) => match c.take().await {
                Ok(mut conn) => match conn.as_mut() {
                    Some(conn) => m.run_direct(conn).await,
                    None => Err(sqlx::Error::PoolClosed.into()),
                },
                Err(e) => Err(e.into()),
            },
            Pool::Postgres(p) => m.run(p).await,
        }
    }

    /// Gives every certificate row still without DER the DER of its PEM, in one
    /// transaction (an interrupted conversion is redone whole at the next opening). Does
    /// nothing once the PEM column is gone.
    async fn convert_pem_to_der(&self) -> std::result::Result<(), MigrateError> {
        let inner = async {
            let converted: std::result::Result<u64, MigrateError> = transaction!(self, |tx, pg| {
                if pg {
                    // Two servers opening one database at once convert in turn.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(CONVERSION_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }
                let has_pem: i64 = sqlx::query_scalar(if pg {
                        "SELECT COUNT(*) FROM information_schema.columns
                         WHERE table_schema = current_schema() AND table_name = 'certificates' AND column_name = 'pem'"
                    } else {
                        "SELECT COUNT(*) FROM pragma_table_info('certificates') WHERE name = 'pem'"
                    })
                    .fetch_one(&mut *tx)
                    .await?;
                let mut n = 0u64;
                if has_pem > 0 {
                    loop {
                        let rows: Vec<(String, String)> = sqlx::query_as(
                                "SELECT serial, pem FROM certificates WHERE der IS NULL ORDER BY serial LIMIT 1000",
                            )
                            .fetch_all(&mut *tx)
                            .await?;
                        if rows.is_empty() {
                            break;
                        }
                        for (serial, text) in rows {
                            let der = pem_to_der(&text).map_err(|why| {
                                    MigrateError::Source(
                                        format!("certificate {serial}: its PEM does not convert to DER ({why})")
                                            .into(),
                                    )
                                })?;
                            sqlx::query("UPDATE certificates SET der = $1 WHERE serial = $2")
                                .bind(der)
                                .bind(&serial)
                                .execute(&mut *tx)
                                .await?;
                            n += 1;
                        }
                    }
                }
                Ok(n)
            });
            converted
        };
        inner.await.map(|_converted| ())
    }
}

/// The migration that adds the DER column; the conversion runs after it…
const DER_ADDED: i64 = 3;
/// …and before this one, which drops the PEM column.
const PEM_DROPPED: i64 = 4;
/// The PostgreSQL advisory lock taken while the PEM of older rows is converted.
const CONVERSION_LOCK: i64 = 0x6d74_6c73_6465_7231; // "mtlsder1"

/// The migrations of `all` up to `last` (later ones already applied are not "missing").
fn up_to(all: &Migrator, last: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version <= last)
                .cloned()
                .collect(),
        ),
        ignore_missing: true,
        locking: all.locking,
        no_tx: all.no_tx,
    }
}

/// The DER of the one certificate in `text` (PEM).
pub(crate) fn pem_to_der(text: &str) -> std::result::Result<Vec<u8>, String> {
    let p = pem::parse(text).map_err(|e| e.to_string())?;
    if p.tag() != "CERTIFICATE" {
        return Err(format!("a {} block, not a CERTIFICATE", p.tag()));
    }
    Ok(p.into_contents())
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
            "blob" | "bytea" => "bytes".into(),
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
