//! `mtlsgate-retention`: a simulated year of a fleet's renewals, written straight into two
//! inventories with back-dated times (the store's API: no clock waits), one never tidied
//! and one tidied once a simulated day (`Inventory::tidy`, the same call `ca tidy` makes).
//! Prints, per simulated month, the rows each keeps and the size of each inventory, and of
//! the exported audit records. Used by bench/retention; results in bench/results/retention.md.
//!
//! Each renewal is recorded the way `ca serve` records one: the certificate (the DER of
//! a real P-256 device certificate's size), the device's current certificate, its
//! recovery token rotation and an audit record, in one transaction.
//!
//! Usage: mtlsgate-retention [--devices N] [--days D] [--renew-hours H] [--lifetime-hours H]
//!        [--keep-expired-days D] [--keep-audit-days D] [--dir DIR] [--database URL]
//!        (--database: the tidied inventory on PostgreSQL instead of SQLite; the size
//!        shown is then pg_database_size).

use std::path::{Path, PathBuf};

use mtlsgate_store::{
    Audit, DeviceIssuance, DeviceStatus, Inventory, Issuance, Location, NewDevice, NewRecovery,
    NewToken, Retention, Seen, Via,
};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// The simulated year starts here (2027-01-15 08:00 UTC).
const START: i64 = 1_800_000_000;
/// A P-256 device certificate's DER is about this long (`openssl x509 -outform der`).
const DER_BYTES: usize = 443;
/// The recovery grace of `ca serve` (its default).
const RECOVERY_GRACE: i64 = 30 * DAY;

struct Args {
    devices: usize,
    days: i64,
    renew: i64,
    lifetime: i64,
    keep_expired: i64,
    keep_audit: i64,
    dir: Option<PathBuf>,
    database: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        devices: 1000,
        days: 365,
        renew: 16 * HOUR,
        lifetime: 24 * HOUR,
        keep_expired: 30 * DAY,
        keep_audit: 365 * DAY,
        dir: None,
        database: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let n = || {
            v.parse::<i64>()
                .map_err(|_| format!("{flag} {v}: a number"))
        };
        match flag.as_str() {
            "--devices" => a.devices = usize::try_from(n()?).map_err(|e| e.to_string())?,
            "--days" => a.days = n()?,
            "--renew-hours" => a.renew = n()? * HOUR,
            "--lifetime-hours" => a.lifetime = n()? * HOUR,
            "--keep-expired-days" => a.keep_expired = n()? * DAY,
            "--keep-audit-days" => a.keep_audit = n()? * DAY,
            "--dir" => a.dir = Some(PathBuf::from(v)),
            "--database" => a.database = Some(v),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.devices == 0 || a.renew <= 0 || a.lifetime <= 0 || a.days <= 0 {
        return Err(
            "--devices, --days, --renew-hours and --lifetime-hours must be positive".into(),
        );
    }
    Ok(a)
}

fn seen(at: i64) -> Seen {
    Seen {
        at,
        addr: Some("10.0.0.1".into()),
        agent_version: Some("1.0".into()),
    }
}

/// The issuance of certificate number `n` to device `id` at `at`.
fn issuance(a: &Args, id: &str, n: u64, at: i64, via: Via) -> Issuance {
    let serial = format!("{n:016X}");
    // Distinct bytes per certificate (SQLite does not compress, but be fair anyway).
    let mut der = vec![0u8; DER_BYTES];
    for (i, b) in der.iter_mut().enumerate() {
        *b = (n
            .wrapping_mul(2_654_435_761)
            .wrapping_add(i as u64 * 40_503)
            >> 7) as u8;
    }
    Issuance {
        cert: mtlsgate_store::CertRecord {
            serial: serial.clone(),
            kind: "client".into(),
            subject: format!("CN={id}"),
            device_id: Some(id.into()),
            not_before: at - 300,
            not_after: at + a.lifetime,
            sha256: format!("{:064x}", u128::from(n) * 0x9E37_79B9_7F4A_7C15),
            issued_at: at,
            revoked_at: None,
            revocation_reason: None,
            der,
            revision: None,
        },
        device: Some(DeviceIssuance {
            id: id.into(),
            via,
            seen: seen(at),
            recovery: NewRecovery {
                hash: format!("{:064x}", u128::from(n) * 0x2545_F491_4F6C_DD1D + 7),
                expires_at: at + a.lifetime + RECOVERY_GRACE,
            },
        }),
        audit: Audit::new(at, "device", "renew")
            .device(id)
            .serial(&serial)
            .detail("renewed over mTLS from 10.0.0.1"),
    }
}

/// The inventory's size in bytes: the SQLite file and its write-ahead log, or on
/// PostgreSQL the database's.
async fn size(inv: &Inventory, url: Option<&str>) -> u64 {
    match inv.location() {
        Location::Sqlite(p) => {
            let mut wal = p.as_os_str().to_owned();
            wal.push("-wal");
            file_size(p) + file_size(Path::new(&wal))
        }
        Location::Postgres(_) => {
            let Some(url) = url else { return 0 };
            pg_size(url).await.unwrap_or(0)
        }
    }
}

async fn pg_size(url: &str) -> Option<u64> {
    use sqlx::Connection;
    let mut c = sqlx::postgres::PgConnection::connect(url).await.ok()?;
    let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut c)
        .await
        .ok()?;
    let _ = c.close().await;
    u64::try_from(n).ok()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / f64::from(1u32 << 20))
}

async fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = std::env::temp_dir().join(format!("mtlsgate-retention-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            tmp
        }
    };
    let kept_path = dir.join("kept-forever.db");
    let tidy_path = dir.join("tidied.db");
    let export = dir.join("audit-export");
    for p in [&kept_path, &tidy_path] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&export);
    let kept = Inventory::create(&Location::Sqlite(kept_path)).await?;
    let tidied = match &a.database {
        Some(url) => Inventory::create(&Location::Postgres(url.clone())).await?,
        None => Inventory::create(&Location::Sqlite(tidy_path)).await?,
    };
    let invs = [&kept, &tidied];
    // Enrollment: one token per device.
    let mut serial = 1u64;
    let mut current: Vec<String> = Vec::with_capacity(a.devices);
    for i in 0..a.devices {
        let id = format!("dev{i:06}.d.example.local");
        let at = START + i as i64 * a.renew / a.devices as i64;
        let hash = format!("{:064x}", i as u128 + 1);
        let dev = NewDevice {
            id: id.clone(),
            status: DeviceStatus::Active,
            tags: vec![],
            lifetime_secs: None,
            created_by: "bench".into(),
            pending_csr: None,
            poll_hash: None,
            seen: seen(at),
        };
        let via = Via::Token {
            hash: hash.clone(),
            device: dev,
        };
        let iss = issuance(&a, &id, serial, at, via);
        for inv in invs {
            inv.insert_token(
                &NewToken {
                    hash: hash.clone(),
                    device_id: Some(id.clone()),
                    tags: vec![],
                    lifetime_secs: None,
                    expires_at: at + DAY,
                    created_at: at - HOUR,
                    created_by: "bench".into(),
                },
                &Audit::new(at - HOUR, "bench", "token"),
            )
            .await?;
            inv.record_issuance(&iss).await?;
        }
        current.push(iss.cert.serial.clone());
        serial += 1;
    }
    println!(
        "{} devices, a certificate of {} h renewed every {} h, {} simulated days; tidy once a day keeping expired certificates {} d and audit records {} d",
        a.devices,
        a.lifetime / HOUR,
        a.renew / HOUR,
        a.days,
        a.keep_expired / DAY,
        a.keep_audit / DAY
    );
    println!(
        "| day | issued | certificates kept forever | MiB kept forever | certificates tidied | audit rows tidied | MiB tidied | audit export MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let end = START + a.days * DAY;
    let mut next_tidy = START + DAY;
    let mut next_report = START + 30 * DAY;
    let (mut removed, mut audit_removed) = (0u64, 0u64);
    let mut round = 1i64;
    let wall = std::time::Instant::now();
    'sim: loop {
        for (i, cur) in current.iter_mut().enumerate() {
            let at = START + round * a.renew + i as i64 * a.renew / a.devices as i64;
            while at >= next_tidy {
                let r = Retention {
                    now: next_tidy,
                    keep_expired: a.keep_expired,
                    keep_audit: a.keep_audit,
                    audit_export: export.clone(),
                    dry_run: false,
                };
                let t = tidied.tidy(&r).await?;
                removed += t.certificates;
                audit_removed += t.audit;
                if next_tidy >= next_report {
                    // Certificates issued; audit rows: one per token and one per issuance.
                    let issued = serial - 1;
                    let audit_rows = 2 * a.devices as u64 + (issued - a.devices as u64);
                    println!(
                        "| {} | {issued} | {issued} | {} | {} | {} | {} | {} |",
                        (next_tidy - START) / DAY,
                        mib(size(&kept, None).await),
                        issued - removed,
                        audit_rows - audit_removed,
                        mib(size(&tidied, a.database.as_deref()).await),
                        mib(dir_size(&export)),
                    );
                    next_report += 30 * DAY;
                }
                next_tidy += DAY;
            }
            if at >= end {
                break 'sim;
            }
            let id = format!("dev{i:06}.d.example.local");
            let iss = issuance(
                &a,
                &id,
                serial,
                at,
                Via::Renewal {
                    serial: cur.clone(),
                },
            );
            for inv in invs {
                inv.record_issuance(&iss).await?;
            }
            *cur = iss.cert.serial.clone();
            serial += 1;
        }
        round += 1;
    }
    eprintln!(
        "({} renewals recorded twice in {:.0} s of wall time; files in {})",
        serial - 1,
        wall.elapsed().as_secs_f64(),
        dir.display()
    );
    kept.close().await;
    tidied.close().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mtlsgate-retention: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mtlsgate-retention: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtlsgate-retention: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
