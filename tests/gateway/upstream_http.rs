//! What the upstream receives and what the client keeps: the Host an upstream gets (its own,
//! as nginx's `proxy_pass` sends `$proxy_host`, or the client's), never both `Host` and
//! `:authority` over HTTP/2; and a client connection that keeps its protocol and keep-alive
//! whatever the upstream speaks (an HTTP/1.0 upstream such as Python's `http.server`).

use crate::util::*;

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
