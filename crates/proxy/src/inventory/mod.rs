//! The gateway's view of the device inventory (`inventory = "CA_DIR"` or a PostgreSQL URL
//! in gate.toml, `--inventory` on the command line): [`InventoryView`], a pure snapshot
//! of device statuses, tags and revoked serials, and the one rule that asks it
//! ([`InventoryView::check`]). Keeping it current is [`sync`]'s job.
//!
//! Requests never touch the database: a route with `allow = { inventory = true }` asks the
//! in-memory view (a hash lookup). A device the view does not know makes the request wait
//! (bounded) for one fresh read before it is refused, and until the first read completes
//! requests are answered 503 with `Retry-After`, never 403: the gateway cannot tell yet.

mod sync;
mod table;

#[cfg(test)]
mod interleaving;

pub(crate) use sync::{sync, InventoryState, SyncHealth};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use mtlsgate_store::{ChangesHead, DeviceStatus, GatewayRow, StoreError};
use table::{DeviceTable, RevokedSerials, TableBuilder, Tags};

#[cfg(test)]
use mtlsgate_store::Changes;

/// One device as a view holds it: lower-case ID, status, tags.
#[cfg(test)]
type ViewEntry = (String, DeviceStatus, Vec<String>);

/// Devices changed since the table was built: lower-case ID → status, tags.
type Changed = HashMap<Box<str>, (DeviceStatus, Tags)>;

/// How many changed devices a view keeps beside its table before it folds them in (a new
/// table): at least this many, …
const FOLD_MIN: usize = 1024;
/// … or this fraction of the table (so folding costs a constant per change).
const FOLD_SHARE: usize = 64;

/// How long past its expiry a revoked serial is kept (clocks differ a little).
const EXPIRY_GRACE: i64 = 300;

/// A snapshot of the inventory: device statuses and tags, revoked serials. Cheap to
/// clone (its parts are shared): the devices of the last full read in a compact
/// [`DeviceTable`], the devices changed since in a small map beside it, and the revoked
/// serials still valid.
#[derive(Debug, Clone, Default)]
pub(crate) struct InventoryView {
    table: Arc<DeviceTable>,
    changed: Arc<Changed>,
    /// Changed devices the table does not hold.
    added: usize,
    revoked: Arc<RevokedSerials>,
    /// The inventory's revision this view reflects.
    revision: i64,
    /// False until the first load succeeded.
    pub(crate) loaded: bool,
}

/// Why the inventory refuses a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InventoryDenial {
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
                "the gateway is starting: the device inventory ({location}) has not been read yet, so no device can be let in; try again in a moment"
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
    /// The status and tags of a device (its ID in any case).
    fn entry(&self, id: &str) -> Option<(DeviceStatus, &Tags)> {
        if !self.changed.is_empty() {
            let lower = if id.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(id.to_ascii_lowercase())
            } else {
                Cow::Borrowed(id)
            };
            if let Some((s, t)) = self.changed.get(lower.as_ref()) {
                return Some((*s, t));
            }
        }
        self.table.get(id)
    }

    /// The one inventory rule: let in a device that is known, active, not holding a revoked
    /// certificate, and (when `tags` are named) carrying one of them.
    pub(crate) fn check(
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
        let shown = || mtlsgate_pki::printable::printable(id).into_owned();
        let Some((status, carried)) = self.entry(id) else {
            return Err(InventoryDenial::Unknown { device: shown() });
        };
        if status != DeviceStatus::Active {
            return Err(InventoryDenial::Status {
                device: shown(),
                status,
            });
        }
        if self.revoked.contains(serial) {
            return Err(InventoryDenial::SerialRevoked {
                device: shown(),
                serial: serial.to_string(),
            });
        }
        if !tags.is_empty() && !tags.iter().any(|t| carried.iter().any(|c| **c == **t)) {
            return Err(InventoryDenial::Tags {
                device: shown(),
                wanted: tags.to_vec(),
            });
        }
        Ok(())
    }

    /// Whether an open connection of this device must be closed now: the device is known
    /// and no longer active, or this certificate was revoked. (A device the inventory does
    /// not know is refused per request, where a route asks; its connection may serve other
    /// routes.)
    pub(crate) fn closes(&self, device_id: Option<&str>, serial: &str) -> Option<InventoryDenial> {
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
        match self.entry(id) {
            Some((status, _)) if status != DeviceStatus::Active => Some(InventoryDenial::Status {
                device: shown(),
                status,
            }),
            _ => None,
        }
    }

    /// Whether the view knows this device.
    fn knows(&self, device: &str) -> bool {
        self.entry(device).is_some()
    }

    /// Every device's status and tags (lower-case IDs), and the revoked serials (uppercase
    /// hex): what a test compares with the database.
    #[cfg(test)]
    pub(crate) fn contents(&self) -> (Vec<ViewEntry>, Vec<String>) {
        let list = |t: &Tags| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut d: Vec<ViewEntry> = self
            .table
            .entries()
            .filter(|(id, _, _)| !self.changed.contains_key(*id))
            .map(|(id, s, t)| (id.to_string(), s, list(t)))
            .chain(
                self.changed
                    .iter()
                    .map(|(id, (s, t))| (id.to_string(), *s, list(t))),
            )
            .collect();
        d.sort_by(|a, b| a.0.cmp(&b.0));
        (d, self.revoked.serials())
    }

    /// Number of devices known.
    pub(crate) fn len(&self) -> usize {
        self.table.len() + self.added
    }

    /// Number of revoked serials kept (those still valid).
    pub(crate) fn revoked_len(&self) -> usize {
        self.revoked.len()
    }

    /// This view with `changes` applied (a full load when `full`); revoked serials kept
    /// for ever.
    #[cfg(test)]
    pub(crate) fn apply(&self, changes: Changes, full: bool) -> InventoryView {
        let mut b = self.reader(full, i64::MIN);
        for d in changes.devices {
            let tags = mtlsgate_store::tags_to_json(&d.tags);
            b.row(GatewayRow::Device {
                id: &d.id,
                status: d.status,
                tags: &tags,
                revision: d.revision,
            })
            .expect("tags");
        }
        for r in changes.revoked {
            b.row(GatewayRow::Revoked {
                serial: &r.serial,
                not_after: i64::MAX,
            })
            .expect("serial");
        }
        b.finish(ChangesHead {
            revision: changes.revision,
            revision_ms: changes.revision_ms,
        })
        .expect("finish")
    }

    /// A reader of rows that makes the next view: from nothing when `full`, else from
    /// this one. Revoked serials that expired before `now` are left out.
    pub(crate) fn reader(&self, full: bool, now: i64) -> ViewReader<'_> {
        let valid_at = now.saturating_sub(EXPIRY_GRACE);
        ViewReader {
            base: (!full).then_some(self),
            table: TableBuilder::default(),
            changed: if full {
                Changed::new()
            } else {
                (*self.changed).clone()
            },
            revoked: if full {
                RevokedSerials::default()
            } else {
                let mut r = (*self.revoked).clone();
                r.prune(valid_at);
                r
            },
            added: if full { 0 } else { self.added },
            valid_at,
            tags_seen: HashMap::new(),
        }
    }
}

/// Makes the next [`InventoryView`] from the rows of one read, as they arrive (see
/// [`InventoryView::reader`]).
pub(crate) struct ViewReader<'a> {
    /// The view the rows change (`None`: a full read).
    base: Option<&'a InventoryView>,
    /// A full read's devices.
    table: TableBuilder,
    /// Changed devices (a read of changes).
    changed: Changed,
    /// Changed devices the base's table does not hold.
    added: usize,
    revoked: RevokedSerials,
    valid_at: i64,
    /// Tag lists of a read of changes, by their stored text.
    tags_seen: HashMap<Box<str>, Tags>,
}

impl ViewReader<'_> {
    /// Revoked serials that expired before this time (Unix seconds) are left out.
    pub(crate) fn valid_at(&self) -> i64 {
        self.valid_at
    }

    /// Takes one row in.
    pub(crate) fn row(&mut self, row: GatewayRow<'_>) -> Result<(), StoreError> {
        match row {
            GatewayRow::Device {
                id,
                status,
                tags,
                revision,
            } => {
                if self.base.is_none() {
                    let t = self
                        .table
                        .tags_by_text(tags, || mtlsgate_store::parse_tags(id, tags))?;
                    self.table
                        .push(id, status, t, revision)
                        .map_err(|e| StoreError::BadRow {
                            what: format!("device {id}"),
                            detail: e.to_string(),
                        })?;
                } else {
                    let list = match self.tags_seen.get(tags) {
                        Some(l) => l.clone(),
                        None => {
                            let l: Tags = mtlsgate_store::parse_tags(id, tags)?
                                .into_iter()
                                .map(String::into_boxed_str)
                                .collect();
                            self.tags_seen.insert(tags.into(), l.clone());
                            l
                        }
                    };
                    let lower = id.to_ascii_lowercase().into_boxed_str();
                    let new = self.changed.insert(lower, (status, list)).is_none();
                    if new && self.base.is_some_and(|b| b.table.get(id).is_none()) {
                        self.added += 1;
                    }
                }
            }
            GatewayRow::Revoked { serial, not_after } => {
                if not_after >= self.valid_at {
                    self.revoked.insert(serial, not_after);
                }
            }
        }
        Ok(())
    }

    /// The view the rows made, at the read's revision.
    pub(crate) fn finish(self, head: ChangesHead) -> Result<InventoryView, StoreError> {
        let too_large = |e: table::TooLarge| StoreError::BadRow {
            what: "the device inventory".into(),
            detail: e.to_string(),
        };
        let (table, changed, added) = match self.base {
            None => (Arc::new(self.table.build()), Changed::new(), 0),
            Some(base) if self.changed.len() > FOLD_MIN.max(base.table.len() / FOLD_SHARE) => {
                // Fold the changes into a new table.
                let mut b = TableBuilder::default();
                for (id, s, t) in base.table.entries() {
                    if !self.changed.contains_key(id) {
                        b.push_shared(id, s, t, 0).map_err(too_large)?;
                    }
                }
                for (id, (s, t)) in &self.changed {
                    b.push_shared(id, *s, t, 0).map_err(too_large)?;
                }
                (Arc::new(b.build()), Changed::new(), 0)
            }
            Some(base) => (base.table.clone(), self.changed, self.added),
        };
        Ok(InventoryView {
            table,
            changed: Arc::new(changed),
            added,
            revoked: Arc::new(self.revoked),
            revision: head.revision,
            loaded: true,
        })
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
                revision_ms: None,
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
                revision_ms: None,
                devices: vec![device("a.d.x", DeviceStatus::Denied, &[])],
                revoked: vec![],
            },
            false,
        );
        assert!(w.closes(Some("a.d.x"), "01").is_some());
        assert!(w.check("db", Some("b.d.x"), "01", &[]).is_err());
        assert_eq!(w.revision, 4);
    }

    fn read(
        base: &InventoryView,
        full: bool,
        now: i64,
        rows: &[GatewayRow<'_>],
        rev: i64,
    ) -> InventoryView {
        let mut r = base.reader(full, now);
        for row in rows {
            r.row(*row).expect("row");
        }
        r.finish(ChangesHead {
            revision: rev,
            revision_ms: None,
        })
        .expect("finish")
    }

    fn dev<'a>(id: &'a str, status: DeviceStatus, tags: &'static str) -> GatewayRow<'a> {
        GatewayRow::Device {
            id,
            status,
            tags,
            revision: 1,
        }
    }

    #[test]
    fn reads_of_changes_update_the_view_and_fold_into_its_table() {
        let now = 1_000_000;
        let ids: Vec<String> = (0..3000).map(|i| format!("dev-{i}.d.x")).collect();
        let rows: Vec<_> = ids
            .iter()
            .map(|id| dev(id, DeviceStatus::Active, r#"["lab"]"#))
            .collect();
        let v = read(&InventoryView::default(), true, now, &rows, 10);
        assert_eq!((v.len(), v.revision), (3000, 10));
        assert_eq!(
            v.check("db", Some("dev-7.d.x"), "01", &["lab".into()]),
            Ok(())
        );

        // A change: one device denied, one retagged, one new, one serial revoked.
        let w = read(
            &v,
            false,
            now,
            &[
                dev("DEV-7.d.x", DeviceStatus::Denied, "[]"),
                dev("dev-8.d.x", DeviceStatus::Active, r#"["prod"]"#),
                dev("new.d.x", DeviceStatus::Active, "[]"),
                GatewayRow::Revoked {
                    serial: "0BAD",
                    not_after: now + 10,
                },
            ],
            11,
        );
        assert_eq!((w.len(), w.revision), (3001, 11));
        assert!(w.closes(Some("dev-7.d.x"), "01").is_some());
        assert!(matches!(
            w.check("db", Some("dev-8.d.x"), "01", &["lab".into()]),
            Err(InventoryDenial::Tags { .. })
        ));
        assert_eq!(
            w.check("db", Some("dev-8.d.x"), "01", &["prod".into()]),
            Ok(())
        );
        assert_eq!(w.check("db", Some("New.d.x"), "01", &[]), Ok(()));
        assert!(w.closes(Some("dev-9.d.x"), "0bad").is_some());
        // The view it came from is unchanged (requests may still hold it).
        assert_eq!(v.check("db", Some("dev-7.d.x"), "01", &[]), Ok(()));
        assert_eq!(v.len(), 3000);
        assert!(v.closes(Some("dev-9.d.x"), "0BAD").is_none());

        // Enough changes fold into a new table, with the same contents.
        let many: Vec<String> = (0..FOLD_MIN + 1).map(|i| format!("more-{i}.d.x")).collect();
        let rows: Vec<_> = many
            .iter()
            .map(|id| dev(id, DeviceStatus::Active, "[]"))
            .collect();
        let x = read(&w, false, now, &rows, 12);
        assert!(x.changed.is_empty(), "folded");
        assert_eq!(x.len(), 3001 + FOLD_MIN + 1);
        assert!(x.closes(Some("dev-7.d.x"), "01").is_some());
        assert!(x.closes(Some("dev-1.d.x"), "0BAD").is_some());
        assert_eq!(x.check("db", Some("more-5.d.x"), "01", &[]), Ok(()));
        let (xd, xr) = x.contents();
        assert_eq!(xd.len(), x.len());
        assert_eq!(xr, vec!["0BAD".to_string()]);

        // A full read replaces everything.
        let y = read(
            &x,
            true,
            now,
            &[dev("only.d.x", DeviceStatus::Active, "[]")],
            13,
        );
        assert_eq!(y.len(), 1);
        assert!(y.check("db", Some("dev-1.d.x"), "01", &[]).is_err());
        assert_eq!(y.revoked_len(), 0);
    }

    #[test]
    fn a_revoked_serial_is_kept_only_while_its_certificate_is_valid() {
        let now = 1_000_000;
        let rows = [
            dev("a.d.x", DeviceStatus::Active, "[]"),
            GatewayRow::Revoked {
                serial: "01",
                not_after: now - EXPIRY_GRACE - 1,
            },
            GatewayRow::Revoked {
                serial: "02",
                not_after: now + 100,
            },
        ];
        let v = read(&InventoryView::default(), true, now, &rows, 1);
        assert_eq!(v.revoked_len(), 1, "the expired one is left out");
        assert!(v.closes(Some("a.d.x"), "02").is_some());
        // A later read of changes forgets it once it has expired.
        let w = read(&v, false, now + 100 + EXPIRY_GRACE + 1, &[], 2);
        assert_eq!(w.revoked_len(), 0);
        assert!(
            v.closes(Some("a.d.x"), "02").is_some(),
            "the old view keeps it"
        );
    }

    #[test]
    fn unreadable_tags_fail_the_read() {
        let empty = InventoryView::default();
        let mut r = empty.reader(true, 0);
        assert!(r
            .row(dev("a.d.x", DeviceStatus::Active, "not json"))
            .is_err());
        let mut r = empty.reader(false, 0);
        assert!(r.row(dev("a.d.x", DeviceStatus::Active, "[1]")).is_err());
    }
}
