//! The statements on hot paths — enrollment, renewal, revocation, token use, what gateways
//! follow, the paged listings — in one place: the queries use these texts, and
//! [`hot_statements`] lists every one of them with sample values, so that the plan test
//! (below) checks exactly what runs. A statement added to a hot path belongs here.
//!
//! Inserts are not listed: they look nothing up (their unique checks are the primary keys).

use crate::sql::{CERT_COLUMNS, DEVICE_COLUMNS, TOKEN_COLUMNS};

pub(crate) const REVISION_NEXT: &str =
    "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value";
pub(crate) const REVISION: &str = "SELECT value FROM meta WHERE name = 'revision'";
pub(crate) const REVISION_MS: &str = "SELECT value FROM meta WHERE name = 'revision_ms'";
pub(crate) const CRL_NUMBER_NEXT: &str =
    "UPDATE crl_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number";

pub(crate) fn device_by_id() -> String {
    format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1")
}
/// A device and, in the same read, the state of the certificate `$2` it presented (a
/// renewal's two checks before it signs: one round trip instead of two).
pub(crate) fn device_with_certificate() -> String {
    format!(
        "SELECT {DEVICE_COLUMNS},
            (SELECT revoked_at FROM certificates WHERE serial = $2) AS presented_revoked_at,
            (SELECT sha256 FROM certificates WHERE serial = $2) AS presented_sha256
         FROM devices WHERE id = $1"
    )
}
pub(crate) fn token_by_hash() -> String {
    format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1")
}
pub(crate) fn cert_by_serial() -> String {
    format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1")
}
pub(crate) fn certificates_of() -> String {
    format!("SELECT {CERT_COLUMNS} FROM certificates WHERE device_id = $1 ORDER BY issued_at DESC, serial")
}
pub(crate) fn revoked_certificates() -> String {
    format!("SELECT {CERT_COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial")
}
pub(crate) fn changed_devices() -> String {
    format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE revision > $1 ORDER BY revision, id")
}
pub(crate) const CHANGED_REVOCATIONS: &str = "SELECT serial, device_id, revision FROM certificates
     WHERE revoked_at IS NOT NULL AND (revision > $1 OR ($1 = 0 AND revision IS NULL))
     ORDER BY revision, serial";

pub(crate) const TOKEN_CONSUME: &str = "UPDATE tokens SET used_at = $1, used_by = $2
     WHERE hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING hash";
pub(crate) const DEVICE_REENROLL: &str =
    "UPDATE devices SET status = $1, tags = $2, last_seen = $3, last_addr = $4,
        agent_version = $5, cert_serial = $6, cert_not_after = $7,
        prev_serial = NULL, lifetime_secs = $8, created_by = $9,
        revision = $10, pending_csr = NULL, poll_hash = NULL
     WHERE id = $11 AND status = 'revoked' RETURNING id";
pub(crate) const RECOVERY_FORGET: &str = "DELETE FROM recovery WHERE device_id = $1";
pub(crate) const DEVICE_COLLECT: &str =
    "UPDATE devices SET cert_serial = $1, cert_not_after = $2, last_seen = $3,
        last_addr = COALESCE($4, last_addr), agent_version = COALESCE($5, agent_version),
        pending_csr = NULL, poll_hash = NULL
     WHERE id = $6 AND status = 'active' AND poll_hash = $7 AND cert_serial IS NULL
     RETURNING id";
pub(crate) const DEVICE_RETRY: &str =
    "UPDATE devices SET prev_serial = NULL, cert_serial = $1, cert_not_after = $2,
        last_seen = $3, last_addr = COALESCE($4, last_addr),
        agent_version = COALESCE($5, agent_version)
     WHERE id = $6 AND status = 'active' AND cert_serial = $7 AND prev_serial = $8
     RETURNING id";
pub(crate) const CERT_REVOKE_ABANDONED: &str =
    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
     WHERE serial = $4 AND revoked_at IS NULL";
pub(crate) const RECOVERY_SPEND: &str = "UPDATE recovery SET replaced_at = $1
     WHERE hash = $2 AND device_id = $3 AND replaced_at IS NULL RETURNING hash";
pub(crate) const DEVICE_RENEW: &str =
    "UPDATE devices SET prev_serial = cert_serial, cert_serial = $1, cert_not_after = $2,
        last_seen = $3, last_addr = COALESCE($4, last_addr),
        agent_version = COALESCE($5, agent_version)
     WHERE id = $6 AND status = 'active' AND cert_serial = $7
     RETURNING id";
pub(crate) const RECOVERY_ROTATE: &str =
    "UPDATE recovery SET replaced_at = $1 WHERE device_id = $2 AND replaced_at IS NULL";
pub(crate) const RECOVERY_BY_HASH: &str =
    "SELECT hash, device_id, issued_at, expires_at, replaced_at FROM recovery WHERE hash = $1";

pub(crate) const CERT_REVOKE: &str =
    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
     WHERE serial = $4 AND revoked_at IS NULL RETURNING serial";
pub(crate) const CERTS_REVOKE_OF_DEVICE: &str =
    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2, revision = $3
     WHERE device_id = $4 AND revoked_at IS NULL AND not_after > $1";
/// A device's status compare-and-set, from any of `from` statuses (`$4`…).
pub(crate) fn device_status(from: usize) -> String {
    let placeholders: Vec<String> = (0..from).map(|n| format!("${}", n + 4)).collect();
    format!(
        "UPDATE devices SET status = $1, revision = $2 WHERE id = $3 AND status IN ({}) RETURNING id",
        if placeholders.is_empty() {
            "NULL".to_string()
        } else {
            placeholders.join(", ")
        }
    )
}
pub(crate) const DEVICE_TAGS: &str =
    "UPDATE devices SET tags = $1, revision = $2 WHERE id = $3 RETURNING id";
pub(crate) const PENDING_COUNT: &str = "SELECT COUNT(*) FROM devices WHERE status = 'pending'";
pub(crate) const ACTIVE_EXPIRING: &str = "SELECT COUNT(*) FROM devices WHERE status = 'active'
     AND cert_not_after > $1 AND cert_not_after <= $2";
pub(crate) const ACTIVE_EXPIRED: &str =
    "SELECT COUNT(*) FROM devices WHERE status = 'active' AND cert_not_after <= $1";
/// Two index ranges (an OR would read every active device).
pub(crate) const ACTIVE_UNSEEN: &str =
    "SELECT (SELECT COUNT(*) FROM devices WHERE status = 'active' AND last_seen IS NULL)
          + (SELECT COUNT(*) FROM devices WHERE status = 'active' AND last_seen < $1)";
pub(crate) const PENDING_EXPIRE: &str =
    "DELETE FROM devices WHERE status = 'pending' AND cert_serial IS NULL AND first_seen < $1";
pub(crate) const AUDIT_OF: &str =
    "SELECT id, at, actor, action, device_id, serial, detail FROM audit
     WHERE device_id = $1 ORDER BY id DESC LIMIT $2";

/// The dashboard's devices list: which devices (`$1` status, `$2` ID pattern, `$3` tag
/// pattern; each NULL for any)…
pub(crate) const DASHBOARD_FILTER: &str = "WHERE ($1 IS NULL OR status = $1)
               AND ($2 IS NULL OR id LIKE $2 ESCAPE '\\')
               AND ($3 IS NULL OR tags LIKE $3 ESCAPE '\\')";
/// …and one page of them (`$4` rows after `$5`) sorted by `column`, NULLs last either
/// way, then by ID: `NULLS LAST` (not a `column IS NULL` key) lets the order come from an
/// index.
pub(crate) fn dashboard_page(column: &str, descending: bool) -> String {
    let dir = if descending { "DESC" } else { "ASC" };
    format!(
        "SELECT {DEVICE_COLUMNS} FROM devices {DASHBOARD_FILTER}
         ORDER BY {column} {dir} NULLS LAST, id {dir} LIMIT $4 OFFSET $5"
    )
}

/// One hot statement with sample values, for the plan test.
#[cfg(test)]
pub(crate) struct Hot {
    pub name: &'static str,
    pub statement: crate::Statement,
    /// Why the table it reads may be read whole (a table of one or two rows), if it may.
    pub small_table: Option<&'static str>,
    /// Whether its order must come from the index (a page of a listing: a sort would read
    /// every row of the listing for each page).
    pub index_order: bool,
}

/// Every hot statement, with values like those the paths bind (the test's seeded
/// inventory: devices `devN.d.example`, certificates `SN` and `RN`, tokens and recovery
/// tokens `tN`/`rN`, revisions 1…N).
#[cfg(test)]
pub(crate) fn hot_statements(backend: crate::Backend) -> Vec<Hot> {
    use crate::paging::{certificates_page_sql, devices_page_sql};
    use crate::{Arg, CertFilter, DeviceFilter, DeviceStatus, Statement};
    let i = Arg::Int;
    let t = |s: &str| Arg::Text(s.to_string());
    let st = |sql: &str, args: Vec<Arg>| Statement {
        sql: sql.to_string(),
        args,
    };
    let hot = |name, statement| Hot {
        name,
        statement,
        small_table: None,
        index_order: false,
    };
    let small = |name, statement| Hot {
        name,
        statement,
        small_table: Some("meta and crl_state hold one row per counter"),
        index_order: false,
    };
    let page = |name, statement| Hot {
        name,
        statement,
        small_table: None,
        index_order: true,
    };
    let dev = "dev777.d.example";
    let after = Some((1500, "dev500.d.example".to_string()));
    vec![
        small("next revision", st(REVISION_NEXT, vec![])),
        small("revision", st(REVISION, vec![])),
        small("revision time", st(REVISION_MS, vec![])),
        small("next CRL number", st(CRL_NUMBER_NEXT, vec![])),
        hot("device by ID", st(&device_by_id(), vec![t(dev)])),
        hot(
            "device with the certificate it presented (renewal)",
            st(&device_with_certificate(), vec![t(dev), t("S777")]),
        ),
        hot("token by hash", st(&token_by_hash(), vec![t("t777")])),
        hot(
            "certificate by serial",
            st(&cert_by_serial(), vec![t("S777")]),
        ),
        hot(
            "certificates of a device",
            st(&certificates_of(), vec![t(dev)]),
        ),
        hot(
            "revoked certificates (CRL)",
            st(&revoked_certificates(), vec![]),
        ),
        hot(
            "changed devices (gateways)",
            st(&changed_devices(), vec![i(19_990)]),
        ),
        hot(
            "changed revocations (gateways)",
            st(CHANGED_REVOCATIONS, vec![i(19_990)]),
        ),
        hot(
            "token consumed (enrollment)",
            st(TOKEN_CONSUME, vec![i(5), t(dev), t("t777")]),
        ),
        hot(
            "revoked device enrolls again",
            st(
                DEVICE_REENROLL,
                vec![
                    t("active"),
                    t("[]"),
                    i(5),
                    t("::1"),
                    t("1"),
                    t("S1"),
                    i(9),
                    i(60),
                    t("x"),
                    i(7),
                    t(dev),
                ],
            ),
        ),
        hot(
            "recovery tokens forgotten",
            st(RECOVERY_FORGET, vec![t(dev)]),
        ),
        hot(
            "approved device collects",
            st(
                DEVICE_COLLECT,
                vec![t("S1"), i(9), i(5), t("::1"), t("1"), t(dev), t("p")],
            ),
        ),
        hot(
            "renewal retried",
            st(
                DEVICE_RETRY,
                vec![
                    t("S1"),
                    i(9),
                    i(5),
                    t("::1"),
                    t("1"),
                    t(dev),
                    t("S2"),
                    t("S3"),
                ],
            ),
        ),
        hot(
            "abandoned certificate revoked",
            st(
                CERT_REVOKE_ABANDONED,
                vec![i(5), t("superseded"), i(7), t("S777")],
            ),
        ),
        hot(
            "recovery token spent",
            st(RECOVERY_SPEND, vec![i(5), t("r777"), t(dev)]),
        ),
        hot(
            "renewal",
            st(
                DEVICE_RENEW,
                vec![t("S1"), i(9), i(5), t("::1"), t("1"), t(dev), t("S777")],
            ),
        ),
        hot(
            "recovery token rotated",
            st(RECOVERY_ROTATE, vec![i(5), t(dev)]),
        ),
        hot(
            "recovery token by hash",
            st(RECOVERY_BY_HASH, vec![t("r777")]),
        ),
        hot(
            "certificate revoked",
            st(CERT_REVOKE, vec![i(5), t("keyCompromise"), i(7), t("S777")]),
        ),
        hot(
            "device's certificates revoked",
            st(
                CERTS_REVOKE_OF_DEVICE,
                vec![i(5), t("cessationOfOperation"), i(7), t(dev)],
            ),
        ),
        hot(
            "device status changed",
            st(
                &device_status(2),
                vec![t("denied"), i(7), t(dev), t("pending"), t("active")],
            ),
        ),
        hot(
            "device tagged",
            st(DEVICE_TAGS, vec![t("[]"), i(7), t(dev)]),
        ),
        hot("devices waiting for approval", st(PENDING_COUNT, vec![])),
        hot(
            "pending registrations expired",
            st(PENDING_EXPIRE, vec![i(1100)]),
        ),
        hot("audit of a device", st(AUDIT_OF, vec![t(dev), i(100)])),
        page(
            "dashboard devices by expiry",
            st(
                &dashboard_page("cert_not_after", false),
                vec![t("active"), t("%dev%"), t("%\"lab\"%"), i(50), i(100)],
            ),
        ),
        page(
            "dashboard devices by expiry, latest first",
            st(
                &dashboard_page("cert_not_after", true),
                vec![t("active"), t("%dev%"), t("%\"lab\"%"), i(50), i(100)],
            ),
        ),
        page(
            "dashboard devices by last seen, latest first",
            st(
                &dashboard_page("last_seen", true),
                vec![t("active"), t("%dev%"), t("%\"lab\"%"), i(50), i(100)],
            ),
        ),
        page(
            "dashboard devices by ID",
            st(
                &dashboard_page("id", false),
                vec![t("active"), t("%dev%"), t("%\"lab\"%"), i(50), i(100)],
            ),
        ),
        hot(
            "active devices expiring (dashboard)",
            st(ACTIVE_EXPIRING, vec![i(100_500), i(101_000)]),
        ),
        hot(
            "active devices expired (dashboard)",
            st(ACTIVE_EXPIRED, vec![i(100_500)]),
        ),
        hot(
            "active devices not seen (dashboard)",
            st(ACTIVE_UNSEEN, vec![i(2_500)]),
        ),
        page(
            "devices, first page",
            devices_page_sql(backend, &DeviceFilter::default(), None, 500),
        ),
        page(
            "devices, a later page",
            devices_page_sql(backend, &DeviceFilter::default(), after.clone(), 500),
        ),
        hot(
            "devices of a status, a later page",
            devices_page_sql(
                backend,
                &DeviceFilter {
                    status: Some(DeviceStatus::Pending),
                    ..Default::default()
                },
                after.clone(),
                500,
            ),
        ),
        page(
            "devices with a tag, a later page",
            devices_page_sql(
                backend,
                &DeviceFilter {
                    tag: Some("lab".into()),
                    ..Default::default()
                },
                after,
                500,
            ),
        ),
        page(
            "certificates, first page",
            certificates_page_sql(backend, &CertFilter::default(), None, 500),
        ),
        page(
            "certificates, a later page",
            certificates_page_sql(backend, &CertFilter::default(), Some((1500, 500)), 500),
        ),
    ]
}

/// The plan of every hot statement on an inventory of 20,000 devices (1 % pending, 1 %
/// of certificates revoked) after `ANALYZE`, on both back ends: each must find its rows
/// through an index, and a page of a listing must also take its order from the index (a
/// sort would read every row of the listing, whatever the LIMIT; sorting the few rows an
/// index search found is fine). SQLite's `EXPLAIN QUERY PLAN` must show no `SCAN table`
/// without an index; PostgreSQL's `EXPLAIN` no `Seq Scan`, with its planner left as it is
/// (`enable_seqscan` untouched): the seeded rows are what make an index the cheaper plan,
/// as they would in a real fleet, and a plan chosen on them is the plan a fleet gets.
/// Only `meta` and `crl_state`, tables of a row or two, may be read whole.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{test_support, Backend, Inventory, Location};

    const ROWS: i64 = 20_000;

    struct Fx {
        inv: Inventory,
        _dir: Option<tempfile::TempDir>,
    }

    async fn sqlite() -> Fx {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = Location::Sqlite(dir.path().join("inventory.db"));
        Fx {
            inv: Inventory::create(&loc).await.expect("create"),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Fx {
        let loc = Location::Postgres(test_support::new_database().await);
        Fx {
            inv: Inventory::create(&loc).await.expect("create"),
            _dir: None,
        }
    }

    /// Rows like a fleet's, made by the database itself (one statement per table).
    fn seed(backend: Backend) -> Vec<String> {
        // A stand-in for the certificate's DER: the plans do not depend on its bytes.
        let der = match backend {
            Backend::Sqlite => "X'3082'",
            Backend::Postgres => "'\\x3082'::bytea",
        };
        let n = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})"
        );
        let id = "'dev' || i || '.d.example'";
        vec![
            format!("{n} INSERT INTO devices (id, status, tags, first_seen, created_by, revision, cert_serial, cert_not_after, last_seen)
                 SELECT {id}, CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 100 = 1 THEN 'revoked' ELSE 'active' END,
                        CASE WHEN i % 10 = 0 THEN '[\"lab\"]' ELSE '[]' END, 1000 + i, 'seed', i, 'S' || i, 100000 + i,
                        CASE WHEN i % 100 = 0 THEN NULL ELSE 2000 + i END FROM n"),
            format!("{n} INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after, sha256, issued_at, revoked_at, revision, der)
                 SELECT 'S' || i, 'client', 'CN=' || {id}, {id}, 1, 100000 + i, 'h' || i, 1000 + i,
                        CASE WHEN i % 100 = 1 THEN 2000 + i END, CASE WHEN i % 100 = 1 THEN i END, {der} FROM n"),
            format!("{n} INSERT INTO tokens (hash, expires_at, created_at, created_by) SELECT 't' || i, 5000, 1, 'seed' FROM n"),
            format!("{n} INSERT INTO recovery (hash, device_id, issued_at, expires_at) SELECT 'r' || i, {id}, 1, 9 FROM n"),
            format!("{n} INSERT INTO audit (at, actor, action, device_id) SELECT i, 'seed', 'enroll', {id} FROM n"),
            format!("UPDATE meta SET value = {ROWS} WHERE name = 'revision'"),
            "ANALYZE".to_string(),
        ]
    }

    /// The plan's lines.
    async fn plan(inv: &Inventory, s: &crate::Statement) -> Vec<String> {
        let backend = inv.backend();
        let sql = match backend {
            Backend::Sqlite => format!("EXPLAIN QUERY PLAN {}", s.sql),
            Backend::Postgres => format!("EXPLAIN {}", s.sql),
        };
        let r: crate::Result<Vec<String>> = async {
            Ok(on_pool!(inv, |p| match backend {
                Backend::Sqlite => {
                    let rows: Vec<(i64, i64, i64, String)> =
                        bind_args!(sqlx::query_as(&sql), &s.args)
                            .fetch_all(p)
                            .await?;
                    rows.into_iter().map(|r| r.3).collect()
                }
                Backend::Postgres =>
                    bind_args!(sqlx::query_scalar(&sql), &s.args)
                        .fetch_all(p)
                        .await?,
            }))
        }
        .await;
        r.unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", s.sql))
    }

    /// What is wrong with a plan line, if anything.
    fn fault(backend: Backend, line: &str, h: &Hot) -> Option<&'static str> {
        let small_table = h.small_table.is_some();
        let l = line.trim_start_matches([' ', '-', '>']);
        match backend {
            Backend::Sqlite => {
                let scan_without_index =
                    l.starts_with("SCAN ") && !l.contains(" USING ") && !l.contains("CONSTANT ROW");
                if l.contains("TEMP B-TREE") && h.index_order {
                    Some("sorts every matching row")
                } else if scan_without_index && !small_table {
                    Some("reads the whole table")
                } else {
                    None
                }
            }
            Backend::Postgres => {
                if (l.starts_with("Sort ") || l.starts_with("Incremental Sort")) && h.index_order {
                    Some("sorts every matching row")
                } else if l.starts_with("Seq Scan") && !small_table {
                    Some("reads the whole table")
                } else {
                    None
                }
            }
        }
    }

    async fn every_hot_statement_finds_its_rows_by_an_index(fx: Fx) {
        let inv = &fx.inv;
        for sql in seed(inv.backend()) {
            let r: crate::Result<()> = async {
                on_pool!(inv, |p| sqlx::query(&sql).execute(p).await.map(|_| ())?);
                Ok(())
            }
            .await;
            r.unwrap_or_else(|e| panic!("seeding: {e}\n{sql}"));
        }
        let backend = inv.backend();
        let mut faults = Vec::new();
        let statements = hot_statements(backend);
        assert!(statements.len() >= 30, "the list lost statements");
        for h in &statements {
            let lines = plan(inv, &h.statement).await;
            let used_index = lines
                .iter()
                .any(|l| l.contains("INDEX") || l.contains("PRIMARY KEY") || l.contains("Index"));
            for l in &lines {
                if let Some(why) = fault(backend, l, h) {
                    faults.push(format!(
                        "{}: {why}: {}\n    {}",
                        h.name,
                        l.trim(),
                        lines.join("\n    ")
                    ));
                }
            }
            if !used_index && h.small_table.is_none() {
                faults.push(format!(
                    "{}: no index in the plan:\n    {}",
                    h.name,
                    lines.join("\n    ")
                ));
            }
        }
        inv.clone().close().await;
        assert!(
            faults.is_empty(),
            "{backend:?}: hot statements without an index:\n{}",
            faults.join("\n")
        );
    }

    crate::both_backends!(every_hot_statement_finds_its_rows_by_an_index);
}
