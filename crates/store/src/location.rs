//! Where an inventory lives ([`Location`]: an SQLite file or a PostgreSQL URL) and which
//! back end that is ([`Backend`]); URLs are shown without their password.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Where the inventory lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (normally `CA_DIR/inventory.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// The file name of the SQLite inventory in a CA directory.
    pub const FILE: &'static str = "inventory.db";

    /// The inventory of the CA in `ca_dir`: `database` when given (a PostgreSQL URL, or
    /// `sqlite:PATH`), else `ca_dir/inventory.db`.
    pub fn for_ca(ca_dir: &Path, database: Option<&str>) -> Result<Location> {
        match database.map(str::trim).filter(|d| !d.is_empty()) {
            None => Ok(Location::Sqlite(ca_dir.join(Self::FILE))),
            Some(d) => Self::parse_url(d),
        }
    }

    /// A CA directory or a database URL, as a gateway's `inventory = "…"` gives it.
    pub fn parse(dir_or_url: &str) -> Result<Location> {
        if dir_or_url.contains("://") || dir_or_url.starts_with("sqlite:") {
            Self::parse_url(dir_or_url)
        } else {
            Ok(Location::Sqlite(Path::new(dir_or_url).join(Self::FILE)))
        }
    }

    fn parse_url(url: &str) -> Result<Location> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Location::Postgres(url.to_string()))
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            Ok(Location::Sqlite(PathBuf::from(path)))
        } else {
            Err(StoreError::BadLocation(redact(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Debug for Location {
    /// As [`Display`](fmt::Display): a PostgreSQL URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Location::Postgres(u) => f.debug_tuple("Postgres").field(&redact(u)).finish(),
        }
    }
}

impl fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

/// A URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Which database holds an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_never_shown() {
        let loc = Location::parse("postgres://ca:s3cret@db.example:5432/inv").expect("url");
        for shown in [format!("{loc}"), format!("{loc:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains("postgres://ca:***@db.example:5432/inv"),
                "{shown}"
            );
        }
    }
}
