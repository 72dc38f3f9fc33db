//! What attacking the gateway found, each closed and tested here: log and page injection
//! through certificate subjects, Host header tricks, slow request heads over HTTP/1.1 and
//! HTTP/2, idle connections kept open by pings, plain HTTP on the TLS port, and HTTP/2
//! connections that stayed open after a refusal.

use crate::util::*;

fn gate_toml(w: &Work, up: &Upstream, server_extra: &str, timeouts: &str) -> Gate {
    w.write(
        "gate.toml",
        &format!(
            r#"[server]
listen = "127.0.0.1:0"
cert = "localhost.crt"
key = "localhost.key"
client_ca = "ca.crt"
{server_extra}

[timeouts]
{timeouts}

[[route]]
prefix = "/open/"
upstream = "{u}"

[[route]]
prefix = "/"
upstream = "{u}"
allow_device_ids = ["dev1.d.example.local"]
"#,
            u = up.url()
        ),
    );
    Gate::start(w, &["serve", "--config", "gate.toml"])
}

fn peer(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/").to_string() + name
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `tests/peers/h2client.py PORT ARGS…`, as JSON.
fn h2client(w: &Work, port: u16, args: &[&str]) -> serde_json::Value {
    let script = peer("h2client.py");
    let port = port.to_string();
    let mut a = vec![script.as_str(), port.as_str()];
    a.extend_from_slice(args);
    json(&w.cmd("python3", &a).ok())
}

/// `tests/peers/rawtls.py PORT ARGS…`, as JSON.
fn rawtls(w: &Work, port: u16, args: &[&str]) -> serde_json::Value {
    let script = peer("rawtls.py");
    let port = port.to_string();
    let mut a = vec![script.as_str(), port.as_str(), "--ca", "ca.crt"];
    a.extend_from_slice(args);
    json(&w.cmd("python3", &a).ok())
}

const DEV1: &[&str] = &["--ca", "ca.crt", "--cert", "dev1.crt", "--key", "dev1.key"];

/// A self-signed client certificate whose CN holds CR, LF, quotes and a terminal escape
/// sequence that together forge an access-log line.
fn evil_client(w: &Work) {
    let cn = "x\r\nT device=dev1 verify=\"SUCCESS\" \"GET \\/a\" status=200\u{1b}[2J";
    w.cmd(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-utf8",
            "-days",
            "2",
            "-keyout",
            "evil.key",
            "-out",
            "evil.crt",
            "-subj",
            &format!("/CN={cn}"),
        ],
    )
    .ok();
}

#[test]
fn a_certificate_subject_cannot_forge_log_lines_or_pages() {
    let w = Work::new();
    pki(&w);
    evil_client(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "verify_client = \"optional_no_ca\"", "");
    // optional_no_ca lets the unverified self-signed client through to the open route…
    let (code, _) = curl_as(&w, "evil.crt", "evil.key", &g.url("/open/x"));
    assert_eq!(code, 200);
    // …and refuses it on the listed one, naming the device in the page and the log.
    let (code, page) = curl_as(&w, "evil.crt", "evil.key", &g.url("/private"));
    assert_eq!(code, 403, "{page}");
    assert!(
        page.contains(r#"device x\x0D\x0AT device=dev1 verify=\x22SUCCESS\x22"#),
        "{page}"
    );
    assert!(!page.contains('\u{1b}') && !page.contains('\r'), "{page:?}");
    let log = g.access_log_lines(2);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "one line per request: {log:?}");
    for l in &lines {
        assert!(
            l.starts_with("20"),
            "a line not written by the gateway: {l:?}"
        );
        assert!(l.contains(r"device=x\x0D\x0AT device=dev1"), "{l:?}");
        assert!(!l.contains('\u{1b}'), "{l:?}");
    }
    let err = g.proc.stderr();
    let denied = err
        .lines()
        .find(|l| l.contains("denied: device"))
        .unwrap_or_else(|| panic!("no denied line: {err}"));
    assert!(denied.contains(r"x\x0D\x0AT"), "{denied}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn host_headers_must_be_exactly_one() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    let two = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nHost: evil.example\\r\\nConnection: close\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", two],
    );
    let resp = r["response"].as_str().unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("the request has 2 Host headers"), "{resp}");
    let none = "GET / HTTP/1.1\\r\\nConnection: close\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", none],
    );
    let resp = r["response"].as_str().unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("no Host header"), "{resp}");
    // HTTP/1.0 needs none (nginx agrees).
    let old = "GET / HTTP/1.0\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", old],
    );
    let resp = r["response"].as_str().unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    // HTTP/2: two host headers, or one naming another server than :authority.
    let mut a = vec!["request"];
    a.extend_from_slice(DEV1);
    let mut two = a.clone();
    two.extend_from_slice(&[
        "--authority",
        "-",
        "--header",
        "host: localhost",
        "--header",
        "host: evil.example",
    ]);
    let r = h2client(&w, g.port, &two);
    assert_eq!(r["status"], 400, "{r}");
    assert!(
        r["body"]
            .as_str()
            .unwrap_or_default()
            .contains("2 Host headers"),
        "{r}"
    );
    let mut other = a.clone();
    other.extend_from_slice(&["--header", "host: evil.example"]);
    let r = h2client(&w, g.port, &other);
    assert_eq!(r["status"], 400, "{r}");
    assert!(
        r["body"]
            .as_str()
            .unwrap_or_default()
            .contains("another server than the request's :authority"),
        "{r}"
    );
    let r = h2client(&w, g.port, &a);
    assert_eq!(r["status"], 200, "{r}");
}

#[test]
fn a_trickled_request_head_is_cut_off_at_header_read_over_http1_and_http2() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "header_read = \"2s\"\nidle = \"30s\"");
    let mut a = vec!["trickle", "--delay", "0.5"];
    a.extend_from_slice(DEV1);
    let r = h2client(&w, g.port, &a);
    let after = r["closed_after"].as_f64().unwrap_or(99.0);
    assert!(
        (1.5..6.0).contains(&after),
        "HTTP/2 head not cut off at 2 s: {r}"
    );
    assert!(r["sent"].as_u64() < r["total"].as_u64(), "{r}");
    let head = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nUser-Agent: slowslowslowslow\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[
            DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", head, "--delay", "0.5",
        ],
    );
    let after = r["closed_after"].as_f64().unwrap_or(99.0);
    assert!(
        (1.5..6.0).contains(&after),
        "HTTP/1.1 head not cut off at 2 s: {r}"
    );
    assert!(r["sent"].as_u64() < r["total"].as_u64(), "{r}");
}

#[test]
fn a_client_that_sends_no_request_is_closed_at_first_request_over_http1_and_http2() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(
        &w,
        &up,
        "",
        "first_request = \"2s\"\nheader_read = \"20s\"\nidle = \"30s\"",
    );
    // HTTP/1.1: handshake, then silence. Before first_request it was held for all of idle.
    let r = rawtls(
        &w,
        g.port,
        &[DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", ""],
    );
    let after = r["closed_after"].as_f64().unwrap_or(99.0);
    assert!(
        (1.5..6.0).contains(&after),
        "silent HTTP/1.1 connection not closed at 2 s: {r}"
    );
    assert_eq!(r["response"], "", "{r}");
    // HTTP/2: the preface, SETTINGS and pings, but no stream.
    let mut a = vec!["ping", "--delay", "0.3"];
    a.extend_from_slice(DEV1);
    let r = h2client(&w, g.port, &a);
    let after = r["closed_after"].as_f64().unwrap_or(99.0);
    assert!(
        (1.5..6.0).contains(&after),
        "HTTP/2 connection without a stream not closed at 2 s: {r}"
    );
    // A request sent within the deadline is served, and the connection then lives by idle.
    let g = gate_toml(
        &w,
        &up,
        "",
        "first_request = \"3s\"\nheader_read = \"20s\"\nidle = \"5s\"",
    );
    let head = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[
            DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", head, "--wait", "1",
        ],
    );
    let response = r["response"].as_str().unwrap_or_default();
    assert!(response.starts_with("HTTP/1.1 200"), "{r}");
    let after = r["closed_after"].as_f64().unwrap_or(0.0);
    assert!(
        (4.5..20.0).contains(&after),
        "a served connection was not kept until idle: {r}"
    );
    let r = h2client(
        &w,
        g.port,
        &[
            "request", "--ca", "ca.crt", "--cert", "dev1.crt", "--key", "dev1.key",
        ],
    );
    assert_eq!(r["status"], 200, "{r}");
}

#[test]
fn pings_do_not_keep_an_idle_http2_connection_open() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "header_read = \"20s\"\nidle = \"2s\"");
    let mut a = vec!["ping", "--delay", "0.3"];
    a.extend_from_slice(DEV1);
    let r = h2client(&w, g.port, &a);
    let after = r["closed_after"].as_f64().unwrap_or(99.0);
    assert!(
        (1.5..10.0).contains(&after),
        "idle HTTP/2 connection not closed at 2 s: {r}"
    );
    assert_eq!(r["goaway"], true, "closed without GOAWAY: {r}");
}

#[test]
fn a_kept_alive_http1_connection_waits_for_idle_not_header_read() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "header_read = \"1s\"\nidle = \"20s\"");
    // Two requests 2.5 s apart on one connection: the wait between them is idle time.
    let script = format!(
        "import socket,ssl,time\nctx=ssl.create_default_context(cafile='ca.crt')\nctx.load_cert_chain('dev1.crt','dev1.key')\ns=ctx.wrap_socket(socket.create_connection(('127.0.0.1',{})),server_hostname='localhost')\nreq=b'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n'\nout=[]\nfor i in range(2):\n  s.sendall(req)\n  d=b''\n  while b'\\r\\n\\r\\n' not in d:\n    c=s.recv(65536)\n    if not c: print(' '.join(out+['closed'])); raise SystemExit\n    d+=c\n  h,_,b=d.partition(b'\\r\\n\\r\\n')\n  n=int([l for l in h.split(b'\\r\\n') if l.lower().startswith(b'content-length')][0].split(b':')[1])\n  while len(b)<n: b+=s.recv(65536)\n  out.append(h.split(b' ')[1].decode())\n  time.sleep(2.5)\nprint(' '.join(out))\n",
        g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    assert_eq!(out.trim(), "200 200");
}

#[test]
fn a_quiet_http1_connection_lets_go_of_its_state_and_serves_what_comes_next() {
    // After 250 ms with nothing in flight the gateway drops hyper's state for the
    // connection (its buffers) and builds it again when the client's next bytes come: a
    // pipelined pair, a request trickled across more than that pause, and a WebSocket
    // upgrade all work after such a pause, on the same connection.
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "header_read = \"5s\"\nidle = \"20s\"");
    let script = format!(
        "import socket,ssl,time\nctx=ssl.create_default_context(cafile='ca.crt')\nctx.load_cert_chain('dev1.crt','dev1.key')\ns=ctx.wrap_socket(socket.create_connection(('127.0.0.1',{})),server_hostname='localhost')\nf=s.makefile('rb')\nreq=b'GET /p HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n'\ndef answer():\n  st=f.readline().split(b' ')[1].decode()\n  n=0\n  while True:\n    l=f.readline()\n    if l in (b'\\r\\n',b''): break\n    if l.lower().startswith(b'content-length:'): n=int(l.split(b':')[1])\n  f.read(n)\n  return st\nout=[]\ns.sendall(req); out.append(answer()); time.sleep(0.6)\ns.sendall(req+req); out.append(answer()); out.append(answer()); time.sleep(0.6)\nfor piece in (req[:5], req[5:20], req[20:]):\n  s.sendall(piece); time.sleep(0.4)\nout.append(answer())\nprint(' '.join(out))\n",
        g.port
    );
    let out = w.cmd("python3", &["-c", &script]).ok();
    assert_eq!(out.trim(), "200 200 200 200", "{out}");
    let ws = peer("wsclient.py");
    let port = g.port.to_string();
    let out = w
        .cmd(
            "python3",
            &[
                &ws,
                "--after",
                "0.6",
                "localhost",
                &port,
                "/ws",
                "ca.crt",
                "dev1.crt",
                "dev1.key",
            ],
        )
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 101 Switching Protocols",
            "echo: hello"
        ],
        "{out}"
    );
}

#[test]
fn a_kept_alive_connection_lives_as_long_as_idle_says() {
    // hyper closes a connection waiting for its next request head after 30 s unless told
    // otherwise; the gateway's own timers (header_read, idle) are the only ones that count.
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "header_read = \"5s\"\nidle = \"75s\"");
    let (held, status) = KeptAlive::open_for(&w, g.port, ("ca.crt", "dev1.crt", "dev1.key"), 35);
    assert_eq!(status, "200");
    assert!(
        !held.closed(),
        "the kept-alive connection was closed within 35 s of idling, under idle = 75s"
    );
}

#[test]
fn plain_http_on_the_tls_port_gets_nginx_answer() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/", g.port)]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("The plain HTTP request was sent to HTTPS port"),
        "{body}"
    );
}

#[test]
fn an_http2_client_without_a_certificate_gets_400_then_goaway() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    let r = h2client(&w, g.port, &["request", "--ca", "ca.crt"]);
    assert_eq!(r["status"], 400, "{r}");
    assert!(
        r["body"]
            .as_str()
            .unwrap_or_default()
            .contains("No required SSL certificate was sent"),
        "{r}"
    );
    assert_eq!(r["goaway"], true, "{r}");
    assert_eq!(r["closed"], true, "{r}");
}

#[test]
fn a_response_with_both_lengths_is_relayed_by_its_chunked_body() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    for extra in [&["--http1.1"][..], &["--http2"][..]] {
        let (code, body) = get_as(&w, &g, "dev1", "/both-lengths", extra);
        assert_eq!(
            (code, body.as_str()),
            (200, "chunked body wins"),
            "{extra:?}"
        );
    }
}

#[test]
fn a_101_to_a_request_that_asked_for_no_upgrade_is_502() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    let (code, body) = get_as(&w, &g, "dev1", "/switch", &[]);
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("switched protocols (101) on a request that asked for no upgrade"),
        "{body}"
    );
}

#[test]
fn an_upgraded_connection_closes_when_idle() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "idle = \"1s\"");
    let ws = peer("wsclient.py");
    let port = g.port.to_string();
    let out = w
        .cmd(
            "python3",
            &[
                &ws,
                "localhost",
                &port,
                "/ws",
                "ca.crt",
                "dev1.crt",
                "dev1.key",
                "15",
            ],
        )
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        ["HTTP/1.1 101 Switching Protocols", "echo: hello"],
        "{out}"
    );
    let secs: f64 = lines[2]
        .strip_prefix("closed after ")
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("the upgraded connection stayed open: {out}"));
    assert!(secs < 8.0, "{out}");
}

#[test]
fn a_half_written_allowlist_waits_and_an_emptied_one_applies_with_a_warning() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "dev1.d.example.local\n");
    let up = Upstream::start(&w);
    let mut g = serve(&w, &up, &["--allow-file", "whitelist.txt"]);
    // A writer that stopped mid-line: nothing of it is applied.
    w.write("whitelist.txt", "dev1.d.example.local\ndev2.d.exa");
    g.proc
        .wait_for("does not end with a newline, so it may still be being written");
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
    assert_eq!(get_as(&w, &g, "dev2", "/", &[]).0, 403);
    // The writer finishes: applied, and the log says how many entries.
    w.write(
        "whitelist.txt",
        "dev1.d.example.local\ndev2.d.example.local\n",
    );
    eventually("dev2 to be allowed", || {
        get_as(&w, &g, "dev2", "/", &[]).0 == 200
    });
    assert!(
        g.proc.stderr().contains("whitelist.txt: 2 entries"),
        "{}",
        g.proc.stderr()
    );
    // Emptied: everyone is refused, with a warning naming the file.
    w.write("whitelist.txt", "");
    g.proc
        .wait_for("whitelist.txt is empty: every client is refused");
    eventually("dev1 to be refused", || {
        get_as(&w, &g, "dev1", "/", &[]).0 == 403
    });
}

#[test]
fn a_malformed_chunked_request_body_is_the_clients_fault() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = gate_toml(&w, &up, "", "");
    let req = "POST / HTTP/1.1\\r\\nHost: localhost\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\nzz\\r\\nbroken\\r\\n0\\r\\n\\r\\n";
    let r = rawtls(
        &w,
        g.port,
        &[DEV1[2], DEV1[3], DEV1[4], DEV1[5], "--send", req],
    );
    let resp = r["response"].as_str().unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("the request body could not be read"),
        "{resp}"
    );
}

/// An HTTP/2 connection gives back its read and write buffers once it has waited for the
/// client for a moment (250 ms; the gateway's copy of h2, vendor/h2), and its header tables
/// keep copies of what they index: requests after a longer pause — one of them arriving a
/// byte at a time — and the headers both sides index along the way must come through
/// intact, on the same connection.
#[test]
fn an_http2_connection_that_waits_between_requests_answers_every_one_intact() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let mut g = gate_toml(&w, &up, "admin_listen = \"127.0.0.1:0\"", "idle = \"30s\"");
    let admin = g.proc.wait_for("admin listener on http://");
    let admin = admin.split_whitespace().next().expect("addr").to_string();
    let mut a = vec![
        "sequence",
        "--count",
        "6",
        "--delay",
        "0.6",
        "--header",
        "x-device-note: kept in the table",
    ];
    a.extend_from_slice(DEV1);
    let r = h2client(&w, g.port, &a);
    assert_eq!(r["closed"], false, "{r}");
    let answers = r["answers"].as_array().cloned().unwrap_or_default();
    assert_eq!(answers.len(), 6, "{r}");
    for (i, ans) in answers.iter().enumerate() {
        assert_eq!(ans["status"], 200, "request {i}: {r}");
        // A response header the gateway's encoder indexed on the first answer.
        assert_eq!(ans["type"], "application/json", "request {i}: {r}");
        let echo = json(ans["body"].as_str().unwrap_or_default());
        let headers: Vec<(String, String)> = echo["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap_or_default().to_ascii_lowercase(),
                            h[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let has = |n: &str, v: &str| headers.iter().any(|(k, x)| k == n && x == v);
        assert!(
            has("x-device-note", "kept in the table"),
            "request {i}: {echo}"
        );
        assert!(has("x-seq", &i.to_string()), "request {i}: {echo}");
        assert_eq!(echo["path"], format!("/?n={i}"), "request {i}: {echo}");
    }
    // The client left while its connection waited with no buffer: the end of the stream
    // is still seen, and the connection is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, m) = curl(&w, &[&format!("http://{admin}/metrics")]);
        if m.lines().any(|l| l == "mtlsgate_connections_active 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP/2 connection stayed open after its client left:\n{m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
