//! Whole-or-nothing file writes: every file the project writes goes through here.
//! A temporary file in the destination directory is written, synced, given its mode
//! and renamed over the target, so a reader never sees half a file.

use std::io::Write;
use std::path::Path;

use crate::error::{PkiError, Result};

/// File mode for private keys and other secrets.
pub const SECRET_MODE: u32 = 0o600;
/// File mode for certificates and other public material.
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `data` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let err = |cause| PkiError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mtlsgate-tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    set_mode(tmp.as_file(), mode).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Writes a file only if it does not exist yet (used where overwriting would lose a key).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let err = |cause| PkiError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mtlsgate-tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    set_mode(tmp.as_file(), mode).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist_noclobber(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| PkiError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
