//! Heap allocations per proxied request, in steady state, on a kept-alive connection: the
//! gateway under a counting allocator (`mtlsgate-alloc-gate`), `mtlsgate-bench upstream`
//! behind it, curl in front (HTTP/1.1 and HTTP/2). Allocation counts do not depend on the
//! machine's speed or load, so the figure is held to a ceiling: a change that adds an
//! allocation to the request path fails here (raise the ceiling only knowingly).
//!
//! A run of `k` requests and one of `2k` (each on one new connection) differ by `k`
//! requests and nothing else: the difference over `k` is one request's cost.
//!
//! The same gateway also gives the heap an idle connection holds (after one request, once
//! it has been quiet for longer than the gateway waits before dropping hyper's state):
//! live bytes with `n` connections held open by `mtlsgate-bench idle`, less those before,
//! over `n`. Also a count, not a timing, so it is held to a ceiling too.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Ceilings, allocations per request: reached 14.0 (HTTP/1.1) and 19.0 (HTTP/2) in a debug
/// build, down from 24 and 27 (release) before the request path was reworked; a run can
/// differ by a fraction of one (allocations made now and then, not by every request).
/// HTTP/2 was 23.0 while the gateway's h2 (vendor/h2) gave its buffers back whenever a
/// connection waited (the write buffer after each flush, the read buffer and the bytes
/// first read into the stack after each wait); it gives them back only once the connection
/// has been quiet for 250 ms now, and a busy connection takes none per request.
const MAX_H1: f64 = 15.0;
const MAX_H2: f64 = 20.0;

/// Ceilings, heap bytes per idle connection (debug build, 200 connections): HTTP/1.1
/// reached 29,300–29,500 once a quiet connection lets go of hyper's state and the task no
/// longer holds the handshake's steps (58,700 before); HTTP/2 18,000–21,600 once it holds
/// no buffer while quiet and its HPACK tables stopped keeping read buffers alive
/// (39,600–57,400 before).
const MAX_IDLE_H1: i128 = 32_000;
const MAX_IDLE_H2: i128 = 26_000;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost and a client certificate, all P-256.
fn pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Allocations Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write");
    for (name, subject) in [
        ("server", "/CN=localhost"),
        ("client", "/O=Bench/CN=device-0001"),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Gate {
    _child: Kill,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    dir: PathBuf,
}

impl Gate {
    /// Allocations so far, and the bytes allocated and not yet freed.
    fn counts(&mut self) -> (u64, i128) {
        self.stdin.write_all(b"\n").expect("ask");
        self.stdin.flush().expect("ask");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("answer");
        let parsed = line
            .trim()
            .strip_prefix("allocations ")
            .and_then(|rest| rest.split_once(" live "))
            .and_then(|(n, live)| Some((n.parse().ok()?, live.parse().ok()?)));
        parsed.unwrap_or_else(|| panic!("unexpected answer {line:?}"))
    }

    fn allocations(&mut self) -> u64 {
        self.counts().0
    }

    /// Heap bytes per connection while `n` connections, one request made on each, are
    /// held open and quiet.
    fn idle_heap(&mut self, n: usize, h2: bool) -> i128 {
        let (_, before) = self.counts();
        let mut idle = Command::new(env!("CARGO_BIN_EXE_mtlsgate-bench"));
        idle.current_dir(&self.dir).arg("idle");
        if h2 {
            idle.arg("--h2");
        }
        let mut idle = idle
            .args(["--connect", &format!("127.0.0.1:{}", self.port)])
            .args(["--count", &n.to_string()])
            .args([
                "--ca",
                "ca.crt",
                "--cert",
                "client.crt",
                "--key",
                "client.key",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("mtlsgate-bench idle runs");
        let mut line = String::new();
        BufReader::new(idle.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("idle client answers");
        assert!(line.starts_with("open "), "idle client: {line:?}");
        // Longer than the gateway waits before letting go of a quiet connection's state.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (_, with) = self.counts();
        drop(idle.stdin.take());
        let _ = idle.wait();
        (with - before) / n as i128
    }

    /// Allocations the gateway made while curl sent `k` requests on one connection.
    fn run(&mut self, k: usize, h2: bool) -> u64 {
        let url = format!("https://localhost:{}/allocations", self.port);
        let before = self.allocations();
        let out = Command::new("curl")
            .current_dir(&self.dir)
            .args([
                "-sS",
                "--fail",
                "--cacert",
                "ca.crt",
                "--cert",
                "client.crt",
            ])
            .args(["--key", "client.key", "--resolve"])
            .arg(format!("localhost:{}:127.0.0.1", self.port))
            .arg(if h2 { "--http2" } else { "--http1.1" })
            .args(std::iter::repeat_n(&url, k))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body = String::from_utf8_lossy(&out.stdout);
        assert_eq!(body.matches("Access Granted!").count(), k, "{body}");
        self.allocations() - before
    }

    fn per_request(&mut self, h2: bool) -> f64 {
        let k = 100;
        self.run(10, h2);
        let one = self.run(k, h2);
        let two = self.run(2 * k, h2);
        (two as f64 - one as f64) / k as f64
    }
}

#[test]
fn a_proxied_request_allocates_no_more_than_it_did() {
    let dir = std::env::temp_dir().join(format!("mtlsgate-allocations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    pki(&dir);
    let up = free_port();
    let _upstream = Kill(
        Command::new(env!("CARGO_BIN_EXE_mtlsgate-bench"))
            .args(["upstream", "--listen", &format!("127.0.0.1:{up}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("upstream starts"),
    );
    std::fs::write(
        dir.join("gate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"server.crt\"\nkey = \"server.key\"\n\
             client_ca = [\"ca.crt\"]\naccess_log = \"off\"\n\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{up}\"\n"
        ),
    )
    .expect("write gate.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtlsgate-alloc-gate"))
        .arg("--config")
        .arg(dir.join("gate.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut gate = Gate {
        _child: Kill(child),
        stdin,
        stdout,
        port,
        dir: dir.clone(),
    };
    // The upstream may still be starting: the first run retries nothing, so wait for it.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", up)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let h1 = gate.per_request(false);
    let h2 = gate.per_request(true);
    println!("allocations per request: HTTP/1.1 {h1}, HTTP/2 {h2}");
    let idle_h1 = gate.idle_heap(200, false);
    let idle_h2 = gate.idle_heap(200, true);
    println!("heap per idle connection: HTTP/1.1 {idle_h1} B, HTTP/2 {idle_h2} B");
    assert!(
        h1 <= MAX_H1,
        "HTTP/1.1: {h1} allocations per request, ceiling {MAX_H1}"
    );
    assert!(
        h2 <= MAX_H2,
        "HTTP/2: {h2} allocations per request, ceiling {MAX_H2}"
    );
    assert!(
        idle_h1 <= MAX_IDLE_H1,
        "HTTP/1.1: {idle_h1} heap bytes per idle connection, ceiling {MAX_IDLE_H1}"
    );
    assert!(
        idle_h2 <= MAX_IDLE_H2,
        "HTTP/2: {idle_h2} heap bytes per idle connection, ceiling {MAX_IDLE_H2}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
