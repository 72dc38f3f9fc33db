//! `mtlsgate-authority`: the CA's operations as library functions over an
//! [`Inventory`] and the CA's [`Signer`] — creating a CA, issuing and signing
//! certificates, revoking, CRLs, enrollment tokens, enrollment (with a token, or pending
//! an operator's approval), renewal, recovery after expiry, and device status changes.
//! It owns the rules ("the root cannot be revoked", the device status machine, which
//! CSRs a device may present, lifetimes, single-use tokens and recovery rotation) and
//! writes only the CA directory's files; the CLI and the CA server call it and only
//! parse, print or map errors. See docs/device-lifecycle.md.
//!
//! Every certificate is recorded in the inventory before it is returned: a crash after
//! signing never leaves an issued certificate that the inventory does not know.

#![forbid(unsafe_code)]

mod bootstrap;
mod error;
#[cfg(test)]
mod tests;

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
    AuditEntry, Backend, CertRecord, Device, DeviceFilter, DeviceStatus, Inventory, Location,
    PostgresOptions,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

pub use bootstrap::BootstrapRequest;
pub use error::{AuthorityError, ErrorKind, Result};

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

/// Lifetimes the CA applies.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lifetime of a device certificate when neither its token nor the device sets one.
    pub default_lifetime: Duration,
    /// No device certificate lives longer.
    pub max_lifetime: Duration,
    /// No device certificate lives shorter (and no token asks for less).
    pub min_lifetime: Duration,
    /// How long after its certificate expired a device may still recover.
    pub recovery_grace: Duration,
    /// Lifetimes by tag: a device without a lifetime of its own (from its token) that
    /// carries one of these tags gets the shortest of its tags' lifetimes.
    pub tag_lifetimes: Vec<(String, Duration)>,
    /// Whether devices may enroll without a token, waiting for an operator's approval.
    pub approval_queue: bool,
    /// At most this many devices wait for approval at once.
    pub pending_limit: u64,
    /// A registration still pending after this long is removed.
    pub pending_ttl: Duration,
    /// Token-less enrollments one address may make at once…
    pub enroll_burst: u32,
    /// …and one more each time this has passed.
    pub enroll_refill: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_lifetime: Duration::hours(24),
            max_lifetime: Duration::days(30),
            min_lifetime: Duration::seconds(60),
            recovery_grace: Duration::days(30),
            tag_lifetimes: Vec::new(),
            approval_queue: true,
            pending_limit: 1000,
            pending_ttl: Duration::days(7),
            enroll_burst: 10,
            enroll_refill: Duration::minutes(1),
        }
    }
}

/// A device status change an operator (or the authority, on a clone) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Approve,
    Allow,
    Deny,
    Revoke,
    Quarantine,
}

impl Action {
    /// The statuses this action applies to.
    pub fn sources(self) -> &'static [DeviceStatus] {
        use DeviceStatus::*;
        match self {
            Action::Approve => &[Pending],
            Action::Allow => &[Denied, Quarantined],
            Action::Deny => &[Pending, Active],
            Action::Revoke => &[Pending, Active, Denied, Quarantined],
            Action::Quarantine => &[Pending, Active, Denied],
        }
    }

    /// The status it leads to.
    pub fn target(self) -> DeviceStatus {
        match self {
            Action::Approve | Action::Allow => DeviceStatus::Active,
            Action::Deny => DeviceStatus::Denied,
            Action::Revoke => DeviceStatus::Revoked,
            Action::Quarantine => DeviceStatus::Quarantined,
        }
    }

    /// Its name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Revoke => "revoke",
            Action::Quarantine => "quarantine",
        }
    }

    pub(crate) fn participle(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Allow => "allowed",
            Action::Deny => "denied",
            Action::Revoke => "revoked",
            Action::Quarantine => "quarantined",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device status machine: the status `action` leads to from `status`, or why not.
pub fn transition(id: &str, status: DeviceStatus, action: Action) -> Result<DeviceStatus> {
    if action.sources().contains(&status) {
        Ok(action.target())
    } else {
        Err(AuthorityError::Transition {
            id: id.into(),
            status,
            action,
        })
    }
}

/// The rule for `ca revoke`: any certificate but the root.
pub fn check_revocable(rec: &CertRecord) -> Result<()> {
    if rec.kind == CertKind::Root.as_str() {
        return Err(AuthorityError::RootRevocation {
            serial: rec.serial.clone(),
        });
    }
    Ok(())
}

/// What `ca init` made.
pub struct Initialized {
    pub dir: PathBuf,
    pub root: Issued,
    pub intermediate: Issued,
    /// `admin.crt`/`admin.key` in the CA directory.
    pub admin: Issued,
    pub location: Location,
}

/// A certificate signed but not yet recorded: only [`Authority::record`] hands out the
/// certificate. Its key may be written first (`cert issue` creates the key file before
/// recording, to claim the name).
pub struct Signed {
    issued: Issued,
    key: KeyPair,
    record_kind: String,
}

impl Signed {
    /// The new private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Zeroizing<String>> {
        Ok(key::to_pkcs8_pem(&self.key, None)?)
    }

    pub fn serial(&self) -> &str {
        &self.issued.info.serial
    }
}

/// An enrollment token request.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Bind the token to this device ID (`dev1` becomes `dev1.<device domain>`).
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    /// How long the token can be used.
    pub ttl: Duration,
    /// Lifetime of the device's certificates (default: the CA's).
    pub lifetime: Option<Duration>,
}

/// A new enrollment token: the clear token exists only here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTokenSecret {
    pub token: String,
    pub expires_at: i64,
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    pub lifetime_secs: Option<i64>,
}

/// What a device sends to enroll.
#[derive(Debug, Clone, Default)]
pub struct EnrollRequest {
    /// PEM or DER.
    pub csr: Vec<u8>,
    pub token: Option<String>,
    pub agent_version: Option<String>,
    pub hostname: Option<String>,
    /// The address it connected from.
    pub addr: Option<String>,
    /// The device ID the device asks for (EST's HTTP Basic user name): with a token bound
    /// to an ID it must name that ID; with an unbound token it becomes the device's ID
    /// (short IDs get the device domain). `None`: the token's ID, or a new random one.
    pub device_id: Option<String>,
    /// The label of the EST path it came by (`/.well-known/est/LABEL/…`): the token must
    /// carry it as one of its tags.
    pub label: Option<String>,
}

/// The answer to an enrollment or a poll.
#[derive(Debug, Clone)]
pub enum Enrolled {
    Issued(DeviceIssued),
    Pending {
        device_id: String,
        poll_token: String,
        retry_after: u32,
    },
}

/// A device's new certificate and what comes with it (the API's `Issued`).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceIssued {
    pub device_id: String,
    pub serial: String,
    /// Leaf + intermediate, PEM.
    pub certificate: String,
    /// Root + intermediate, PEM.
    pub ca_bundle: String,
    pub not_after: i64,
    pub recovery_token: String,
    pub recovery_expires: i64,
    pub tags: Vec<String>,
}

/// When and from where a device speaks.
#[derive(Debug, Clone)]
pub struct Seen {
    pub now: OffsetDateTime,
    pub addr: Option<String>,
    pub agent_version: Option<String>,
}

impl Seen {
    pub fn at(now: OffsetDateTime) -> Self {
        Seen {
            now,
            addr: None,
            agent_version: None,
        }
    }

    fn store(&self) -> mtlsgate_store::Seen {
        mtlsgate_store::Seen {
            at: self.now.unix_timestamp(),
            addr: self.addr.clone(),
            agent_version: self.agent_version.clone(),
        }
    }
}

/// What a device sends to recover after its certificate expired.
#[derive(Debug, Clone)]
pub struct RecoverRequest {
    pub device_id: String,
    pub recovery_token: String,
    /// The new CSR, PEM or DER.
    pub csr: Vec<u8>,
    /// Signature by the old key over SHA-256 of the new CSR's DER.
    pub signature: Vec<u8>,
    /// The device's last certificate, PEM or DER.
    pub certificate: Vec<u8>,
}

/// A device with its certificates and audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: Device,
    pub certificates: Vec<CertRecord>,
    pub audit: Vec<AuditEntry>,
}

/// An administrator, as [`Authority::check_admin`] recognised them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The name written into the audit trail: `CN (admin API)`.
    pub actor: String,
    /// Serial of the certificate presented.
    pub serial: String,
}

/// Signed CRLs and what they hold.
pub struct CrlSet {
    pub crls: Crls,
    pub number: i64,
    pub revoked_leaves: usize,
    pub revoked_intermediates: usize,
}

/// The CA: its directory, its keys (once loaded), its inventory and its policy.
pub struct Authority {
    ca: Ca,
    signer: Option<ca::Signer>,
    inv: Inventory,
    policy: Policy,
    verifier: Verifier,
    enroll_buckets: std::sync::Mutex<HashMap<String, Bucket>>,
}

/// What one address may still enroll without a token: `left` enrollments at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    left: f64,
    at: OffsetDateTime,
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

/// What one allowance of token-less enrollments belongs to: an IPv4 address, or an IPv6
/// address's /64 (one host usually has a whole /64 to pick addresses from).
fn rate_key(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| addr.to_string()),
        _ => addr.to_string(),
    }
}

/// Refuses free text longer than `max` bytes.
fn check_text(what: &'static str, v: Option<&str>, max: usize) -> Result<()> {
    match v {
        Some(t) if t.len() > max => Err(AuthorityError::TooLong {
            what,
            len: t.len(),
            max,
        }),
        _ => Ok(()),
    }
}

/// SHA-256, lower-case hex: how tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

/// `prefix` + base64url (no padding) of 32 random bytes.
fn new_secret(prefix: &str) -> String {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(b.as_mut());
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.as_ref())
    )
}

/// Whether `token` looks like one of ours with `prefix` (43 base64url characters after it).
fn well_formed(token: &str, prefix: &str) -> bool {
    token.trim().strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A tag: 1–64 letters, digits and `- _ . : / =`.
pub fn check_tag(tag: &str) -> Result<String> {
    let t = tag.trim();
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/=".contains(&b));
    if ok {
        Ok(t.to_string())
    } else {
        Err(AuthorityError::BadTag { tag: tag.into() })
    }
}

fn record_of(issued: &Issued, kind: &str, device_id: Option<&str>, at: i64) -> CertRecord {
    let i = &issued.info;
    CertRecord {
        serial: i.serial.clone(),
        kind: kind.into(),
        subject: i.subject.clone(),
        device_id: device_id.map(str::to_string),
        not_before: i.not_before.unix_timestamp(),
        not_after: i.not_after.unix_timestamp(),
        sha256: i.sha256_fingerprint.clone(),
        issued_at: at,
        revoked_at: None,
        revocation_reason: None,
        pem: issued.pem(),
        revision: None,
    }
}

/// The inventory kind of a leaf: `admin` for an administrator's client certificate.
fn leaf_kind(req: &LeafRequest) -> String {
    if req.kind == CertKind::Client && req.uris.iter().any(|u| u == ADMIN_URI) {
        "admin".into()
    } else {
        req.kind.as_str().into()
    }
}

/// The request for an administrator's client certificate called `name`.
pub fn admin_request(name: &str, validity: Duration) -> LeafRequest {
    LeafRequest {
        kind: CertKind::Client,
        name: name.into(),
        dns: vec![],
        ips: vec![],
        uris: vec![ADMIN_URI.into()],
        device_id: None,
        validity,
        key_type: mtlsgate_pki::key::KeyType::P256,
    }
}

fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        t.unix_timestamp().max(0) as u64
    ))
}

/// The first certificate in PEM or DER data.
fn first_certificate(data: &[u8]) -> Result<Vec<u8>> {
    let blocks = pemfile::parse_blocks("the certificate", data)?;
    Ok(pemfile::certs_from_blocks("the certificate", blocks)?
        .into_iter()
        .next()
        .ok_or_else(|| mtlsgate_pki::PkiError::Missing {
            path: "the request".into(),
            what: "certificate".into(),
        })?)
}

impl Authority {
    /// Creates a CA in `dir` (which must not hold one) with its inventory at `database`
    /// (default: `dir/inventory.db`), recording the root and the intermediate, and an
    /// administrator's client certificate `admin.crt`/`admin.key` (0600) valid for
    /// `admin_validity`. Everything is made in a staging directory that is renamed into
    /// place last, so an interrupted init leaves no CA.
    pub async fn init(
        dir: &Path,
        opts: &InitOptions<'_>,
        database: Option<&Location>,
        admin_validity: Duration,
    ) -> Result<Initialized> {
        let staged = ca::init(dir, opts)?;
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let staging_loc = Location::Sqlite(staged.path().join(Location::FILE));
        let loc = database.cloned().unwrap_or(staging_loc.clone());
        let inv = Inventory::create(&loc).await?;
        let made = async {
            for c in [&staged.root, &staged.intermediate] {
                inv.record(&record_of(c, c.kind.as_str(), None, at)).await?;
            }
            let ca = Ca::open(staged.path())?;
            let signer = ca.signer(opts.passphrase)?;
            let req = admin_request("admin", admin_validity);
            let (admin, key) = signer.issue(&req, &ca.meta.device_domain)?;
            inv.record_issuance(&Issuance {
                cert: record_of(&admin, "admin", None, at),
                device: None,
                audit: Audit::new(at, "ca init", "issue")
                    .serial(&admin.info.serial)
                    .detail("administrator certificate admin.crt"),
            })
            .await?;
            let key_pem = key::to_pkcs8_pem(&key, None)?;
            fsutil::write_atomic(
                &staged.path().join("admin.key"),
                key_pem.as_bytes(),
                fsutil::SECRET_MODE,
            )?;
            let chain = format!("{}{}", admin.pem(), signer.intermediate_pem());
            fsutil::write_atomic(
                &staged.path().join("admin.crt"),
                chain.as_bytes(),
                fsutil::PUBLIC_MODE,
            )?;
            Ok::<Issued, AuthorityError>(admin)
        }
        .await;
        inv.close().await;
        let admin = made?;
        let root = staged.root.clone();
        let intermediate = staged.intermediate.clone();
        let dir = staged.commit()?;
        let location = match database {
            Some(l) => l.clone(),
            None => Location::Sqlite(dir.join(Location::FILE)),
        };
        Ok(Initialized {
            dir,
            root,
            intermediate,
            admin,
            location,
        })
    }

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

    fn signer(&self) -> Result<&ca::Signer> {
        self.signer.as_ref().ok_or(AuthorityError::KeysNotLoaded)
    }

    fn domain(&self) -> &str {
        &self.ca.meta.device_domain
    }

    // ---- certificates ----

    /// Signs a leaf with a new key, without recording it yet (see [`Signed`]).
    pub fn sign_leaf(&self, req: &LeafRequest) -> Result<Signed> {
        let (issued, key) = self.signer()?.issue(req, self.domain())?;
        Ok(Signed {
            issued,
            key,
            record_kind: leaf_kind(req),
        })
    }

    /// Records a signed leaf and hands out its certificate and key.
    pub async fn record(&self, s: Signed, actor: &str) -> Result<(Issued, KeyPair)> {
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let device_id = (s.issued.kind == CertKind::Client && s.record_kind == "client")
            .then(|| s.issued.info.device_id.clone())
            .flatten();
        self.inv
            .record_issuance(&Issuance {
                cert: record_of(&s.issued, &s.record_kind, device_id.as_deref(), at),
                device: None,
                audit: Audit::new(at, actor, "issue")
                    .serial(&s.issued.info.serial)
                    .detail(format!("{} {}", s.record_kind, s.issued.info.subject)),
            })
            .await?;
        Ok((s.issued, s.key))
    }

    /// Forgets a certificate recorded by [`Authority::record`] whose files could not be
    /// written (so it was never handed out).
    pub async fn forget_unissued(&self, serial: &str) -> Result<()> {
        Ok(self.inv.forget_unissued(serial).await?)
    }

    /// Issues a leaf with a new key: signed, recorded, returned.
    pub async fn issue(&self, req: &LeafRequest, actor: &str) -> Result<(Issued, KeyPair)> {
        let s = self.sign_leaf(req)?;
        self.record(s, actor).await
    }

    /// Signs a CSR (`cert sign`: its subject and SANs kept, under the names rule), records
    /// the certificate and returns it.
    pub async fn sign_csr(
        &self,
        csr_name: &str,
        csr: &[u8],
        kind: CertKind,
        validity: Duration,
        actor: &str,
    ) -> Result<Issued> {
        let issued = self
            .signer()?
            .sign_csr(csr_name, csr, kind, validity, self.domain())?;
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let device_id = (kind == CertKind::Client)
            .then(|| issued.info.device_id.clone())
            .flatten();
        self.inv
            .record_issuance(&Issuance {
                cert: record_of(&issued, kind.as_str(), device_id.as_deref(), at),
                device: None,
                audit: Audit::new(at, actor, "sign")
                    .serial(&issued.info.serial)
                    .detail(format!("{} {}", kind.as_str(), issued.info.subject)),
            })
            .await?;
        Ok(issued)
    }

    /// The chain a leaf is served with (leaf + intermediate, PEM).
    pub fn chain_pem(&self, issued: &Issued) -> String {
        format!(
            "{}{}",
            issued.pem(),
            pemfile::to_pem("CERTIFICATE", &self.ca.intermediate_der)
        )
    }

    /// Every certificate in the inventory, oldest first.
    pub async fn certificates(&self) -> Result<Vec<CertRecord>> {
        Ok(self.inv.list().await?)
    }

    /// Revokes a certificate by serial. The root cannot be revoked.
    pub async fn revoke_cert(
        &self,
        serial: &str,
        reason: Reason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertRecord> {
        let existing = self.inv.get(serial).await?;
        check_revocable(&existing)?;
        let at = now.unix_timestamp();
        let mut audit = Audit::new(at, actor, "revoke_cert")
            .serial(&existing.serial)
            .detail(reason.as_str());
        audit.device_id = existing.device_id.clone();
        Ok(self
            .inv
            .revoke(&existing.serial, at, Some(reason.as_str()), &audit)
            .await?)
    }

    /// Signs the CRLs: the intermediate's (revoked leaves) and the root's (revoked
    /// intermediates), with the next CRL number.
    pub async fn crl(&self, next_update: Duration) -> Result<CrlSet> {
        let signer = self.signer()?;
        let revoked = self.inv.revoked().await?;
        let number = self.inv.next_crl_number().await?;
        let to_revoked = |r: &CertRecord| ca::Revoked {
            serial: r.serial.clone(),
            revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at.unwrap_or(0))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            reason: r
                .revocation_reason
                .as_deref()
                .and_then(|s| Reason::parse(s).ok()),
        };
        let leaves: Vec<ca::Revoked> = revoked
            .iter()
            .filter(|r| r.kind != "root" && r.kind != "intermediate")
            .map(to_revoked)
            .collect();
        let inters: Vec<ca::Revoked> = revoked
            .iter()
            .filter(|r| r.kind == "intermediate")
            .map(to_revoked)
            .collect();
        let crls = signer.crls(&leaves, &inters, number.max(1) as u64, next_update)?;
        Ok(CrlSet {
            crls,
            number,
            revoked_leaves: leaves.len(),
            revoked_intermediates: inters.len(),
        })
    }

    // ---- tokens ----

    fn check_lifetime(&self, what: &'static str, d: Duration) -> Result<i64> {
        let (min, max) = (
            self.policy.min_lifetime.whole_seconds(),
            self.policy.max_lifetime.whole_seconds(),
        );
        let given = d.whole_seconds();
        if given < min || given > max {
            return Err(AuthorityError::BadLifetime {
                what,
                given,
                min,
                max,
            });
        }
        Ok(given)
    }

    /// Lifetime of a device certificate: the device's (or token's), else the shortest
    /// lifetime set for one of its `tags`, else the default, within the policy's bounds.
    pub fn lifetime(&self, secs: Option<i64>, tags: &[String]) -> Duration {
        let by_tag = || {
            self.policy
                .tag_lifetimes
                .iter()
                .filter(|(t, _)| tags.contains(t))
                .map(|(_, d)| *d)
                .min()
        };
        secs.map(Duration::seconds)
            .or_else(by_tag)
            .unwrap_or(self.policy.default_lifetime)
            .min(self.policy.max_lifetime)
            .max(self.policy.min_lifetime)
    }

    /// Makes an enrollment token. The clear token is returned once; the inventory keeps
    /// its hash.
    pub async fn create_token(
        &self,
        t: TokenRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<NewTokenSecret> {
        let at = now.unix_timestamp();
        let bad_ttl = || AuthorityError::BadLifetime {
            what: "token TTL",
            given: t.ttl.whole_seconds(),
            min: 1,
            max: MAX_TOKEN_TTL.whole_seconds(),
        };
        if t.ttl < Duration::SECOND || t.ttl > MAX_TOKEN_TTL {
            return Err(bad_ttl());
        }
        let expires_at = at.checked_add(t.ttl.whole_seconds()).ok_or_else(bad_ttl)?;
        let device_id = match &t.device_id {
            Some(id) => {
                let full = ca::normalize_device_id(id, self.domain())?.to_ascii_lowercase();
                self.enrollable(&full).await?;
                Some(full)
            }
            None => None,
        };
        let mut tags = t
            .tags
            .iter()
            .map(|x| check_tag(x))
            .collect::<Result<Vec<_>>>()?;
        tags.sort();
        tags.dedup();
        let lifetime_secs = t
            .lifetime
            .map(|l| self.check_lifetime("certificate lifetime", l))
            .transpose()?;
        let token = new_secret(TOKEN_PREFIX);
        let mut audit = Audit::new(at, actor, "token").detail(format!(
            "expires {expires_at}{}",
            if tags.is_empty() {
                String::new()
            } else {
                format!(", tags {}", tags.join(","))
            }
        ));
        audit.device_id = device_id.clone();
        self.inv
            .insert_token(
                &NewToken {
                    hash: token_hash(&token),
                    device_id: device_id.clone(),
                    tags: tags.clone(),
                    lifetime_secs,
                    expires_at,
                    created_at: at,
                    created_by: actor.into(),
                },
                &audit,
            )
            .await?;
        Ok(NewTokenSecret {
            token,
            expires_at,
            device_id,
            tags,
            lifetime_secs,
        })
    }

    // ---- devices: enrollment, renewal, recovery ----

    fn random_device_id(&self) -> String {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        format!("{}.{}", hex::encode(b), self.domain())
    }

    fn new_recovery(&self, issued: &Issued) -> (String, NewRecovery) {
        let token = new_secret(RECOVERY_PREFIX);
        let expires_at = (issued.info.not_after + self.policy.recovery_grace).unix_timestamp();
        let rec = NewRecovery {
            hash: token_hash(&token),
            expires_at,
        };
        (token, rec)
    }

    /// Signs a device certificate, records it with `via`, and builds the answer.
    async fn issue_device(
        &self,
        csr: &DeviceCsr,
        id: &str,
        lifetime: Duration,
        via: Via,
        seen: &Seen,
        (action, detail): (&str, Option<String>),
    ) -> Result<DeviceIssued> {
        let issued = self.signer()?.sign_device(csr, id, lifetime)?;
        let (recovery_token, recovery) = self.new_recovery(&issued);
        let recovery_expires = recovery.expires_at;
        let at = seen.now.unix_timestamp();
        let mut audit = Audit::new(at, id, action)
            .device(id)
            .serial(&issued.info.serial);
        audit.detail = detail;
        let device = self
            .inv
            .record_issuance(&Issuance {
                cert: record_of(&issued, "client", Some(id), at),
                device: Some(DeviceIssuance {
                    id: id.into(),
                    via,
                    seen: seen.store(),
                    recovery,
                }),
                audit,
            })
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))?;
        Ok(DeviceIssued {
            device_id: id.into(),
            serial: issued.info.serial.clone(),
            certificate: self.chain_pem(&issued),
            ca_bundle: self.bundle_pem(),
            not_after: issued.info.not_after.unix_timestamp(),
            recovery_token,
            recovery_expires,
            tags: device.tags,
        })
    }

    /// Enrolls a device. With a token: the token is checked (known, unused, unexpired),
    /// the device gets the token's bound ID or a new random one, and its certificate —
    /// consuming the token, adding the device and recording the certificate in one
    /// transaction. Without: the device is registered as pending with its CSR, and gets a
    /// poll token to collect its certificate once an operator approved it.
    pub async fn enroll(&self, r: EnrollRequest, now: OffsetDateTime) -> Result<Enrolled> {
        check_text("hostname", r.hostname.as_deref(), MAX_HOSTNAME)?;
        check_text(
            "agent version",
            r.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let csr = pkidevice::check_device_csr(&r.csr)?;
        if csr.der.len() > MAX_DEVICE_CSR {
            return Err(AuthorityError::TooLong {
                what: "CSR",
                len: csr.der.len(),
                max: MAX_DEVICE_CSR,
            });
        }
        let seen = Seen {
            now,
            addr: r.addr.clone(),
            agent_version: r.agent_version.clone(),
        };
        let at = now.unix_timestamp();
        let host = r.hostname.as_deref().map(|h| format!("hostname {h}"));
        let Some(token) = &r.token else {
            if !self.policy.approval_queue {
                return Err(AuthorityError::NoApprovalQueue);
            }
            if let Some(addr) = &r.addr {
                self.take_enrollment(addr, now)?;
            }
            self.inv
                .expire_pending((now - self.policy.pending_ttl).unix_timestamp())
                .await?;
            let id = self.random_device_id();
            let poll_token = new_secret(POLL_PREFIX);
            let device = NewDevice {
                id: id.clone(),
                status: DeviceStatus::Pending,
                tags: vec![],
                lifetime_secs: None,
                created_by: "enrollment without a token".into(),
                pending_csr: Some(pemfile::to_pem("CERTIFICATE REQUEST", &csr.der)),
                poll_hash: Some(token_hash(&poll_token)),
                seen: seen.store(),
            };
            let mut audit = Audit::new(at, &id, "register").device(&id);
            audit.detail = host;
            self.inv
                .insert_pending(&device, &audit, self.policy.pending_limit)
                .await
                .map_err(|e| match e {
                    StoreError::QueueFull { waiting } => AuthorityError::QueueFull { waiting },
                    e => e.into(),
                })?;
            return Ok(Enrolled::Pending {
                device_id: id,
                poll_token,
                retry_after: RETRY_AFTER_SECS,
            });
        };
        if !well_formed(token, TOKEN_PREFIX) {
            return Err(AuthorityError::NotAToken {
                what: "enrollment token",
                prefix: TOKEN_PREFIX,
            });
        }
        let hash = token_hash(token);
        let t = self
            .inv
            .token(&hash)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
        if let Some(used) = t.used_at {
            return Err(StoreError::TokenUsed {
                at: used,
                by: t.used_by.unwrap_or_else(|| "an unknown device".into()),
            }
            .into());
        }
        if t.expires_at <= at {
            return Err(StoreError::TokenExpired { at: t.expires_at }.into());
        }
        if let Some(label) = &r.label {
            if !t.tags.iter().any(|tag| tag == label) {
                return Err(AuthorityError::LabelNotInToken {
                    label: label.clone(),
                });
            }
        }
        let asked = r
            .device_id
            .as_deref()
            .map(|a| self.device_id(a))
            .transpose()?;
        let (id, again) = match (&t.device_id, asked) {
            (Some(bound), Some(asked)) if *bound != asked => {
                return Err(AuthorityError::TokenForOtherDevice {
                    asked,
                    bound: bound.clone(),
                })
            }
            (Some(bound), _) => (bound.clone(), self.enrollable(bound).await?),
            (None, Some(asked)) => {
                let again = self.enrollable(&asked).await.map_err(|e| match e {
                    AuthorityError::AlreadyEnrolled { id } => AuthorityError::IdTaken { id },
                    e => e,
                })?;
                (asked, again)
            }
            (None, None) => (self.random_device_id(), false),
        };
        let device = NewDevice {
            id: id.clone(),
            status: DeviceStatus::Active,
            tags: t.tags.clone(),
            lifetime_secs: t.lifetime_secs,
            created_by: format!("token of {}", t.created_by),
            pending_csr: None,
            poll_hash: None,
            seen: seen.store(),
        };
        let issued = self
            .issue_device(
                &csr,
                &id,
                self.lifetime(t.lifetime_secs, &t.tags),
                if again {
                    Via::Reenroll { hash, device }
                } else {
                    Via::Token { hash, device }
                },
                &seen,
                ("enroll", host),
            )
            .await
            .map_err(|e| match e {
                AuthorityError::Store(StoreError::DeviceExists(id)) => {
                    AuthorityError::AlreadyEnrolled { id }
                }
                other => other,
            })?;
        Ok(Enrolled::Issued(issued))
    }

    /// Whether a token bound to `id` may enroll a device under it: `Ok(false)` for an ID
    /// not in the inventory, `Ok(true)` for a revoked device an operator allowed to enroll
    /// again (`devices allow`) since it was revoked; a revoked device not allowed again is
    /// refused with the way back, any other device as already enrolled.
    async fn enrollable(&self, id: &str) -> Result<bool> {
        match self.inv.device(id).await? {
            None => Ok(false),
            Some(d) if d.status == DeviceStatus::Revoked => {
                if self.allowed_again(id).await? {
                    Ok(true)
                } else {
                    Err(AuthorityError::DeviceRevoked { id: id.into() })
                }
            }
            Some(_) => Err(AuthorityError::AlreadyEnrolled { id: id.into() }),
        }
    }

    /// Whether the last word on device `id` in the audit trail is an operator's `allow`
    /// after its revocation (the way back for a revoked ID).
    async fn allowed_again(&self, id: &str) -> Result<bool> {
        let mut allowed = false;
        for e in self.inv.audit_of(id, AUDIT_SCAN).await? {
            if e.action == Action::Revoke.as_str() {
                allowed = false;
            } else if e.action == Action::Allow.as_str() {
                allowed = true;
            }
        }
        Ok(allowed)
    }

    /// The rule for `cert issue client --device-id ID` (a certificate made by the CA
    /// directly, outside enrollment): a revoked device ID gets none until an operator
    /// allowed it to enroll again (`devices allow ID`).
    pub async fn check_issuable(&self, device_id: &str) -> Result<()> {
        let id = self.device_id(device_id)?;
        match self.inv.device(&id).await? {
            Some(d) if d.status == DeviceStatus::Revoked && !self.allowed_again(&id).await? => {
                Err(AuthorityError::DeviceRevoked { id })
            }
            _ => Ok(()),
        }
    }

    /// Takes one token-less enrollment from `addr`'s allowance (a token bucket: at most
    /// `enroll_burst` at once, one more per `enroll_refill`).
    fn take_enrollment(&self, addr: &str, now: OffsetDateTime) -> Result<()> {
        let burst = f64::from(self.policy.enroll_burst.max(1));
        let refill = self.policy.enroll_refill.as_seconds_f64().max(0.001);
        let mut buckets = self
            .enroll_buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fill =
            |b: &Bucket| (b.left + (now - b.at).as_seconds_f64().max(0.0) / refill).min(burst);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| fill(b) < burst);
            if buckets.len() >= MAX_BUCKETS {
                // Memory stays bounded; the pending limit still bounds what is written.
                buckets.clear();
            }
        }
        let addr = rate_key(addr);
        let b = buckets.entry(addr.clone()).or_insert(Bucket {
            left: burst,
            at: now,
        });
        let left = fill(b);
        if left < 1.0 {
            *b = Bucket { left, at: now };
            return Err(AuthorityError::TooManyEnrollments {
                addr,
                burst: self.policy.enroll_burst.max(1),
                refill: self.policy.enroll_refill.whole_seconds().max(1),
            });
        }
        *b = Bucket {
            left: left - 1.0,
            at: now,
        };
        Ok(())
    }

    /// A pending device asks for its certificate with its poll token: still pending, or
    /// (once approved) its certificate — the poll token is then spent. An unknown device
    /// gets the answer a wrong poll token gets.
    pub async fn poll(&self, device_id: &str, poll_token: &str, seen: Seen) -> Result<Enrolled> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let id = device_id.trim().to_ascii_lowercase();
        let refused = || AuthorityError::PollToken {
            id: mtlsgate_pki::printable::printable(&id).into_owned(),
        };
        if id.len() > MAX_HOSTNAME {
            return Err(refused());
        }
        let Some(d) = self.inv.device(&id).await? else {
            return Err(refused());
        };
        let hash = token_hash(poll_token);
        if !well_formed(poll_token, POLL_PREFIX) || d.poll_hash.as_deref() != Some(hash.as_str()) {
            return Err(refused());
        }
        match d.status {
            DeviceStatus::Pending => Ok(Enrolled::Pending {
                device_id: id,
                poll_token: poll_token.trim().into(),
                retry_after: RETRY_AFTER_SECS,
            }),
            DeviceStatus::Active => {
                let pem = d.pending_csr.clone().unwrap_or_default();
                let csr = pkidevice::check_device_csr(pem.as_bytes())?;
                let issued = self
                    .issue_device(
                        &csr,
                        &id,
                        self.lifetime(d.lifetime_secs, &d.tags),
                        Via::Poll { poll_hash: hash },
                        &seen,
                        ("enroll", Some("approved enrollment collected".into())),
                    )
                    .await?;
                Ok(Enrolled::Issued(issued))
            }
            status => Err(AuthorityError::NotActive { id, status }),
        }
    }

    /// Renews the certificate of the device presenting `client_chain` (verified against
    /// this CA): the device must be active, and the certificate must be its current one
    /// or the one that replaced it (a retry whose answer was lost). The new certificate
    /// keeps the device ID and tags; the recovery token rotates.
    pub async fn renew(
        &self,
        client_chain: &[CertificateDer<'_>],
        csr: &[u8],
        seen: Seen,
    ) -> Result<DeviceIssued> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        if client_chain.is_empty() {
            return Err(AuthorityError::NoClientCertificate {
                what: "renewal needs the device's current certificate",
            });
        }
        self.verifier
            .verify(client_chain, Purpose::Client, unix_time(seen.now))
            .map_err(|f| AuthorityError::ClientCertificate {
                reason: f.to_string(),
            })?;
        let info = CertInfo::from_der(&client_chain[0])?;
        let id = info
            .device_id
            .as_deref()
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| AuthorityError::NotADevice {
                subject: info.subject.clone(),
            })?;
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| AuthorityError::NotADevice {
                subject: info.subject.clone(),
            })?;
        if d.status != DeviceStatus::Active {
            return Err(AuthorityError::NotActive {
                id,
                status: d.status,
            });
        }
        let current = d.cert_serial.clone().unwrap_or_default();
        let retry =
            info.serial != current && d.prev_serial.as_deref() == Some(info.serial.as_str());
        if info.serial != current && !retry {
            return Err(self.superseded(&id, &info, &current, &seen).await);
        }
        let rec = self.inv.get(&info.serial).await?;
        if rec.revoked_at.is_some() || rec.sha256 != info.sha256_fingerprint {
            return Err(AuthorityError::CertRevoked {
                serial: info.serial,
            });
        }
        let csr = pkidevice::check_device_csr(csr)?;
        let (via, detail) = if retry {
            // The answer that carried `current` was lost: it is abandoned (revoked), and
            // the device keeps no previous serial, so the retry works once. An operator's
            // revocation of `current` stands.
            if self.inv.get(&current).await?.revoked_at.is_some() {
                return Err(AuthorityError::CertRevoked { serial: current });
            }
            (
                Via::Retry {
                    abandoned: current.clone(),
                    presented: info.serial.clone(),
                    reason: Reason::Superseded.as_str().into(),
                },
                format!(
                    "renewed with {} again (the answer with {current} was lost; {current} revoked)",
                    info.serial
                ),
            )
        } else {
            (
                Via::Renewal { serial: current },
                format!("renewed with {}", info.serial),
            )
        };
        self.issue_device(
            &csr,
            &id,
            self.lifetime(d.lifetime_secs, &d.tags),
            via,
            &seen,
            ("renew", Some(detail)),
        )
        .await
    }

    /// A renewal with a certificate of device `id` that is neither its current one nor
    /// the one a lost answer may retry with: two holders of one identity (a clone). The
    /// device is quarantined (audit `clone`). A certificate the inventory does not give
    /// this device is only refused.
    async fn superseded(
        &self,
        id: &str,
        info: &CertInfo,
        current: &str,
        seen: &Seen,
    ) -> AuthorityError {
        let ours = match self.inv.get(&info.serial).await {
            Ok(rec) => {
                rec.device_id.as_deref() == Some(id) && rec.sha256 == info.sha256_fingerprint
            }
            Err(StoreError::UnknownSerial(_)) => false,
            Err(e) => return e.into(),
        };
        if !ours {
            return AuthorityError::Superseded {
                id: id.into(),
                serial: info.serial.clone(),
                current: current.into(),
            };
        }
        let audit = Audit::new(seen.now.unix_timestamp(), "mtlsgate", "clone")
            .device(id)
            .serial(&info.serial)
            .detail(format!(
                "certificate {}, already replaced by {current}, was presented for renewal{}; device quarantined",
                info.serial,
                seen.addr
                    .as_deref()
                    .map(|a| format!(" from {a}"))
                    .unwrap_or_default()
            ));
        if let Err(e) = self.quarantine(id, &audit).await {
            return e;
        }
        AuthorityError::CloneRenewal {
            id: id.into(),
            serial: info.serial.clone(),
            current: current.into(),
        }
    }

    /// Quarantines device `id` with `audit` (only logged when it is no longer in a status
    /// that can be quarantined).
    async fn quarantine(&self, id: &str, audit: &Audit) -> Result<()> {
        match self
            .inv
            .update_status(
                id,
                Action::Quarantine.sources(),
                DeviceStatus::Quarantined,
                None,
                audit,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::StatusChanged { .. }) => Ok(self.inv.log(audit).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Recovers a device whose certificate expired while it was offline: its current
    /// recovery token (within the grace after expiry), its last certificate, and a
    /// signature by that certificate's key over SHA-256 of the new CSR's DER. A recovery
    /// token that was already replaced means two devices share the identity: the device
    /// is quarantined and [`AuthorityError::Clone`] returned.
    pub async fn recover(&self, r: RecoverRequest, seen: Seen) -> Result<DeviceIssued> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let id = r.device_id.trim().to_ascii_lowercase();
        let at = seen.now.unix_timestamp();
        if !well_formed(&r.recovery_token, RECOVERY_PREFIX) {
            return Err(AuthorityError::RecoveryUnknown { id });
        }
        let hash = token_hash(&r.recovery_token);
        let rec = match self.inv.recovery(&hash).await? {
            Some(rec) if rec.device_id == id => rec,
            _ => return Err(AuthorityError::RecoveryUnknown { id }),
        };
        if rec.replaced_at.is_some() {
            let audit = Audit::new(at, "mtlsgate", "clone")
                .device(&id)
                .detail(format!(
                    "a replaced recovery token was presented{}; device quarantined",
                    seen.addr
                        .as_deref()
                        .map(|a| format!(" from {a}"))
                        .unwrap_or_default()
                ));
            match self
                .inv
                .update_status(
                    &id,
                    Action::Quarantine.sources(),
                    DeviceStatus::Quarantined,
                    None,
                    &audit,
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::StatusChanged { .. }) => self.inv.log(&audit).await?,
                Err(e) => return Err(e.into()),
            }
            return Err(AuthorityError::Clone { id });
        }
        if at > rec.expires_at {
            return Err(AuthorityError::RecoveryExpired {
                id,
                at: rec.expires_at,
            });
        }
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        if d.status != DeviceStatus::Active {
            return Err(AuthorityError::NotActive {
                id,
                status: d.status,
            });
        }
        let old = first_certificate(&r.certificate)?;
        let info = CertInfo::from_der(&old)?;
        let current = d.cert_serial.clone().unwrap_or_default();
        let known = self.inv.get(&current).await?;
        if info.serial != current || known.sha256 != info.sha256_fingerprint {
            return Err(AuthorityError::RecoveryWrongCertificate {
                id,
                serial: info.serial,
            });
        }
        let csr = pkidevice::check_device_csr(&r.csr)?;
        let digest = sha2::Sha256::digest(&csr.der);
        pkidevice::verify_signature_by_certificate_key(&old, &digest, &r.signature)
            .map_err(|_| AuthorityError::RecoverySignature { id: id.clone() })?;
        if let Some(revoked_at) = known.revoked_at {
            self.recover_revoked(&id, &known, revoked_at, &seen).await?;
        }
        self.issue_device(
            &csr,
            &id,
            self.lifetime(d.lifetime_secs, &d.tags),
            Via::Recovery {
                serial: current,
                recovery_hash: hash,
            },
            &seen,
            ("recover", Some(format!("recovered from {}", info.serial))),
        )
        .await
    }

    /// Recovery with a certificate that was revoked (by `ca revoke`, for a stolen key, say):
    /// whoever holds the device's state directory has the key and the recovery token, so
    /// the device is quarantined and refused, until an operator allows it again (an
    /// `allow` recorded after the revocation lets the next recovery through).
    async fn recover_revoked(
        &self,
        id: &str,
        known: &CertRecord,
        revoked_at: i64,
        seen: &Seen,
    ) -> Result<()> {
        let allowed_since = self
            .inv
            .audit_of(id, 100)
            .await?
            .iter()
            .any(|e| e.action == Action::Allow.as_str() && e.at >= revoked_at);
        if allowed_since {
            return Ok(());
        }
        let reason = known
            .revocation_reason
            .clone()
            .unwrap_or_else(|| "no reason given".into());
        let audit = Audit::new(seen.now.unix_timestamp(), "mtlsgate", "quarantine")
            .device(id)
            .serial(&known.serial)
            .detail(format!(
                "recovery with certificate {}, revoked ({reason}){}; device quarantined",
                known.serial,
                seen.addr
                    .as_deref()
                    .map(|a| format!(", from {a}"))
                    .unwrap_or_default()
            ));
        self.quarantine(id, &audit).await?;
        Err(AuthorityError::RecoveryRevoked {
            id: id.into(),
            serial: known.serial.clone(),
            reason,
        })
    }

    // ---- administrators ----

    /// Checks that `client_chain` (the TLS client certificate, leaf first) is an
    /// administrator's: it verifies against this CA at `now`, carries the URI SAN
    /// [`ADMIN_URI`], is recorded in the inventory as an administrator's (kind `admin`,
    /// same SHA-256), and is not revoked there. Returns who it is, for the audit trail.
    pub async fn check_admin(
        &self,
        client_chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<Admin> {
        if client_chain.is_empty() {
            return Err(AuthorityError::NoClientCertificate {
                what: "the admin API needs an administrator's certificate (mtlsgate cert issue admin NAME)",
            });
        }
        self.verifier
            .verify(client_chain, Purpose::Client, unix_time(now))
            .map_err(|f| AuthorityError::ClientCertificate {
                reason: f.to_string(),
            })?;
        let info = CertInfo::from_der(&client_chain[0])?;
        if !info.uris.iter().any(|u| u == ADMIN_URI) {
            return Err(AuthorityError::NotAdmin {
                subject: info.subject,
            });
        }
        match self.inv.get(&info.serial).await {
            Ok(rec) if rec.revoked_at.is_some() => {
                return Err(AuthorityError::ClientCertificate {
                    reason: format!("certificate {} was revoked", info.serial),
                })
            }
            Ok(rec) if rec.kind == "admin" && rec.sha256 == info.sha256_fingerprint => {}
            Ok(_) | Err(StoreError::UnknownSerial(_)) => {
                return Err(AuthorityError::AdminNotRecorded {
                    subject: info.subject,
                    serial: info.serial,
                })
            }
            Err(e) => return Err(e.into()),
        }
        let name = info
            .common_name
            .clone()
            .unwrap_or_else(|| info.subject.clone());
        Ok(Admin {
            actor: format!("{name} (admin API)"),
            serial: info.serial,
        })
    }

    // ---- devices: operators ----

    /// Changes a device's status by the status machine ([`transition`]), as a
    /// compare-and-set in the inventory, with an audit record naming `actor`. Revoking a
    /// device revokes its certificates too.
    pub async fn set_status(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Device> {
        check_text("reason", reason, MAX_REASON)?;
        let id = id.trim().to_ascii_lowercase();
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        let mut audit = Audit::new(now.unix_timestamp(), actor, action.as_str()).device(&id);
        audit.detail = reason.map(str::to_string);
        if d.status == DeviceStatus::Revoked && action == Action::Allow {
            // The way back for a revoked ID: it stays revoked (and so do its certificates)
            // until a token bound to it enrolls a device again; the audit records the allow.
            audit.detail = Some(format!(
                "may enroll again with a new token{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ));
            return match self
                .inv
                .update_status(
                    &id,
                    &[DeviceStatus::Revoked],
                    DeviceStatus::Revoked,
                    None,
                    &audit,
                )
                .await
            {
                Err(StoreError::StatusChanged { id, now }) => Err(AuthorityError::Transition {
                    id,
                    status: now,
                    action,
                }),
                other => Ok(other?),
            };
        }
        let to = transition(&id, d.status, action)?;
        let revoke = (action == Action::Revoke).then_some(Reason::CessationOfOperation.as_str());
        match self
            .inv
            .update_status(&id, action.sources(), to, revoke, &audit)
            .await
        {
            Ok(d) => Ok(d),
            Err(StoreError::StatusChanged { id, now }) => Err(AuthorityError::Transition {
                id,
                status: now,
                action,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds and removes tags of a device.
    pub async fn tag(
        &self,
        id: &str,
        add: &[String],
        remove: &[String],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Device> {
        let id = id.trim().to_ascii_lowercase();
        let add = add
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>>>()?;
        let remove = remove
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>>>()?;
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        let mut tags: Vec<String> = d
            .tags
            .into_iter()
            .chain(add.iter().cloned())
            .filter(|t| !remove.contains(t))
            .collect();
        tags.sort();
        tags.dedup();
        let mut detail = Vec::new();
        if !add.is_empty() {
            detail.push(format!("+{}", add.join(",+")));
        }
        if !remove.is_empty() {
            detail.push(format!("-{}", remove.join(",-")));
        }
        let audit = Audit::new(now.unix_timestamp(), actor, "tag")
            .device(&id)
            .detail(detail.join(" "));
        Ok(self.inv.update_tags(&id, &tags, &audit).await?)
    }

    /// Devices matching `f`.
    pub async fn devices(&self, f: &DeviceFilter) -> Result<Vec<Device>> {
        Ok(self.inv.devices(f).await?)
    }

    /// One device, with its certificates and its last 100 audit records.
    pub async fn device(&self, id: &str) -> Result<DeviceDetail> {
        let id = id.trim().to_ascii_lowercase();
        let device = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        Ok(DeviceDetail {
            certificates: self.inv.certificates_of(&id).await?,
            audit: self.inv.audit_of(&id, 100).await?,
            device,
        })
    }

    /// The full form of a device ID (`dev1` → `dev1.<device domain>`, lower-case).
    pub fn device_id(&self, id: &str) -> Result<String> {
        Ok(ca::normalize_device_id(id, self.domain())?.to_ascii_lowercase())
    }
}
