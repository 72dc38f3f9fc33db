//! The state directory's lock (`flock(2)` on the directory, [`StateDir::lock`]) and the
//! check, before taking it, that nobody but the agent's user can write to the directory.

use std::path::Path;
use std::time::{Duration, Instant};

use super::StateDir;
use crate::error::{AgentError, Result};

/// The held `flock(2)` on the state directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Why a state directory with `mode` owned by `owner` is unsafe for an agent running as
/// user `me`: writable by group or others, or someone else's. `None` when it is private.
fn unsafe_dir_reason(dir: &Path, mode: u32, owner: u32, me: u32) -> Option<String> {
    let mode = mode & 0o7777;
    let writable_by = if mode & 0o002 != 0 {
        Some("others")
    } else if mode & 0o020 != 0 {
        Some("group")
    } else {
        None
    };
    if let Some(who) = writable_by {
        return Some(format!(
            "is writable by {who} (mode {mode:04o}): whoever can write there can replace the device's key and certificate; make it private with `chmod 700 {}`",
            dir.display()
        ));
    }
    (owner != me).then(|| {
        format!(
            "belongs to user {owner}, not to the user this agent runs as ({me}): its owner can replace the device's key and certificate; run the agent as that user, or hand the directory over with `chown {me} {}`",
            dir.display()
        )
    })
}

impl StateDir {
    /// Refuses a directory (opened as `dir`) that someone else could write to: writable by
    /// group or others, or owned by another user than the agent's — they could swap the
    /// key and certificate the agent writes, or read what it leaves there.
    fn check_private(&self, dir: &std::fs::File) -> Result<()> {
        let st = rustix::fs::fstat(dir).map_err(|e| {
            AgentError::io(
                format!("cannot inspect {}", self.dir.display()),
                std::io::Error::from(e),
            )
        })?;
        let me = rustix::process::geteuid().as_raw();
        match unsafe_dir_reason(&self.dir, st.st_mode, st.st_uid, me) {
            Some(reason) => Err(AgentError::UnsafeDir {
                dir: self.dir.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Takes the directory's lock (`flock(2)` on the directory), waiting up to `wait` for
    /// another agent to finish.
    pub async fn lock(&self, wait: Duration) -> Result<DirLock> {
        let file = std::fs::File::open(&self.dir)
            .map_err(|e| AgentError::io(format!("cannot open {}", self.dir.display()), e))?;
        self.check_private(&file)?;
        let start = Instant::now();
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    if start.elapsed() >= wait {
                        return Err(AgentError::Locked {
                            dir: self.dir.clone(),
                            secs: wait.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(AgentError::io(
                        format!("cannot lock {}", self.dir.display()),
                        std::io::Error::from(e),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_directory_of_the_agents_user_is_safe() {
        let dir = Path::new("/var/lib/agent");
        assert_eq!(unsafe_dir_reason(dir, 0o40700, 1000, 1000), None);
        assert_eq!(unsafe_dir_reason(dir, 0o40755, 1000, 1000), None);
        let others = unsafe_dir_reason(dir, 0o40777, 1000, 1000).unwrap_or_default();
        assert!(
            others.starts_with("is writable by others (mode 0777)"),
            "{others}"
        );
        assert!(others.ends_with("`chmod 700 /var/lib/agent`"), "{others}");
        let group = unsafe_dir_reason(dir, 0o40770, 1000, 1000).unwrap_or_default();
        assert!(
            group.starts_with("is writable by group (mode 0770)"),
            "{group}"
        );
        let owner = unsafe_dir_reason(dir, 0o40700, 0, 1000).unwrap_or_default();
        assert_eq!(
            owner,
            "belongs to user 0, not to the user this agent runs as (1000): its owner can replace the device's key and certificate; run the agent as that user, or hand the directory over with `chown 1000 /var/lib/agent`"
        );
    }

    #[tokio::test]
    async fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        let held = sd.lock(Duration::ZERO).await.expect("first");
        let e = sd
            .lock(Duration::from_millis(150))
            .await
            .expect_err("second waits, then gives up");
        assert!(matches!(e, AgentError::Locked { .. }), "{e}");
        drop(held);
        sd.lock(Duration::ZERO).await.expect("free again");
    }
}
