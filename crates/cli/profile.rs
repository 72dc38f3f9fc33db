//! The operator profile: `mtlsgate login` remembers a CA server, the CA certificates its
//! certificate must chain to and an administrator's certificate and key, so that `devices …`
//! and `token create` reach the server without `--server` flags (as `kubectl`'s kubeconfig
//! or `step ca bootstrap` do). It holds paths, never a key. Flags and `MTLSGATE_*`
//! variables win over it; `--dir` or `--database` alone mean the local CA, not the profile.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `mtlsgate login` stores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Profile {
    pub server: String,
    pub ca_file: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

/// Where the profile lives: `MTLSGATE_PROFILE`, else `$XDG_CONFIG_HOME/mtlsgate/profile.toml`,
/// else `~/.config/mtlsgate/profile.toml`.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MTLSGATE_PROFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mtlsgate").join("profile.toml"))
}

/// The saved profile, if there is one.
pub fn load() -> Result<Option<Profile>> {
    let Some(p) = path() else { return Ok(None) };
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let profile = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a profile `mtlsgate login` wrote; run `mtlsgate login` again or remove it",
            p.display()
        )
    })?;
    Ok(Some(profile))
}

/// Saves `profile` (whole or not at all, mode 0600); returns where.
pub fn save(profile: &Profile) -> Result<PathBuf> {
    let p = path()
        .context("no place for the profile: set HOME, XDG_CONFIG_HOME or MTLSGATE_PROFILE")?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = format!(
        "# Written by `mtlsgate login`; used by `mtlsgate devices …` and `mtlsgate token create`.\n{}",
        toml::to_string(profile).context("cannot write the profile")?
    );
    mtlsgate_pki::fsutil::write_atomic(&p, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}

/// Removes the profile; says whether there was one.
pub fn remove() -> Result<Option<PathBuf>> {
    let Some(p) = path() else { return Ok(None) };
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(Some(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

/// `path` made absolute against the current directory (the profile is used from anywhere).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}
