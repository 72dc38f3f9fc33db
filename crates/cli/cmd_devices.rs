//! `mtlsgate devices …`: list, show, approve, allow, deny, revoke, tag.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::{check_tag, Action, Device, DeviceFilter, DeviceStatus};
use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::duration::parse_duration;
use mtlsgate_pki::printable::printable;
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{DevicesChange, DevicesCommand, DevicesList, DevicesShow, DevicesTag};
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
