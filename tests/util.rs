//! Helpers: run the binary and real peers, in a temporary directory.

#![allow(dead_code)]

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
        let mut proc = Proc::spawn(w.root(), &bin(), args, &access_log);
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

// ---- gateway helpers ----

pub fn s(v: &[String]) -> Vec<&str> {
    v.iter().map(|x| x.as_str()).collect()
}

/// `mtlsgate serve` on an ephemeral port in front of `up`, with `extra` flags.
pub fn serve(w: &Work, up: &Upstream, extra: &[&str]) -> Gate {
    let url = up.url();
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "localhost.crt",
        "--key",
        "localhost.key",
        "--client-ca",
        "ca.crt",
        "--upstream",
        &url,
    ];
    a.extend_from_slice(extra);
    Gate::start(w, &a)
}

/// GET `path` as device `dev`, returning (status, body).
pub fn get_as(w: &Work, g: &Gate, dev: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let mut a = as_dev(dev);
    a.extend(extra.iter().map(|x| x.to_string()));
    a.push(g.url(path));
    curl(w, &s(&a))
}

/// Values of header `name` (case-insensitive) in the echo upstream's JSON body.
pub fn header_values(body: &str, name: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn header(body: &str, name: &str) -> String {
    let v = header_values(body, name);
    assert_eq!(
        v.len(),
        1,
        "expected one {name} header, got {v:?} in {body}"
    );
    v[0].clone()
}

pub fn openssl_field(w: &Work, cert: &str, flag: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", cert, "-noout", flag, "-nameopt", "RFC2253"],
        )
        .ok();
    let line = out.trim();
    line.split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| line.to_string())
}

pub fn write_atomic(w: &Work, rel: &str, text: &str) {
    let tmp = w.path(&format!("{rel}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, w.path(rel)).expect("rename");
}

/// A client certificate made and signed by openssl itself with the CA's intermediate key
/// (so that openssl, not mtlsgate, encodes the subject): writes NAME.key and NAME.crt
/// (leaf + intermediate).
pub fn openssl_client(w: &Work, name: &str, subj: &str, extra_req: &[&str]) {
    let (key, csr, leaf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}-leaf.crt"),
    );
    let mut req = vec![
        "req",
        "-new",
        "-utf8",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        subj,
    ];
    req.extend_from_slice(extra_req);
    w.cmd("openssl", &req).ok();
    w.write(
        "ext.cnf",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    );
    w.cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca/intermediate.crt",
            "-CAkey",
            "ca/intermediate.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            &leaf,
        ],
    )
    .ok();
    let chain = w.read(&leaf) + &w.read("ca/intermediate.crt");
    w.write(&format!("{name}.crt"), &chain);
}

/// Re-issues dev1 for 7.5 days: far from a day boundary, so whole days left are certain.
pub fn reissue_dev1_for_180h(w: &Work) {
    w.mg(&[
        "cert",
        "issue",
        "client",
        "dev1",
        "--device-id",
        "dev1",
        "--valid",
        "180h",
        "--force",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
}

/// A client certificate NAME from a second CA called `ca_name` (in `other/`), written to
/// `o/NAME.crt` and `o/NAME.key`.
pub fn foreign_client(w: &Work, ca_name: &str, name: &str) {
    w.mg(&["ca", "init", "--dir", "other", "--name", ca_name])
        .ok();
    std::fs::create_dir_all(w.path("o")).expect("mkdir");
    w.mg(&[
        "cert", "issue", "client", name, "--dir", "other", "--out", "o",
    ])
    .ok();
}

/// GET `url` presenting the certificate `crt` with key `key`.
pub fn curl_as(w: &Work, crt: &str, key: &str, url: &str) -> (u16, String) {
    curl(w, &["--cacert", "ca.crt", "--cert", crt, "--key", key, url])
}

/// The HTTP status of GET `url` as dev1, run in `root` (usable from other threads).
pub fn status_as_dev1(root: &std::path::Path, url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            url,
        ])
        .current_dir(root)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 fingerprint of a certificate file as `openssl x509 -fingerprint` prints it.
pub fn openssl_sha256(w: &Work, file: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", file, "-noout", "-fingerprint", "-sha256"],
        )
        .ok();
    out.trim()
        .split_once('=')
        .expect("fingerprint")
        .1
        .to_string()
}

/// `AA:BB:…` → `aabb…`.
pub fn hex_lower(fp: &str) -> String {
    fp.replace(':', "").to_ascii_lowercase()
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

pub fn s_client_resume(w: &Work, port: u16, dev: &str, sess: &str, reuse: bool) -> String {
    let flag = if reuse { "-sess_in" } else { "-sess_out" };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -cert {dev}.crt -key {dev}.key {flag} {sess} -ign_eof 2>&1"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn served_serial(w: &Work, port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca.crt -cert dev1.crt -key dev1.key </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .current_dir(w.root())
        .output()
        .expect("s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds and returns the path of the example appserver.
pub fn appserver() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "--example", "appserver"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example appserver");
    assert!(st.success());
    let exe = std::path::Path::new(BIN)
        .parent()
        .expect("target dir")
        .join("examples/appserver");
    assert!(exe.exists(), "{}", exe.display());
    exe
}

/// A free TCP port on 127.0.0.1 (for peers that cannot be told to use port 0).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A real nginx (Debian's), one worker, running `server_body` inside `server { listen …
/// ssl; … }` on a port of its own; stopped on drop.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
}

impl Nginx {
    /// `server_body` is written inside the server block after the `listen` line; paths in
    /// it should be absolute (`{root}` is replaced by the work directory).
    pub fn start(w: &Work, server_body: &str) -> Nginx {
        Self::start_with(w, server_body, "")
    }

    /// Like [`Nginx::start`], with `http_extra` inside the `http` block.
    pub fn start_with(w: &Work, server_body: &str, http_extra: &str) -> Nginx {
        Self::start_listening(w, "ssl", server_body, http_extra)
    }

    /// Like [`Nginx::start`], offering HTTP/2 by ALPN (`listen … ssl http2`).
    pub fn start_http2(w: &Work, server_body: &str) -> Nginx {
        Self::start_listening(w, "ssl http2", server_body, "")
    }

    fn start_listening(w: &Work, listen: &str, server_body: &str, http_extra: &str) -> Nginx {
        let port = free_port();
        let root = w.root().display().to_string();
        let body = server_body.replace("{root}", &root);
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {root}/nginx-{port}.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {root}/t1;\n  proxy_temp_path {root}/t2;\n  fastcgi_temp_path {root}/t3;\n  uwsgi_temp_path {root}/t4;\n  scgi_temp_path {root}/t5;\n  {http_extra}\n  server {{\n    listen 127.0.0.1:{port} {listen};\n    {body}\n  }}\n}}\n"
        );
        let conf_path = w.path(&format!("nginx-{port}.conf"));
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let proc = Proc::spawn(
            w.root(),
            nginx_bin(),
            &[
                "-e",
                "stderr",
                "-p",
                &root,
                "-c",
                &conf_path.display().to_string(),
            ],
            &w.path(&format!("nginx-{port}.out")),
        );
        let mut ng = Nginx { proc, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = ng.proc.child.try_wait() {
                panic!("nginx exited ({st}):\n{}", ng.proc.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start:\n{}",
                ng.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ng.port = port;
        ng
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    /// Stops nginx with SIGTERM, so that its master stops its workers too (SIGKILL, which
    /// `Proc` sends, would leave the workers running, holding the port).
    fn drop(&mut self) {
        let pid = self.proc.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Debian's nginx binary.
pub fn nginx_bin() -> &'static str {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run scripts/install-test-deps")
}

/// A test backend that prints its port first (tests/peers/tcpbackend.py MODE).
pub struct Backend {
    pub proc: Proc,
    pub port: u16,
}

impl Backend {
    /// `mode`: `echo`, `eof-reply` or `proxy` (see the script).
    pub fn start(w: &Work, mode: &str) -> Backend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/tcpbackend.py");
        let portfile = w.path(&format!("backend-{}.port", rand_suffix()));
        let proc = Proc::spawn(w.root(), "python3", &[script, mode], &portfile);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = std::fs::read_to_string(&portfile).unwrap_or_default();
            if let Some(port) = s.lines().next().and_then(|l| l.trim().parse().ok()) {
                return Backend { proc, port };
            }
            assert!(
                Instant::now() < deadline,
                "backend did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A real MQTT broker (Debian's mosquitto) on a port of its own, plain TCP on loopback.
pub struct Mosquitto {
    pub proc: Proc,
    pub port: u16,
}

impl Mosquitto {
    pub fn start(w: &Work) -> Mosquitto {
        let port = free_port();
        let conf = w.path(&format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("mosquitto.conf");
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: run scripts/install-test-deps");
        let proc = Proc::spawn(
            w.root(),
            bin,
            &["-c", &conf.display().to_string()],
            &w.path(&format!("mosquitto-{port}.out")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto { proc, port }
    }
}

impl Gate {
    /// Starts `mtlsgate ARGS` whose first tunnel listens on 127.0.0.1:0, and waits for its
    /// port.
    pub fn start_tunnel(w: &Work, args: &[&str]) -> Gate {
        let access_log = w.path(&format!("access-{}.log", rand_suffix()));
        let mut proc = Proc::spawn(w.root(), &bin(), args, &access_log);
        let rest = proc.wait_for("tunnel listening on 127.0.0.1:");
        let port = rest
            .split(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {rest:?}"));
        Gate {
            proc,
            port,
            access_log,
        }
    }
}

/// `openssl req` with a new P-256 key: writes `NAME.key` and `NAME.csr` (subject `subj`)
/// and returns the CSR (PEM).
pub fn openssl_csr(w: &Work, name: &str, subj: &str) -> Vec<u8> {
    w.cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subj,
        ],
    )
    .ok();
    std::fs::read(w.path(&format!("{name}.csr"))).expect("csr")
}

/// Enrolls a device through the authority library, as `mtlsgate ca serve` does, with a
/// token made by `mtlsgate token create` (`token_args`, e.g. `["--tag", "lab"]`): writes
/// `NAME.key` (made by openssl) and `NAME.crt` (leaf + intermediate); returns the device ID
/// and serial. `database` is a PostgreSQL URL, or `None` for the CA directory's SQLite.
pub fn enroll_device(
    w: &Work,
    ca_dir: &str,
    database: Option<&str>,
    name: &str,
    token_args: &[&str],
) -> (String, String) {
    let mut a = vec!["token", "create", "--dir", ca_dir];
    a.extend_from_slice(token_args);
    if let Some(db) = database {
        a.extend_from_slice(&["--database", db]);
    }
    let out = w.mg(&a).ok();
    let token = out.lines().last().expect("a token").trim().to_string();
    let csr = openssl_csr(w, name, "/CN=ignored");
    let dir = w.path(ca_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let issued = rt.block_on(async {
        let loc = database.map(|u| mtlsgate_authority::Location::Postgres(u.to_string()));
        let mut auth = mtlsgate_authority::Authority::open(&dir, loc.as_ref(), Default::default())
            .await
            .expect("open the authority");
        auth.load_keys(None).expect("keys");
        let r = auth
            .enroll(
                mtlsgate_authority::EnrollRequest {
                    csr,
                    token: Some(token),
                    agent_version: Some("test".into()),
                    hostname: None,
                    addr: Some("127.0.0.1".into()),
                },
                time::OffsetDateTime::now_utc(),
            )
            .await
            .expect("enrolled");
        auth.close().await;
        r
    });
    match issued {
        mtlsgate_authority::Enrolled::Issued(i) => {
            std::fs::write(w.path(&format!("{name}.crt")), &i.certificate).expect("crt");
            (i.device_id, i.serial)
        }
        mtlsgate_authority::Enrolled::Pending { .. } => panic!("a token enrolls at once"),
    }
}

// ---- fleet helpers: the CA server, the agent, PostgreSQL ----

/// Where a fleet test's CA keeps its inventory.
#[derive(Debug, Clone)]
pub enum Db {
    /// `ca/inventory.db`.
    Sqlite,
    /// A fresh database on `MTLSGATE_TEST_POSTGRES`.
    Postgres(String),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite
    }

    /// A fresh database `t_<random>` on the test server named by `MTLSGATE_TEST_POSTGRES`
    /// (`scripts/test` starts one; locally `scripts/postgres start DIR PORT`). Fails without
    /// it: a PostgreSQL test is never skipped.
    pub fn postgres() -> Db {
        Db::Postgres(mtlsgate_store::test_support::new_database_blocking())
    }

    /// The flags that name this inventory (`--database URL`, or none).
    pub fn flags(&self) -> Vec<String> {
        match self {
            Db::Sqlite => vec![],
            Db::Postgres(u) => vec!["--database".into(), u.clone()],
        }
    }
}

/// Runs a fleet flow `fn name(db: Db)` once on SQLite and once on PostgreSQL:
/// `both!(name, other)` makes `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(crate::util::Db::sqlite())
            }
            #[test]
            fn postgres() {
                super::$name(crate::util::Db::postgres())
            }
        }
    )*};
}

/// `ca init --dir ca --device-domain d.example.local` with the inventory `db`.
pub fn fleet_ca(w: &Work, db: &Db) {
    let mut a = vec![
        "ca",
        "init",
        "--dir",
        "ca",
        "--device-domain",
        "d.example.local",
    ];
    let f = db.flags();
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// `cert issue server localhost --dir ca --out .` on the inventory `db`: `localhost.crt`
/// and `localhost.key` for a gateway or a strict peer.
pub fn fleet_server_cert(w: &Work, db: &Db) {
    let mut a = vec![
        "cert",
        "issue",
        "server",
        "localhost",
        "--dir",
        "ca",
        "--out",
        ".",
    ];
    let f = db.flags();
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// A running `mtlsgate ca serve`, its port and its root's fingerprint.
pub struct CaServer {
    pub proc: Proc,
    pub port: u16,
    pub fingerprint: String,
}

impl CaServer {
    /// Starts `mtlsgate ca serve ARGS` (which should include `--listen 127.0.0.1:0`, or a
    /// port of its own) and waits until it listens.
    pub fn start(w: &Work, args: &[&str]) -> CaServer {
        let mut a = vec!["ca", "serve"];
        a.extend_from_slice(args);
        let out = w.path(&format!("ca-serve-{}.out", rand_suffix()));
        let mut proc = Proc::spawn(w.root(), &bin(), &a, &out);
        let rest = proc.wait_for("listening on 127.0.0.1:");
        let port = rest
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {rest:?}"));
        let fingerprint = proc
            .wait_for("root CA SHA-256 fingerprint: ")
            .trim()
            .to_string();
        CaServer {
            proc,
            port,
            fingerprint,
        }
    }

    /// `ca serve --dir ca --listen 127.0.0.1:0` on the inventory `db`, with `extra` flags.
    pub fn start_for(w: &Work, db: &Db, extra: &[&str]) -> CaServer {
        let mut a = vec!["--dir", "ca", "--listen", "127.0.0.1:0"];
        let f = db.flags();
        a.extend(s(&f));
        a.extend_from_slice(extra);
        Self::start(w, &a)
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Kills it with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let _ = self.proc.child.wait();
    }
}

/// `mtlsgate token create --server URL --dir ca EXTRA…`: the token (its last line).
pub fn server_token(w: &Work, srv: &CaServer, extra: &[&str]) -> String {
    let url = srv.url();
    let mut a = vec!["token", "create", "--server", &url, "--dir", "ca"];
    a.extend_from_slice(extra);
    let out = w.mg(&a).ok();
    out.lines().last().expect("token line").trim().to_string()
}

/// `mtlsgate agent enroll --server URL --token T --root-fingerprint FP --dir DIR`: the
/// device ID (from `agent whoami`).
pub fn agent_enroll(w: &Work, srv: &CaServer, token: &str, dir: &str) -> String {
    let url = srv.url();
    w.mg(&[
        "agent",
        "enroll",
        "--server",
        &url,
        "--token",
        token,
        "--root-fingerprint",
        &srv.fingerprint,
        "--dir",
        dir,
    ])
    .ok();
    w.mg(&["agent", "whoami", "--dir", dir])
        .ok()
        .trim()
        .to_string()
}

/// `mtlsgate ARGS… --server URL --dir ca` (a fleet command through the admin API).
pub fn fleet_cmd(w: &Work, srv: &CaServer, args: &[&str]) -> Run {
    let url = srv.url();
    let mut a = args.to_vec();
    a.extend_from_slice(&["--server", &url, "--dir", "ca"]);
    w.mg(&a)
}

/// The serial of the first certificate in a PEM file, as openssl prints it (upper hex).
pub fn pem_serial(w: &Work, file: &str) -> String {
    let out = w
        .cmd("openssl", &["x509", "-in", file, "-noout", "-serial"])
        .ok();
    out.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_string()
}

/// JSON text parsed (the test fails on anything else).
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A PostgreSQL server of the test's own (`scripts/postgres`) on a free port, for tests
/// that stop and start it; stopped on drop.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

const POSTGRES_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        // Under /tmp: the user postgres must reach it when the tests run as root.
        let dir = tempfile::Builder::new()
            .prefix("mtlsgate-own-pg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let pg = OwnPostgres {
            dir,
            port: free_port(),
        };
        pg.start_again();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new(POSTGRES_SCRIPT)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        self.script(&["stop", &self.dir.path().display().to_string()]);
    }

    /// Starts the same server (same data, same port) again.
    pub fn start_again(&self) {
        let port = self.port.to_string();
        self.script(&["start", &self.dir.path().display().to_string(), &port]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(POSTGRES_SCRIPT)
            .args(["stop", &self.dir.path().display().to_string()])
            .stdin(Stdio::null())
            .output();
    }
}

/// Runs tests/peers/enroll_burst.py: the bodies (JSON lines in `input`) are POSTed to
/// `URL/v1/enroll`, `threads` at a time, trusting `cafile`; answers are appended to
/// `output` as they arrive. Returns the running process.
pub fn enroll_burst(
    w: &Work,
    url: &str,
    cafile: &str,
    threads: usize,
    input: &str,
    output: &str,
) -> Proc {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/enroll_burst.py");
    let t = threads.to_string();
    Proc::spawn(
        w.root(),
        "python3",
        &[script, url, cafile, &t, input, output],
        &w.path(&format!("burst-{}.out", rand_suffix())),
    )
}

/// A device CSR (PEM) with a new P-256 key made here (its subject is ignored by the CA).
pub fn new_csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// `n` enrollment tokens made in one go through the authority library (as `token create`
/// would make them, without starting `n` processes), for the CA in `ca/` on `db`.
pub fn library_tokens(w: &Work, db: &Db, n: usize) -> Vec<String> {
    use mtlsgate_authority::{Authority, Location, Policy, TokenRequest};
    let dir = w.path("ca");
    let loc = match db {
        Db::Sqlite => None,
        Db::Postgres(u) => Some(Location::Postgres(u.clone())),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let auth = Authority::open(&dir, loc.as_ref(), Policy::default())
                .await
                .expect("open the CA");
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = auth
                    .create_token(
                        TokenRequest {
                            ttl: time::Duration::hours(1),
                            ..Default::default()
                        },
                        "test",
                        time::OffsetDateTime::now_utc(),
                    )
                    .await
                    .expect("token");
                out.push(t.token);
            }
            auth.close().await;
            out
        })
}

/// Writes one `POST /v1/enroll` body per token (a new key and CSR each) to `rel`.
pub fn enroll_bodies(w: &Work, tokens: &[String], rel: &str) {
    let mut text = String::new();
    for t in tokens {
        let body = serde_json::json!({"csr": new_csr(), "token": t, "agent_version": "burst"});
        text.push_str(&body.to_string());
        text.push('\n');
    }
    w.write(rel, &text);
}

/// The answers tests/peers/enroll_burst.py wrote so far.
pub fn burst_answers(w: &Work, rel: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.path(rel))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(json)
        .collect()
}

/// A kept-alive HTTP/1.1 connection over mTLS held by tests/peers/keepalive.py: one
/// `GET /` answered, then waiting for the server to close it.
pub struct KeptAlive {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl KeptAlive {
    /// Opens it to `127.0.0.1:port` with the client certificate `cert`/`key` (paths in the
    /// work directory), trusting `ca`; returns it with the status of the first answer.
    pub fn open(w: &Work, port: u16, ca: &str, cert: &str, key: &str) -> (KeptAlive, String) {
        Self::open_for(w, port, (ca, cert, key), 30)
    }

    /// [`KeptAlive::open`], waiting up to `wait` seconds for the server to close it.
    pub fn open_for(
        w: &Work,
        port: u16,
        (ca, cert, key): (&str, &str, &str),
        wait: u32,
    ) -> (KeptAlive, String) {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/keepalive.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), "--ca", ca, "--cert", cert])
            .args(["--key", key, "--wait", &wait.to_string()])
            .current_dir(w.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 keepalive.py");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut status = String::new();
        out.read_line(&mut status).expect("the first answer");
        (KeptAlive { child, out }, status.trim().to_string())
    }

    /// Waits (up to the time given when it was opened) for the server to close the
    /// connection: true when it did.
    pub fn closed(mut self) -> bool {
        use std::io::BufRead;
        let mut verdict = String::new();
        self.out.read_line(&mut verdict).expect("the verdict");
        let _ = self.child.wait();
        verdict.trim() == "closed"
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
