//! `mtlsgate ca tidy`, and the tidy `ca serve` runs on its own (`--tidy-every`): retention
//! flags to [`Retention`], a tidy of the inventory, and what it removed in sentences.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::{Inventory, Retention, Tidied};
use mtlsgate_pki::duration::parse_duration;
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{CaTidy, RetentionFlags};
use crate::fleet::open_authority;

/// The retention of the flags, measured from now.
pub fn retention(dir: &Path, f: &RetentionFlags, dry_run: bool) -> Result<Retention> {
    let secs = |flag: &str, v: &str| -> Result<i64> {
        Ok(parse_duration(v)
            .with_context(|| flag.to_string())?
            .whole_seconds())
    };
    Ok(Retention {
        now: OffsetDateTime::now_utc().unix_timestamp(),
        keep_expired: secs("--keep-expired", &f.keep_expired)?,
        keep_audit: secs("--keep-audit", &f.keep_audit)?,
        audit_export: f.audit_export.clone().unwrap_or_else(|| dir.join("audit")),
        dry_run,
    })
}

/// Tidies `inv` with `r` (the flags as given, for the sentences) and says what went.
pub async fn tidy(inv: &Inventory, r: &Retention, f: &RetentionFlags) -> Result<(Tidied, String)> {
    let t = inv.tidy(r).await?;
    let said = describe(&t, f, r.dry_run);
    Ok((t, said))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a tidy removed (or would), in sentences.
pub fn describe(t: &Tidied, f: &RetentionFlags, dry_run: bool) -> String {
    if t.skipped {
        return "Another process is tidying this inventory: nothing was done this time.".into();
    }
    let mut parts = Vec::new();
    if t.certificates > 0 {
        let revoked = if t.revoked > 0 {
            format!(
                " ({} revoked: expired, no CRL needs {} any more)",
                t.revoked,
                if t.revoked == 1 { "it" } else { "them" }
            )
        } else {
            String::new()
        };
        parts.push(format!(
            "{} expired more than {} ago{revoked}",
            plural(t.certificates, "certificate", "certificates"),
            f.keep_expired
        ));
    }
    if t.recovery_tokens > 0 {
        parts.push(format!(
            "{} replaced and expired more than {} ago",
            plural(t.recovery_tokens, "recovery token", "recovery tokens"),
            f.keep_expired
        ));
    }
    if t.audit > 0 {
        let to = if dry_run {
            String::new()
        } else {
            format!(
                ", after writing {} to {}",
                if t.audit == 1 { "it" } else { "them" },
                t.audit_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        parts.push(format!(
            "{} older than {}{to}",
            plural(t.audit, "audit record", "audit records"),
            f.keep_audit
        ));
    }
    let mut out = if parts.is_empty() {
        format!(
            "Nothing {}: no certificate expired more than {} ago (besides those always kept: the CA's, and each device's current and previous one), no audit record is older than {}.",
            if dry_run { "would be removed" } else { "was removed" },
            f.keep_expired,
            f.keep_audit
        )
    } else if dry_run {
        format!(
            "Would remove {}. Nothing was changed (--dry-run).",
            parts.join("; ")
        )
    } else {
        format!("Removed {}.", parts.join("; "))
    };
    if let Some((before, after)) = t.size {
        let (before, after) = (size(before), size(after));
        if after != before {
            out.push_str(&format!(
                " The inventory file shrank from {before} to {after}."
            ));
        } else {
            out.push_str(&format!(" The inventory file is {after}."));
        }
    }
    out
}

fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

pub fn run(a: CaTidy) -> Result<ExitCode> {
    let r = retention(&a.ca.dir, &a.retention, a.dry_run)?;
    let said = block_on(async {
        let auth = open_authority(&a.ca.dir, &a.db).await?;
        let done = tidy(auth.inventory(), &r, &a.retention).await;
        auth.close().await;
        done.map(|(_, said)| said)
    })??;
    println!("{said}");
    Ok(ExitCode::SUCCESS)
}
