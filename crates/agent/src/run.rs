//! `agent run`: keeps the certificate fresh.
//!
//! - Renewal at the time [`crate::schedule`] picks (two thirds of the lifetime ± 5 %), over
//!   mTLS with the current certificate (`POST /v1/renew`), with a new key made on the
//!   device each time; at once on SIGHUP ([`Control::renew_now`]).
//! - After expiry, recovery with the recovery token (`POST /v1/recover`, signed by the old
//!   key).
//! - Failures are retried with capped exponential back-off (1 s … 5 min, jittered);
//!   refusals wait the longest back-off. The last error goes into `agent.json`.
//! - `ca.crt` is refreshed from `GET /v1/ca.pem` after each renewal, and when a renewal
//!   fails because the server's certificate has an unknown issuer (then the renewal is
//!   tried once more); roots the server no longer lists stay while they are valid.
//! - `--on-renew CMD` runs through `sh -c` after each new certificate, with
//!   `MTLSGATE_DEVICE_ID`, `MTLSGATE_CERT` and `MTLSGATE_KEY` in its environment.
//! - A pending enrollment (`agent enroll --no-wait`, or interrupted) is finished first.
//! - SIGTERM (and Ctrl-C) stop it between steps; a renewal under way is finished first,
//!   so that no issued certificate (and rotated recovery token) is lost.
//!
//! [`run_once`] does one step for cron and systemd timers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::fsutil;
use rand::Rng as _;
use tokio::sync::{watch, Notify};

use crate::bundle;
use crate::enroll::{self, install_issued, Enrolled, Install, Poll, LOCK_WAIT};
use crate::error::{AgentError, Result};
use crate::http::{Api, RecoverBody, ServerUrl};
use crate::keys;
use crate::schedule::{self, Due};
use crate::state::{AgentState, Identity, LastError, StateDir};
use crate::trust::{self, ClientIdentity};

/// The longest single sleep: the loop looks at the clock and the files again at least this
/// often (a suspended machine's monotonic clock lags the wall clock).
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// How long an `--on-renew` command may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// A uniform random number in `[-1, 1]` for the schedule's jitter.
pub(crate) fn jitter() -> f64 {
    rand::thread_rng().gen_range(-1.0..=1.0)
}

/// Tells a running agent to renew now or to stop (what SIGHUP and SIGTERM do).
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    renew: Notify,
    stop: watch::Sender<bool>,
}

/// Why [`Control::sleep`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Elapsed,
    RenewNow,
    Stop,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    pub fn new() -> Self {
        Control {
            inner: Arc::new(Inner {
                renew: Notify::new(),
                stop: watch::channel(false).0,
            }),
        }
    }

    /// A control driven by this process's signals: SIGHUP renews now, SIGTERM and SIGINT
    /// stop. Needs a running tokio runtime.
    pub fn with_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let c = Control::new();
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let c2 = c.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP: renewing now");
                        c2.renew_now();
                    }
                    Some(()) = term.recv() => {
                        tracing::info!("SIGTERM: stopping");
                        c2.stop();
                    }
                    Some(()) = int.recv() => {
                        tracing::info!("interrupted: stopping");
                        c2.stop();
                    }
                    else => break,
                }
            }
        });
        Ok(c)
    }

    /// Renew at once (the next wait ends now).
    pub fn renew_now(&self) {
        self.inner.renew.notify_one();
    }

    /// Stop at the next wait.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Sleeps for `d`, or less when told to renew or stop.
    pub async fn sleep(&self, d: Duration) -> Wake {
        let mut stop = self.inner.stop.subscribe();
        if *stop.borrow_and_update() {
            return Wake::Stop;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Wake::Elapsed,
            _ = self.inner.renew.notified() => Wake::RenewNow,
            _ = stop.wait_for(|s| *s) => Wake::Stop,
        }
    }
}

/// What `agent run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dir: PathBuf,
    /// Run through `sh -c` after each new certificate.
    pub on_renew: Option<String>,
    /// Time limit of each request.
    pub timeout: Duration,
}

/// What one step ([`run_once`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The certificate is not due for renewal before `next_renewal`.
    NothingDue {
        next_renewal: i64,
    },
    Renewed(Enrolled),
    Recovered(Enrolled),
    /// A pending enrollment was approved and its certificate installed.
    Approved(Enrolled),
    /// A pending enrollment still waits for approval.
    StillPending {
        device_id: String,
    },
}

/// How an `--on-renew` command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    Exited(i32),
    Signalled(i32),
    NotStarted(String),
    TimedOut,
}

/// Runs `cmd` through `sh -c` with `MTLSGATE_DEVICE_ID`, `MTLSGATE_CERT` and
/// `MTLSGATE_KEY` (absolute paths) set, and logs how it ended.
pub async fn run_hook(cmd: &str, dir: &Path, device_id: &str) -> HookStatus {
    let sd = StateDir::new(dir);
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("MTLSGATE_DEVICE_ID", device_id)
        .env("MTLSGATE_CERT", abs(sd.client_crt()))
        .env("MTLSGATE_KEY", abs(sd.client_key()))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let status = match c.spawn() {
        Err(e) => HookStatus::NotStarted(e.to_string()),
        Ok(mut child) => match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
            Err(_) => {
                let _ = child.kill().await;
                HookStatus::TimedOut
            }
            Ok(Err(e)) => HookStatus::NotStarted(e.to_string()),
            Ok(Ok(st)) => {
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(code), _) => HookStatus::Exited(code),
                    (None, Some(sig)) => HookStatus::Signalled(sig),
                    (None, None) => HookStatus::Exited(-1),
                }
            }
        },
    };
    match &status {
        HookStatus::Exited(0) => tracing::info!("--on-renew command exited with status 0"),
        HookStatus::Exited(code) => {
            tracing::warn!("--on-renew command failed: it exited with status {code}")
        }
        HookStatus::Signalled(sig) => {
            tracing::warn!("--on-renew command failed: it was killed by signal {sig}")
        }
        HookStatus::NotStarted(e) => {
            tracing::warn!("--on-renew command could not be started: {e}")
        }
        HookStatus::TimedOut => tracing::warn!(
            "--on-renew command did not finish within {} s and was killed",
            HOOK_TIMEOUT.as_secs()
        ),
    }
    status
}

enum Step {
    NotDue { until: i64 },
    Renewed(Enrolled),
    Recovered(Enrolled),
}

fn client_config(
    sd: &StateDir,
    ca: &[Vec<u8>],
    client: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>> {
    let roots = trust::root_store(&sd.ca_crt().display().to_string(), ca)?;
    let id = client.map(|i| ClientIdentity {
        chain: i.chain.clone(),
        key_pkcs8: i.key.serialize_der(),
    });
    trust::config_with_roots(roots, id).map_err(|(e, is_key)| {
        if is_key {
            AgentError::BadIdentity {
                dir: sd.path().to_path_buf(),
                reason: e.to_string(),
            }
        } else {
            e
        }
    })
}

/// Fetches `GET /v1/ca.pem` (verifying the server with the current `ca.crt`) and merges
/// it into `ca.crt`. True when the file changed.
async fn refresh_ca(sd: &StateDir, server: &ServerUrl, timeout: Duration) -> Result<bool> {
    let current = sd.ca_certs()?;
    let api = Api::new(server, client_config(sd, &current, None)?, timeout);
    let pem = api.ca_pem().await?;
    let fresh = bundle::from_pem(&format!("the CA bundle from {server}"), &pem)?;
    let merged = bundle::merge(&current, &fresh, crate::now_unix());
    if merged == current {
        return Ok(false);
    }
    sd.write_ca(&merged)?;
    tracing::info!(
        "{} refreshed: {} CA certificates (was {})",
        sd.ca_crt().display(),
        merged.len(),
        current.len()
    );
    Ok(true)
}

/// Renewal over mTLS, or recovery, with the key already made. Tried once more after
/// refreshing `ca.crt` when the server's certificate had an unknown issuer.
async fn ask(
    sd: &StateDir,
    state: &AgentState,
    id: &Identity,
    new: &keys::NewKey,
    recover: bool,
    timeout: Duration,
) -> Result<crate::http::Issued> {
    let server = ServerUrl::parse(&state.server)?;
    let leaf_pem = mtlsgate_pki::pemfile::to_pem("CERTIFICATE", &id.chain[0]);
    let signature = if recover {
        keys::recovery_signature(&id.key, &new.csr_der)?
    } else {
        String::new()
    };
    let mut refreshed = false;
    loop {
        let ca = sd.ca_certs()?;
        let result = if recover {
            let token = state.recovery_token.as_deref().unwrap_or_default();
            let api = Api::new(&server, client_config(sd, &ca, None)?, timeout);
            api.recover(RecoverBody {
                device_id: state.device_id.clone(),
                recovery_token: token.to_string(),
                csr: new.csr_pem.clone(),
                signature: signature.clone(),
                certificate: leaf_pem.clone(),
                // Api::recover sends this agent's version.
                agent_version: None,
            })
            .await
        } else {
            let api = Api::new(&server, client_config(sd, &ca, Some(id))?, timeout);
            api.renew(&new.csr_pem).await
        };
        match result {
            Ok(issued) => return Ok(issued),
            Err(e) if e.is_unknown_issuer() && !refreshed => {
                refreshed = true;
                match refresh_ca(sd, &server, timeout).await {
                    Ok(true) => {
                        tracing::info!("{e}; trying again with the refreshed CA bundle");
                        continue;
                    }
                    Ok(false) => return Err(e.into()),
                    Err(r) => {
                        tracing::warn!("cannot refresh {}: {r}", sd.ca_crt().display());
                        return Err(e.into());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Renews (or recovers) if due, or when `forced`; the directory is locked meanwhile.
async fn step(sd: &StateDir, opts: &RunOptions, forced: bool) -> Result<Step> {
    let _lock = sd.lock(LOCK_WAIT).await?;
    sd.repair()?;
    let mut state = sd.state()?;
    let id = sd.identity()?;
    let now = crate::now_unix();
    let next = match state.next_renewal {
        Some(n) if n >= id.not_before && n <= id.not_after => n,
        _ => {
            // Missing, or of another certificate (client.crt replaced by hand).
            let n = schedule::renewal_time(id.not_before, id.not_after, jitter());
            state.next_renewal = Some(n);
            sd.write_state(&state)?;
            n
        }
    };
    let recover = match schedule::due(now, next, id.not_after) {
        Due::Wait { until } if !forced => return Ok(Step::NotDue { until }),
        Due::Wait { .. } | Due::Renew => false,
        Due::Recover => true,
    };
    if recover {
        let expired = human_time(
            time::OffsetDateTime::from_unix_timestamp(id.not_after)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        );
        let cannot = |reason: String| AgentError::CannotRecover {
            device_id: state.device_id.clone(),
            expired: expired.clone(),
            reason,
        };
        if state.recovery_token.as_deref().is_none_or(str::is_empty) {
            return Err(cannot(format!(
                "{} holds no recovery token; enroll the device again (mtlsgate agent enroll --force …)",
                sd.agent_json().display()
            )));
        }
        if let Some(exp) = state.recovery_expires.filter(|e| *e <= now) {
            return Err(cannot(format!(
                "its recovery token expired at {}; enroll the device again (mtlsgate agent enroll --force …)",
                human_time(
                    time::OffsetDateTime::from_unix_timestamp(exp)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                )
            )));
        }
        tracing::info!(
            "the certificate of {} expired at {expired}: recovering",
            state.device_id
        );
    }
    let new = keys::new_key_and_csr(Some(&state.device_id))?;
    mtlsgate_pki::key::write_key(&sd.new_key(), &new.key, None)?;
    let result = async {
        let issued = ask(sd, &state, &id, &new, recover, opts.timeout).await?;
        let server = ServerUrl::parse(&state.server)?;
        let ca = sd.ca_certs()?;
        install_issued(
            Install {
                sd,
                server: &server,
                key_from: &sd.new_key(),
                key_public: new.key.public_key_raw(),
                trust: &ca,
                expect_device: Some(&state.device_id),
                previous: Some(&state),
                root_sha256: None,
            },
            &issued,
            crate::now_unix(),
        )
    }
    .await;
    let enrolled = match result {
        Ok(e) => e,
        Err(e) => {
            fsutil::remove_created(&sd.new_key());
            return Err(e);
        }
    };
    if let Ok(server) = ServerUrl::parse(&state.server) {
        if let Err(e) = refresh_ca(sd, &server, opts.timeout).await {
            tracing::warn!("cannot refresh {}: {e}", sd.ca_crt().display());
        }
    }
    Ok(if recover {
        Step::Recovered(enrolled)
    } else {
        Step::Renewed(enrolled)
    })
}

/// Writes the failure into `agent.json` for `agent status`.
async fn record_error(sd: &StateDir, e: &AgentError) {
    let Ok(_lock) = sd.lock(LOCK_WAIT).await else {
        return;
    };
    if let Ok(Some(mut s)) = sd.read_state() {
        s.last_error = Some(LastError {
            at: crate::now_unix(),
            message: e.to_string(),
        });
        if let Err(w) = sd.write_state(&s) {
            tracing::warn!("cannot record the error: {w}");
        }
    }
}

fn log_new(what: &str, e: &Enrolled) {
    tracing::info!(
        "{what} {}: serial {}, valid until {}, next renewal at {}",
        e.device_id,
        e.serial,
        human_time(
            time::OffsetDateTime::from_unix_timestamp(e.not_after)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        ),
        human_time(
            time::OffsetDateTime::from_unix_timestamp(e.next_renewal)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        ),
    );
}

async fn after_new(opts: &RunOptions, what: &str, e: &Enrolled) {
    log_new(what, e);
    if let Some(cmd) = &opts.on_renew {
        run_hook(cmd, &opts.dir, &e.device_id).await;
    }
}

/// Errors no retry can heal: the loop ends with them.
fn is_fatal(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::NotEnrolled(_)
            | AgentError::StateFormat { .. }
            | AgentError::StateUnreadable { .. }
            | AgentError::CannotRecover { .. }
            | AgentError::Denied { .. }
    )
}

/// One step for cron and systemd timers: finishes a pending enrollment if approved, else
/// renews if due, or recovers if expired.
pub async fn run_once(opts: &RunOptions) -> Result<Outcome> {
    let sd = StateDir::new(&opts.dir);
    if let Some(p) = sd.read_pending()? {
        return match enroll::poll_once(&sd, opts.timeout).await? {
            Poll::Issued(e) => {
                after_new(opts, "enrollment approved:", &e).await;
                Ok(Outcome::Approved(e))
            }
            Poll::Waiting { .. } => Ok(Outcome::StillPending {
                device_id: p.device_id,
            }),
        };
    }
    if sd.read_state()?.is_none() {
        return Err(AgentError::NotEnrolled(opts.dir.clone()));
    }
    match step(&sd, opts, false).await {
        Ok(Step::NotDue { until }) => Ok(Outcome::NothingDue {
            next_renewal: until,
        }),
        Ok(Step::Renewed(e)) => {
            after_new(opts, "renewed", &e).await;
            Ok(Outcome::Renewed(e))
        }
        Ok(Step::Recovered(e)) => {
            after_new(opts, "recovered", &e).await;
            Ok(Outcome::Recovered(e))
        }
        Err(e) => {
            record_error(&sd, &e).await;
            Err(e)
        }
    }
}

/// Keeps the certificate fresh until `control` says stop (then `Ok`). Ends with an error
/// only when no retry can help (no enrolled device, an unreadable `agent.json`, an
/// enrollment denied, an expired certificate that cannot be recovered).
pub async fn run(opts: &RunOptions, control: &Control) -> Result<()> {
    let sd = StateDir::new(&opts.dir);
    // A pending enrollment comes first (with `enroll --force`, also over an enrolled
    // device, whose certificate is not renewed meanwhile).
    if let Some(p) = sd.read_pending()? {
        tracing::info!(
            "device {} waits for approval on {} (mtlsgate devices approve {})",
            p.device_id,
            p.server,
            p.device_id
        );
        match enroll::wait_for_approval(&opts.dir, opts.timeout, control).await? {
            None => return Ok(()),
            Some(e) => after_new(opts, "enrollment approved:", &e).await,
        }
    } else if sd.read_state()?.is_none() {
        return Err(AgentError::NotEnrolled(opts.dir.clone()));
    }
    let mut attempt = 0u32;
    let mut forced = false;
    let mut announced = None;
    loop {
        if control.is_stopped() {
            return Ok(());
        }
        let wait = match step(&sd, opts, forced).await {
            Ok(Step::NotDue { until }) => {
                attempt = 0;
                forced = false;
                if announced != Some(until) {
                    announced = Some(until);
                    tracing::info!(
                        "next renewal at {}",
                        human_time(
                            time::OffsetDateTime::from_unix_timestamp(until)
                                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                        )
                    );
                }
                schedule::until(crate::now_unix(), until).min(MAX_SLEEP)
            }
            Ok(Step::Renewed(e)) | Ok(Step::Recovered(e)) => {
                attempt = 0;
                forced = false;
                after_new(opts, "new certificate for", &e).await;
                Duration::ZERO
            }
            Err(e) => {
                record_error(&sd, &e).await;
                if is_fatal(&e) {
                    return Err(e);
                }
                let transient = e.api().is_some_and(|a| a.is_transient());
                let d = if transient {
                    schedule::backoff(attempt, jitter())
                } else {
                    schedule::backoff(u32::MAX, jitter())
                };
                attempt = attempt.saturating_add(1);
                tracing::error!("{e}; trying again in {:.0} s", d.as_secs_f64());
                d
            }
        };
        if wait.is_zero() {
            continue;
        }
        match control.sleep(wait).await {
            Wake::Stop => return Ok(()),
            Wake::RenewNow => forced = true,
            Wake::Elapsed => {}
        }
    }
}
