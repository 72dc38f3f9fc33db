//! Client authentication: the one owner of nginx's `ssl_verify_client` rules
//! (`require`, `optional`, `optional_no_ca`, `off`). [`ClientAuth::check`] turns a
//! presented chain (or none) into a [`Verdict`]; the handshake verifier
//! ([`HandshakeVerifier`], used with `reject_at_handshake`) and the per-connection check
//! after the handshake both call it, so the rules exist once.
//!
//! By default the handshake accepts any chain (the client still proves it holds the key:
//! rustls checks CertificateVerify) and the verdict is applied after the handshake, so a
//! missing or bad certificate gets nginx's HTTP 400 page instead of a bare TLS alert, and
//! resumed sessions — where rustls does not call the verifier — are checked like new ones.
//!
//! [`VerifyCache`] keeps verdicts by chain, so a client that reconnects (or holds many
//! connections) is parsed and verified once per snapshot generation.
//!
//! [`recheck`] is the one rule for a client already let in, applied to live connections
//! (HTTP connections, upgraded connections, TCP tunnels) when a new snapshot arrives and to
//! a tunnel right after its handshake (resumed sessions included).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mtlsgate_pki::verify::{Failure, Purpose, Verifier};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::VerifyMode;
use crate::identity::{ClientIdentity, VerifyOutcome};

/// What is wrong with a client's certificate, connection-wide (answered with 400, as
/// nginx answers with its 496 and 495 pages).
#[derive(Debug, Clone)]
pub(crate) enum CertProblem {
    NoCertificate,
    Invalid(Failure),
}

/// The result of checking one chain against one snapshot generation.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) generation: u64,
    /// What `$ssl_client_verify` says.
    pub(crate) outcome: VerifyOutcome,
    /// Set when the mode refuses the client.
    pub(crate) problem: Option<CertProblem>,
}

/// The verification rules of one snapshot: verifier, mode, and the CA names sent in the
/// CertificateRequest.
pub(crate) struct ClientAuth {
    verifier: Arc<Verifier>,
    mode: VerifyMode,
    reject_at_handshake: bool,
    generation: u64,
    hints: Vec<DistinguishedName>,
    /// Which server block's rules these are (their verdicts are cached apart).
    scope: usize,
}

impl ClientAuth {
    pub(crate) fn new(
        verifier: Arc<Verifier>,
        mode: VerifyMode,
        reject_at_handshake: bool,
        generation: u64,
        bundle: &[Vec<u8>],
    ) -> Self {
        // Each CA named once, however often the bundles repeat it.
        let mut subjects: Vec<Vec<u8>> = Vec::with_capacity(bundle.len());
        for s in bundle
            .iter()
            .filter_map(|der| mtlsgate_pki::certinfo::raw_subject(der))
        {
            if !subjects.contains(&s) {
                subjects.push(s);
            }
        }
        let hints = subjects.into_iter().map(DistinguishedName::from).collect();
        ClientAuth {
            verifier,
            mode,
            reject_at_handshake,
            generation,
            hints,
            scope: 0,
        }
    }

    /// These rules as server block number `scope`'s.
    pub(crate) fn scoped(mut self, scope: usize) -> Self {
        self.scope = scope;
        self
    }

    /// Whether `optional_no_ca` lets this failure through: as nginx, only an issuer it
    /// does not know (never an expired, revoked or otherwise broken certificate).
    fn forgives(&self, f: &Failure) -> bool {
        self.mode == VerifyMode::OptionalNoCa
            && matches!(
                f,
                Failure::UnknownIssuer { .. } | Failure::SelfSigned { .. }
            )
    }

    /// The rules, once: what a chain (empty when none was sent) means under this mode.
    pub(crate) fn check(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Verdict {
        let (outcome, problem) = if self.mode == VerifyMode::Off {
            (VerifyOutcome::None, None)
        } else if chain.is_empty() {
            let p = (self.mode == VerifyMode::Require).then_some(CertProblem::NoCertificate);
            (VerifyOutcome::None, p)
        } else {
            match self.verifier.verify(chain, Purpose::Client, now) {
                Ok(()) => (VerifyOutcome::Success, None),
                Err(f) => {
                    let p = (!self.forgives(&f)).then(|| CertProblem::Invalid(f.clone()));
                    (VerifyOutcome::Failed(f), p)
                }
            }
        };
        Verdict {
            generation: self.generation,
            outcome,
            problem,
        }
    }
}

/// A presented chain and what it says, shared by every connection presenting it.
pub(crate) struct Peer {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) identity: Option<Arc<ClientIdentity>>,
    /// Unix time of the chain's first expiry: a cached success is not trusted past it.
    valid_until: i64,
}

impl Peer {
    pub(crate) fn new(chain: &[CertificateDer<'_>]) -> Peer {
        let chain: Vec<CertificateDer<'static>> =
            chain.iter().map(|d| d.clone().into_owned()).collect();
        let identity = chain
            .first()
            .and_then(|leaf| ClientIdentity::new(leaf))
            .map(Arc::new);
        let valid_until = mtlsgate_pki::certinfo::chain_not_after(&chain)
            .map(|t| t.unix_timestamp())
            .unwrap_or(i64::MAX);
        Peer {
            chain,
            identity,
            valid_until,
        }
    }

    pub(crate) fn none() -> Peer {
        Peer {
            chain: Vec::new(),
            identity: None,
            valid_until: i64::MAX,
        }
    }

    /// Whether a verdict reached earlier still holds at `now` under `auth`.
    pub(crate) fn still_holds(&self, v: &Verdict, auth: &ClientAuth, now: i64) -> bool {
        v.generation == auth.generation
            && !(matches!(v.outcome, VerifyOutcome::Success) && now >= self.valid_until)
    }
}

/// What a live connection's client was let in to.
pub(crate) enum Admitted<'a> {
    /// An HTTP connection: each request is authenticated and authorized on its own route,
    /// so only what ends the whole connection counts here (a client without a certificate
    /// gets its 400 page from the next request instead).
    Connection,
    /// One route or tunnel for the connection's life (an upgraded connection, a TCP
    /// tunnel): its name (route prefix or tunnel label) and policy, or `None` when no
    /// route of the new snapshot serves it any more.
    Bound(Option<(&'a str, &'a crate::policy::Policy)>),
}

/// Why a client let in earlier no longer has access.
#[derive(Debug)]
pub(crate) enum Lost {
    /// Its certificate does not verify under the current rules (revoked, expired, CA gone).
    Certificate(Failure),
    /// The current rules require a certificate and it presented none.
    NoCertificate,
    /// The inventory closes the device's connections (certificate revoked, device not active).
    Inventory(crate::inventory::InventoryDenial),
    /// The route it is bound to is gone.
    NoRoute,
    /// The policy of the route or tunnel it is bound to refuses it now.
    Denied(crate::policy::Denial),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Certificate(e) => {
                f.write_str(&mtlsgate_pki::printable::printable(&e.to_string()))
            }
            Lost::NoCertificate => f.write_str("no client certificate"),
            Lost::Inventory(d) => write!(f, "{d}"),
            Lost::NoRoute => f.write_str("no route serves its path any more"),
            Lost::Denied(d) => write!(f, "{d}"),
        }
    }
}

/// Whether a client let in earlier still has access: its `verdict` under the current
/// snapshot, then the inventory (which closes the connections of a revoked certificate or
/// a device no longer active), then, for a connection bound to one route or tunnel, that
/// route's or tunnel's policy.
pub(crate) fn recheck(
    verdict: &Verdict,
    identity: Option<&ClientIdentity>,
    inventory: Option<&crate::inventory::InventoryState>,
    admitted: Admitted<'_>,
) -> Result<(), Lost> {
    match &verdict.problem {
        Some(CertProblem::Invalid(f)) => return Err(Lost::Certificate(f.clone())),
        Some(CertProblem::NoCertificate) if matches!(admitted, Admitted::Bound(_)) => {
            return Err(Lost::NoCertificate)
        }
        _ => {}
    }
    if let (Some(inv), Some(id)) = (inventory, identity) {
        if let Some(d) = inv.view().closes(id.device_id(), &id.info.serial) {
            return Err(Lost::Inventory(d));
        }
    }
    match admitted {
        Admitted::Connection => Ok(()),
        Admitted::Bound(None) => Err(Lost::NoRoute),
        Admitted::Bound(Some((name, policy))) => policy
            .authorize(name, identity, verdict.outcome.is_success(), inventory)
            .map_err(Lost::Denied),
    }
}

const VERIFY_CACHE_MAX: usize = 16 * 1024;

type Cached = (Arc<Peer>, Arc<Verdict>);

/// Verdicts by the SHA-256 of the chain, reused only for the generation they were reached
/// in and before the chain's first expiry.
pub(crate) struct VerifyCache {
    map: Mutex<HashMap<[u8; 32], Cached>>,
}

impl Default for VerifyCache {
    fn default() -> Self {
        VerifyCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

fn chain_key(scope: usize, chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((scope as u64).to_be_bytes());
    for c in chain {
        h.update((c.len() as u32).to_be_bytes());
        h.update(c.as_ref());
    }
    h.finalize().into()
}

impl VerifyCache {
    /// The peer and its verdict under `auth`, from the cache (when `use_cache`) or
    /// computed. The flag says whether it was computed now.
    pub(crate) fn lookup(
        &self,
        auth: &ClientAuth,
        chain: &[CertificateDer<'_>],
        use_cache: bool,
    ) -> (Arc<Peer>, Arc<Verdict>, bool) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if !use_cache {
            let peer = Arc::new(Peer::new(chain));
            let v = Arc::new(auth.check(&peer.chain, UnixTime::now()));
            return (peer, v, true);
        }
        let key = chain_key(auth.scope, chain);
        let cached = self.map.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((peer, v)) = cached {
            if peer.still_holds(&v, auth, now) {
                return (peer, v, false);
            }
        }
        let peer = Arc::new(Peer::new(chain));
        let v = Arc::new(auth.check(&peer.chain, UnixTime::now()));
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= VERIFY_CACHE_MAX {
                m.clear();
            }
            m.insert(key, (peer.clone(), v.clone()));
        }
        (peer, v, true)
    }
}

/// The rustls verifier of the listener: accepts any chain unless `reject_at_handshake`,
/// then applies [`ClientAuth::check`] in the handshake.
pub(crate) struct HandshakeVerifier {
    auth: Arc<ClientAuth>,
    /// A TCP tunnel decides in the handshake, since no HTTP reply can say why later: its
    /// policy (and the listener's name for the log) is checked here too.
    policy: Option<(
        Arc<crate::policy::Policy>,
        String,
        Option<Arc<crate::inventory::InventoryState>>,
    )>,
    algs: WebPkiSupportedAlgorithms,
}

impl HandshakeVerifier {
    pub(crate) fn new(auth: Arc<ClientAuth>) -> Self {
        HandshakeVerifier {
            auth,
            policy: None,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        }
    }

    /// A verifier that also applies `policy` to a verified client, in the handshake (with
    /// `reject_at_handshake`), naming `listener` when it logs a refusal.
    pub(crate) fn with_policy(
        auth: Arc<ClientAuth>,
        policy: Arc<crate::policy::Policy>,
        listener: String,
        inventory: Option<Arc<crate::inventory::InventoryState>>,
    ) -> Self {
        HandshakeVerifier {
            policy: Some((policy, listener, inventory)),
            ..Self::new(auth)
        }
    }
}

impl std::fmt::Debug for HandshakeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeVerifier")
            .field("mode", &self.auth.mode)
            .field("reject_at_handshake", &self.auth.reject_at_handshake)
            .finish()
    }
}

/// The TLS alert a refused chain gets.
fn to_rustls_error(f: &Failure) -> rustls::Error {
    let e = match f {
        Failure::Expired { .. } => CertificateError::Expired,
        Failure::NotYetValid { .. } => CertificateError::NotValidYet,
        Failure::Revoked { .. } => CertificateError::Revoked,
        Failure::UnknownIssuer { .. } | Failure::SelfSigned { .. } => {
            CertificateError::UnknownIssuer
        }
        Failure::BadSignature { .. } => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(Refused(other.to_string())))),
    };
    rustls::Error::InvalidCertificate(e)
}

#[derive(Debug)]
struct Refused(String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

/// The signature schemes TLS 1.3 allows in CertificateVerify (RFC 8446 §4.2.3).
fn tls13_scheme(s: SignatureScheme) -> bool {
    use SignatureScheme as S;
    matches!(
        s,
        S::ECDSA_NISTP256_SHA256
            | S::ECDSA_NISTP384_SHA384
            | S::ECDSA_NISTP521_SHA512
            | S::RSA_PSS_SHA256
            | S::RSA_PSS_SHA384
            | S::RSA_PSS_SHA512
            | S::ED25519
            | S::ED448
    )
}

impl HandshakeVerifier {
    /// The client's proof of its key (CertificateVerify) for an X.509 version 1
    /// certificate, which rustls' own check refuses to parse: the signature is verified
    /// with the certificate's public key directly. Other certificates keep `err`.
    fn v1_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        err: rustls::Error,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if tls13 && !tls13_scheme(dss.scheme) {
            return Err(err);
        }
        let Some(key) = mtlsgate_pki::certinfo::v1_public_key(cert) else {
            return Err(err);
        };
        let candidates = self
            .algs
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .unwrap_or_default();
        let tried = if tls13 {
            &candidates[..candidates.len().min(1)]
        } else {
            candidates
        };
        if tried
            .iter()
            .any(|alg| alg.verify_signature(&key, message, dss.signature()).is_ok())
        {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
        }
    }
}

impl ClientCertVerifier for HandshakeVerifier {
    fn offer_client_auth(&self) -> bool {
        self.auth.mode != VerifyMode::Off
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth.reject_at_handshake && self.auth.mode == VerifyMode::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.auth.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.auth.reject_at_handshake {
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        match self.auth.check(&chain, now).problem {
            None => {
                let Some((policy, listener, inventory)) = &self.policy else {
                    return Ok(ClientCertVerified::assertion());
                };
                let identity = ClientIdentity::new(end_entity);
                match policy.authorize(listener, identity.as_ref(), true, inventory.as_deref()) {
                    Ok(()) => Ok(ClientCertVerified::assertion()),
                    Err(d) => {
                        tracing::info!(device = %identity.as_ref().map(|i| i.device_label().into_owned()).unwrap_or_else(|| "-".into()), "{listener}: refused in the handshake: {d}");
                        Err(rustls::Error::InvalidCertificate(
                            CertificateError::ApplicationVerificationFailure,
                        ))
                    }
                }
            }
            Some(CertProblem::Invalid(f)) => {
                let identity = ClientIdentity::new(end_entity);
                tracing::info!(
                    device = %identity.as_ref().map(|i| i.device_label().into_owned()).unwrap_or_else(|| "-".into()),
                    "client certificate refused in the handshake: {}",
                    mtlsgate_pki::printable::printable(&f.to_string())
                );
                Err(to_rustls_error(&f))
            }
            Some(CertProblem::NoCertificate) => Err(rustls::Error::NoCertificatesPresented),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
            .or_else(|e| self.v1_signature(message, cert, dss, e, false))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
            .or_else(|e| self.v1_signature(message, cert, dss, e, true))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;
    use crate::policy::{Denial, Load, Policy};

    fn verdict(problem: Option<CertProblem>) -> Verdict {
        Verdict {
            generation: 0,
            outcome: VerifyOutcome::None,
            problem,
        }
    }

    #[test]
    fn a_live_client_is_rechecked_by_what_it_was_let_in_to() {
        let open = Policy::build(&PolicyConfig::default(), Load::Start).expect("open policy");
        let listed = Policy::build(
            &PolicyConfig {
                device_ids: vec!["dev1".into()],
                ..PolicyConfig::default()
            },
            Load::Start,
        )
        .expect("listed policy");
        let bad = || {
            verdict(Some(CertProblem::Invalid(Failure::Webpki(
                mtlsgate_pki::verify::WebpkiRefusal::Unnamed,
            ))))
        };
        let none = || verdict(Some(CertProblem::NoCertificate));
        let bound = |p| Admitted::Bound(Some(("/api", p)));

        // An HTTP connection: a missing certificate is refused per request, not here.
        assert!(recheck(&none(), None, None, Admitted::Connection).is_ok());
        assert!(recheck(&verdict(None), None, None, Admitted::Connection).is_ok());
        assert!(matches!(
            recheck(&bad(), None, None, Admitted::Connection),
            Err(Lost::Certificate(_))
        ));
        // Bound to one route or tunnel: the certificate first, then the route's policy.
        assert!(matches!(
            recheck(&none(), None, None, bound(&open)),
            Err(Lost::NoCertificate)
        ));
        assert!(matches!(
            recheck(&bad(), None, None, bound(&listed)),
            Err(Lost::Certificate(_))
        ));
        assert!(recheck(&verdict(None), None, None, bound(&open)).is_ok());
        assert!(matches!(
            recheck(&verdict(None), None, None, bound(&listed)),
            Err(Lost::Denied(Denial::NoCertificate { .. }))
        ));
        let gone = recheck(&verdict(None), None, None, Admitted::Bound(None));
        assert!(matches!(gone, Err(Lost::NoRoute)));
        assert_eq!(
            gone.err().map(|l| l.to_string()).as_deref(),
            Some("no route serves its path any more")
        );
    }
}
