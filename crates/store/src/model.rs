//! The records the inventory keeps and the requests that change them. Plain data: times
//! are unix seconds, serials uppercase hex, device IDs lower-case.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// What `Debug` output shows instead of a secret, or of the hash of a token or of a poll
/// or recovery token (a hash is what the inventory looks a token up by: it stays out of
/// logs as the token does).
pub const REDACTED: &str = "<redacted>";

/// A secret or hash in `Debug` output: [`REDACTED`] when there is one, `None` when not.
pub struct Hidden(pub bool);

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { REDACTED } else { "None" })
    }
}

/// Whether a field holds a value (for [`Hidden`]).
pub trait Present {
    fn present(&self) -> bool;
}

impl Present for String {
    fn present(&self) -> bool {
        true
    }
}

impl<T> Present for Vec<T> {
    fn present(&self) -> bool {
        !self.is_empty()
    }
}

impl<T> Present for Option<T> {
    fn present(&self) -> bool {
        self.is_some()
    }
}

/// `Debug` for a struct, showing the fields after `hiding` as [`Hidden`]. Every field is
/// named (the struct is destructured), so a new field cannot be left out unseen. Used by
/// the crates above this one for their own records that hold secrets.
#[macro_export]
macro_rules! debug_hiding {
    ($ty:ident { $($field:ident),* $(,)? } hiding { $($secret:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let $ty { $($field,)* $($secret,)* } = self;
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), $field))*
                    $(.field(
                        stringify!($secret),
                        &$crate::Hidden($crate::Present::present($secret)),
                    ))*
                    .finish()
            }
        }
    };
}

/// One certificate the CA issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct CertRecord {
    pub serial: String,
    /// `root`, `intermediate`, `server`, `client` or `admin`.
    pub kind: String,
    pub subject: String,
    pub device_id: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub sha256: String,
    pub issued_at: i64,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    /// The certificate, DER (the inventory keeps DER; [`CertRecord::pem`] gives PEM).
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The inventory revision at which it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

impl CertRecord {
    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// Where a device stands (docs/device-lifecycle.md, "Device status machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Pending,
    Active,
    Denied,
    Revoked,
    Quarantined,
}

impl DeviceStatus {
    pub const ALL: [DeviceStatus; 5] = [
        DeviceStatus::Pending,
        DeviceStatus::Active,
        DeviceStatus::Denied,
        DeviceStatus::Revoked,
        DeviceStatus::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Active => "active",
            DeviceStatus::Denied => "denied",
            DeviceStatus::Revoked => "revoked",
            DeviceStatus::Quarantined => "quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for DeviceStatus {
    /// The name, honouring width and alignment (`{:<11}` in tables).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A device in the inventory (as JSON, without its pending CSR and poll token hash).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub status: DeviceStatus,
    pub tags: Vec<String>,
    pub first_seen: i64,
    pub last_seen: Option<i64>,
    pub last_addr: Option<String>,
    pub agent_version: Option<String>,
    /// The device's current certificate.
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<i64>,
    /// The certificate the current one replaced.
    pub prev_serial: Option<String>,
    /// Lifetime of its certificates; `None` means the CA's default.
    pub lifetime_secs: Option<i64>,
    pub created_by: String,
    pub revision: i64,
    /// The CSR of a pending device (PEM), kept until it is signed.
    #[serde(skip)]
    pub pending_csr: Option<String>,
    /// SHA-256 hex of a pending device's poll token.
    #[serde(skip)]
    pub poll_hash: Option<String>,
}

/// Whether a certificate is revoked, and its fingerprint: what a renewal checks of the
/// certificate a device presented ([`Inventory::device_with_certificate`](crate::Inventory::device_with_certificate)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertState {
    pub revoked_at: Option<i64>,
    /// The certificate's fingerprint, as [`CertRecord::sha256`].
    pub sha256: String,
}

/// A device row as stored (status and tags as text).
#[derive(sqlx::FromRow)]
pub(crate) struct DeviceRow {
    id: String,
    status: String,
    tags: String,
    first_seen: i64,
    last_seen: Option<i64>,
    last_addr: Option<String>,
    agent_version: Option<String>,
    cert_serial: Option<String>,
    cert_not_after: Option<i64>,
    prev_serial: Option<String>,
    lifetime_secs: Option<i64>,
    created_by: String,
    revision: i64,
    pending_csr: Option<String>,
    poll_hash: Option<String>,
}

impl DeviceRow {
    pub(crate) fn into_device(self) -> Result<Device> {
        let status = DeviceStatus::parse(&self.status).ok_or_else(|| StoreError::BadRow {
            what: format!("device {}", self.id),
            detail: format!("its status `{}` is not one this version knows", self.status),
        })?;
        let tags = tags_from_text(&self.tags).map_err(|detail| StoreError::BadRow {
            what: format!("device {}", self.id),
            detail,
        })?;
        Ok(Device {
            id: self.id,
            status,
            tags,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            last_addr: self.last_addr,
            agent_version: self.agent_version,
            cert_serial: self.cert_serial,
            cert_not_after: self.cert_not_after,
            prev_serial: self.prev_serial,
            lifetime_secs: self.lifetime_secs,
            created_by: self.created_by,
            revision: self.revision,
            pending_csr: self.pending_csr,
            poll_hash: self.poll_hash,
        })
    }
}

/// Tags as stored: a JSON array, sorted, without duplicates.
pub(crate) fn tags_to_text(tags: &[String]) -> String {
    let mut t: Vec<&String> = tags.iter().collect();
    t.sort();
    t.dedup();
    serde_json::to_string(&t).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn tags_from_text(text: &str) -> std::result::Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| format!("its tags are not a JSON list of text ({e})"))
}

/// Which devices to list.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub status: Option<DeviceStatus>,
    /// Only devices whose current certificate expires before this time.
    pub expiring_before: Option<i64>,
    /// Only devices with this tag.
    pub tag: Option<String>,
    /// Only devices whose ID starts with this (lower case).
    pub id_prefix: Option<String>,
    /// Only devices whose ID contains this (lower case).
    pub id_contains: Option<String>,
}

/// A device to add (a pending registration, or an enrollment with a token).
#[derive(Clone)]
pub struct NewDevice {
    pub id: String,
    pub status: DeviceStatus,
    pub tags: Vec<String>,
    pub lifetime_secs: Option<i64>,
    pub created_by: String,
    pub pending_csr: Option<String>,
    pub poll_hash: Option<String>,
    pub seen: Seen,
}

/// When and from where a device was last heard of.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub at: i64,
    pub addr: Option<String>,
    pub agent_version: Option<String>,
}

/// An enrollment token to store (only its hash).
#[derive(Clone)]
pub struct NewToken {
    pub hash: String,
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    pub lifetime_secs: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
    pub created_by: String,
}

/// A stored enrollment token.
#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct Token {
    pub hash: String,
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    pub lifetime_secs: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
    pub created_by: String,
    pub used_at: Option<i64>,
    pub used_by: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    hash: String,
    device_id: Option<String>,
    tags: String,
    lifetime_secs: Option<i64>,
    expires_at: i64,
    created_at: i64,
    created_by: String,
    used_at: Option<i64>,
    used_by: Option<String>,
}

impl TokenRow {
    pub(crate) fn into_token(self) -> Result<Token> {
        let tags = tags_from_text(&self.tags).map_err(|detail| StoreError::BadRow {
            what: "an enrollment token".into(),
            detail,
        })?;
        Ok(Token {
            hash: self.hash,
            device_id: self.device_id,
            tags,
            lifetime_secs: self.lifetime_secs,
            expires_at: self.expires_at,
            created_at: self.created_at,
            created_by: self.created_by,
            used_at: self.used_at,
            used_by: self.used_by,
        })
    }
}

/// A recovery token as stored.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recovery {
    pub hash: String,
    pub device_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Set once a newer token replaced it: presenting it again means a clone.
    pub replaced_at: Option<i64>,
}

/// A new recovery token (hash) for a device, replacing its current one.
#[derive(Clone)]
pub struct NewRecovery {
    pub hash: String,
    pub expires_at: i64,
}

/// An audit record to write.
#[derive(Debug, Clone)]
pub struct Audit {
    pub at: i64,
    pub actor: String,
    /// `enroll`, `register`, `approve`, `deny`, `allow`, `revoke`, `quarantine`, `renew`,
    /// `recover`, `tag`, `token`, `issue`, `sign`, `revoke_cert`, `clone`.
    pub action: String,
    pub device_id: Option<String>,
    pub serial: Option<String>,
    pub detail: Option<String>,
}

impl Audit {
    pub fn new(at: i64, actor: &str, action: &str) -> Self {
        Audit {
            at,
            actor: actor.into(),
            action: action.into(),
            device_id: None,
            serial: None,
            detail: None,
        }
    }

    pub fn device(mut self, id: &str) -> Self {
        self.device_id = Some(id.into());
        self
    }

    pub fn serial(mut self, serial: &str) -> Self {
        self.serial = Some(serial.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// An audit record as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub device_id: Option<String>,
    pub serial: Option<String>,
    pub detail: Option<String>,
}

/// A certificate that was issued and must be in the inventory before anyone sees it.
#[derive(Debug, Clone)]
pub struct Issuance {
    pub cert: CertRecord,
    /// Set when the certificate is a device's: what the device row must look like for the
    /// issuance to stand, and what changes with it.
    pub device: Option<DeviceIssuance>,
    pub audit: Audit,
}

/// The device side of an [`Issuance`], written in the same transaction.
#[derive(Debug, Clone)]
pub struct DeviceIssuance {
    pub id: String,
    pub via: Via,
    pub seen: Seen,
    /// The device's new recovery token; the current one is marked replaced.
    pub recovery: NewRecovery,
}

/// Why a device gets a certificate, with the condition checked in the transaction.
#[derive(Clone)]
pub enum Via {
    /// Enrollment with a token: the token is consumed and the device added, as `device`.
    Token { hash: String, device: NewDevice },
    /// Enrollment with a token bound to the ID of a revoked device that an operator allowed
    /// to enroll again: the token is consumed and the device's row (still `revoked`)
    /// becomes `device`, keeping its first sighting; its old recovery tokens are removed
    /// (they belong to the revoked identity). Its revoked certificates stay revoked.
    Reenroll { hash: String, device: NewDevice },
    /// A pending device, approved meanwhile, collects its certificate: the poll token
    /// must still be the device's, and is spent.
    Poll { poll_hash: String },
    /// Renewal: the device is active and its current certificate is still `serial`.
    Renewal { serial: String },
    /// The retry of a renewal whose answer was lost: the device renews with `presented`,
    /// the certificate its current one `abandoned` replaced. Both must still be so; the
    /// abandoned certificate is revoked (reason `reason`) at the next revision, and the
    /// device keeps no previous serial, so that the retry works once.
    Retry {
        abandoned: String,
        presented: String,
        reason: String,
    },
    /// Recovery: as renewal, and the recovery token `recovery_hash` is still current.
    Recovery {
        serial: String,
        recovery_hash: String,
    },
}

/// A revoked certificate, for gateways.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedSerial {
    pub serial: String,
    pub device_id: Option<String>,
    pub revision: Option<i64>,
}

/// What changed after a revision: for a gateway's inventory view.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    /// The newest revision the inventory holds (the gateway asks from here next time).
    pub revision: i64,
    /// When that revision was taken (Unix milliseconds, the writer's clock); `None` in an
    /// inventory no writer has changed since this was recorded.
    pub revision_ms: Option<i64>,
    pub devices: Vec<Device>,
    pub revoked: Vec<RevokedSerial>,
}

/// Where a gateway's read ([`Inventory::read_changes`](crate::Inventory::read_changes))
/// brings it: the newest revision and when it was taken (as in [`Changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesHead {
    pub revision: i64,
    pub revision_ms: Option<i64>,
}

/// One row of a gateway's read, borrowed from the database's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRow<'a> {
    /// A device as stored: its ID, status, tags (the stored text: read them with
    /// [`parse_tags`]; equal lists have equal texts) and the revision of its last change.
    Device {
        id: &'a str,
        status: DeviceStatus,
        tags: &'a str,
        revision: i64,
    },
    /// A revoked certificate still valid: its serial (as stored) and expiry (Unix seconds).
    Revoked { serial: &'a str, not_after: i64 },
}

/// The stored text of a tag list (sorted, each tag once).
pub fn tags_to_json(tags: &[String]) -> String {
    tags_to_text(tags)
}

/// The tags of a device from their stored text (a [`GatewayRow::Device`]'s `tags`).
pub fn parse_tags(device: &str, text: &str) -> crate::Result<Vec<String>> {
    tags_from_text(text).map_err(|detail| StoreError::BadRow {
        what: format!("device {device}"),
        detail,
    })
}

debug_hiding!(Device {
    id, status, tags, first_seen, last_seen, last_addr, agent_version, cert_serial,
    cert_not_after, prev_serial, lifetime_secs, created_by, revision, pending_csr,
} hiding { poll_hash });
debug_hiding!(NewDevice {
    id, status, tags, lifetime_secs, created_by, pending_csr, seen,
} hiding { poll_hash });
debug_hiding!(NewToken {
    device_id, tags, lifetime_secs, expires_at, created_at, created_by,
} hiding { hash });
debug_hiding!(Token {
    device_id, tags, lifetime_secs, expires_at, created_at, created_by, used_at, used_by,
} hiding { hash });
debug_hiding!(Recovery { device_id, issued_at, expires_at, replaced_at } hiding { hash });
debug_hiding!(NewRecovery { expires_at } hiding { hash });

impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = &Hidden(true);
        match self {
            Via::Token { hash: _, device } => f
                .debug_struct("Token")
                .field("hash", hidden)
                .field("device", device)
                .finish(),
            Via::Reenroll { hash: _, device } => f
                .debug_struct("Reenroll")
                .field("hash", hidden)
                .field("device", device)
                .finish(),
            Via::Poll { poll_hash: _ } => {
                f.debug_struct("Poll").field("poll_hash", hidden).finish()
            }
            Via::Renewal { serial } => f.debug_struct("Renewal").field("serial", serial).finish(),
            Via::Retry {
                abandoned,
                presented,
                reason,
            } => f
                .debug_struct("Retry")
                .field("abandoned", abandoned)
                .field("presented", presented)
                .field("reason", reason)
                .finish(),
            Via::Recovery {
                serial,
                recovery_hash: _,
            } => f
                .debug_struct("Recovery")
                .field("serial", serial)
                .field("recovery_hash", hidden)
                .finish(),
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_token_hash() {
        let secret = "5e0b1a7c9d";
        let device = NewDevice {
            id: "dev1".into(),
            status: DeviceStatus::Pending,
            tags: vec![],
            lifetime_secs: None,
            created_by: "t".into(),
            pending_csr: None,
            poll_hash: Some(secret.into()),
            seen: Seen::default(),
        };
        let shown = [
            format!("{device:?}"),
            format!(
                "{:?}",
                NewToken {
                    hash: secret.into(),
                    device_id: None,
                    tags: vec![],
                    lifetime_secs: None,
                    expires_at: 1,
                    created_at: 1,
                    created_by: "t".into(),
                }
            ),
            format!(
                "{:?}",
                Token {
                    hash: secret.into(),
                    device_id: None,
                    tags: vec![],
                    lifetime_secs: None,
                    expires_at: 1,
                    created_at: 1,
                    created_by: "t".into(),
                    used_at: None,
                    used_by: None,
                }
            ),
            format!(
                "{:?}",
                Recovery {
                    hash: secret.into(),
                    device_id: "dev1".into(),
                    issued_at: 1,
                    expires_at: 2,
                    replaced_at: None,
                }
            ),
            format!(
                "{:?}",
                NewRecovery {
                    hash: secret.into(),
                    expires_at: 2,
                }
            ),
            format!(
                "{:?}",
                Via::Token {
                    hash: secret.into(),
                    device: device.clone(),
                }
            ),
            format!(
                "{:?}",
                Via::Reenroll {
                    hash: secret.into(),
                    device: device.clone(),
                }
            ),
            format!(
                "{:?}",
                Via::Poll {
                    poll_hash: secret.into(),
                }
            ),
            format!(
                "{:?}",
                Via::Recovery {
                    serial: "4A".into(),
                    recovery_hash: secret.into(),
                }
            ),
        ];
        for s in &shown {
            assert!(!s.contains(secret), "{s}");
            assert!(s.contains(REDACTED), "{s}");
        }
        assert!(
            shown[0].starts_with("NewDevice { id: \"dev1\""),
            "{}",
            shown[0]
        );
        let none = NewDevice {
            poll_hash: None,
            ..device
        };
        assert!(format!("{none:?}").contains("poll_hash: None"));
    }
}
