//! How fleet commands (`token`, `devices`) reach a CA: the CA directory and its inventory,
//! through the authority library ([`Fleet::Local`]), or the CA server's admin API with an
//! administrator's client certificate ([`Fleet::Server`], `--server URL`). Both give the
//! authority's own records, so the commands only call these methods and print, the same
//! way for either. The admin API's client is [`admin`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mtlsgate_authority::{
    Action, Authority, Device, DeviceDetail, DeviceFilter, DeviceStatus, ImportRequest, Location,
    NewTokenSecret, Page, Policy, TokenRequest,
};
use mtlsgate_contract::wire::TokenBody;
use time::OffsetDateTime;

use crate::flags::{Database, FleetTarget, DEFAULT_CA_DIR};

mod admin;

use admin::AdminClient;

/// A CA that fleet commands talk to.
pub enum Fleet {
    /// The CA directory and its inventory (SQLite file or PostgreSQL), used directly.
    Local(Box<Authority>),
    /// The CA server's admin API (`--server URL`).
    Server(Box<AdminClient>),
}

/// The inventory location of the CA in `dir`, from `--database`/`MTLSGATE_DATABASE`, or
/// else the database `ca init --database` recorded in `ca.toml`.
pub fn location(dir: &Path, db: &Database) -> Result<Location> {
    if db.database.is_none() {
        // A CA that cannot be opened is reported when the authority opens it.
        if let Ok(ca) = mtlsgate_pki::ca::Ca::open(dir) {
            if let Some(url) = &ca.meta.database {
                if ca.meta.database_password {
                    anyhow::bail!(
                        "the CA in {} keeps its inventory in PostgreSQL at {url} (recorded by `ca init`), and its password is not recorded: give --database URL or MTLSGATE_DATABASE",
                        dir.display()
                    );
                }
                return Ok(Location::for_ca(dir, Some(url))?);
            }
        }
    }
    Ok(Location::for_ca(dir, db.database.as_deref())?)
}

/// Opens the CA in `dir` with its inventory (no keys loaded).
pub async fn open_authority(dir: &Path, db: &Database) -> Result<Authority> {
    let loc = location(dir, db)?;
    Ok(Authority::open(dir, Some(&loc), Policy::default()).await?)
}

/// Who is acting, for the audit trail: the local user, through the CLI.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user} (cli)")
}

/// A file given by its flag, or else `name` in the CA directory (when one is given).
fn file_or_in_dir(
    given: &Option<PathBuf>,
    dir: Option<&Path>,
    name: &str,
    flag: &str,
) -> Result<PathBuf> {
    match (given, dir) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(d)) => Ok(d.join(name)),
        (None, None) => {
            anyhow::bail!("with --server, give {flag} FILE, or --dir CA_DIR to use CA_DIR/{name}")
        }
    }
}

/// An administrator's client for `url`, with files from flags or the CA directory.
fn admin_client(
    url: &str,
    dir: Option<&Path>,
    admin_cert: &Option<PathBuf>,
    admin_key: &Option<PathBuf>,
    ca_file: &Option<PathBuf>,
) -> Result<(AdminClient, crate::profile::Profile)> {
    let cert = file_or_in_dir(admin_cert, dir, "admin.crt", "--admin-cert")?;
    let key = file_or_in_dir(admin_key, dir, "admin.key", "--admin-key")?;
    let ca = file_or_in_dir(ca_file, dir, "ca.crt", "--ca-file")?;
    let c = AdminClient::new(url, &ca, &cert, &key)
        .with_context(|| format!("cannot use the CA server {url}"))?;
    let p = crate::profile::Profile {
        server: url.to_string(),
        ca_file: crate::profile::absolute(&ca)?,
        admin_cert: crate::profile::absolute(&cert)?,
        admin_key: crate::profile::absolute(&key)?,
    };
    Ok((c, p))
}

/// `mtlsgate login`: checks the server answers the administrator, then saves the profile.
pub fn login(l: crate::flags::Login) -> Result<std::process::ExitCode> {
    let (client, profile) = admin_client(
        &l.server,
        l.dir.as_deref(),
        &l.admin_cert,
        &l.admin_key,
        &l.ca_file,
    )?;
    let pending = crate::block_on(client.devices_page(
        &DeviceFilter {
            status: Some(DeviceStatus::Pending),
            ..Default::default()
        },
        None,
        mtlsgate_authority::MAX_PAGE,
    ))?
    .with_context(|| {
        format!(
            "{} did not accept the administrator's certificate {}; nothing was saved",
            l.server,
            profile.admin_cert.display()
        )
    })?;
    let path = crate::profile::save(&profile)?;
    println!(
        "logged in to {} as the administrator of {} ({}{} device(s) waiting for approval); saved in {}",
        profile.server,
        profile.admin_cert.display(),
        pending.items.len(),
        if pending.next.is_some() { "+" } else { "" },
        path.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `mtlsgate logout`.
pub fn logout() -> Result<std::process::ExitCode> {
    match crate::profile::remove()? {
        Some(p) => println!("removed {}", p.display()),
        None => println!("there was no profile to remove"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

impl Fleet {
    pub async fn open(t: &FleetTarget) -> Result<Fleet> {
        let remembered = match (&t.server, &t.dir, &t.db.database) {
            (None, None, None) => crate::profile::load()?,
            _ => None,
        };
        if let Some(p) = remembered {
            let (c, _) = admin_client(
                &p.server,
                None,
                &Some(t.admin_cert.clone().unwrap_or(p.admin_cert)),
                &Some(t.admin_key.clone().unwrap_or(p.admin_key)),
                &Some(t.ca_file.clone().unwrap_or(p.ca_file)),
            )?;
            return Ok(Fleet::Server(Box::new(c)));
        }
        match &t.server {
            None => {
                let dir = t
                    .dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_DIR));
                Ok(Fleet::Local(Box::new(open_authority(&dir, &t.db).await?)))
            }
            Some(url) => {
                let (c, _) = admin_client(
                    url,
                    t.dir.as_deref(),
                    &t.admin_cert,
                    &t.admin_key,
                    &t.ca_file,
                )?;
                Ok(Fleet::Server(Box::new(c)))
            }
        }
    }

    pub async fn close(self) {
        match self {
            Fleet::Local(a) => a.close().await,
            Fleet::Server(_) => {}
        }
    }

    /// The full form of a device ID the user typed (`dev1` → `dev1.<device domain>`);
    /// the server completes short IDs itself.
    pub fn device_id(&self, id: &str) -> Result<String> {
        match self {
            Fleet::Local(a) => Ok(a.device_id(id)?),
            Fleet::Server(_) => Ok(id.trim().to_ascii_lowercase()),
        }
    }

    pub async fn create_token(&self, t: TokenRequest) -> Result<NewTokenSecret> {
        match self {
            Fleet::Local(a) => Ok(a
                .create_token(t, &actor(), OffsetDateTime::now_utc())
                .await?),
            Fleet::Server(c) => Ok(c
                .create_token(&TokenBody {
                    device_id: t.device_id,
                    ttl_secs: t.ttl.whole_seconds(),
                    tags: t.tags,
                    lifetime_secs: t.lifetime.map(|l| l.whole_seconds()),
                })
                .await?),
        }
    }

    /// One page of the devices matching `f`, after `cursor` (the previous page's `next`).
    pub async fn devices_page(
        &self,
        f: &DeviceFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Device>> {
        match self {
            Fleet::Local(a) => Ok(a.devices_page(f, cursor, Some(limit)).await?),
            Fleet::Server(c) => Ok(c.devices_page(f, cursor, limit).await?),
        }
    }

    /// Records a device that already holds a certificate.
    pub async fn import_device(&self, r: &ImportRequest) -> Result<Device> {
        match self {
            Fleet::Local(a) => Ok(a
                .import_device(r, &actor(), OffsetDateTime::now_utc())
                .await?),
            Fleet::Server(c) => Ok(c.import_device(r).await?),
        }
    }

    pub async fn device(&self, id: &str) -> Result<DeviceDetail> {
        match self {
            Fleet::Local(a) => Ok(a.device(id).await?),
            Fleet::Server(c) => Ok(c.device(id).await?),
        }
    }

    pub async fn set_status(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
    ) -> Result<Device> {
        match self {
            Fleet::Local(a) => Ok(a
                .set_status(id, action, &actor(), reason, OffsetDateTime::now_utc())
                .await?),
            Fleet::Server(c) => Ok(c.set_status(id, action, reason).await?),
        }
    }

    pub async fn tag(&self, id: &str, add: &[String], remove: &[String]) -> Result<Device> {
        match self {
            Fleet::Local(a) => Ok(a
                .tag(id, add, remove, &actor(), OffsetDateTime::now_utc())
                .await?),
            Fleet::Server(c) => Ok(c.tag(id, add, remove).await?),
        }
    }
}
