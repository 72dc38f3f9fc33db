//! The gateway's inventory policy (`--inventory CA_DIR`, SQLite): only devices the
//! inventory says are active pass; a revocation reaches the gateway within its poll
//! interval and closes the device's kept-alive connection; tags narrow a route. (The
//! PostgreSQL flow with two gateways and the agent is in `tests/fleet/`.)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::util::*;

fn gate(w: &Work, up: &Upstream, extra: &[&str]) -> Gate {
    let mut a = vec!["--inventory", "ca", "--inventory-poll", "200ms"];
    a.extend_from_slice(extra);
    serve(w, up, &a)
}

#[test]
fn only_active_devices_pass_and_a_revocation_closes_a_kept_alive_connection() {
    let w = Work::new();
    pki(&w);
    let (id, _serial) = enroll_device(&w, "ca", None, "edge", &[]);
    let up = Upstream::start(&w);
    let g = gate(&w, &up, &[]);
    eventually("the inventory to be read", || {
        curl_as(&w, "edge.crt", "edge.key", &g.url("/")).0 == 200
    });
    // dev1 holds a certificate from this CA, but never enrolled: not in the inventory.
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("device dev1.d.example.local is not in the inventory"),
        "{body}"
    );

    // A kept-alive connection of the enrolled device, then its revocation.
    let script = format!(
        "import socket,ssl,sys,time\nctx=ssl.create_default_context(cafile='ca.crt')\nctx.load_cert_chain('edge.crt','edge.key')\ns=ctx.wrap_socket(socket.create_connection(('127.0.0.1',{})),server_hostname='localhost')\ns.sendall(b'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')\nd=b''\nwhile b'\\r\\n\\r\\n' not in d: d+=s.recv(65536)\nh,_,b=d.partition(b'\\r\\n\\r\\n')\nn=int([l for l in h.split(b'\\r\\n') if l.lower().startswith(b'content-length')][0].split(b':')[1])\nwhile len(b)<n: b+=s.recv(65536)\nprint(h.split(b' ')[1].decode(), flush=True)\nsys.stdin.readline()\nt=time.time()\ns.settimeout(15)\ntry:\n  r=s.recv(10)\nexcept socket.timeout:\n  r=b'?'\nexcept OSError:\n  r=b''\nprint('closed' if r==b'' else 'open %r' % r, flush=True)\n",
        g.port
    );
    let mut py = std::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(w.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = py.stdout.take().expect("stdout");
    let mut first = [0u8; 4];
    out.read_exact(&mut first).expect("first reply");
    assert_eq!(&first[..3], b"200");
    w.mg(&["devices", "revoke", &id, "--dir", "ca"]).ok();
    let t = Instant::now();
    py.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("verdict");
    assert_eq!(
        rest.trim(),
        "closed",
        "the kept-alive connection stayed open"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let _ = py.wait();
    let (code, body) = curl_as(&w, "edge.crt", "edge.key", &g.url("/"));
    assert!(code == 403 || code == 400, "{code}: {body}");
    assert!(body.contains("revoked"), "{body}");
    assert!(
        g.proc.stderr().contains("closing the connection: "),
        "{}",
        g.proc.stderr()
    );
}

#[test]
fn tags_narrow_a_route_and_the_metrics_show_the_inventory() {
    let w = Work::new();
    pki(&w);
    let (lab, _) = enroll_device(&w, "ca", None, "lab", &["--tag", "lab"]);
    let (_office, _) = enroll_device(&w, "ca", None, "office", &["--tag", "office"]);
    let up = Upstream::start(&w);
    let mut g = gate(
        &w,
        &up,
        &["--allow-tag", "lab", "--admin-listen", "127.0.0.1:0"],
    );
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    eventually("the lab device to pass", || {
        curl_as(&w, "lab.crt", "lab.key", &g.url("/")).0 == 200
    });
    let (code, body) = curl_as(&w, "office.crt", "office.key", &g.url("/"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("carries none of the tags lab"), "{body}");
    let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    assert!(m.contains("mtlsgate_inventory_up 1"), "{m}");
    assert!(m.contains("mtlsgate_inventory_devices 2"), "{m}");
    let (_, h) = curl(&w, &[&format!("http://{admin}/healthz")]);
    assert_eq!(h, "ok\n");
    // Untagged, the lab device is refused at its next request.
    w.mg(&["devices", "tag", &lab, "--remove", "lab", "--dir", "ca"])
        .ok();
    eventually("the lab device to be refused", || {
        curl_as(&w, "lab.crt", "lab.key", &g.url("/")).0 == 403
    });
}

#[test]
fn a_gateway_started_without_its_inventory_refuses_and_says_so() {
    let w = Work::new();
    pki(&w);
    let (_id, _) = enroll_device(&w, "ca", None, "edge", &[]);
    // Another CA's directory: the inventory does not belong to the CA the gateway trusts.
    w.mg(&["ca", "init", "--dir", "other"]).ok();
    let up = Upstream::start(&w);
    let mut g = serve(
        &w,
        &up,
        &["--inventory", "other", "--admin-listen", "127.0.0.1:0"],
    );
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    g.proc.wait_for("cannot read the device inventory");
    let (code, body) = curl_as(&w, "edge.crt", "edge.key", &g.url("/"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("has not been read yet"), "{body}");
    let (_, h) = curl(&w, &[&format!("http://{admin}/healthz")]);
    assert!(h.starts_with("ok, degraded: the device inventory"), "{h}");
    let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
    assert!(m.contains("mtlsgate_inventory_up 0"), "{m}");
}
