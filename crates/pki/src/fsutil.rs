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
/// Creating the file is one step (a link that fails if the name is taken), so of several
/// processes writing the same path at once exactly one succeeds; the others get
/// [`PkiError::AlreadyExists`].
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
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::AlreadyExists(path.to_path_buf())
        } else {
            err(e.error)
        }
    })?;
    Ok(())
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| PkiError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

/// Removes a file this process created, when a later step failed. Best effort: the
/// error that made the caller give up is the one worth reporting.
pub fn remove_created(path: &Path) {
    let _ = std::fs::remove_file(path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_refuses_an_existing_file_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k.key");
        write_new(&p, b"first", SECRET_MODE).expect("first write");
        let e = write_new(&p, b"second", SECRET_MODE).expect_err("refused");
        assert!(matches!(e, PkiError::AlreadyExists(_)), "{e}");
        assert_eq!(
            e.to_string(),
            format!("{} already exists: refusing to overwrite it", p.display())
        );
        assert_eq!(std::fs::read(&p).expect("read"), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
