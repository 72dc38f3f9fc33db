//! `mtlsgate cert …`: issue, sign, p12, inspect, verify.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::{admin_request, Authority, Signed};
use mtlsgate_pki::ca::{CertKind, LeafRequest};
use mtlsgate_pki::certinfo::{human_duration, human_time, openssl_time, CertInfo};
use mtlsgate_pki::duration::parse_duration;
use mtlsgate_pki::pki_types::{CertificateDer, ServerName, UnixTime};
use mtlsgate_pki::printable::printable;
use mtlsgate_pki::verify::{Purpose, Verifier};
use mtlsgate_pki::{ca, fsutil, key, p12, pemfile, PkiError};
use time::OffsetDateTime;

use crate::block_on;
use crate::cmd_ca::ca_passphrase;
use crate::flags::{
    CertCommand, CertInspect, CertP12, CertSign, CertVerify, IssueCommon, IssueKind, LeafKind,
};
use crate::fleet::{actor, open_authority};

pub fn run(cmd: CertCommand) -> Result<ExitCode> {
    match cmd {
        CertCommand::Issue(IssueKind::Server(s)) => issue(
            CertKind::Server,
            &s.name,
            s.dns,
            s.ip,
            Vec::new(),
            None,
            s.common,
        ),
        CertCommand::Issue(IssueKind::Client(c)) => issue(
            CertKind::Client,
            &c.name,
            c.dns,
            Vec::new(),
            c.uri,
            c.device_id,
            c.common,
        ),
        CertCommand::Issue(IssueKind::Admin(a)) => {
            let validity = default_validity(CertKind::Client, a.common.valid.as_deref())?;
            let req = admin_request(&a.name, validity);
            issue_request(req, a.common)
        }
        CertCommand::Sign(s) => sign(s),
        CertCommand::P12(p) => make_p12(p),
        CertCommand::Inspect(i) => inspect(i),
        CertCommand::Verify(v) => verify(v),
    }
}

fn default_validity(kind: CertKind, given: Option<&str>) -> Result<time::Duration> {
    match given {
        Some(v) => Ok(parse_duration(v).context("--valid")?),
        None => Ok(match kind {
            CertKind::Server => time::Duration::days(90),
            _ => time::Duration::days(7),
        }),
    }
}

fn issue(
    kind: CertKind,
    name: &str,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    uris: Vec<String>,
    device_id: Option<String>,
    common: IssueCommon,
) -> Result<ExitCode> {
    let validity = default_validity(kind, common.valid.as_deref())?;
    let req = LeafRequest {
        kind,
        name: name.to_string(),
        dns,
        ips,
        uris,
        device_id,
        validity,
        key_type: common.key_type.into(),
    };
    issue_request(req, common)
}

/// `cert issue …`: signs `req`, writes NAME.key, records the certificate, writes NAME.crt
/// (leaf + intermediate) and ca.crt.
fn issue_request(mut req: LeafRequest, common: IssueCommon) -> Result<ExitCode> {
    ca::check_name(&req.name)?;
    req.key_type = common.key_type.into();
    let kind = req.kind;
    let name = req.name.clone();
    let crt_path = common.out.join(format!("{name}.crt"));
    let key_path = common.out.join(format!("{name}.key"));
    let ca_path = common.out.join("ca.crt");
    let (issued, bundle, in_inventory) = block_on(async {
        // Opened first: a missing CA or a damaged inventory is refused before any file is
        // written.
        let mut auth = open_authority(&common.ca.dir, &common.db).await?;
        let done = async {
            if !common.force {
                for p in [&crt_path, &key_path] {
                    if p.exists() {
                        anyhow::bail!(
                            "{} already exists: refusing to overwrite it (use --force to replace it, or another NAME)",
                            p.display()
                        );
                    }
                }
            }
            // NAME.key is never overwritten without --force; nor is another CA's ca.crt,
            // which whatever reads it trusts.
            if !common.force {
                refuse_other_bundle(&ca_path, &auth.bundle_pem())?;
            }
            if !common.out.is_dir() {
                std::fs::create_dir_all(&common.out)
                    .with_context(|| format!("cannot create {}", common.out.display()))?;
            }
            if let (CertKind::Client, Some(id)) = (kind, &req.device_id) {
                auth.check_issuable(id).await?;
            }
            let pass = ca_passphrase(auth.ca(), &common.pass)?;
            auth.load_keys(pass.as_deref().map(|v| v.as_slice()))?;
            let signed = auth.sign_leaf(&req)?;
            let issued = if common.force {
                write_replacing(&auth, signed, &key_path, &crt_path).await?
            } else {
                write_exclusive(&auth, signed, &key_path, &crt_path).await?
            };
            // Whether a gateway that allows by the inventory knows the device.
            let in_inventory = match (&kind, &issued.info.device_id) {
                (CertKind::Client, Some(id)) => auth
                    .inventory()
                    .device(&id.to_ascii_lowercase())
                    .await?
                    .map(|d| d.status),
                _ => None,
            };
            anyhow::Ok((issued, auth.bundle_pem(), in_inventory))
        }
        .await;
        auth.close().await;
        done
    })??;
    fsutil::write_atomic(&ca_path, bundle.as_bytes(), fsutil::PUBLIC_MODE)?;
    let i = &issued.info;
    let is_admin = i.uris.iter().any(|u| u == mtlsgate_authority::ADMIN_URI);
    println!(
        "Issued {} certificate {}",
        if is_admin { "admin" } else { kind.as_str() },
        i.subject
    );
    println!("  serial:     {}", i.serial);
    if let (CertKind::Client, Some(d), false) = (kind, &i.device_id, is_admin) {
        println!("  device ID:  {d}");
        match in_inventory {
            Some(status) => println!("  inventory:  device {} is {status} in the inventory", d.to_ascii_lowercase()),
            None => println!(
                "  inventory:  device {} is not in the inventory, so gateways that allow by the inventory refuse it; record it: mtlsgate devices import {} --dir {}",
                d.to_ascii_lowercase(),
                crt_path.display(),
                common.ca.dir.display()
            ),
        }
    }
    let sans: Vec<String> = i
        .dns_names
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(i.ip_addresses.iter().map(|d| format!("IP:{d}")))
        .chain(i.uris.iter().map(|d| format!("URI:{d}")))
        .collect();
    if !sans.is_empty() {
        println!("  SANs:       {}", sans.join(", "));
    }
    println!("  valid until {}", human_time(i.not_after));
    println!("  wrote {} (leaf + intermediate)", crt_path.display());
    println!("        {} (private key, 0600)", key_path.display());
    println!("        {} (CA bundle)", ca_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses to replace a `ca.crt` that holds other certificates than this CA's bundle.
fn refuse_other_bundle(ca_path: &Path, bundle: &str) -> Result<()> {
    let existing = match std::fs::read(ca_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", ca_path.display())),
    };
    let ours = pemfile::certs_from_blocks(
        "the CA bundle",
        pemfile::parse_blocks("the CA bundle", bundle.as_bytes())?,
    )?;
    let theirs = pemfile::parse_blocks(&ca_path.display().to_string(), &existing)
        .and_then(|b| pemfile::certs_from_blocks(&ca_path.display().to_string(), b))
        .unwrap_or_default();
    if theirs != ours {
        anyhow::bail!(
            "{} holds another CA's certificates: refusing to replace it (what trusts it would stop trusting its peers); use --force to replace it, or another --out",
            ca_path.display()
        );
    }
    Ok(())
}

/// `--force`: record, then replace the files.
async fn write_replacing(
    auth: &Authority,
    signed: Signed,
    key_path: &Path,
    crt_path: &Path,
) -> Result<mtlsgate_pki::ca::Issued> {
    let key_pem = signed.key_pem()?;
    let (issued, _key) = auth.record(signed, &actor()).await?;
    fsutil::write_atomic(key_path, key_pem.as_bytes(), fsutil::SECRET_MODE)?;
    fsutil::write_atomic(
        crt_path,
        auth.chain_pem(&issued).as_bytes(),
        fsutil::PUBLIC_MODE,
    )?;
    Ok(issued)
}

/// Without `--force`: the key file is created first and exclusively, which makes it the
/// lock: of several processes issuing the same NAME at once exactly one creates it, and
/// the others stop before recording anything. Then the inventory record, then the
/// certificate (also exclusively). If a later step fails, what this process created is
/// removed again.
async fn write_exclusive(
    auth: &Authority,
    signed: Signed,
    key_path: &Path,
    crt_path: &Path,
) -> Result<mtlsgate_pki::ca::Issued> {
    let key_pem = signed.key_pem()?;
    fsutil::write_new(key_path, key_pem.as_bytes(), fsutil::SECRET_MODE).map_err(exists_hint)?;
    let issued = match auth.record(signed, &actor()).await {
        Ok((issued, _key)) => issued,
        Err(e) => {
            fsutil::remove_created(key_path);
            return Err(e.into());
        }
    };
    let chain = auth.chain_pem(&issued);
    if let Err(e) = fsutil::write_new(crt_path, chain.as_bytes(), fsutil::PUBLIC_MODE) {
        fsutil::remove_created(key_path);
        let _ = auth.forget_unissued(&issued.info.serial).await;
        return Err(exists_hint(e));
    }
    Ok(issued)
}

/// Adds the way out to "already exists".
fn exists_hint(e: PkiError) -> anyhow::Error {
    match e {
        PkiError::AlreadyExists(p) => anyhow::anyhow!(
            "{} already exists: refusing to overwrite it (use --force to replace it, or another NAME)",
            p.display()
        ),
        other => other.into(),
    }
}

fn sign(s: CertSign) -> Result<ExitCode> {
    let kind = match s.kind {
        LeafKind::Client => CertKind::Client,
        LeafKind::Server => CertKind::Server,
    };
    let validity = default_validity(kind, s.valid.as_deref())?;
    let (issued, chain) = block_on(async {
        let mut auth = open_authority(&s.ca.dir, &s.db).await?;
        let done = async {
            let data = fsutil::read(&s.csr)?;
            let pass = ca_passphrase(auth.ca(), &s.pass)?;
            auth.load_keys(pass.as_deref().map(|v| v.as_slice()))?;
            let issued = auth
                .sign_csr(
                    &s.csr.display().to_string(),
                    &data,
                    kind,
                    validity,
                    &actor(),
                )
                .await
                .with_context(|| format!("cannot sign {}", s.csr.display()))?;
            let chain = auth.chain_pem(&issued);
            anyhow::Ok((issued, chain))
        }
        .await;
        auth.close().await;
        done
    })??;
    match &s.out {
        Some(p) => {
            fsutil::write_atomic(p, chain.as_bytes(), fsutil::PUBLIC_MODE)?;
            eprintln!(
                "Signed {} certificate {} (serial {}), wrote {}",
                kind.as_str(),
                issued.info.subject,
                issued.info.serial,
                p.display()
            );
        }
        None => print!("{chain}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn make_p12(p: CertP12) -> Result<ExitCode> {
    let chain = pemfile::read_certs(&p.cert)?;
    let key_pass = match &p.key_passphrase_file {
        Some(f) => Some(key::read_passphrase(f)?),
        None => None,
    };
    let kp = key::read_key(&p.key, key_pass.as_deref().map(|v| v.as_slice()))?;
    ca::check_pair(&chain[0], &kp, &p.cert, &p.key)?;
    let password = key::read_passphrase(&p.password_file)?;
    let password = std::str::from_utf8(&password)
        .context("the PKCS#12 password must be UTF-8 text")?
        .to_string();
    let info = CertInfo::from_der(&chain[0])?;
    let name = p
        .name
        .clone()
        .or(info.common_name.clone())
        .unwrap_or_else(|| "mtlsgate".into());
    let der = zeroize::Zeroizing::new(kp.serialize_der());
    let bytes = p12::build(&chain, &der, &password, &name, p.legacy)?;
    fsutil::write_atomic(&p.out, &bytes, fsutil::SECRET_MODE)?;
    println!(
        "Wrote {} ({}, {} certificate(s), friendly name \"{name}\", 0600)",
        p.out.display(),
        if p.legacy {
            "legacy 3DES/SHA-1"
        } else {
            "AES-256/SHA-256"
        },
        chain.len()
    );
    println!(
        "Use it: curl --cert-type P12 --cert {}:PASSWORD https://…",
        p.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(i: CertInspect) -> Result<ExitCode> {
    let certs = pemfile::read_certs(&i.file)?;
    let infos: Vec<CertInfo> = certs
        .iter()
        .map(|d| CertInfo::from_der(d))
        .collect::<Result<_, _>>()?;
    let now = OffsetDateTime::now_utc();
    if i.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            info: &'a CertInfo,
            not_before_openssl: String,
            not_after_openssl: String,
            seconds_remaining: i64,
            expired: bool,
        }
        let out: Vec<Out<'_>> = infos
            .iter()
            .map(|c| Out {
                info: c,
                not_before_openssl: openssl_time(c.not_before),
                not_after_openssl: openssl_time(c.not_after),
                seconds_remaining: c.seconds_remaining(now),
                expired: c.seconds_remaining(now) < 0,
            })
            .collect();
        if out.len() == 1 {
            println!("{}", serde_json::to_string_pretty(&out[0])?);
        } else {
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut o = std::io::stdout().lock();
    for (n, c) in infos.iter().enumerate() {
        if infos.len() > 1 {
            writeln!(o, "--- certificate {} of {} ---", n + 1, infos.len())?;
        }
        print_info(&mut o, c, now)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_info(o: &mut impl Write, c: &CertInfo, now: OffsetDateTime) -> std::io::Result<()> {
    writeln!(o, "Subject:      {}", c.subject)?;
    writeln!(o, "Issuer:       {}", c.issuer)?;
    writeln!(o, "Serial:       {}", c.serial)?;
    // Certificate text is printed with control bytes escaped (`\xHH`): a certificate must
    // not be able to send escape sequences to a terminal.
    if let Some(d) = &c.device_id {
        writeln!(o, "Device ID:    {}", printable(d))?;
    }
    if let Some(s) = &c.spiffe_id {
        writeln!(o, "SPIFFE ID:    {}", printable(s))?;
    }
    let mut sans: Vec<String> = Vec::new();
    sans.extend(c.dns_names.iter().map(|d| format!("DNS:{}", printable(d))));
    sans.extend(c.ip_addresses.iter().map(|d| format!("IP:{d}")));
    sans.extend(c.uris.iter().map(|d| format!("URI:{}", printable(d))));
    sans.extend(c.emails.iter().map(|d| format!("email:{}", printable(d))));
    writeln!(
        o,
        "SANs:         {}",
        if sans.is_empty() {
            "(none)".into()
        } else {
            sans.join(", ")
        }
    )?;
    writeln!(o, "Key:          {}", c.key)?;
    if c.version == 1 {
        writeln!(
            o,
            "Version:      1 (no extensions: no SANs; no EKU, so any purpose)"
        )?;
    }
    writeln!(
        o,
        "EKU:          {}",
        if c.extended_key_usages.is_empty() {
            "(none: any purpose)".into()
        } else {
            c.extended_key_usages.join(", ")
        }
    )?;
    writeln!(
        o,
        "CA:           {}{}",
        if c.is_ca { "yes" } else { "no" },
        if c.self_signed { " (self-signed)" } else { "" }
    )?;
    writeln!(o, "Not before:   {}", human_time(c.not_before))?;
    writeln!(o, "Not after:    {}", human_time(c.not_after))?;
    let rem = c.seconds_remaining(now);
    if rem >= 0 {
        writeln!(o, "Remaining:    {}", human_duration(rem))?;
    } else {
        writeln!(o, "Remaining:    EXPIRED {} ago", human_duration(rem))?;
    }
    writeln!(o, "SHA-256:      {}", c.sha256_fingerprint)?;
    writeln!(o, "SHA-1:        {}", c.sha1_fingerprint)?;
    Ok(())
}

fn verify(v: CertVerify) -> Result<ExitCode> {
    let at = v.at.as_deref().map(parse_at).transpose()?;
    let name = v
        .name
        .as_deref()
        .map(|n| {
            ServerName::try_from(n.to_string()).map_err(|_| PkiError::InvalidInput {
                what: "--name",
                value: n.into(),
                reason: "expected a DNS name (server.example.com) or an IP address".into(),
            })
        })
        .transpose()?;
    let chain = pemfile::read_certs(&v.file)?;
    let bundle = pemfile::read_certs(&v.ca).context("reading the CA bundle (--ca)")?;
    let mut crls = Vec::new();
    for f in &v.crl {
        crls.extend(pemfile::read_crls(f)?);
    }
    let verifier = Verifier::new(bundle, crls, v.depth)?;
    let kind = v.purpose.unwrap_or(if name.is_some() {
        LeafKind::Server
    } else {
        LeafKind::Client
    });
    let purpose = match kind {
        LeafKind::Client => Purpose::Client,
        LeafKind::Server => Purpose::Server,
    };
    let ders: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let Some(leaf) = ders.first() else {
        anyhow::bail!("{}: no certificate in it", display(&v.file));
    };
    let info = CertInfo::from_der(leaf)?;
    let when = at.unwrap_or_else(OffsetDateTime::now_utc);
    let unix = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(when.unix_timestamp()).unwrap_or(0),
    ));
    let verdict = verifier
        .verify(&ders, purpose, unix)
        .and_then(|()| match &name {
            Some(n) => Verifier::check_name(leaf, n),
            None => Ok(()),
        });
    match verdict {
        Ok(()) => {
            let whose = match &v.name {
                Some(n) => format!(" for {}", printable(n)),
                None => String::new(),
            };
            let remaining = info.seconds_remaining(when);
            println!(
                "OK: {} is valid for TLS {} authentication{whose} until {} ({} {})",
                info.subject,
                match purpose {
                    Purpose::Client => "client",
                    Purpose::Server => "server",
                },
                human_time(info.not_after),
                human_duration(remaining),
                if at.is_some() {
                    "left at that time"
                } else {
                    "left"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("mtlsgate: {}: {f}", display(&v.file));
            Ok(ExitCode::from(1))
        }
    }
}

/// `--at`: RFC 3339, or whole seconds since 1970.
fn parse_at(s: &str) -> Result<OffsetDateTime, PkiError> {
    let t = s.trim();
    let parsed = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<i64>()
            .ok()
            .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
    } else {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    parsed
        .filter(|d| d.unix_timestamp() >= 0)
        .ok_or_else(|| PkiError::InvalidInput {
            what: "--at",
            value: s.into(),
            reason: "expected an RFC 3339 time such as 2030-01-31T12:00:00Z, or Unix seconds such as 1900000000 (not before 1970)".into(),
        })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
