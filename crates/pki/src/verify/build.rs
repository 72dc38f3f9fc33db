//! Building the path for a v3 leaf: rustls-webpki decides (the same code rustls runs),
//! with mtlsgate's signature algorithms, CRL policy and verify depth, and reports the path
//! it accepted by index so the profile checks can read the same certificates.

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use super::{CrlCheck, Purpose, Verifier};

/// The signature algorithms webpki accepts: no SHA-1, no RSA under 2048 bits.
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

/// The path webpki accepted: the trust anchor's index in the bundle and the intermediates'
/// indices in the presented chain, from the leaf's issuer upwards.
pub(super) struct DecidedPath {
    pub(super) anchor: Option<usize>,
    pub(super) intermediates: Vec<usize>,
}

impl Verifier {
    /// rustls-webpki's decision for a v3 leaf: the path it built, by index.
    pub(super) fn decide(
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
}
