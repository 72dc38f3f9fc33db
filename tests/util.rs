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

/// The test upstream (tests/peers/upstream.py): echoes requests as JSON, WebSocket echo on
/// `/ws`, `/slow?s=N`.
pub struct Upstream {
    pub proc: Proc,
    pub port: u16,
}

impl Upstream {
    pub fn start(w: &Work) -> Upstream {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/upstream.py");
        let portfile = w.path(&format!("upstream-{}.port", rand_suffix()));
        let proc = Proc::spawn(w.root(), "python3", &[script], &portfile);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let s = std::fs::read_to_string(&portfile).unwrap_or_default();
            if let Some(port) = s.lines().next().and_then(|l| l.trim().parse().ok()) {
                return Upstream { proc, port };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "upstream did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running `mtlsgate serve` (or quickstart) and the port it listens on.
pub struct Gate {
    pub proc: Proc,
    pub port: u16,
    pub access_log: PathBuf,
}

impl Gate {
    /// Starts `mtlsgate ARGS` (which should listen on 127.0.0.1:0) and waits for its port.
    pub fn start(w: &Work, args: &[&str]) -> Gate {
        let access_log = w.path(&format!("access-{}.log", rand_suffix()));
        let mut proc = Proc::spawn(w.root(), BIN, args, &access_log);
        let rest = proc.wait_for("listening on 127.0.0.1:");
        let port = rest
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {rest:?}"));
        Gate {
            proc,
            port,
            access_log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

/// Runs curl; returns (HTTP status, body). Status 0 means no HTTP response.
pub fn curl(w: &Work, args: &[&str]) -> (u16, String) {
    let mut a = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    a.extend_from_slice(args);
    let r = w.cmd("curl", &a);
    let out = r.stdout;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The standard test PKI: a CA with device domain d.example.local in `ca/`, a server
/// certificate for localhost, client certificates dev1 and dev2, all in the work root.
pub fn pki(w: &Work) {
    w.mg(&[
        "ca",
        "init",
        "--dir",
        "ca",
        "--device-domain",
        "d.example.local",
    ])
    .ok();
    w.mg(&[
        "cert",
        "issue",
        "server",
        "localhost",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    for d in ["dev1", "dev2"] {
        w.mg(&[
            "cert",
            "issue",
            "client",
            d,
            "--device-id",
            d,
            "--dir",
            "ca",
            "--out",
            ".",
        ])
        .ok();
    }
}

/// curl arguments presenting device `name`'s certificate.
pub fn as_dev(name: &str) -> Vec<String> {
    vec![
        "--cacert".into(),
        "ca.crt".into(),
        "--cert".into(),
        format!("{name}.crt"),
        "--key".into(),
        format!("{name}.key"),
    ]
}
