//! The CA directory: `ca init` (a root and an intermediate built in a staging directory
//! next to the target, then moved into place whole), abandoned staging directories, and
//! `ca.toml` (format version, names, where the inventory lives).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
};
use time::Duration;

use super::issue::check_dns;
use super::{now, random_serial, CaMeta, CertKind, Issued, CA_FORMAT};
use crate::error::{PkiError, Result};
use crate::fsutil::{self, PUBLIC_MODE};
use crate::key::{self, KeyType};

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
pub(super) fn without_password(url: &str) -> (String, bool) {
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
