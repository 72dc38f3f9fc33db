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

#[cfg(test)]
mod interleaving;

pub(crate) use sync::{sync, InventoryState, SyncHealth};

use std::collections::{HashMap, HashSet};

use mtlsgate_store::{Changes, DeviceStatus};

/// What the gateway knows of one device.
#[derive(Debug, Clone)]
struct DeviceEntry {
    status: DeviceStatus,
    tags: Vec<String>,
}

/// One device as a view holds it: lower-case ID, status, tags.
#[cfg(test)]
type ViewEntry = (String, DeviceStatus, Vec<String>);

/// A snapshot of the inventory: device statuses and tags, revoked serials.
#[derive(Debug, Clone, Default)]
pub(crate) struct InventoryView {
    devices: HashMap<String, DeviceEntry>,
    revoked: HashSet<String>,
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
        match self.devices.get(&id.to_ascii_lowercase()) {
            Some(e) if e.status != DeviceStatus::Active => Some(InventoryDenial::Status {
                device: shown(),
                status: e.status,
            }),
            _ => None,
        }
    }

    /// Whether the view knows this device (by its lower-case ID).
    fn knows(&self, device_lower: &str) -> bool {
        self.devices.contains_key(device_lower)
    }

    /// Every device's status and tags (lower-case IDs), and the revoked serials: what a
    /// test compares with the database.
    #[cfg(test)]
    pub(crate) fn contents(&self) -> (Vec<ViewEntry>, Vec<String>) {
        let mut d: Vec<_> = self
            .devices
            .iter()
            .map(|(k, e)| (k.clone(), e.status, e.tags.clone()))
            .collect();
        d.sort_by(|a, b| a.0.cmp(&b.0));
        let mut r: Vec<String> = self.revoked.iter().cloned().collect();
        r.sort();
        (d, r)
    }

    /// Number of devices known.
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// This view with `changes` applied (a full load when `full`).
    pub(crate) fn apply(&self, changes: Changes, full: bool) -> InventoryView {
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
}
