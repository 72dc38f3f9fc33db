//! The server certificate and key a gateway presents (temporary minimal version; the full
//! checks arrive with the pki round-two work).

use std::path::Path;

use crate::error::{PkiError, Result};
use crate::{key, pemfile};

/// A server's chain (DER, leaf first) and its key (PKCS#8 DER).
pub struct ServerIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

/// Loads a server certificate chain and its key.
pub fn load_server_identity(
    cert: &Path,
    key_path: &Path,
    passphrase: Option<&[u8]>,
) -> Result<ServerIdentity> {
    let chain = pemfile::read_certs(cert)?;
    let kp = key::read_key(key_path, passphrase)?;
    let leaf = chain.first().ok_or_else(|| PkiError::Missing {
        path: cert.display().to_string(),
        what: "certificate".into(),
    })?;
    crate::ca::check_pair(leaf, &kp, cert, key_path)?;
    Ok(ServerIdentity {
        chain,
        key_pkcs8: zeroize::Zeroizing::new(kp.serialize_der()),
    })
}
