//! The live state of a gateway: one immutable [`Snapshot`] (TLS config, client verifier,
//! compiled routes, policies and header plans) behind an `ArcSwap`. A reload builds a new
//! snapshot from the files and swaps it in; a connection keeps the snapshot it started
//! with for its handshake and reads the newest one for each request. If building fails,
//! the old snapshot stays and the reason is logged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::pemfile;
use mtlsgate_pki::verify::Verifier;
use rustls::ServerConfig;

use crate::config::{GateConfig, VerifyMode};
use crate::error::GateError;
use crate::headers::HeaderPlan;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::tls::{self, GateVerifier, Resumption};

/// One route, compiled.
pub struct Route {
    pub prefix: String,
    /// `http://host:port`, used as scheme and authority of upstream requests.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// When the upstream URL has a path, it replaces the matched prefix (nginx's
    /// `proxy_pass http://host/path/` rule); otherwise the request URI passes unchanged.
    pub replace_prefix: Option<String>,
    pub policy: Policy,
    pub headers: HeaderPlan,
}

impl Route {
    /// The path and query to send upstream.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        match &self.replace_prefix {
            None => path_and_query.to_string(),
            Some(rep) => {
                let rest = path_and_query
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or(path_and_query);
                let mut s = String::with_capacity(rep.len() + rest.len());
                s.push_str(rep);
                s.push_str(rest);
                if s.is_empty() {
                    s.push('/');
                }
                s
            }
        }
    }
}

/// Everything a request needs, built at once and never changed.
pub struct Snapshot {
    pub generation: u64,
    pub config: GateConfig,
    pub tls: Arc<ServerConfig>,
    pub verifier: Arc<Verifier>,
    pub mode: VerifyMode,
    /// Longest prefix first.
    pub routes: Vec<Route>,
}

impl Snapshot {
    /// Finds the route for a path: the longest matching prefix.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path.starts_with(r.prefix.as_str()))
    }
}

/// Builds the client verifier from the configured bundle, pins and CRLs.
pub fn build_verifier(cfg: &GateConfig) -> Result<(Verifier, Vec<Vec<u8>>), GateError> {
    let mut bundle = Vec::new();
    for p in cfg.client_ca.iter().chain(cfg.pin_cert.iter()) {
        bundle.extend(pemfile::read_certs(p)?);
    }
    let mut crls = Vec::new();
    for p in &cfg.crl {
        crls.extend(pemfile::read_crls(p)?);
    }
    let mut v = Verifier::new(bundle.clone(), crls, cfg.verify_depth)?;
    for fp in &cfg.pin_sha256 {
        v.pin_fingerprint(fp)?;
    }
    Ok((v, bundle))
}

fn build(
    cfg: GateConfig,
    generation: u64,
    resumption: Option<&Resumption>,
    metrics: &Metrics,
) -> Result<Snapshot, GateError> {
    let (verifier, bundle) = build_verifier(&cfg)?;
    let verifier = Arc::new(verifier);
    let (chain, key) = tls::load_cert_and_key(&cfg.cert, &cfg.key)?;
    let server_not_after = chain
        .first()
        .and_then(|c| CertInfo::from_der(c).ok())
        .map(|i| i.not_after.unix_timestamp())
        .unwrap_or(0);
    let ca_not_after = bundle
        .iter()
        .filter_map(|d| CertInfo::from_der(d).ok())
        .map(|i| i.not_after.unix_timestamp())
        .min()
        .unwrap_or(0);
    let gv = GateVerifier::new(
        verifier.clone(),
        cfg.verify,
        cfg.reject_at_handshake,
        &bundle,
    );
    let tls = server_config(&cfg, chain, key, Arc::new(gv), resumption)?;
    let mut routes = Vec::with_capacity(cfg.routes.len());
    let mut entries = 0u64;
    for r in &cfg.routes {
        let parts = r.upstream.clone().into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(GateError::Tls(format!("route {}: bad upstream", r.prefix)));
        };
        let replace_prefix = r.upstream_path.clone();
        let policy = Policy::build(&r.policy)?;
        entries += policy.len() as u64;
        routes.push(Route {
            prefix: r.prefix.clone(),
            scheme,
            authority,
            replace_prefix,
            policy,
            headers: HeaderPlan::build(&r.headers, r.default_headers, r.xfcc)?,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    metrics
        .server_cert_not_after
        .store(server_not_after, Relaxed);
    metrics.client_ca_not_after.store(ca_not_after, Relaxed);
    metrics.allowlist_entries.store(entries, Relaxed);
    Ok(Snapshot {
        generation,
        mode: cfg.verify,
        config: cfg,
        tls,
        verifier,
        routes,
    })
}

fn server_config(
    cfg: &GateConfig,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    verifier: Arc<GateVerifier>,
    resumption: Option<&Resumption>,
) -> Result<Arc<ServerConfig>, GateError> {
    let name = cfg.cert.display().to_string();
    Ok(Arc::new(tls::server_config(
        chain, key, verifier, resumption, &name,
    )?))
}

/// The gateway's shared state: the current snapshot, the metrics, and how to rebuild.
pub struct State {
    snap: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// The configuration given on the command line (reused when there is no file).
    base: Mutex<GateConfig>,
    resumption: Option<Resumption>,
    pub metrics: Metrics,
}

impl State {
    /// Builds the first snapshot; any error here stops start-up.
    pub fn new(cfg: GateConfig) -> Result<Arc<State>, GateError> {
        let resumption = if cfg.resumption {
            Some(Resumption::new()?)
        } else {
            None
        };
        let metrics = Metrics::default();
        let snap = build(cfg.clone(), 1, resumption.as_ref(), &metrics)?;
        Ok(Arc::new(State {
            snap: ArcSwap::from_pointee(snap),
            generation: AtomicU64::new(1),
            base: Mutex::new(cfg),
            resumption,
            metrics,
        }))
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snap.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// Files whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.snap.load().config.watched_files()
    }

    /// Re-reads the configuration file (if any) and every file it names, and swaps the new
    /// snapshot in. On error the old snapshot stays and the error is returned.
    pub fn reload(&self) -> Result<(), GateError> {
        let started = std::time::Instant::now();
        let result = self.try_reload();
        match &result {
            Ok(()) => {
                self.metrics.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(
                    generation = self.generation.load(Relaxed),
                    "reloaded in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Err(e) => {
                self.metrics.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!("reload failed, keeping the previous configuration: {e}");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), GateError> {
        let base = self
            .base
            .lock()
            .map_err(|_| GateError::Tls("configuration lock poisoned".into()))?
            .clone();
        let cfg = match &base.source {
            Some(path) => {
                let mut c = GateConfig::from_file(path)?;
                // What cannot change without a restart is kept, with a warning.
                if c.listen != base.listen {
                    tracing::warn!(
                        "listen address changed to {}; restart to apply it (still {})",
                        c.listen,
                        base.listen
                    );
                    c.listen = base.listen;
                }
                c.threads = base.threads;
                c.admin_listen = base.admin_listen;
                if c.resumption != base.resumption {
                    tracing::warn!("resumption setting changes need a restart");
                    c.resumption = base.resumption;
                }
                c
            }
            None => base,
        };
        let generation = self.generation.load(Relaxed) + 1;
        let snap = build(cfg, generation, self.resumption.as_ref(), &self.metrics)?;
        self.generation.store(generation, Relaxed);
        let old = self.snap.swap(Arc::new(snap));
        // Usually the last reference: freeing a large allowlist happens here, on the
        // reload thread, not on a worker serving requests.
        drop(old);
        Ok(())
    }
}
