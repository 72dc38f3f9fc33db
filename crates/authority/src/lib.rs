//! `mtlsgate-authority`: the CA's operations as library functions over an
//! [`Inventory`] and the CA's [`Signer`](ca::Signer) — creating a CA, issuing and signing
//! certificates, revoking, CRLs, enrollment tokens, enrollment (with a token, or pending
//! an operator's approval), renewal, recovery after expiry, and device status changes.
//! It owns the rules ("the root cannot be revoked", the device status machine, which
//! CSRs a device may present, lifetimes, single-use tokens and recovery rotation) and
//! writes only the CA directory's files; the CLI and the CA server call it and only
//! parse, print or map errors. See docs/device-lifecycle.md.
//!
//! Every certificate is recorded in the inventory before it is returned: a crash after
//! signing never leaves an issued certificate that the inventory does not know.
//!
//! Map: `status` (the device status machine), `policy` (lifetimes and limits), `admin`
//! (creating a CA, administrators), `issue` (leaves, CSRs, revocation, CRLs), `tokens`,
//! `enroll` (with a token or pending approval), `renew` (renewal, recovery, clones),
//! `bootstrap` (EST enrollment with a manufacturer's certificate, through the approval
//! queue), `devices` (what operators do with devices), `import` (devices that already hold
//! a certificate), `error`.

#![forbid(unsafe_code)]

mod admin;
mod bootstrap;
mod devices;
mod enroll;
mod error;
mod import;
mod issue;
mod policy;
mod renew;
mod status;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use mtlsgate_pki::ca::{self, Ca, CertKind, Crls, InitOptions, Issued, LeafRequest, Reason};
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::device::{self as pkidevice, DeviceCsr};
use mtlsgate_pki::pki_types::{CertificateDer, UnixTime};
use mtlsgate_pki::verify::{Purpose, Verifier, DEFAULT_DEPTH};
use mtlsgate_pki::{fsutil, key, pemfile, KeyPair};
use mtlsgate_store::{
    Audit, DeviceIssuance, Issuance, NewDevice, NewRecovery, NewToken, StoreError, Via,
};
pub use mtlsgate_store::{
    AuditEntry, Backend, CertFilter, CertRecord, CertStatus, Device, DeviceFilter, DeviceStatus,
    Inventory, Location, Page, PostgresOptions, Retention, Tidied, DEFAULT_PAGE, MAX_PAGE,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

pub use error::{AuthorityError, ErrorKind, Result};

pub use admin::{admin_request, Admin, Initialized};
pub use bootstrap::BootstrapRequest;
pub use devices::{check_tag, DeviceDetail};
pub use enroll::{DeviceIssued, EnrollRequest, Enrolled, Seen};
pub use import::ImportRequest;
pub use issue::{check_revocable, CrlSet, Signed};
pub use policy::Policy;
pub use renew::RecoverRequest;
pub use status::{transition, Action};
pub use tokens::{token_hash, NewTokenSecret, TokenRequest};
// Helpers the modules share (each module sees these through `use super::*`).
use enroll::{check_text, Bucket};
use issue::{first_certificate, record_of, unix_time};
use tokens::{new_secret, well_formed};

/// The URI SAN that makes a client certificate an administrator's (for the CA server's
/// admin API).
pub const ADMIN_URI: &str = "urn:mtlsgate:role:admin";
/// Prefix of enrollment tokens.
pub const TOKEN_PREFIX: &str = "mtg_";
/// Prefix of recovery tokens.
pub const RECOVERY_PREFIX: &str = "mtr_";
/// Prefix of the poll tokens of pending devices.
pub const POLL_PREFIX: &str = "mtp_";
/// Seconds a pending device should wait before polling again.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The CA: its directory, its keys (once loaded), its inventory and its policy.
pub struct Authority {
    ca: Ca,
    signer: Option<ca::Signer>,
    inv: Inventory,
    policy: Policy,
    verifier: Verifier,
    enroll_buckets: std::sync::Mutex<HashMap<String, Bucket>>,
}

/// The longest an enrollment token may be valid (a year and a day).
pub const MAX_TOKEN_TTL: Duration = Duration::days(366);
/// Addresses remembered before full buckets are forgotten.
const MAX_BUCKETS: usize = 10_000;
/// How many of a device's newest audit entries tell whether it was allowed again after
/// its revocation (the last `revoke` or `allow` among them decides).
const AUDIT_SCAN: i64 = 1000;
/// Longest hostname a device may send (a DNS name's length).
pub const MAX_HOSTNAME: usize = 253;
/// Longest agent version a device may send.
pub const MAX_AGENT_VERSION: usize = 64;
/// Longest reason an operator may give for a status change.
pub const MAX_REASON: usize = 1024;
/// Largest device CSR (DER) taken: an RSA 8192 CSR is about 2 KiB.
pub const MAX_DEVICE_CSR: usize = 8 * 1024;

impl Authority {
    /// Opens the CA in `ca_dir` and its inventory (at `database`, default
    /// `ca_dir/inventory.db`), which must exist, be whole and hold this CA's root. The
    /// keys are not loaded: see [`Authority::load_keys`].
    pub async fn open(ca_dir: &Path, database: Option<&Location>, policy: Policy) -> Result<Self> {
        Self::open_with(ca_dir, database, policy, PostgresOptions::default()).await
    }

    /// [`Authority::open`], with how a PostgreSQL inventory is waited for (the CA server
    /// waits a few seconds, so that requests fail soon while the database is away).
    pub async fn open_with(
        ca_dir: &Path,
        database: Option<&Location>,
        policy: Policy,
        pg: PostgresOptions,
    ) -> Result<Self> {
        let ca = Ca::open(ca_dir)?;
        let root = CertInfo::from_der(&ca.root_der)?;
        let loc = match database {
            Some(l) => l.clone(),
            None => Location::Sqlite(ca_dir.join(Location::FILE)),
        };
        let inv = Inventory::open_with(&loc, &root.serial, pg).await?;
        let verifier = Verifier::new(
            vec![ca.root_der.clone(), ca.intermediate_der.clone()],
            vec![],
            DEFAULT_DEPTH,
        )?;
        Ok(Authority {
            ca,
            signer: None,
            inv,
            policy,
            verifier,
            enroll_buckets: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Loads the CA keys (decrypting them with `passphrase` when they are encrypted).
    pub fn load_keys(&mut self, passphrase: Option<&[u8]>) -> Result<()> {
        self.signer = Some(self.ca.signer(passphrase)?);
        Ok(())
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The trust bundle: root + intermediate, PEM.
    pub fn bundle_pem(&self) -> String {
        self.ca.bundle_pem()
    }

    /// Closes the inventory.
    pub async fn close(self) {
        self.inv.close().await;
    }

    pub(crate) fn signer(&self) -> Result<&ca::Signer> {
        self.signer.as_ref().ok_or(AuthorityError::KeysNotLoaded)
    }

    pub(crate) fn domain(&self) -> &str {
        &self.ca.meta.device_domain
    }
}
