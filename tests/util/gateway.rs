//! The gateway under test and its clients: the echo upstream, `mtlsgate serve`, curl as a device, header readers, kept-alive connections.

use super::*;

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

    /// What the process printed on stdout so far. Access-log lines are buffered (for up to
    /// `access_log_flush`, 1 s by default): to read them, use [`Gate::access_log_with`] or
    /// [`Gate::access_log_lines`].
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// The access log once it contains `needle`, or as it is after 10 s (for the test's
    /// assertion to report).
    pub fn access_log_with(&self, needle: &str) -> String {
        self.access_log_until(|log| log.contains(needle))
    }

    /// The access log once it holds at least `n` lines, or as it is after 10 s.
    pub fn access_log_lines(&self, n: usize) -> String {
        self.access_log_until(|log| log.lines().count() >= n)
    }

    fn access_log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if done(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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
