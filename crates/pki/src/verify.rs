//! Client and server certificate verification, and the explanation of a failure.
//!
//! [`Verifier::verify`] is the one path both `mtlsgate cert verify` and the gateway use.
//! For X.509 v3 leaves rustls-webpki decides (fast, and the same code rustls runs), and
//! only when it says no does [`Verifier::explain`] walk the chain with x509-parser to say
//! *why* in one line a person understands ("expired at …", "issuer … is missing: the
//! intermediate is not in the file", "revoked at …"). Every failure also carries OpenSSL's
//! wording for nginx's `$ssl_client_verify` (`FAILED:certificate has expired`).
//!
//! X.509 **v1** leaves (what `openssl x509 -req` makes without an extension file) are
//! refused by webpki, but OpenSSL and nginx accept them. For those the same walk decides,
//! with the checks OpenSSL makes: the signature by the issuer, the validity period, an
//! issuer that is a trust anchor or a presented v3 CA intermediate chaining to one, the
//! verify depth, an RSA key of at least 2048 bits, and revocation by the configured CRLs
//! (whose signatures are checked with the issuer's key). A v1 certificate has no extended
//! key usage, which means any purpose. A v1 certificate can never be an intermediate; a
//! self-signed v1 certificate is accepted only as a trust anchor in the bundle.
//!
//! Pinned certificates (bundle certificates that are not CAs, or are self-signed) are also
//! decided by the walk: trusted as they are, but within their validity and not revoked.
//!
//! On a path that webpki or the walk accepted, [`Verifier::path_failure`] then refuses what
//! RFC 5280 forbids and webpki lets through (the x509-limbo cases): critical AKI/SKI, a
//! leaf with keyCertSign or name constraints, a CA without keyCertSign or with an empty
//! subject, an expired trust anchor or one with an unknown critical extension, leaf keys
//! TLS cannot use, and (strict CRL checking) CRLs without a non-critical CRL number or from
//! a CA without cRLSign.

use std::collections::HashSet;
use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::Digest as _;
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Version;

use crate::ca::MIN_RSA_BITS;
use crate::certinfo::{self, human_duration, human_time};
use crate::dn;
use crate::error::{PkiError, Result};

/// What the certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Client,
    Server,
}

impl Purpose {
    fn eku(self) -> &'static str {
        match self {
            Purpose::Client => "clientAuth",
            Purpose::Server => "serverAuth",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Purpose::Client => "TLS client authentication",
            Purpose::Server => "TLS server authentication",
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No certificate was presented at all.
    NoCertificate,
    Expired {
        subject: String,
        is_leaf: bool,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    },
    NotYetValid {
        subject: String,
        not_before: OffsetDateTime,
        now: OffsetDateTime,
    },
    UnknownIssuer {
        issuer: String,
        intermediate_missing: bool,
    },
    SelfSigned {
        subject: String,
    },
    WrongEku {
        wanted: Purpose,
        has: Vec<String>,
    },
    Revoked {
        subject: String,
        /// Uppercase hex, as nginx prints `$ssl_client_serial`.
        serial: String,
        /// When the CRL says it was revoked (unknown only when the CRL entry could not be
        /// found again after webpki reported the revocation).
        at: Option<OffsetDateTime>,
        reason: Option<String>,
        /// The serial is small enough to be hand-picked or reused (`openssl x509
        /// -set_serial 01`): the explanation then says that a CRL entry revokes every
        /// certificate of that issuer with that serial.
        small_serial: bool,
    },
    KeyTooSmall {
        subject: String,
        bits: usize,
    },
    CaAsLeaf {
        subject: String,
    },
    BadSignature {
        subject: String,
    },
    ChainTooLong {
        length: usize,
        max_depth: usize,
    },
    NotACa {
        subject: String,
    },
    /// A CRL that decides this chain is past its nextUpdate (strict CRL checking, as nginx:
    /// every client of that CA is refused until a fresh CRL is published).
    CrlExpired {
        /// The CA whose CRL expired (when known).
        issuer: Option<String>,
        next_update: OffsetDateTime,
    },
    /// CRLs are configured but none is from this issuer, so revocation cannot be checked
    /// (strict CRL checking, as nginx: "unable to get certificate CRL").
    CrlMissing {
        issuer: Option<String>,
    },
    /// Anything else, as a sentence a person understands.
    Other(String),
}

impl Failure {
    /// Machine labels (for metrics), in a fixed order: `LABELS[f.slot()] == f.label()`.
    /// The gateway keeps one counter per entry.
    pub const LABELS: &'static [&'static str] = &[
        "no_certificate",
        "expired",
        "not_yet_valid",
        "unknown_issuer",
        "self_signed",
        "wrong_eku",
        "revoked",
        "key_too_small",
        "ca_as_leaf",
        "bad_signature",
        "chain_too_long",
        "not_a_ca",
        "crl_expired",
        "crl_missing",
        "other",
    ];

    /// This failure's index in [`Failure::LABELS`].
    pub fn slot(&self) -> usize {
        match self {
            Failure::NoCertificate => 0,
            Failure::Expired { .. } => 1,
            Failure::NotYetValid { .. } => 2,
            Failure::UnknownIssuer { .. } => 3,
            Failure::SelfSigned { .. } => 4,
            Failure::WrongEku { .. } => 5,
            Failure::Revoked { .. } => 6,
            Failure::KeyTooSmall { .. } => 7,
            Failure::CaAsLeaf { .. } => 8,
            Failure::BadSignature { .. } => 9,
            Failure::ChainTooLong { .. } => 10,
            Failure::NotACa { .. } => 11,
            Failure::CrlExpired { .. } => 12,
            Failure::CrlMissing { .. } => 13,
            Failure::Other(_) => 14,
        }
    }

    /// A short machine label (for metrics): `expired`, `unknown_issuer`, …
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.slot()]
    }

    /// OpenSSL's `X509_verify_cert_error_string` wording, for `$ssl_client_verify`.
    /// (A missing certificate is not a verify error in OpenSSL; nginx reports `NONE`.)
    pub fn openssl_reason(&self) -> &'static str {
        match self {
            Failure::NoCertificate => "no certificate presented",
            Failure::Expired { .. } => "certificate has expired",
            Failure::NotYetValid { .. } => "certificate is not yet valid",
            Failure::UnknownIssuer { .. } => "unable to get local issuer certificate",
            Failure::SelfSigned { .. } => "self-signed certificate",
            Failure::WrongEku { .. } | Failure::CaAsLeaf { .. } => {
                "unsupported certificate purpose"
            }
            Failure::Revoked { .. } => "certificate revoked",
            Failure::KeyTooSmall { .. } => "EE certificate key too small",
            Failure::BadSignature { .. } => "certificate signature failure",
            Failure::ChainTooLong { .. } => "certificate chain too long",
            Failure::NotACa { .. } => "invalid CA certificate",
            Failure::CrlExpired { .. } => "CRL has expired",
            Failure::CrlMissing { .. } => "unable to get certificate CRL",
            Failure::Other(_) => "certificate verify failed",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoCertificate => write!(f, "no certificate: the client presented none"),
            Failure::Expired {
                subject,
                is_leaf,
                not_after,
                now,
            } => {
                let who = if *is_leaf {
                    "certificate".to_string()
                } else {
                    format!("issuing CA certificate {subject}")
                };
                write!(
                    f,
                    "expired: the {who} expired at {} ({} ago)",
                    human_time(*not_after),
                    human_duration((*now - *not_after).whole_seconds())
                )
            }
            Failure::NotYetValid {
                subject,
                not_before,
                now,
            } => write!(
                f,
                "not yet valid: {subject} becomes valid at {} (in {}); check the clocks",
                human_time(*not_before),
                human_duration((*not_before - *now).whole_seconds())
            ),
            Failure::UnknownIssuer {
                issuer,
                intermediate_missing: true,
            } => write!(
                f,
                "unknown issuer: the certificate was issued by {issuer}, which is neither in the file nor in the CA bundle; the intermediate certificate is missing (append it after the leaf in the certificate file, or add it to the bundle)"
            ),
            Failure::UnknownIssuer { issuer, .. } => write!(
                f,
                "unknown issuer: the certificate was issued by {issuer}, which the CA bundle does not trust"
            ),
            Failure::SelfSigned { subject } => write!(
                f,
                "self-signed: {subject} signed itself and is not in the CA bundle (to trust exactly this certificate, add it to the bundle)"
            ),
            Failure::WrongEku { wanted, has } => write!(
                f,
                "wrong EKU: the certificate may be used for {} but not for {} (it lacks the {} extended key usage)",
                if has.is_empty() { "nothing".to_string() } else { has.join(", ") },
                wanted.words(),
                wanted.eku()
            ),
            Failure::Revoked {
                subject,
                serial,
                at,
                reason,
                small_serial,
            } => {
                write!(f, "revoked: {subject} (serial {serial}) was revoked")?;
                if let Some(at) = at {
                    write!(f, " at {}", human_time(*at))?;
                }
                if let Some(r) = reason {
                    write!(f, " (reason: {r})")?;
                }
                if *small_serial {
                    write!(
                        f,
                        "; a CRL entry names an issuer and a serial, so every certificate this issuer signed with serial {serial} is revoked with it (openssl x509 -set_serial reuses serials; give each certificate its own)"
                    )?;
                }
                Ok(())
            }
            Failure::KeyTooSmall { subject, bits } => write!(
                f,
                "key too small: {subject} has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
            ),
            Failure::CaAsLeaf { subject } => write!(
                f,
                "CA certificate used as a leaf: {subject} is a CA certificate (basicConstraints CA:TRUE); present a client or server certificate issued by it"
            ),
            Failure::BadSignature { subject } => write!(
                f,
                "bad signature: the signature on {subject} does not verify with its issuer's key (wrong issuer with the same name, or an altered certificate)"
            ),
            Failure::ChainTooLong { length, max_depth } => write!(
                f,
                "chain too long: {length} certificates, but the verify depth allows {max_depth} below the leaf"
            ),
            Failure::NotACa { subject } => write!(
                f,
                "invalid CA: {subject} signs other certificates but is not a CA certificate"
            ),
            Failure::CrlExpired {
                issuer,
                next_update,
            } => write!(
                f,
                "CRL expired: the CRL of {} expired at {} (its nextUpdate); until a fresh one is published, every certificate it covers is refused, as nginx does (mtlsgate ca crl makes one; crl_check = \"lenient\" accepts stale CRLs)",
                issuer.as_deref().unwrap_or("an issuing CA in the chain"),
                human_time(*next_update)
            ),
            Failure::CrlMissing { issuer } => write!(
                f,
                "no CRL for {}: CRLs are configured, but none is from this CA, so whether the certificate was revoked cannot be checked; add that CA's CRL (crl_check = \"lenient\" accepts certificates without one)",
                issuer.as_deref().unwrap_or("an issuing CA in the chain")
            ),
            Failure::Other(s) => write!(f, "verification failed: {s}"),
        }
    }
}

/// What [`failure_from_webpki`] needs besides the error: the leaf as a person would name it.
#[derive(Debug, Clone)]
pub struct ErrorContext {
    /// The leaf's subject (RFC 2253).
    pub subject: String,
    /// The leaf's issuer (RFC 2253).
    pub issuer: String,
    /// The leaf's serial (uppercase hex).
    pub serial: String,
    /// The leaf's extended key usages by name.
    pub ekus: Vec<String>,
    pub purpose: Purpose,
    /// Certificates in the chain (leaf and intermediates).
    pub chain_len: usize,
    pub max_depth: usize,
}

impl ErrorContext {
    /// A context for errors that concern no particular certificate (loading a bundle or CRL).
    pub fn unknown() -> Self {
        ErrorContext {
            subject: "the certificate".into(),
            issuer: "an unknown issuer".into(),
            serial: "?".into(),
            ekus: Vec::new(),
            purpose: Purpose::Client,
            chain_len: 1,
            max_depth: DEFAULT_DEPTH,
        }
    }

    fn of(x: &X509Certificate<'_>, purpose: Purpose, chain_len: usize, max_depth: usize) -> Self {
        ErrorContext {
            subject: dn::rfc2253(x.subject()),
            issuer: dn::rfc2253(x.issuer()),
            serial: certinfo::serial_hex(x.raw_serial()),
            ekus: certinfo::eku_names(x),
            purpose,
            chain_len,
            max_depth,
        }
    }
}

/// Maps every rustls-webpki error to a typed [`Failure`] or, where no variant fits, to
/// [`Failure::Other`] with a plain-English sentence (webpki's own `Display` is its `Debug`
/// text, which no user should see). `webpki::Error` is `#[non_exhaustive]`: an error a
/// later webpki adds gets a generic sentence until it is mapped here.
pub fn failure_from_webpki(e: &webpki::Error, cx: &ErrorContext) -> Failure {
    use webpki::Error as E;
    let other = |s: &str| Failure::Other(s.to_string());
    #[allow(deprecated)]
    match e {
        E::BadDer | E::TrailingData(_) => other(
            "a certificate or CRL is not valid DER: the file is damaged, or it is not a certificate",
        ),
        E::BadDerTime => other("a date in a certificate or CRL is not encoded correctly"),
        E::CaUsedAsEndEntity => Failure::CaAsLeaf {
            subject: cx.subject.clone(),
        },
        E::CertDistrusted => other("the certificate's public key is explicitly distrusted"),
        E::CertExpired { time, not_after } => Failure::Expired {
            subject: cx.subject.clone(),
            is_leaf: true,
            not_after: unix_to_time(*not_after),
            now: unix_to_time(*time),
        },
        E::CertNotValidForName(_) => other(
            "the certificate is not valid for the host name it was checked against (it is not in its subject alternative names)",
        ),
        E::CertNotValidYet { time, not_before } => Failure::NotYetValid {
            subject: cx.subject.clone(),
            not_before: unix_to_time(*not_before),
            now: unix_to_time(*time),
        },
        E::CertRevoked => Failure::Revoked {
            subject: cx.subject.clone(),
            serial: cx.serial.clone(),
            at: None,
            reason: None,
            small_serial: is_small_serial_hex(&cx.serial),
        },
        E::CrlExpired { next_update, .. } => Failure::CrlExpired {
            issuer: None,
            next_update: unix_to_time(*next_update),
        },
        E::EmptyEkuExtension => Failure::WrongEku {
            wanted: cx.purpose,
            has: Vec::new(),
        },
        E::EndEntityUsedAsCa => Failure::NotACa {
            subject: cx.issuer.clone(),
        },
        E::ExtensionValueInvalid => other("a certificate extension has an invalid value"),
        E::InvalidCertValidity => other(
            "a certificate's validity period is invalid: its notAfter is before its notBefore",
        ),
        E::InvalidCrlNumber => {
            other("a CRL has an invalid CRL number (negative, too long or badly encoded)")
        }
        E::InvalidNetworkMaskConstraint => {
            other("a CA's IP address name constraint has an invalid network mask")
        }
        E::InvalidSerialNumber => other(
            "a serial number is invalid (negative, longer than 20 bytes or badly encoded)",
        ),
        E::InvalidCrlSignatureForPublicKey => other(
            "a CRL's signature does not verify with its issuer's key: the CRL was altered, or signed by another CA with the same name",
        ),
        E::InvalidSignatureForPublicKey => Failure::BadSignature {
            subject: cx.subject.clone(),
        },
        E::IssuerNotCrlSigner => other(
            "a CRL was signed by a CA whose key usage does not allow signing CRLs (cRLSign is missing)",
        ),
        E::MalformedDnsIdentifier => other("a DNS name in the certificate is malformed"),
        E::MalformedExtensions => other("the certificate's extensions are malformed"),
        E::MalformedNameConstraint => other("a CA's name constraints are malformed"),
        E::MaximumNameConstraintComparisonsExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => other(
            "the chain is too complex to check (too many candidate issuers or name constraints); send only the leaf and its own intermediates",
        ),
        E::MaximumPathDepthExceeded => Failure::ChainTooLong {
            length: cx.chain_len + 1,
            max_depth: cx.max_depth,
        },
        E::NameConstraintViolation => {
            other("the certificate's names are outside what its issuing CA may certify (name constraints)")
        }
        E::PathLenConstraintViolated => other(
            "a CA in the chain issued below its path length limit (basicConstraints pathlen)",
        ),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => Failure::WrongEku {
            wanted: cx.purpose,
            has: cx.ekus.clone(),
        },
        E::SignatureAlgorithmMismatch => other(
            "the certificate's inner and outer signature algorithms differ, so it was altered",
        ),
        E::UnknownIssuer => Failure::UnknownIssuer {
            issuer: cx.issuer.clone(),
            intermediate_missing: false,
        },
        E::UnknownRevocationStatus => Failure::CrlMissing { issuer: None },
        E::UnsupportedCertVersion => other(
            "the certificate is neither X.509 version 3 nor version 1 (or its version field is damaged)",
        ),
        E::UnsupportedCriticalExtension => other(
            "the certificate has a critical extension that mtlsgate does not understand, so it must refuse it",
        ),
        E::UnsupportedCrlIssuingDistributionPoint => other(
            "a CRL has an issuing distribution point that is not supported (no name, or a name relative to the issuer)",
        ),
        E::UnsupportedCrlVersion => other(
            "a CRL is version 1; only version 2 CRLs are supported (openssl ca -gencrl writes version 2 when a crlnumber file is configured)",
        ),
        E::UnsupportedDeltaCrl => other("delta CRLs are not supported; give a complete CRL"),
        E::UnsupportedIndirectCrl => other(
            "indirect CRLs (entries for another issuer's certificates) are not supported",
        ),
        E::UnsupportedNameType => other("the name to check is of an unsupported type"),
        E::UnsupportedRevocationReason => other("a CRL entry has an unknown revocation reason"),
        E::UnsupportedRevocationReasonsPartitioning => other(
            "a CRL covers only some revocation reasons; give a CRL that covers all of them",
        ),
        E::UnsupportedCrlSignatureAlgorithm | E::UnsupportedCrlSignatureAlgorithmContext(_) => {
            other("a CRL is signed with an algorithm mtlsgate does not accept (for example SHA-1)")
        }
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmContext(_) => other(
            "a certificate is signed with an algorithm mtlsgate does not accept (for example SHA-1, or RSA with a key under 2048 bits)",
        ),
        E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => other(
            "a CRL's signature algorithm does not fit its issuer's key type",
        ),
        E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => other(
            "a certificate's signature algorithm does not fit its issuer's key type (or the key is of an unsupported type or curve)",
        ),
        _ => other("the certificate was refused for a reason this version of mtlsgate cannot name"),
    }
}

/// The sentence of a webpki error that concerns no particular certificate.
fn webpki_sentence(e: &webpki::Error) -> String {
    match failure_from_webpki(e, &ErrorContext::unknown()) {
        Failure::Other(s) => s,
        f => f.to_string(),
    }
}

fn unix_to_time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Serials of at most 32 bits: picked by hand or counted up (`-set_serial 01`), so the same
/// serial may well have been given to several certificates. Random serials are 64+ bits.
fn is_small_serial(raw: &[u8]) -> bool {
    crate::der::integer_bits(raw) <= 32
}

fn is_small_serial_hex(hex_serial: &str) -> bool {
    hex::decode(hex_serial)
        .map(|b| is_small_serial(&b))
        .unwrap_or(false)
}

static SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA256,
    webpki::aws_lc_rs::ECDSA_P521_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA512,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PKCS1_3072_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// A trust bundle, optional CRLs and a verify depth: everything needed to decide.
/// Built once (at start-up or reload) and shared; verifying takes no lock.
pub struct Verifier {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    anchor_ders: Vec<Vec<u8>>,
    /// SHA-256 of certificates trusted as they are (pinned leaves, such as the
    /// self-signed client certificate seed 004 names in `ssl_client_certificate`).
    pinned: HashSet<[u8; 32]>,
    crls: Vec<CertRevocationList<'static>>,
    crl_ders: Vec<Vec<u8>>,
    /// Per CRL (same order as `crl_ders`): its issuer's name and what makes it unusable
    /// on its own (no CRL number, or a critical one), found once when the CRL is loaded.
    crl_facts: Vec<CrlFacts>,
    max_depth: usize,
    crl_check: CrlCheck,
}

/// What is known of a CRL without its issuer's certificate.
struct CrlFacts {
    /// The issuer name, DER (as x509-parser's `as_raw`).
    issuer: Vec<u8>,
    /// Why the CRL does not conform to RFC 5280 5.2.3, if it does not.
    defect: Option<&'static str>,
}

/// RFC 5280 5.2.3: a CRL must carry a CRL number, marked non-critical.
fn crl_facts(der: &[u8]) -> CrlFacts {
    let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
        return CrlFacts {
            issuer: Vec::new(),
            defect: Some("it cannot be parsed"),
        };
    };
    let number = crl
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_CRL_NUMBER);
    let defect = match number {
        None => Some("it has no CRL number, which RFC 5280 requires in every CRL (openssl ca -gencrl writes one when a crlnumber file is configured)"),
        Some(e) if e.critical => Some("its CRL number extension is marked critical, which RFC 5280 forbids"),
        Some(_) => None,
    };
    CrlFacts {
        issuer: crl.issuer().as_raw().to_vec(),
        defect,
    }
}

const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_SUBJECT_KEY_ID: &str = "2.5.29.14";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";
const OID_NAME_CONSTRAINTS: &str = "2.5.29.30";
const OID_DSA: &str = "1.2.840.10040.4.1";

/// How CRLs decide when they cannot say whether a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlCheck {
    /// As nginx (OpenSSL): when CRLs are configured, a chain whose issuer has no CRL, or
    /// whose CRL is past its nextUpdate, is refused.
    #[default]
    Strict,
    /// A missing or expired CRL lets the certificate through (only a listed serial refuses).
    Lenient,
}

impl CrlCheck {
    pub fn parse(s: &str) -> Option<CrlCheck> {
        match s {
            "strict" => Some(CrlCheck::Strict),
            "lenient" => Some(CrlCheck::Lenient),
            _ => None,
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("anchors", &self.anchors.len())
            .field("pinned", &self.pinned.len())
            .field("crls", &self.crls.len())
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// Default verify depth: leaf → intermediate → root, like the seeds' `ssl_verify_depth 2`.
pub const DEFAULT_DEPTH: usize = 2;

/// Longest chain the walk follows before giving up.
const MAX_WALK: usize = 10;

fn sha256(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(sha256(der))
}

/// The path webpki accepted: the trust anchor's index in the bundle and the intermediates'
/// indices in the presented chain, from the leaf's issuer upwards.
struct DecidedPath {
    anchor: Option<usize>,
    intermediates: Vec<usize>,
}

/// What walking a chain found.
enum Walk {
    /// The chain reaches a trust anchor and nothing is wrong; `length` counts the leaf and
    /// the intermediates.
    Clean { length: usize },
    /// The leaf is pinned, within its validity and not revoked.
    Pinned,
    /// The first problem found.
    Refused(Failure),
    /// The leaf cannot be parsed.
    Unreadable,
}

impl Verifier {
    /// Builds a verifier. Every certificate in `bundle` is a trust anchor; a bundle
    /// certificate that is not a CA, or is self-signed, is also trusted as itself (pinned),
    /// so a client presenting exactly that certificate is accepted as nginx accepts it.
    pub fn new(bundle: Vec<Vec<u8>>, crls: Vec<Vec<u8>>, max_depth: usize) -> Result<Self> {
        let mut anchors = Vec::with_capacity(bundle.len());
        let mut pinned = HashSet::new();
        for der in &bundle {
            let cd = CertificateDer::from(der.as_slice());
            let a =
                webpki::anchor_from_trusted_cert(&cd).map_err(|e| PkiError::BadCertificate {
                    path: "CA bundle".into(),
                    reason: format!(
                        "a certificate cannot be used as a trust anchor: {}",
                        webpki_sentence(&e)
                    ),
                })?;
            anchors.push(a.to_owned());
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(der) {
                let self_signed = x.subject().as_raw() == x.issuer().as_raw();
                if !x.is_ca() || self_signed {
                    pinned.insert(sha256(der));
                }
            }
        }
        let mut owned = Vec::new();
        for der in &crls {
            let c =
                OwnedCertRevocationList::from_der(der).map_err(|e| PkiError::BadCertificate {
                    path: "CRL".into(),
                    reason: format!("it cannot be used: {}", webpki_sentence(&e)),
                })?;
            owned.push(CertRevocationList::from(c));
        }
        let crl_facts = crls.iter().map(|d| crl_facts(d)).collect();
        Ok(Verifier {
            anchors,
            anchor_ders: bundle,
            pinned,
            crls: owned,
            crl_ders: crls,
            crl_facts,
            max_depth: max_depth.max(1),
            crl_check: CrlCheck::Strict,
        })
    }

    /// Sets how missing and expired CRLs decide (strict by default).
    pub fn with_crl_check(mut self, c: CrlCheck) -> Self {
        self.crl_check = c;
        self
    }

    /// Adds a pinned certificate by SHA-256 fingerprint (hex, `:` allowed).
    pub fn pin_fingerprint(&mut self, fp: &str) -> Result<()> {
        let clean: String = fp.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| PkiError::InvalidInput {
                what: "SHA-256 fingerprint",
                value: fp.into(),
                reason: "expected 64 hex digits (colons allowed)".into(),
            })?;
        let mut a = [0u8; 32];
        a.copy_from_slice(&bytes);
        self.pinned.insert(a);
        Ok(())
    }

    pub fn has_anchors(&self) -> bool {
        !self.anchors.is_empty() || !self.pinned.is_empty()
    }

    fn is_pinned(&self, der: &[u8]) -> bool {
        !self.pinned.is_empty() && self.pinned.contains(&sha256(der))
    }

    /// Verifies `chain` (leaf first) for `purpose` at `now`. On failure, explains.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> std::result::Result<(), Failure> {
        let Some(leaf) = chain.first() else {
            return Err(Failure::NoCertificate);
        };
        let parsed = x509_parser::parse_x509_certificate(leaf)
            .ok()
            .map(|(_, x)| x);
        let v1 = parsed
            .as_ref()
            .is_some_and(|x| x.version() == X509Version::V1);
        if v1 || self.is_pinned(leaf) {
            // webpki refuses v1 certificates and knows nothing of pinning: the walk decides.
            return match self.walk(chain, purpose, now) {
                Walk::Clean { .. } | Walk::Pinned => Ok(()),
                Walk::Refused(f) => Err(f),
                Walk::Unreadable => Err(Failure::Other(
                    "the certificate cannot be parsed: it is damaged, or not a certificate".into(),
                )),
            };
        }
        // webpki never uses the leaf's own key, so it does not notice a weak one; the
        // handshake would, but with a less helpful error. Refuse it here.
        let decided = match parsed.as_ref().and_then(small_rsa) {
            Some(_) => Err(webpki::Error::InvalidSignatureForPublicKey),
            None => self.decide(chain, purpose, now),
        };
        match decided {
            Ok(path) => self.audit_decided(chain, &path, now),
            Err(e) => {
                let fallback = match &parsed {
                    Some(x) => ErrorContext::of(x, purpose, chain.len(), self.max_depth),
                    None => ErrorContext {
                        purpose,
                        chain_len: chain.len(),
                        max_depth: self.max_depth,
                        ..ErrorContext::unknown()
                    },
                };
                Err(self
                    .explain(chain, purpose, now, Some(e.clone()))
                    .unwrap_or_else(|| failure_from_webpki(&e, &fallback)))
            }
        }
    }

    /// Checks that `leaf` is valid for `name` (a DNS name or an IP address), as a TLS client
    /// checks a server: against the subject alternative names only, never the CN. Call it
    /// after [`Verifier::verify`] accepted the chain (name constraints are checked there).
    pub fn check_name(
        leaf: &CertificateDer<'_>,
        name: &rustls_pki_types::ServerName<'_>,
    ) -> std::result::Result<(), Failure> {
        let shown = match name {
            rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
            rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => "the name".to_string(),
        };
        let has = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, x)| {
                let info = certinfo::CertInfo::from_parsed(leaf, &x);
                let dns = info.dns_names.iter().map(|d| format!("DNS:{d}"));
                let ips = info.ip_addresses.iter().map(|i| format!("IP:{i}"));
                crate::printable::printable(&dns.chain(ips).collect::<Vec<_>>().join(", "))
                    .into_owned()
            })
            .unwrap_or_default();
        let refused = || {
            Failure::Other(if has.is_empty() {
                format!(
                    "the certificate is not valid for {shown}: it has no DNS or IP subject alternative names (the CN is not used for names)"
                )
            } else {
                format!("the certificate is not valid for {shown}: it names only {has}")
            })
        };
        let ee = EndEntityCert::try_from(leaf).map_err(|_| refused())?;
        ee.verify_is_valid_for_subject_name(name)
            .map_err(|_| refused())
    }

    /// The checks webpki leaves out, on the path it accepted: the profile rules of
    /// [`Verifier::path_failure`] (the trust anchor included, which webpki reads only for
    /// its name and key).
    fn audit_decided(
        &self,
        chain: &[CertificateDer<'_>],
        path: &DecidedPath,
        now: UnixTime,
    ) -> std::result::Result<(), Failure> {
        let now_t = unix_to_time(now);
        let mut certs = Vec::with_capacity(path.intermediates.len() + 2);
        for der in std::iter::once(&chain[0])
            .chain(path.intermediates.iter().filter_map(|&i| chain.get(i)))
        {
            match parse_cert(der) {
                Some(x) => certs.push(x),
                None => {
                    return Err(Failure::Other(
                        "a certificate in the chain cannot be parsed".into(),
                    ))
                }
            }
        }
        let anchor = path
            .anchor
            .and_then(|i| self.anchor_ders.get(i))
            .and_then(|d| parse_cert(d));
        if let Some(a) = anchor {
            certs.push(a);
        }
        let refs: Vec<&X509Certificate<'_>> = certs.iter().collect();
        match self.path_failure(&refs, now_t) {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// What RFC 5280 forbids that webpki accepts, checked on a path that is otherwise
    /// accepted: `path` is the leaf, the intermediates upwards, then the trust anchor.
    fn path_failure(&self, path: &[&X509Certificate<'_>], now: OffsetDateTime) -> Option<Failure> {
        let name = |x: &X509Certificate<'_>| dn::rfc2253(x.subject());
        let other = |s: String| Some(Failure::Other(s));
        for x in path {
            for e in x.extensions().iter().filter(|e| e.critical) {
                let which = match e.oid.to_id_string().as_str() {
                    OID_AUTHORITY_KEY_ID => "authority key identifier",
                    OID_SUBJECT_KEY_ID => "subject key identifier",
                    _ => continue,
                };
                return other(format!(
                    "{} marks its {which} extension critical, which RFC 5280 forbids",
                    name(x)
                ));
            }
        }
        let leaf = path.first()?;
        if !leaf.is_ca() {
            if matches!(leaf.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign()) {
                return other(format!(
                    "{} is not a CA certificate, but its key usage allows signing certificates (keyCertSign), which RFC 5280 forbids",
                    name(leaf)
                ));
            }
            if leaf
                .extensions()
                .iter()
                .any(|e| e.oid.to_id_string() == OID_NAME_CONSTRAINTS)
            {
                return other(format!(
                    "{} is not a CA certificate, but it carries name constraints, which only CA certificates may",
                    name(leaf)
                ));
            }
        }
        if let Some(key) = unusable_leaf_key(leaf) {
            return other(format!(
                "{} has {key}, which TLS cannot use; use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)",
                name(leaf)
            ));
        }
        for (i, ca) in path.iter().enumerate().skip(1) {
            if ca.subject().as_raw().len() <= 2 {
                let below = path[i - 1];
                return other(format!(
                    "the CA certificate that issued {} has an empty subject name, which RFC 5280 forbids for a CA",
                    name(below)
                ));
            }
            if matches!(ca.key_usage(), Ok(Some(ku)) if !ku.value.key_cert_sign()) {
                return other(format!(
                    "{} is a CA certificate, but its key usage does not allow signing certificates (keyCertSign is missing)",
                    name(ca)
                ));
            }
        }
        if path.len() > 1 {
            let anchor = path[path.len() - 1];
            if let Some(f) = unknown_critical(anchor) {
                return Some(f);
            }
            if let Some(f) = time_failure(anchor, false, now) {
                return Some(f);
            }
        }
        if self.crl_check == CrlCheck::Strict && !self.crl_facts.is_empty() {
            for pair in path.windows(2) {
                if let Some(f) = self.crl_defect(pair[0], pair[1]) {
                    return Some(f);
                }
            }
        }
        None
    }

    /// Strict CRL checking: the CRLs `issuer` published must include one it could sign
    /// (its key usage, if any, allows cRLSign) and that conforms to RFC 5280 (a CRL number,
    /// not critical). Revocation itself and missing CRLs are decided elsewhere.
    fn crl_defect(&self, x: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Option<Failure> {
        let mut first_defect = None;
        for f in &self.crl_facts {
            if f.issuer != x.issuer().as_raw() || f.issuer != issuer.subject().as_raw() {
                continue;
            }
            let defect = if matches!(issuer.key_usage(), Ok(Some(ku)) if !ku.value.crl_sign()) {
                Some("the CA's key usage does not allow signing CRLs (cRLSign is missing)")
            } else {
                f.defect
            };
            match defect {
                None => return None,
                Some(d) => {
                    first_defect.get_or_insert(d);
                }
            }
        }
        first_defect.map(|d| {
            Failure::Other(format!(
                "the CRL of {} cannot be used: {d}; whether the certificate was revoked cannot be checked (crl_check = \"lenient\" accepts certificates without a usable CRL)",
                dn::rfc2253(issuer.subject())
            ))
        })
    }

    /// rustls-webpki's decision for a v3 leaf: the path it built, by index.
    fn decide(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
    ) -> std::result::Result<DecidedPath, webpki::Error> {
        let ee = EndEntityCert::try_from(&chain[0])?;
        let usage = match purpose {
            Purpose::Client => KeyUsage::client_auth(),
            Purpose::Server => KeyUsage::server_auth(),
        };
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
                let (status, expiry) = match self.crl_check {
                    CrlCheck::Strict => (UnknownStatusPolicy::Deny, ExpirationPolicy::Enforce),
                    CrlCheck::Lenient => (UnknownStatusPolicy::Allow, ExpirationPolicy::Ignore),
                };
                b.with_depth(RevocationCheckDepth::Chain)
                    .with_status_policy(status)
                    .with_expiration_policy(expiry)
                    .build()
            })
        };
        let max_intermediates = self.max_depth.saturating_sub(1);
        let depth_check = move |p: &webpki::VerifiedPath<'_>| {
            if p.intermediate_certificates().count() > max_intermediates {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        ee.verify_for_usage(
            SIG_ALGS,
            &self.anchors,
            &chain[1..],
            now,
            usage,
            revocation,
            Some(&depth_check),
        )
        .map(|p| DecidedPath {
            anchor: self.anchors.iter().position(|a| {
                a.subject.as_ref() == p.anchor().subject.as_ref()
                    && a.subject_public_key_info.as_ref()
                        == p.anchor().subject_public_key_info.as_ref()
            }),
            intermediates: p
                .intermediate_certificates()
                .filter_map(|c| {
                    let der = c.der();
                    chain.iter().position(|d| d.as_ref() == der.as_ref())
                })
                .collect(),
        })
    }

    /// The CRL entry revoking `x`, from a CRL whose signature verifies with the key of one
    /// of `issuers` named as the CRL's issuer. A CRL entry names an issuer and a serial, so
    /// every certificate of that issuer with that serial is revoked (as in OpenSSL). A CRL
    /// for `x`'s issuer whose signature does not verify refuses the certificate, as webpki
    /// and OpenSSL ("CRL signature failure") do; a CRL whose issuer is not known at all
    /// cannot be checked and is left out (the walk then fails on the unknown issuer).
    fn revocation_of(
        &self,
        x: &X509Certificate<'_>,
        issuers: &[&X509Certificate<'_>],
        now: OffsetDateTime,
    ) -> std::result::Result<Option<(OffsetDateTime, Option<String>)>, Failure> {
        let strict = self.crl_check == CrlCheck::Strict && !self.crl_ders.is_empty();
        let mut covered = false;
        for der in &self.crl_ders {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
                continue;
            };
            if crl.issuer().as_raw() != x.issuer().as_raw() {
                continue;
            }
            let named: Vec<&&X509Certificate<'_>> = issuers
                .iter()
                .filter(|i| i.subject().as_raw() == crl.issuer().as_raw())
                .collect();
            if named.is_empty() {
                continue;
            }
            if !named
                .iter()
                .any(|i| crl.verify_signature(i.public_key()).is_ok())
            {
                return Err(Failure::Other(format!(
                    "the CRL of {} does not verify with that CA's key: the CRL was altered, or signed by another CA with the same name",
                    dn::rfc2253(crl.issuer())
                )));
            }
            covered = true;
            if strict {
                if let Some(next) = crl.next_update() {
                    let next = OffsetDateTime::from_unix_timestamp(next.timestamp())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    if next < now {
                        return Err(Failure::CrlExpired {
                            issuer: Some(dn::rfc2253(crl.issuer())),
                            next_update: next,
                        });
                    }
                }
            }
            let entry = crl
                .iter_revoked_certificates()
                .find(|r| r.raw_serial() == x.raw_serial())
                .map(|r| {
                    let at = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    let reason = r.reason_code().map(|(_, rc)| reason_name(rc.0).to_string());
                    (at, reason)
                });
            if entry.is_some() {
                return Ok(entry);
            }
        }
        if strict && !covered {
            return Err(Failure::CrlMissing {
                issuer: Some(dn::rfc2253(x.issuer())),
            });
        }
        Ok(None)
    }

    /// Walks the chain the way a person would and names the first problem found.
    /// `webpki_error` (if known) fills in what the walk cannot see.
    pub fn explain(
        &self,
        chain: &[CertificateDer<'_>],
        purpose: Purpose,
        now: UnixTime,
        webpki_error: Option<webpki::Error>,
    ) -> Option<Failure> {
        let walked = self.walk(chain, purpose, now);
        let length = match walked {
            Walk::Refused(f) => return Some(f),
            Walk::Clean { length } => length,
            Walk::Pinned | Walk::Unreadable => chain.len(),
        };
        let e = webpki_error?;
        let leaf = chain
            .first()
            .and_then(|d| x509_parser::parse_x509_certificate(d).ok());
        let cx = match leaf {
            Some((_, x)) => ErrorContext::of(&x, purpose, length, self.max_depth),
            None => ErrorContext {
                purpose,
                chain_len: length,
                max_depth: self.max_depth,
                ..ErrorContext::unknown()
            },
        };
        Some(failure_from_webpki(&e, &cx))
    }

    /// The walk: leaf checks, then up through presented intermediates to a trust anchor.
    fn walk(&self, chain: &[CertificateDer<'_>], purpose: Purpose, now: UnixTime) -> Walk {
        let Ok(now_t) =
            OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
        else {
            return Walk::Unreadable;
        };
        let Some(leaf_der) = chain.first() else {
            return Walk::Refused(Failure::NoCertificate);
        };
        let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf_der) else {
            return Walk::Unreadable;
        };
        let presented: Vec<X509Certificate<'_>> = chain[1..]
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let anchors: Vec<X509Certificate<'_>> = self
            .anchor_ders
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, x)| x))
            .collect();
        let crl_signers: Vec<&X509Certificate<'_>> = anchors
            .iter()
            .chain(presented.iter())
            .chain(std::iter::once(&leaf))
            .collect();
        let leaf_subject = dn::rfc2253(leaf.subject());

        // 1. Things wrong with the leaf itself.
        if let Some(f) = time_failure(&leaf, true, now_t) {
            return Walk::Refused(f);
        }
        match self.revocation_of(&leaf, &crl_signers, now_t) {
            Ok(Some((at, reason))) => return Walk::Refused(revoked(&leaf, at, reason)),
            Ok(None) => {}
            Err(f) => return Walk::Refused(f),
        }
        if self.is_pinned(leaf_der) {
            return Walk::Pinned;
        }
        if let Some(bits) = small_rsa(&leaf) {
            return Walk::Refused(Failure::KeyTooSmall {
                subject: leaf_subject,
                bits,
            });
        }
        if leaf.subject().as_raw() == leaf.issuer().as_raw() && leaf.verify_signature(None).is_ok()
        {
            return Walk::Refused(Failure::SelfSigned {
                subject: leaf_subject,
            });
        }
        if leaf.is_ca() {
            return Walk::Refused(Failure::CaAsLeaf {
                subject: leaf_subject,
            });
        }
        if let Some(f) = eku_failure(&leaf, purpose) {
            return Walk::Refused(f);
        }
        if let Some(f) = unknown_critical(&leaf) {
            return Walk::Refused(f);
        }

        // 2. Walk up: find each issuer in the bundle or the presented chain.
        let mut current = &leaf;
        let mut length = 1;
        let mut path: Vec<&X509Certificate<'_>> = vec![&leaf];
        loop {
            let named: Vec<&X509Certificate<'_>> = anchors
                .iter()
                .filter(|a| a.subject().as_raw() == current.issuer().as_raw())
                .collect();
            if !named.is_empty() {
                if let Err(f) = signed_by_any(current, &named) {
                    return Walk::Refused(f);
                }
                if length > self.max_depth {
                    return Walk::Refused(Failure::ChainTooLong {
                        length: length + 1,
                        max_depth: self.max_depth,
                    });
                }
                if let Some(anchor) = named
                    .iter()
                    .find(|a| current.verify_signature(Some(a.public_key())).is_ok())
                {
                    path.push(anchor);
                }
                if let Some(f) = self.path_failure(&path, now_t) {
                    return Walk::Refused(f);
                }
                return Walk::Clean { length };
            }
            let candidates: Vec<&X509Certificate<'_>> = presented
                .iter()
                .filter(|c| {
                    c.subject().as_raw() == current.issuer().as_raw() && !std::ptr::eq(*c, current)
                })
                .collect();
            let Some(first) = candidates.first() else {
                if current.subject().as_raw() == current.issuer().as_raw() {
                    return Walk::Refused(Failure::SelfSigned {
                        subject: dn::rfc2253(current.subject()),
                    });
                }
                return Walk::Refused(Failure::UnknownIssuer {
                    issuer: dn::rfc2253(current.issuer()),
                    intermediate_missing: std::ptr::eq(current, &leaf) && !self.anchors.is_empty(),
                });
            };
            let issuer = candidates
                .iter()
                .find(|i| current.verify_signature(Some(i.public_key())).is_ok())
                .copied()
                .unwrap_or(first);
            if let Err(f) = signed_by_any(current, &[issuer]) {
                return Walk::Refused(f);
            }
            // A root the client sent along is not trusted because it was sent
            // (OpenSSL: "self-signed certificate in certificate chain").
            if issuer.subject().as_raw() == issuer.issuer().as_raw() {
                return Walk::Refused(Failure::SelfSigned {
                    subject: dn::rfc2253(issuer.subject()),
                });
            }
            // An issuer must be a v3 CA certificate; a v1 certificate cannot say it is one.
            if issuer.version() != X509Version::V3 || !issuer.is_ca() {
                return Walk::Refused(Failure::NotACa {
                    subject: dn::rfc2253(issuer.subject()),
                });
            }
            if let Some(f) = pathlen_failure(issuer, length - 1) {
                return Walk::Refused(f);
            }
            if let Some(f) = time_failure(issuer, false, now_t) {
                return Walk::Refused(f);
            }
            match self.revocation_of(issuer, &crl_signers, now_t) {
                Ok(Some((at, reason))) => return Walk::Refused(revoked(issuer, at, reason)),
                Ok(None) => {}
                Err(f) => return Walk::Refused(f),
            }
            if let Some(f) = eku_failure(issuer, purpose) {
                return Walk::Refused(f);
            }
            if let Some(f) = unknown_critical(issuer) {
                return Walk::Refused(f);
            }
            length += 1;
            path.push(issuer);
            if length > MAX_WALK {
                return Walk::Refused(Failure::ChainTooLong {
                    length,
                    max_depth: self.max_depth,
                });
            }
            current = issuer;
        }
    }
}

fn revoked(x: &X509Certificate<'_>, at: OffsetDateTime, reason: Option<String>) -> Failure {
    Failure::Revoked {
        subject: dn::rfc2253(x.subject()),
        serial: certinfo::serial_hex(x.raw_serial()),
        at: Some(at),
        reason,
        small_serial: is_small_serial(x.raw_serial()),
    }
}

/// OIDs of SHA-1 signatures (RSA and ECDSA), which rustls and webpki no longer accept.
const SHA1_SIGNATURES: [&str; 3] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29", "1.2.840.10045.4.1"];

/// Checks that `x` is signed by the key of one of `issuers`.
fn signed_by_any(
    x: &X509Certificate<'_>,
    issuers: &[&X509Certificate<'_>],
) -> std::result::Result<(), Failure> {
    let alg = x.signature_algorithm.algorithm.to_id_string();
    if SHA1_SIGNATURES.contains(&alg.as_str()) {
        return Err(Failure::Other(format!(
            "{} is signed with SHA-1, which is no longer accepted (it can be forged); sign it again with SHA-256 (openssl x509 -sha256 …)",
            dn::rfc2253(x.subject())
        )));
    }
    let mut unsupported = false;
    for i in issuers {
        match x.verify_signature(Some(i.public_key())) {
            Ok(()) => return Ok(()),
            Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => unsupported = true,
            Err(_) => {}
        }
    }
    if unsupported {
        return Err(Failure::Other(format!(
            "{} is signed with an algorithm mtlsgate does not accept (signature algorithm {alg}); use RSA (2048 bits or more) with SHA-256, ECDSA P-256/P-384 or Ed25519",
            dn::rfc2253(x.subject())
        )));
    }
    Err(Failure::BadSignature {
        subject: dn::rfc2253(x.subject()),
    })
}

/// An extended key usage that is present but allows neither `purpose` nor any purpose.
/// No extension (always so for a v1 certificate) means any purpose.
fn eku_failure(x: &X509Certificate<'_>, purpose: Purpose) -> Option<Failure> {
    let ekus = certinfo::eku_names(x);
    let has_ext = matches!(x.extended_key_usage(), Ok(Some(_)));
    if has_ext
        && !ekus
            .iter()
            .any(|e| e == purpose.eku() || e == "anyExtendedKeyUsage")
    {
        return Some(Failure::WrongEku {
            wanted: purpose,
            has: ekus,
        });
    }
    None
}

/// A CA with `pathlen:N` may have at most N intermediates below it.
fn pathlen_failure(ca: &X509Certificate<'_>, below: usize) -> Option<Failure> {
    let limit = ca
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|b| b.value.path_len_constraint)?;
    if below > limit as usize {
        return Some(Failure::Other(format!(
            "{} may have at most {limit} intermediate CA(s) below it (basicConstraints pathlen:{limit}), but the chain has {below}",
            dn::rfc2253(ca.subject())
        )));
    }
    None
}

/// A critical extension the verifier does not understand makes the certificate unusable.
fn unknown_critical(x: &X509Certificate<'_>) -> Option<Failure> {
    let ext = x.extensions().iter().find(|e| {
        e.critical
            && matches!(
                e.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            )
    })?;
    Some(Failure::Other(format!(
        "{} has a critical extension ({}) that mtlsgate does not understand, so it must refuse the certificate",
        dn::rfc2253(x.subject()),
        ext.oid.to_id_string()
    )))
}

fn time_failure(x: &X509Certificate<'_>, is_leaf: bool, now: OffsetDateTime) -> Option<Failure> {
    let nb = OffsetDateTime::from_unix_timestamp(x.validity().not_before.timestamp()).ok()?;
    let na = OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp()).ok()?;
    if now > na {
        return Some(Failure::Expired {
            subject: dn::rfc2253(x.subject()),
            is_leaf,
            not_after: na,
            now,
        });
    }
    if now < nb {
        return Some(Failure::NotYetValid {
            subject: dn::rfc2253(x.subject()),
            not_before: nb,
            now,
        });
    }
    None
}

fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, x)| x)
}

/// A leaf key of a kind no TLS implementation mtlsgate talks to accepts: DSA, or ECDSA on
/// a curve other than P-256, P-384 and P-521. Described for the message.
fn unusable_leaf_key(x: &X509Certificate<'_>) -> Option<String> {
    let spki = x.public_key();
    if spki.algorithm.algorithm.to_id_string() == OID_DSA {
        return Some("a DSA key".into());
    }
    if let Ok(PublicKey::EC(_)) = spki.parsed() {
        let curve = crate::certinfo::curve_oid(spki).unwrap_or_else(|| "unnamed".into());
        if !matches!(
            curve.as_str(),
            "1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35"
        ) {
            return Some(format!("an ECDSA key on an unsupported curve ({curve})"));
        }
    }
    None
}

fn small_rsa(x: &X509Certificate<'_>) -> Option<usize> {
    match x.public_key().parsed() {
        Ok(PublicKey::RSA(r)) if r.key_size() < MIN_RSA_BITS => Some(r.key_size()),
        _ => None,
    }
}

fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevocationReason,
        RevokedCertParams, SerialNumber, SigningKey,
    };
    use time::macros::datetime;
    use time::Duration;

    /// "Now" for every test: fixed, so no test depends on the clock.
    const T0: OffsetDateTime = datetime!(2030-06-01 12:00 UTC);

    fn at(t: OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(t.unix_timestamp()).expect("after 1970"),
        ))
    }

    /// A CA: its certificate and what signs with it.
    struct TestCa {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params(
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.not_before = not_before;
        p.not_after = not_after;
        p
    }

    fn root(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let p = ca_params(name, T0 - Duration::days(365), T0 + Duration::days(3650));
        let der = p.self_signed(&key).expect("self-signed").der().to_vec();
        TestCa {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// An intermediate under `parent`; `is_ca: false` makes a certificate that is not a CA.
    fn intermediate(parent: &TestCa, name: &str, not_after: OffsetDateTime, is_ca: bool) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut p = ca_params(name, T0 - Duration::days(100), not_after);
        if !is_ca {
            p.is_ca = IsCa::ExplicitNoCa;
        }
        let der = p
            .signed_by(&key, &parent.issuer)
            .expect("sign")
            .der()
            .to_vec();
        TestCa {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// A client leaf valid from a day before T0 to 30 days after, unless `edit` says otherwise.
    fn leaf_with(issuer: &TestCa, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut p =
            CertificateParams::new(vec!["dev1.d.example.local".to_string()]).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, "dev1.d.example.local");
        p.not_before = T0 - Duration::days(1);
        p.not_after = T0 + Duration::days(30);
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut p);
        p.signed_by(&key, &issuer.issuer)
            .expect("sign")
            .der()
            .to_vec()
    }

    fn leaf(issuer: &TestCa) -> Vec<u8> {
        leaf_with(issuer, |_| {})
    }

    /// The same certificate as X.509 v1: the `[0]` version and `[3]` extensions dropped
    /// from the TBSCertificate, re-signed by `signer` (rcgen cannot make v1 itself).
    fn to_v1(der: &[u8], signer: &KeyPair) -> Vec<u8> {
        let signed = crate::der::split_signed(der).expect("certificate");
        let parts = crate::der::elements(signed.tbs.value).expect("tbs");
        let kept: Vec<&[u8]> = parts
            .iter()
            .filter(|t| t.tag != 0xa0 && t.tag != 0xa3)
            .map(|t| t.raw)
            .collect();
        let tbs = crate::der::encode(crate::der::SEQUENCE, &kept);
        let sig = signer.sign(&tbs).expect("sign");
        let out = crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
        let (_, x) = x509_parser::parse_x509_certificate(&out).expect("parses");
        assert_eq!(x.version(), X509Version::V1);
        out
    }

    fn serial_of(der: &[u8]) -> Vec<u8> {
        let (_, x) = x509_parser::parse_x509_certificate(der).expect("parses");
        x.raw_serial().to_vec()
    }

    /// A CRL signed by `ca` revoking `serials` two hours before T0.
    fn crl(ca: &TestCa, serials: &[Vec<u8>]) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: T0 - Duration::days(1),
            next_update: T0 + Duration::days(7),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: T0 - Duration::hours(2),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .expect("crl")
        .der()
        .to_vec()
    }

    fn verifier(bundle: &[&[u8]], crls: Vec<Vec<u8>>, depth: usize) -> Verifier {
        Verifier::new(bundle.iter().map(|d| d.to_vec()).collect(), crls, depth).expect("verifier")
    }

    fn check(
        v: &Verifier,
        chain: &[&[u8]],
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> std::result::Result<(), Failure> {
        let ders: Vec<CertificateDer<'_>> =
            chain.iter().map(|d| CertificateDer::from(*d)).collect();
        v.verify(&ders, purpose, at(now))
    }

    /// Asserts the variant (by label), OpenSSL's wording and the start of the message.
    #[track_caller]
    fn refused(
        r: std::result::Result<(), Failure>,
        label: &str,
        openssl: &str,
        start: &str,
    ) -> Failure {
        let f = r.expect_err("must be refused");
        assert_eq!(f.label(), label, "{f}");
        assert_eq!(f.openssl_reason(), openssl, "{f}");
        let msg = f.to_string();
        assert!(
            msg.starts_with(start),
            "{msg}\n  should start with\n{start}"
        );
        assert!(
            !msg.contains("Error") && !msg.contains('{'),
            "Debug text in {msg}"
        );
        f
    }

    /// Root → intermediate → leaf, as mtlsgate's own CA issues.
    fn pki() -> (TestCa, TestCa) {
        let r = root("Test Root");
        let i = intermediate(&r, "Test Intermediate", T0 + Duration::days(1000), true);
        (r, i)
    }

    #[test]
    fn good_chain_passes() {
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        let v = verifier(&[&r.der, &i.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn no_certificate() {
        let (r, _) = pki();
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[], Purpose::Client, T0),
            "no_certificate",
            "no certificate presented",
            "no certificate: ",
        );
    }

    #[test]
    fn expired_leaf() {
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        let f = refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0 + Duration::days(33)),
            "expired",
            "certificate has expired",
            "expired: the certificate expired at 2030-07-01 12:00:00 UTC (3d 0h ago)",
        );
        assert!(matches!(f, Failure::Expired { is_leaf: true, .. }));
    }

    #[test]
    fn expired_intermediate() {
        let r = root("Test Root");
        let i = intermediate(&r, "Old Intermediate", T0 - Duration::days(2), true);
        let l = leaf_with(&i, |p| p.not_before = T0 - Duration::days(50));
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        let f = refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "expired",
            "certificate has expired",
            "expired: the issuing CA certificate CN=Old Intermediate expired at ",
        );
        assert!(matches!(f, Failure::Expired { is_leaf: false, .. }));
    }

    #[test]
    fn not_yet_valid() {
        let (r, i) = pki();
        let l = leaf_with(&i, |p| p.not_before = T0 + Duration::days(3));
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "not_yet_valid",
            "certificate is not yet valid",
            "not yet valid: CN=dev1.d.example.local becomes valid at 2030-06-04 12:00:00 UTC (in 3d 0h)",
        );
    }

    #[test]
    fn unknown_issuer_with_the_intermediate_missing() {
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        let f = refused(
            check(&v, &[&l], Purpose::Client, T0),
            "unknown_issuer",
            "unable to get local issuer certificate",
            "unknown issuer: the certificate was issued by CN=Test Intermediate, which is neither in the file nor in the CA bundle; the intermediate certificate is missing",
        );
        assert!(matches!(
            f,
            Failure::UnknownIssuer {
                intermediate_missing: true,
                ..
            }
        ));
    }

    #[test]
    fn unknown_issuer_another_ca() {
        let (_, i) = pki();
        let other = root("Other Root");
        let l = leaf(&i);
        let v = verifier(&[&other.der], vec![], DEFAULT_DEPTH);
        let f = refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "unknown_issuer",
            "unable to get local issuer certificate",
            "unknown issuer: the certificate was issued by CN=Test Root, which the CA bundle does not trust",
        );
        assert!(matches!(
            f,
            Failure::UnknownIssuer {
                intermediate_missing: false,
                ..
            }
        ));
    }

    #[test]
    fn self_signed_not_in_bundle() {
        let (r, _) = pki();
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["me".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "me");
        p.not_before = T0 - Duration::days(1);
        p.not_after = T0 + Duration::days(1);
        let me = p.self_signed(&key).expect("self-signed").der().to_vec();
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&me], Purpose::Client, T0),
            "self_signed",
            "self-signed certificate",
            "self-signed: CN=me signed itself and is not in the CA bundle",
        );
    }

    #[test]
    fn wrong_eku() {
        let (r, i) = pki();
        let l = leaf_with(&i, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
        });
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "wrong_eku",
            "unsupported certificate purpose",
            "wrong EKU: the certificate may be used for serverAuth but not for TLS client authentication (it lacks the clientAuth extended key usage)",
        );
        assert_eq!(check(&v, &[&l, &i.der], Purpose::Server, T0), Ok(()));
    }

    #[test]
    fn revoked_leaf() {
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(
            &[&r.der],
            vec![crl(&i, &[serial_of(&l)]), crl(&r, &[])],
            DEFAULT_DEPTH,
        );
        let f = refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "revoked",
            "certificate revoked",
            "revoked: CN=dev1.d.example.local (serial ",
        );
        let msg = f.to_string();
        assert!(
            msg.contains(" was revoked at 2030-06-01 10:00:00 UTC (reason: keyCompromise)"),
            "{msg}"
        );
        // A random serial is not one a CRL entry could share with another certificate.
        assert!(!msg.contains("-set_serial"), "{msg}");
        // Another leaf of the same intermediate is not affected.
        let other = leaf(&i);
        assert_eq!(check(&v, &[&other, &i.der], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn revoked_intermediate() {
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(
            &[&r.der],
            vec![crl(&i, &[]), crl(&r, &[serial_of(&i.der)])],
            DEFAULT_DEPTH,
        );
        refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "revoked",
            "certificate revoked",
            "revoked: CN=Test Intermediate (serial ",
        );
    }

    #[test]
    fn crl_signed_by_another_key_refuses_instead_of_revoking() {
        let (r, i) = pki();
        let l = leaf(&i);
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        // Same name as the intermediate, different key: its CRL is not the intermediate's.
        let impostor = intermediate(&r, "Test Intermediate", T0 + Duration::days(10), true);
        let v = verifier(&[&r.der], vec![crl(&impostor, &[])], DEFAULT_DEPTH);
        // Fail closed, as webpki and OpenSSL ("CRL signature failure") do, v3 and v1 alike.
        for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
            let f = refused(
                check(&v, &chain, Purpose::Client, T0),
                "other",
                "certificate verify failed",
                "verification failed: ",
            );
            assert!(f.to_string().contains("CRL"), "{f}");
        }
        let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        assert_eq!(check(&v, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn strict_crls_refuse_a_missing_or_expired_crl_and_lenient_ones_do_not() {
        let (r, i) = pki();
        let l = leaf(&i);
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        // Only the intermediate's CRL: nothing says whether the intermediate was revoked.
        let v = verifier(&[&r.der], vec![crl(&i, &[])], DEFAULT_DEPTH);
        for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
            let f = refused(
                check(&v, &chain, Purpose::Client, T0),
                "crl_missing",
                "unable to get certificate CRL",
                "no CRL for ",
            );
            assert!(f.to_string().contains("crl_check = \"lenient\""), "{f}");
        }
        let lenient = verifier(&[&r.der], vec![crl(&i, &[])], DEFAULT_DEPTH)
            .with_crl_check(CrlCheck::Lenient);
        assert_eq!(check(&lenient, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        assert_eq!(check(&lenient, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
        // Both CRLs, but checked after their nextUpdate (7 days after T0).
        let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
        let later = T0 + Duration::days(8);
        for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
            refused(
                check(&v, &chain, Purpose::Client, later),
                "crl_expired",
                "CRL has expired",
                "CRL expired: the CRL of ",
            );
        }
        let lenient = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH)
            .with_crl_check(CrlCheck::Lenient);
        assert_eq!(
            check(&lenient, &[&l, &i.der], Purpose::Client, later),
            Ok(())
        );
    }

    #[test]
    fn key_too_small() {
        let (r, i) = pki();
        // A 1024-bit RSA public key (openssl genrsa 1024); rcgen cannot generate one.
        let pem = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCmpxo4y7hY5q6mUQVyW09vsv8pZWC6k6cJdDfQ9+7BximF32/H+31R7H8vISYJjkbRePOAbhsanFBZJZziAegOJuofcD0bhq5R2vsJfd4y+/wipEzUi5pxjKMkmTETTMxyZGNwIeTViEuIcPTwefM/ySRo5KQjPRBYXHvHhoTm2QIDAQAB\n-----END PUBLIC KEY-----\n";
        let spki = rcgen::SubjectPublicKeyInfo::from_pem(pem).expect("spki");
        let mut p = CertificateParams::new(vec!["weak".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "weak");
        p.not_before = T0 - Duration::days(1);
        p.not_after = T0 + Duration::days(1);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let l = p.signed_by(&spki, &i.issuer).expect("sign").der().to_vec();
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "key_too_small",
            "EE certificate key too small",
            "key too small: CN=weak has a 1024-bit RSA key; at least 2048 bits are required",
        );
        // The same as v1.
        let l1 = to_v1(&l, i.issuer.key());
        refused(
            check(&v, &[&l1, &i.der], Purpose::Client, T0),
            "key_too_small",
            "EE certificate key too small",
            "key too small: CN=weak has a 1024-bit RSA key",
        );
    }

    #[test]
    fn ca_used_as_leaf() {
        let (r, i) = pki();
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&i.der], Purpose::Client, T0),
            "ca_as_leaf",
            "unsupported certificate purpose",
            "CA certificate used as a leaf: CN=Test Intermediate is a CA certificate",
        );
    }

    #[test]
    fn bad_signature() {
        let (r, i) = pki();
        // Signed by another CA of the same name.
        let twin = root("Test Root");
        let twin_int = intermediate(&twin, "Test Intermediate", T0 + Duration::days(10), true);
        let l = leaf(&twin_int);
        let v = verifier(&[&r.der, &i.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l], Purpose::Client, T0),
            "bad_signature",
            "certificate signature failure",
            "bad signature: the signature on CN=dev1.d.example.local does not verify with its issuer's key",
        );
        let l1 = to_v1(&l, twin_int.issuer.key());
        refused(
            check(&v, &[&l1], Purpose::Client, T0),
            "bad_signature",
            "certificate signature failure",
            "bad signature: the signature on CN=dev1.d.example.local",
        );
    }

    #[test]
    fn chain_too_long() {
        let (r, i) = pki();
        let i2 = intermediate(&i, "Second Intermediate", T0 + Duration::days(10), true);
        let l = leaf(&i2);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i2.der, &i.der], Purpose::Client, T0),
            "chain_too_long",
            "certificate chain too long",
            "chain too long: 4 certificates, but the verify depth allows 2 below the leaf",
        );
        let deeper = verifier(&[&r.der], vec![], 3);
        assert_eq!(
            check(&deeper, &[&l, &i2.der, &i.der], Purpose::Client, T0),
            Ok(())
        );
        let l1 = to_v1(&l, i2.issuer.key());
        refused(
            check(&v, &[&l1, &i2.der, &i.der], Purpose::Client, T0),
            "chain_too_long",
            "certificate chain too long",
            "chain too long: 4 certificates",
        );
    }

    #[test]
    fn intermediate_that_is_not_a_ca() {
        let r = root("Test Root");
        let fake = intermediate(&r, "Not A CA", T0 + Duration::days(10), false);
        let l = leaf(&fake);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &fake.der], Purpose::Client, T0),
            "not_a_ca",
            "invalid CA certificate",
            "invalid CA: CN=Not A CA signs other certificates but is not a CA certificate",
        );
    }

    #[test]
    fn pinned_leaf_expired_and_revoked() {
        let (r, i) = pki();
        let l = leaf(&i);
        // The leaf itself in the bundle: trusted as it is (pinned), even without its issuer.
        let v = verifier(&[&l], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
        refused(
            check(&v, &[&l], Purpose::Client, T0 + Duration::days(31)),
            "expired",
            "certificate has expired",
            "expired: the certificate expired at 2030-07-01 12:00:00 UTC (1d 0h ago)",
        );
        let v = verifier(
            &[&r.der, &i.der, &l],
            vec![crl(&i, &[serial_of(&l)])],
            DEFAULT_DEPTH,
        );
        refused(
            check(&v, &[&l], Purpose::Client, T0),
            "revoked",
            "certificate revoked",
            "revoked: CN=dev1.d.example.local (serial ",
        );
    }

    #[test]
    fn v1_leaf_accepted_under_an_intermediate_and_a_root() {
        let (r, i) = pki();
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        // No EKU: any purpose.
        assert_eq!(check(&v, &[&l1, &i.der], Purpose::Client, T0), Ok(()));
        assert_eq!(check(&v, &[&l1, &i.der], Purpose::Server, T0), Ok(()));
        let direct = to_v1(&leaf(&r), r.issuer.key());
        assert_eq!(check(&v, &[&direct], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn v1_leaf_expired_and_not_yet_valid() {
        let (r, i) = pki();
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l1, &i.der], Purpose::Client, T0 + Duration::days(40)),
            "expired",
            "certificate has expired",
            "expired: the certificate expired at 2030-07-01 12:00:00 UTC (10d 0h ago)",
        );
        refused(
            check(&v, &[&l1, &i.der], Purpose::Client, T0 - Duration::days(2)),
            "not_yet_valid",
            "certificate is not yet valid",
            "not yet valid: CN=dev1.d.example.local becomes valid at ",
        );
    }

    #[test]
    fn v1_leaf_of_another_ca() {
        let (_, i) = pki();
        let other = root("Other Root");
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        let v = verifier(&[&other.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l1], Purpose::Client, T0),
            "unknown_issuer",
            "unable to get local issuer certificate",
            "unknown issuer: the certificate was issued by CN=Test Intermediate, which is neither in the file nor in the CA bundle; the intermediate certificate is missing",
        );
        refused(
            check(&v, &[&l1, &i.der], Purpose::Client, T0),
            "unknown_issuer",
            "unable to get local issuer certificate",
            "unknown issuer: the certificate was issued by CN=Test Root, which the CA bundle does not trust",
        );
    }

    #[test]
    fn v1_leaf_revoked_with_a_shared_small_serial() {
        let r = root("Test Root");
        // Two v1 certificates with serial 01, as `openssl x509 -req -set_serial 01` makes.
        let one = |name: &str| {
            let l = leaf_with(&r, |p| {
                p.serial_number = Some(SerialNumber::from_slice(&[1]));
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.distinguished_name.push(DnType::CommonName, name);
            });
            to_v1(&l, r.issuer.key())
        };
        let server = one("server");
        let client = one("client");
        let v = verifier(&[&r.der], vec![crl(&r, &[vec![1]])], DEFAULT_DEPTH);
        for (cert, cn) in [(&server, "server"), (&client, "client")] {
            let f = refused(
                check(&v, &[cert], Purpose::Client, T0),
                "revoked",
                "certificate revoked",
                &format!("revoked: CN={cn} (serial 01) was revoked at 2030-06-01 10:00:00 UTC (reason: keyCompromise); a CRL entry names an issuer and a serial, so every certificate this issuer signed with serial 01 is revoked with it (openssl x509 -set_serial reuses serials; give each certificate its own)"),
            );
            assert!(matches!(
                f,
                Failure::Revoked {
                    small_serial: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn v1_intermediate_is_not_a_ca_but_a_v1_self_signed_root_is_an_anchor() {
        let r = root("Test Root");
        let i = intermediate(&r, "V1 Intermediate", T0 + Duration::days(10), true);
        let i1 = to_v1(&i.der, r.issuer.key());
        let l = to_v1(&leaf(&i), i.issuer.key());
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i1], Purpose::Client, T0),
            "not_a_ca",
            "invalid CA certificate",
            "invalid CA: CN=V1 Intermediate signs other certificates",
        );
        // A v1 self-signed root in the bundle anchors a v1 leaf, and a v3 one too.
        let r1 = to_v1(&r.der, r.issuer.key());
        let v = verifier(&[&r1], vec![], DEFAULT_DEPTH);
        let direct = to_v1(&leaf(&r), r.issuer.key());
        assert_eq!(check(&v, &[&direct], Purpose::Client, T0), Ok(()));
        // …but presented by the client instead, it is just a self-signed certificate.
        let v = verifier(&[&i.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&direct, &r1], Purpose::Client, T0),
            "self_signed",
            "self-signed certificate",
            "self-signed: CN=Test Root signed itself",
        );
    }

    #[test]
    fn labels_table_matches_every_variant() {
        let now = T0;
        let all = [
            Failure::NoCertificate,
            Failure::Expired {
                subject: String::new(),
                is_leaf: true,
                not_after: now,
                now,
            },
            Failure::NotYetValid {
                subject: String::new(),
                not_before: now,
                now,
            },
            Failure::UnknownIssuer {
                issuer: String::new(),
                intermediate_missing: false,
            },
            Failure::SelfSigned {
                subject: String::new(),
            },
            Failure::WrongEku {
                wanted: Purpose::Client,
                has: vec![],
            },
            Failure::Revoked {
                subject: String::new(),
                serial: String::new(),
                at: None,
                reason: None,
                small_serial: false,
            },
            Failure::KeyTooSmall {
                subject: String::new(),
                bits: 1,
            },
            Failure::CaAsLeaf {
                subject: String::new(),
            },
            Failure::BadSignature {
                subject: String::new(),
            },
            Failure::ChainTooLong {
                length: 1,
                max_depth: 1,
            },
            Failure::NotACa {
                subject: String::new(),
            },
            Failure::CrlExpired {
                issuer: None,
                next_update: OffsetDateTime::UNIX_EPOCH,
            },
            Failure::CrlMissing { issuer: None },
            Failure::Other(String::new()),
        ];
        assert_eq!(all.len(), Failure::LABELS.len());
        for (i, f) in all.iter().enumerate() {
            assert_eq!(f.slot(), i);
            assert_eq!(f.label(), Failure::LABELS[i]);
        }
        let unique: HashSet<&str> = Failure::LABELS.iter().copied().collect();
        assert_eq!(unique.len(), Failure::LABELS.len());
    }

    // --- webpki error mapping: one assertion per variant ---

    fn cx() -> ErrorContext {
        ErrorContext {
            subject: "CN=leaf".into(),
            issuer: "CN=issuer".into(),
            serial: "01".into(),
            ekus: vec!["serverAuth".into()],
            purpose: Purpose::Client,
            chain_len: 3,
            max_depth: 2,
        }
    }

    #[track_caller]
    fn maps_to(e: webpki::Error, want: Failure) {
        assert_eq!(failure_from_webpki(&e, &cx()), want);
    }

    #[track_caller]
    fn sentence(e: webpki::Error, start: &str) {
        match failure_from_webpki(&e, &cx()) {
            Failure::Other(s) => {
                assert!(s.starts_with(start), "{s}");
                assert!(
                    !s.contains("Error") && !s.contains('{') && !s.contains("::"),
                    "{s}"
                );
            }
            f => panic!("expected a sentence, got {f}"),
        }
    }

    fn t(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    #[test]
    fn webpki_typed_mappings() {
        use webpki::Error as E;
        maps_to(
            E::CaUsedAsEndEntity,
            Failure::CaAsLeaf {
                subject: "CN=leaf".into(),
            },
        );
        maps_to(
            E::CertExpired {
                time: t(200),
                not_after: t(100),
            },
            Failure::Expired {
                subject: "CN=leaf".into(),
                is_leaf: true,
                not_after: unix_to_time(t(100)),
                now: unix_to_time(t(200)),
            },
        );
        maps_to(
            E::CertNotValidYet {
                time: t(100),
                not_before: t(200),
            },
            Failure::NotYetValid {
                subject: "CN=leaf".into(),
                not_before: unix_to_time(t(200)),
                now: unix_to_time(t(100)),
            },
        );
        maps_to(
            E::CertRevoked,
            Failure::Revoked {
                subject: "CN=leaf".into(),
                serial: "01".into(),
                at: None,
                reason: None,
                small_serial: true,
            },
        );
        maps_to(
            E::EmptyEkuExtension,
            Failure::WrongEku {
                wanted: Purpose::Client,
                has: vec![],
            },
        );
        maps_to(
            E::EndEntityUsedAsCa,
            Failure::NotACa {
                subject: "CN=issuer".into(),
            },
        );
        maps_to(
            E::InvalidSignatureForPublicKey,
            Failure::BadSignature {
                subject: "CN=leaf".into(),
            },
        );
        maps_to(
            E::MaximumPathDepthExceeded,
            Failure::ChainTooLong {
                length: 4,
                max_depth: 2,
            },
        );
        #[allow(deprecated)]
        maps_to(
            E::RequiredEkuNotFound,
            Failure::WrongEku {
                wanted: Purpose::Client,
                has: vec!["serverAuth".into()],
            },
        );
        maps_to(
            E::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
                required: KeyUsage::client_auth(),
                present: vec![vec![1, 3, 6, 1, 5, 5, 7, 3, 1]],
            }),
            Failure::WrongEku {
                wanted: Purpose::Client,
                has: vec!["serverAuth".into()],
            },
        );
        maps_to(
            E::UnknownIssuer,
            Failure::UnknownIssuer {
                issuer: "CN=issuer".into(),
                intermediate_missing: false,
            },
        );
    }

    #[test]
    fn webpki_sentence_mappings() {
        use webpki::Error as E;
        let sig_ctx = webpki::UnsupportedSignatureAlgorithmContext {
            signature_algorithm_id: vec![],
            supported_algorithms: vec![],
        };
        let key_ctx = webpki::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id: vec![],
            public_key_algorithm_id: vec![],
        };
        sentence(E::BadDer, "a certificate or CRL is not valid DER");
        sentence(
            E::TrailingData(webpki::DerTypeId::Certificate),
            "a certificate or CRL is not valid DER",
        );
        sentence(
            E::BadDerTime,
            "a date in a certificate or CRL is not encoded correctly",
        );
        sentence(
            E::CertDistrusted,
            "the certificate's public key is explicitly distrusted",
        );
        sentence(
            E::CertNotValidForName(webpki::InvalidNameContext {
                expected: rustls_pki_types::ServerName::try_from("a.example")
                    .expect("name")
                    .to_owned(),
                presented: vec![],
            }),
            "the certificate is not valid for the host name",
        );
        maps_to(
            E::CrlExpired {
                time: t(200),
                next_update: t(100),
            },
            Failure::CrlExpired {
                issuer: None,
                next_update: unix_to_time(t(100)),
            },
        );
        sentence(
            E::ExtensionValueInvalid,
            "a certificate extension has an invalid value",
        );
        sentence(
            E::InvalidCertValidity,
            "a certificate's validity period is invalid",
        );
        sentence(E::InvalidCrlNumber, "a CRL has an invalid CRL number");
        sentence(
            E::InvalidNetworkMaskConstraint,
            "a CA's IP address name constraint",
        );
        sentence(E::InvalidSerialNumber, "a serial number is invalid");
        sentence(
            E::InvalidCrlSignatureForPublicKey,
            "a CRL's signature does not verify",
        );
        sentence(
            E::IssuerNotCrlSigner,
            "a CRL was signed by a CA whose key usage",
        );
        sentence(
            E::MalformedDnsIdentifier,
            "a DNS name in the certificate is malformed",
        );
        sentence(
            E::MalformedExtensions,
            "the certificate's extensions are malformed",
        );
        sentence(
            E::MalformedNameConstraint,
            "a CA's name constraints are malformed",
        );
        sentence(
            E::MaximumNameConstraintComparisonsExceeded,
            "the chain is too complex",
        );
        sentence(E::MaximumPathBuildCallsExceeded, "the chain is too complex");
        sentence(
            E::MaximumSignatureChecksExceeded,
            "the chain is too complex",
        );
        sentence(
            E::NameConstraintViolation,
            "the certificate's names are outside",
        );
        sentence(
            E::PathLenConstraintViolated,
            "a CA in the chain issued below its path length limit",
        );
        sentence(
            E::SignatureAlgorithmMismatch,
            "the certificate's inner and outer signature algorithms differ",
        );
        maps_to(
            E::UnknownRevocationStatus,
            Failure::CrlMissing { issuer: None },
        );
        sentence(
            E::UnsupportedCertVersion,
            "the certificate is neither X.509 version 3 nor version 1",
        );
        sentence(
            E::UnsupportedCriticalExtension,
            "the certificate has a critical extension",
        );
        sentence(
            E::UnsupportedCrlIssuingDistributionPoint,
            "a CRL has an issuing distribution point",
        );
        sentence(
            E::UnsupportedCrlVersion,
            "a CRL is version 1; only version 2 CRLs are supported",
        );
        sentence(E::UnsupportedDeltaCrl, "delta CRLs are not supported");
        sentence(E::UnsupportedIndirectCrl, "indirect CRLs");
        sentence(
            E::UnsupportedNameType,
            "the name to check is of an unsupported type",
        );
        sentence(
            E::UnsupportedRevocationReason,
            "a CRL entry has an unknown revocation reason",
        );
        sentence(
            E::UnsupportedRevocationReasonsPartitioning,
            "a CRL covers only some revocation reasons",
        );
        #[allow(deprecated)]
        sentence(
            E::UnsupportedCrlSignatureAlgorithm,
            "a CRL is signed with an algorithm",
        );
        sentence(
            E::UnsupportedCrlSignatureAlgorithmContext(sig_ctx.clone()),
            "a CRL is signed with an algorithm",
        );
        #[allow(deprecated)]
        sentence(
            E::UnsupportedSignatureAlgorithm,
            "a certificate is signed with an algorithm",
        );
        sentence(
            E::UnsupportedSignatureAlgorithmContext(sig_ctx),
            "a certificate is signed with an algorithm",
        );
        #[allow(deprecated)]
        sentence(
            E::UnsupportedCrlSignatureAlgorithmForPublicKey,
            "a CRL's signature algorithm does not fit",
        );
        sentence(
            E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(key_ctx.clone()),
            "a CRL's signature algorithm does not fit",
        );
        #[allow(deprecated)]
        sentence(
            E::UnsupportedSignatureAlgorithmForPublicKey,
            "a certificate's signature algorithm does not fit",
        );
        sentence(
            E::UnsupportedSignatureAlgorithmForPublicKeyContext(key_ctx),
            "a certificate's signature algorithm does not fit",
        );
    }

    #[test]
    fn bundle_and_crl_loading_errors_are_sentences() {
        let e = Verifier::new(
            vec![b"\x30\x03\x02\x01\x01".to_vec()],
            vec![],
            DEFAULT_DEPTH,
        )
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "CA bundle: a certificate cannot be used as a trust anchor: a certificate or CRL is not valid DER: the file is damaged, or it is not a certificate"
        );
        let (r, _) = pki();
        let e = Verifier::new(
            vec![r.der.clone()],
            vec![b"\x30\x00".to_vec()],
            DEFAULT_DEPTH,
        )
        .expect_err("refused");
        let msg = e.to_string();
        assert!(msg.starts_with("CRL: it cannot be used: "), "{msg}");
        assert!(!msg.contains("BadDer") && !msg.contains("Error"), "{msg}");
    }

    // ---- RFC 5280 rules webpki does not apply (the x509-limbo families), each rebuilt
    // from our own certificates.

    /// A root made from `ca_params` after `edit`.
    fn root_with(name: &str, edit: impl FnOnce(&mut CertificateParams)) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut p = ca_params(name, T0 - Duration::days(365), T0 + Duration::days(3650));
        edit(&mut p);
        let der = p.self_signed(&key).expect("self-signed").der().to_vec();
        TestCa {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// Rewrites the extensions of a signed certificate (`ext_tag` 0xa3) or CRL (0xa0) and
    /// signs it again with `signer`. `edit` gets each extension's DER.
    fn rewrite_extensions(
        der: &[u8],
        signer: &KeyPair,
        ext_tag: u8,
        mut edit: impl FnMut(&mut Vec<Vec<u8>>),
    ) -> Vec<u8> {
        let signed = crate::der::split_signed(der).expect("signed");
        let parts = crate::der::elements(signed.tbs.value).expect("tbs");
        let mut rebuilt: Vec<Vec<u8>> = Vec::new();
        for t in &parts {
            if t.tag != ext_tag {
                rebuilt.push(t.raw.to_vec());
                continue;
            }
            let seq = crate::der::read_one(t.value).expect("extensions");
            let mut exts: Vec<Vec<u8>> = crate::der::elements(seq.value)
                .expect("extension list")
                .iter()
                .map(|e| e.raw.to_vec())
                .collect();
            edit(&mut exts);
            let refs: Vec<&[u8]> = exts.iter().map(|e| e.as_slice()).collect();
            let seq = crate::der::encode(crate::der::SEQUENCE, &refs);
            rebuilt.push(crate::der::encode(ext_tag, &[&seq]));
        }
        let refs: Vec<&[u8]> = rebuilt.iter().map(|e| e.as_slice()).collect();
        let tbs = crate::der::encode(crate::der::SEQUENCE, &refs);
        let sig = signer.sign(&tbs).expect("sign");
        crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig)
    }

    /// The OID (DER contents) of an extension.
    fn ext_oid(ext: &[u8]) -> Vec<u8> {
        let e = crate::der::read_one(ext).expect("extension");
        crate::der::elements(e.value).expect("fields")[0]
            .value
            .to_vec()
    }

    /// The extension with the same OID and value, marked critical.
    fn make_critical(ext: &[u8]) -> Vec<u8> {
        let e = crate::der::read_one(ext).expect("extension");
        let f = crate::der::elements(e.value).expect("fields");
        let value = f.last().expect("value").raw;
        crate::der::encode(
            crate::der::SEQUENCE,
            &[f[0].raw, &[0x01, 0x01, 0xff], value],
        )
    }

    const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
    const AKI: &[u8] = &[0x55, 0x1d, 0x23];
    const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];

    fn with_critical(der: &[u8], signer: &KeyPair, ext_tag: u8, oid: &[u8]) -> Vec<u8> {
        rewrite_extensions(der, signer, ext_tag, |exts| {
            let e = exts
                .iter_mut()
                .find(|e| ext_oid(e) == oid)
                .expect("extension present");
            *e = make_critical(e);
        })
    }

    #[track_caller]
    fn refused_other(r: std::result::Result<(), Failure>, has: &str) {
        let f = refused(
            r,
            "other",
            "certificate verify failed",
            "verification failed: ",
        );
        assert!(f.to_string().contains(has), "{f}\n  should contain\n{has}");
    }

    #[test]
    fn critical_key_identifiers_are_refused() {
        // limbo rfc5280::ski::critical-ski, rfc5280::aki::critical-aki
        let (r, i) = pki();
        let l = leaf(&i);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        // The root's SKI marked critical (same key and name, so the chain still links).
        let bad_root = with_critical(&r.der, r.issuer.key(), 0xa3, SKI);
        let v = verifier(&[&bad_root], vec![], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "CN=Test Root marks its subject key identifier extension critical",
        );
        // The same root under a v1 leaf (decided by the walk, not webpki).
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        refused_other(
            check(&v, &[&l1, &i.der], Purpose::Client, T0),
            "subject key identifier extension critical",
        );
        // A leaf whose AKI is critical.
        let with_aki = leaf_with(&i, |p| p.use_authority_key_identifier_extension = true);
        let bad_leaf = with_critical(&with_aki, i.issuer.key(), 0xa3, AKI);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&with_aki, &i.der], Purpose::Client, T0), Ok(()));
        refused_other(
            check(&v, &[&bad_leaf, &i.der], Purpose::Client, T0),
            "CN=dev1.d.example.local marks its authority key identifier extension critical",
        );
    }

    #[test]
    fn a_root_with_an_unknown_critical_extension_is_refused() {
        // limbo rfc5280::unknown-critical-extension-root
        let odd = |critical: bool| {
            root_with("Odd Root", |p| {
                let mut e = rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 55738, 666, 1],
                    vec![0x05, 0x00],
                );
                e.set_criticality(critical);
                p.custom_extensions = vec![e];
            })
        };
        let r = odd(true);
        let l = leaf(&r);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l], Purpose::Client, T0),
            "CN=Odd Root has a critical extension (1.3.6.1.4.1.55738.666.1)",
        );
        // Not critical: ignored, as RFC 5280 says.
        let r = odd(false);
        let l = leaf(&r);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn key_usage_must_agree_with_basic_constraints() {
        use rcgen::KeyUsagePurpose as Ku;
        // limbo rfc5280::root-inconsistent-ca-extensions: cA=TRUE without keyCertSign.
        let r = root_with("Inconsistent Root", |p| {
            p.key_usages = vec![Ku::DigitalSignature, Ku::CrlSign]
        });
        let l = leaf(&r);
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l], Purpose::Client, T0),
            "CN=Inconsistent Root is a CA certificate, but its key usage does not allow signing certificates (keyCertSign is missing)",
        );
        // The way mtlsgate's own CA makes roots is fine.
        let r = root_with("Good Root", |p| {
            p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign]
        });
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&leaf(&r)], Purpose::Client, T0), Ok(()));
        // limbo rfc5280::leaf-ku-keycertsign: a leaf that is no CA may not sign certificates.
        let l = leaf_with(&r, |p| {
            p.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign]
        });
        refused_other(
            check(&v, &[&l], Purpose::Client, T0),
            "CN=dev1.d.example.local is not a CA certificate, but its key usage allows signing certificates (keyCertSign)",
        );
        let l = leaf_with(&r, |p| p.key_usages = vec![Ku::DigitalSignature]);
        assert_eq!(check(&v, &[&l], Purpose::Client, T0), Ok(()));
    }

    #[test]
    fn name_constraints_in_a_leaf_are_refused() {
        // limbo rfc5280::nc::not-allowed-in-ee-{critical,noncritical}
        let (r, i) = pki();
        let l = leaf_with(&i, |p| {
            p.name_constraints = Some(rcgen::NameConstraints {
                permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.local".into())],
                excluded_subtrees: vec![],
            })
        });
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "CN=dev1.d.example.local is not a CA certificate, but it carries name constraints",
        );
    }

    #[test]
    fn the_trust_anchor_must_be_valid_and_named() {
        // limbo rfc5280::validity::expired-root: webpki reads only the anchor's name and key.
        let key = KeyPair::generate().expect("key");
        let p = ca_params(
            "Old Root",
            T0 - Duration::days(3650),
            T0 - Duration::days(2),
        );
        let r = TestCa {
            der: p.self_signed(&key).expect("root").der().to_vec(),
            issuer: Issuer::new(p, key),
        };
        let i = intermediate(&r, "Young Intermediate", T0 + Duration::days(100), true);
        let l = leaf_with(&i, |p| p.not_before = T0 - Duration::days(10));
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        refused(
            check(&v, &[&l, &i.der], Purpose::Client, T0),
            "expired",
            "certificate has expired",
            "expired: the issuing CA certificate CN=Old Root expired at ",
        );
        assert_eq!(
            check(&v, &[&l, &i.der], Purpose::Client, T0 - Duration::days(3)),
            Ok(())
        );
        // limbo rfc5280::ca-empty-subject: a CA must have a subject name.
        let nameless = root_with("x", |p| {
            p.distinguished_name = rcgen::DistinguishedName::new()
        });
        let l = leaf(&nameless);
        let v = verifier(&[&nameless.der], vec![], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l], Purpose::Client, T0),
            "the CA certificate that issued CN=dev1.d.example.local has an empty subject name",
        );
    }

    #[test]
    fn leaf_keys_tls_cannot_use_are_refused() {
        // limbo webpki::forbidden-p192-leaf, webpki::forbidden-dsa-leaf (public keys made
        // with openssl; rcgen cannot generate them).
        let p192 = "-----BEGIN PUBLIC KEY-----\nMEkwEwYHKoZIzj0CAQYIKoZIzj0DAQEDMgAENYiG5eW9m1y7VI5g1+/uaNA6z+3j\nfBDlBrhJzL0M8vQO7VkPpqM8lqv3sMFHEeJS\n-----END PUBLIC KEY-----\n";
        let dsa = "-----BEGIN PUBLIC KEY-----\nMIIBvjCCATMGByqGSM44BAEwggEmAoGBAIOslAzRyZtWGbT0ox7qInzreUN2HS8H\nwUiGtTiaveDLya04OKfIjr7cyBT3bh35Om0yXCl2xxVkiOeTdvTqE7crcXw0O6sX\nUTE/JuQjr6VaNdNwmB35t8Rgcb88JZrS9Sli2GPOI4kqbZuEGJiJXsh3emzLyqYE\n0QIGCWGUqiCbAh0A4widfMpBG8TjpdtdwEHx5DPzKf8zt2+OKA//JwKBgDBHw1q1\nwEbSwJ46MAxc84m5uOngGg+/A0XdXPq2oHxF0q5Y3+ygACAoummH/lnANFM/MJ13\nYxTJ4qid/FM6aSNEG7ExxGwiUkE22E7Myi5m2E6bDemTgEL7G8jNfyV1n2ZmBon4\nMRkN/mhTVF3IKwtHeRoi0PCUxebg3J+HEHDuA4GEAAKBgA0ttXj3r3j1/eZBE40W\nYQ5dvFlqgqietKuLVqm0wELpBqoQKtQJXKn2T6csi/UbpTtCMK1C+js/wLWDdrtP\nvnNSKnyB9Hi+KSdB8UnsMknteFCaEGyaILA2BqChnNMYK9eKPq9x4Uh1/no+QBxG\nXkc8QP2ocwSXoj/sF9iI1/m1\n-----END PUBLIC KEY-----\n";
        let (r, i) = pki();
        let v = verifier(&[&r.der], vec![], DEFAULT_DEPTH);
        for (pem, what) in [
            (
                p192,
                "an ECDSA key on an unsupported curve (1.2.840.10045.3.1.1)",
            ),
            (dsa, "a DSA key"),
        ] {
            // A P-256 leaf with its public key swapped for this one, signed again.
            let spki = pem::parse(pem).expect("pem").into_contents();
            let l = leaf_with(&i, |p| {
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.distinguished_name.push(DnType::CommonName, "odd");
            });
            let signed = crate::der::split_signed(&l).expect("signed");
            let parts = crate::der::elements(signed.tbs.value).expect("tbs");
            let mut fields: Vec<&[u8]> = parts.iter().map(|t| t.raw).collect();
            fields[6] = &spki; // version, serial, algorithm, issuer, validity, subject, key
            let tbs = crate::der::encode(crate::der::SEQUENCE, &fields);
            let sig = i.issuer.key().sign(&tbs).expect("sign");
            let l = crate::der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
            refused_other(
                check(&v, &[&l, &i.der], Purpose::Client, T0),
                &format!("CN=odd has {what}, which TLS cannot use"),
            );
        }
    }

    #[test]
    fn crls_without_a_crl_number_or_with_a_critical_one_cannot_be_used() {
        // limbo crl::crlnumber-missing, crl::crlnumber-critical
        let (r, i) = pki();
        let l = leaf(&i);
        let good = crl(&i, &[]);
        let missing = rewrite_extensions(&good, i.issuer.key(), 0xa0, |exts| {
            exts.retain(|e| ext_oid(e) != CRL_NUMBER)
        });
        let critical = with_critical(&good, i.issuer.key(), 0xa0, CRL_NUMBER);
        let l1 = to_v1(&leaf(&i), i.issuer.key());
        for (bad, why) in [
            (&missing, "it has no CRL number"),
            (&critical, "its CRL number extension is marked critical"),
        ] {
            let v = verifier(&[&r.der], vec![bad.clone(), crl(&r, &[])], DEFAULT_DEPTH);
            for chain in [[&l[..], &i.der[..]], [&l1[..], &i.der[..]]] {
                refused_other(
                    check(&v, &chain, Purpose::Client, T0),
                    &format!("the CRL of CN=Test Intermediate cannot be used: {why}"),
                );
            }
            // Lenient checking takes a CRL it cannot use for a missing one.
            let lenient = verifier(&[&r.der], vec![bad.clone(), crl(&r, &[])], DEFAULT_DEPTH)
                .with_crl_check(CrlCheck::Lenient);
            assert_eq!(check(&lenient, &[&l, &i.der], Purpose::Client, T0), Ok(()));
            // A conforming CRL of the same CA beside it is enough.
            let v = verifier(
                &[&r.der],
                vec![bad.clone(), good.clone(), crl(&r, &[])],
                DEFAULT_DEPTH,
            );
            assert_eq!(check(&v, &[&l, &i.der], Purpose::Client, T0), Ok(()));
        }
    }

    #[test]
    fn a_crl_from_a_ca_without_crlsign_cannot_be_used() {
        use rcgen::KeyUsagePurpose as Ku;
        // limbo crl::issuer-missing-crlsign: the root's key usage is keyCertSign only.
        let key = KeyPair::generate().expect("key");
        let mut p = ca_params(
            "Cert-only Root",
            T0 - Duration::days(365),
            T0 + Duration::days(3650),
        );
        p.key_usages = vec![Ku::KeyCertSign];
        let r = TestCa {
            der: p.self_signed(&key).expect("root").der().to_vec(),
            issuer: Issuer::new(
                p.clone(),
                KeyPair::from_pem(&key.serialize_pem()).expect("key"),
            ),
        };
        // rcgen will not sign a CRL for it: sign with the same key and name, usage unsaid.
        p.key_usages = vec![];
        let crl_signer = TestCa {
            der: r.der.clone(),
            issuer: Issuer::new(p, key),
        };
        let l = leaf(&r);
        let v = verifier(&[&r.der], vec![crl(&crl_signer, &[])], DEFAULT_DEPTH);
        refused_other(
            check(&v, &[&l], Purpose::Client, T0),
            "the CRL of CN=Cert-only Root cannot be used: the CA's key usage does not allow signing CRLs (cRLSign is missing)",
        );
        let r = root_with("Full Root", |p| {
            p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign]
        });
        let v = verifier(&[&r.der], vec![crl(&r, &[])], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&leaf(&r)], Purpose::Client, T0), Ok(()));
        // No key usage at all allows everything (limbo crl::issuer-no-keyusage-extension).
        let (r, i) = pki();
        let v = verifier(&[&r.der], vec![crl(&i, &[]), crl(&r, &[])], DEFAULT_DEPTH);
        assert_eq!(check(&v, &[&leaf(&i), &i.der], Purpose::Client, T0), Ok(()));
    }
}
