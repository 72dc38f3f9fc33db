//! The live state of a gateway: one immutable [`Snapshot`] (TLS config, client
//! authentication, routes with their policies and header plans, the upstream client)
//! behind an `ArcSwap`. A reload builds a new snapshot from the files off the hot path and
//! swaps it in; a request uses the snapshot current when it starts. If building fails, the
//! old snapshot stays and the reason is logged. Settings that need a restart are kept at
//! their running values, and the log says so (see [`crate::config::settings`]).
//!
//! Every swap bumps the generation and announces it on a watch channel, so that open
//! connections re-check their client against the new state (a new CRL or allowlist reaches
//! kept-alive and upgraded connections, not only new ones).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mtlsgate_pki::pemfile;
use mtlsgate_pki::verify::Verifier;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::client_auth::{ClientAuth, HandshakeVerifier, VerifyCache};
use crate::config::{GateConfig, TunnelConfig, TunnelSide};
use crate::error::GateError;
use crate::headers::HeaderPlan;
use crate::inventory::InventoryState;
use crate::metrics::Metrics;
use crate::policy::{Load, Policy};
use crate::tls::{self, Resumption};
use crate::upstream::UpstreamClient;

/// One route, compiled.
pub(crate) struct Route {
    pub(crate) prefix: String,
    /// `http://host:port`, used as scheme and authority of upstream requests.
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: http::uri::Authority,
    /// When the upstream URL has a path, it replaces the matched prefix (nginx's
    /// `proxy_pass http://host/path/` rule); otherwise the normalised path passes.
    replace_prefix: Option<String>,
    /// Shared with the next snapshot when its settings and list files did not change.
    pub(crate) policy: Arc<Policy>,
    pub(crate) headers: HeaderPlan,
    /// The pooled client to this route's upstream.
    pub(crate) upstream: UpstreamClient,
}

impl Route {
    /// The path (canonically encoded) and query to send upstream.
    pub(crate) fn upstream_target(
        &self,
        path: &crate::path::NormalPath,
        query: Option<&str>,
    ) -> String {
        let mut s = match &self.replace_prefix {
            None => {
                let e = path.encoded();
                let mut s = String::with_capacity(e.len() + query.map_or(0, |q| q.len() + 1));
                s.push_str(e);
                s
            }
            Some(rep) => {
                let rest = path.encoded_after(self.prefix.len());
                let mut s = String::with_capacity(rep.len() + rest.len());
                s.push_str(rep);
                s.push_str(&rest);
                if s.is_empty() {
                    s.push('/');
                }
                s
            }
        };
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// Routes, longest prefix first.
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The route for a normalised path: the longest matching prefix.
    pub(crate) fn find(&self, decoded_path: &[u8]) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| decoded_path.starts_with(r.prefix.as_bytes()))
    }
}

/// Everything a connection and a request need, built at once and never changed.
pub struct Snapshot {
    pub(crate) generation: u64,
    pub config: GateConfig,
    /// The listener's server blocks: the first is the default, the others are virtual
    /// hosts chosen by SNI.
    pub(crate) servers: Vec<Server>,
    /// By position in `config.tunnels`.
    pub(crate) tunnels: Vec<Tunnel>,
}

impl Snapshot {
    /// Server block number `i` (the default one if there is no such block).
    pub(crate) fn server(&self, i: usize) -> &Server {
        self.servers.get(i).unwrap_or(&self.servers[0])
    }

    /// The block a TLS client's SNI chooses: one that names it, else the default.
    pub(crate) fn server_for_sni(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return 0;
        };
        self.servers
            .iter()
            .position(|s| s.answers(&name))
            .unwrap_or(0)
    }

    /// The block that names `host`, if any does.
    pub(crate) fn server_named(&self, host: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.answers(host))
    }
}

/// Builds the client verifier from the configured bundles, pins and CRLs; returns the
/// advertised certificates too (their subjects are the CertificateRequest's CA names; the
/// `trusted_ca` ones verify clients without being named, as nginx's
/// `ssl_trusted_certificate`).
fn build_verifier(cfg: &GateConfig) -> Result<(Verifier, Vec<Vec<u8>>), GateError> {
    let advertised: Vec<PathBuf> = cfg
        .client_ca
        .iter()
        .chain(cfg.pin_cert.iter())
        .cloned()
        .collect();
    verifier_from(
        &advertised,
        &cfg.trusted_ca,
        &cfg.crl,
        cfg.crl_check,
        &cfg.pin_sha256,
        cfg.verify_depth,
    )
}

fn verifier_from(
    advertised_files: &[PathBuf],
    trusted_files: &[PathBuf],
    crl_files: &[PathBuf],
    crl_check: crate::config::CrlCheck,
    pins: &[String],
    depth: usize,
) -> Result<(Verifier, Vec<Vec<u8>>), GateError> {
    let mut advertised = Vec::new();
    for p in advertised_files {
        advertised.extend(pemfile::read_certs(p)?);
    }
    let mut bundle = advertised.clone();
    for p in trusted_files {
        bundle.extend(pemfile::read_certs(p)?);
    }
    let mut crls = Vec::new();
    let now = time::OffsetDateTime::now_utc();
    for p in crl_files {
        for der in pemfile::read_crls(p)? {
            if let Some(t) = mtlsgate_pki::certinfo::crl_next_update(&der).filter(|t| *t < now) {
                let effect = match crl_check {
                    crate::config::CrlCheck::Strict => {
                        "every certificate it covers is refused until a fresh one is published"
                    }
                    crate::config::CrlCheck::Lenient => {
                        "it is still used (crl_check = \"lenient\")"
                    }
                };
                tracing::warn!(
                    "a CRL in {} expired at {}: {effect}",
                    p.display(),
                    mtlsgate_pki::certinfo::human_time(t)
                );
            }
            crls.push(der);
        }
    }
    let mut v = Verifier::new(bundle, crls, depth)?.with_crl_check(crl_check);
    for fp in pins {
        v.pin_fingerprint(fp)?;
    }
    Ok((v, advertised))
}

/// An inventory location for logs and pages: a path, or a URL without its password.
pub fn display_location(given: &str) -> String {
    mtlsgate_store::Location::parse(given)
        .map(|l| l.to_string())
        .unwrap_or_else(|_| given.to_string())
}

/// Cache scopes of tunnels start here (server blocks count from 0).
const TUNNEL_SCOPE: usize = 1 << 20;

/// A TCP tunnel, compiled.
pub(crate) struct Tunnel {
    pub(crate) config: TunnelConfig,
    pub(crate) side: TunnelRuntime,
}

/// What a tunnel needs at run time.
pub(crate) enum TunnelRuntime {
    /// Terminates mTLS: the listener's TLS config (no resumption: every connection is
    /// verified, and refused in the handshake with an alert), its rules and policy.
    Server {
        tls: Arc<ServerConfig>,
        auth: Arc<ClientAuth>,
        policy: Arc<Policy>,
        proxy_protocol: bool,
    },
    /// Opens mTLS to the target.
    Client {
        connector: tokio_rustls::TlsConnector,
        server_name: rustls::pki_types::ServerName<'static>,
    },
}

fn build_tunnel(
    t: &TunnelConfig,
    index: usize,
    generation: u64,
    load: Load,
    inventory: Option<&Arc<InventoryState>>,
) -> Result<Tunnel, GateError> {
    let side = match &t.side {
        TunnelSide::Server {
            tls,
            client_ca,
            crl,
            crl_check,
            pin_sha256,
            verify_depth,
            policy,
            proxy_protocol,
        } => {
            let (verifier, bundle) =
                verifier_from(client_ca, &[], crl, *crl_check, pin_sha256, *verify_depth)?;
            let auth = Arc::new(
                ClientAuth::new(
                    Arc::new(verifier),
                    crate::config::VerifyMode::Require,
                    true,
                    generation,
                    &bundle,
                )
                // Verdicts cached apart from the HTTP server blocks'.
                .scoped(TUNNEL_SCOPE + index),
            );
            let policy = Arc::new(Policy::build(policy, load)?);
            let cert =
                tls::load_server_cert(&tls.cert, &tls.key, tls.key_passphrase_file.as_deref())?;
            let verifier = HandshakeVerifier::with_policy(
                auth.clone(),
                policy.clone(),
                format!("tunnel {}", t.listen),
                inventory.cloned(),
            );
            let config = tls::server_config(cert, &tls.cert, Arc::new(verifier), None, &[])?;
            TunnelRuntime::Server {
                tls: config,
                auth,
                policy,
                proxy_protocol: *proxy_protocol,
            }
        }
        TunnelSide::Client { tls } => {
            let (config, _) = crate::upstream::tunnel_client_config(tls)?;
            let host = tls.server_name.clone().unwrap_or_else(|| {
                let h = t
                    .target
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&t.target);
                h.trim_start_matches('[').trim_end_matches(']').to_string()
            });
            let server_name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                    GateError::UpstreamTls(format!("`{host}` is not a host name or IP address"))
                })?;
            TunnelRuntime::Client {
                connector: tokio_rustls::TlsConnector::from(config),
                server_name,
            }
        }
    };
    Ok(Tunnel {
        config: t.clone(),
        side,
    })
}

/// One server block, compiled: what a connection that chose it (by SNI) uses.
pub(crate) struct Server {
    /// Lower-case names (`*.example.com` allowed); empty for a default server that names
    /// none.
    pub(crate) names: Vec<String>,
    /// `None` for a plain-HTTP (egress) listener.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) auth: Arc<ClientAuth>,
    pub(crate) routes: RouteTable,
}

impl Server {
    /// Whether this server answers to `host` (lower-case, no port).
    pub(crate) fn answers(&self, host: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => host.strip_suffix(suffix).is_some_and(|head| {
                head.ends_with('.') && head.len() > 1 && !head[..head.len() - 1].contains('.')
            }),
            None => n == host,
        })
    }
}

/// What one server block is built from.
struct ServerSpec<'a> {
    index: usize,
    names: &'a [String],
    cfg: &'a GateConfig,
}

/// Figures the snapshot keeps for the metrics.
#[derive(Default)]
struct Gauges {
    server_not_after: i64,
    ca_not_after: i64,
    entries: u64,
}

#[allow(clippy::too_many_arguments)]
fn build_server(
    spec: ServerSpec<'_>,
    listener: &GateConfig,
    generation: u64,
    resumption: Option<&Resumption>,
    previous: Option<&Snapshot>,
    load: Load,
    gauges: &mut Gauges,
) -> Result<Server, GateError> {
    let cfg = spec.cfg;
    let (verifier, bundle) = build_verifier(cfg)?;
    let auth = Arc::new(
        ClientAuth::new(
            Arc::new(verifier),
            cfg.verify,
            cfg.reject_at_handshake,
            generation,
            &bundle,
        )
        .scoped(spec.index),
    );
    let ca_not_after = mtlsgate_pki::certinfo::chain_not_after(&bundle)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0);
    if ca_not_after != 0 && (gauges.ca_not_after == 0 || ca_not_after < gauges.ca_not_after) {
        gauges.ca_not_after = ca_not_after;
    }
    let tls = match &cfg.tls {
        Some(t) => {
            let cert = tls::load_server_cert(&t.cert, &t.key, t.key_passphrase_file.as_deref())?;
            let not_after =
                mtlsgate_pki::certinfo::chain_not_after(&cert.chain[..cert.chain.len().min(1)])
                    .map(|t| t.unix_timestamp())
                    .unwrap_or(0);
            if not_after != 0
                && (gauges.server_not_after == 0 || not_after < gauges.server_not_after)
            {
                gauges.server_not_after = not_after;
            }
            let resumption = if listener.resumption {
                resumption
            } else {
                None
            };
            Some(tls::server_config(
                cert,
                &t.cert,
                Arc::new(HandshakeVerifier::new(auth.clone())),
                resumption,
                &[b"h2", b"http/1.1"],
            )?)
        }
        None => None,
    };
    let mut routes = Vec::with_capacity(cfg.routes.len());
    for r in &cfg.routes {
        let parts = r.upstream.clone().into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(GateError::Config(crate::config::ConfigError::new(
                format!("route {}", r.prefix),
                "the upstream URL has no scheme or host",
            )));
        };
        // A large allowlist that did not change is not read again (a reload because a
        // certificate was renewed keeps it as it is).
        let kept = previous.and_then(|p| {
            p.servers
                .iter()
                .flat_map(|s| s.routes.routes.iter())
                .find(|old| old.policy.unchanged(&r.policy))
                .map(|old| old.policy.clone())
        });
        let policy = match kept {
            Some(p) => p,
            None => Arc::new(Policy::build(&r.policy, load)?),
        };
        gauges.entries += policy.len() as u64;
        // Pooled upstream connections survive reloads while the route's upstream and its
        // settings stay; new TLS material (a renewed client certificate) gets a new pool.
        let (wanted, material) =
            UpstreamClient::plan(listener.timeouts.upstream_connect, r.upstream_tls.as_ref())?;
        let reused = previous.and_then(|p| {
            p.servers
                .iter()
                .flat_map(|s| s.routes.routes.iter())
                .find(|old| {
                    old.authority == authority
                        && old.scheme == scheme
                        && old.upstream.built_from == wanted
                })
                .map(|old| old.upstream.clone())
        });
        let upstream = match reused {
            Some(u) => u,
            None => UpstreamClient::new(wanted, material)?,
        };
        routes.push(Route {
            prefix: r.prefix.clone(),
            scheme,
            authority,
            replace_prefix: r.upstream_path.clone(),
            policy,
            headers: HeaderPlan::build(&r.headers, r.default_headers, r.xfcc, r.host_header)?,
            upstream,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(Server {
        names: spec.names.to_vec(),
        tls,
        auth,
        routes: RouteTable { routes },
    })
}

fn build(
    cfg: GateConfig,
    generation: u64,
    resumption: Option<&Resumption>,
    metrics: &Metrics,
    previous: Option<&Snapshot>,
    inventory: Option<&Arc<InventoryState>>,
) -> Result<Snapshot, GateError> {
    let load = if previous.is_some() {
        Load::Reload
    } else {
        Load::Start
    };
    let mut gauges = Gauges::default();
    let mut servers = Vec::with_capacity(1 + cfg.vhosts.len());
    servers.push(build_server(
        ServerSpec {
            index: 0,
            names: &cfg.server_names,
            cfg: &cfg,
        },
        &cfg,
        generation,
        resumption,
        previous,
        load,
        &mut gauges,
    )?);
    for (i, v) in cfg.vhosts.iter().enumerate() {
        servers.push(build_server(
            ServerSpec {
                index: i + 1,
                names: &v.names,
                cfg: &v.config,
            },
            &cfg,
            generation,
            resumption,
            previous,
            load,
            &mut gauges,
        )?);
    }
    let mut tunnels = Vec::with_capacity(cfg.tunnels.len());
    for (i, t) in cfg.tunnels.iter().enumerate() {
        let built = build_tunnel(t, i, generation, load, inventory)?;
        if let TunnelRuntime::Server { policy, .. } = &built.side {
            gauges.entries += policy.len() as u64;
        }
        tunnels.push(built);
    }
    metrics
        .server_cert_not_after
        .store(gauges.server_not_after, Relaxed);
    metrics
        .client_ca_not_after
        .store(gauges.ca_not_after, Relaxed);
    metrics.allowlist_entries.store(gauges.entries, Relaxed);
    Ok(Snapshot {
        generation,
        config: cfg,
        servers,
        tunnels,
    })
}

/// The gateway's shared state: the current snapshot, the metrics, and how to rebuild.
pub struct State {
    snap: ArcSwap<Snapshot>,
    /// Counts changes open connections must re-check against (a new snapshot, a new
    /// inventory view).
    changes: watch::Sender<u64>,
    /// The device inventory's view, when the configuration names one.
    pub(crate) inventory: Option<Arc<InventoryState>>,
    /// Serialises reloads.
    reloading: Mutex<()>,
    resumption: Option<Resumption>,
    pub(crate) cache: VerifyCache,
    pub(crate) metrics: Metrics,
}

impl State {
    /// Builds the first snapshot; any error here stops start-up.
    pub fn new(cfg: GateConfig) -> Result<Arc<State>, GateError> {
        // Kept even when resumption is off, so that a reload can turn it on.
        let resumption = Some(Resumption::new()?);
        let metrics = Metrics::default();
        let inventory = cfg
            .inventory
            .as_ref()
            .map(|i| Arc::new(InventoryState::new(display_location(&i.location))));
        let snap = build(
            cfg,
            1,
            resumption.as_ref(),
            &metrics,
            None,
            inventory.as_ref(),
        )?;
        let (changes, _) = watch::channel(0);
        Ok(Arc::new(State {
            snap: ArcSwap::from_pointee(snap),
            changes,
            inventory,
            reloading: Mutex::new(()),
            resumption,
            cache: VerifyCache::default(),
            metrics,
        }))
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snap.load()
    }

    pub(crate) fn load_full(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// A receiver that changes whenever a new snapshot or inventory view is swapped in.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits, at most `limit`, for the device inventory's first read. True once it has been
    /// read, or when the configuration names no inventory; false when `limit` passed first
    /// (requests that need the inventory are answered 503 until it is read).
    pub async fn inventory_read(&self, limit: std::time::Duration) -> bool {
        let Some(inv) = &self.inventory else {
            return true;
        };
        let mut changes = self.subscribe();
        let read = async {
            while !inv.view().loaded {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, read).await;
        inv.view().loaded
    }

    /// Announces a new inventory view to the open connections.
    pub(crate) fn inventory_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Files whose change should trigger a reload.
    pub(crate) fn watched_files(&self) -> Vec<PathBuf> {
        self.snap.load().config.watched_files()
    }

    /// Re-reads the configuration file (if any) and every file it names, and swaps the new
    /// snapshot in. On error the old snapshot stays and the error is returned.
    pub(crate) fn reload(&self) -> Result<(), GateError> {
        let started = std::time::Instant::now();
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        match &result {
            Ok(generation) => {
                self.metrics.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(
                    generation,
                    "reloaded in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Err(e) => {
                self.metrics.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!("reload failed, keeping the previous configuration: {e}");
            }
        }
        result.map(|_| ())
    }

    fn try_reload(&self) -> Result<u64, GateError> {
        let current = self.snap.load_full();
        let cfg = match &current.config.source {
            Some(path) => {
                let mut next = GateConfig::from_file_with(path, &current.config.overrides)?;
                for kept in current.config.keep_restart_settings(&mut next) {
                    tracing::warn!("{kept}");
                }
                let changed = current.config.changed_settings(&next);
                if !changed.is_empty() {
                    tracing::info!("reload applies changed settings: {}", changed.join(", "));
                }
                next
            }
            None => current.config.clone(),
        };
        let generation = current.generation + 1;
        let snap = build(
            cfg,
            generation,
            self.resumption.as_ref(),
            &self.metrics,
            Some(&current),
            self.inventory.as_ref(),
        )?;
        let old = self.snap.swap(Arc::new(snap));
        drop(current);
        self.changes.send_modify(|n| *n += 1);
        // Usually the last reference: freeing a large allowlist happens here, on the
        // reload thread, not on a worker serving requests.
        drop(old);
        Ok(generation)
    }
}
