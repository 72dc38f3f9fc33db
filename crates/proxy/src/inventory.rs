//! The gateway's view of the device inventory (`inventory = "CA_DIR"` or a PostgreSQL URL
//! in gate.toml, `--inventory` on the command line), and the task that keeps it current.
//!
//! Requests never touch the database: a route with `allow = { inventory = true }` asks the
//! in-memory [`InventoryView`] (a hash lookup), which a background task replaces whenever
//! the inventory changes — at once on PostgreSQL (LISTEN/NOTIFY, with a full resync every
//! minute and after every reconnect), by polling on SQLite (every `inventory_poll`,
//! default 1 s). Each new view wakes the open connections, and those of a device that is
//! now revoked, denied or quarantined, or whose certificate was revoked, are closed.
//!
//! When the database is away the last view keeps serving and the task retries with
//! back-off; `/metrics` and `/healthz` say so. A device the gateway has never seen is
//! refused, also before the first load: the view fails closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mtlsgate_store::{Changes, DeviceStatus, Inventory, Location};

use crate::state::State;

/// What the gateway knows of one device.
#[derive(Debug, Clone)]
struct DeviceEntry {
    status: DeviceStatus,
    tags: Vec<String>,
}

/// A snapshot of the inventory: device statuses and tags, revoked serials.
#[derive(Debug, Clone, Default)]
pub struct InventoryView {
    devices: HashMap<String, DeviceEntry>,
    revoked: HashSet<String>,
    /// The inventory's revision this view reflects.
    pub revision: i64,
    /// False until the first load succeeded.
    pub loaded: bool,
}

/// Why the inventory refuses a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryDenial {
    NotLoaded {
        location: String,
    },
    NoDeviceId,
    Unknown {
        device: String,
    },
    Status {
        device: String,
        status: DeviceStatus,
    },
    SerialRevoked {
        device: String,
        serial: String,
    },
    Tags {
        device: String,
        wanted: Vec<String>,
    },
}

impl std::fmt::Display for InventoryDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InventoryDenial::NotLoaded { location } => write!(
                f,
                "the device inventory ({location}) has not been read yet, so no device can be let in"
            ),
            InventoryDenial::NoDeviceId => {
                f.write_str("the certificate names no device (it has no subject CN)")
            }
            InventoryDenial::Unknown { device } => {
                write!(f, "device {device} is not in the inventory")
            }
            InventoryDenial::Status { device, status } => {
                write!(f, "device {device} is {status} in the inventory")
            }
            InventoryDenial::SerialRevoked { device, serial } => write!(
                f,
                "the certificate of device {device} (serial {serial}) is revoked in the inventory"
            ),
            InventoryDenial::Tags { device, wanted } => write!(
                f,
                "device {device} carries none of the tags {}",
                wanted.join(", ")
            ),
        }
    }
}

impl InventoryView {
    /// The one inventory rule: let in a device that is known, active, not holding a revoked
    /// certificate, and (when `tags` are named) carrying one of them.
    pub fn check(
        &self,
        location: &str,
        device_id: Option<&str>,
        serial: &str,
        tags: &[String],
    ) -> Result<(), InventoryDenial> {
        if !self.loaded {
            return Err(InventoryDenial::NotLoaded {
                location: location.to_string(),
            });
        }
        let Some(id) = device_id else {
            return Err(InventoryDenial::NoDeviceId);
        };
        let shown = mtlsgate_pki::printable::printable(id).into_owned();
        let Some(entry) = self.devices.get(&id.to_ascii_lowercase()) else {
            return Err(InventoryDenial::Unknown { device: shown });
        };
        if entry.status != DeviceStatus::Active {
            return Err(InventoryDenial::Status {
                device: shown,
                status: entry.status,
            });
        }
        if self.revoked.contains(serial) {
            return Err(InventoryDenial::SerialRevoked {
                device: shown,
                serial: serial.to_string(),
            });
        }
        if !tags.is_empty() && !tags.iter().any(|t| entry.tags.contains(t)) {
            return Err(InventoryDenial::Tags {
                device: shown,
                wanted: tags.to_vec(),
            });
        }
        Ok(())
    }

    /// Whether an open connection of this device must be closed now: the device is known
    /// and no longer active, or this certificate was revoked. (A device the inventory does
    /// not know is refused per request, where a route asks; its connection may serve other
    /// routes.)
    pub fn closes(&self, device_id: Option<&str>, serial: &str) -> Option<InventoryDenial> {
        if !self.loaded {
            return None;
        }
        let id = device_id?;
        let shown = || mtlsgate_pki::printable::printable(id).into_owned();
        if self.revoked.contains(serial) {
            return Some(InventoryDenial::SerialRevoked {
                device: shown(),
                serial: serial.to_string(),
            });
        }
        match self.devices.get(&id.to_ascii_lowercase()) {
            Some(e) if e.status != DeviceStatus::Active => Some(InventoryDenial::Status {
                device: shown(),
                status: e.status,
            }),
            _ => None,
        }
    }

    /// Number of devices known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// This view with `changes` applied (a full load when `full`).
    fn apply(&self, changes: Changes, full: bool) -> InventoryView {
        let mut next = if full {
            InventoryView::default()
        } else {
            self.clone()
        };
        for d in changes.devices {
            next.devices.insert(
                d.id.to_ascii_lowercase(),
                DeviceEntry {
                    status: d.status,
                    tags: d.tags,
                },
            );
        }
        for r in changes.revoked {
            next.revoked.insert(r.serial);
        }
        next.revision = changes.revision;
        next.loaded = true;
        next
    }
}

/// The view, and how its synchronisation is doing (for `/metrics` and `/healthz`).
pub struct InventoryState {
    view: ArcSwap<InventoryView>,
    /// Where the inventory is (a path, or a URL without its password).
    pub location: String,
    up: AtomicBool,
    /// Unix time of the last successful read.
    last_sync: AtomicI64,
    /// Unix time since when the database has been unreachable (0: it is reachable).
    down_since: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl InventoryState {
    pub fn new(location: String) -> InventoryState {
        InventoryState {
            view: ArcSwap::from_pointee(InventoryView::default()),
            location,
            up: AtomicBool::new(false),
            last_sync: AtomicI64::new(0),
            down_since: AtomicI64::new(now_unix()),
            last_error: Mutex::new(None),
        }
    }

    /// The current view (a lock-free load).
    pub fn view(&self) -> arc_swap::Guard<Arc<InventoryView>> {
        self.view.load()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// `Some(sentence)` while the database is unreachable.
    pub fn degraded(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        let view = self.view.load();
        let since = self.down_since.load(Relaxed);
        let why = self
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "not read yet".into());
        Some(format!(
            "the device inventory ({}) is unreachable since {} ({why}); {}",
            self.location,
            time::OffsetDateTime::from_unix_timestamp(since)
                .map(mtlsgate_pki::certinfo::human_time)
                .unwrap_or_default(),
            if view.loaded {
                format!(
                    "serving the last known state ({} devices, revision {})",
                    view.len(),
                    view.revision
                )
            } else {
                "no device is let in until it is read".into()
            }
        ))
    }

    /// Prometheus lines.
    pub fn render(&self, out: &mut String, now: i64) {
        use std::fmt::Write;
        let view = self.view.load();
        let last = self.last_sync.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_up Whether the device inventory is reachable.\n# TYPE mtlsgate_inventory_up gauge\nmtlsgate_inventory_up {}",
            u8::from(self.is_up())
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_devices Devices in the gateway's inventory view.\n# TYPE mtlsgate_inventory_devices gauge\nmtlsgate_inventory_devices {}",
            view.len()
        );
        let _ = writeln!(
            out,
            "# HELP mtlsgate_inventory_revision The inventory revision the view reflects.\n# TYPE mtlsgate_inventory_revision gauge\nmtlsgate_inventory_revision {}",
            view.revision
        );
        if last > 0 {
            let _ = writeln!(
                out,
                "# HELP mtlsgate_inventory_sync_age_seconds Seconds since the inventory was last read.\n# TYPE mtlsgate_inventory_sync_age_seconds gauge\nmtlsgate_inventory_sync_age_seconds {}",
                (now - last).max(0)
            );
        }
    }

    fn publish(&self, view: InventoryView) {
        self.view.store(Arc::new(view));
    }

    fn reached(&self) {
        self.last_sync.store(now_unix(), Relaxed);
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
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How often PostgreSQL gateways read everything again, in case a notification was lost.
const RESYNC: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps `inv` current from `location`, for as long as the gateway runs. `roots` are the
/// serials of the CA roots the gateway trusts: the inventory must belong to one of them.
pub async fn sync(
    state: Arc<State>,
    inv: Arc<InventoryState>,
    location: Location,
    roots: Vec<String>,
    poll: Duration,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&location, &roots).await {
            Ok(db) => {
                backoff = BACKOFF_MIN;
                let why = follow(&state, &inv, &db, poll).await;
                db.close().await;
                tracing::warn!(
                    "the device inventory ({}) became unreachable: {why}; serving the last known state, retrying",
                    inv.location
                );
                inv.lost(why);
            }
            Err(why) => {
                if inv.is_up() || inv.last_error.lock().map(|e| e.is_none()).unwrap_or(true) {
                    tracing::warn!(
                        "cannot read the device inventory ({}): {why}; retrying in {backoff:?}",
                        inv.location
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
    for root in roots {
        match Inventory::open(location, root).await {
            Ok(db) => return Ok(db),
            Err(mtlsgate_store::StoreError::OtherCa { .. }) => {
                last = "it does not belong to a CA this gateway trusts for its clients (no certificate of the client CA bundle is recorded in it)".to_string();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// Reads everything, then follows changes until the database fails; returns why.
async fn follow(state: &State, inv: &InventoryState, db: &Inventory, poll: Duration) -> String {
    let full = match db.changes_since(0).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let view = inv.view.load().apply(full, true);
    tracing::info!(
        "device inventory ({}): {} devices at revision {}",
        inv.location,
        view.len(),
        view.revision
    );
    inv.publish(view);
    inv.reached();
    state.inventory_changed();
    let mut listener = match db.listen().await {
        Ok(l) => l,
        Err(e) => return e.to_string(),
    };
    let mut resync = tokio::time::interval(RESYNC);
    resync.reset();
    loop {
        let full = match &mut listener {
            Some(l) => {
                tokio::select! {
                    n = l.recv() => match n {
                        Ok(_) => false,
                        Err(e) => return e.to_string(),
                    },
                    _ = resync.tick() => true,
                }
            }
            None => {
                tokio::time::sleep(poll).await;
                false
            }
        };
        let since = if full { 0 } else { inv.view.load().revision };
        let changes = match db.changes_since(since).await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        inv.reached();
        let current = inv.view.load_full();
        if !full && changes.revision == current.revision {
            continue;
        }
        let n = changes.devices.len() + changes.revoked.len();
        let next = current.apply(changes, full);
        if full || n > 0 {
            tracing::debug!("device inventory: revision {} ({n} changes)", next.revision);
        }
        inv.publish(next);
        state.inventory_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtlsgate_store::{Device, RevokedSerial};

    fn device(id: &str, status: DeviceStatus, tags: &[&str]) -> Device {
        Device {
            id: id.into(),
            status,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            first_seen: 0,
            last_seen: None,
            last_addr: None,
            agent_version: None,
            cert_serial: None,
            cert_not_after: None,
            prev_serial: None,
            lifetime_secs: None,
            created_by: "t".into(),
            revision: 1,
            pending_csr: None,
            poll_hash: None,
        }
    }

    #[test]
    fn the_rule_fails_closed() {
        let empty = InventoryView::default();
        assert!(matches!(
            empty.check("db", Some("a"), "01", &[]),
            Err(InventoryDenial::NotLoaded { .. })
        ));
        let v = empty.apply(
            Changes {
                revision: 3,
                devices: vec![
                    device("a.d.x", DeviceStatus::Active, &["lab"]),
                    device("b.d.x", DeviceStatus::Revoked, &[]),
                ],
                revoked: vec![RevokedSerial {
                    serial: "0BAD".into(),
                    device_id: Some("a.d.x".into()),
                    revision: Some(3),
                }],
            },
            true,
        );
        assert_eq!(v.check("db", Some("A.d.x"), "01", &[]), Ok(()));
        assert_eq!(v.check("db", Some("a.d.x"), "01", &["lab".into()]), Ok(()));
        assert!(matches!(
            v.check("db", Some("a.d.x"), "01", &["prod".into()]),
            Err(InventoryDenial::Tags { .. })
        ));
        assert!(matches!(
            v.check("db", Some("a.d.x"), "0BAD", &[]),
            Err(InventoryDenial::SerialRevoked { .. })
        ));
        assert!(matches!(
            v.check("db", Some("b.d.x"), "01", &[]),
            Err(InventoryDenial::Status { .. })
        ));
        assert!(matches!(
            v.check("db", Some("c.d.x"), "01", &[]),
            Err(InventoryDenial::Unknown { .. })
        ));
        assert!(v.closes(Some("b.d.x"), "02").is_some());
        assert!(v.closes(Some("a.d.x"), "0BAD").is_some());
        assert!(
            v.closes(Some("c.d.x"), "02").is_none(),
            "unknown: refused per route"
        );
        // An incremental change keeps the rest.
        let w = v.apply(
            Changes {
                revision: 4,
                devices: vec![device("a.d.x", DeviceStatus::Denied, &[])],
                revoked: vec![],
            },
            false,
        );
        assert!(w.closes(Some("a.d.x"), "01").is_some());
        assert!(w.check("db", Some("b.d.x"), "01", &[]).is_err());
        assert_eq!(w.revision, 4);
    }
}
