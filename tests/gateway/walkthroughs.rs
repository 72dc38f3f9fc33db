//! Walkthroughs: the README's quickstart, and the nginx + appserver + whitelist.txt setup
//! (the whitelist.txt appserver walkthrough) with the example appserver.

use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn whitelist_walkthrough_with_the_example_appserver() {
    let w = Work::new();
    pki(&w);
    w.write("whitelist.txt", "# allowed devices\ndev1.d.example.local\n");
    // A client whose subject has an escaped comma, made by openssl and signed by the CA.
    openssl_csr(&w, "dev3", "/O=Acme, Inc./CN=dev3.d.example.local");
    w.mg(&[
        "cert", "sign", "dev3.csr", "--kind", "client", "--dir", "ca", "--out", "dev3.crt",
    ])
    .ok();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let exe = appserver();
    let listen = format!("127.0.0.1:{port}");
    let app_out = w.path("app.out");
    let _app = Proc::spawn(
        w.root(),
        exe.to_str().expect("utf8"),
        &["--listen", &listen, "--whitelist", "whitelist.txt"],
        &app_out,
    );
    eventually("the appserver", || {
        std::fs::read_to_string(&app_out)
            .unwrap_or_default()
            .contains("listening")
    });
    let g = Gate::start(
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
            &format!("http://{listen}"),
        ],
    );
    let (code, body) = get_as(&w, &g, "dev1", "/", &[]);
    assert_eq!((code, body.as_str()), (200, "Access Granted!\n"));
    let (code, body) = get_as(&w, &g, "dev2", "/", &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Access Denied: device dev2.d.example.local is not on the whitelist\n"
        )
    );
    let (code, body) = get_as(&w, &g, "dev3", "/", &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Access Denied: device dev3.d.example.local is not on the whitelist\n"
        )
    );
    w.write(
        "whitelist.txt",
        "dev1.d.example.local\ndev3.d.example.local\n",
    );
    assert_eq!(
        get_as(&w, &g, "dev3", "/", &[]),
        (200, "Access Granted!\n".to_string())
    );
    let url = g.url("/");
    let (code, body) = curl(&w, &["--cacert", "ca.crt", &url]);
    assert_eq!(code, 400);
    assert!(body.contains("No required SSL certificate was sent"));
}

#[test]
fn quickstart_runs_the_whole_system_and_stops_on_ctrl_c() {
    let w = Work::new();
    let mut g = Gate::start(
        &w,
        &[
            "quickstart",
            "--dir",
            "qs",
            "--listen",
            "127.0.0.1:0",
            "--ca-listen",
            "127.0.0.1:0",
        ],
    );
    let url = g.url("/");
    let (code, body) = curl(&w, &["--cacert", "qs/ca.crt", &url]);
    assert_eq!(code, 400);
    assert!(body.contains("No required SSL certificate was sent"));
    // dev1 was enrolled by the agent: its key was made in qs/dev1 (0600).
    assert_eq!(mode(&w.path("qs/dev1/client.key")), 0o600);
    let dev1 = [
        "--cacert",
        "qs/dev1/ca.crt",
        "--cert",
        "qs/dev1/client.crt",
        "--key",
        "qs/dev1/client.key",
        url.as_str(),
    ];
    let (code, body) = curl(&w, &dev1);
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Access Granted!\n"), "{body}");
    assert!(
        body.contains("SSL-Client: CN=dev1.d.example.local"),
        "{body}"
    );
    // dev2 holds a certificate from the same CA, but never enrolled.
    let (code, body) = curl(
        &w,
        &[
            "--cacert",
            "qs/ca.crt",
            "--cert",
            "qs/dev2.crt",
            "--key",
            "qs/dev2.key",
            &url,
        ],
    );
    assert_eq!(code, 403);
    assert!(
        body.contains("device dev2.d.example.local is not in the inventory"),
        "{body}"
    );
    let printed = g.access_log();
    assert!(
        printed.contains(
            "curl --cacert qs/dev1/ca.crt --cert qs/dev1/client.crt --key qs/dev1/client.key https://localhost:"
        ),
        "{printed}"
    );
    // The revoke command it prints, run as printed (the program's path aside).
    let revoke = printed
        .lines()
        .find(|l| l.contains(" devices revoke "))
        .unwrap_or_else(|| panic!("no revoke command in {printed}"));
    let args: Vec<&str> = revoke.split_whitespace().skip(1).collect();
    assert_eq!(
        args,
        [
            "devices",
            "revoke",
            "dev1.d.example.local",
            "--dir",
            "qs/ca"
        ]
    );
    w.mg(&args).ok();
    eventually("the gateway to refuse the revoked dev1", || {
        let (code, body) = curl(&w, &dev1);
        code == 403 && body.contains("device dev1.d.example.local is revoked")
    });
    g.proc.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = g.proc.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", g.proc.stderr());
    assert!(g.access_log().contains("Stopped."));
    // Run again in the same directory: it does not promise 200 for the revoked dev1.
    let g = Gate::start(
        &w,
        &[
            "quickstart",
            "--dir",
            "qs",
            "--listen",
            "127.0.0.1:0",
            "--ca-listen",
            "127.0.0.1:0",
        ],
    );
    let url = g.url("/");
    let dev1 = [
        "--cacert",
        "qs/dev1/ca.crt",
        "--cert",
        "qs/dev1/client.crt",
        "--key",
        "qs/dev1/client.key",
        url.as_str(),
    ];
    let (code, body) = curl(&w, &dev1);
    assert_eq!(code, 403, "{body}");
    let printed = g.access_log();
    assert!(!printed.contains("200 Access Granted!"), "{printed}");
    assert!(
        printed.contains(
            "# dev1 is revoked (on an earlier run): 403 device dev1.d.example.local is revoked"
        ),
        "{printed}"
    );
    assert!(!printed.contains(" devices revoke "), "{printed}");
}
