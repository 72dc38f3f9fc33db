//! Real peers started for a test and stopped on drop: nginx, the TCP backend, mosquitto, a PostgreSQL of the test's own, the example appserver.

use super::*;

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
