//! Helpers: run the binary and real peers, in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_mtlsgate");

/// A scratch directory with helpers to run commands inside it.
pub struct Work {
    pub dir: tempfile::TempDir,
}

/// The result of a command, with its output as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

impl Work {
    pub fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `mtlsgate ARGS` in the work directory.
    pub fn mg(&self, args: &[&str]) -> Run {
        self.cmd(BIN, args)
    }

    /// Runs any program in the work directory.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Run {
        let o = Command::new(prog)
            .args(args)
            .current_dir(self.root())
            .env_remove("MTLSGATE_CA_DIR")
            .env_remove("MTLSGATE_CA_PASSPHRASE_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
        Run::from(o)
    }

    pub fn write(&self, rel: &str, data: &str) {
        std::fs::write(self.path(rel), data).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read")
    }

    /// A CA with a server certificate for localhost and a client for device dev1.
    pub fn with_ca(&self) -> &Self {
        self.mg(&["ca", "init", "--device-domain", "d.example.local"])
            .ok();
        self
    }

    /// Files in a directory (to check that nothing half-written is left behind).
    pub fn listing(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// File mode bits (Unix).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}
