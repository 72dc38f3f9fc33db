//! The private CA on disk: a root and an intermediate (root → intermediate → leaf, as the
//! seeds' `ssl_verify_depth 2` expects), their keys, and the operations that need them:
//! issuing leaves, signing CSRs, and signing CRLs. This module owns the CA directory's
//! layout and format version; it never touches the inventory database (the caller
//! records what was issued) and never writes a file except whole (temp + rename).
//!
//! For client certificates **the device ID is the subject CN**. Issuing and CSR signing
//! apply one name rule ([`crate::names`]): no control characters anywhere, and no DNS SAN
//! in the device domain other than the CN.
//!
//! Layout of a CA directory:
//! ```text
//! ca.toml            format version, name, device domain, key type, whether keys are encrypted
//! root.crt  root.key                  the root CA (keys 0600, PKCS#8, optionally encrypted)
//! intermediate.crt  intermediate.key  the issuing CA
//! ca.crt             the trust bundle: root + intermediate
//! inventory.db       the inventory (written by mtlsgate-store)
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rcgen::{PublicKeyData, SigningKey};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::certinfo::CertInfo;
use crate::der;
use crate::error::{PkiError, Result};
use crate::fsutil::{self, PUBLIC_MODE};
use crate::key::{self, KeyType};
use crate::names::{self, Origin, San};
use crate::pemfile;

/// The CA directory format this version writes and understands.
pub const CA_FORMAT: u32 = 1;
/// Default device domain for device IDs (`<id>.<domain>`).
pub const DEFAULT_DEVICE_DOMAIN: &str = "d.mtlsgate.local";
/// Smallest RSA key accepted anywhere.
pub const MIN_RSA_BITS: usize = 2048;

/// What kind of certificate an inventory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Root,
    Intermediate,
    Server,
    Client,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Root => "root",
            CertKind::Intermediate => "intermediate",
            CertKind::Server => "server",
            CertKind::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "root" => Some(CertKind::Root),
            "intermediate" => Some(CertKind::Intermediate),
            "server" => Some(CertKind::Server),
            "client" => Some(CertKind::Client),
            _ => None,
        }
    }
}

/// `ca.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaMeta {
    pub format: u32,
    pub name: String,
    pub device_domain: String,
    pub key_type: KeyType,
    pub encrypted: bool,
    /// Where the inventory lives when it is not `inventory.db` in the directory: a
    /// PostgreSQL URL without its password (`ca init --database` records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whether that URL had a password, which is not recorded (it stays with
    /// `--database` or `MTLSGATE_DATABASE`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub database_password: bool,
}

/// Records in `DIR/ca.toml` the database that holds the CA's inventory (`ca init
/// --database URL`), without the URL's password, so that a command given no `--database`
/// finds it (or says that it needs the password).
pub fn record_database(dir: &Path, url: &str) -> Result<()> {
    let path = dir.join("ca.toml");
    let text = String::from_utf8(fsutil::read(&path)?).map_err(|_| PkiError::BadCaConfig {
        path: path.clone(),
        reason: "not UTF-8 text".into(),
    })?;
    let mut meta: CaMeta = toml::from_str(&text).map_err(|e| PkiError::BadCaConfig {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let (bare, had_password) = without_password(url);
    meta.database = Some(bare);
    meta.database_password = had_password;
    let toml = toml::to_string(&meta).map_err(|e| PkiError::BadCaConfig {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    fsutil::write_atomic(
        &path,
        format!("# mtlsgate CA; written by `mtlsgate ca init`\n{toml}").as_bytes(),
        PUBLIC_MODE,
    )
}

/// A database URL without its password (in the user part, or a `password=` parameter),
/// and whether it had one.
fn without_password(url: &str) -> (String, bool) {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut had = false;
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = match userinfo.split_once(':') {
                        Some((user, _)) => {
                            had = true;
                            user
                        }
                        None => userinfo,
                    };
                    format!("{scheme}://{user}@{host}{tail}")
                }
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|p| {
                let secret = p.split('=').next() == Some("password");
                had |= secret;
                !secret
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    (out, had)
}

/// Options for `ca init`.
pub struct InitOptions<'a> {
    pub name: String,
    pub key_type: KeyType,
    pub device_domain: String,
    pub passphrase: Option<&'a [u8]>,
    pub root_validity: Duration,
    pub intermediate_validity: Duration,
}

/// A certificate the CA just made, for the caller to write and record.
#[derive(Debug, Clone)]
pub struct Issued {
    pub kind: CertKind,
    pub der: Vec<u8>,
    pub info: CertInfo,
}

impl Issued {
    fn new(kind: CertKind, der: Vec<u8>) -> Result<Self> {
        let info = CertInfo::from_der(&der)?;
        Ok(Issued { kind, der, info })
    }

    pub fn pem(&self) -> String {
        pemfile::to_pem("CERTIFICATE", &self.der)
    }
}

/// A CA created in a staging directory; `commit` moves it into place.
pub struct StagedCa {
    staging: tempfile::TempDir,
    target: PathBuf,
    pub root: Issued,
    pub intermediate: Issued,
}

impl StagedCa {
    /// The staging directory, where the caller may add files (the inventory) before commit.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Moves the staged CA into its target directory. Refuses if the target appeared
    /// meanwhile and is not an empty directory.
    pub fn commit(self) -> Result<PathBuf> {
        let staging = self.staging.keep();
        let _ = std::fs::remove_file(staging.join(STAGING_OWNER));
        if let Err(e) = std::fs::rename(&staging, &self.target) {
            let _ = std::fs::remove_dir_all(&staging);
            if self.target.exists() {
                return Err(PkiError::CaExists(self.target));
            }
            return Err(PkiError::Write {
                path: self.target,
                cause: e,
            });
        }
        Ok(self.target)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A random positive serial of 127 bits (RFC 5280 asks for at least 64 bits of entropy
/// from CAs; the top byte is 0x40..=0x7f so the DER never needs a sign byte).
pub fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] = (b[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&b)
}

/// Checks a file-name-safe certificate name (`NAME.crt`, `NAME.key`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "name",
            value: name.into(),
            reason: "use letters, digits, `.`, `-` and `_` only (it becomes NAME.crt and NAME.key), not starting with `.` or `-`".into(),
        })
    }
}

/// Checks a DNS name for a SAN.
fn check_dns(name: &str) -> Result<()> {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "DNS name",
            value: name.into(),
            reason:
                "expected a host name such as api.example.com (labels of letters, digits and `-`)"
                    .into(),
        })
    }
}

/// Turns `dev1` into `dev1.<domain>`; an ID that already ends in the domain is kept.
pub fn normalize_device_id(id: &str, domain: &str) -> Result<String> {
    let id = id.trim().trim_end_matches('.');
    let full = if domain.is_empty()
        || id.eq_ignore_ascii_case(domain)
        || id
            .to_ascii_lowercase()
            .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
    {
        id.to_string()
    } else {
        format!("{id}.{domain}")
    };
    check_dns(&full).map_err(|_| PkiError::InvalidInput {
        what: "device ID",
        value: id.into(),
        reason: "a device ID becomes a DNS name: use letters, digits and `-` (for example dev1 or MyDeviceId)".into(),
    })?;
    Ok(full)
}

fn ca_params(cn: &str, org: &str, path_len: u8, validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let n = now();
    // Backdated for clocks a little behind the CA's: five minutes, or a tenth of a short
    // lifetime, so that most of a short-lived certificate's life (and the renewal point
    // an agent computes from notBefore) lies ahead.
    p.not_before = n - Duration::minutes(5).min(validity / 10);
    p.not_after = n + validity;
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

/// Name prefix of the staging directories `ca init` builds a CA in.
/// URI SANs that give a certificate a role in mtlsgate (`urn:mtlsgate:role:admin`): a CSR
/// never gets one; only the CA's own requests (`cert issue admin`) carry it.
pub const ROLE_URI_PREFIX: &str = "urn:mtlsgate:role:";
const STAGING_PREFIX: &str = ".mtlsgate-ca-init-";
/// File in a staging directory naming the process that builds it.
const STAGING_OWNER: &str = ".owner";

/// Removes staging directories left by a `ca init` that was killed mid-way (its process is
/// gone). Ones whose owner still runs, or that cannot be attributed, are left alone.
fn remove_abandoned_staging(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(owner) = std::fs::read_to_string(path.join(STAGING_OWNER)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Creates a root and an intermediate in a staging directory next to `dir`.
pub fn init(dir: &Path, opts: &InitOptions<'_>) -> Result<StagedCa> {
    if dir.join("ca.toml").exists() {
        return Err(PkiError::CaExists(dir.to_path_buf()));
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(PkiError::CaExists(dir.to_path_buf()));
        }
    }
    if opts.name.trim().is_empty() {
        return Err(PkiError::InvalidInput {
            what: "CA name",
            value: opts.name.clone(),
            reason: "it must not be empty".into(),
        });
    }
    check_dns(&opts.device_domain).map_err(|_| PkiError::InvalidInput {
        what: "device domain",
        value: opts.device_domain.clone(),
        reason: "expected a domain such as d.example.local".into(),
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|cause| PkiError::Write {
        path: parent.clone(),
        cause,
    })?;
    remove_abandoned_staging(&parent);
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&parent)
        .map_err(|cause| PkiError::Write {
            path: parent.clone(),
            cause,
        })?;
    // Who is building it: a later `ca init` removes a staging directory whose builder is
    // gone (killed mid-way), and leaves one alone while its process still runs.
    fsutil::write_atomic(
        &staging.path().join(STAGING_OWNER),
        std::process::id().to_string().as_bytes(),
        PUBLIC_MODE,
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o700)).map_err(
            |cause| PkiError::Write {
                path: staging.path().to_path_buf(),
                cause,
            },
        )?;
    }
    let sp = staging.path();

    let root_key = opts.key_type.generate()?;
    let root_params = ca_params(
        &format!("{} Root CA", opts.name),
        &opts.name,
        1,
        opts.root_validity,
    );
    let root_cert = root_params.self_signed(&root_key)?;
    let root_not_after = root_params.not_after;
    let root_issuer = Issuer::new(root_params, &root_key);

    let int_key = opts.key_type.generate()?;
    let mut int_params = ca_params(
        &format!("{} Intermediate CA", opts.name),
        &opts.name,
        0,
        opts.intermediate_validity.min(opts.root_validity),
    );
    int_params.not_after = int_params.not_after.min(root_not_after);
    let int_cert = int_params.signed_by(&int_key, &root_issuer)?;

    key::write_key(&sp.join("root.key"), &root_key, opts.passphrase)?;
    key::write_key(&sp.join("intermediate.key"), &int_key, opts.passphrase)?;
    let root_pem = root_cert.pem();
    let int_pem = int_cert.pem();
    fsutil::write_atomic(&sp.join("root.crt"), root_pem.as_bytes(), PUBLIC_MODE)?;
    fsutil::write_atomic(
        &sp.join("intermediate.crt"),
        int_pem.as_bytes(),
        PUBLIC_MODE,
    )?;
    fsutil::write_atomic(
        &sp.join("ca.crt"),
        format!("{root_pem}{int_pem}").as_bytes(),
        PUBLIC_MODE,
    )?;
    let meta = CaMeta {
        format: CA_FORMAT,
        name: opts.name.clone(),
        device_domain: opts.device_domain.to_ascii_lowercase(),
        key_type: opts.key_type,
        encrypted: opts.passphrase.is_some(),
        database: None,
        database_password: false,
    };
    let toml = toml::to_string(&meta).map_err(|e| PkiError::BadCaConfig {
        path: sp.join("ca.toml"),
        reason: e.to_string(),
    })?;
    fsutil::write_atomic(
        &sp.join("ca.toml"),
        format!("# mtlsgate CA; written by `mtlsgate ca init`\n{toml}").as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(StagedCa {
        staging,
        target: dir.to_path_buf(),
        root: Issued::new(CertKind::Root, root_cert.der().to_vec())?,
        intermediate: Issued::new(CertKind::Intermediate, int_cert.der().to_vec())?,
    })
}

/// An opened CA directory (certificates and metadata; keys are loaded by `signer`).
pub struct Ca {
    pub dir: PathBuf,
    pub meta: CaMeta,
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub kind: CertKind,
    /// The certificate's name: CN for servers, and for clients without a device ID.
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub device_id: Option<String>,
    pub validity: Duration,
    pub key_type: KeyType,
}

/// The intermediate's key and name, ready to sign.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    root_issuer: Issuer<'static, KeyPair>,
    intermediate_der: Vec<u8>,
    root_der: Vec<u8>,
}

/// One revoked certificate, as the inventory remembers it.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// Serial, uppercase hex.
    pub serial: String,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<Reason>,
}

/// CRL reason codes users may give to `ca revoke --reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl Reason {
    pub const NAMES: &'static str =
        "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation";

    pub fn parse(s: &str) -> Result<Self> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match k.as_str() {
            "unspecified" => Reason::Unspecified,
            "keycompromise" => Reason::KeyCompromise,
            "affiliationchanged" => Reason::AffiliationChanged,
            "superseded" => Reason::Superseded,
            "cessationofoperation" => Reason::CessationOfOperation,
            _ => {
                return Err(PkiError::InvalidInput {
                    what: "revocation reason",
                    value: s.into(),
                    reason: format!("expected one of {}", Self::NAMES),
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Reason::Unspecified => rcgen::RevocationReason::Unspecified,
            Reason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Reason::Superseded => rcgen::RevocationReason::Superseded,
            Reason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

/// The CRLs `ca crl` produces: the intermediate's (covering leaves) and the root's
/// (covering the intermediate). nginx checks CRLs for every CA in the chain, so both
/// belong in an `ssl_crl` file.
pub struct Crls {
    pub intermediate: Vec<u8>,
    pub root: Vec<u8>,
}

impl Ca {
    /// Opens the CA in `dir`, refusing a missing CA or one written by a newer version.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("ca.toml");
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        // A CA this user may not read is not a missing one (`Path::exists` says false to both).
        match std::fs::metadata(&meta_path) {
            Ok(_) => {}
            Err(e) if denied(&e) => return Err(PkiError::CaDenied(dir.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::NoCa(dir.to_path_buf()))
            }
            Err(cause) => {
                return Err(PkiError::Read {
                    path: meta_path,
                    cause,
                })
            }
        }
        let bytes = match fsutil::read(&meta_path) {
            Err(PkiError::Read { cause, .. }) if denied(&cause) => {
                return Err(PkiError::CaDenied(dir.to_path_buf()))
            }
            r => r?,
        };
        let text = String::from_utf8(bytes).map_err(|_| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let v: Version = toml::from_str(&text).map_err(|e| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        if v.format > CA_FORMAT {
            return Err(PkiError::NewerFormat {
                path: meta_path,
                found: v.format,
                supported: CA_FORMAT,
            });
        }
        let meta: CaMeta = toml::from_str(&text).map_err(|e| PkiError::BadCaConfig {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        let root_der = first_cert(&dir.join("root.crt"))?;
        let intermediate_der = first_cert(&dir.join("intermediate.crt"))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            meta,
            root_der,
            intermediate_der,
        })
    }

    /// The trust bundle (root + intermediate) as PEM.
    pub fn bundle_pem(&self) -> String {
        format!(
            "{}{}",
            pemfile::to_pem("CERTIFICATE", &self.root_der),
            pemfile::to_pem("CERTIFICATE", &self.intermediate_der)
        )
    }

    /// Loads the CA keys (decrypting them with `passphrase` if they are encrypted).
    pub fn signer(&self, passphrase: Option<&[u8]>) -> Result<Signer> {
        let int_key = key::read_key(&self.dir.join("intermediate.key"), passphrase)?;
        let root_key = key::read_key(&self.dir.join("root.key"), passphrase)?;
        check_pair(
            &self.intermediate_der,
            &int_key,
            &self.dir.join("intermediate.crt"),
            &self.dir.join("intermediate.key"),
        )?;
        check_pair(
            &self.root_der,
            &root_key,
            &self.dir.join("root.crt"),
            &self.dir.join("root.key"),
        )?;
        let issuer = Issuer::from_ca_cert_der(&self.intermediate_der.clone().into(), int_key)?;
        let root_issuer = Issuer::from_ca_cert_der(&self.root_der.clone().into(), root_key)?;
        Ok(Signer {
            issuer,
            root_issuer,
            intermediate_der: self.intermediate_der.clone(),
            root_der: self.root_der.clone(),
        })
    }
}

fn first_cert(path: &Path) -> Result<Vec<u8>> {
    pemfile::read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Missing {
            path: path.display().to_string(),
            what: "certificate".into(),
        })
}

/// Refuses a key that does not belong to a certificate.
pub fn check_pair(cert_der: &[u8], key: &KeyPair, cert: &Path, key_path: &Path) -> Result<()> {
    let (_, x) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::BadCertificate {
            path: cert.display().to_string(),
            reason: format!("cannot be parsed: {}", crate::error::parse_reason(&e)),
        })?;
    if x.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(PkiError::KeyMismatch {
            cert: cert.display().to_string(),
            key: key_path.display().to_string(),
        });
    }
    Ok(())
}

fn leaf_base(kind: CertKind, validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match kind {
        CertKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let n = now();
    // Backdated for clocks a little behind the CA's: five minutes, or a tenth of a short
    // lifetime, so that most of a short-lived certificate's life (and the renewal point
    // an agent computes from notBefore) lies ahead.
    p.not_before = n - Duration::minutes(5).min(validity / 10);
    p.not_after = n + validity;
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

fn rsa_key_usage(p: &mut CertificateParams, is_rsa: bool) {
    if is_rsa {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
}

impl Signer {
    /// The chain a leaf is served with: the intermediate, PEM.
    pub fn intermediate_pem(&self) -> String {
        pemfile::to_pem("CERTIFICATE", &self.intermediate_der)
    }

    /// Bundle: root + intermediate, PEM.
    pub fn bundle_pem(&self) -> String {
        format!(
            "{}{}",
            pemfile::to_pem("CERTIFICATE", &self.root_der),
            self.intermediate_pem()
        )
    }

    /// Issues a leaf with a freshly generated key. Returns the certificate and its key.
    pub fn issue(&self, req: &LeafRequest, device_domain: &str) -> Result<(Issued, KeyPair)> {
        let key = req.key_type.generate()?;
        let is_rsa = matches!(
            req.key_type,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
        );
        let mut p = leaf_base(req.kind, req.validity);
        rsa_key_usage(&mut p, is_rsa);
        let mut dn = DistinguishedName::new();
        let mut sans = Vec::new();
        match req.kind {
            CertKind::Server => {
                check_name(&req.name)?;
                dn.push(DnType::CommonName, req.name.as_str());
                let mut dns = req.dns.clone();
                if dns.is_empty() && req.ips.is_empty() {
                    dns.push(req.name.clone());
                }
                for d in &dns {
                    check_dns(d)?;
                    sans.push(SanType::DnsName(d.as_str().try_into()?));
                }
            }
            CertKind::Client => {
                check_name(&req.name)?;
                let cn = match &req.device_id {
                    Some(id) => {
                        let full = normalize_device_id(id, device_domain)?;
                        sans.push(SanType::DnsName(full.as_str().try_into()?));
                        full
                    }
                    None => req.name.clone(),
                };
                dn.push(DnType::CommonName, cn);
                for d in &req.dns {
                    check_dns(d)?;
                    sans.push(SanType::DnsName(d.as_str().try_into()?));
                }
            }
            CertKind::Root | CertKind::Intermediate => {
                return Err(PkiError::InvalidInput {
                    what: "certificate kind",
                    value: req.kind.as_str().into(),
                    reason: "only server and client certificates are issued as leaves".into(),
                })
            }
        }
        for u in &req.uris {
            check_uri(u)?;
        }
        let cn = dn_cn(&dn);
        let text_sans: Vec<San<'_>> = sans
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(d) => Some(San::Dns(d.as_str())),
                _ => None,
            })
            .chain(req.uris.iter().map(|u| San::Uri(u.as_str())))
            .collect();
        let subject: Vec<(&str, &str)> = cn.iter().map(|c| ("CN", c.as_str())).collect();
        names::check_leaf_names(req.kind, &subject, &text_sans, device_domain, Origin::Issue)?;
        for ip in &req.ips {
            sans.push(SanType::IpAddress(*ip));
        }
        for u in &req.uris {
            sans.push(SanType::URI(u.as_str().try_into()?));
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((Issued::new(req.kind, cert.der().to_vec())?, key))
    }

    /// Signs a device's certificate for the key of a checked CSR
    /// ([`crate::device::check_device_csr`]): the CA names the device — the device ID is
    /// the subject CN and the only DNS SAN — and the certificate is for TLS client
    /// authentication only, valid for `validity`.
    pub fn sign_device(
        &self,
        csr: &crate::device::DeviceCsr,
        device_id: &str,
        validity: Duration,
    ) -> Result<Issued> {
        check_dns(device_id).map_err(|_| PkiError::InvalidInput {
            what: "device ID",
            value: device_id.into(),
            reason: "a device ID becomes a DNS name: use letters, digits and `-`".into(),
        })?;
        let mut p = leaf_base(CertKind::Client, validity);
        rsa_key_usage(&mut p, csr.is_rsa);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::DnsName(device_id.try_into()?)];
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let cert = p.signed_by(&spki, &self.issuer)?;
        Issued::new(CertKind::Client, cert.der().to_vec())
    }

    /// Signs a CSR (PEM or DER). The CSR's subject is copied byte for byte (multi-valued
    /// RDNs, repeated attributes and string types stay as they are) and its SANs are kept;
    /// everything else (EKU, key usage, validity, basic constraints) is the CA's decision.
    /// The names must pass the same rule as [`Signer::issue`] ([`crate::names`]), which
    /// needs the CA's `device_domain`.
    pub fn sign_csr(
        &self,
        csr_name: &str,
        csr_data: &[u8],
        kind: CertKind,
        validity: Duration,
        device_domain: &str,
    ) -> Result<Issued> {
        let blocks = pemfile::parse_blocks(csr_name, csr_data)?;
        let block = blocks
            .into_iter()
            .find(|b| b.label.contains("CERTIFICATE REQUEST") || b.label == "DER")
            .ok_or_else(|| PkiError::Missing {
                path: csr_name.into(),
                what:
                    "certificate signing request (expected `-----BEGIN CERTIFICATE REQUEST-----`)"
                        .into(),
            })?;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.der)
                .map_err(|e| {
                    PkiError::CsrRefused(format!(
                        "{csr_name} is not a readable CSR: {}",
                        crate::error::parse_reason(&e)
                    ))
                })?;
        let info = &csr.certification_request_info;
        match info.subject_pki.parsed() {
            Ok(PublicKey::RSA(r)) if r.key_size() < MIN_RSA_BITS => {
                return Err(PkiError::CsrRefused(format!(
                    "its RSA key is {} bits; at least {MIN_RSA_BITS} bits are required, because keys that small can be factored and curl, browsers and rustls reject them (make a new key with `openssl genrsa -out client.key 2048`, or better `openssl ecparam -genkey -name prime256v1 -out client.key`)",
                    r.key_size()
                )));
            }
            Ok(PublicKey::RSA(_)) | Ok(PublicKey::EC(_)) => {}
            _ => {
                let oid = info.subject_pki.algorithm.algorithm.to_id_string();
                if oid != "1.3.101.112" {
                    return Err(PkiError::CsrRefused(format!(
                        "its key type ({oid}) is not supported; use RSA (2048 bits or more), ECDSA P-256/P-384, or Ed25519"
                    )));
                }
            }
        }
        csr.verify_signature().map_err(|_| {
            PkiError::CsrRefused(
                "its signature does not verify: the CSR was altered after it was made, or it was not signed with the key it contains".into(),
            )
        })?;
        let mut sans = Vec::new();
        let mut text_sans: Vec<San<'_>> = Vec::new();
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                match ext {
                    ParsedExtension::BasicConstraints(bc) if bc.ca => {
                        return Err(PkiError::CsrRefused(
                            "it asks to be a CA (basicConstraints CA:TRUE); mtlsgate signs CSRs only for leaf certificates".into(),
                        ));
                    }
                    ParsedExtension::SubjectAlternativeName(san) => {
                        for gn in &san.general_names {
                            match gn {
                                GeneralName::DNSName(d) => text_sans.push(San::Dns(d)),
                                GeneralName::URI(u) => {
                                    if u.to_ascii_lowercase().starts_with(ROLE_URI_PREFIX) {
                                        return Err(PkiError::CsrRefused(format!(
                                            "it asks for the URI SAN {}; roles of mtlsgate (urn:mtlsgate:role:…) are given only by `mtlsgate cert issue admin NAME`, never from a CSR",
                                            crate::printable::printable(u)
                                        )));
                                    }
                                    text_sans.push(San::Uri(u))
                                }
                                GeneralName::RFC822Name(e) => text_sans.push(San::Email(e)),
                                GeneralName::IPAddress(b) => {
                                    if let Some(ip) = ip_from(b) {
                                        sans.push(SanType::IpAddress(ip));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // The subject as the parties reading it will see it, for the names rule.
        let mut subject: Vec<(String, String)> = Vec::new();
        for atv in info.subject.iter_attributes() {
            let oid = atv.attr_type().to_id_string();
            let attr = crate::dn::short_name(&oid)
                .map(str::to_string)
                .unwrap_or(oid);
            let value = atv.attr_value();
            if let Some(text) = names::attribute_text(value.header.tag().0, value.data) {
                subject.push((attr, text));
            }
        }
        let subject_refs: Vec<(&str, &str)> = subject
            .iter()
            .map(|(a, v)| (a.as_str(), v.as_str()))
            .collect();
        names::check_leaf_names(kind, &subject_refs, &text_sans, device_domain, Origin::Csr)?;
        for s in &text_sans {
            sans.push(match *s {
                San::Dns(d) => SanType::DnsName(d.try_into()?),
                San::Uri(u) => SanType::URI(u.try_into()?),
                San::Email(e) => SanType::Rfc822Name(e.try_into()?),
            });
        }
        let cn = subject
            .iter()
            .find(|(a, _)| a == "CN")
            .map(|(_, v)| v.clone());
        if cn.is_none() && sans.is_empty() {
            return Err(PkiError::CsrRefused(
                "it has neither a subject CN nor any subject alternative name, so the certificate would identify nobody".into(),
            ));
        }
        // A CN that is a host name (a server name, or a device ID) also goes in a DNS SAN,
        // since TLS clients match names only against SANs.
        if sans.is_empty() {
            if let Some(c) = cn.as_deref().filter(|c| check_dns(c).is_ok()) {
                sans.push(SanType::DnsName(c.try_into()?));
            }
        }
        let mut p = leaf_base(kind, validity);
        if matches!(info.subject_pki.parsed(), Ok(PublicKey::RSA(_))) {
            rsa_key_usage(&mut p, true);
        }
        // rcgen would re-encode the subject (flattening multi-valued RDNs, keeping one of
        // repeated attributes), so it signs with a placeholder that is then replaced by the
        // CSR's subject bytes. An empty placeholder for an empty subject keeps rcgen's
        // critical SAN extension, as RFC 5280 asks.
        let subject_der = info.subject.as_raw();
        let empty_subject = info.subject.iter_attributes().next().is_none();
        if !empty_subject {
            p.distinguished_name
                .push(DnType::CommonName, "mtlsgate placeholder subject");
        }
        p.subject_alt_names = sans;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)?;
        let cert = p.signed_by(&spki, &self.issuer)?;
        let der = self.with_subject(cert.der(), subject_der)?;
        Issued::new(kind, der)
    }

    /// Replaces the subject of a certificate this signer just made with `subject_der` (a
    /// whole DER Name) and signs the TBSCertificate again, keeping the signature algorithm.
    fn with_subject(&self, cert_der: &[u8], subject_der: &[u8]) -> Result<Vec<u8>> {
        let broken = |what: &str| PkiError::BadCertificate {
            path: "signed certificate".into(),
            reason: format!("cannot copy the CSR's subject into it: {what}"),
        };
        let name = der::read_one(subject_der)
            .filter(|t| t.tag == der::SEQUENCE)
            .ok_or_else(|| broken("the CSR's subject is not a DER SEQUENCE"))?;
        let signed = der::split_signed(cert_der).ok_or_else(|| broken("unexpected structure"))?;
        let mut parts: Vec<&[u8]> = der::elements(signed.tbs.value)
            .ok_or_else(|| broken("unexpected TBSCertificate"))?
            .iter()
            .map(|t| t.raw)
            .collect();
        // version [0], serial, signature, issuer, validity, subject, …
        if parts.len() < 7 || parts[0].first() != Some(&0xa0) {
            return Err(broken("unexpected TBSCertificate fields"));
        }
        parts[5] = name.raw;
        let tbs = der::encode(der::SEQUENCE, &parts);
        let sig = self.issuer.key().sign(&tbs)?;
        Ok(der::assemble_signed(&tbs, signed.algorithm.raw, &sig))
    }

    /// Signs the intermediate's CRL (listing `revoked` leaves) and the root's CRL
    /// (listing `revoked_intermediates`, normally none).
    pub fn crls(
        &self,
        revoked: &[Revoked],
        revoked_intermediates: &[Revoked],
        crl_number: u64,
        next_update: Duration,
    ) -> Result<Crls> {
        let make = |list: &[Revoked], issuer: &Issuer<'static, KeyPair>| -> Result<Vec<u8>> {
            let n = now();
            let params = rcgen::CertificateRevocationListParams {
                this_update: n - Duration::minutes(5),
                next_update: n + next_update,
                crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
                issuing_distribution_point: None,
                revoked_certs: list
                    .iter()
                    .filter_map(|r| {
                        let bytes = hex::decode(&r.serial).ok()?;
                        Some(rcgen::RevokedCertParams {
                            serial_number: SerialNumber::from_slice(&bytes),
                            revocation_time: r.revoked_at,
                            reason_code: r.reason.map(Reason::rcgen),
                            invalidity_date: None,
                        })
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            Ok(params.signed_by(issuer)?.der().to_vec())
        };
        Ok(Crls {
            intermediate: make(revoked, &self.issuer)?,
            root: make(revoked_intermediates, &self.root_issuer)?,
        })
    }
}

/// The CN of a name rcgen is about to write.
fn dn_cn(dn: &DistinguishedName) -> Option<String> {
    match dn.get(&DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn check_uri(u: &str) -> Result<()> {
    let ok = u
        .split_once(':')
        .map(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && !rest.trim_start_matches('/').is_empty()
                && !rest.contains(char::is_whitespace)
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidInput {
            what: "URI",
            value: u.into(),
            reason: "expected an absolute URI such as spiffe://example.org/ns/prod/sa/api or urn:example:name".into(),
        })
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_recorded_without_their_password() {
        let cases = [
            ("postgres://u@h:5432/db", "postgres://u@h:5432/db", false),
            ("postgres://u:pw@h/db", "postgres://u@h/db", true),
            (
                "postgresql://u@h/db?sslmode=require&password=pw",
                "postgresql://u@h/db?sslmode=require",
                true,
            ),
            ("postgres://h/db", "postgres://h/db", false),
        ];
        for (url, bare, had) in cases {
            assert_eq!(without_password(url), (bare.to_string(), had), "{url}");
        }
    }

    const DOMAIN: &str = "d.example.local";

    fn test_ca() -> (tempfile::TempDir, Ca, Signer) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        let opts = InitOptions {
            name: "Test".into(),
            key_type: KeyType::P256,
            device_domain: DOMAIN.into(),
            passphrase: None,
            root_validity: Duration::days(30),
            intermediate_validity: Duration::days(30),
        };
        init(&dir, &opts).expect("init").commit().expect("commit");
        let ca = Ca::open(&dir).expect("open");
        let signer = ca.signer(None).expect("signer");
        (tmp, ca, signer)
    }

    /// An AttributeTypeAndValue for `2.5.4.<n>` with a UTF8String value.
    fn atv(n: u8, value: &str) -> Vec<u8> {
        let oid = der::encode(0x06, &[&[0x55, 0x04, n]]);
        let v = der::encode(0x0c, &[value.as_bytes()]);
        der::encode(der::SEQUENCE, &[&oid, &v])
    }

    fn rdn(atvs: &[Vec<u8>]) -> Vec<u8> {
        let parts: Vec<&[u8]> = atvs.iter().map(|a| a.as_slice()).collect();
        der::encode(0x31, &parts)
    }

    /// A CSR with exactly `subject_der` as its subject (rcgen cannot write multi-valued RDNs
    /// or repeated attributes, so its request is re-signed with the subject spliced in).
    fn csr_with_subject(subject_der: &[u8], sans: Vec<String>) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "placeholder");
        let csr = p.serialize_request(&key).expect("csr");
        let signed = der::split_signed(csr.der()).expect("signed");
        let mut parts: Vec<&[u8]> = der::elements(signed.tbs.value)
            .expect("info")
            .iter()
            .map(|t| t.raw)
            .collect();
        parts[1] = subject_der;
        let info = der::encode(der::SEQUENCE, &parts);
        let sig = key.sign(&info).expect("sign");
        (der::assemble_signed(&info, signed.algorithm.raw, &sig), key)
    }

    fn csr_with_cn(cn: &str, sans: Vec<String>) -> Vec<u8> {
        let name = der::encode(der::SEQUENCE, &[&rdn(&[atv(3, cn)])]);
        csr_with_subject(&name, sans).0
    }

    #[test]
    fn sign_csr_copies_the_subject_verbatim() {
        let (_tmp, ca, signer) = test_ca();
        // C=SE / O=Acme+OU=R&D / OU=Fleet / OU=Ops / CN=dev9: a multi-valued RDN and
        // repeated OUs, which rcgen's DistinguishedName would flatten.
        let c = {
            let oid = der::encode(0x06, &[&[0x55, 0x04, 0x06]]);
            let v = der::encode(0x13, &[b"SE"]);
            der::encode(der::SEQUENCE, &[&oid, &v])
        };
        let name = der::encode(
            der::SEQUENCE,
            &[
                &rdn(&[c]),
                &rdn(&[atv(10, "Acme"), atv(11, "R&D")]),
                &rdn(&[atv(11, "Fleet")]),
                &rdn(&[atv(11, "Ops")]),
                &rdn(&[atv(3, "dev9.d.example.local")]),
            ],
        );
        let (csr, key) = csr_with_subject(&name, vec![]);
        let issued = signer
            .sign_csr(
                "test.csr",
                &csr,
                CertKind::Client,
                Duration::days(1),
                DOMAIN,
            )
            .expect("signed");
        let (_, x) = x509_parser::parse_x509_certificate(&issued.der).expect("parses");
        assert_eq!(x.subject().as_raw(), name.as_slice());
        assert_eq!(
            issued.info.subject,
            "CN=dev9.d.example.local,OU=Ops,OU=Fleet,OU=R&D+O=Acme,C=SE"
        );
        assert_eq!(
            issued.info.device_id.as_deref(),
            Some("dev9.d.example.local")
        );
        assert_eq!(
            issued.info.dns_names,
            vec!["dev9.d.example.local".to_string()]
        );
        // Signed by the intermediate, over the spliced TBSCertificate.
        let (_, int) = x509_parser::parse_x509_certificate(&ca.intermediate_der).expect("int");
        x.verify_signature(Some(int.public_key()))
            .expect("signature verifies with the intermediate's key");
        assert_eq!(x.public_key().raw, key.subject_public_key_info().as_slice());
        // And it is a certificate the verifier accepts.
        let v = crate::verify::Verifier::new(vec![ca.root_der.clone()], vec![], 2).expect("v");
        let chain = [
            rustls_pki_types::CertificateDer::from(issued.der.as_slice()),
            rustls_pki_types::CertificateDer::from(ca.intermediate_der.as_slice()),
        ];
        v.verify(
            &chain,
            crate::verify::Purpose::Client,
            rustls_pki_types::UnixTime::now(),
        )
        .expect("verifies");
    }

    #[test]
    fn sign_csr_refuses_control_characters_and_other_devices() {
        let (_tmp, _ca, signer) = test_ca();
        let e = signer
            .sign_csr(
                "nl.csr",
                &csr_with_cn("dev1\r\nX-Device: admin", vec![]),
                CertKind::Client,
                Duration::days(1),
                DOMAIN,
            )
            .expect_err("refused");
        assert!(matches!(e, PkiError::ControlCharacter { .. }), "{e}");
        assert!(
            e.to_string().starts_with(
                "the CSR's subject CN contains a control character (dev1\\r\\nX-Device: admin)"
            ),
            "{e}"
        );
        let e = signer
            .sign_csr(
                "other.csr",
                &csr_with_cn("other.d.example.local", vec!["dev1.d.example.local".into()]),
                CertKind::Client,
                Duration::days(1),
                DOMAIN,
            )
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the CSR's DNS SAN dev1.d.example.local names another device than its CN other.d.example.local; a client certificate names one device"
        );
        // The same SAN matching its CN is fine, and so is any SAN on a server certificate.
        signer
            .sign_csr(
                "ok.csr",
                &csr_with_cn("dev1.d.example.local", vec!["DEV1.d.example.local".into()]),
                CertKind::Client,
                Duration::days(1),
                DOMAIN,
            )
            .expect("one device");
        signer
            .sign_csr(
                "srv.csr",
                &csr_with_cn("api", vec!["dev1.d.example.local".into()]),
                CertKind::Server,
                Duration::days(1),
                DOMAIN,
            )
            .expect("server");
    }

    fn client(name: &str, device_id: Option<&str>, dns: &[&str], uris: &[&str]) -> LeafRequest {
        LeafRequest {
            kind: CertKind::Client,
            name: name.into(),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: vec![],
            uris: uris.iter().map(|d| d.to_string()).collect(),
            device_id: device_id.map(str::to_string),
            validity: Duration::days(1),
            key_type: KeyType::P256,
        }
    }

    #[test]
    fn issue_refuses_a_dns_name_of_another_device() {
        let (_tmp, _ca, signer) = test_ca();
        let e = signer
            .issue(
                &client("c1", Some("dev1"), &["dev2.d.example.local"], &[]),
                DOMAIN,
            )
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the DNS SAN dev2.d.example.local names another device than its CN dev1.d.example.local; a client certificate names one device"
        );
        let (issued, _) = signer
            .issue(
                &client(
                    "c1",
                    Some("dev1"),
                    &["dev1.d.example.local", "dev1.example.com"],
                    &[],
                ),
                DOMAIN,
            )
            .expect("same device, and a name outside the device domain");
        assert_eq!(
            issued.info.device_id.as_deref(),
            Some("dev1.d.example.local")
        );
        let e = signer
            .issue(
                &client("c1", None, &[], &["spiffe://x/\u{1b}]0;pwned\u{7}"]),
                DOMAIN,
            )
            .expect_err("refused");
        assert!(matches!(e, PkiError::ControlCharacter { .. }), "{e}");
    }
}
