//! The admin API's client, for `mtlsgate devices … --server URL`,
//! `mtlsgate token create --server URL` and `mtlsgate login`: HTTPS to the CA server
//! through the contract's exchange (`mtlsgate-contract`), trusting the CA through a CA
//! file, with an administrator's client certificate. Request bodies are the contract's
//! types; answers are the authority's own records, so the commands print them exactly as
//! they print those of a local CA; a refusal is the server's sentence as it is.
//!
//! It lives with the CLI, not in the contract crate, because its answers are the
//! authority's records (`Device`, `DeviceDetail`): the contract crate stays free of the
//! authority, the store and their database drivers, since every device's agent links it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use mtlsgate_authority::{
    Action, Device, DeviceDetail, DeviceFilter, ImportRequest, NewTokenSecret, Page,
};
use mtlsgate_contract::https::{Call, Client, ExchangeError};
use mtlsgate_contract::wire::{ImportBody, NewToken, StatusBody, TagsBody, TokenBody};
use mtlsgate_contract::ServerUrl;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one request may take, connection and handshake included.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a large fleet's device list).
const MAX_ANSWER: usize = 64 << 20;

/// Errors of the admin client; each a sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    BadUrl(#[from] mtlsgate_contract::UrlError),
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
    /// The request did not bring an answer (unreachable, TLS, time limit, cut off).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The server refused: its sentence, as it is.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("{server} answered what this version does not understand: {reason}")]
    BadAnswer { server: String, reason: String },
}

/// The CA server's admin API, as an administrator.
pub struct AdminClient {
    client: Client,
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

impl AdminClient {
    /// A client for `server` (`https://HOST[:PORT]`), trusting the CA certificates in
    /// `ca_file` and presenting `cert` (chain, PEM) with `key`.
    pub fn new(server: &str, ca_file: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let url = ServerUrl::parse(server)?;
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
        let client = Client::new(
            &url,
            Arc::new(cfg),
            TIMEOUT,
            concat!("mtlsgate/", env!("CARGO_PKG_VERSION")),
        )
        .with_max_answer(MAX_ANSWER);
        Ok(AdminClient { client })
    }

    /// The server's URL.
    pub fn server(&self) -> &str {
        self.client.server().as_str()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::BadAnswer {
                server: self.server().to_string(),
                reason: format!("the request could not be written as JSON ({e})"),
            })?),
            None => None,
        };
        let answer = self
            .client
            .exchange(Call {
                method,
                body,
                ..Call::get(path)
            })
            .await?;
        if !answer.status.is_success() {
            return Err(ClientError::Refused {
                status: answer.status.as_u16(),
                message: answer
                    .sentence()
                    .unwrap_or_else(|| format!("{} answered {}", self.server(), answer.refusal())),
            });
        }
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::BadAnswer {
            server: self.server().to_string(),
            reason: format!("its JSON does not have the expected fields ({e})"),
        })
    }

    /// `GET /v1/devices?limit=…`: one page of the devices matching `f`, after `cursor`.
    pub async fn devices_page(
        &self,
        f: &DeviceFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Device>, ClientError> {
        let mut q = vec![format!("limit={limit}")];
        if let Some(s) = f.status {
            q.push(format!("status={}", s.as_str()));
        }
        if let Some(t) = f.expiring_before {
            q.push(format!("expiring_before={t}"));
        }
        for (name, v) in [
            ("tag", &f.tag),
            ("prefix", &f.id_prefix),
            ("search", &f.id_contains),
        ] {
            if let Some(v) = v {
                q.push(format!("{name}={}", escape(v)));
            }
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={}", escape(c)));
        }
        let path = format!("/v1/devices?{}", q.join("&"));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/devices/import`.
    pub async fn import_device(&self, r: &ImportRequest) -> Result<Device, ClientError> {
        let pem = |ders: &[Vec<u8>]| {
            ders.iter()
                .map(|d| mtlsgate_pki::pemfile::to_pem("CERTIFICATE", d))
                .collect::<String>()
        };
        let body = ImportBody {
            certificate: pem(&r.chain),
            device_id: r.device_id.clone(),
            issuers: (!r.issuers.is_empty()).then(|| pem(&r.issuers)),
            tags: r.tags.clone(),
        };
        self.call(Method::POST, "/v1/devices/import", Some(&body))
            .await
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
        let NewToken {
            token,
            expires_at,
            device_id,
            tags,
            lifetime_secs,
        } = self.call(Method::POST, "/v1/tokens", Some(t)).await?;
        Ok(NewTokenSecret {
            token,
            expires_at,
            device_id,
            tags,
            lifetime_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    use mtlsgate_authority::{Authority, Policy};
    use mtlsgate_ca_server::{CaServer, ServerNames};

    /// The admin client against the real server, in process: records come back as the
    /// authority's, refusals as the authority's sentences.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_admin_client_gets_records_and_sentences() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = dir.path().join("ca");
        let opts = mtlsgate_pki::ca::InitOptions {
            name: "Srv".into(),
            key_type: mtlsgate_pki::key::KeyType::P256,
            device_domain: "d.example.local".into(),
            passphrase: None,
            root_validity: time::Duration::days(30),
            intermediate_validity: time::Duration::days(30),
        };
        Authority::init(&ca, &opts, None, time::Duration::days(30))
            .await
            .expect("init");
        let mut auth = Authority::open(&ca, None, Policy::default())
            .await
            .expect("open");
        auth.load_keys(None).expect("keys");
        let names = ServerNames {
            dns: vec!["localhost".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            lifetime: time::Duration::days(1),
        };
        let server = CaServer::bind(auth, "127.0.0.1:0".parse().expect("addr"), names)
            .await
            .expect("bind");
        let port = server.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        let c = AdminClient::new(
            &format!("https://localhost:{port}/"),
            &ca.join("ca.crt"),
            &ca.join("admin.crt"),
            &ca.join("admin.key"),
        )
        .expect("client");
        assert_eq!(c.server(), format!("https://localhost:{port}"));
        let t = c
            .create_token(&TokenBody {
                device_id: Some("dev1".into()),
                ttl_secs: 600,
                tags: vec!["lab".into()],
                lifetime_secs: None,
            })
            .await
            .expect("token");
        assert!(t.token.starts_with("mtg_"));
        assert_eq!(t.device_id.as_deref(), Some("dev1.d.example.local"));
        assert_eq!(t.tags, ["lab"]);
        let page = c
            .devices_page(&DeviceFilter::default(), None, 10)
            .await
            .expect("list");
        assert!(page.items.is_empty() && page.next.is_none());
        let e = c
            .devices_page(&DeviceFilter::default(), Some("0a0b"), 10)
            .await
            .expect_err("bad cursor");
        assert!(
            matches!(&e, ClientError::Refused { status: 400, message } if message.starts_with("the cursor `0a0b` is not one this inventory gave out")),
            "{e}"
        );
        match c.device("dev1").await {
            Err(ClientError::Refused { status, message }) => {
                assert_eq!(status, 404);
                assert_eq!(message, "no device dev1.d.example.local in the inventory");
            }
            other => panic!("{:?}", other.map(|d| d.device.id)),
        }
        // A refusal by the authority is the authority's sentence.
        let e = c
            .create_token(&TokenBody {
                device_id: None,
                ttl_secs: 600,
                tags: vec!["no spaces".into()],
                lifetime_secs: None,
            })
            .await
            .expect_err("bad tag");
        assert_eq!(
            e.to_string(),
            "invalid tag `no spaces`: use 1 to 64 letters, digits and - _ . : / ="
        );
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("stopped")
            .expect("joined")
            .expect("ran");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("dev1.d.example.local"), "dev1.d.example.local");
        assert_eq!(escape("a/b c?"), "a%2Fb%20c%3F");
    }
}
