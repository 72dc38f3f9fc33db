//! Keeping the gateway's [`InventoryView`] current, and saying how current it is.
//!
//! The promise: a change committed to the inventory reaches the view within a second,
//! whatever else happens (a gateway starting, the database restarting, a lost
//! notification), and an active device is never refused because the view is behind.
//! How the task keeps it:
//! - **Subscribe, then read.** On PostgreSQL the task LISTENs before it reads the
//!   snapshot, so a change committed while the snapshot is read still notifies it; every
//!   notification reads the changes after the view's revision.
//! - **Check the revision.** A cheap `SELECT` of the revision counter every
//!   [`REVISION_CHECK`] on PostgreSQL (a lost notification heals in seconds) and every
//!   `inventory_poll` on SQLite (which has no notifications); a full read every
//!   [`RESYNC`] stays as a backstop.
//! - **Notice an outage at once.** A lost LISTEN connection ends the follow: the gateway
//!   says `degraded` on `/healthz`, logs it once, serves the last view, and reconnects
//!   every [`BACKOFF_MAX`] at most; reconnecting subscribes and reads everything again.
//! - **Look once before refusing.** A device the view does not know asks for a read that
//!   starts after its request ([`InventoryState::catch_up`]); reads asked for this way are
//!   coalesced and spaced by [`CATCH_UP_GAP`], and a device a fresh read did not know is
//!   refused at once until the inventory changes (no per-request query under a flood).
//!
//! What it exports: `mtlsgate_inventory_lag_seconds` (time since the view was last
//! confirmed current) and `mtlsgate_inventory_apply_delay_seconds` (commit to apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mtlsgate_store::{ChangesHead, Inventory, Location, PostgresOptions};
use tokio::sync::{watch, Notify};

use super::InventoryView;

/// How often PostgreSQL gateways read everything again, in case a change was missed.
const RESYNC: Duration = Duration::from_secs(60);
/// How often PostgreSQL gateways compare their revision with the database's.
const REVISION_CHECK: Duration = Duration::from_secs(2);
/// Reconnection back-off: from this …
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// … doubling up to this, so that a database that returns is found within a second.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The least time between two reads asked for by unknown devices.
const CATCH_UP_GAP: Duration = Duration::from_millis(20);
/// How long a request of an unknown device waits for its read.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);
/// How long a query of the gateway waits for a PostgreSQL connection.
const PG_WAIT: Duration = Duration::from_secs(5);
/// Unknown devices remembered (a fresh read did not know them), at most.
const MISSES_MAX: usize = 10_000;

/// Upper bounds (seconds) of the commit-to-apply histogram's buckets.
const DELAY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What `/healthz` says of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncHealth {
    /// Current.
    Ok,
    /// Not read yet: requests that need it are answered 503 (the sentence says why).
    Starting(String),
    /// Read before, unreachable now: the last view serves (the sentence says since when).
    Degraded(String),
}

/// The view, how its synchronisation is doing, and the way requests ask for a read.
pub(crate) struct InventoryState {
    view: ArcSwap<InventoryView>,
    /// Where the inventory is (a path, or a URL without its password).
    pub(crate) location: String,
    up: AtomicBool,
    /// Unix milliseconds when the view was last confirmed current (0: never).
    confirmed_ms: AtomicI64,
    /// Unix time since when the database has been unreachable (0: it is reachable).
    down_since: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Asks the sync task for a read now.
    wanted: Notify,
    /// Reads begun, and the number of the last one completed.
    started: AtomicU64,
    done: watch::Sender<u64>,
    /// Devices a read did not know, with the view's revision then.
    misses: Mutex<HashMap<String, i64>>,
    delays: DelayHistogram,
}

impl InventoryState {
    pub(crate) fn new(location: String) -> InventoryState {
        InventoryState {
            view: ArcSwap::from_pointee(InventoryView::default()),
            location,
            up: AtomicBool::new(false),
            confirmed_ms: AtomicI64::new(0),
            down_since: AtomicI64::new(now_unix()),
            last_error: Mutex::new(None),
            wanted: Notify::new(),
            started: AtomicU64::new(0),
            done: watch::channel(0).0,
            misses: Mutex::new(HashMap::new()),
            delays: DelayHistogram::default(),
        }
    }

    /// The current view (a lock-free load).
    pub(crate) fn view(&self) -> arc_swap::Guard<Arc<InventoryView>> {
        self.view.load()
    }

    fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Asks the sync task for a read soon, without waiting for it (a device the view does
    /// not know was refused where nothing can wait: in a TLS handshake).
    pub(crate) fn nudge(&self) {
        if self.is_up() {
            self.wanted.notify_one();
        }
    }

    /// A device the view does not know asks to come in: unless a read already did not
    /// know it at the view's current revision, asks for a read that begins after this call
    /// and waits for it, at most [`CATCH_UP_LIMIT`] (while the database is unreachable,
    /// the read that follows reconnection counts). The caller then asks the view again.
    pub(crate) async fn catch_up(&self, device: &str) {
        let device = device.to_ascii_lowercase();
        let revision = self.view.load().revision;
        if self
            .misses
            .lock()
            .is_ok_and(|m| m.get(&device) == Some(&revision))
        {
            return;
        }
        let target = self.started.load(SeqCst) + 1;
        let mut done = self.done.subscribe();
        self.wanted.notify_one();
        let read = tokio::time::timeout(CATCH_UP_LIMIT, done.wait_for(|d| *d >= target)).await;
        let view = self.view.load();
        if matches!(read, Ok(Ok(_))) && self.is_up() && !view.knows(&device) {
            if let Ok(mut m) = self.misses.lock() {
                if m.len() >= MISSES_MAX {
                    m.clear();
                }
                m.insert(device, view.revision);
            }
        }
    }

    /// What `/healthz` says.
    pub(crate) fn health(&self) -> SyncHealth {
        let view = self.view.load();
        if self.is_up() && view.loaded {
            return SyncHealth::Ok;
        }
        let why = self
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "it is being read".into());
        if !view.loaded {
            return SyncHealth::Starting(format!(
                "the device inventory ({}) has not been read yet ({why}); requests that need it are answered 503 until it is",
                self.location
            ));
        }
        let since = self.down_since.load(Relaxed);
        SyncHealth::Degraded(format!(
            "the device inventory ({}) is unreachable since {} ({why}); serving the last known state ({} devices, revision {})",
            self.location,
            time::OffsetDateTime::from_unix_timestamp(since)
                .map(mtlsgate_pki::certinfo::human_time)
                .unwrap_or_default(),
            view.len(),
            view.revision
        ))
    }

    /// Prometheus lines.
    pub(crate) fn render(&self, out: &mut String, now: i64) {
        use std::fmt::Write;
        let view = self.view.load();
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_up Whether the device inventory is reachable.\n# TYPE mtlsgate_inventory_up gauge\nmtlsgate_inventory_up {}",
            u8::from(self.is_up())
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_loaded Whether the device inventory has been read since the gateway started.\n# TYPE mtlsgate_inventory_loaded gauge\nmtlsgate_inventory_loaded {}",
            u8::from(view.loaded)
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_devices Devices in the gateway's inventory view.\n# TYPE mtlsgate_inventory_devices gauge\nmtlsgate_inventory_devices {}",
            view.len()
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_revoked_serials Revoked certificates still valid that the gateway's view holds.\n# TYPE mtlsgate_inventory_revoked_serials gauge\nmtlsgate_inventory_revoked_serials {}",
            view.revoked_len()
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_revision The inventory revision the view reflects.\n# TYPE mtlsgate_inventory_revision gauge\nmtlsgate_inventory_revision {}",
            view.revision
        );
        let confirmed = self.confirmed_ms.load(Relaxed);
        if confirmed > 0 {
            let lag_ms = (now_millis() - confirmed).max(0);
            let _ = writeln!(
                out,
                "# HELP mtlsgate_inventory_lag_seconds Seconds since the view was last confirmed current (a read or a revision check).\n# TYPE mtlsgate_inventory_lag_seconds gauge\nmtlsgate_inventory_lag_seconds {:.3}",
                lag_ms as f64 / 1000.0
            );
            let _ = writeln!(
                out,
                "# HELP mtlsgate_inventory_sync_age_seconds Seconds since the inventory was last read (whole seconds; see mtlsgate_inventory_lag_seconds).\n# TYPE mtlsgate_inventory_sync_age_seconds gauge\nmtlsgate_inventory_sync_age_seconds {}",
                (now - confirmed / 1000).max(0)
            );
        }
        self.delays.render(out);
    }

    fn publish(&self, view: InventoryView) {
        self.view.store(Arc::new(view));
    }

    /// The database answered: the view is current as of now.
    fn reached(&self) {
        self.confirmed_ms.store(now_millis(), Relaxed);
        if !self.up.swap(true, Relaxed) {
            self.down_since.store(0, Relaxed);
            if let Ok(mut e) = self.last_error.lock() {
                *e = None;
            }
        }
    }

    fn lost(&self, why: String) {
        if self.up.swap(false, Relaxed) {
            self.down_since.store(now_unix(), Relaxed);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }

    /// Whether an error has been recorded since the database was last reachable.
    fn failing(&self) -> bool {
        self.last_error.lock().map(|e| e.is_some()).unwrap_or(false)
    }

    /// A read begins: its number.
    fn begin_read(&self) -> u64 {
        self.started.fetch_add(1, SeqCst) + 1
    }

    /// Read `n` is complete (successful or not): requests waiting for it go on.
    /// (A failed read ends the follow; its waiters see the last view.)
    fn end_read(&self, n: u64) {
        self.done.send_if_modified(|d| {
            let newer = n > *d;
            if newer {
                *d = n;
            }
            newer
        });
    }
}

/// Commit-to-apply delays of the changes the view took in.
#[derive(Default)]
struct DelayHistogram {
    buckets: [AtomicU64; DELAY_BUCKETS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
    max_ms: AtomicI64,
}

impl DelayHistogram {
    fn observe(&self, ms: i64) {
        let ms = ms.max(0);
        let secs = ms as f64 / 1000.0;
        for (b, le) in self.buckets.iter().zip(DELAY_BUCKETS) {
            if secs <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ms
            .fetch_add(u64::try_from(ms).unwrap_or(0), Relaxed);
        self.max_ms.fetch_max(ms, Relaxed);
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_apply_delay_seconds Time from an inventory change's commit (the writer's clock) to this gateway applying it.\n# TYPE mtlsgate_inventory_apply_delay_seconds histogram"
        );
        for (b, le) in self.buckets.iter().zip(DELAY_BUCKETS) {
            let _ = writeln!(
                out,
                "mtlsgate_inventory_apply_delay_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(
            out,
            "mtlsgate_inventory_apply_delay_seconds_bucket{{le=\"+Inf\"}} {count}\nmtlsgate_inventory_apply_delay_seconds_sum {:.3}\nmtlsgate_inventory_apply_delay_seconds_count {count}",
            self.sum_ms.load(Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_apply_delay_max_seconds The longest commit-to-apply delay seen since the gateway started.\n# TYPE mtlsgate_inventory_apply_delay_max_seconds gauge\nmtlsgate_inventory_apply_delay_max_seconds {:.3}",
            self.max_ms.load(Relaxed) as f64 / 1000.0
        );
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn now_millis() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Keeps `inv` current from `location`, for as long as the gateway runs (abort the task
/// to stop it). `roots` are the serials of the CA roots the gateway trusts: the inventory
/// must belong to one of them. `changed` runs after every new view is published (the
/// gateway wakes its open connections, which re-check their clients).
pub(crate) async fn sync(
    inv: Arc<InventoryState>,
    location: Location,
    roots: Vec<String>,
    poll: Duration,
    changed: Arc<dyn Fn() + Send + Sync>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        match connect(&location, &roots).await {
            Ok(db) => {
                backoff = BACKOFF_MIN;
                let why = follow(&inv, &db, poll, &*changed, connected_before).await;
                connected_before = true;
                db.close().await;
                tracing::warn!(
                    "the device inventory ({}) became unreachable: {why}; serving the last known state, reconnecting",
                    inv.location
                );
                inv.lost(why);
            }
            Err(why) => {
                if inv.is_up() || !inv.failing() {
                    tracing::warn!(
                        "cannot read the device inventory ({}): {why}; retrying every {}s at most",
                        inv.location,
                        BACKOFF_MAX.as_secs_f64()
                    );
                }
                inv.lost(why);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(location: &Location, roots: &[String]) -> Result<Inventory, String> {
    let mut last = String::from(
        "the client CA bundle holds no CA certificate to check that the inventory belongs to it",
    );
    // Two connections at most: the LISTEN connection and one for reads.
    let pg = PostgresOptions {
        wait: PG_WAIT,
        connections: 2,
    };
    for root in roots {
        match Inventory::open_with(location, root, pg).await {
            Ok(db) => return Ok(db),
            Err(mtlsgate_store::StoreError::OtherCa { .. }) => {
                last = "it does not belong to a CA this gateway trusts for its clients (no certificate of the client CA bundle is recorded in it)".to_string();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// Why the follow loop reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    Notified,
    Check,
    Resync,
    Wanted,
}

/// Subscribes, reads everything, then follows changes until the database fails; returns
/// why.
async fn follow(
    inv: &InventoryState,
    db: &Inventory,
    poll: Duration,
    changed: &(dyn Fn() + Send + Sync),
    again: bool,
) -> String {
    // Subscribe first: a change committed while the snapshot is read still notifies.
    let mut listener = match db.listen().await {
        Ok(l) => l,
        Err(e) => return e.to_string(),
    };
    let n = inv.begin_read();
    let view = match read(inv, db, true).await {
        Ok((view, _, _)) => view,
        Err(e) => {
            inv.end_read(n);
            return e;
        }
    };
    tracing::info!(
        "device inventory ({}){}: {} devices at revision {}",
        inv.location,
        if again {
            " read again after reconnecting"
        } else {
            ""
        },
        view.len(),
        view.revision
    );
    inv.publish(view);
    inv.reached();
    inv.end_read(n);
    changed();

    let check_every = if listener.is_some() {
        REVISION_CHECK
    } else {
        poll
    };
    let mut check = tokio::time::interval(check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();
    let mut last_wanted: Option<Instant> = None;
    loop {
        let wake = tokio::select! {
            n = async {
                match &mut listener {
                    Some(l) => l.try_recv().await,
                    None => std::future::pending().await,
                }
            } => match n {
                Ok(Some(_)) => Wake::Notified,
                Ok(None) => return "the connection to PostgreSQL was lost".into(),
                Err(e) => return e.to_string(),
            },
            _ = check.tick() => Wake::Check,
            _ = resync.tick() => Wake::Resync,
            _ = inv.wanted.notified() => Wake::Wanted,
        };
        if wake == Wake::Wanted {
            if let Some(t) = last_wanted {
                tokio::time::sleep_until((t + CATCH_UP_GAP).into()).await;
            }
            last_wanted = Some(Instant::now());
        }
        let n = inv.begin_read();
        let read = read_once(inv, db, wake, changed).await;
        inv.end_read(n);
        if let Err(e) = read {
            return e;
        }
    }
}

/// Reads everything (`full`) or the changes after the view's revision, row by row into
/// the next view; returns it, where the read brought it, and the number of rows.
async fn read(
    inv: &InventoryState,
    db: &Inventory,
    full: bool,
) -> Result<(InventoryView, ChangesHead, usize), String> {
    let current = inv.view.load_full();
    let mut reader = current.reader(full, now_unix());
    let valid_at = reader.valid_at();
    let mut rows = 0usize;
    let since = if full { 0 } else { current.revision };
    let head = db
        .read_changes(since, valid_at, |row| {
            rows += 1;
            reader.row(row)
        })
        .await
        .map_err(|e| e.to_string())?;
    let view = reader.finish(head).map_err(|e| e.to_string())?;
    Ok((view, head, rows))
}

/// One read: a revision check (then the changes, if the revision moved), the changes after
/// the view's revision, or everything.
async fn read_once(
    inv: &InventoryState,
    db: &Inventory,
    wake: Wake,
    changed: &(dyn Fn() + Send + Sync),
) -> Result<(), String> {
    let current = inv.view.load_full();
    if wake == Wake::Check {
        let revision = db.revision().await.map_err(|e| e.to_string())?;
        if revision == current.revision {
            inv.reached();
            return Ok(());
        }
    }
    let full = wake == Wake::Resync;
    let (next, head, n) = read(inv, db, full).await?;
    inv.reached();
    if head.revision == current.revision && !full {
        return Ok(());
    }
    let newer = head.revision > current.revision;
    let committed = head.revision_ms;
    if newer {
        if let Some(ms) = committed {
            inv.delays.observe(now_millis() - ms);
        }
        tracing::debug!("device inventory: revision {} ({n} changes)", next.revision);
    }
    inv.publish(next);
    changed();
    Ok(())
}
