//! The admin API's client, for `mtlsgate devices … --server URL` and
//! `mtlsgate token create --server URL`: HTTPS (hyper over tokio-rustls, one HTTP/1.1
//! connection per request) to the CA server, which it trusts through a CA file, with an
//! administrator's client certificate. Answers are the authority's own records, so the
//! commands print them exactly as they print those of a local CA; a refusal is the
//! server's sentence as it is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use mtlsgate_authority::{Action, Device, DeviceDetail, NewTokenSecret};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{ErrorBody, StatusBody, TagsBody, TokenBody};

/// How long one request may take, connection and handshake included.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read.
const MAX_ANSWER: usize = 64 << 20;

/// Errors of the admin client; each a sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid --server `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{what} {path}: {cause}")]
    File {
        what: &'static str,
        path: String,
        cause: mtlsgate_pki::PkiError,
    },
    #[error("{path} holds no certificate that can be a trust anchor")]
    NoAnchor { path: String },
    #[error("the administrator certificate {cert} and key {key} cannot be used: {reason}")]
    Identity {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("TLS with {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("{server} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { server: String },
    /// The server refused: its sentence, as it is.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("{server} answered what this version does not understand: {reason}")]
    BadAnswer { server: String, reason: String },
}

/// The CA server's admin API, as an administrator.
pub struct AdminClient {
    text: String,
    authority: String,
    host: String,
    port: u16,
    prefix: String,
    tls: Arc<ClientConfig>,
}

/// `s` with every byte but unreserved ones percent-encoded (for a path segment or a query
/// value).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The rustls error somewhere in an error's sources.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

/// Server text safe to print: control characters escaped, at most 2,000 characters.
fn shown(s: &str) -> String {
    let clean = mtlsgate_pki::printable::printable(s.trim()).into_owned();
    match clean.char_indices().nth(2000) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

impl AdminClient {
    /// A client for `server` (`https://HOST[:PORT]`), trusting the CA certificates in
    /// `ca_file` and presenting `cert` (chain, PEM) with `key`.
    pub fn new(server: &str, ca_file: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: server.into(),
            reason: reason.into(),
        };
        let uri: http::Uri = server
            .trim()
            .parse()
            .map_err(|_| bad("it is not a URL; write it like https://ca.example.com:8444"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                "the CA server speaks HTTPS only; write it like https://ca.example.com:8444",
            ));
        }
        let auth = uri.authority().ok_or_else(|| bad("it names no host"))?;
        if auth.as_str().contains('@') || uri.query().is_some() {
            return Err(bad(
                "user names, passwords and queries are not allowed in it",
            ));
        }
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let prefix = uri.path().trim_end_matches('/').to_string();

        fn file(
            what: &'static str,
            p: &Path,
        ) -> impl FnOnce(mtlsgate_pki::PkiError) -> ClientError {
            let path = p.display().to_string();
            move |cause| ClientError::File { what, path, cause }
        }
        let anchors = mtlsgate_pki::pemfile::read_certs(ca_file)
            .map_err(file("cannot read the CA file", ca_file))?;
        let mut roots = RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(anchors.into_iter().map(CertificateDer::from));
        if added == 0 {
            return Err(ClientError::NoAnchor {
                path: ca_file.display().to_string(),
            });
        }
        let chain: Vec<CertificateDer<'static>> = mtlsgate_pki::pemfile::read_certs(cert)
            .map_err(file("cannot read the administrator certificate", cert))?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key_pair = mtlsgate_pki::key::read_key(key, None)
            .map_err(file("cannot read the administrator key", key))?;
        let pkcs8 = zeroize::Zeroizing::new(key_pair.serialize_der());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let identity = |reason: String| ClientError::Identity {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason,
        };
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| identity(format!("no usable TLS version ({e})")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| identity(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AdminClient {
            text: format!("https://{}{}", auth.as_str(), prefix),
            authority: auth.as_str().to_string(),
            port: auth.port_u16().unwrap_or(443),
            host,
            prefix,
            tls: Arc::new(cfg),
        })
    }

    /// The server's URL.
    pub fn server(&self) -> &str {
        &self.text
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let server = self.text.clone();
        let unreachable = |reason: String| ClientError::Unreachable {
            server: server.clone(),
            reason,
        };
        let tls_err = |e: &rustls::Error| ClientError::Tls {
            server: server.clone(),
            reason: e.to_string(),
        };
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| unreachable("its host is neither a DNS name nor an IP address".into()))?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match find_rustls(&e) {
                Some(r) => tls_err(r),
                None => unreachable(format!("the TLS handshake broke off ({e})")),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.prefix, path))
            .header(http::header::HOST, self.authority.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("mtlsgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(format!("the request cannot be built ({e})")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| match find_rustls(&e) {
                    Some(r) => tls_err(r),
                    None => unreachable(format!("no answer ({e})")),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ClientError::BadAnswer {
                    server: server.clone(),
                    reason: format!("its answer could not be read whole ({e})"),
                })?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::BadAnswer {
                server: self.text.clone(),
                reason: format!("the request could not be written as JSON ({e})"),
            })?),
            None => None,
        };
        let (status, bytes) =
            match tokio::time::timeout(TIMEOUT, self.exchange(method, path, body)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        server: self.text.clone(),
                    })
                }
            };
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .map(|b| shown(&b.error))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "{} answered HTTP {} {} (without an error message)",
                        self.text,
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    )
                });
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            server: self.text.clone(),
            reason: format!("its JSON does not have the expected fields ({e})"),
        })
    }

    /// `GET /v1/devices`: devices with `status`, and/or whose certificate expires within
    /// `expiring`.
    pub async fn devices(
        &self,
        status: Option<&str>,
        expiring: Option<time::Duration>,
    ) -> Result<Vec<Device>, ClientError> {
        let mut q = Vec::new();
        if let Some(s) = status {
            q.push(format!("status={}", escape(s)));
        }
        if let Some(d) = expiring {
            q.push(format!("expiring={}s", d.whole_seconds()));
        }
        let path = if q.is_empty() {
            "/v1/devices".to_string()
        } else {
            format!("/v1/devices?{}", q.join("&"))
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/devices/{id}`.
    pub async fn device(&self, id: &str) -> Result<DeviceDetail, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/devices/{}", escape(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/devices/{id}/{action}`.
    pub async fn set_status(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
    ) -> Result<Device, ClientError> {
        let body = StatusBody {
            reason: reason.map(str::to_string),
        };
        self.call(
            Method::POST,
            &format!("/v1/devices/{}/{}", escape(id), action.as_str()),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/devices/{id}/tags`.
    pub async fn tag(
        &self,
        id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Device, ClientError> {
        let body = TagsBody {
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        self.call(
            Method::POST,
            &format!("/v1/devices/{}/tags", escape(id)),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(&self, t: &TokenBody) -> Result<NewTokenSecret, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(t)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("dev1.d.example.local"), "dev1.d.example.local");
        assert_eq!(escape("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn server_text_is_printable() {
        assert_eq!(shown(" device x is revoked \n"), "device x is revoked");
        assert!(!shown("a\u{1b}[31mb").contains('\u{1b}'));
    }
}
