//! The server's own certificate. It is issued by this CA for the names the server is
//! reached by (`--dns`, `--ip`), recorded in the inventory like every certificate, kept in
//! memory only (its key is never written to disk), and presented as leaf + intermediate +
//! root — the root too, because an agent that bootstraps from the root's fingerprint must
//! find the root in the handshake. It is short-lived; at two thirds of its lifetime the
//! server issues the next one itself and swaps it into the TLS resolver, so new handshakes
//! get it without a restart (connections already open keep theirs).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use arc_swap::ArcSwap;
use mtlsgate_authority::{Authority, AuthorityError};
use mtlsgate_pki::ca::{CertKind, LeafRequest};
use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::key::KeyType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

/// Who issues the server's certificates, in the inventory's audit trail.
const ACTOR: &str = "ca serve";

/// The names and lifetime of the server's certificate.
#[derive(Debug, Clone)]
pub struct ServerNames {
    /// DNS names; the first is the certificate's CN.
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub lifetime: Duration,
}

/// What the server presents now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// When the server will replace it.
    pub renew_at: OffsetDateTime,
}

/// The rustls resolver: always the current certificate.
#[derive(Debug)]
pub(crate) struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server's certificate, its resolver and its renewal.
pub(crate) struct ServerCert {
    names: ServerNames,
    pub(crate) resolver: Arc<Resolver>,
    presented: ArcSwap<Presented>,
}

/// Issues (signs and records) a server certificate for `names`.
async fn issue(
    auth: &Authority,
    names: &ServerNames,
) -> Result<(CertifiedKey, Presented), AuthorityError> {
    let req = LeafRequest {
        kind: CertKind::Server,
        name: names
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into()),
        dns: names.dns.clone(),
        ips: names.ips.clone(),
        uris: vec![],
        device_id: None,
        validity: names.lifetime,
        key_type: KeyType::P256,
    };
    let issued_at = OffsetDateTime::now_utc();
    let (issued, key) = auth.issue(&req, ACTOR).await?;
    let ca = auth.ca();
    let chain = vec![
        CertificateDer::from(issued.der.clone()),
        CertificateDer::from(ca.intermediate_der.clone()),
        CertificateDer::from(ca.root_der.clone()),
    ];
    let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| {
        AuthorityError::Pki(mtlsgate_pki::PkiError::InvalidInput {
            what: "server key",
            value: "P-256".into(),
            reason: format!("it cannot sign TLS handshakes ({e})"),
        })
    })?;
    let presented = Presented {
        serial: issued.info.serial.clone(),
        not_after: issued.info.not_after,
        renew_at: issued_at + names.lifetime * 2 / 3,
    };
    Ok((CertifiedKey::new(chain, signing), presented))
}

impl ServerCert {
    /// Issues the first certificate.
    pub(crate) async fn new(auth: &Authority, names: ServerNames) -> Result<Self, AuthorityError> {
        let (key, presented) = issue(auth, &names).await?;
        Ok(ServerCert {
            names,
            resolver: Arc::new(Resolver {
                current: ArcSwap::from_pointee(key),
            }),
            presented: ArcSwap::from_pointee(presented),
        })
    }

    pub(crate) fn presented(&self) -> Presented {
        (**self.presented.load()).clone()
    }

    /// Renews the certificate at two thirds of its lifetime, until `stop` turns true. A
    /// failed issuance (the database away) is tried again soon, while the current
    /// certificate is still valid.
    pub(crate) async fn renew_forever(
        self: Arc<Self>,
        auth: Arc<Authority>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut retry = StdDuration::from_secs(1);
        loop {
            let now = OffsetDateTime::now_utc();
            let due = self.presented().renew_at;
            let wait = StdDuration::try_from(due - now).unwrap_or(StdDuration::ZERO);
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            match issue(&auth, &self.names).await {
                Ok((key, presented)) => {
                    tracing::info!(
                        "server certificate renewed: serial {}, valid until {}, next renewal at {}",
                        presented.serial,
                        human_time(presented.not_after),
                        human_time(presented.renew_at)
                    );
                    self.resolver.current.store(Arc::new(key));
                    self.presented.store(Arc::new(presented));
                    retry = StdDuration::from_secs(1);
                }
                Err(e) => {
                    let left = self.presented().not_after - OffsetDateTime::now_utc();
                    tracing::warn!(
                        "cannot renew the server certificate (it expires in {} s): {e}; trying again in {} s",
                        left.whole_seconds().max(0),
                        retry.as_secs()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    retry = (retry * 2).min(StdDuration::from_secs(60));
                }
            }
        }
    }
}
