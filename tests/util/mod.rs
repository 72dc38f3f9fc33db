//! Helpers: run the binary and real peers, in a temporary directory. This file holds the
//! core (the work directory, commands, background processes, polling); the rest is split by
//! concern and re-exported here, so that tests say `use crate::util::*`.

#![allow(dead_code)]

#[macro_use]
mod fleet;
mod gateway;
mod peers;
mod pki;

pub use fleet::*;
pub use gateway::*;
pub use peers::*;
pub use pki::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mtlsgate");

/// The binary under test: the one cargo built, or `MTLSGATE_TEST_BIN` (to show that a new
/// test fails against an older build: `MTLSGATE_TEST_BIN=/path/to/old/mtlsgate cargo
/// nextest run …`).
pub fn bin() -> String {
    std::env::var("MTLSGATE_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

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
        self.cmd(&bin(), args)
    }

    /// Runs any program in the work directory.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Run {
        let o = Command::new(prog)
            .args(args)
            .current_dir(self.root())
            .env_remove("MTLSGATE_CA_DIR")
            .env_remove("MTLSGATE_CA_PASSPHRASE_FILE")
            .env_remove("MTLSGATE_DATABASE")
            .env_remove("MTLSGATE_SERVER")
            .env_remove("MTLSGATE_CA_FILE")
            .env_remove("MTLSGATE_ADMIN_CERT")
            .env_remove("MTLSGATE_ADMIN_KEY")
            // Each test has its own operator profile (`mtlsgate login`), never the user's.
            .env(
                "MTLSGATE_PROFILE",
                self.root().join(".mtlsgate-profile.toml"),
            )
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

/// A background process (gateway, upstream, nginx) whose stderr is collected; killed on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    /// Spawns `prog args` in `dir`, stdout to `stdout_file`, stderr collected.
    pub fn spawn(dir: &Path, prog: &str, args: &[&str], stdout_file: &Path) -> Proc {
        use std::io::BufRead;
        let out = std::fs::File::create(stdout_file).expect("stdout file");
        let mut child = Command::new(prog)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {prog}: {e}"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits until stderr contains `needle`, returning the text after it up to the line end.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = self.stderr();
            if let Some(i) = s.find(needle) {
                let rest = &s[i + needle.len()..];
                return rest.lines().next().unwrap_or("").to_string();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("process exited ({st}) before printing {needle:?}:\n{s}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {needle:?}:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// Sends SIGTERM and waits for the exit code (at most 30 s).
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not stop:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn s(v: &[String]) -> Vec<&str> {
    v.iter().map(|x| x.as_str()).collect()
}

pub fn write_atomic(w: &Work, rel: &str, text: &str) {
    let tmp = w.path(&format!("{rel}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, w.path(rel)).expect("rename");
}

/// Polls `f` until it returns true (reloads are asynchronous), for at most 10 s.
#[track_caller]
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1 (for peers that cannot be told to use port 0).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// JSON text parsed (the test fails on anything else).
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
