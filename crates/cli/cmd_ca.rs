//! `mtlsgate ca …`: init, bundle, list, revoke, crl (tidy: `cmd_ca_tidy`, serve: `cmd_ca_serve`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::{Authority, CertFilter, CertRecord, CertStatus, Location};
use mtlsgate_pki::ca::{Ca, InitOptions, Reason};
use mtlsgate_pki::certinfo::{human_time, CertInfo};
use mtlsgate_pki::duration::parse_duration;
use mtlsgate_pki::{fsutil, key, pemfile};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::block_on;
use crate::flags::{CaCommand, CaCrl, CaInit, CaList, CaRevoke, Passphrase};
use crate::fleet::{actor, open_authority};
use crate::listing::Printer;

/// How long the administrator certificate `ca init` writes is valid.
const ADMIN_VALIDITY_DAYS: i64 = 365;

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
        CaCommand::Tidy(a) => crate::cmd_ca_tidy::run(a),
        CaCommand::Serve(a) => crate::cmd_ca_serve::run(*a),
    }
}

/// Reads the passphrase for the CA keys if the CA is encrypted.
pub fn ca_passphrase(ca: &Ca, p: &Passphrase) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match (&p.passphrase_file, ca.meta.encrypted) {
        (Some(f), _) => Ok(Some(key::read_passphrase(f)?)),
        (None, true) if crate::prompt::at_terminal() => Ok(Some(crate::prompt::passphrase(
            &format!("Passphrase for the CA keys in {}: ", ca.dir.display()),
        )?)),
        (None, true) => anyhow::bail!(
            "the CA keys in {} are encrypted: give their passphrase with --passphrase-file FILE (or MTLSGATE_CA_PASSPHRASE_FILE), or run the command at a terminal to be asked for it",
            ca.dir.display()
        ),
        (None, false) => Ok(None),
    }
}

fn init(a: CaInit) -> Result<ExitCode> {
    let pass = match (&a.passphrase_file, a.encrypt) {
        (Some(f), _) => Some(key::read_passphrase(f)?),
        (None, true) if crate::prompt::at_terminal() => Some(crate::prompt::new_passphrase(
            &format!("the CA keys in {}", a.ca.dir.display()),
        )?),
        (None, true) => anyhow::bail!(
            "--encrypt asks for the passphrase at a terminal, and there is none: give it with --passphrase-file FILE"
        ),
        (None, false) => None,
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
    let database = match &a.database {
        Some(url) => Some(Location::for_ca(&a.ca.dir, Some(url))?),
        None => None,
    };
    let made = block_on(Authority::init(
        &a.ca.dir,
        &opts,
        database.as_ref(),
        time::Duration::days(ADMIN_VALIDITY_DAYS),
    ))??;
    if let Some(url) = &a.database {
        mtlsgate_pki::ca::record_database(&made.dir, url)?;
    }
    let root_subject = made.root.info.subject.clone();
    let int_subject = made.intermediate.info.subject.clone();
    let dir = made.dir.clone();
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
    println!("  inventory:    {}", made.location);
    println!(
        "  admin:        {} and {} (0600): client certificate for the admin API",
        dir.join("admin.crt").display(),
        dir.join("admin.key").display()
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
    let now = OffsetDateTime::now_utc();
    let status = match &a.status {
        Some(s) => Some(CertStatus::parse(&s.to_ascii_lowercase()).with_context(|| {
            format!("invalid --status `{s}`: expected valid, revoked or expired")
        })?),
        None => None,
    };
    let filter = CertFilter {
        status,
        kind: a.kind.as_deref().map(str::to_ascii_lowercase),
        serial_prefix: a.serial.as_deref().map(|s| {
            s.trim()
                .trim_start_matches("0x")
                .replace(':', "")
                .to_ascii_uppercase()
        }),
        subject_contains: a.search.clone(),
        expiring_before: match &a.expiring {
            Some(d) => Some((now + parse_duration(d).context("--expiring")?).unix_timestamp()),
            None => None,
        },
        now: now.unix_timestamp(),
    };
    let now = now.unix_timestamp();
    #[derive(serde::Serialize)]
    struct Row<'a> {
        #[serde(flatten)]
        rec: &'a CertRecord,
        not_before_utc: String,
        not_after_utc: String,
        revoked: bool,
        expired: bool,
    }
    let mut p = Printer::new(&a.output);
    if p.table() {
        writeln!(
            p.out(),
            "{:<32}  {:<12}  {:<20}  {:<20}  {:<10}  {:<32}  SUBJECT",
            "SERIAL",
            "KIND",
            "NOT BEFORE",
            "NOT AFTER",
            "STATUS",
            "DEVICE ID"
        )?;
    }
    block_on(async {
        let auth = open_authority(&a.ca.dir, &a.db).await?;
        let r = async {
            let mut cursor: Option<String> = None;
            loop {
                let page = auth
                    .certificates_page(&filter, cursor.as_deref(), Some(a.output.page_size))
                    .await?;
                for r in &page.items {
                    if !p.table() {
                        p.json_row(&Row {
                            rec: r,
                            not_before_utc: fmt_ts(r.not_before),
                            not_after_utc: fmt_ts(r.not_after),
                            revoked: r.revoked_at.is_some(),
                            expired: r.not_after < now,
                        })?;
                        continue;
                    }
                    let status = if r.revoked_at.is_some() {
                        "revoked"
                    } else if r.not_after < now {
                        "expired"
                    } else {
                        "valid"
                    };
                    writeln!(
                        p.out(),
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
                p.flush()?;
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => return anyhow::Ok(()),
                }
            }
        }
        .await;
        auth.close().await;
        r
    })??;
    p.finish()?;
    Ok(ExitCode::SUCCESS)
}

fn fmt_ts(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(human_time)
        .unwrap_or_else(|_| t.to_string())
}

fn revoke(a: CaRevoke) -> Result<ExitCode> {
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
    let now = OffsetDateTime::now_utc();
    let rec = block_on(async {
        let auth = open_authority(&a.ca.dir, &a.db).await?;
        let r = auth.revoke_cert(&serial, reason, &actor(), now).await;
        auth.close().await;
        anyhow::Ok(r?)
    })??;
    println!(
        "Revoked {} ({}) at {}, reason {}",
        rec.serial,
        rec.subject,
        fmt_ts(rec.revoked_at.unwrap_or(now.unix_timestamp())),
        reason.as_str()
    );
    println!("Publish a new CRL: mtlsgate ca crl --out crl.pem");
    Ok(ExitCode::SUCCESS)
}

fn crl(a: CaCrl) -> Result<ExitCode> {
    let next = parse_duration(&a.next_update).context("--next-update")?;
    let set = block_on(async {
        let mut auth = open_authority(&a.ca.dir, &a.db).await?;
        let made = async {
            let pass = ca_passphrase(auth.ca(), &a.pass)?;
            auth.load_keys(pass.as_deref().map(|v| v.as_slice()))?;
            anyhow::Ok(auth.crl(next).await?)
        }
        .await;
        auth.close().await;
        made
    })??;
    let (crls, number) = (&set.crls, set.number);
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
                set.revoked_leaves + set.revoked_intermediates
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
