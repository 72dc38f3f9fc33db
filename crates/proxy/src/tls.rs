//! rustls plumbing for the listener: the server certificate and key, the `ServerConfig`
//! (modern TLS only: 1.3 and 1.2 with ECDHE + AEAD suites), session
//! resumption state kept across reloads, and OpenSSL's names for what was negotiated.
//! Client verification rules live in [`crate::client_auth`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::ServerConfig;

use crate::error::GateError;

/// Session state shared across reloads, so a reload does not end resumption.
#[derive(Clone)]
pub(crate) struct Resumption {
    pub(crate) cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl Resumption {
    pub(crate) fn new() -> Result<Self, GateError> {
        Ok(Resumption {
            cache: rustls::server::ServerSessionMemoryCache::new(64 * 1024),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| GateError::Tickets(e.to_string()))?,
        })
    }
}

/// The server's certificate chain and key, loaded from files.
pub(crate) struct ServerCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Reads the server certificate chain and its key (decrypting it with the passphrase on
/// the first line of `passphrase_file`, as nginx's `ssl_password_file`). Version 1
/// certificates are presented as they are: the gateway serves them, it need not validate
/// them.
pub(crate) fn load_server_cert(
    cert: &Path,
    key: &Path,
    passphrase_file: Option<&Path>,
) -> Result<ServerCert, GateError> {
    let pass = match passphrase_file {
        Some(f) => Some(mtlsgate_pki::key::read_passphrase(f)?),
        None => None,
    };
    let id = mtlsgate_pki::server_identity::load_server_identity(
        cert,
        key,
        pass.as_deref().map(|p| p.as_slice()),
    )?;
    Ok(ServerCert {
        chain: id.chain.into_iter().map(CertificateDer::from).collect(),
        key: PrivateKeyDer::Pkcs8(id.key_pkcs8.to_vec().into()),
    })
}

/// Builds a listener's `ServerConfig` (`alpn`: h2 and http/1.1 for HTTP, none for a TCP
/// tunnel, whose clients may offer protocols of their own such as `mqtt`).
pub(crate) fn server_config(
    cert: ServerCert,
    cert_path: &Path,
    verifier: Arc<dyn ClientCertVerifier>,
    resumption: Option<&Resumption>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, GateError> {
    let bad = |reason: String| GateError::ServerCertificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&cert.key)
        .map_err(|e| bad(format!("its key cannot sign TLS handshakes ({e})")))?;
    // Built without rustls' own certificate parsing, which refuses version 1 certificates;
    // the key was matched to the certificate when it was loaded.
    let certified = rustls::sign::CertifiedKey::new(cert.chain, signing_key);
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(format!("no usable TLS version ({e})")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
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
    Ok(Arc::new(cfg))
}

/// OpenSSL's name for a cipher suite, as nginx's `$ssl_cipher` shows it.
pub(crate) fn cipher_name(s: rustls::SupportedCipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    }
}

/// nginx's `$ssl_protocol` for a version.
pub(crate) fn protocol_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    }
}
