//! `mtlsgate ca serve`: opens the CA (keys and inventory), starts the HTTPS API of
//! `mtlsgate-ca-server`, says where it listens, the root's fingerprint and the command a
//! device runs to enroll, tidies the inventory every `--tidy-every` (`cmd_ca_tidy`), and
//! stops on SIGTERM or Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use mtlsgate_authority::{Authority, Inventory, Policy, PostgresOptions};
use mtlsgate_ca_server::{CaServer, Limits, ServerNames};
use mtlsgate_dashboard::Dashboard;
use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::duration::parse_duration;

use crate::cmd_ca::ca_passphrase;
use crate::flags::{CaServe, RetentionFlags};
use crate::fleet::location;

/// How long a request waits for a PostgreSQL connection before it is answered with 503
/// (the database is away); SQLite requests queue for the file instead.
const DATABASE_WAIT: StdDuration = StdDuration::from_secs(5);
/// PostgreSQL connections of the server.
const DATABASE_CONNECTIONS: u32 = 10;

fn duration(flag: &str, v: &str) -> Result<time::Duration> {
    parse_duration(v).with_context(|| flag.to_string())
}

/// `TAG=DURATION` of --tag-lifetime.
fn tag_lifetime(v: &str) -> Result<(String, time::Duration)> {
    let (tag, d) = v
        .split_once('=')
        .filter(|(t, d)| !t.trim().is_empty() && !d.trim().is_empty())
        .with_context(|| format!("--tag-lifetime {v}: expected TAG=DURATION, like cameras=6h"))?;
    Ok((
        tag.trim().to_string(),
        duration(&format!("--tag-lifetime {v}"), d.trim())?,
    ))
}

fn policy(a: &CaServe) -> Result<Policy> {
    let p = Policy {
        default_lifetime: duration("--default-lifetime", &a.default_lifetime)?,
        max_lifetime: duration("--max-lifetime", &a.max_lifetime)?,
        min_lifetime: duration("--min-lifetime", &a.min_lifetime)?,
        recovery_grace: duration("--recovery-grace", &a.recovery_grace)?,
        tag_lifetimes: a
            .tag_lifetime
            .iter()
            .map(|v| tag_lifetime(v))
            .collect::<Result<_>>()?,
        approval_queue: !a.no_approval_queue,
        pending_limit: a.pending_limit,
        pending_ttl: duration("--pending-ttl", &a.pending_ttl)?,
        enroll_burst: a.enroll_burst,
        enroll_refill: duration("--enroll-refill", &a.enroll_refill)?,
    };
    if a.enroll_burst == 0 {
        anyhow::bail!("--enroll-burst 0: give at least 1 (to refuse enrollments without a token, use --no-approval-queue)");
    }
    if p.min_lifetime > p.max_lifetime {
        anyhow::bail!(
            "--min-lifetime {} is longer than --max-lifetime {}",
            a.min_lifetime,
            a.max_lifetime
        );
    }
    for ((tag, d), given) in p.tag_lifetimes.iter().zip(&a.tag_lifetime) {
        if *d < p.min_lifetime || *d > p.max_lifetime {
            anyhow::bail!(
                "--tag-lifetime {given}: the lifetime for tag {tag} is outside --min-lifetime {} … --max-lifetime {}",
                a.min_lifetime,
                a.max_lifetime
            );
        }
    }
    if p.default_lifetime < p.min_lifetime || p.default_lifetime > p.max_lifetime {
        anyhow::bail!(
            "--default-lifetime {} is outside --min-lifetime {} … --max-lifetime {}",
            a.default_lifetime,
            a.min_lifetime,
            a.max_lifetime
        );
    }
    Ok(p)
}

/// The connections' deadlines and caps from the flags.
fn limits(a: &CaServe) -> Result<Limits> {
    let secs = |flag: &str, v: &str| -> Result<StdDuration> {
        let d = duration(flag, v)?;
        Ok(StdDuration::from_secs(d.whole_seconds().unsigned_abs()))
    };
    for (flag, n) in [
        ("--max-connections", a.max_connections),
        (
            "--max-connections-per-address",
            a.max_connections_per_address,
        ),
    ] {
        if n == 0 {
            anyhow::bail!("{flag} 0: at least one connection must be allowed");
        }
    }
    Ok(Limits {
        first_request: secs("--first-request-timeout", &a.first_request_timeout)?,
        header_read: secs("--header-timeout", &a.header_timeout)?,
        body_read: secs("--body-timeout", &a.body_timeout)?,
        idle: secs("--idle-timeout", &a.idle_timeout)?,
        max_connections: a.max_connections,
        max_per_address: a.max_connections_per_address,
    })
}

pub fn listen_addr(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("--listen {s}: expected HOST:PORT, like 0.0.0.0:8444"))?
        .next()
        .with_context(|| format!("--listen {s}: the name has no address"))
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot watch for SIGTERM/SIGINT; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping (requests under way finish first)"),
        _ = int.recv() => tracing::info!("interrupted: stopping (requests under way finish first)"),
    }
}

/// `--tidy-every`: how often, or `None` for `off`.
fn tidy_every(v: &str) -> Result<Option<StdDuration>> {
    if v.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = duration("--tidy-every (a duration, or off)", v)?;
    Ok(Some(StdDuration::from_secs(
        d.whole_seconds().unsigned_abs(),
    )))
}

/// Tidies the inventory now and then every `every`, saying what went (the tasks ends with
/// the runtime). A failed tidy is logged and tried again at the next turn.
fn spawn_tidy(inv: Inventory, dir: std::path::PathBuf, flags: RetentionFlags, every: StdDuration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let done = async {
                let r = crate::cmd_ca_tidy::retention(&dir, &flags, false)?;
                crate::cmd_ca_tidy::tidy(&inv, &r, &flags).await
            }
            .await;
            match done {
                Ok((t, said)) if t.certificates + t.recovery_tokens + t.audit > 0 => {
                    tracing::info!("tidy: {said}")
                }
                Ok((_, said)) => tracing::debug!("tidy: {said}"),
                Err(e) => tracing::warn!("tidy failed (tried again in {every:?}): {e:#}"),
            }
        }
    });
}

pub fn run(a: CaServe) -> Result<ExitCode> {
    crate::cmd_serve::init_logging();
    let policy = policy(&a)?;
    let tidy = tidy_every(&a.tidy_every)?;
    // The retention flags are checked before the server starts.
    crate::cmd_ca_tidy::retention(&a.ca.dir, &a.retention, false)?;
    let limits = limits(&a)?;
    let lifetime = duration("--server-cert-lifetime", &a.server_cert_lifetime)?;
    let listen = listen_addr(&a.listen)?;
    let names = ServerNames {
        dns: if a.dns.is_empty() {
            vec!["localhost".into()]
        } else {
            a.dns.clone()
        },
        ips: if a.ip.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            a.ip.clone()
        },
        lifetime,
    };
    let rt = crate::cmd_serve::runtime(None)?;
    rt.block_on(async {
        let dir = &a.ca.dir;
        let loc = location(dir, &a.db)?;
        let pg = PostgresOptions {
            wait: DATABASE_WAIT,
            connections: DATABASE_CONNECTIONS,
        };
        let mut auth = Authority::open_with(dir, Some(&loc), policy, pg).await?;
        let pass = ca_passphrase(auth.ca(), &a.pass)?;
        auth.load_keys(pass.as_deref().map(|v| v.as_slice()))?;
        let fingerprint = mtlsgate_pki::verify::fingerprint_sha256(&auth.ca().root_der);
        let inv = auth.inventory().clone();
        let mut server = CaServer::bind(auth, listen, names.clone())
            .await?
            .with_limits(limits);
        if let Some(f) = &a.est_bootstrap_ca {
            let cas = mtlsgate_pki::pemfile::read_certs(f)
                .with_context(|| format!("reading the EST bootstrap CAs from {}", f.display()))?;
            server = server.with_est_bootstrap(cas)?;
        }
        let addr = server.local_addr()?;
        // --dashboard-listen: the fleet dashboard (`mtlsgate-dashboard`) over the same
        // authority; it stops on the same signals.
        let ca_url = format!("https://{}:{}", names.dns[0], addr.port());
        let dashboard = match &a.dashboard_listen {
            Some(d) => {
                let addr = listen_addr(d).with_context(|| "--dashboard-listen".to_string())?;
                let dash = Dashboard::bind(server.shared_authority(), addr)
                    .await?
                    .enroll_server(ca_url);
                tracing::info!(
                    "fleet dashboard on http://localhost:{}/ (sign in with a link from `mtlsgate admin login-link --dir {} --url http://localhost:{} --user NAME`)",
                    dash.local_addr()?.port(),
                    dir.display(),
                    dash.local_addr()?.port()
                );
                Some(tokio::spawn(dash.run(dashboard_stop())))
            }
            None => None,
        };
        let p = server.presented();
        let mut shown_names: Vec<String> = names.dns.clone();
        shown_names.extend(names.ips.iter().map(|i| i.to_string()));
        tracing::info!(
            "listening on {addr} (HTTPS; inventory {loc}; server certificate {} for {}, renewed at {})",
            p.serial,
            shown_names.join(", "),
            human_time(p.renew_at)
        );
        tracing::info!("root CA SHA-256 fingerprint: {fingerprint}");
        let host = &names.dns[0];
        tracing::info!(
            "enroll a device: mtlsgate agent enroll --server https://{host}:{} --root-fingerprint {fingerprint} --token TOKEN",
            addr.port()
        );
        if a.no_approval_queue {
            tracing::info!(
                "  (TOKEN from `mtlsgate token create --dir {}`; enrollments without a token are refused: --no-approval-queue)",
                dir.display()
            );
        } else {
            tracing::info!(
                "  (TOKEN from `mtlsgate token create --dir {}`; without --token the device waits for `mtlsgate devices approve ID`)",
                dir.display()
            );
        }
        match tidy {
            Some(every) => spawn_tidy(inv, dir.clone(), a.retention.clone(), every),
            None => tracing::info!("the inventory is not tidied (--tidy-every off): run `mtlsgate ca tidy` now and then"),
        }
        server.run(stop_signal()).await?;
        if let Some(d) = dashboard {
            match d.await {
                Ok(r) => r?,
                Err(e) => tracing::warn!("the dashboard stopped abnormally: {e}"),
            }
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves when SIGTERM or SIGINT arrives, for the dashboard (`stop_signal` says it in
/// the log, once).
async fn dashboard_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
