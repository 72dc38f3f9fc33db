//! Why a certificate was refused: [`Failure`], its sentence for people, its OpenSSL
//! wording for `$ssl_client_verify`, and its metrics label. Every variant carries what the
//! sentence names (which certificate, which extension, which name); no variant carries a
//! ready-made sentence. This module decides nothing.

use std::fmt;

use time::OffsetDateTime;

use super::Purpose;
use crate::certinfo::{human_duration, human_time};
use crate::profile::{WeakKey, MIN_RSA_BITS};

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
    /// The certificate is not valid for the name it was checked against (a TLS client
    /// checking a server). `names` lists its DNS and IP subject alternative names
    /// (`DNS:a, IP:b`), empty when it has none.
    NameMismatch {
        name: String,
        names: String,
    },
    /// A rule of the RFC 5280 profile that webpki does not apply.
    Profile(ProfileViolation),
    /// A signature made with an algorithm mtlsgate does not accept.
    Signature(SignatureRefusal),
    /// A CRL that cannot decide.
    Crl(CrlProblem),
    /// A certificate cannot be parsed.
    Unreadable(Unreadable),
    /// What rustls-webpki refused, where no variant above fits (webpki does not say
    /// which certificate).
    Webpki(WebpkiRefusal),
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
            Failure::NameMismatch { .. }
            | Failure::Profile(_)
            | Failure::Signature(_)
            | Failure::Crl(_)
            | Failure::Unreadable(_)
            | Failure::Webpki(_) => 14,
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
            Failure::NameMismatch { .. }
            | Failure::Profile(_)
            | Failure::Signature(_)
            | Failure::Crl(_)
            | Failure::Unreadable(_)
            | Failure::Webpki(_) => "certificate verify failed",
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
            Failure::NameMismatch { name, names } if names.is_empty() => write!(
                f,
                "verification failed: the certificate is not valid for {name}: it has no DNS or IP subject alternative names (the CN is not used for names)"
            ),
            Failure::NameMismatch { name, names } => write!(
                f,
                "verification failed: the certificate is not valid for {name}: it names only {names}"
            ),
            Failure::Profile(p) => write!(f, "verification failed: {p}"),
            Failure::Signature(s) => write!(f, "verification failed: {s}"),
            Failure::Crl(c) => write!(f, "verification failed: {c}"),
            Failure::Unreadable(u) => write!(f, "verification failed: {u}"),
            Failure::Webpki(w) => write!(f, "verification failed: {w}"),
        }
    }
}

/// A rule of the RFC 5280 profile that webpki lets through (the x509-limbo families),
/// refused on a path that is otherwise accepted. Each names the certificate (RFC 2253).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileViolation {
    /// A key identifier extension marked critical.
    CriticalKeyIdentifier {
        subject: String,
        extension: KeyIdentifier,
    },
    /// A leaf whose key usage allows keyCertSign.
    LeafSignsCertificates { subject: String },
    /// A leaf carrying name constraints.
    LeafNameConstraints { subject: String },
    /// A leaf key no TLS implementation mtlsgate talks to accepts.
    UnusableLeafKey { subject: String, key: UnusableKey },
    /// A CA with an empty subject; `issued` names the certificate below it.
    CaEmptySubject { issued: String },
    /// A CA whose key usage leaves out keyCertSign.
    CaWithoutKeyCertSign { subject: String },
    /// A CA with `pathlen:limit` and `below` intermediates below it.
    PathLenExceeded {
        subject: String,
        limit: u32,
        below: usize,
    },
    /// A critical extension the verifier does not understand, by OID.
    UnknownCriticalExtension { subject: String, oid: String },
}

/// Which key identifier extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIdentifier {
    Authority,
    Subject,
}

/// A leaf key TLS cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnusableKey {
    Dsa,
    /// ECDSA on a curve other than P-256, P-384 and P-521 (`None`: no named curve).
    Curve {
        oid: Option<String>,
    },
}

/// A signature algorithm mtlsgate refuses, on the certificate it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureRefusal {
    Sha1 {
        subject: String,
    },
    /// An algorithm the signature check does not support, by OID.
    Unsupported {
        subject: String,
        algorithm: String,
    },
}

/// A CRL that cannot decide, named by its issuer (RFC 2253).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlProblem {
    /// Its signature does not verify with its CA's key.
    BadSignature { issuer: String },
    /// Strict CRL checking: the CA's only CRLs cannot be used.
    Unusable { issuer: String, defect: CrlDefect },
}

/// Why a CRL cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlDefect {
    Unparsable,
    NoCrlNumber,
    CriticalCrlNumber,
    /// Its CA's key usage leaves out cRLSign.
    IssuerNotCrlSigner,
}

/// Which certificate cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Leaf,
    InChain,
}

/// A rustls-webpki refusal no typed [`Failure`] variant names. webpki does not say which
/// certificate or CRL, so neither does the sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebpkiRefusal {
    BadDer,
    BadDerTime,
    Distrusted,
    NotValidForName,
    ExtensionValueInvalid,
    InvalidValidity,
    InvalidCrlNumber,
    InvalidNetworkMask,
    InvalidSerialNumber,
    CrlBadSignature,
    IssuerNotCrlSigner,
    MalformedDnsName,
    MalformedExtensions,
    MalformedNameConstraint,
    TooComplex,
    NameConstraintViolation,
    PathLenViolated,
    SignatureAlgorithmMismatch,
    UnsupportedCertVersion,
    UnsupportedCriticalExtension,
    UnsupportedCrlDistributionPoint,
    UnsupportedCrlVersion,
    DeltaCrl,
    IndirectCrl,
    UnsupportedNameType,
    UnsupportedRevocationReason,
    ReasonsPartitioned,
    CrlSignatureAlgorithm,
    SignatureAlgorithm,
    CrlAlgorithmForKey,
    AlgorithmForKey,
    /// An error a later webpki added that this version does not map yet.
    Unnamed,
}

impl fmt::Display for ProfileViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProfileViolation as P;
        match self {
            P::CriticalKeyIdentifier { subject, extension } => write!(
                f,
                "{subject} marks its {} extension critical, which RFC 5280 forbids",
                match extension {
                    KeyIdentifier::Authority => "authority key identifier",
                    KeyIdentifier::Subject => "subject key identifier",
                }
            ),
            P::LeafSignsCertificates { subject } => write!(
                f,
                "{subject} is not a CA certificate, but its key usage allows signing certificates (keyCertSign), which RFC 5280 forbids"
            ),
            P::LeafNameConstraints { subject } => write!(
                f,
                "{subject} is not a CA certificate, but it carries name constraints, which only CA certificates may"
            ),
            P::UnusableLeafKey { subject, key } => {
                write!(f, "{subject} has ")?;
                match key {
                    UnusableKey::Dsa => write!(f, "a DSA key")?,
                    UnusableKey::Curve { oid } => write!(
                        f,
                        "an ECDSA key on an unsupported curve ({})",
                        WeakKey::curve_shown(oid)
                    )?,
                }
                write!(
                    f,
                    ", which TLS cannot use; use ECDSA P-256/P-384, Ed25519 or RSA ({MIN_RSA_BITS} bits or more)"
                )
            }
            P::CaEmptySubject { issued } => write!(
                f,
                "the CA certificate that issued {issued} has an empty subject name, which RFC 5280 forbids for a CA"
            ),
            P::CaWithoutKeyCertSign { subject } => write!(
                f,
                "{subject} is a CA certificate, but its key usage does not allow signing certificates (keyCertSign is missing)"
            ),
            P::PathLenExceeded {
                subject,
                limit,
                below,
            } => write!(
                f,
                "{subject} may have at most {limit} intermediate CA(s) below it (basicConstraints pathlen:{limit}), but the chain has {below}"
            ),
            P::UnknownCriticalExtension { subject, oid } => write!(
                f,
                "{subject} has a critical extension ({oid}) that mtlsgate does not understand, so it must refuse the certificate"
            ),
        }
    }
}

impl fmt::Display for SignatureRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureRefusal::Sha1 { subject } => write!(
                f,
                "{subject} is signed with SHA-1, which is no longer accepted (it can be forged); sign it again with SHA-256 (openssl x509 -sha256 …)"
            ),
            SignatureRefusal::Unsupported { subject, algorithm } => write!(
                f,
                "{subject} is signed with an algorithm mtlsgate does not accept (signature algorithm {algorithm}); use RSA ({MIN_RSA_BITS} bits or more) with SHA-256, ECDSA P-256/P-384 or Ed25519"
            ),
        }
    }
}

impl fmt::Display for CrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrlProblem::BadSignature { issuer } => write!(
                f,
                "the CRL of {issuer} does not verify with that CA's key: the CRL was altered, or signed by another CA with the same name"
            ),
            CrlProblem::Unusable { issuer, defect } => write!(
                f,
                "the CRL of {issuer} cannot be used: {defect}; whether the certificate was revoked cannot be checked (crl_check = \"lenient\" accepts certificates without a usable CRL)"
            ),
        }
    }
}

impl fmt::Display for CrlDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrlDefect::Unparsable => "it cannot be parsed",
            CrlDefect::NoCrlNumber => "it has no CRL number, which RFC 5280 requires in every CRL (openssl ca -gencrl writes one when a crlnumber file is configured)",
            CrlDefect::CriticalCrlNumber => "its CRL number extension is marked critical, which RFC 5280 forbids",
            CrlDefect::IssuerNotCrlSigner => "the CA's key usage does not allow signing CRLs (cRLSign is missing)",
        })
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unreadable::Leaf => {
                "the certificate cannot be parsed: it is damaged, or not a certificate"
            }
            Unreadable::InChain => "a certificate in the chain cannot be parsed",
        })
    }
}

impl fmt::Display for WebpkiRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WebpkiRefusal as W;
        f.write_str(match self {
            W::BadDer => "a certificate or CRL is not valid DER: the file is damaged, or it is not a certificate",
            W::BadDerTime => "a date in a certificate or CRL is not encoded correctly",
            W::Distrusted => "the certificate's public key is explicitly distrusted",
            W::NotValidForName => "the certificate is not valid for the host name it was checked against (it is not in its subject alternative names)",
            W::ExtensionValueInvalid => "a certificate extension has an invalid value",
            W::InvalidValidity => "a certificate's validity period is invalid: its notAfter is before its notBefore",
            W::InvalidCrlNumber => "a CRL has an invalid CRL number (negative, too long or badly encoded)",
            W::InvalidNetworkMask => "a CA's IP address name constraint has an invalid network mask",
            W::InvalidSerialNumber => "a serial number is invalid (negative, longer than 20 bytes or badly encoded)",
            W::CrlBadSignature => "a CRL's signature does not verify with its issuer's key: the CRL was altered, or signed by another CA with the same name",
            W::IssuerNotCrlSigner => "a CRL was signed by a CA whose key usage does not allow signing CRLs (cRLSign is missing)",
            W::MalformedDnsName => "a DNS name in the certificate is malformed",
            W::MalformedExtensions => "the certificate's extensions are malformed",
            W::MalformedNameConstraint => "a CA's name constraints are malformed",
            W::TooComplex => "the chain is too complex to check (too many candidate issuers or name constraints); send only the leaf and its own intermediates",
            W::NameConstraintViolation => "the certificate's names are outside what its issuing CA may certify (name constraints)",
            W::PathLenViolated => "a CA in the chain issued below its path length limit (basicConstraints pathlen)",
            W::SignatureAlgorithmMismatch => "the certificate's inner and outer signature algorithms differ, so it was altered",
            W::UnsupportedCertVersion => "the certificate is neither X.509 version 3 nor version 1 (or its version field is damaged)",
            W::UnsupportedCriticalExtension => "the certificate has a critical extension that mtlsgate does not understand, so it must refuse it",
            W::UnsupportedCrlDistributionPoint => "a CRL has an issuing distribution point that is not supported (no name, or a name relative to the issuer)",
            W::UnsupportedCrlVersion => "a CRL is version 1; only version 2 CRLs are supported (openssl ca -gencrl writes version 2 when a crlnumber file is configured)",
            W::DeltaCrl => "delta CRLs are not supported; give a complete CRL",
            W::IndirectCrl => "indirect CRLs (entries for another issuer's certificates) are not supported",
            W::UnsupportedNameType => "the name to check is of an unsupported type",
            W::UnsupportedRevocationReason => "a CRL entry has an unknown revocation reason",
            W::ReasonsPartitioned => "a CRL covers only some revocation reasons; give a CRL that covers all of them",
            W::CrlSignatureAlgorithm => "a CRL is signed with an algorithm mtlsgate does not accept (for example SHA-1)",
            W::SignatureAlgorithm => "a certificate is signed with an algorithm mtlsgate does not accept (for example SHA-1, or RSA with a key under 2048 bits)",
            W::CrlAlgorithmForKey => "a CRL's signature algorithm does not fit its issuer's key type",
            W::AlgorithmForKey => "a certificate's signature algorithm does not fit its issuer's key type (or the key is of an unsupported type or curve)",
            W::Unnamed => "the certificate was refused for a reason this version of mtlsgate cannot name",
        })
    }
}
