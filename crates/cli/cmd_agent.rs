//! `mtlsgate agent …`: enroll, run, status, whoami. Flags become `mtlsgate-agent` calls;
//! this module only prints and adds context.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use mtlsgate_agent::run::run_hook;
use mtlsgate_agent::{
    Bootstrap, Control, EnrollOptions, Enrolled, Outcome, Registration, RunOptions, ServerUrl,
};
use mtlsgate_pki::certinfo::{human_duration, human_time};
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{AgentCommand, AgentEnroll, AgentRun, AgentStatus, AgentWhoami};

pub fn run(cmd: AgentCommand) -> Result<ExitCode> {
    match cmd {
        AgentCommand::Enroll(a) => enroll(a),
        AgentCommand::Run(a) => run_agent(a),
        AgentCommand::Status(a) => status(a),
        AgentCommand::Whoami(a) => whoami(a),
    }
}

fn timeout(s: &str) -> Result<Duration> {
    let d = mtlsgate_pki::duration::parse_duration(s).context("--timeout")?;
    Ok(Duration::from_secs(
        u64::try_from(d.whole_seconds()).unwrap_or(30),
    ))
}

fn at(t: i64) -> String {
    human_time(OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// `2026-11-27 10:15:48 UTC (in 3h 2m)` or `(… ago)`.
fn at_relative(t: i64) -> String {
    let d = t - mtlsgate_agent::now_unix();
    match d {
        0 => format!("{} (now)", at(t)),
        1.. => format!("{} (in {})", at(t), human_duration(d)),
        _ => format!("{} ({} ago)", at(t), human_duration(d)),
    }
}

fn print_enrolled(e: &Enrolled, dir: &Path) {
    println!("enrolled as {}", e.device_id);
    println!(
        "certificate serial {}, valid until {}; next renewal at {}",
        e.serial,
        at(e.not_after),
        at(e.next_renewal)
    );
    println!(
        "files: {d}/client.crt, {d}/client.key, {d}/ca.crt",
        d = dir.display()
    );
    println!(
        "keep it fresh: mtlsgate agent run --dir {} (or the systemd units in dist/systemd)",
        dir.display()
    );
}

/// An EST server's base URL: as given when it names `/.well-known/est[/LABEL]`, else that
/// path added to the server's address.
fn est_base(url: &str) -> Result<ServerUrl> {
    let given = ServerUrl::parse(url)?;
    if mtlsgate_agent::http::is_est(&given) {
        return Ok(given);
    }
    if !given.prefix().is_empty() {
        anyhow::bail!(
            "--est {url}: an EST server's path is /.well-known/est (or /.well-known/est/LABEL), not {}",
            given.prefix()
        );
    }
    Ok(ServerUrl::parse(&format!(
        "{}/.well-known/est",
        url.trim_end_matches('/')
    ))?)
}

fn enroll(a: AgentEnroll) -> Result<ExitCode> {
    crate::cmd_serve::init_logging();
    let server = match (&a.server, &a.est) {
        (_, Some(est)) => est_base(est)?,
        (Some(s), None) => ServerUrl::parse(s)?,
        (None, None) => anyhow::bail!("give --server URL (or --est URL)"),
    };
    let bootstrap = match (&a.trust.ca_file, &a.trust.root_fingerprint) {
        (Some(f), _) => Bootstrap::CaFile(f.clone()),
        (None, Some(fp)) => Bootstrap::fingerprint(fp)?,
        (None, None) => anyhow::bail!("give --ca-file FILE or --root-fingerprint SHA256"),
    };
    let dir = a.dir.dir.clone();
    let opts = EnrollOptions {
        server,
        token: a.token.clone(),
        bootstrap,
        dir: dir.clone(),
        force: a.force,
        hostname: a.hostname.clone(),
        timeout: timeout(&a.timeout)?,
    };
    block_on(async move {
        let enrolled = match mtlsgate_agent::register(&opts).await? {
            Registration::Issued(e) => e,
            Registration::Pending(p) => {
                if p.resumed {
                    println!(
                        "device {} already registered with {} and waits for approval",
                        p.device_id, p.server
                    );
                } else {
                    println!(
                        "device {} is registered with {} and waits for approval",
                        p.device_id, p.server
                    );
                }
                println!(
                    "an operator approves it on the CA: mtlsgate devices approve {}",
                    p.device_id
                );
                if a.no_wait {
                    println!(
                        "mtlsgate agent run --dir {} finishes the enrollment once it is approved",
                        dir.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "waiting for approval (Ctrl-C stops waiting; mtlsgate agent run --dir {} finishes it later) …",
                    dir.display()
                );
                let control = Control::with_signals().context("cannot handle signals")?;
                match mtlsgate_agent::wait_for_approval(&dir, opts.timeout, &control).await? {
                    Some(e) => e,
                    None => {
                        println!(
                            "stopped waiting; device {} still waits for approval",
                            p.device_id
                        );
                        return Ok(ExitCode::from(130));
                    }
                }
            }
        };
        print_enrolled(&enrolled, &dir);
        if let Some(cmd) = &a.on_renew {
            run_hook(cmd, &dir, &enrolled.device_id).await;
        }
        Ok(ExitCode::SUCCESS)
    })?
}

fn run_agent(a: AgentRun) -> Result<ExitCode> {
    crate::cmd_serve::init_logging();
    let opts = RunOptions {
        dir: a.dir.dir.clone(),
        on_renew: a.on_renew.clone(),
        timeout: timeout(&a.timeout)?,
    };
    block_on(async move {
        if a.once {
            match mtlsgate_agent::run_once(&opts).await? {
                Outcome::NothingDue { next_renewal } => {
                    tracing::info!("nothing due; next renewal at {}", at(next_renewal))
                }
                Outcome::StillPending { device_id } => tracing::info!(
                    "device {device_id} still waits for approval (mtlsgate devices approve {device_id})"
                ),
                // Logged by the agent as they happened.
                Outcome::Renewed(_) | Outcome::Recovered(_) | Outcome::Approved(_) => {}
            }
            return Ok(ExitCode::SUCCESS);
        }
        let control = Control::with_signals().context("cannot handle signals")?;
        mtlsgate_agent::run(&opts, &control).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })?
}

fn status(a: AgentStatus) -> Result<ExitCode> {
    let s = mtlsgate_agent::status(&a.dir.dir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("device         {}", s.device_id);
    println!("server         {}", s.server);
    if s.state == "pending" {
        println!(
            "state          waiting for approval since {} (mtlsgate devices approve {})",
            s.registered_at.map(at).unwrap_or_default(),
            s.device_id
        );
        if let Some(k) = &s.pending_key_sha256 {
            println!("key SHA-256    {k} (the dashboard's pending queue shows it too)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    match (&s.serial, s.not_after) {
        (Some(serial), Some(na)) => {
            let state = if na <= mtlsgate_agent::now_unix() {
                "expired"
            } else {
                "valid until"
            };
            println!(
                "certificate    serial {serial}, {state} {}",
                at_relative(na)
            );
        }
        _ => println!(
            "certificate    missing or unreadable ({})",
            a.dir.dir.join("client.crt").display()
        ),
    }
    println!(
        "next renewal   {}",
        s.next_renewal
            .map(at_relative)
            .unwrap_or_else(|| "not scheduled".into())
    );
    println!(
        "last renewal   {}",
        s.last_renewal
            .map(at_relative)
            .unwrap_or_else(|| "never (enrolled at ".to_string()
                + &s.enrolled_at.map(at).unwrap_or_default()
                + ")")
    );
    match &s.last_error {
        Some(e) => println!("last error     {}: {}", at(e.at), e.message),
        None => println!("last error     none"),
    }
    match s.recovery_expires {
        // An enrollment over EST carries no recovery token.
        Some(r) if r > 0 => println!("recovery until {}", at(r)),
        Some(_) => println!("recovery       none (enrolled over EST: once expired, enroll again)"),
        None => {}
    }
    if !s.tags.is_empty() {
        println!("tags           {}", s.tags.join(", "));
    }
    if let Some(p) = &s.pending_device_id {
        println!("enrolling anew as {p}, waiting for approval");
        if let Some(k) = &s.pending_key_sha256 {
            println!("key SHA-256    {k}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn whoami(a: AgentWhoami) -> Result<ExitCode> {
    let s = mtlsgate_agent::status(&a.dir.dir)?;
    if a.json {
        println!("{}", serde_json::json!({ "device_id": s.device_id }));
    } else {
        println!("{}", s.device_id);
    }
    Ok(ExitCode::SUCCESS)
}
