//! Creating and opening inventories (PostgreSQL without one or with another CA's, an old
//! SQLite one upgraded), locations, and a full SQLite disk.

use super::*;

#[tokio::test]
async fn postgres_without_an_inventory_or_with_another_cas_is_refused() {
    let url = test_support::new_database().await;
    let loc = Location::Postgres(url.clone());
    let shown = loc.to_string();
    let e = Inventory::open(&loc, ROOT).await.err().expect("no schema");
    assert_eq!(
        e.to_string(),
        format!("the database {shown} holds no mtlsgate inventory (it has no certificates table); restore this CA's inventory from a backup (an inventory is created only together with its CA)")
    );
    let inv = with_root(Inventory::create(&loc).await.expect("create")).await;
    inv.close().await;
    let e = Inventory::create(&loc).await.err().expect("exists");
    assert_eq!(
        e.to_string(),
        format!("the database {shown} already holds an mtlsgate inventory; a new CA needs an empty database (mtlsgate never starts a new inventory over one, because that would forget every revocation)")
    );
    let e = Inventory::open(&loc, "99AA").await.err().expect("foreign");
    assert_eq!(
        e.to_string(),
        format!("{shown} does not belong to this CA (its root certificate serial 99AA is not in it); restore this CA's own inventory from a backup")
    );
    let inv = Inventory::open(&loc, "4a01").await.expect("own root");
    assert_eq!(inv.list().await.expect("list").len(), 1);
    inv.close().await;
}

#[tokio::test]
async fn an_sqlite_inventory_is_created_once_and_an_old_one_is_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inventory.db");
    let loc = Location::Sqlite(path.clone());
    Inventory::create(&loc).await.expect("create").close().await;
    let e = Inventory::create(&loc).await.err().expect("exists");
    assert!(matches!(e, StoreError::InventoryExists { .. }), "{e}");
    // An inventory made by the first version (migration 0001 only), with a revocation.
    let old = dir.path().join("old.db");
    {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&old)
                    .create_if_missing(true),
            )
            .await
            .expect("pool");
        let first = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(SQLITE_MIGRATIONS.migrations[..1].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        first.run(&pool).await.expect("0001");
        for (serial, kind, revoked) in [("4A01", "root", None), ("5B01", "client", Some(9))] {
            sqlx::query(
                "INSERT INTO certificates (serial, kind, subject, not_before, not_after, sha256, issued_at, revoked_at, pem)
                 VALUES ($1, $2, 'CN=x', 1, 99, 'aa', 1, $3, $4)",
            )
            .bind(serial)
            .bind(kind)
            .bind(revoked)
            .bind(OLD_PEM)
            .execute(&pool)
            .await
            .expect("insert");
        }
        pool.close().await;
    }
    let inv = Inventory::open(&Location::Sqlite(old), ROOT)
        .await
        .expect("upgraded");
    let all = inv.changes_since(0).await.expect("changes");
    assert_eq!(all.revision, 0);
    assert_eq!(all.revoked.len(), 1, "revocations before the upgrade count");
    assert_eq!(all.revoked[0].serial, "5B01");
    assert_old_rows_converted(&inv).await;
    inv.close().await;
}

/// A certificate in PEM, as inventories before migration 0003 kept it (DER 01 02 03).
const OLD_PEM: &str = "-----BEGIN CERTIFICATE-----\r\nAQID\r\n-----END CERTIFICATE-----\r\n";

/// Every row recorded with [`OLD_PEM`] reads back as its DER, and the PEM column is gone.
async fn assert_old_rows_converted(inv: &Inventory) {
    let all = inv.list().await.expect("list");
    assert_eq!(all.len(), 2);
    for c in &all {
        assert_eq!(c.der, vec![1, 2, 3], "{}", c.serial);
        assert_eq!(c.pem().replace('\r', ""), OLD_PEM.replace('\r', ""));
    }
    let pem_columns = async {
        Ok::<i64, StoreError>(on_pool!(inv, |p| match inv.backend() {
        Backend::Sqlite => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('certificates') WHERE name = 'pem'"
        )
        .fetch_one(p)
        .await
        .expect("columns"),
        Backend::Postgres => sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'certificates' AND column_name = 'pem'"
        )
        .fetch_one(p)
        .await
        .expect("columns"),
    }))
    }
    .await
    .expect("columns");
    assert_eq!(pem_columns, 0, "the PEM column is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_inventory_of_the_first_version_is_converted_to_der() {
    let url = test_support::new_database().await;
    {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("pool");
        let first = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(POSTGRES_MIGRATIONS.migrations[..1].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        first.run(&pool).await.expect("0001");
        for (serial, kind) in [("4A01", "root"), ("5B01", "client")] {
            sqlx::query(
                "INSERT INTO certificates (serial, kind, subject, not_before, not_after, sha256, issued_at, pem)
                 VALUES ($1, $2, 'CN=x', 1, 99, 'aa', 1, $3)",
            )
            .bind(serial)
            .bind(kind)
            .bind(OLD_PEM)
            .execute(&pool)
            .await
            .expect("insert");
        }
        pool.close().await;
    }
    let inv = Inventory::open(&Location::Postgres(url), ROOT)
        .await
        .expect("upgraded");
    assert_old_rows_converted(&inv).await;
    inv.close().await;
}

#[tokio::test]
async fn an_inventory_whose_pem_does_not_convert_is_refused_saying_which_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.db");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&old)
                .create_if_missing(true),
        )
        .await
        .expect("pool");
    let first = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(SQLITE_MIGRATIONS.migrations[..1].to_vec()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    first.run(&pool).await.expect("0001");
    sqlx::query(
        "INSERT INTO certificates (serial, kind, subject, not_before, not_after, sha256, issued_at, pem)
         VALUES ('4A01', 'root', 'CN=x', 1, 99, 'aa', 1, 'not PEM')",
    )
    .execute(&pool)
    .await
    .expect("insert");
    pool.close().await;
    let e = Inventory::open(&Location::Sqlite(old.clone()), ROOT)
        .await
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("certificate 4A01: its PEM does not convert to DER"),
        "{e}"
    );
}

#[test]
fn locations() {
    let dir = Path::new("/ca");
    assert_eq!(
        Location::for_ca(dir, None).expect("default"),
        Location::Sqlite(PathBuf::from("/ca/inventory.db"))
    );
    let pg = Location::for_ca(dir, Some("postgres://u:secret@db:5432/inv")).expect("pg");
    assert_eq!(pg.backend(), Backend::Postgres);
    assert_eq!(pg.to_string(), "postgres://u:***@db:5432/inv");
    assert_eq!(
        Location::parse("/srv/ca").expect("dir"),
        Location::Sqlite(PathBuf::from("/srv/ca/inventory.db"))
    );
    let e = Location::for_ca(dir, Some("mysql://x")).expect_err("refused");
    assert!(e
        .to_string()
        .starts_with("`mysql://x` is not a database URL"));
}

/// Sets the SQLite connection's page limit: its current size (so that the next write that
/// needs a page fails with "database or disk is full", as on a full disk), or unlimited.
async fn set_sqlite_full(inv: &Inventory, full: bool) {
    let Pool::Sqlite(c) = &inv.pool else {
        panic!("an SQLite inventory");
    };
    let mut guard = c.take().await.expect("connection");
    let conn = guard.as_mut().expect("open");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await
        .expect("page_count");
    let limit = if full { pages } else { 1 << 30 };
    sqlx::query(&format!("PRAGMA max_page_count = {limit}"))
        .execute(&mut *conn)
        .await
        .expect("max_page_count");
}

#[tokio::test]
async fn a_write_that_fails_on_a_full_sqlite_database_leaves_later_writes_working() {
    let fx = sqlite().await;
    let inv = &fx.inv;
    inv.insert_token(&token("h1", 100), &audit("token"))
        .await
        .expect("token");
    let big = |serial: &str| CertRecord {
        der: vec![b'P'; 256 * 1024],
        ..cert(serial, "client", None)
    };
    set_sqlite_full(inv, true).await;
    let e = inv
        .record(&big("5B01"))
        .await
        .expect_err("the database is full");
    assert!(e.is_unavailable(), "a full disk is a try-again-later: {e}");
    assert!(e.to_string().contains("full"), "{e}");
    let mut issuance = enrollment("dev1", "h1", "5B02");
    issuance.cert.der = big("5B02").der;
    // (The failed write may have left a fresh connection, without the limit.)
    set_sqlite_full(inv, true).await;
    let e = inv
        .record_issuance(&issuance)
        .await
        .expect_err("the database is full");
    assert!(e.is_unavailable(), "{e}");
    assert!(
        inv.token("h1")
            .await
            .expect("token")
            .is_some_and(|t| t.used_at.is_none()),
        "a failed enrollment leaves its token unspent"
    );
    // Space freed: every write works again, without a restart.
    set_sqlite_full(inv, false).await;
    inv.record(&big("5B01"))
        .await
        .expect("record after space was freed");
    inv.record_issuance(&issuance)
        .await
        .expect("enrollment after space was freed");
    assert!(inv
        .token("h1")
        .await
        .expect("token")
        .is_some_and(|t| t.used_by.as_deref() == Some("dev1")));
    fx.inv.close().await;
}

#[tokio::test]
async fn a_server_checkpoints_sqlite_in_the_background_and_postgres_needs_nothing() {
    let fx = sqlite().await;
    let db = fx._dir.as_ref().expect("dir").path().join("inventory.db");
    // Whatever creating it left in the write-ahead log goes into the file first, so that
    // only the checkpoints under test can grow the file below.
    sqlx_checkpoint(&fx.inv).await;
    let checkpoints = fx
        .inv
        .checkpoint_in_background(std::time::Duration::from_millis(20))
        .await
        .expect("start")
        .expect("SQLite checkpoints");
    let before = std::fs::metadata(&db).expect("size").len();
    // A few hundred pages: below the writer's own threshold (1,000 pages by default,
    // 32,768 while checkpoints run in the background), so only the background
    // checkpoints copy them into the file. Each certificate's 8 KiB of DER takes new
    // pages, which only a checkpoint puts into the file (rows this small would fit in
    // pages the file has).
    let wal = fx
        ._dir
        .as_ref()
        .expect("dir")
        .path()
        .join("inventory.db-wal");
    let record_batch = |first: usize| {
        let inv = &fx.inv;
        async move {
            for n in first..first + 40 {
                let mut c = cert(&format!("5B{n:02X}"), "client", None);
                c.der = vec![0x30; 8192];
                inv.record(&c).await.expect("record");
            }
        }
    };
    record_batch(0).await;
    let wal_after_one = std::fs::metadata(&wal).expect("log size").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&db).expect("size").len();
        if size > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file stayed at {size} bytes: nothing was checkpointed in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Once everything is copied, the next write starts the log again from its beginning,
    // so a second batch as large reuses the log's file instead of growing it: the
    // checkpointing connection holds nothing that keeps the log from starting again.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    record_batch(40).await;
    let wal_after_two = std::fs::metadata(&wal).expect("log size").len();
    assert!(
        wal_after_two < wal_after_one * 3 / 2,
        "the log grew from {wal_after_one} to {wal_after_two} bytes: it did not start again"
    );
    checkpoints.stop().await;
    assert_eq!(fx.inv.list().await.expect("list").len(), 81);
    fx.inv.close().await;

    let pg = postgres().await;
    assert!(pg
        .inv
        .checkpoint_in_background(std::time::Duration::from_millis(20))
        .await
        .expect("postgres")
        .is_none());
    pg.inv.close().await;
}

/// A full checkpoint of a SQLite inventory, from its own connection.
async fn sqlx_checkpoint(inv: &Inventory) {
    let Pool::Sqlite(c) = &inv.pool else {
        panic!("SQLite only");
    };
    let mut conn = c.take().await.expect("connection");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(conn.as_mut().expect("open"))
        .await
        .expect("checkpoint");
}
