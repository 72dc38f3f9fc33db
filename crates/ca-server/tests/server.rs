//! The CA server in process, on an SQLite inventory: its own certificate (leaf +
//! intermediate + root, renewed at two thirds of its life without a restart, every one
//! recorded), HTTP/1.1 and HTTP/2, AES-128-GCM chosen over the client's order, and a clean stop. (The admin client, with the CLI, is tested
//! against this server in crates/cli/fleet/admin.rs.)

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtlsgate_authority::{Authority, Policy};
use mtlsgate_ca_server::{CaServer, ServerNames};
use mtlsgate_pki::ca::InitOptions;
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::key::KeyType;
use rustls::pki_types::{CertificateDer, ServerName};

struct Running {
    dir: tempfile::TempDir,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(server_cert_lifetime: time::Duration) -> (Running, mtlsgate_ca_server::Presented) {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca");
    let opts = InitOptions {
        name: "Srv".into(),
        key_type: KeyType::P256,
        device_domain: "d.example.local".into(),
        passphrase: None,
        root_validity: time::Duration::days(30),
        intermediate_validity: time::Duration::days(30),
    };
    Authority::init(&ca, &opts, None, time::Duration::days(30))
        .await
        .expect("init");
    let mut auth = Authority::open(&ca, None, Policy::default())
        .await
        .expect("open");
    auth.load_keys(None).expect("keys");
    let names = ServerNames {
        dns: vec!["localhost".into()],
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        lifetime: server_cert_lifetime,
    };
    let server = CaServer::bind(auth, "127.0.0.1:0".parse().expect("addr"), names)
        .await
        .expect("bind");
    let port = server.local_addr().expect("addr").port();
    let first = server.presented();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("run");
    });
    (
        Running {
            dir,
            port,
            stop: Some(tx),
            task,
        },
        first,
    )
}

fn ca_der(r: &Running, name: &str) -> Vec<u8> {
    mtlsgate_pki::pemfile::read_certs(&r.dir.path().join("ca").join(name)).expect("cert")[0].clone()
}

/// The chain the server presents, the ALPN protocol it chose from `alpn`, and the cipher
/// suite it chose from rustls' default list.
async fn handshake(
    r: &Running,
    alpn: &[&[u8]],
) -> (
    Vec<CertificateDer<'static>>,
    Option<Vec<u8>>,
    Option<rustls::CipherSuite>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der(r, "root.crt")))
        .expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let conn = tls.get_ref().1;
    (
        conn.peer_certificates().expect("certs").to_vec(),
        conn.alpn_protocol().map(|p| p.to_vec()),
        conn.negotiated_cipher_suite().map(|s| s.suite()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_is_renewed_in_place_and_presented_with_its_root() {
    let (mut r, first) = start(time::Duration::seconds(3)).await;
    let (chain, alpn, suite) = handshake(&r, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "HTTP/2 by ALPN");
    // The client lists AES-256-GCM first (as the agent and OpenSSL do); the server's
    // order decides.
    assert_eq!(
        rustls::crypto::aws_lc_rs::default_provider().cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert_eq!(chain.len(), 3, "leaf + intermediate + root");
    assert_eq!(chain[1].as_ref(), ca_der(&r, "intermediate.crt").as_slice());
    assert_eq!(chain[2].as_ref(), ca_der(&r, "root.crt").as_slice());
    let leaf = CertInfo::from_der(&chain[0]).expect("leaf");
    assert_eq!(leaf.serial, first.serial);
    let (_, alpn, _) = handshake(&r, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Renewed at two thirds of 3 s, by the running server.
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let (chain, _, _) = handshake(&r, &[b"http/1.1"]).await;
        let s = CertInfo::from_der(&chain[0]).expect("leaf").serial;
        if s != first.serial {
            break s;
        }
        assert!(Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every server certificate is in the inventory.
    let ca = r.dir.path().join("ca");
    let auth = Authority::open(&ca, None, Policy::default())
        .await
        .expect("open");
    let servers: Vec<String> = auth
        .certificates()
        .await
        .expect("list")
        .into_iter()
        .filter(|c| c.kind == "server")
        .map(|c| c.serial)
        .collect();
    auth.close().await;
    assert!(
        servers.contains(&first.serial) && servers.contains(&second),
        "{servers:?}"
    );

    let _ = r.stop.take().map(|s| s.send(()));
    tokio::time::timeout(Duration::from_secs(15), &mut r.task)
        .await
        .expect("stopped")
        .expect("joined");
}
