//! A STAND-IN for `mtlsgate ca serve`, for the agent's own tests (fast, in process, and
//! able to misbehave on purpose). The end-to-end tests in tests/fleet/ run the agent
//! against `mtlsgate ca serve` itself.
//!
//! It speaks the contract's JSON (docs/device-lifecycle.md) — reading and writing the
//! contract's own types (`mtlsgate-contract`), as the real server does — for the endpoints
//! the agent uses — `POST /v1/enroll` (201 issued with a token, 202 pending without one),
//! `GET /v1/enroll/{id}` (202 / 200 / 403), `POST /v1/renew` (mTLS), `POST /v1/recover`
//! (the old key's signature is checked; 410 for an expired recovery token) and
//! `GET /v1/ca.pem` — over HTTPS (hyper + tokio-rustls) with a throw-away CA made by rcgen:
//! root → intermediate → server leaf for 127.0.0.1, presented as leaf + intermediate + root.
//! No rules beyond what the tests need: one process, one in-memory world.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mtlsgate_contract::wire::{EnrollBody, ErrorBody, Issued, Pending, RecoverBody, RenewBody};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::Digest as _;
use x509_parser::prelude::FromDer as _;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn pem(der: &[u8]) -> String {
    mtlsgate_pki::pemfile::to_pem("CERTIFICATE", der)
}

/// The stand-in's CA: root → intermediate, and the server's own certificate.
pub struct Ca {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate().expect("key");
        let root_params = ca_params(&format!("{name} Root CA"));
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().expect("key");
        let int_params = ca_params(&format!("{name} Intermediate CA"));
        let int = int_params
            .signed_by(&int_key, &root_issuer)
            .expect("intermediate");
        let intermediate = Issuer::new(int_params, int_key);
        let server_key = KeyPair::generate().expect("key");
        let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
        sp.distinguished_name = rcgen::DistinguishedName::new();
        sp.distinguished_name
            .push(DnType::CommonName, "ca.stand-in");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &intermediate).expect("server");
        Ca {
            root_der: root.der().to_vec(),
            intermediate_der: int.der().to_vec(),
            server_chain: vec![server.der().clone(), int.der().clone(), root.der().clone()],
            server_key: server_key.serialize_der(),
            intermediate,
        }
    }

    pub fn root_sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.root_der).into()
    }

    pub fn bundle_pem(&self) -> String {
        format!("{}{}", pem(&self.root_der), pem(&self.intermediate_der))
    }

    /// A client certificate for `device_id` over the CSR's key.
    fn issue(&self, csr_der: &[u8], device_id: &str, lifetime: i64) -> Result<String, String> {
        let csr = rcgen::CertificateSigningRequestParams::from_der(
            &rustls::pki_types::CertificateSigningRequestDer::from(csr_der.to_vec()),
        )
        .map_err(|e| format!("the CSR cannot be read: {e}"))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, device_id);
        p.subject_alt_names = vec![SanType::DnsName(
            device_id
                .try_into()
                .map_err(|_| "bad device ID".to_string())?,
        )];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let n = time::OffsetDateTime::now_utc();
        p.not_before = n;
        p.not_after = n + time::Duration::seconds(lifetime);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        let cert = p
            .signed_by(&csr.public_key, &self.intermediate)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(format!("{}{}", cert.pem(), pem(&self.intermediate_der)))
    }
}

fn rand_serial() -> [u8; 9] {
    let mut s: [u8; 9] = rand::random();
    s[0] = 0x01;
    s
}

/// A device as the stand-in knows it.
#[derive(Debug, Clone)]
pub struct Device {
    /// `pending`, `active`, `denied` or `revoked`.
    pub status: &'static str,
    pub poll_token: Option<String>,
    pending_csr: Option<Vec<u8>>,
    pub recovery_token: Option<String>,
    pub recovery_expired: bool,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    /// The verified client certificate's CN (mTLS), if any.
    pub client_cn: Option<String>,
    pub body: Value,
}

/// Everything the stand-in remembers; tests change it to approve, deny, revoke.
pub struct World {
    pub lifetime_secs: i64,
    pub tokens: HashMap<String, bool>,
    pub devices: HashMap<String, Device>,
    pub seen: Vec<Seen>,
    /// Extra CA certificates served by `GET /v1/ca.pem` (a root rollover).
    pub extra_ca: Vec<Vec<u8>>,
    next_id: u32,
}

impl World {
    pub fn set_status(&mut self, id: &str, status: &'static str) {
        if let Some(d) = self.devices.get_mut(id) {
            d.status = status;
        }
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

/// The stand-in server.
pub struct StandIn {
    pub ca: Arc<Ca>,
    pub world: Arc<Mutex<World>>,
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StandIn {
    /// Starts on a free loopback port with one valid enrollment token, `mtg_good`.
    pub async fn start() -> Self {
        let world = World {
            lifetime_secs: 3600,
            tokens: HashMap::from([("mtg_good".to_string(), false)]),
            devices: HashMap::new(),
            seen: Vec::new(),
            extra_ca: Vec::new(),
            next_id: 1,
        };
        let mut s = StandIn {
            ca: Arc::new(Ca::new("Stand-in")),
            world: Arc::new(Mutex::new(world)),
            port: 0,
            task: None,
        };
        s.listen(0).await;
        s
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("world")
    }

    /// Stops listening (the server is "away"); [`StandIn::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port, with the same CA and world.
    pub async fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.listen(port).await;
    }

    async fn listen(&mut self, port: u16) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.root_der.clone()))
            .expect("root");
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                self.ca.server_chain.clone(),
                PrivateKeyDer::Pkcs8(self.ca.server_key.clone().into()),
            )
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        self.port = listener.local_addr().expect("addr").port();
        let (ca, world) = (self.ca.clone(), self.world.clone());
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, ca, world) = (acceptor.clone(), ca.clone(), world.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| cn_of(c));
                    let svc = hyper::service::service_fn(move |req| {
                        let (ca, world, cn) = (ca.clone(), world.clone(), client_cn.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(&ca, &world, cn, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        }));
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cn_of(der: &[u8]) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = x
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

fn reply(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json"),
        )))
        .expect("response")
}

fn error(status: StatusCode, sentence: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &ErrorBody {
            error: sentence.into(),
        },
    )
}

/// The request body as the contract's `T`, or the 400 the server would answer.
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response<Full<Bytes>>> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not the JSON this endpoint takes: {e}"),
        )
    })
}

fn csr_der(csr: &str) -> Option<Vec<u8>> {
    let p = pem::parse(csr).ok()?;
    (p.tag() == "CERTIFICATE REQUEST").then(|| p.into_contents())
}

/// Issues a certificate to `id` and answers `Issued` (rotating the recovery token).
fn issued(
    ca: &Ca,
    w: &mut World,
    id: &str,
    csr: &[u8],
    status: StatusCode,
) -> Response<Full<Bytes>> {
    let lifetime = w.lifetime_secs;
    let chain = match ca.issue(csr, id, lifetime) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let n = w.next_id;
    w.next_id += 1;
    let token = format!("mtr_{n}_{id}");
    if let Some(d) = w.devices.get_mut(id) {
        d.recovery_token = Some(token.clone());
        d.recovery_expired = false;
    }
    reply(
        status,
        &Issued {
            device_id: id.to_string(),
            serial: String::new(),
            certificate: chain,
            ca_bundle: ca.bundle_pem(),
            not_after: now() + lifetime,
            recovery_token: token,
            recovery_expires: now() + lifetime + 30 * 86_400,
            tags: vec!["stand-in".into()],
        },
    )
}

async fn handle(
    ca: &Ca,
    world: &Mutex<World>,
    client_cn: Option<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let header = |n: http::header::HeaderName| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header(http::header::AUTHORIZATION);
    let content_type = header(http::header::CONTENT_TYPE);
    let user_agent = header(http::header::USER_AGENT);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // The raw JSON, as the tests read what the agent sent; each endpoint reads its body
    // as the contract's type.
    let raw: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut w = world.lock().expect("world");
    w.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        content_type,
        user_agent,
        client_cn: client_cn.clone(),
        body: raw,
    });
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/ca.pem") => {
            let mut text = ca.bundle_pem();
            for extra in &w.extra_ca {
                text.push_str(&pem(extra));
            }
            Response::builder()
                .header(http::header::CONTENT_TYPE, "application/x-pem-file")
                .body(Full::new(Bytes::from(text)))
                .expect("response")
        }
        ("POST", "/v1/enroll") => {
            let body: EnrollBody = match parse(&bytes) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(csr) = csr_der(&body.csr) else {
                return error(StatusCode::BAD_REQUEST, "the CSR is missing or unreadable");
            };
            let id = format!("dev-{}.d.stand-in.test", w.next_id);
            w.next_id += 1;
            match body.token.as_deref() {
                Some(t) => match w.tokens.get(t).copied() {
                    None => error(StatusCode::UNAUTHORIZED, "the token is unknown"),
                    Some(true) => error(
                        StatusCode::CONFLICT,
                        "the token was already used at 2026-01-01 00:00:00 UTC by dev-0.d.stand-in.test",
                    ),
                    Some(false) => {
                        w.tokens.insert(t.to_string(), true);
                        w.devices.insert(
                            id.clone(),
                            Device {
                                status: "active",
                                poll_token: None,
                                pending_csr: None,
                                recovery_token: None,
                                recovery_expired: false,
                            },
                        );
                        issued(ca, &mut w, &id, &csr, StatusCode::CREATED)
                    }
                },
                None => {
                    let poll = format!("mtp_poll_{id}");
                    w.devices.insert(
                        id.clone(),
                        Device {
                            status: "pending",
                            poll_token: Some(poll.clone()),
                            pending_csr: Some(csr),
                            recovery_token: None,
                            recovery_expired: false,
                        },
                    );
                    reply(
                        StatusCode::ACCEPTED,
                        &Pending {
                            device_id: id,
                            status: "pending".into(),
                            poll_token: Some(poll),
                            retry_after: Some(1),
                        },
                    )
                }
            }
        }
        ("GET", p) if p.starts_with("/v1/enroll/") => {
            let id = p.trim_start_matches("/v1/enroll/").to_string();
            let Some(d) = w.devices.get(&id).cloned() else {
                return error(StatusCode::NOT_FOUND, "no such device");
            };
            let want = d.poll_token.as_ref().map(|t| format!("Bearer {t}"));
            if want.is_none() || authorization != want {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "the poll token is not valid for this device",
                );
            }
            match d.status {
                "pending" => reply(
                    StatusCode::ACCEPTED,
                    &Pending {
                        device_id: id,
                        status: "pending".into(),
                        poll_token: None,
                        retry_after: Some(1),
                    },
                ),
                "denied" => error(
                    StatusCode::FORBIDDEN,
                    &format!("device {id} is denied: an operator refused its enrollment"),
                ),
                _ => {
                    let csr = d.pending_csr.clone().unwrap_or_default();
                    if let Some(dev) = w.devices.get_mut(&id) {
                        dev.poll_token = None;
                        dev.pending_csr = None;
                    }
                    issued(ca, &mut w, &id, &csr, StatusCode::OK)
                }
            }
        }
        ("POST", "/v1/renew") => {
            let Some(id) = client_cn else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "renewal needs the device's current certificate (mTLS)",
                );
            };
            let Some(d) = w.devices.get(&id) else {
                return error(StatusCode::NOT_FOUND, "no such device");
            };
            if d.status != "active" {
                return error(
                    StatusCode::FORBIDDEN,
                    &format!("the device is {}", d.status),
                );
            }
            let body: RenewBody = match parse(&bytes) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(csr) = csr_der(&body.csr) else {
                return error(StatusCode::BAD_REQUEST, "the CSR is missing or unreadable");
            };
            issued(ca, &mut w, &id, &csr, StatusCode::OK)
        }
        ("POST", "/v1/recover") => {
            let body: RecoverBody = match parse(&bytes) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let id = body.device_id.clone();
            let Some(d) = w.devices.get(&id).cloned() else {
                return error(StatusCode::NOT_FOUND, "no such device");
            };
            if d.recovery_token.as_deref() != Some(body.recovery_token.as_str()) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "the recovery token is not the device's current one",
                );
            }
            if d.recovery_expired {
                return error(
                    StatusCode::GONE,
                    "the recovery token expired at 2026-01-01 00:00:00 UTC",
                );
            }
            let Some(csr) = csr_der(&body.csr) else {
                return error(StatusCode::BAD_REQUEST, "the CSR is missing or unreadable");
            };
            // The proof: the expired certificate's key signed SHA-256 of the CSR's DER.
            let old = pem::parse(&body.certificate)
                .ok()
                .map(|p| p.into_contents());
            let Some(old) = old else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the expired certificate is missing",
                );
            };
            let Ok((_, x)) = x509_parser::certificate::X509Certificate::from_der(&old) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the expired certificate cannot be read",
                );
            };
            if cn_of(&old).as_deref() != Some(id.as_str()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the certificate is another device's",
                );
            }
            let sig = base64::engine::general_purpose::STANDARD
                .decode(&body.signature)
                .unwrap_or_default();
            let key = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                x.public_key().subject_public_key.data.to_vec(),
            );
            if key.verify(&sha2::Sha256::digest(&csr), &sig).is_err() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the signature does not verify with the expired certificate's key",
                );
            }
            if d.status != "active" {
                return error(
                    StatusCode::FORBIDDEN,
                    &format!("the device is {}", d.status),
                );
            }
            issued(ca, &mut w, &id, &csr, StatusCode::OK)
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}
