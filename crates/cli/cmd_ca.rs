//! `mtlsgate ca …`: init, bundle, list, revoke, crl.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_pki::ca::{self, Ca, CertKind, InitOptions, Issued, Reason, Revoked};
use mtlsgate_pki::certinfo::{human_time, CertInfo};
use mtlsgate_pki::duration::parse_duration;
use mtlsgate_pki::{fsutil, key, pemfile};
use mtlsgate_store::{CertRecord, Inventory};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::block_on;
use crate::flags::{CaCommand, CaCrl, CaInit, CaList, CaRevoke, Passphrase};

pub fn run(cmd: CaCommand) -> Result<ExitCode> {
    match cmd {
        CaCommand::Init(a) => init(a),
        CaCommand::Bundle(d) => {
            let ca = Ca::open(&d.dir)?;
            print!("{}", ca.bundle_pem());
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::List(a) => list(a),
        CaCommand::Revoke(a) => revoke(a),
        CaCommand::Crl(a) => crl(a),
    }
}

pub fn inventory_path(dir: &Path) -> PathBuf {
    dir.join("inventory.db")
}

/// Opens the CA's inventory, which must exist, be whole and belong to this CA (its root
/// certificate is recorded in it). A damaged inventory is never replaced by a new one.
pub async fn open_inventory(ca: &Ca) -> Result<Inventory> {
    let root = CertInfo::from_der(&ca.root_der)?;
    Ok(Inventory::open_sqlite_for_ca(&inventory_path(&ca.dir), &root.serial).await?)
}

/// The record the inventory keeps for an issued certificate.
pub fn record_of(issued: &Issued) -> CertRecord {
    let i = &issued.info;
    CertRecord {
        serial: i.serial.clone(),
        kind: issued.kind.as_str().into(),
        subject: i.subject.clone(),
        device_id: if issued.kind == CertKind::Client {
            i.device_id.clone()
        } else {
            None
        },
        not_before: i.not_before.unix_timestamp(),
        not_after: i.not_after.unix_timestamp(),
        sha256: i.sha256_fingerprint.clone(),
        issued_at: OffsetDateTime::now_utc().unix_timestamp(),
        revoked_at: None,
        revocation_reason: None,
        pem: issued.pem(),
        revision: None,
    }
}

/// Reads the passphrase for the CA keys if the CA is encrypted.
pub fn ca_passphrase(ca: &Ca, p: &Passphrase) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match (&p.passphrase_file, ca.meta.encrypted) {
        (Some(f), _) => Ok(Some(key::read_passphrase(f)?)),
        (None, true) => anyhow::bail!(
            "the CA keys in {} are encrypted: give their passphrase with --passphrase-file FILE (or MTLSGATE_CA_PASSPHRASE_FILE)",
            ca.dir.display()
        ),
        (None, false) => Ok(None),
    }
}

fn init(a: CaInit) -> Result<ExitCode> {
    let pass = match &a.passphrase_file {
        Some(f) => Some(key::read_passphrase(f)?),
        None => None,
    };
    let opts = InitOptions {
        name: a.name.clone(),
        key_type: a.key_type.into(),
        device_domain: a.device_domain.clone(),
        passphrase: pass.as_deref().map(|v| v.as_slice()),
        root_validity: parse_duration(&a.root_valid).context("--root-valid")?,
        intermediate_validity: parse_duration(&a.intermediate_valid)
            .context("--intermediate-valid")?,
    };
    let staged = ca::init(&a.ca.dir, &opts)?;
    block_on(async {
        let inv = Inventory::open_sqlite(&inventory_path(staged.path()), true).await?;
        inv.record(&record_of(&staged.root)).await?;
        inv.record(&record_of(&staged.intermediate)).await?;
        inv.close().await;
        anyhow::Ok(())
    })??;
    let root_subject = staged.root.info.subject.clone();
    let int_subject = staged.intermediate.info.subject.clone();
    let dir = staged.commit()?;
    println!("Created CA in {}", dir.display());
    println!("  root:         {root_subject}");
    println!("  intermediate: {int_subject}");
    println!(
        "  keys:         {} (0600{})",
        a.key_type_name(),
        if pass.is_some() { ", encrypted" } else { "" }
    );
    println!(
        "  device IDs:   <id>.{}",
        a.device_domain.to_ascii_lowercase()
    );
    println!("Trust bundle for servers: {}", dir.join("ca.crt").display());
    println!(
        "Next: mtlsgate cert issue server localhost --dir {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

impl CaInit {
    fn key_type_name(&self) -> String {
        mtlsgate_pki::key::KeyType::from(self.key_type).to_string()
    }
}

fn list(a: CaList) -> Result<ExitCode> {
    let ca = Ca::open(&a.ca.dir)?;
    let records = block_on(async {
        let inv = open_inventory(&ca).await?;
        let r = inv.list().await?;
        inv.close().await;
        anyhow::Ok(r)
    })??;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if a.json {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            rec: &'a CertRecord,
            not_before_utc: String,
            not_after_utc: String,
            revoked: bool,
            expired: bool,
        }
        let rows: Vec<Row<'_>> = records
            .iter()
            .map(|r| Row {
                rec: r,
                not_before_utc: fmt_ts(r.not_before),
                not_after_utc: fmt_ts(r.not_after),
                revoked: r.revoked_at.is_some(),
                expired: r.not_after < now,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<32}  {:<12}  {:<20}  {:<20}  {:<10}  {:<32}  SUBJECT",
        "SERIAL", "KIND", "NOT BEFORE", "NOT AFTER", "STATUS", "DEVICE ID"
    )?;
    for r in &records {
        let status = if r.revoked_at.is_some() {
            "revoked"
        } else if r.not_after < now {
            "expired"
        } else {
            "valid"
        };
        writeln!(
            out,
            "{:<32}  {:<12}  {:<20}  {:<20}  {:<10}  {:<32}  {}",
            r.serial,
            r.kind,
            fmt_ts(r.not_before).trim_end_matches(" UTC"),
            fmt_ts(r.not_after).trim_end_matches(" UTC"),
            status,
            r.device_id.as_deref().unwrap_or("-"),
            r.subject
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ts(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(human_time)
        .unwrap_or_else(|_| t.to_string())
}

fn revoke(a: CaRevoke) -> Result<ExitCode> {
    let ca = Ca::open(&a.ca.dir)?;
    let reason = Reason::parse(&a.reason)?;
    let serial = match (&a.serial, &a.cert) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => {
            let certs = pemfile::read_certs(f)?;
            let der = certs.first().context("no certificate")?;
            let info = CertInfo::from_der(der)?;
            info.serial
        }
        (None, None) => anyhow::bail!("give a SERIAL or --cert FILE"),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let rec = block_on(async {
        let inv = open_inventory(&ca).await?;
        let existing = inv.get(&serial).await?;
        if existing.kind == "root" {
            anyhow::bail!("{} is the root CA: a root cannot be revoked by a CRL it signs itself; to retire it, create a new CA and remove this one from every trust bundle", existing.serial);
        }
        let audit =
            mtlsgate_store::Audit::new(now, "ca revoke", "revoke_cert").serial(&existing.serial);
        let r = inv
            .revoke(&serial, now, Some(reason.as_str()), &audit)
            .await;
        inv.close().await;
        anyhow::Ok(r?)
    })??;
    println!(
        "Revoked {} ({}) at {}, reason {}",
        rec.serial,
        rec.subject,
        fmt_ts(now),
        reason.as_str()
    );
    println!("Publish a new CRL: mtlsgate ca crl --out crl.pem");
    Ok(ExitCode::SUCCESS)
}

fn crl(a: CaCrl) -> Result<ExitCode> {
    let ca = Ca::open(&a.ca.dir)?;
    let next = parse_duration(&a.next_update).context("--next-update")?;
    let pass = ca_passphrase(&ca, &a.pass)?;
    let signer = ca.signer(pass.as_deref().map(|v| v.as_slice()))?;
    let (revoked, number) = block_on(async {
        let inv = open_inventory(&ca).await?;
        let r = inv.revoked().await?;
        let n = inv.next_crl_number().await?;
        inv.close().await;
        anyhow::Ok((r, n))
    })??;
    let to_revoked = |r: &CertRecord| Revoked {
        serial: r.serial.clone(),
        revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at.unwrap_or(0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        reason: r
            .revocation_reason
            .as_deref()
            .and_then(|s| Reason::parse(s).ok()),
    };
    let leaves: Vec<Revoked> = revoked
        .iter()
        .filter(|r| r.kind == "client" || r.kind == "server")
        .map(to_revoked)
        .collect();
    let inters: Vec<Revoked> = revoked
        .iter()
        .filter(|r| r.kind == "intermediate")
        .map(to_revoked)
        .collect();
    let crls = signer.crls(&leaves, &inters, number.max(1) as u64, next)?;
    let bytes = if a.der {
        crls.intermediate.clone()
    } else {
        format!(
            "{}{}",
            pemfile::to_pem("X509 CRL", &crls.intermediate),
            pemfile::to_pem("X509 CRL", &crls.root)
        )
        .into_bytes()
    };
    match &a.out {
        Some(p) => {
            fsutil::write_atomic(p, &bytes, fsutil::PUBLIC_MODE)?;
            eprintln!(
                "Wrote CRL #{number} to {} ({} revoked certificate(s))",
                p.display(),
                leaves.len() + inters.len()
            );
        }
        None => {
            if a.der {
                use std::io::IsTerminal;
                if std::io::stdout().is_terminal() {
                    anyhow::bail!("refusing to write binary DER to a terminal: use --out FILE");
                }
            }
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
