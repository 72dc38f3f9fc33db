//! `mtlsgate-bench seed-inventory --db CA_DIR|postgres://… --devices N --cert PEM`: fills
//! an inventory made by `mtlsgate ca init` with N devices, straight with SQL, for the
//! inventory-scale figures (bench/inventory-scale). Each device gets a certificate row
//! (the same real certificate's PEM for every row, with its own serial); one device in 50
//! also has an older, revoked certificate (half of them still valid, half expired); a few
//! devices are denied, revoked or pending (a pending one has no current certificate and was
//! never seen); four tag sets. So that the dashboard's list pages have something to sort and
//! count, the current certificates' expiry is spread from 80 hours ago (one in ten expired)
//! to 30 days ahead, last seen over the past 3.5 days (one device in 100 never), first seen
//! over 89 days, with three agent versions and addresses; an audit record of each device's
//! enrollment (and of each revoked one's revocation, by `admin`), so that the audit log
//! has a fleet's history to page and filter. Every device takes a revision of
//! its own, as if it had enrolled, and the revision counter ends at the last one. Run again,
//! it adds N more (their numbers follow those already added), so an inventory grows
//! 10,000 → 100,000 → 1,000,000 without starting over. Each batch is one statement per
//! table, server-side (`generate_series` / a recursive CTE), in one transaction.
//!
//! All the SQL is here, in [`batch_sql`], one text per back end: if the certificates'
//! storage changes, this is the one place to adapt.

use std::time::Instant;

use sqlx::{Connection, Executor};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Devices written per statement (one transaction each).
const BATCH: u64 = 50_000;

enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn open(db: &str) -> Result<Db, Error> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Ok(Db::Postgres(sqlx::PgConnection::connect(db).await?));
        }
        let path = std::path::Path::new(db);
        let file = if path.is_dir() {
            path.join("inventory.db")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            return Err(format!(
                "{} does not exist: make the inventory first with `mtlsgate ca init`",
                file.display()
            )
            .into());
        }
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Off);
        Ok(Db::Sqlite(
            sqlx::SqliteConnection::connect_with(&opts).await?,
        ))
    }

    fn postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs `sql` (several statements) in one transaction.
    async fn run(&mut self, sql: &str) -> Result<(), Error> {
        let sql = format!("BEGIN;\n{sql}\nCOMMIT;");
        match self {
            Db::Sqlite(c) => {
                c.execute(sqlx::raw_sql(&sql)).await?;
            }
            Db::Postgres(c) => {
                c.execute(sqlx::raw_sql(&sql)).await?;
            }
        }
        Ok(())
    }

    async fn scalar(&mut self, q: &str) -> Result<i64, Error> {
        Ok(match self {
            Db::Sqlite(c) => sqlx::query_scalar(q).fetch_one(c).await?,
            Db::Postgres(c) => sqlx::query_scalar(q).fetch_one(c).await?,
        })
    }

    async fn revision(&mut self) -> Result<i64, Error> {
        self.scalar("SELECT value FROM meta WHERE name = 'revision'")
            .await
    }

    /// How many devices an earlier run added (the next one's number).
    async fn added_before(&mut self) -> Result<u64, Error> {
        let n = self
            .scalar("SELECT count(*) FROM devices WHERE created_by = 'bench'")
            .await?;
        Ok(u64::try_from(n)?)
    }
}

/// The statements that add devices `lo..hi` (their numbers), whose revisions are
/// `base + number + 1`, at time `now`, each with a certificate holding `der`.
fn batch_sql(postgres: bool, lo: u64, hi: u64, base: i64, now: i64, der: &[u8]) -> String {
    // The certificate's DER as a literal of the back end's binary type.
    let der = if postgres {
        format!("'\\x{}'::bytea", hex::encode(der))
    } else {
        format!("X'{}'", hex::encode(der))
    };
    // `n.i`: the device's number. Per back end: the row source, a number as fixed-width
    // hex (serials, fingerprints) and as zero-padded decimal (IDs).
    let (rows, hex16, hex64, dec7) = if postgres {
        (
            format!("generate_series({lo}, {}) AS n(i)", hi - 1),
            "upper(lpad(to_hex(n.i), 16, '0'))",
            "lpad(to_hex(n.i), 64, '0')",
            "lpad(n.i::text, 7, '0')",
        )
    } else {
        (
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {hi}) SELECT i FROM s) AS n"
            ),
            "printf('%016X', n.i)",
            "printf('%064x', n.i)",
            "printf('%07d', n.i)",
        )
    };
    let id = format!("('dev-' || {dec7} || '.d.bench.local')");
    let year = 365 * 86_400;
    let day = 86_400;
    let hour = 3_600;
    // The current certificate's expiry: 80 hours ago to 30 days ahead, by the hour.
    let expiry = format!("{now} + ((n.i % 800) - 80) * {hour}");
    let pending = "n.i % 500 = 3";
    format!(
        "INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, der)
         SELECT '7E' || {hex16}, 'client', 'CN=' || {id}, {id}, {now} - {day}, {expiry}, {hex64}, {now} - {day}, {der}
         FROM {rows} WHERE NOT ({pending});
         INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, revoked_at, revocation_reason, der, revision)
         SELECT '7D' || {hex16}, 'client', 'CN=' || {id}, {id}, {now} - 2 * {year},
                CASE WHEN n.i % 100 = 0 THEN {now} + {year} ELSE {now} - {day} END,
                {hex64}, {now} - 2 * {year}, {now} - {day}, 'superseded', {der}, {base} + n.i + 1
         FROM {rows} WHERE n.i % 50 = 0;
         INSERT INTO devices (id, status, tags, first_seen, last_seen, last_addr, agent_version, cert_serial, cert_not_after, created_by, revision)
         SELECT {id},
                CASE WHEN {pending} THEN 'pending' WHEN n.i % 997 = 1 THEN 'denied' WHEN n.i % 991 = 2 THEN 'revoked' ELSE 'active' END,
                CASE n.i % 4 WHEN 0 THEN '[]' WHEN 1 THEN '[\"lab\"]' WHEN 2 THEN '[\"prod\"]' ELSE '[\"eu\",\"prod\"]' END,
                {now} - 90 * {day} + (n.i * 61) % (89 * {day}),
                CASE WHEN {pending} OR n.i % 100 = 7 THEN NULL ELSE {now} - (n.i % 1000) * 300 END,
                '10.' || (n.i / 65536 % 256) || '.' || (n.i / 256 % 256) || '.' || (n.i % 256),
                CASE WHEN {pending} THEN NULL ELSE '0.' || (7 + n.i % 3) || '.0' END,
                CASE WHEN {pending} THEN NULL ELSE '7E' || {hex16} END,
                CASE WHEN {pending} THEN NULL ELSE {expiry} END,
                'bench', {base} + n.i + 1
         FROM {rows};
         INSERT INTO audit (at, actor, action, device_id, serial, detail)
         SELECT {now} - 90 * {day} + (n.i * 61) % (89 * {day}),
                '10.' || (n.i / 65536 % 256) || '.' || (n.i / 256 % 256) || '.' || (n.i % 256),
                CASE WHEN {pending} THEN 'enroll-pending' ELSE 'enroll' END, {id},
                CASE WHEN {pending} THEN NULL ELSE '7E' || {hex16} END, NULL
         FROM {rows};
         INSERT INTO audit (at, actor, action, device_id, serial, detail)
         SELECT {now} - {day}, 'admin', 'revoke', {id}, '7E' || {hex16}, 'reason: keyCompromise'
         FROM {rows} WHERE n.i % 991 = 2 AND NOT ({pending});"
    )
}

/// Adds `devices` devices to the inventory at `db`, printing what it did.
pub(crate) async fn seed(db: &str, devices: u64, pem_file: &str) -> Result<(), Error> {
    let pem = std::fs::read_to_string(pem_file)
        .map_err(|e| format!("cannot read the certificate {pem_file}: {e}"))?;
    let der = match pem::parse(pem.as_bytes()) {
        Ok(p) if p.tag() == "CERTIFICATE" => p.into_contents(),
        _ => return Err(format!("{pem_file} holds no PEM certificate").into()),
    };
    let mut conn = Db::open(db).await?;
    let first = conn.added_before().await?;
    let end = first + devices;
    if end > 10_000_000 {
        return Err("device numbers have seven digits: at most 10,000,000 devices in all".into());
    }
    // Revisions follow the counter: device `n` takes `base + n + 1`.
    let base = conn.revision().await? - i64::try_from(first)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let started = Instant::now();
    let mut lo = first;
    while lo < end {
        let hi = (lo + BATCH).min(end);
        conn.run(&batch_sql(conn.postgres(), lo, hi, base, now, &der))
            .await?;
        lo = hi;
    }
    let last = base + i64::try_from(end)?;
    conn.run(&format!(
        "UPDATE meta SET value = {last} WHERE name = 'revision';"
    ))
    .await?;
    if conn.postgres() {
        conn.run("ANALYZE;").await.ok();
    }
    println!(
        "added {devices} devices in {:.1}s ({end} added in all); the inventory is at revision {last}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
