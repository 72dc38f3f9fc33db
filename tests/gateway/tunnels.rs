//! TCP tunnels: a real MQTT broker (mosquitto) behind `mtlsgate tunnel`, reached with
//! `mosquitto_pub`/`mosquitto_sub` presenting device certificates; refusals in the
//! handshake, logged with the device ID; a device removed from the allowlist losing its
//! open tunnel; the client side (plain TCP in, mTLS out) chained to the server side;
//! half-close, the PROXY protocol v2 header, the idle timeout and the connection limit.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::util::*;

/// A server-side tunnel in front of `target`, allowing what whitelist.txt lists.
fn server_tunnel(w: &Work, target: u16, extra: &[&str]) -> Gate {
    let t = format!("127.0.0.1:{target}");
    let mut a = vec![
        "tunnel",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "localhost.crt",
        "--key",
        "localhost.key",
        "--client-ca",
        "ca.crt",
        "--allow-file",
        "whitelist.txt",
        "--target",
        &t,
    ];
    a.extend_from_slice(extra);
    Gate::start_tunnel(w, &a)
}

fn mqtt(w: &Work, tool: &str, port: u16, dev: &str, args: &[&str]) -> Run {
    let p = port.to_string();
    let (crt, key) = (format!("{dev}.crt"), format!("{dev}.key"));
    let mut a = vec![
        "-h",
        "localhost",
        "-p",
        &p,
        "--cafile",
        "ca.crt",
        "--cert",
        &crt,
        "--key",
        &key,
    ];
    a.extend_from_slice(args);
    w.cmd(tool, &a)
}

#[test]
fn mqtt_through_a_tunnel_refusals_and_a_device_removed_while_connected() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let broker = Mosquitto::start(&w);
    let mut g = server_tunnel(&w, broker.port, &[]);
    // A subscriber as dev1, waiting for one message.
    let port = g.port.to_string();
    let mut sub = Proc::spawn(
        w.root(),
        "mosquitto_sub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            "-t",
            "fleet/t",
            "-C",
            "1",
            "-W",
            "20",
        ],
        &w.path("sub1.out"),
    );
    g.proc.wait_for("device=dev1.d.example.local");
    std::thread::sleep(Duration::from_millis(300));
    mqtt(
        &w,
        "mosquitto_pub",
        g.port,
        "dev1",
        &["-t", "fleet/t", "-m", "hello fleet"],
    )
    .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the subscriber got nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.read("sub1.out").trim(), "hello fleet");

    // dev2 is not listed: refused in the handshake, and the log names it.
    let r = mqtt(
        &w,
        "mosquitto_pub",
        g.port,
        "dev2",
        &["-t", "fleet/t", "-m", "x"],
    );
    assert_ne!(r.code, 0, "dev2 published");
    g.proc
        .wait_for("refused in the handshake: device dev2.d.example.local is not on the allowlist");

    // A connected subscriber loses its tunnel when it leaves the allowlist.
    let _sub2 = Proc::spawn(
        w.root(),
        "mosquitto_sub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            "ca.crt",
            "--cert",
            "dev1.crt",
            "--key",
            "dev1.key",
            "-t",
            "fleet/t",
            "-d",
        ],
        &w.path("sub2.out"),
    );
    eventually("the second subscriber's tunnel", || {
        g.proc.stderr().matches(": open to 127.0.0.1:").count() >= 3
    });
    std::thread::sleep(Duration::from_millis(300));
    write_atomic(&w, "whitelist.txt", "# nobody\n");
    g.proc.wait_for(
        "closed, the client is no longer let in: device dev1.d.example.local is not on the allowlist",
    );
}

#[test]
fn a_client_tunnel_carries_plain_tcp_to_a_server_tunnel_with_half_close() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let backend = Backend::start(&w, "eof-reply");
    let server = server_tunnel(&w, backend.port, &[]);
    let remote = format!("localhost:{}", server.port);
    let client = Gate::start_tunnel(
        &w,
        &[
            "tunnel",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &remote,
            "--upstream-ca",
            "ca.crt",
            "--upstream-cert",
            "dev1.crt",
            "--upstream-key",
            "dev1.key",
        ],
    );
    // Plain TCP in: send, half-close, and the backend's answer still comes back.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", client.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(&[7u8; 100_000]).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert_eq!(answer, "got 100000 bytes\n");
    // MQTT over both: mosquitto_pub speaks plain TCP to the device's tunnel.
    let broker = Mosquitto::start(&w);
    let server2 = server_tunnel(&w, broker.port, &[]);
    let remote2 = format!("localhost:{}", server2.port);
    let client2 = Gate::start_tunnel(
        &w,
        &[
            "tunnel",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &remote2,
            "--upstream-ca",
            "ca.crt",
            "--upstream-cert",
            "dev1.crt",
            "--upstream-key",
            "dev1.key",
        ],
    );
    let p = client2.port.to_string();
    w.cmd(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &p, "-t", "x", "-m", "plain in"],
    )
    .ok();
    let mut sp = server2.proc;
    sp.wait_for("open to 127.0.0.1:");
}

#[test]
fn the_backend_learns_the_client_and_device_from_a_proxy_v2_header() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let backend = Backend::start(&w, "proxy");
    let g = server_tunnel(&w, backend.port, &["--proxy-protocol"]);
    let script = format!(
        "import socket,ssl\nctx=ssl.create_default_context(cafile='ca.crt')\nctx.load_cert_chain('dev1.crt','dev1.key')\ns=ctx.wrap_socket(socket.create_connection(('127.0.0.1',{})),server_hostname='localhost')\nf=s.makefile('rb')\nprint(f.readline().decode().strip())\nprint(s.getsockname()[1])\n",
        g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    let mut lines = out.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).expect("JSON header");
    let client_port: u64 = lines.next().and_then(|l| l.parse().ok()).expect("port");
    assert_eq!(header["version_command"], 0x21, "{header}");
    assert_eq!(header["src"], "127.0.0.1");
    assert_eq!(header["src_port"], client_port);
    assert_eq!(header["ssl_cn"], "dev1.d.example.local");
    assert_eq!(header["ssl_version"], "TLSv1.3");
    assert_eq!(header["ssl_verify"], 0);
}

#[test]
fn idle_tunnels_close_and_the_connection_limit_holds() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let backend = Backend::start(&w, "echo");
    let g = server_tunnel(
        &w,
        backend.port,
        &["--idle-timeout", "1s", "--max-connections", "1"],
    );
    let script = format!(
        "import socket,ssl,time\nctx=ssl.create_default_context(cafile='ca.crt')\nctx.load_cert_chain('dev1.crt','dev1.key')\ndef conn():\n  return ctx.wrap_socket(socket.create_connection(('127.0.0.1',{p})),server_hostname='localhost')\na=conn()\na.sendall(b'ping')\nprint(a.recv(10).decode())\ntry:\n  b=conn(); b.sendall(b'x'); r=b.recv(10); print('second:', r.decode() or 'closed')\nexcept Exception as e:\n  print('second: refused')\nt=time.time()\nr=a.recv(10)\nprint('idle close after %.1f' % (time.time()-t), r)\n",
        p = g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ping", "{out}");
    assert!(
        lines[1] == "second: refused" || lines[1] == "second: closed",
        "the second connection got through: {out}"
    );
    let secs: f64 = lines[2]
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    assert!(secs < 5.0, "idle tunnel not closed: {out}");
}

/// The server side's TLS holds no buffers while idle (it runs on rustls' unbuffered API),
/// so this checks what that stream does itself: megabytes both ways at once arrive
/// intact, a key update from the client (and the one it asks of us) keeps the stream
/// going, and a refused client is told so by a TLS alert.
#[test]
fn the_server_sides_tls_stream_carries_bulk_data_key_updates_and_alerts() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let backend = Backend::start(&w, "echo");
    let g = server_tunnel(&w, backend.port, &[]);
    let script = format!(
        r#"
import hashlib, os, socket, ssl, subprocess, threading, time
ctx = ssl.create_default_context(cafile='ca.crt')
ctx.load_cert_chain('dev1.crt', 'dev1.key')
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {p})), server_hostname='localhost')
data = os.urandom(32 * 1024 * 1024)
sent = threading.Thread(target=s.sendall, args=(data,))
sent.start()
got = bytearray()
while len(got) < len(data):
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    got += chunk
sent.join()
print('bulk', len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest())
s.close()

def s_client(dev, lines):
    p = subprocess.Popen(['openssl', 's_client', '-connect', '127.0.0.1:{p}', '-servername', 'localhost',
                          '-CAfile', 'ca.crt', '-cert', dev + '.crt', '-key', dev + '.key'],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    for line in lines:
        # One write per line: s_client takes a line alone as its command (K: key update).
        try:
            p.stdin.write(line.encode() + b'\n')
            p.stdin.flush()
        except BrokenPipeError:
            break  # s_client has ended (refused)
        time.sleep(0.7)
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    return p.stdout.read().decode(errors='replace')

out = s_client('dev1', ['before-update', 'K', 'after-update'])
print('keyupdate', 'KEYUPDATE' in out, 'before-update' in out.split('KEYUPDATE')[0],
      'after-update' in out.split('KEYUPDATE')[-1])
out = s_client('dev2', ['hello'])
print('refused', 'alert access denied' in out)
"#,
        p = g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"bulk 33554432 True"), "{out}");
    assert_eq!(lines.get(1), Some(&"keyupdate True True True"), "{out}");
    assert_eq!(lines.get(2), Some(&"refused True"), "{out}");
}

/// A client that sends without ever reading what comes back (here its own echo) stalls
/// the tunnel's writes to it; nothing moves, so the tunnel closes after the idle timeout
/// instead of holding the connection, and a copy buffer, for ever.
#[test]
fn a_client_that_stops_reading_is_closed_after_the_idle_timeout() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let backend = Backend::start(&w, "echo");
    let g = server_tunnel(&w, backend.port, &["--idle-timeout", "1s"]);
    let script = format!(
        r#"
import socket, ssl, time
ctx = ssl.create_default_context(cafile='ca.crt')
ctx.load_cert_chain('dev1.crt', 'dev1.key')
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {p})), server_hostname='localhost')
s.settimeout(30)
chunk = b'x' * 65536
t = time.time()
try:
    while time.time() - t < 60:
        s.sendall(chunk)
    print('never closed')
except socket.timeout:
    print('stuck after %.1f' % (time.time() - t))
except (OSError, ssl.SSLError):
    print('closed after %.1f' % (time.time() - t))
"#,
        p = g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    let secs: f64 = out
        .trim()
        .strip_prefix("closed after ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the stalled tunnel was not closed: {out}"));
    assert!(secs < 20.0, "closed only after {secs} s");
}
