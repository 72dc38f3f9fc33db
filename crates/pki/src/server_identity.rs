//! The gateway's own certificate chain and private key, loaded the way nginx's
//! `ssl_certificate` / `ssl_certificate_key` (+ `ssl_password_file`) load them.
//!
//! Certificates are taken as they are, X.509 v1 or v3: the gateway presents them and
//! need not validate them. Keys may be PKCS#8 (plain, or encrypted with PBES2 using AES or
//! DES-EDE3-CBC, which is what OpenSSL 3's `openssl genrsa -des3` writes), SEC1
//! (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`); they come out as PKCS#8 DER, which
//! is what rustls wants. The key must belong to the certificate, and an RSA key must have
//! at least 2048 bits (OpenSSL 3 and nginx refuse smaller ones too).

use std::path::Path;

use zeroize::Zeroizing;

use crate::der;
use crate::error::{PkiError, Result};
use crate::profile;
use crate::{fsutil, pemfile};

/// A certificate chain and the private key that goes with its first certificate.
pub struct ServerIdentity {
    /// DER certificates, leaf first, in file order.
    pub chain: Vec<Vec<u8>>,
    /// The private key as PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Loads a server certificate chain from `cert` and its private key from `key`,
/// decrypting the key with `passphrase` if it is encrypted.
pub fn load_server_identity(
    cert: &Path,
    key: &Path,
    passphrase: Option<&[u8]>,
) -> Result<ServerIdentity> {
    let chain = pemfile::read_certs(cert)?;
    let key_name = key.display().to_string();
    let data = Zeroizing::new(fsutil::read(key)?);
    let key_pkcs8 = key_to_pkcs8(&key_name, &data, passphrase)?;
    let kp = rcgen::KeyPair::try_from(key_pkcs8.as_slice()).map_err(|e| PkiError::BadKey {
        path: key_name.clone(),
        reason: format!("not a usable private key ({e})"),
    })?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| PkiError::BadCertificate {
            path: cert.display().to_string(),
            reason: format!("cannot be parsed: {}", crate::error::parse_reason(&e)),
        })?;
    let key_spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let same = <x509_parser::x509::SubjectPublicKeyInfo<'_> as x509_parser::prelude::FromDer<
        '_,
        x509_parser::error::X509Error,
    >>::from_der(&key_spki)
    .map(|(_, spki)| spki.subject_public_key.data == leaf.public_key().subject_public_key.data)
    .unwrap_or(false);
    if !same {
        return Err(PkiError::KeyMismatch {
            cert: cert.display().to_string(),
            key: key_name,
        });
    }
    Ok(ServerIdentity { chain, key_pkcs8 })
}

const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Any supported private key PEM (or DER) as PKCS#8 DER.
fn key_to_pkcs8(name: &str, data: &[u8], passphrase: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>> {
    let blocks = pemfile::parse_blocks(name, data)?;
    let block = blocks
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY") || b.label == "DER")
        .ok_or_else(|| PkiError::Missing {
            path: name.into(),
            what: "private key (expected a `-----BEGIN PRIVATE KEY-----` block)".into(),
        })?;
    let bad = |reason: String| PkiError::BadKey {
        path: name.into(),
        reason,
    };
    if block.legacy_encrypted {
        return Err(bad(
            "it is encrypted in OpenSSL's legacy format (Proc-Type: 4,ENCRYPTED), which mtlsgate does not read; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.key -out server.key` (it asks for the old passphrase, then a new one)".into(),
        ));
    }
    let der = Zeroizing::new(block.der);
    let pkcs8 = match block.label.as_str() {
        "ENCRYPTED PRIVATE KEY" => decrypt(name, &der, passphrase)?,
        "PRIVATE KEY" => der,
        "RSA PRIVATE KEY" => pkcs1_to_pkcs8(&der),
        "EC PRIVATE KEY" => sec1_to_pkcs8(name, &der)?,
        "DER" => {
            if pkcs8::der::Decode::from_der(&der)
                .map(|_: pkcs8::PrivateKeyInfo<'_>| ())
                .is_ok()
            {
                der
            } else if pkcs8::der::Decode::from_der(&der)
                .map(|_: pkcs8::EncryptedPrivateKeyInfo<'_>| ())
                .is_ok()
            {
                decrypt(name, &der, passphrase)?
            } else if looks_like_sec1(&der) {
                sec1_to_pkcs8(name, &der)?
            } else {
                pkcs1_to_pkcs8(&der)
            }
        }
        other => {
            return Err(bad(format!(
                "`{other}` keys are not supported; use RSA (2048 bits or more) or ECDSA keys in PKCS#8, PKCS#1 or SEC1 form (openssl pkey -in KEY -out server.key converts most keys)"
            )))
        }
    };
    let info: pkcs8::PrivateKeyInfo<'_> = pkcs8::der::Decode::from_der(&pkcs8)
        .map_err(|e| bad(format!("not a readable private key ({e})")))?;
    if info.algorithm.oid.as_bytes() == RSA_ENCRYPTION {
        let bits = rsa_modulus_bits(info.private_key)
            .ok_or_else(|| bad("not a readable RSA private key".into()))?;
        if profile::rsa_too_small(bits) {
            return Err(PkiError::ServerKeyTooSmall {
                path: name.into(),
                bits,
            });
        }
    }
    Ok(pkcs8)
}

fn decrypt(name: &str, der: &[u8], passphrase: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>> {
    let reencrypt =
        "re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.key -out server.key`";
    let enc: pkcs8::EncryptedPrivateKeyInfo<'_> =
        pkcs8::der::Decode::from_der(der).map_err(|e| PkiError::BadKey {
            path: name.into(),
            reason: format!(
                "it is encrypted with a scheme mtlsgate cannot read ({e}); {reencrypt}"
            ),
        })?;
    let pass = passphrase.ok_or_else(|| PkiError::KeyPassphraseNeeded { path: name.into() })?;
    // A wrong passphrase shows as bad padding, which pkcs5 0.7 reports as EncryptFailed.
    let doc = enc.decrypt(pass).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        ) => PkiError::WrongPassphrase { path: name.into() },
        pkcs8::Error::EncryptedPrivateKey(p) => PkiError::BadKey {
            path: name.into(),
            reason: format!(
                "it is encrypted with a scheme mtlsgate cannot decrypt ({p}); {reencrypt}"
            ),
        },
        _ => PkiError::WrongPassphrase { path: name.into() },
    })?;
    let plain = Zeroizing::new(doc.as_bytes().to_vec());
    // A wrong passphrase can still unpad correctly by chance; then the plaintext is noise.
    if pkcs8::der::Decode::from_der(&plain)
        .map(|_: pkcs8::PrivateKeyInfo<'_>| ())
        .is_err()
    {
        return Err(PkiError::WrongPassphrase { path: name.into() });
    }
    Ok(plain)
}

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo`.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
    let version = der::encode(der::INTEGER, &[&[0]]);
    let oid = der::encode(der::OID, &[RSA_ENCRYPTION]);
    let alg = der::encode(der::SEQUENCE, &[&oid, &[0x05, 0x00]]);
    let key = Zeroizing::new(der::encode(der::OCTET_STRING, &[pkcs1]));
    Zeroizing::new(der::encode(der::SEQUENCE, &[&version, &alg, &key]))
}

/// `ECPrivateKey ::= SEQUENCE { version INTEGER (1), privateKey OCTET STRING, … }`
fn looks_like_sec1(data: &[u8]) -> bool {
    der::read_one(data)
        .filter(|t| t.tag == der::SEQUENCE)
        .and_then(|t| der::elements(t.value))
        .is_some_and(|e| {
            e.len() >= 2
                && e[0].tag == der::INTEGER
                && e[0].value == [1]
                && e[1].tag == der::OCTET_STRING
        })
}

/// A SEC1 `EC PRIVATE KEY` as PKCS#8, for whichever of P-256, P-384 and P-521 it is on.
fn sec1_to_pkcs8(name: &str, sec1: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        ECDSA_P521_SHA512_ASN1_SIGNING,
    };
    for alg in [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &ECDSA_P521_SHA512_ASN1_SIGNING,
    ] {
        if let Ok(kp) = EcdsaKeyPair::from_private_key_der(alg, sec1) {
            if let Ok(doc) = kp.to_pkcs8v1() {
                return Ok(Zeroizing::new(doc.as_ref().to_vec()));
            }
        }
    }
    Err(PkiError::BadKey {
        path: name.into(),
        reason: "not a readable EC private key on P-256, P-384 or P-521".into(),
    })
}

/// The size of the modulus of a PKCS#1 `RSAPrivateKey`
/// (`SEQUENCE { version, modulus, publicExponent, … }`).
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let seq = der::read_one(pkcs1).filter(|t| t.tag == der::SEQUENCE)?;
    let fields = der::elements(seq.value)?;
    let n = fields.get(1).filter(|t| t.tag == der::INTEGER)?;
    Some(der::integer_bits(n.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Files {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn put(&self, name: &str, data: &[u8]) -> std::path::PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, data).expect("write");
            p
        }
        fn cert_for(&self, name: &str, key: &KeyPair) -> std::path::PathBuf {
            let p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            self.put(name, p.self_signed(key).expect("cert").pem().as_bytes())
        }
    }

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        pemfile::to_pem(label, der).into_bytes()
    }

    /// The private key inside a PKCS#8 document (PKCS#1 for RSA, SEC1 for EC).
    fn inner(pkcs8_der: &[u8]) -> Vec<u8> {
        let info: pkcs8::PrivateKeyInfo<'_> =
            pkcs8::der::Decode::from_der(pkcs8_der).expect("pkcs8");
        info.private_key.to_vec()
    }

    #[test]
    fn plain_pkcs8_sec1_and_pkcs1_keys_load_as_pkcs8() {
        let f = Files::new();
        let ec = KeyPair::generate().expect("key");
        let cert = f.cert_for("ec.crt", &ec);
        let plain = f.put("ec.key", &pem("PRIVATE KEY", &ec.serialize_der()));
        let id = load_server_identity(&cert, &plain, None).expect("pkcs8");
        assert_eq!(id.chain.len(), 1);
        assert_eq!(id.key_pkcs8.as_slice(), ec.serialize_der().as_slice());

        let sec1 = f.put(
            "ec-sec1.key",
            &pem("EC PRIVATE KEY", &inner(&ec.serialize_der())),
        );
        let id = load_server_identity(&cert, &sec1, None).expect("sec1");
        assert!(KeyPair::try_from(id.key_pkcs8.as_slice()).is_ok());

        let rsa = crate::key::KeyType::Rsa2048.generate().expect("rsa");
        let cert = f.cert_for("rsa.crt", &rsa);
        let pkcs1 = f.put(
            "rsa.key",
            &pem("RSA PRIVATE KEY", &inner(&rsa.serialize_der())),
        );
        let id = load_server_identity(&cert, &pkcs1, None).expect("pkcs1");
        let back = KeyPair::try_from(id.key_pkcs8.as_slice()).expect("usable");
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&back),
            rcgen::PublicKeyData::subject_public_key_info(&rsa)
        );
    }

    #[test]
    fn encrypted_pkcs8_needs_the_right_passphrase() {
        let f = Files::new();
        let ec = KeyPair::generate().expect("key");
        let cert = f.cert_for("s.crt", &ec);
        let enc = crate::key::to_pkcs8_pem(&ec, Some(b"s3cret")).expect("encrypt");
        let key = f.put("s.key", enc.as_bytes());
        let id = load_server_identity(&cert, &key, Some(b"s3cret")).expect("aes");
        assert_eq!(id.key_pkcs8.as_slice(), ec.serialize_der().as_slice());
        let e = load_server_identity(&cert, &key, None).expect_err("no passphrase");
        assert_eq!(
            e.to_string(),
            format!("{} is encrypted: put its passphrase in a file and give it with --key-passphrase-file (key_passphrase_file in the configuration file), as nginx's ssl_password_file", key.display())
        );
        let e = load_server_identity(&cert, &key, Some(b"nope")).expect_err("wrong");
        assert!(matches!(e, PkiError::WrongPassphrase { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "the passphrase does not decrypt {} (wrong passphrase?)",
                key.display()
            )
        );
    }

    #[test]
    fn openssl_genrsa_des3_key_decrypts() {
        // testdata/README.md says how this was made (PBES2 + DES-EDE3-CBC, passphrase "test").
        let data = include_bytes!("../testdata/rsa2048-des3-pass-test.key");
        let pkcs8 = key_to_pkcs8("des3.key", data, Some(b"test")).expect("3DES");
        let kp = KeyPair::try_from(pkcs8.as_slice()).expect("usable RSA key");
        let f = Files::new();
        let cert = f.cert_for("d.crt", &kp);
        let key = f.put("d.key", data);
        let id = load_server_identity(&cert, &key, Some(b"test")).expect("loads");
        assert_eq!(id.key_pkcs8.as_slice(), pkcs8.as_slice());
        let e = key_to_pkcs8("des3.key", data, Some(b"wrong")).expect_err("wrong");
        assert!(matches!(e, PkiError::WrongPassphrase { .. }), "{e}");
        let e = key_to_pkcs8("des3.key", data, None).expect_err("none");
        assert!(matches!(e, PkiError::KeyPassphraseNeeded { .. }), "{e}");
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let f = Files::new();
        let a = KeyPair::generate().expect("key");
        let b = KeyPair::generate().expect("key");
        let cert = f.cert_for("a.crt", &a);
        let key = f.put("b.key", &pem("PRIVATE KEY", &b.serialize_der()));
        let e = load_server_identity(&cert, &key, None).expect_err("mismatch");
        assert_eq!(
            e.to_string(),
            format!(
                "the private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn rsa_1024_is_refused_with_the_way_out() {
        // testdata/README.md says how this was made.
        let data = include_bytes!("../testdata/rsa1024-pkcs1.key");
        let e = key_to_pkcs8("server.key", data, None).expect_err("too small");
        assert_eq!(
            e.to_string(),
            "the server key in server.key is a 1024-bit RSA key; at least 2048 bits are required (OpenSSL 3 and nginx refuse it too: \"ee key too small\"); make a new one with openssl genrsa -out server.key 2048"
        );
    }

    #[test]
    fn legacy_encrypted_pem_says_how_to_convert() {
        let data = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0123456789ABCDEF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let e = key_to_pkcs8("old.key", data, Some(b"x")).expect_err("legacy");
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "old.key: it is encrypted in OpenSSL's legacy format (Proc-Type: 4,ENCRYPTED)"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("openssl pkcs8 -topk8 -v2 aes-256-cbc"),
            "{msg}"
        );
    }

    #[test]
    fn v1_certificates_are_presented_as_they_are() {
        let f = Files::new();
        let ca_key = KeyPair::generate().expect("key");
        let key = KeyPair::generate().expect("key");
        let p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let v3 = p.self_signed(&key).expect("cert").der().to_vec();
        // Drop [0] version and [3] extensions and re-sign: a v1 certificate.
        let signed = der::split_signed(&v3).expect("signed");
        let parts: Vec<&[u8]> = der::elements(signed.tbs.value)
            .expect("tbs")
            .iter()
            .filter(|t| t.tag != 0xa0 && t.tag != 0xa3)
            .map(|t| t.raw)
            .collect();
        let tbs = der::encode(der::SEQUENCE, &parts);
        let sig = rcgen::SigningKey::sign(&ca_key, &tbs).expect("sign");
        let v1 = der::assemble_signed(&tbs, signed.algorithm.raw, &sig);
        let cert = f.put("v1.crt", &pem("CERTIFICATE", &v1));
        let k = f.put("v1.key", &pem("PRIVATE KEY", &key.serialize_der()));
        let id = load_server_identity(&cert, &k, None).expect("v1 loads");
        assert_eq!(id.chain, vec![v1]);
    }
}
