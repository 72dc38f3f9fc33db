//! The compact forms the inventory view is made of, sized for a million devices in tens of
//! megabytes: [`DeviceTable`] (every device's lower-case ID in one byte arena, found by an
//! open-addressing table of `u32` indexes; its status one byte, its tags one `u32` naming
//! an interned tag list) built once per full read by [`TableBuilder`], and
//! [`RevokedSerials`] (revoked serials as fixed-size bytes, with their expiry).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use mtlsgate_store::DeviceStatus;

/// An empty slot of the index table.
const EMPTY: u32 = u32::MAX;

/// A list of tags, shared by every device that carries exactly it.
pub(super) type Tags = Arc<[Box<str>]>;

/// The hash of an ID, ASCII letters taken as lower case (so that a lookup needs no
/// lower-cased copy of the ID it is given).
fn hash_id(state: &RandomState, id: &[u8]) -> u64 {
    let mut h = state.build_hasher();
    let mut buf = [0u8; 64];
    for chunk in id.chunks(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.copy_from_slice(chunk);
        b.make_ascii_lowercase();
        h.write(b);
    }
    h.write_usize(id.len());
    h.finish()
}

fn status_code(s: DeviceStatus) -> u8 {
    DeviceStatus::ALL
        .iter()
        .position(|x| *x == s)
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0)
}

fn status_of(code: u8) -> DeviceStatus {
    DeviceStatus::ALL
        .get(usize::from(code))
        .copied()
        .unwrap_or(DeviceStatus::Pending)
}

/// Every device of one full read (and the changes folded into it), immutable once built.
#[derive(Debug, Default)]
pub(super) struct DeviceTable {
    /// The lower-case IDs, one after another.
    ids: Box<[u8]>,
    /// Where each device's ID ends in `ids` (it starts where the previous one ends).
    ends: Box<[u32]>,
    status: Box<[u8]>,
    /// Index of each device's tag list in `tag_lists`.
    tags: Box<[u32]>,
    tag_lists: Box<[Tags]>,
    /// Open addressing with linear probing: device indexes, [`EMPTY`] where none.
    slots: Box<[u32]>,
    hasher: RandomState,
    /// Devices (an ID stored twice counts once).
    len: usize,
}

impl DeviceTable {
    fn id(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.ids[start..self.ends[i] as usize]
    }

    /// The index of the device whose ID is `id` (any case).
    fn find(&self, id: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = hash_id(&self.hasher, id) as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return None;
            }
            let i = slot as usize;
            if self.id(i).eq_ignore_ascii_case(id) {
                return Some(i);
            }
            at = (at + 1) & mask;
        }
    }

    /// The status and tags of device `id` (any case).
    pub(super) fn get(&self, id: &str) -> Option<(DeviceStatus, &Tags)> {
        let i = self.find(id.as_bytes())?;
        Some((
            status_of(self.status[i]),
            &self.tag_lists[self.tags[i] as usize],
        ))
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every device: lower-case ID, status, tags (an ID stored twice, once).
    pub(super) fn entries(&self) -> impl Iterator<Item = (&str, DeviceStatus, &Tags)> + '_ {
        self.slots.iter().filter(|s| **s != EMPTY).map(|s| {
            let i = *s as usize;
            (
                std::str::from_utf8(self.id(i)).unwrap_or_default(),
                status_of(self.status[i]),
                &self.tag_lists[self.tags[i] as usize],
            )
        })
    }

    /// Heap bytes held (for the figures).
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.ids.len()
            + self.ends.len() * 4
            + self.status.len()
            + self.tags.len() * 4
            + self.slots.len() * 4
    }
}

/// Builds a [`DeviceTable`] device by device.
#[derive(Default)]
pub(super) struct TableBuilder {
    ids: Vec<u8>,
    ends: Vec<u32>,
    status: Vec<u8>,
    tags: Vec<u32>,
    /// Revision of each device's row: of an ID stored twice (in two cases), the newer wins.
    revisions: Vec<i64>,
    tag_lists: Vec<Tags>,
    /// Tag lists by their stored text.
    by_text: HashMap<Box<str>, u32>,
    /// Tag lists by content (lists given parsed).
    by_list: HashMap<Tags, u32>,
}

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the device inventory is too large for the gateway's view (over 4 GiB of device IDs or 4 billion devices)")
    }
}

impl TableBuilder {
    /// The index of the tag list whose stored text is `text` (`parse` reads it the first
    /// time it is seen).
    pub(super) fn tags_by_text(
        &mut self,
        text: &str,
        parse: impl FnOnce() -> Result<Vec<String>, mtlsgate_store::StoreError>,
    ) -> Result<u32, mtlsgate_store::StoreError> {
        if let Some(i) = self.by_text.get(text) {
            return Ok(*i);
        }
        let list: Vec<String> = parse()?;
        let i = self.tags_of(list);
        self.by_text.insert(text.into(), i);
        Ok(i)
    }

    /// The index of a tag list.
    pub(super) fn tags_of(&mut self, list: Vec<String>) -> u32 {
        let list: Tags = list.into_iter().map(String::into_boxed_str).collect();
        self.tags_shared(&list)
    }

    fn tags_shared(&mut self, list: &Tags) -> u32 {
        if let Some(i) = self.by_list.get(list) {
            return *i;
        }
        let i = u32::try_from(self.tag_lists.len()).unwrap_or(u32::MAX);
        self.tag_lists.push(list.clone());
        self.by_list.insert(list.clone(), i);
        i
    }

    /// Adds a device (`tags`: an index from [`TableBuilder::tags_of`] or
    /// [`TableBuilder::tags_by_text`]).
    pub(super) fn push(
        &mut self,
        id: &str,
        status: DeviceStatus,
        tags: u32,
        revision: i64,
    ) -> Result<(), TooLarge> {
        let end = self.ids.len() + id.len();
        let end = u32::try_from(end).map_err(|_| TooLarge)?;
        if self.ends.len() >= (EMPTY as usize) / 2 {
            return Err(TooLarge);
        }
        let start = self.ids.len();
        self.ids.extend_from_slice(id.as_bytes());
        self.ids[start..].make_ascii_lowercase();
        self.ends.push(end);
        self.status.push(status_code(status));
        self.tags.push(tags);
        self.revisions.push(revision);
        Ok(())
    }

    /// Adds a device whose tags are a list another table holds.
    pub(super) fn push_shared(
        &mut self,
        id: &str,
        status: DeviceStatus,
        tags: &Tags,
        revision: i64,
    ) -> Result<(), TooLarge> {
        let t = self.tags_shared(tags);
        self.push(id, status, t, revision)
    }

    pub(super) fn build(self) -> DeviceTable {
        let TableBuilder {
            ids,
            ends,
            status,
            tags,
            revisions,
            tag_lists,
            ..
        } = self;
        let n = ends.len();
        // Load factor at most 3/4 (a power of two, for the mask).
        let cap = if n == 0 {
            0
        } else {
            (n * 4 / 3 + 1).next_power_of_two()
        };
        let mut table = DeviceTable {
            ids: ids.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            status: status.into_boxed_slice(),
            tags: tags.into_boxed_slice(),
            tag_lists: tag_lists.into_boxed_slice(),
            slots: vec![EMPTY; cap].into_boxed_slice(),
            hasher: RandomState::new(),
            len: 0,
        };
        if cap == 0 {
            return table;
        }
        let mask = cap - 1;
        for i in 0..n {
            let id = table.id(i);
            let mut at = hash_id(&table.hasher, id) as usize & mask;
            loop {
                let slot = table.slots[at];
                if slot == EMPTY {
                    table.slots[at] = i as u32;
                    table.len += 1;
                    break;
                }
                if table.id(slot as usize) == id {
                    if revisions[i] >= revisions[slot as usize] {
                        table.slots[at] = i as u32;
                    }
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        table
    }
}

/// A serial as fixed-size bytes: its length, then up to 20 bytes (RFC 5280's limit) of
/// the number it names. Serials of other forms are kept as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SerialKey([u8; 21]);

impl SerialKey {
    /// The key of an uppercase or lowercase hex serial (as nginx prints it, as the
    /// inventory stores it), or `None` when it is not such a serial of at most 20 bytes.
    fn of(serial: &str) -> Option<SerialKey> {
        let hex = serial.as_bytes();
        if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 40 {
            return None;
        }
        let mut key = [0u8; 21];
        key[0] = (hex.len() / 2) as u8;
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            key[i + 1] = (hi * 16 + lo) as u8;
        }
        Some(SerialKey(key))
    }
}

/// Revoked serials still valid, with their expiry (Unix seconds).
#[derive(Debug, Clone, Default)]
pub(super) struct RevokedSerials {
    keys: HashMap<SerialKey, i64>,
    /// Serials that are not hex of at most 20 bytes (none an X.509 CA issues).
    other: HashMap<Box<str>, i64>,
}

impl RevokedSerials {
    pub(super) fn insert(&mut self, serial: &str, not_after: i64) {
        match SerialKey::of(serial) {
            Some(k) => {
                self.keys.insert(k, not_after);
            }
            None => {
                self.other.insert(serial.into(), not_after);
            }
        }
    }

    pub(super) fn contains(&self, serial: &str) -> bool {
        match SerialKey::of(serial) {
            Some(k) => self.keys.contains_key(&k),
            None => self.other.contains_key(serial),
        }
    }

    /// Forgets the serials that expired before `valid_at`.
    pub(super) fn prune(&mut self, valid_at: i64) {
        self.keys.retain(|_, t| *t >= valid_at);
        self.other.retain(|_, t| *t >= valid_at);
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len() + self.other.len()
    }

    /// Every serial, as uppercase hex (or as given when not hex).
    #[cfg(test)]
    pub(super) fn serials(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .keys
            .keys()
            .map(|k| {
                k.0[1..=usize::from(k.0[0])]
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect()
            })
            .chain(self.other.keys().map(|s| s.to_string()))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(devices: &[(&str, DeviceStatus, &[&str], i64)]) -> DeviceTable {
        let mut b = TableBuilder::default();
        for (id, status, tags, rev) in devices {
            let t = b.tags_of(tags.iter().map(|t| t.to_string()).collect());
            b.push(id, *status, t, *rev).expect("push");
        }
        b.build()
    }

    #[test]
    fn finds_devices_in_any_case_and_only_them() {
        let t = table(&[
            ("a.d.x", DeviceStatus::Active, &["lab"], 1),
            ("b.d.x", DeviceStatus::Denied, &[], 2),
            ("c.d.x", DeviceStatus::Active, &["lab"], 3),
        ]);
        assert_eq!(t.len(), 3);
        let (s, tags) = t.get("A.D.X").expect("found");
        assert_eq!(s, DeviceStatus::Active);
        assert_eq!(&**tags, &["lab".into()] as &[Box<str>]);
        assert_eq!(t.get("b.d.x").map(|e| e.0), Some(DeviceStatus::Denied));
        assert!(t.get("d.d.x").is_none());
        assert!(t.get("a.d.").is_none(), "a prefix is another ID");
        assert!(t.get("").is_none());
        // Equal tag lists are one list.
        assert!(Arc::ptr_eq(
            t.get("a.d.x").expect("a").1,
            t.get("c.d.x").expect("c").1
        ));
        assert!(DeviceTable::default().get("a").is_none());
    }

    #[test]
    fn ids_with_unusual_bytes() {
        let odd = [
            "dév\u{0}ice.d.x",
            "Ünïcode-ÅB.d.x",
            "with space/and\\slash",
            "x",
            &"long-".repeat(40),
        ];
        let mut b = TableBuilder::default();
        let none = b.tags_of(vec![]);
        for (i, id) in odd.iter().enumerate() {
            b.push(id, DeviceStatus::Active, none, i as i64)
                .expect("push");
        }
        let t = b.build();
        assert_eq!(t.len(), odd.len());
        for id in odd {
            assert!(t.get(id).is_some(), "{id:?}");
            assert!(t.get(&id.to_ascii_uppercase()).is_some(), "{id:?} upper");
        }
        // Only ASCII letters fold (as the view always did): Ü is not ü.
        assert!(t.get("ünïcode-åb.d.x").is_none());
        assert!(t.get("ÜNïCODE-ÅB.D.X").is_some());
        assert!(t.get("dév\u{0}ice.d.y").is_none());
        let mut ids: Vec<_> = t.entries().map(|e| e.0.to_string()).collect();
        ids.sort();
        let mut want: Vec<_> = odd.iter().map(|s| s.to_ascii_lowercase()).collect();
        want.sort();
        assert_eq!(ids, want);
    }

    #[test]
    fn an_id_stored_in_two_cases_keeps_the_newer_row() {
        let t = table(&[
            ("A.d.x", DeviceStatus::Active, &[], 5),
            ("a.d.x", DeviceStatus::Revoked, &[], 3),
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("a.d.x").map(|e| e.0), Some(DeviceStatus::Active));
    }

    #[test]
    fn a_table_stays_small() {
        let mut b = TableBuilder::default();
        let lab = b.tags_of(vec!["lab".into()]);
        for i in 0..10_000 {
            b.push(
                &format!("dev-{i:07}.d.bench.local"),
                DeviceStatus::Active,
                lab,
                i,
            )
            .expect("push");
        }
        let t = b.build();
        assert_eq!(t.len(), 10_000);
        for i in (0..10_000).step_by(97) {
            assert!(t.get(&format!("DEV-{i:07}.d.bench.local")).is_some());
        }
        // 24 bytes of ID, 4 + 1 + 4 of columns, at most 4 / (3/8) of index.
        let per = t.heap_bytes() / t.len();
        assert!(per <= 24 + 9 + 11, "{per} bytes per device");
    }

    #[test]
    fn serials_as_bytes_in_either_case_and_others_as_text() {
        let mut r = RevokedSerials::default();
        r.insert("0BAD", 100);
        r.insert("7E00000000000000FF", 100);
        r.insert("not-hex", 100);
        r.insert(&"AB".repeat(21), 100);
        assert!(r.contains("0BAD"));
        assert!(r.contains("0bad"));
        assert!(
            !r.contains("BAD"),
            "another number of digits is another text"
        );
        assert!(!r.contains("0BAE"));
        assert!(r.contains("7e00000000000000ff"));
        assert!(r.contains("not-hex"));
        assert!(r.contains(&"AB".repeat(21)));
        assert!(!r.contains(""));
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.serials(),
            vec![
                "0BAD".to_string(),
                "7E00000000000000FF".into(),
                "AB".repeat(21),
                "not-hex".into()
            ]
        );
    }

    #[test]
    fn a_serial_is_kept_only_while_valid() {
        let mut r = RevokedSerials::default();
        r.insert("01", 100);
        r.insert("02", 200);
        r.insert("zz", 100);
        r.prune(150);
        assert!(!r.contains("01"));
        assert!(!r.contains("zz"));
        assert!(r.contains("02"));
        r.prune(200);
        assert!(r.contains("02"), "valid through its last second");
        r.prune(201);
        assert_eq!(r.len(), 0);
    }
}
