//! Enrollment: the key is made on the device, its CSR goes to `POST /v1/enroll` (with a
//! token, or without one to wait for an operator's approval), and what the server issues
//! is checked (it certifies this key, names the device the server said, verifies with the
//! CA bundle) and installed as a set. A failed enrollment leaves the directory as it was:
//! the new key waits under `client.key.new` and is only renamed after the server answered.
//! A pending enrollment keeps its key as `pending.key` and its poll token in
//! `pending.json`; [`wait_for_approval`] (or `agent run`) polls `GET /v1/enroll/{id}`
//! until the device is approved or denied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::verify::{Purpose, Verifier, DEFAULT_DEPTH};
use mtlsgate_pki::{fsutil, pki_types::UnixTime};
use serde::Serialize;
use sha2::Digest as _;

use crate::bundle;
use crate::error::{AgentError, Result};
use crate::http::{Answer, Api, Issued, ServerUrl};
use crate::keys;
use crate::run::{Control, Wake};
use crate::schedule;
use crate::state::{AgentState, PendingState, StateDir, STATE_FORMAT};
use crate::trust::{self, Bootstrap, PinnedRootVerifier};

/// How long an agent waits for another one working in the same directory.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What `agent enroll` needs.
pub struct EnrollOptions {
    pub server: ServerUrl,
    /// An enrollment token (`mtg_…`); without one the device waits for approval.
    pub token: Option<String>,
    pub bootstrap: Bootstrap,
    pub dir: PathBuf,
    /// Enroll anew although the directory holds an enrolled or pending device.
    pub force: bool,
    /// Sent as `hostname`; `None` sends this machine's name.
    pub hostname: Option<String>,
    /// Time limit of each request.
    pub timeout: Duration,
}

/// A device with a certificate installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    pub device_id: String,
    /// The certificate's serial, upper-case hex.
    pub serial: String,
    pub not_after: i64,
    pub next_renewal: i64,
    pub tags: Vec<String>,
}

/// A device that waits for an operator's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub device_id: String,
    pub server: String,
    /// The server's poll interval, seconds.
    pub retry_after: Option<u64>,
    /// An earlier `agent enroll` registered it; this one resumed the wait.
    pub resumed: bool,
}

/// What [`register`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Issued(Enrolled),
    Pending(Pending),
}

/// This machine's host name, when it has one worth sending.
fn hostname() -> Option<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    (!clean.is_empty() && clean.len() <= 253).then_some(clean)
}

/// Everything [`install_issued`] needs besides the server's answer.
pub(crate) struct Install<'a> {
    pub sd: &'a StateDir,
    pub server: &'a ServerUrl,
    /// Where the new key already is.
    pub key_from: &'a Path,
    /// Its public key (to check the certificate is for it).
    pub key_public: &'a [u8],
    /// The CA certificates trusted so far (kept in `ca.crt` while valid).
    pub trust: &'a [Vec<u8>],
    /// The device ID the certificate must name (renewal, recovery, approval).
    pub expect_device: Option<&'a str>,
    /// The state before (renewal, recovery).
    pub previous: Option<&'a AgentState>,
    pub root_sha256: Option<String>,
}

/// Checks what the server issued and installs it with `ca.crt` and `agent.json`.
pub(crate) fn install_issued(i: Install<'_>, issued: &Issued, now: i64) -> Result<Enrolled> {
    let bad = |reason: String| AgentError::BadIssued {
        server: i.server.to_string(),
        reason,
    };
    if !keys::usable_device_id(&issued.device_id) {
        return Err(bad(format!(
            "the device ID `{}` has characters other than letters, digits, `.`, `-` and `_`",
            issued.device_id.escape_default()
        )));
    }
    if let Some(want) = i.expect_device {
        if !want.eq_ignore_ascii_case(&issued.device_id) {
            return Err(bad(format!(
                "it is for device {}, but this device is {want}",
                issued.device_id
            )));
        }
    }
    let chain = bundle::from_pem("the certificate from the server", &issued.certificate)
        .map_err(|e| bad(e.to_string()))?;
    if keys::public_key_of_cert(&chain[0]).as_deref() != Some(i.key_public) {
        return Err(bad(
            "it certifies another public key than the one this device made".into(),
        ));
    }
    let info = CertInfo::from_der(&chain[0]).map_err(|e| bad(e.to_string()))?;
    if !info
        .device_id
        .as_deref()
        .is_some_and(|cn| cn.eq_ignore_ascii_case(&issued.device_id))
    {
        return Err(bad(format!(
            "its subject CN is {}, but the server said the device is {}",
            info.common_name.as_deref().unwrap_or("missing"),
            issued.device_id
        )));
    }
    let new_bundle = bundle::from_pem("the CA bundle from the server", &issued.ca_bundle)
        .map_err(|e| bad(e.to_string()))?;
    let trusted = bundle::merge(i.trust, &new_bundle, now);
    let verifier = Verifier::new(trusted.clone(), Vec::new(), DEFAULT_DEPTH)
        .map_err(|e| bad(e.to_string()))?;
    let chain_ders: Vec<_> = chain
        .iter()
        .map(|d| mtlsgate_pki::pki_types::CertificateDer::from(d.as_slice()))
        .collect();
    // Checked at notBefore when this device's clock is behind, so that clock skew alone
    // does not throw away a certificate the gateway will accept.
    let at = now.max(info.not_before.unix_timestamp());
    verifier
        .verify(
            &chain_ders,
            Purpose::Client,
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0))),
        )
        .map_err(|f| bad(format!("it does not verify with the CA bundle: {f}")))?;
    let (nb, na) = (
        info.not_before.unix_timestamp(),
        info.not_after.unix_timestamp(),
    );
    let next = schedule::renewal_time(
        nb,
        na,
        rand::Rng::gen_range(&mut rand::thread_rng(), -1.0..=1.0),
    );
    let state = AgentState {
        format: STATE_FORMAT,
        server: i.server.to_string(),
        device_id: issued.device_id.to_ascii_lowercase(),
        root_sha256: i
            .root_sha256
            .or_else(|| i.previous.and_then(|p| p.root_sha256.clone())),
        recovery_token: Some(issued.recovery_token.clone()),
        recovery_expires: Some(issued.recovery_expires),
        tags: issued.tags.clone(),
        enrolled_at: i.previous.map_or(now, |p| p.enrolled_at),
        last_renewal: if i.previous.is_some() {
            Some(now)
        } else {
            None
        },
        next_renewal: Some(next),
        last_error: None,
    };
    i.sd.install(
        i.key_from,
        &bundle::to_pem(&chain),
        &bundle::to_pem(&trusted),
        &state,
    )?;
    Ok(Enrolled {
        device_id: state.device_id,
        serial: info.serial,
        not_after: na,
        next_renewal: next,
        tags: state.tags,
    })
}

/// Registers the device with the server: installs the certificate when the token was
/// accepted, or records the pending enrollment. Resumes a pending enrollment with the same
/// server instead of registering again (unless `force`).
pub async fn register(opts: &EnrollOptions) -> Result<Registration> {
    let sd = StateDir::new(&opts.dir);
    let created = !opts.dir.exists();
    sd.create()?;
    let result = register_in(opts, &sd).await;
    if result.is_err() && created {
        // Leave no trace of a failed first enrollment (removes the directory only if empty).
        let _ = std::fs::remove_dir(&opts.dir);
    }
    result
}

async fn register_in(opts: &EnrollOptions, sd: &StateDir) -> Result<Registration> {
    let _lock = sd.lock(LOCK_WAIT).await?;
    sd.repair()?;
    if !opts.force {
        if let Some(s) = sd.read_state()? {
            return Err(AgentError::AlreadyEnrolled {
                dir: opts.dir.clone(),
                device_id: s.device_id,
            });
        }
        for file in [sd.client_key(), sd.client_crt()] {
            if file.exists() {
                return Err(AgentError::ForeignFiles {
                    dir: opts.dir.clone(),
                    file: file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
        }
        if let Some(p) = sd.read_pending()? {
            if p.server == opts.server.as_str() {
                return Ok(Registration::Pending(Pending {
                    device_id: p.device_id,
                    server: p.server,
                    retry_after: p.retry_after,
                    resumed: true,
                }));
            }
            return Err(AgentError::PendingElsewhere {
                dir: opts.dir.clone(),
                device_id: p.device_id,
                server: p.server,
                wanted: opts.server.to_string(),
            });
        }
    }

    let (api, pinned, mut trust, root_sha256) = match &opts.bootstrap {
        Bootstrap::CaFile(path) => {
            let certs = mtlsgate_pki::pemfile::read_certs(path)?;
            let roots = trust::root_store(&path.display().to_string(), &certs)?;
            let cfg = trust::config_with_roots(roots, None).map_err(|(e, _)| e)?;
            let sha = bundle::first_root(&certs).map(|r| hex::encode(sha2::Sha256::digest(r)));
            (Api::new(&opts.server, cfg, opts.timeout), None, certs, sha)
        }
        Bootstrap::Fingerprint(pin) => {
            let v = Arc::new(PinnedRootVerifier::new(*pin));
            let cfg = trust::config_with_verifier(v.clone())?;
            (
                Api::new(&opts.server, cfg, opts.timeout),
                Some(v),
                Vec::new(),
                Some(hex::encode(pin)),
            )
        }
    };

    let new = keys::new_key_and_csr(None)?;
    mtlsgate_pki::key::write_key(&sd.new_key(), &new.key, None)?;
    let host = opts.hostname.clone().or_else(hostname);
    let answer = api
        .enroll(&new.csr_pem, opts.token.as_deref(), host.as_deref())
        .await;
    let result = async {
        let answer = answer?;
        if let Some(v) = &pinned {
            let root = v.pinned_root().ok_or_else(|| AgentError::BadTrust {
                path: "--root-fingerprint".into(),
                reason: "the pinned root was not seen in the TLS handshake".into(),
            })?;
            trust.push(root.to_vec());
        }
        let now = crate::now_unix();
        match answer {
            Answer::Issued(issued) => {
                let e = install_issued(
                    Install {
                        sd,
                        server: &opts.server,
                        key_from: &sd.new_key(),
                        key_public: new.key.public_key_raw(),
                        trust: &trust,
                        expect_device: None,
                        previous: None,
                        root_sha256: root_sha256.clone(),
                    },
                    &issued,
                    now,
                )?;
                Ok(Registration::Issued(e))
            }
            Answer::Pending(p) => {
                let bad = |reason: &str| AgentError::BadIssued {
                    server: opts.server.to_string(),
                    reason: reason.into(),
                };
                let poll_token = p
                    .poll_token
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("the pending answer carries no poll_token"))?;
                if !keys::usable_device_id(&p.device_id) {
                    return Err(bad("the pending answer's device_id is unusable"));
                }
                std::fs::rename(sd.new_key(), sd.pending_key()).map_err(|e| {
                    AgentError::io(format!("cannot rename {}", sd.new_key().display()), e)
                })?;
                let ps = PendingState {
                    format: STATE_FORMAT,
                    server: opts.server.to_string(),
                    device_id: p.device_id.to_ascii_lowercase(),
                    poll_token,
                    retry_after: p.retry_after,
                    registered_at: now,
                    root_sha256: root_sha256.clone(),
                    trust_pem: bundle::to_pem(&trust),
                };
                if let Err(e) = sd.write_pending(&ps) {
                    fsutil::remove_created(&sd.pending_key());
                    return Err(e);
                }
                Ok(Registration::Pending(Pending {
                    device_id: ps.device_id,
                    server: ps.server,
                    retry_after: ps.retry_after,
                    resumed: false,
                }))
            }
        }
    }
    .await;
    if result.is_err() {
        fsutil::remove_created(&sd.new_key());
    }
    result
}

/// One check whether a pending enrollment was approved.
pub(crate) enum Poll {
    Issued(Enrolled),
    Waiting { retry_after: Option<u64> },
}

/// Asks once whether the pending enrollment in `sd` was approved, and installs the
/// certificate when it was. A denial forgets the pending enrollment.
pub(crate) async fn poll_once(sd: &StateDir, timeout: Duration) -> Result<Poll> {
    let _lock = sd.lock(LOCK_WAIT).await?;
    sd.repair()?;
    let Some(p) = sd.read_pending()? else {
        // Finished meanwhile (by another agent), or never begun.
        let s = sd.state()?;
        return Ok(Poll::Issued(crate::status::enrolled_of(sd, &s)?));
    };
    let server = ServerUrl::parse(&p.server)?;
    let trust = bundle::from_pem(&sd.pending_json().display().to_string(), &p.trust_pem)?;
    let roots = trust::root_store(&sd.pending_json().display().to_string(), &trust)?;
    let cfg = trust::config_with_roots(roots, None).map_err(|(e, _)| e)?;
    let api = Api::new(&server, cfg, timeout);
    let key = mtlsgate_pki::key::read_key(&sd.pending_key(), None)?;
    match api.poll(&p.device_id, &p.poll_token).await {
        Ok(Answer::Issued(issued)) => {
            let e = install_issued(
                Install {
                    sd,
                    server: &server,
                    key_from: &sd.pending_key(),
                    key_public: key.public_key_raw(),
                    trust: &trust,
                    expect_device: Some(&p.device_id),
                    previous: None,
                    root_sha256: p.root_sha256.clone(),
                },
                &issued,
                crate::now_unix(),
            )?;
            Ok(Poll::Issued(e))
        }
        Ok(Answer::Pending(a)) => Ok(Poll::Waiting {
            retry_after: a.retry_after.or(p.retry_after),
        }),
        Err(crate::http::ApiError::Refused {
            status: 403,
            message,
            ..
        }) => {
            sd.remove_pending();
            Err(AgentError::Denied {
                device_id: p.device_id,
                server: p.server,
                message,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Polls until the pending enrollment in `dir` is approved (returns the installed
/// certificate) or denied (an error; the pending enrollment is forgotten), respecting the
/// server's `retry_after` and backing off while the server is away. `None` when `control`
/// said stop first (the enrollment stays pending).
pub async fn wait_for_approval(
    dir: &Path,
    timeout: Duration,
    control: &Control,
) -> Result<Option<Enrolled>> {
    let sd = StateDir::new(dir);
    let mut attempt = 0u32;
    loop {
        let delay = match poll_once(&sd, timeout).await {
            Ok(Poll::Issued(e)) => return Ok(Some(e)),
            Ok(Poll::Waiting { retry_after }) => {
                attempt = 0;
                tracing::debug!("still waiting for approval");
                schedule::poll_delay(retry_after)
            }
            Err(AgentError::Api(e)) if e.is_transient() => {
                let d = schedule::backoff(attempt, crate::run::jitter());
                attempt = attempt.saturating_add(1);
                tracing::warn!("{e}; trying again in {:.0} s", d.as_secs_f64());
                d
            }
            Err(e) => return Err(e),
        };
        if control.sleep(delay).await == Wake::Stop {
            return Ok(None);
        }
    }
}
