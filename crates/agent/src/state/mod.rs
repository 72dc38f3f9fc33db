//! The state directory (`--dir`, default `/var/lib/mtlsgate-agent`) and everything in it:
//!
//! | file | mode | what |
//! |---|---|---|
//! | `client.crt` | 0644 | the device's certificate chain (leaf + intermediate) |
//! | `client.key` | 0600 | its private key, made on the device |
//! | `ca.crt` | 0644 | the CA certificates the server (and the gateway) is verified with |
//! | `agent.json` | 0600 | [`AgentState`]: server, device ID, pin, recovery token, schedule, last error |
//! | `pending.json`, `pending.key` | 0600 | an enrollment that waits for approval ([`PendingState`]) and its key |
//!
//! The directory itself is `flock(2)`ed while an agent changes it ([`StateDir::lock`]), so
//! that `agent run` and a timer's `agent run --once` never renew at the same time (each
//! renewal rotates the recovery token; a token lost that way would later look like a clone).
//!
//! `client.crt`, `client.key` and `ca.crt` belong together, so they are installed the way
//! Kubernetes updates a mounted secret (its `AtomicWriter`): each set is written into a new
//! directory of its own, `..2026_12_04_18_00_01.123456789/`, and the symlink `..data`
//! points at the current one. The three names in the state directory are symlinks that
//! never change (`client.crt -> ..data/client.crt`), so existing `--cert DIR/client.crt
//! --key DIR/client.key` settings keep working. A new set is published with one rename: a
//! symlink `..data_tmp` to the new directory is renamed over `..data`; then the older set
//! directories are removed. A program that opens the two files by these paths sees one set
//! or the other, unless it opens one before a swap and the other after it (then the next
//! try matches); a program that resolves `..data` (or `realpath DIR/client.key`) once and
//! reads both files from that directory always gets a matching pair.
//!
//! Crash safety: the set directory is complete and synced before `..data_tmp` is made,
//! so `..data_tmp` means "a complete set waits to be published" and [`StateDir::repair`]
//! publishes it. `agent.json` of an install travels in the set directory and is moved to
//! the state directory right after the swap; a set directory with `agent.json` in it that
//! `..data` points to is an install whose last steps repair finishes. Anything else left
//! over (a set directory never published, `client.key.new`) is thrown away.
//!
//! A state directory of an older version (plain files) is changed to this layout by the
//! next install, and an install interrupted in the older way (`client.crt.new`) is still
//! finished by [`StateDir::repair`].
//!
//! Module map: [`files`] — `agent.json` and `pending.json`; [`sets`] — the whole-set
//! installs of `client.crt`, `client.key` and `ca.crt`, and their repair; [`lock`] — the
//! directory's lock and the check that nobody else can write to it.

use std::path::{Path, PathBuf};

use mtlsgate_pki::{pemfile, KeyPair};

use crate::error::{AgentError, Result};
use crate::keys;

mod files;
mod lock;
mod sets;

pub use files::{AgentState, LastError, PendingState};
pub use lock::DirLock;
pub use sets::Repair;

/// The `format` of `agent.json` and `pending.json` this version writes and reads.
pub const STATE_FORMAT: u32 = 1;

/// The device's certificate chain and key, read from the state directory.
pub(crate) struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub key: KeyPair,
    pub not_before: i64,
    pub not_after: i64,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn client_crt(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn agent_json(&self) -> PathBuf {
        self.dir.join("agent.json")
    }
    pub fn pending_json(&self) -> PathBuf {
        self.dir.join("pending.json")
    }
    pub fn pending_key(&self) -> PathBuf {
        self.dir.join("pending.key")
    }
    /// Where a new key waits while the server is asked.
    pub fn new_key(&self) -> PathBuf {
        self.dir.join("client.key.new")
    }
    fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.new"))
    }

    /// Creates the directory (0700: it holds the key) if it does not exist.
    pub fn create(&self) -> Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&self.dir)
            .map_err(|e| AgentError::io(format!("cannot create {}", self.dir.display()), e))
    }

    /// The current certificate chain and key, both read from the set directory `..data`
    /// points to (resolved once, so a swap cannot mix two sets), and refused when the key is
    /// not the certificate's.
    pub(crate) fn identity(&self) -> Result<Identity> {
        let set = self.current_set_dir();
        let (crt, key_path) = (set.join("client.crt"), set.join("client.key"));
        let chain = pemfile::read_certs(&crt)?;
        let key = mtlsgate_pki::key::read_key(&key_path, None)?;
        let (not_before, not_after) =
            keys::validity(&chain[0]).ok_or_else(|| AgentError::BadIdentity {
                dir: self.dir.clone(),
                reason: format!("{} cannot be parsed", self.client_crt().display()),
            })?;
        if keys::public_key_of_cert(&chain[0]).as_deref() != Some(key.public_key_raw()) {
            return Err(AgentError::BadIdentity {
                dir: self.dir.clone(),
                reason: format!(
                    "the private key in {} does not match the certificate in {}",
                    self.client_key().display(),
                    self.client_crt().display()
                ),
            });
        }
        Ok(Identity {
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// Makes renames durable (best effort: the data files themselves were synced).
    fn sync_dir(&self) {
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }
}
