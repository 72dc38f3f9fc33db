//! For tests of this crate and of the crates above it (feature `test-support`): a fresh
//! PostgreSQL database per test, on the server named by `MTLSGATE_TEST_POSTGRES`
//! (`./scripts/test` starts one). Without that variable the tests that need PostgreSQL
//! fail, saying so: they are never skipped silently.

use std::hash::{BuildHasher, Hasher};

use sqlx::Connection;

/// The variable naming the test server.
pub const VAR: &str = "MTLSGATE_TEST_POSTGRES";

/// The test server's URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
///
/// # Panics
/// When `MTLSGATE_TEST_POSTGRES` is not set: a test that needs PostgreSQL must fail
/// without it.
pub fn server_url() -> String {
    match std::env::var(VAR) {
        Ok(u) if !u.trim().is_empty() => u,
        _ => panic!(
            "set {VAR} (./scripts/test starts a PostgreSQL server for the tests), e.g. {VAR}=postgres://postgres@127.0.0.1:5432/postgres"
        ),
    }
}

/// A random lower-case hex word (no extra dependency: std's hasher keys are random).
pub fn random_hex() -> String {
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{a:016x}{b:016x}")
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Creates a new empty database `t_<random>` on the test server and returns its URL.
///
/// # Panics
/// When the server is not configured or cannot be reached.
pub async fn new_database() -> String {
    let url = server_url();
    let name = format!("t_{}", random_hex());
    let mut c = sqlx::postgres::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {VAR}={url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let _ = c.close().await;
    with_database(&url, &name)
}

/// [`new_database`] for synchronous tests.
pub fn new_database_blocking() -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"));
    rt.block_on(new_database())
}

/// Runs each named async test function `fn NAME(fx: Fx)` against both back ends, as
/// `NAME::sqlite` and `NAME::postgres`; the calling module provides `async fn sqlite() -> Fx`
/// and `async fn postgres() -> Fx` (PostgreSQL from `MTLSGATE_TEST_POSTGRES`, never
/// skipped). The store's suite and the authority's tests use this one macro; the
/// integration tests' `both!` (tests/util/fleet.rs) is its synchronous twin over the
/// built binary.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::postgres().await).await
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5/postgres", "t_1"),
            "postgres://postgres@127.0.0.1:5/t_1"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h/db?sslmode=disable", "t_2"),
            "postgres://u:p@h/t_2?sslmode=disable"
        );
    }
}
