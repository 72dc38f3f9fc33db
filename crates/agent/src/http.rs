//! The agent's side of the contract's endpoints (`docs/device-lifecycle.md`): which
//! requests it sends, with which bodies (the contract's own types, `mtlsgate-contract`),
//! and errors that say what the agent was doing and, when the server refused, the server's
//! own sentence from its `{"error": "…"}` body:
//! `renewal refused by https://ca.example:8444: the device is revoked`. The exchange itself
//! (one HTTP/1.1 connection per request, the time limit, the cap on the answer) is the
//! contract's [`Client`].
//!
//! Requests sent (every one with `Host`, `User-Agent: mtlsgate-agent/VERSION` and
//! `Accept`; those with a body with `Content-Type: application/json`):
//!
//! | request | body | auth |
//! |---|---|---|
//! | `POST /v1/enroll` | `{"csr", "token"?, "agent_version", "hostname"?}` | the token in the body, or none |
//! | `GET /v1/enroll/{device_id}` | – | `Authorization: Bearer mtp_…` |
//! | `POST /v1/renew` | `{"csr", "agent_version"}` | mTLS with `client.crt`/`client.key` |
//! | `POST /v1/recover` | `{"device_id", "recovery_token", "csr", "signature", "certificate", "agent_version"}` | the proof in the body |
//! | `GET /v1/ca.pem` | – | none (`Accept: application/x-pem-file`) |
//!
//! With a server URL under `/.well-known/est` (`agent enroll --est URL`) the agent speaks
//! EST (RFC 7030) instead: enrollment is `POST …/simpleenroll` (the token as the HTTP Basic
//! password, the CSR as base64 DER), renewal `POST …/simplereenroll` over mTLS, the CA
//! bundle `GET …/cacerts`; answers are certs-only CMS, refusals plain text. EST has no
//! approval polling and no recovery: a device enrolled over EST whose certificate expired
//! enrolls again with a new token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use mtlsgate_contract::https::{Answer as Reply, Call, Client, ExchangeError};
use mtlsgate_contract::wire::{EnrollBody, RenewBody};
use mtlsgate_pki::certinfo::CertInfo;
use mtlsgate_pki::pemfile;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use mtlsgate_contract::wire::{Issued, Pending as PendingAnswer, RecoverBody};
pub use mtlsgate_contract::ServerUrl;

/// How long one request may take, connection and TLS handshake included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer the agent reads.
const MAX_ANSWER: usize = 1 << 20;

/// What the agent was doing when a request failed (the start of its error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Enrollment,
    ApprovalCheck,
    Renewal,
    Recovery,
    CaDownload,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Enrollment => "enrollment",
            Op::ApprovalCheck => "the check for approval",
            Op::Renewal => "renewal",
            Op::Recovery => "recovery",
            Op::CaDownload => "the CA bundle download",
        })
    }
}

/// A request to the server that did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The server answered with an error status; `message` is its `error` sentence.
    #[error("{op} refused by {server}: {message}")]
    Refused {
        op: Op,
        server: String,
        status: u16,
        message: String,
    },
    #[error("{op} failed: cannot reach {server}: {reason}")]
    Unreachable {
        op: Op,
        server: String,
        reason: String,
    },
    #[error("{op} failed: TLS with {server}: {reason}")]
    Tls {
        op: Op,
        server: String,
        reason: String,
        /// The server's certificate was issued by a CA this device does not trust.
        unknown_issuer: bool,
    },
    #[error("{op} failed: {server} did not answer within {secs} s")]
    Timeout { op: Op, server: String, secs: u64 },
    #[error("{op} failed: {server} answered what this agent does not understand: {reason}")]
    BadAnswer {
        op: Op,
        server: String,
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's certificate was issued by a CA this device does not trust.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(
            self,
            ApiError::Tls {
                unknown_issuer: true,
                ..
            }
        )
    }

    /// The server is away or overloaded: worth retrying soon. Refusals and TLS
    /// verification failures are not (the agent still retries them, at the longest
    /// back-off).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::Timeout { .. } => true,
            ApiError::Refused { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ApiError::Tls { .. } | ApiError::BadAnswer { .. } => false,
        }
    }
}

/// The answer to an enrollment or an approval check.
#[derive(Debug)]
pub enum Answer {
    Issued(Issued),
    Pending(PendingAnswer),
}

/// One server, one TLS configuration.
pub(crate) struct Api {
    client: Client,
    /// The server URL is an EST base (`…/.well-known/est[/LABEL]`): speak EST.
    est: bool,
}

/// Whether `server` names an EST base (`https://HOST:PORT/.well-known/est[/LABEL]`).
pub fn is_est(server: &ServerUrl) -> bool {
    let p = server.prefix();
    p == "/.well-known/est" || p.starts_with("/.well-known/est/")
}

impl Api {
    pub fn new(server: &ServerUrl, tls: Arc<ClientConfig>, timeout: Duration) -> Self {
        Api {
            client: Client::new(
                server,
                tls,
                timeout,
                format!("mtlsgate-agent/{}", crate::AGENT_VERSION),
            )
            .with_max_answer(MAX_ANSWER),
            est: is_est(server),
        }
    }

    fn server(&self) -> String {
        self.client.server().to_string()
    }

    fn bad_answer(&self, op: Op, reason: String) -> ApiError {
        ApiError::BadAnswer {
            op,
            server: self.server(),
            reason,
        }
    }

    /// Sends one request and reads the whole answer.
    async fn call(&self, op: Op, call: Call<'_>) -> Result<Reply, ApiError> {
        self.client.exchange(call).await.map_err(|e| match e {
            ExchangeError::Unreachable { server, reason } => {
                ApiError::Unreachable { op, server, reason }
            }
            ExchangeError::Tls { server, error } => {
                let (reason, unknown_issuer) = crate::trust::tls_failure(&error);
                ApiError::Tls {
                    op,
                    server,
                    reason,
                    unknown_issuer,
                }
            }
            ExchangeError::Timeout { server, secs } => ApiError::Timeout { op, server, secs },
            ExchangeError::BadAnswer { server, reason } => {
                ApiError::BadAnswer { op, server, reason }
            }
            other => ApiError::Unreachable {
                op,
                server: self.server(),
                reason: other.to_string(),
            },
        })
    }

    /// `POST path` with `body` as JSON.
    async fn post(&self, op: Op, path: &str, body: &impl Serialize) -> Result<Reply, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Unreachable {
            op,
            server: self.server(),
            reason: format!("the request cannot be written as JSON ({e})"),
        })?;
        self.call(op, Call::post(path, body)).await
    }

    /// Turns an error status into [`ApiError::Refused`] with the server's sentence.
    fn refused(&self, op: Op, reply: &Reply) -> ApiError {
        ApiError::Refused {
            op,
            server: self.server(),
            status: reply.status.as_u16(),
            message: reply.refusal(),
        }
    }

    fn json<T: DeserializeOwned>(&self, op: Op, body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            self.bad_answer(
                op,
                format!("its JSON does not have the expected fields ({e})"),
            )
        })
    }

    fn answer(&self, op: Op, reply: &Reply) -> Result<Answer, ApiError> {
        match reply.status.as_u16() {
            200 | 201 => Ok(Answer::Issued(self.json(op, &reply.body)?)),
            202 => Ok(Answer::Pending(self.json(op, &reply.body)?)),
            _ => Err(self.refused(op, reply)),
        }
    }

    fn issued(&self, op: Op, reply: &Reply) -> Result<Issued, ApiError> {
        match reply.status.as_u16() {
            200 | 201 => self.json(op, &reply.body),
            _ => Err(self.refused(op, reply)),
        }
    }

    /// `POST /v1/enroll`.
    pub async fn enroll(
        &self,
        csr_pem: &str,
        token: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Answer, ApiError> {
        if self.est {
            return self.est_enroll(csr_pem, token).await.map(Answer::Issued);
        }
        let body = EnrollBody {
            csr: csr_pem.to_string(),
            token: token.map(str::to_string),
            agent_version: Some(crate::AGENT_VERSION.to_string()),
            hostname: hostname.map(str::to_string),
        };
        let op = Op::Enrollment;
        let reply = self.post(op, "/v1/enroll", &body).await?;
        self.answer(op, &reply)
    }

    /// `GET /v1/enroll/{device_id}` with the poll token.
    pub async fn poll(&self, device_id: &str, poll_token: &str) -> Result<Answer, ApiError> {
        let op = Op::ApprovalCheck;
        if self.est {
            return Err(self.not_over_est(op));
        }
        let path = format!("/v1/enroll/{device_id}");
        let reply = self
            .call(
                op,
                Call {
                    bearer: Some(poll_token),
                    ..Call::get(&path)
                },
            )
            .await?;
        self.answer(op, &reply)
    }

    /// `POST /v1/renew` (the TLS configuration carries the client certificate).
    pub async fn renew(&self, csr_pem: &str) -> Result<Issued, ApiError> {
        if self.est {
            return self.est_reenroll(csr_pem).await;
        }
        let body = RenewBody {
            csr: csr_pem.to_string(),
            agent_version: Some(crate::AGENT_VERSION.to_string()),
        };
        let op = Op::Renewal;
        let reply = self.post(op, "/v1/renew", &body).await?;
        self.issued(op, &reply)
    }

    /// `POST /v1/recover`; the body's `agent_version` is this agent's, whatever the
    /// caller put there.
    pub async fn recover(&self, body: RecoverBody) -> Result<Issued, ApiError> {
        if self.est {
            return Err(self.not_over_est(Op::Recovery));
        }
        let body = RecoverBody {
            agent_version: Some(crate::AGENT_VERSION.to_string()),
            ..body
        };
        let op = Op::Recovery;
        let reply = self.post(op, "/v1/recover", &body).await?;
        self.issued(op, &reply)
    }

    /// `GET /v1/ca.pem`: the CA bundle, PEM.
    pub async fn ca_pem(&self) -> Result<String, ApiError> {
        let op = Op::CaDownload;
        if self.est {
            let certs = self.est_cacerts().await?;
            return Ok(certs
                .iter()
                .rev()
                .map(|c| pemfile::to_pem("CERTIFICATE", c))
                .collect());
        }
        let reply = self
            .call(
                op,
                Call {
                    accept: "application/x-pem-file",
                    ..Call::get("/v1/ca.pem")
                },
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.refused(op, &reply));
        }
        String::from_utf8(reply.body.to_vec())
            .map_err(|_| self.bad_answer(op, "the CA bundle is not PEM text".into()))
    }
}

// ---- EST (RFC 7030) ----

impl Api {
    /// What EST cannot do for this agent, as a refusal that is not retried.
    fn not_over_est(&self, op: Op) -> ApiError {
        ApiError::Refused {
            op,
            server: self.server(),
            status: 404,
            message: match op {
                Op::Recovery => "this device enrolled over EST, which has no recovery: enroll it again with a new token (`agent enroll --est URL --token … --force`)".into(),
                _ => "EST has no approval polling: enroll over EST with a token".into(),
            },
        }
    }

    /// An EST request carrying a CSR (PEM) as base64 DER.
    async fn est_post(
        &self,
        op: Op,
        path: &str,
        csr_pem: &str,
        basic: Option<(&str, &str)>,
    ) -> Result<Vec<Vec<u8>>, ApiError> {
        let der = pemfile::parse_blocks("the CSR", csr_pem.as_bytes())
            .ok()
            .and_then(|b| b.into_iter().next())
            .map(|b| b.der)
            .ok_or_else(|| ApiError::Unreachable {
                op,
                server: self.server(),
                reason: "the CSR made here cannot be read back".into(),
            })?;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let reply = self
            .call(
                op,
                Call {
                    basic,
                    accept: "application/pkcs7-mime",
                    content_type: "application/pkcs10",
                    ..Call::post(path, body.into_bytes())
                },
            )
            .await?;
        match reply.status.as_u16() {
            200 | 201 => self.certs_only(op, &reply.body),
            202 => Err(self.bad_answer(
                op,
                "the EST server asks to wait for an operator's approval (202), which this agent does not do over EST: use a token".into(),
            )),
            _ => Err(self.refused(op, &reply)),
        }
    }

    /// The certificates of a base64 certs-only CMS answer.
    fn certs_only(&self, op: Op, body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
        let compact: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| self.bad_answer(op, format!("its answer is not base64 ({e})")))?;
        mtlsgate_pki::est::certificates(&der).map_err(|e| self.bad_answer(op, e.to_string()))
    }

    /// `GET …/cacerts`: the CA certificates, intermediate first (as the server sends
    /// them; the CMS set may be in any order, so they are sorted: leaves of the set first).
    async fn est_cacerts(&self) -> Result<Vec<Vec<u8>>, ApiError> {
        let op = Op::CaDownload;
        let reply = self
            .call(
                op,
                Call {
                    accept: "application/pkcs7-mime",
                    ..Call::get("/cacerts")
                },
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.refused(op, &reply));
        }
        let mut certs = self.certs_only(op, &reply.body)?;
        // Self-signed (the root) last.
        certs.sort_by_key(|c| {
            CertInfo::from_der(c)
                .map(|i| i.subject == i.issuer)
                .unwrap_or(false)
        });
        Ok(certs)
    }

    /// The contract's `Issued` from an EST answer: the leaf, with the CA certificates
    /// from `cacerts`. EST carries no recovery token and no tags.
    async fn est_issued(&self, op: Op, certs: Vec<Vec<u8>>) -> Result<Issued, ApiError> {
        let leaf = certs
            .into_iter()
            .find(|c| {
                CertInfo::from_der(c)
                    .map(|i| i.subject != i.issuer && i.device_id.is_some())
                    .unwrap_or(false)
            })
            .ok_or_else(|| self.bad_answer(op, "its answer holds no device certificate".into()))?;
        let info = CertInfo::from_der(&leaf)
            .map_err(|e| self.bad_answer(op, format!("the certificate cannot be read ({e})")))?;
        let ca = self.est_cacerts().await?;
        let intermediates: String = ca
            .iter()
            .filter(|c| {
                CertInfo::from_der(c)
                    .map(|i| i.subject != i.issuer)
                    .unwrap_or(false)
            })
            .map(|c| pemfile::to_pem("CERTIFICATE", c))
            .collect();
        let bundle: String = ca
            .iter()
            .rev()
            .map(|c| pemfile::to_pem("CERTIFICATE", c))
            .collect();
        Ok(Issued {
            device_id: info.device_id.clone().unwrap_or_default(),
            serial: info.serial.clone(),
            certificate: format!("{}{intermediates}", pemfile::to_pem("CERTIFICATE", &leaf)),
            ca_bundle: bundle,
            not_after: info.not_after.unix_timestamp(),
            recovery_token: String::new(),
            recovery_expires: 0,
            tags: vec![],
        })
    }

    /// `POST …/simpleenroll` with the token as the Basic password.
    async fn est_enroll(&self, csr_pem: &str, token: Option<&str>) -> Result<Issued, ApiError> {
        let op = Op::Enrollment;
        let Some(token) = token else {
            return Err(self.not_over_est(Op::ApprovalCheck));
        };
        let certs = self
            .est_post(op, "/simpleenroll", csr_pem, Some(("", token)))
            .await?;
        self.est_issued(op, certs).await
    }

    /// `POST …/simplereenroll` (the TLS configuration carries the client certificate).
    async fn est_reenroll(&self, csr_pem: &str) -> Result<Issued, ApiError> {
        let op = Op::Renewal;
        let certs = self.est_post(op, "/simplereenroll", csr_pem, None).await?;
        self.est_issued(op, certs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_server_sentence_after_what_was_done() {
        let api = Api::new(
            &ServerUrl::parse("https://ca.example:8444").expect("url"),
            crate::trust::config_with_verifier(Arc::new(crate::trust::PinnedRootVerifier::new(
                [0; 32],
            )))
            .expect("cfg"),
            DEFAULT_TIMEOUT,
        );
        let reply = |status, body: &'static [u8]| Reply {
            status,
            body: bytes::Bytes::from_static(body),
        };
        let e = api.refused(
            Op::Renewal,
            &reply(
                StatusCode::FORBIDDEN,
                br#"{"error": "the device is revoked"}"#,
            ),
        );
        assert_eq!(
            e.to_string(),
            "renewal refused by https://ca.example:8444: the device is revoked"
        );
        assert_eq!(e.status(), Some(403));
        assert!(!e.is_transient());
        let e = api.refused(Op::Enrollment, &reply(StatusCode::BAD_GATEWAY, b"<html>"));
        assert_eq!(
            e.to_string(),
            "enrollment refused by https://ca.example:8444: HTTP 502 Bad Gateway (without an error message)"
        );
        assert!(e.is_transient());
    }
}
