//! The JSON bodies of the HTTP API (docs/device-lifecycle.md, "HTTP API"). The server
//! writes them and the clients read them, so both sides have the same fields.
//!
//! Readers are lenient where the contract allows it (optional fields default), writers
//! omit what is absent. Answers of the admin API that are inventory records (a device, a
//! device with its certificates and audit trail) are the authority's records, serialised
//! as they are; they hold no secrets.
//!
//! Secrets — enrollment tokens, poll tokens, recovery tokens — never appear in Debug
//! output: the types that carry one have a hand-written Debug that writes `<secret>`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What Debug output shows instead of a secret.
const SECRET: &str = "<secret>";

/// A secret field in Debug output: `<secret>` when present.
fn secret(s: &Option<String>) -> Option<&'static str> {
    s.as_ref().map(|_| SECRET)
}

/// Every refusal: `{"error": "<sentence>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v0.2/ca-bundle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaBundle {
    pub ca_bundle: String,
}

/// `POST /v1/enroll`.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrollBody {
    /// PEM.
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl fmt::Debug for EnrollBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollBody")
            .field("csr", &self.csr)
            .field("token", &secret(&self.token))
            .field("agent_version", &self.agent_version)
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// The 202 answer of `POST /v1/enroll` (with the poll token) and of
/// `GET /v1/enroll/{device_id}` (without it): the enrollment waits for an operator's
/// approval.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    pub device_id: String,
    /// Always `pending`.
    #[serde(default)]
    pub status: String,
    /// Present in the answer to `POST /v1/enroll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_token: Option<String>,
    /// Seconds to wait before the next approval check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("device_id", &self.device_id)
            .field("status", &self.status)
            .field("poll_token", &secret(&self.poll_token))
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// `Issued`: what enrollment, approval, renewal and recovery answer.
#[derive(Clone, Serialize, Deserialize)]
pub struct Issued {
    pub device_id: String,
    /// The new certificate's serial (hex).
    #[serde(default)]
    pub serial: String,
    /// PEM: leaf + intermediate.
    pub certificate: String,
    /// PEM: root + intermediate.
    pub ca_bundle: String,
    pub not_after: i64,
    pub recovery_token: String,
    pub recovery_expires: i64,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("device_id", &self.device_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("recovery_token", &SECRET)
            .field("recovery_expires", &self.recovery_expires)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/renew` (the device proves itself with its client certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewBody {
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `POST /v1/recover`.
#[derive(Clone, Serialize, Deserialize)]
pub struct RecoverBody {
    pub device_id: String,
    pub recovery_token: String,
    pub csr: String,
    /// Base64 (standard alphabet, padded) of the old key's signature over SHA-256 of the
    /// CSR's DER.
    pub signature: String,
    /// The device's last certificate, PEM.
    pub certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

impl fmt::Debug for RecoverBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverBody")
            .field("device_id", &self.device_id)
            .field("recovery_token", &SECRET)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/devices/{id}/{approve,allow,deny,revoke}` (the body may be empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/devices/{id}/tags`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagsBody {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `POST /v1/devices/import`: a device that already holds a certificate; the answer (201)
/// is the device recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportBody {
    /// PEM: the certificate, then any intermediates.
    pub certificate: String,
    /// The device ID the certificate must name; absent: the one its CN names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// PEM: CA certificates trusted as its issuers besides this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuers: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// How long the token can be used [default: 3600].
    #[serde(default = "default_ttl")]
    pub ttl_secs: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<i64>,
}

fn default_ttl() -> i64 {
    3600
}

/// The 201 answer of `POST /v1/tokens`: the new enrollment token, in clear only here.
#[derive(Clone, Serialize, Deserialize)]
pub struct NewToken {
    pub token: String,
    pub expires_at: i64,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lifetime_secs: Option<i64>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &SECRET)
            .field("expires_at", &self.expires_at)
            .field("device_id", &self.device_id)
            .field("tags", &self.tags)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "mtg_S3CRET-enrollment";
    const POLL: &str = "mtp_S3CRET-poll";
    const RECOVERY: &str = "mtr_S3CRET-recovery";

    fn no_secret(debug: String) {
        for s in [TOKEN, POLL, RECOVERY, "S3CRET"] {
            assert!(!debug.contains(s), "a secret in Debug output: {debug}");
        }
        assert!(debug.contains(SECRET), "{debug}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        no_secret(format!(
            "{:?}",
            EnrollBody {
                csr: "-----BEGIN CERTIFICATE REQUEST-----".into(),
                token: Some(TOKEN.into()),
                agent_version: Some("1.0".into()),
                hostname: Some("host".into()),
            }
        ));
        no_secret(format!(
            "{:?}",
            Pending {
                device_id: "dev1.d.example".into(),
                status: "pending".into(),
                poll_token: Some(POLL.into()),
                retry_after: Some(5),
            }
        ));
        let issued = Issued {
            device_id: "dev1.d.example".into(),
            serial: "01ab".into(),
            certificate: "PEM".into(),
            ca_bundle: "PEM".into(),
            not_after: 1,
            recovery_token: RECOVERY.into(),
            recovery_expires: 2,
            tags: vec!["t".into()],
        };
        no_secret(format!("{issued:?}"));
        no_secret(format!("{issued:#?}"));
        no_secret(format!(
            "{:?}",
            RecoverBody {
                device_id: "dev1.d.example".into(),
                recovery_token: RECOVERY.into(),
                csr: "PEM".into(),
                signature: "c2ln".into(),
                certificate: "PEM".into(),
                agent_version: Some("1.0".into()),
            }
        ));
        no_secret(format!(
            "{:?}",
            NewToken {
                token: TOKEN.into(),
                expires_at: 1,
                device_id: None,
                tags: vec![],
                lifetime_secs: None,
            }
        ));
        // What is not secret still shows.
        assert!(format!("{issued:?}").contains("dev1.d.example"));
    }

    #[test]
    fn absent_options_are_left_out_and_read_back() {
        let b = RenewBody {
            csr: "PEM".into(),
            agent_version: None,
        };
        assert_eq!(serde_json::to_string(&b).expect("json"), r#"{"csr":"PEM"}"#);
        let p: Pending =
            serde_json::from_str(r#"{"device_id":"d","status":"pending","retry_after":3}"#)
                .expect("pending");
        assert_eq!((p.poll_token, p.retry_after), (None, Some(3)));
        let t: TokenBody = serde_json::from_str("{}").expect("token body");
        assert_eq!(t.ttl_secs, 3600);
        let e: ErrorBody = serde_json::from_str(r#"{"error":"no"}"#).expect("error");
        assert_eq!(e.error, "no");
    }
}
