//! `mtlsgate devices …`: list, show, approve, allow, deny, revoke, tag, import.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use mtlsgate_authority::{check_tag, Action, Device, DeviceFilter, DeviceStatus, ImportRequest};
use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::duration::parse_duration;
use mtlsgate_pki::printable::printable;
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{
    DevicesChange, DevicesCommand, DevicesImport, DevicesList, DevicesShow, DevicesTag,
};
use crate::fleet::Fleet;
use crate::listing::Printer;

pub fn run(cmd: DevicesCommand) -> Result<ExitCode> {
    match cmd {
        DevicesCommand::List(a) => list(a),
        DevicesCommand::Show(a) => show(a),
        DevicesCommand::Approve(a) => change(a, Action::Approve),
        DevicesCommand::Allow(a) => change(a, Action::Allow),
        DevicesCommand::Deny(a) => change(a, Action::Deny),
        DevicesCommand::Revoke(a) => change(a, Action::Revoke),
        DevicesCommand::Tag(a) => tag(a),
        DevicesCommand::Import(a) => import(a),
    }
}

/// A device ID as typed: a full ID is kept, a short one gets the CA's device domain.
fn resolve(fleet: &Fleet, id: &str) -> Result<String> {
    let id = id.trim();
    if id.contains('.') {
        Ok(id.to_ascii_lowercase())
    } else {
        fleet.device_id(id)
    }
}

fn fmt_ts(t: Option<i64>) -> String {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| human_time(t).trim_end_matches(" UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Whether an active device's certificate has expired: it cannot connect, whatever its
/// status says, until it renews (recovers) or enrolls again.
fn expired(d: &Device, now: i64) -> bool {
    d.status == DeviceStatus::Active && d.cert_not_after.is_some_and(|t| t <= now)
}

/// The STATUS column: `expired` for an active device whose certificate has expired.
fn status_cell(d: &Device, now: i64) -> String {
    if expired(d, now) {
        "expired".into()
    } else {
        d.status.to_string()
    }
}

fn list(a: DevicesList) -> Result<ExitCode> {
    let status = match &a.status {
        Some(s) => Some(DeviceStatus::parse(&s.to_ascii_lowercase()).with_context(|| {
            format!("invalid --status `{s}`: expected pending, active, denied, revoked or quarantined")
        })?),
        None => None,
    };
    let tag = match &a.tag {
        Some(t) => Some(check_tag(t).context("--tag")?),
        None => None,
    };
    let now = OffsetDateTime::now_utc();
    // One time for the whole listing, so that every page applies the same window.
    let expiring_before = match &a.expiring {
        Some(d) => Some((now + parse_duration(d).context("--expiring")?).unix_timestamp()),
        None => None,
    };
    let filter = DeviceFilter {
        status,
        expiring_before,
        tag,
        id_prefix: a.prefix.as_deref().map(|p| p.trim().to_ascii_lowercase()),
        id_contains: a.search.as_deref().map(|p| p.trim().to_ascii_lowercase()),
    };
    let now = now.unix_timestamp();
    let mut p = Printer::new(&a.output);
    block_on(async {
        let fleet = Fleet::open(&a.target).await?;
        let r = async {
            let mut cursor: Option<String> = None;
            // The ID column is as wide as the longest ID of the first page.
            let mut width = None;
            loop {
                let page = fleet
                    .devices_page(&filter, cursor.as_deref(), a.output.page_size)
                    .await?;
                if p.table() {
                    let w = *width.get_or_insert_with(|| {
                        page.items
                            .iter()
                            .map(|d| d.id.len())
                            .max()
                            .unwrap_or(0)
                            .max("DEVICE ID".len())
                    });
                    if cursor.is_none() {
                        writeln!(
                            p.out(),
                            "{:<w$}  {:<11}  {:<20}  {:<20}  TAGS",
                            "DEVICE ID",
                            "STATUS",
                            "CERTIFICATE UNTIL",
                            "LAST SEEN"
                        )?;
                    }
                    for d in &page.items {
                        writeln!(
                            p.out(),
                            "{:<w$}  {:<11}  {:<20}  {:<20}  {}",
                            d.id,
                            status_cell(d, now),
                            fmt_ts(d.cert_not_after),
                            fmt_ts(d.last_seen),
                            d.tags.join(",")
                        )?;
                    }
                } else {
                    for d in &page.items {
                        p.json_row(d)?;
                    }
                }
                p.flush()?;
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => return anyhow::Ok(()),
                }
            }
        }
        .await;
        fleet.close().await;
        r
    })??;
    p.finish()?;
    Ok(ExitCode::SUCCESS)
}

fn print_device(o: &mut impl Write, d: &Device) -> std::io::Result<()> {
    writeln!(o, "Device:       {}", d.id)?;
    if expired(d, OffsetDateTime::now_utc().unix_timestamp()) {
        writeln!(
            o,
            "Status:       {}, but its certificate expired on {}: it cannot connect until it renews or enrolls again",
            d.status,
            fmt_ts(d.cert_not_after)
        )?;
    } else {
        writeln!(o, "Status:       {}", d.status)?;
    }
    writeln!(
        o,
        "Tags:         {}",
        if d.tags.is_empty() {
            "(none)".into()
        } else {
            d.tags.join(", ")
        }
    )?;
    writeln!(
        o,
        "Certificate:  {} (until {})",
        d.cert_serial.as_deref().unwrap_or("-"),
        fmt_ts(d.cert_not_after)
    )?;
    writeln!(o, "First seen:   {}", fmt_ts(Some(d.first_seen)))?;
    writeln!(
        o,
        "Last seen:    {}{}",
        fmt_ts(d.last_seen),
        d.last_addr
            .as_deref()
            .map(|a| format!(" from {}", printable(a)))
            .unwrap_or_default()
    )?;
    if let Some(v) = &d.agent_version {
        writeln!(o, "Agent:        {}", printable(v))?;
    }
    writeln!(o, "Created by:   {}", printable(&d.created_by))?;
    Ok(())
}

fn show(a: DevicesShow) -> Result<ExitCode> {
    let detail = block_on(async {
        let fleet = Fleet::open(&a.target).await?;
        let r = async {
            let id = resolve(&fleet, &a.id)?;
            fleet.device(&id).await
        }
        .await;
        fleet.close().await;
        r
    })??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut o = std::io::stdout().lock();
    print_device(&mut o, &detail.device)?;
    writeln!(o, "Certificates:")?;
    for c in &detail.certificates {
        writeln!(
            o,
            "  {}  until {}{}",
            c.serial,
            fmt_ts(Some(c.not_after)),
            if c.revoked_at.is_some() {
                format!(
                    "  revoked {} ({})",
                    fmt_ts(c.revoked_at),
                    c.revocation_reason.as_deref().unwrap_or("unspecified")
                )
            } else {
                String::new()
            }
        )?;
    }
    writeln!(o, "Audit:")?;
    for e in &detail.audit {
        writeln!(
            o,
            "  {}  {:<11} by {}{}",
            fmt_ts(Some(e.at)),
            e.action,
            printable(&e.actor),
            e.detail
                .as_deref()
                .map(|d| format!(": {}", printable(d)))
                .unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn done(d: &Device, json: bool, what: &str) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(d)?);
    } else {
        println!("{what}: device {} is {}", d.id, d.status);
        if !d.tags.is_empty() {
            println!("tags: {}", d.tags.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn change(a: DevicesChange, action: Action) -> Result<ExitCode> {
    let d = block_on(async {
        let fleet = Fleet::open(&a.target).await?;
        let r = async {
            let id = resolve(&fleet, &a.id)?;
            fleet.set_status(&id, action, a.reason.as_deref()).await
        }
        .await;
        fleet.close().await;
        r
    })??;
    if action == Action::Allow && d.status == DeviceStatus::Revoked && !a.json {
        println!(
            "Allowed to enroll again: device {id} stays revoked, and so do its certificates, until it enrolls with a new token: mtlsgate token create --device-id {id}",
            id = d.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    let what = match action {
        Action::Approve => "Approved",
        Action::Allow => "Allowed",
        Action::Deny => "Denied",
        Action::Revoke => "Revoked (its certificates too; publish a new CRL: mtlsgate ca crl)",
        Action::Quarantine => "Quarantined",
    };
    done(&d, a.json, what)
}

fn tag(a: DevicesTag) -> Result<ExitCode> {
    if a.add.is_empty() && a.remove.is_empty() {
        anyhow::bail!("give --add TAG and/or --remove TAG");
    }
    let d = block_on(async {
        let fleet = Fleet::open(&a.target).await?;
        let r = async {
            let id = resolve(&fleet, &a.id)?;
            fleet.tag(&id, &a.add, &a.remove).await
        }
        .await;
        fleet.close().await;
        r
    })??;
    done(&d, a.json, "Tagged")
}

/// One input of an import: where it came from, and the device ID a CSV line gave.
struct Entry {
    path: PathBuf,
    device_id: Option<String>,
}

/// The files of an import: every file in DIR (sorted), or the CSV's lines.
fn import_entries(a: &DevicesImport) -> Result<(Vec<Entry>, Vec<String>)> {
    let mut skipped = Vec::new();
    let mut entries = Vec::new();
    if let Some(csv) = &a.csv {
        let text = std::fs::read_to_string(csv)
            .with_context(|| format!("cannot read {}", csv.display()))?;
        let base = csv.parent().unwrap_or(Path::new("."));
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(',') {
                Some((id, file)) if !id.trim().is_empty() && !file.trim().is_empty() => {
                    let file = file.trim().trim_matches('"');
                    entries.push(Entry {
                        path: base.join(file),
                        device_id: Some(id.trim().trim_matches('"').to_ascii_lowercase()),
                    })
                }
                _ => skipped.push(format!(
                    "{} line {}: not `device_id,certificate_file`",
                    csv.display(),
                    n + 1
                )),
            }
        }
    } else if let Some(file) = a.from.as_ref().filter(|p| p.is_file()) {
        entries.push(Entry {
            path: file.clone(),
            device_id: None,
        });
    } else if let Some(dir) = &a.from {
        let mut paths = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
            let p = e.path();
            if p.is_file() {
                paths.push(p);
            } else {
                skipped.push(format!("{}: not a file", p.display()));
            }
        }
        paths.sort();
        entries.extend(paths.into_iter().map(|path| Entry {
            path,
            device_id: None,
        }));
    }
    Ok((entries, skipped))
}

/// The certificates of one file (leaf first), or why it cannot be imported.
fn read_import_file(path: &Path) -> std::result::Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot be read ({e})"))?;
    if data.windows(17).any(|w| w == b"PRIVATE KEY-----") {
        return Err("this is a private key, not a certificate".into());
    }
    let name = path.display().to_string();
    let blocks = mtlsgate_pki::pemfile::parse_blocks(&name, &data)
        .map_err(|_| "holds no certificate: it is neither PEM nor DER".to_string())?;
    if blocks.iter().any(|b| b.label.contains("PRIVATE KEY")) {
        return Err("this is a private key, not a certificate".into());
    }
    mtlsgate_pki::pemfile::certs_from_blocks(&name, blocks).map_err(|e| {
        e.to_string()
            .trim_start_matches(&name)
            .trim_start_matches(": ")
            .to_string()
    })
}

fn import(a: DevicesImport) -> Result<ExitCode> {
    let issuers = a
        .issuers
        .iter()
        .map(|f| {
            mtlsgate_pki::pemfile::read_certs(f).with_context(|| format!("--ca {}", f.display()))
        })
        .collect::<Result<Vec<_>>>()?
        .concat();
    let (entries, mut skipped) = import_entries(&a)?;
    let mut imported = 0usize;
    // Device IDs of this import, and the file that brought each.
    let mut ids: std::collections::HashMap<String, PathBuf> = Default::default();
    let out = block_on(async {
        let fleet = Fleet::open(&a.target).await?;
        let r = async {
            for e in &entries {
                let shown = e.path.display();
                let chain = match read_import_file(&e.path) {
                    Ok(c) => c,
                    Err(why) => {
                        skipped.push(format!("{shown}: {why}"));
                        continue;
                    }
                };
                let named = mtlsgate_pki::certinfo::CertInfo::from_der(&chain[0])
                    .ok()
                    .and_then(|i| i.device_id)
                    .map(|d| d.to_ascii_lowercase());
                if let Some(id) = e.device_id.clone().or(named) {
                    if let Some(first) = ids.get(&id) {
                        skipped.push(format!(
                            "{shown}: device {} is twice in this import (first in {})",
                            printable(&id),
                            first.display()
                        ));
                        continue;
                    }
                    ids.insert(id, e.path.clone());
                }
                let req = ImportRequest {
                    chain,
                    device_id: e.device_id.clone(),
                    issuers: issuers.clone(),
                    tags: a.tag.clone(),
                };
                match fleet.import_device(&req).await {
                    Ok(d) => {
                        imported += 1;
                        println!(
                            "imported {} (certificate {}, until {}) from {shown}",
                            d.id,
                            d.cert_serial.as_deref().unwrap_or("-"),
                            fmt_ts(d.cert_not_after)
                        );
                    }
                    Err(err) => skipped.push(format!("{shown}: {err:#}")),
                }
            }
            anyhow::Ok(())
        }
        .await;
        fleet.close().await;
        r
    })?;
    out?;
    for s in &skipped {
        println!("skipped {s}");
    }
    println!(
        "Imported {imported} device(s); skipped {} file(s).",
        skipped.len()
    );
    Ok(if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
