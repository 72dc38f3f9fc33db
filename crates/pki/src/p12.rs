//! PKCS#12 bundles of a certificate chain and its key, for curl `--cert-type P12`,
//! browsers and keychains. Modern mode uses PBES2 (PBKDF2-SHA256, AES-256-CBC) with an
//! HMAC-SHA256 MAC, OpenSSL 3's default; `legacy` uses 3DES and an HMAC-SHA1 MAC for old
//! macOS keychains and Java, which cannot read the modern form.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use sha1::Digest as _;

use crate::error::{PkiError, Result};

/// Builds a PKCS#12 file: `chain` is leaf first; `key_der` is PKCS#8.
pub fn build(
    chain: &[Vec<u8>],
    key_der: &[u8],
    password: &str,
    friendly_name: &str,
    legacy: bool,
) -> Result<Vec<u8>> {
    let err = |what: &str, e: p12_keystore::error::Error| {
        // Its X.509 errors are nom's, whose Display is Debug text.
        let why = match &e {
            p12_keystore::error::Error::X509Error(x) => crate::error::parse_reason(x),
            other => other.to_string(),
        };
        PkiError::Pkcs12(format!("cannot build PKCS#12: {what} ({why})"))
    };
    let certs = chain
        .iter()
        .map(|d| Certificate::from_der(d).map_err(|e| err("a certificate is unreadable", e)))
        .collect::<Result<Vec<_>>>()?;
    let key = PrivateKey::from_der(key_der).map_err(|e| err("the key is unreadable", e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| PkiError::Pkcs12("no certificate given".into()))?;
    let local_key_id = sha1::Sha1::digest(leaf).to_vec();
    let mut ks = KeyStore::new();
    ks.add_entry(
        friendly_name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    let mut w = ks.writer(password);
    w = if legacy {
        w.encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(2048)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(2048)
    } else {
        w.encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .encryption_iterations(100_000)
            .mac_algorithm(MacAlgorithm::HmacSha256)
            .mac_iterations(100_000)
    };
    w.write().map_err(|e| err("encoding failed", e))
}
