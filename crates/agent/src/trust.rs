//! How the agent trusts the server. Verification is never switched off: the server's chain
//! is checked by rustls-webpki, with the server name, against
//!
//! - the certificates of a CA file (`--ca-file`, and `ca.crt` after enrollment), or
//! - at enrollment with `--root-fingerprint`, the one certificate of the presented chain
//!   whose SHA-256 equals the pin ([`PinnedRootVerifier`]): the server must present its
//!   root (the contract says it presents leaf + intermediate + root), and the leaf must
//!   verify up to that root as the only trust anchor. The root seen is kept, so that
//!   enrollment writes it into `ca.crt`.
//!
//! Also here: the rustls client configurations (TLS 1.3 and 1.2, aws-lc-rs, ALPN
//! `http/1.1`) and TLS failures in words.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::Digest as _;

use crate::error::{AgentError, Result};

/// How `agent enroll` comes to trust the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The CA certificates in this file (PEM), as curl's `--cacert`.
    CaFile(PathBuf),
    /// The SHA-256 of the CA's root certificate.
    Fingerprint([u8; 32]),
}

impl Bootstrap {
    /// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed, any case.
    pub fn fingerprint(s: &str) -> Result<Self> {
        let clean: String = s.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| AgentError::BadFingerprint { value: s.into() })?;
        Ok(Bootstrap::Fingerprint(bytes))
    }
}

/// The crypto provider every TLS connection of the agent uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a [`PinnedRootVerifier`] refused the server. Travels inside rustls'
/// `CertificateError::Other` and is turned back into words by [`tls_failure`].
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("none of the {presented} certificates the server presented has the pinned SHA-256 fingerprint {pin}; the server did not send its root, or --root-fingerprint is not the fingerprint of this server's root CA")]
    NotInChain { pin: String, presented: usize },
    #[error("the server presented the pinned root, but its certificate was not issued under that root ({reason})")]
    NotUnderPin { reason: String },
}

/// Accepts the server only if its chain contains the certificate whose SHA-256 is the pin
/// and the leaf verifies (webpki, with the server name) up to that certificate.
#[derive(Debug)]
pub struct PinnedRootVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedRootVerifier {
    pub fn new(pin: [u8; 32]) -> Self {
        PinnedRootVerifier {
            pin,
            provider: provider(),
            seen: Mutex::new(None),
        }
    }

    /// The pinned root, once a handshake has found and verified it.
    pub fn pinned_root(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().ok().and_then(|g| g.clone())
    }

    fn other(e: PinError) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
    }
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| <[u8; 32]>::from(sha2::Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| {
                Self::other(PinError::NotInChain {
                    pin: hex::encode(self.pin),
                    presented: intermediates.len() + 1,
                })
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone()).map_err(|e| {
            Self::other(PinError::NotUnderPin {
                reason: format!(
                    "the pinned certificate cannot be a trust anchor: {}",
                    tls_failure(&e).0
                ),
            })
        })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => {
                if let Ok(mut g) = self.seen.lock() {
                    *g = Some(pinned.clone().into_owned());
                }
                Ok(v)
            }
            Err(
                e @ rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ),
            ) => Err(Self::other(PinError::NotUnderPin {
                reason: tls_failure(&e).0,
            })),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client identity: the certificate chain and its key (PKCS#8 DER).
pub(crate) struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// The root store of a CA file's certificates (`what` names the file in errors).
pub(crate) fn root_store(what: &str, certs: &[Vec<u8>]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(certs.iter().map(|c| CertificateDer::from(c.clone())));
    if added == 0 {
        return Err(AgentError::BadTrust {
            path: what.into(),
            reason: "it holds no certificate that can be a trust anchor".into(),
        });
    }
    Ok(roots)
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AgentError::BadTrust {
            path: "TLS".into(),
            reason: format!("no usable TLS version ({})", tls_failure(&e).0),
        })
}

fn finish(mut cfg: ClientConfig) -> Arc<ClientConfig> {
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A client configuration that verifies the server against `roots`, optionally
/// presenting a client certificate (mTLS).
pub(crate) fn config_with_roots(
    roots: RootCertStore,
    client: Option<ClientIdentity>,
) -> std::result::Result<Arc<ClientConfig>, (AgentError, bool)> {
    let b = builder()
        .map_err(|e| (e, false))?
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some(id) => b
            .with_client_auth_cert(
                id.chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(id.key_pkcs8.into()),
            )
            .map_err(|e| {
                (
                    AgentError::Key(format!(
                        "the device's key cannot be used for TLS ({})",
                        tls_failure(&e).0
                    )),
                    true,
                )
            })?,
    };
    Ok(finish(cfg))
}

/// A client configuration that verifies the server with a custom verifier (the pin).
pub(crate) fn config_with_verifier(v: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>> {
    let cfg = builder()?
        .dangerous()
        .with_custom_certificate_verifier(v)
        .with_no_client_auth();
    Ok(finish(cfg))
}

/// A TLS failure in words, and whether it means "the server's certificate was issued by a
/// CA this device does not trust" (which makes the agent refresh `ca.crt`).
pub fn tls_failure(e: &rustls::Error) -> (String, bool) {
    use rustls::AlertDescription as A;
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                "the server's certificate was not issued by a CA this device trusts (--ca-file, or ca.crt in the state directory); if the CA's root was replaced, add the new root to ca.crt, or enroll again with the new --root-fingerprint".into(),
                true,
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "the server's certificate has expired (or this device's clock is wrong)".into(),
                false,
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "the server's certificate is not valid yet (is this device's clock right?)".into(),
                false,
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                "the server's certificate is not valid for the host name in --server (it is not among its subject alternative names)".into(),
                false,
            ),
            CertificateError::Revoked => ("the server's certificate is revoked".into(), false),
            CertificateError::BadSignature => (
                "a signature in the server's certificate chain does not verify".into(),
                false,
            ),
            CertificateError::BadEncoding => (
                "the server sent a certificate that cannot be parsed".into(),
                false,
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
                "the server's certificate is not for TLS server authentication (serverAuth)".into(),
                false,
            ),
            CertificateError::Other(o) => match o.0.downcast_ref::<PinError>() {
                Some(p) => (p.to_string(), false),
                None => (o.0.to_string(), false),
            },
            _ => ("the server's certificate was refused".into(), false),
        },
        E::AlertReceived(a) => {
            let what = match a {
                A::BadCertificate => "bad certificate",
                A::CertificateExpired => "certificate expired",
                A::CertificateRevoked => "certificate revoked",
                A::CertificateUnknown => "certificate unknown",
                A::UnknownCA => "unknown CA",
                A::CertificateRequired => "certificate required",
                A::AccessDenied => "access denied",
                A::HandshakeFailure => "handshake failure",
                A::ProtocolVersion => "protocol version",
                A::NoApplicationProtocol => "no application protocol",
                _ => "",
            };
            let text = if what.is_empty() {
                format!("alert {}", u8::from(*a))
            } else {
                format!("alert: {what}")
            };
            (format!("the server ended the TLS handshake ({text})"), false)
        }
        E::NoCertificatesPresented => ("the server presented no certificate".into(), false),
        E::PeerIncompatible(_) => (
            "the server offers no TLS version or cipher suite this agent accepts (TLS 1.2 with ECDHE and AES-GCM or ChaCha20, or TLS 1.3)".into(),
            false,
        ),
        E::General(s) => (s.clone(), false),
        _ => ("the TLS handshake failed".into(), false),
    }
}

#[cfg(test)]
mod tests {
    //! The fingerprint verifier over a real rustls handshake on a local socket, with
    //! chains built by rcgen.
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        cert: rcgen::Certificate,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = match parent {
            None => p.self_signed(&key).expect("root"),
            Some(parent) => p.signed_by(&key, &parent.issuer).expect("intermediate"),
        };
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(under: &Ca) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        (p.signed_by(&key, &under.issuer).expect("leaf"), key)
    }

    fn sha(c: &rcgen::Certificate) -> [u8; 32] {
        sha2::Sha256::digest(c.der().as_ref()).into()
    }

    /// Serves one TLS connection presenting `chain`, answering "ok" to one byte.
    async fn server(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> u16 {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 1];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(b"ok").await;
                        let _ = tls.shutdown().await;
                    }
                }
            }
        });
        port
    }

    /// Connects with the pin; the pinned root seen, or the refusal in words.
    async fn connect(port: u16, pin: [u8; 32]) -> std::result::Result<Vec<u8>, String> {
        let v = Arc::new(PinnedRootVerifier::new(pin));
        let cfg = config_with_verifier(v.clone()).expect("config");
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        match tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
        {
            Ok(mut tls) => {
                tls.write_all(b"?").await.expect("write");
                let mut answer = Vec::new();
                let _ = tls.read_to_end(&mut answer).await;
                assert_eq!(answer, b"ok");
                Ok(v.pinned_root().expect("root kept").to_vec())
            }
            Err(e) => {
                let inner = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .expect("a rustls error");
                assert!(v.pinned_root().is_none());
                Err(tls_failure(inner).0)
            }
        }
    }

    fn chain(certs: &[&rcgen::Certificate]) -> Vec<CertificateDer<'static>> {
        certs.iter().map(|c| c.der().clone()).collect()
    }

    #[tokio::test]
    async fn right_pin_accepts_and_keeps_the_root() {
        let root = ca("Root A", None);
        let int = ca("Intermediate A", Some(&root));
        let (leaf, key) = leaf(&int);
        let port = server(chain(&[&leaf, &int.cert, &root.cert]), &key).await;
        let seen = connect(port, sha(&root.cert)).await.expect("accepted");
        assert_eq!(seen, root.cert.der().to_vec());
    }

    #[tokio::test]
    async fn wrong_pin_refuses() {
        let root = ca("Root A", None);
        let other = ca("Root B", None);
        let int = ca("Intermediate A", Some(&root));
        let (leaf, key) = leaf(&int);
        let port = server(chain(&[&leaf, &int.cert, &root.cert]), &key).await;
        let e = connect(port, sha(&other.cert)).await.expect_err("refused");
        assert!(
            e.starts_with("none of the 3 certificates the server presented has the pinned SHA-256 fingerprint "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn pin_not_in_the_presented_chain_refuses() {
        let root = ca("Root A", None);
        let int = ca("Intermediate A", Some(&root));
        let (leaf, key) = leaf(&int);
        // The server leaves its root out: the right pin cannot be found.
        let port = server(chain(&[&leaf, &int.cert]), &key).await;
        let e = connect(port, sha(&root.cert)).await.expect_err("refused");
        assert!(e.starts_with("none of the 2 certificates"), "{e}");
    }

    #[tokio::test]
    async fn leaf_not_issued_under_the_pinned_root_refuses() {
        let root = ca("Root A", None);
        let int = ca("Intermediate A", Some(&root));
        let (leaf, key) = leaf(&int);
        // The server appends a root it does not chain to; the pin names that root.
        let stranger = ca("Root B", None);
        let port = server(chain(&[&leaf, &int.cert, &stranger.cert]), &key).await;
        let e = connect(port, sha(&stranger.cert))
            .await
            .expect_err("refused");
        assert!(
            e.starts_with("the server presented the pinned root, but its certificate was not issued under that root"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_root_with_the_same_name_but_another_key_refuses() {
        let root = ca("Root A", None);
        let int = ca("Intermediate A", Some(&root));
        let (leaf, key) = leaf(&int);
        let impostor = ca("Root A", None);
        let port = server(chain(&[&leaf, &int.cert, &impostor.cert]), &key).await;
        let e = connect(port, sha(&impostor.cert))
            .await
            .expect_err("refused");
        assert!(
            e.starts_with("the server presented the pinned root, but"),
            "{e}"
        );
    }

    #[test]
    fn fingerprints_parse_with_colons_and_any_case() {
        let hex64 = "AB".repeat(32);
        let colons: String = hex64
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            Bootstrap::fingerprint(&hex64).expect("plain"),
            Bootstrap::Fingerprint([0xab; 32])
        );
        assert_eq!(
            Bootstrap::fingerprint(&colons.to_lowercase()).expect("colons"),
            Bootstrap::Fingerprint([0xab; 32])
        );
        let e = Bootstrap::fingerprint("abcd").expect_err("short");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }
}
