//! What the upstream receives and what the client keeps: the Host an upstream gets (its own,
//! as nginx's `proxy_pass` sends `$proxy_host`, or the client's), never both `Host` and
//! `:authority` over HTTP/2; and a client connection that keeps its protocol and keep-alive
//! whatever the upstream speaks (an HTTP/1.0 upstream such as Python's `http.server`).

use crate::util::*;

/// An HTTPS nginx that answers with the Host it received and the protocol it spoke.
const HOST_ECHO: &str = "ssl_certificate {root}/localhost.crt;\n    ssl_certificate_key {root}/localhost.key;\n    location / { default_type text/plain; return 200 \"$http_host|$server_protocol\\n\"; }";

/// `mtlsgate serve` as an egress listener (no --cert/--key) in front of `upstream`.
fn egress(w: &Work, upstream: &str, extra: &[&str]) -> Gate {
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--upstream-ca",
        "ca.crt",
    ];
    a.extend_from_slice(extra);
    Gate::start(w, &a)
}

#[test]
fn the_egress_listener_sends_the_upstreams_own_host_over_http1_and_http2() {
    let w = Work::new();
    pki(&w);
    for (api, spoken) in [
        (Nginx::start(&w, HOST_ECHO), "HTTP/1.1"),
        (Nginx::start_http2(&w, HOST_ECHO), "HTTP/2.0"),
    ] {
        let g = egress(&w, &format!("https://localhost:{}", api.port), &[]);
        let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/x", g.port)]);
        assert_eq!(code, 200, "{spoken}: {body}");
        assert_eq!(body, format!("localhost:{}|{spoken}\n", api.port));
    }
}

#[test]
fn host_header_client_keeps_the_clients_host_and_upstream_sends_the_upstreams() {
    let w = Work::new();
    pki(&w);
    // The egress listener told to keep the client's Host, in front of an upstream that
    // offers HTTP/2: the Host arrives alone, over HTTP/1.1 (as nginx's proxy_pass speaks).
    let api = Nginx::start_http2(&w, HOST_ECHO);
    let g = egress(
        &w,
        &format!("https://localhost:{}", api.port),
        &["--host-header", "client"],
    );
    let (code, body) = curl(&w, &[&format!("http://127.0.0.1:{}/x", g.port)]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, format!("127.0.0.1:{}|HTTP/1.1\n", g.port));
    // The mTLS gateway keeps the client's Host by default; told otherwise, it sends the
    // upstream's own.
    let up = Upstream::start(&w);
    let g = serve(&w, &up, &[]);
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&body, "host"), format!("localhost:{}", g.port));
    let g = serve(&w, &up, &["--host-header", "upstream"]);
    for http2 in [false, true] {
        let extra: &[&str] = if http2 { &["--http2"] } else { &[] };
        let (code, body) = get_as(&w, &g, "dev1", "/", extra);
        assert_eq!(code, 200, "{body}");
        assert_eq!(header(&body, "host"), format!("127.0.0.1:{}", up.port));
    }
    // A wrong value says which values there are.
    let r = w
        .mg(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up.url(),
            "--host-header",
            "mine",
        ])
        .fails();
    assert!(
        r.contains("--host-header: `mine` is not a Host to send; use client"),
        "{r}"
    );
}

/// Python's `http.server`, which answers HTTP/1.0 (as Flask's development server does),
/// serving the work directory.
fn http10_upstream(w: &Work) -> (Proc, u16) {
    let port = free_port();
    let proc = Proc::spawn(
        w.root(),
        "python3",
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ],
        &w.path(&format!("http-server-{port}.out")),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start: {}",
            proc.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (proc, port)
}

#[test]
fn an_http10_upstream_leaves_the_client_its_http11_and_its_kept_alive_connection() {
    let w = Work::new();
    pki(&w);
    w.write("hello.txt", "hello\n");
    let (_server, port) = http10_upstream(&w);
    let up = format!("http://127.0.0.1:{port}");
    let tls = Gate::start(
        &w,
        &[
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
            &up,
        ],
    );
    let plain = Gate::start(&w, &["serve", "--listen", "127.0.0.1:0", "--upstream", &up]);
    // Two requests in one curl: the second reuses the first one's connection (no new
    // connect) when the gateway kept it open.
    let mut cases = vec![(as_dev("dev1"), tls.url("/hello.txt"))];
    cases.push((
        Vec::new(),
        format!("http://127.0.0.1:{}/hello.txt", plain.port),
    ));
    for (mut args, url) in cases {
        args.extend(
            [
                "--http1.1",
                "-sS",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{num_connects};",
                &url,
                &url,
            ]
            .map(String::from),
        );
        let out = w.cmd("curl", &s(&args)).ok();
        assert_eq!(out, "1.1 1;1.1 0;", "{url}");
    }
    // An HTTP/1.0 client is still answered in HTTP/1.0.
    let url = format!("http://127.0.0.1:{}/hello.txt", plain.port);
    let out = w
        .cmd(
            "curl",
            &[
                "--http1.0",
                "-sS",
                "-w",
                "%{http_version} %{http_code}",
                &url,
            ],
        )
        .ok();
    assert_eq!(out, "hello\n1 200", "curl writes HTTP/1.0 as 1");
}
