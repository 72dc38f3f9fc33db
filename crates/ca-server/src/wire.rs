//! The JSON bodies of the HTTP API (docs/device-lifecycle.md, "HTTP API"), shared by the
//! server ([`crate::api`]) and the admin client ([`crate::client`]) so that both sides
//! read and write the same fields. Answers that are authority records (`Issued`, `Device`,
//! a device with its audit trail, a new token) are those records serialised as they are.

use serde::{Deserialize, Serialize};

/// Every refusal: `{"error": "<sentence>"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v0.2/ca-bundle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaBundle {
    pub ca_bundle: String,
}

/// `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// The 202 answer of `POST /v1/enroll` (with the poll token) and of
/// `GET /v1/enroll/{device_id}` (without it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub device_id: String,
    /// Always `pending`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_token: Option<String>,
    pub retry_after: u32,
}

/// `POST /v1/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewBody {
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `POST /v1/recover`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
