//! How fleet commands (`token`, `devices`) reach a CA. Today: the CA directory and its
//! inventory, through the authority library. The HTTPS admin API (`--server URL`, with an
//! admin client certificate) will be a second variant of [`Fleet`] with the same methods;
//! the commands only call these methods and print.

use std::path::Path;

use anyhow::Result;
use mtlsgate_authority::{
    Action, Authority, Device, DeviceDetail, DeviceFilter, Location, NewTokenSecret, Policy,
    TokenRequest,
};
use time::OffsetDateTime;

use crate::flags::{Database, FleetTarget};

/// A CA that fleet commands talk to.
pub enum Fleet {
    /// The CA directory and its inventory (SQLite file or PostgreSQL), used directly.
    Local(Box<Authority>),
    // Server(AdminClient): the CA server's admin API, `--server URL` (not yet).
}

/// The inventory location of the CA in `dir`, from `--database`/`MTLSGATE_DATABASE`.
pub fn location(dir: &Path, db: &Database) -> Result<Location> {
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

impl Fleet {
    pub async fn open(t: &FleetTarget) -> Result<Fleet> {
        Ok(Fleet::Local(Box::new(
            open_authority(&t.ca.dir, &t.db).await?,
        )))
    }

    pub async fn close(self) {
        match self {
            Fleet::Local(a) => a.close().await,
        }
    }

    /// The full form of a device ID the user typed (`dev1` → `dev1.<device domain>`).
    pub fn device_id(&self, id: &str) -> Result<String> {
        match self {
            Fleet::Local(a) => Ok(a.device_id(id)?),
        }
    }

    pub async fn create_token(&self, t: TokenRequest) -> Result<NewTokenSecret> {
        match self {
            Fleet::Local(a) => Ok(a
                .create_token(t, &actor(), OffsetDateTime::now_utc())
                .await?),
        }
    }

    pub async fn devices(&self, f: &DeviceFilter) -> Result<Vec<Device>> {
        match self {
            Fleet::Local(a) => Ok(a.devices(f).await?),
        }
    }

    pub async fn device(&self, id: &str) -> Result<DeviceDetail> {
        match self {
            Fleet::Local(a) => Ok(a.device(id).await?),
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
        }
    }

    pub async fn tag(&self, id: &str, add: &[String], remove: &[String]) -> Result<Device> {
        match self {
            Fleet::Local(a) => Ok(a
                .tag(id, add, remove, &actor(), OffsetDateTime::now_utc())
                .await?),
        }
    }
}
