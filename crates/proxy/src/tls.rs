//! rustls plumbing for the listener: the client-certificate verifier that follows nginx's
//! `ssl_verify_client` modes, and the `ServerConfig` built from certificate files.
//!
//! By default the verifier accepts any chain during the handshake (the client still proves
//! it holds the key: rustls checks CertificateVerify), and the real verification runs once
//! per connection afterwards, so that a missing or bad certificate gets nginx's HTTP 400
//! page instead of a bare TLS alert, and so that resumed sessions — where rustls does not
//! call the verifier — are checked exactly like new ones. With `reject_at_handshake` the
//! verifier refuses bad chains in the handshake itself.

use std::path::Path;
use std::sync::Arc;

use mtlsgate_pki::pemfile;
use mtlsgate_pki::verify::{Failure, Purpose, Verifier};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::config::VerifyMode;
use crate::error::GateError;

/// Whether `optional_no_ca` forgives this failure (nginx forgives only an untrusted issuer).
pub fn forgiven_by_no_ca(f: &Failure) -> bool {
    matches!(
        f,
        Failure::UnknownIssuer { .. } | Failure::SelfSigned { .. }
    )
}

/// The listener's client-certificate verifier.
pub struct GateVerifier {
    verifier: Arc<Verifier>,
    mode: VerifyMode,
    reject_at_handshake: bool,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for GateVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateVerifier")
            .field("mode", &self.mode)
            .field("reject_at_handshake", &self.reject_at_handshake)
            .finish()
    }
}

impl GateVerifier {
    pub fn new(
        verifier: Arc<Verifier>,
        mode: VerifyMode,
        reject_at_handshake: bool,
        bundle: &[Vec<u8>],
    ) -> Self {
        let hints = bundle
            .iter()
            .filter_map(|der| mtlsgate_pki::certinfo::raw_subject(der))
            .map(DistinguishedName::from)
            .collect();
        GateVerifier {
            verifier,
            mode,
            reject_at_handshake,
            hints,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        }
    }
}

fn to_rustls_error(f: &Failure) -> rustls::Error {
    let e = match f {
        Failure::Expired { .. } => CertificateError::Expired,
        Failure::NotYetValid { .. } => CertificateError::NotValidYet,
        Failure::Revoked { .. } => CertificateError::Revoked,
        Failure::UnknownIssuer { .. } | Failure::SelfSigned { .. } => {
            CertificateError::UnknownIssuer
        }
        Failure::BadSignature { .. } => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(FailureError(
            other.to_string(),
        )))),
    };
    rustls::Error::InvalidCertificate(e)
}

#[derive(Debug)]
struct FailureError(String);
impl std::fmt::Display for FailureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FailureError {}

impl ClientCertVerifier for GateVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mode != VerifyMode::Off
    }

    fn client_auth_mandatory(&self) -> bool {
        self.reject_at_handshake && self.mode == VerifyMode::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.reject_at_handshake {
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        match self.verifier.verify(&chain, Purpose::Client, now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(f) if self.mode == VerifyMode::OptionalNoCa && forgiven_by_no_ca(&f) => {
                Ok(ClientCertVerified::assertion())
            }
            Err(f) => {
                tracing::info!(reason = %f, "client certificate refused in the handshake");
                Err(to_rustls_error(&f))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Session state shared across reloads, so a reload does not end resumption.
#[derive(Clone)]
pub struct Resumption {
    pub cache: Arc<dyn StoresServerSessions>,
    pub ticketer: Arc<dyn ProducesTickets>,
}

impl Resumption {
    pub fn new() -> Result<Self, GateError> {
        Ok(Resumption {
            cache: rustls::server::ServerSessionMemoryCache::new(64 * 1024),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| GateError::Tls(format!("cannot create a session ticketer: {e}")))?,
        })
    }
}

/// Reads a server certificate chain and its (unencrypted) key.
pub fn load_cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), GateError> {
    let chain: Vec<CertificateDer<'static>> = pemfile::read_certs(cert)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let blocks = pemfile::read_blocks(key)?;
    let kname = key.display().to_string();
    let block = blocks
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| GateError::Tls(format!("{kname} holds no private key")))?;
    let k = match block.label.as_str() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(block.der.into()),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(block.der.into()),
        "RSA PRIVATE KEY" if !block.legacy_encrypted => PrivateKeyDer::Pkcs1(block.der.into()),
        _ => {
            return Err(GateError::Tls(format!(
                "{kname} is an encrypted key; the gateway needs it unencrypted (0600): `openssl pkey -in {kname} -out plain.key`"
            )))
        }
    };
    Ok((chain, k))
}

/// Builds the listener's `ServerConfig`: TLS 1.3 and 1.2 (ECDHE + AEAD suites only),
/// ALPN h2 and http/1.1.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn ClientCertVerifier>,
    resumption: Option<&Resumption>,
    cert_name: &str,
) -> Result<ServerConfig, GateError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GateError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| GateError::Tls(format!("{cert_name}: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    match resumption {
        Some(r) => {
            cfg.session_storage = r.cache.clone();
            cfg.ticketer = r.ticketer.clone();
        }
        None => {
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
    }
    Ok(cfg)
}
