//! Who the client is, worked out once per connection from its certificate chain: the
//! verification outcome and every value the identity headers and policies need.
//! Nothing here runs per request except reading fields.

use std::sync::OnceLock;

use mtlsgate_pki::certinfo::{openssl_time, CertInfo};
use mtlsgate_pki::pemfile;
use mtlsgate_pki::verify::Failure;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::OffsetDateTime;

/// The result of verifying the client, as nginx's `$ssl_client_verify` reports it.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    Success,
    Failed(Failure),
    None,
}

impl VerifyOutcome {
    /// `SUCCESS`, `FAILED:<OpenSSL reason>` or `NONE`.
    pub fn nginx_value(&self) -> String {
        match self {
            VerifyOutcome::Success => "SUCCESS".into(),
            VerifyOutcome::Failed(f) => format!("FAILED:{}", f.openssl_reason()),
            VerifyOutcome::None => "NONE".into(),
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, VerifyOutcome::Success)
    }
}

/// nginx's `NGX_ESCAPE_URI_COMPONENT`: everything but ALPHA, DIGIT, `-`, `.`, `_`, `~`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The client's identity on one connection.
#[derive(Debug)]
pub struct ClientIdentity {
    pub info: CertInfo,
    pub leaf_der: Vec<u8>,
    /// Lower-cased device ID and DNS SANs, for allowlist matching.
    pub names_lower: Vec<String>,
    escaped_pem: OnceLock<String>,
    v_start: OnceLock<String>,
    v_end: OnceLock<String>,
}

impl ClientIdentity {
    pub fn new(leaf_der: &[u8]) -> Option<ClientIdentity> {
        let info = CertInfo::from_der(leaf_der).ok()?;
        let mut names_lower = Vec::with_capacity(1 + info.dns_names.len());
        if let Some(cn) = &info.common_name {
            names_lower.push(cn.to_ascii_lowercase());
        }
        for d in &info.dns_names {
            let l = d.to_ascii_lowercase();
            if !names_lower.contains(&l) {
                names_lower.push(l);
            }
        }
        Some(ClientIdentity {
            info,
            leaf_der: leaf_der.to_vec(),
            names_lower,
            escaped_pem: OnceLock::new(),
            v_start: OnceLock::new(),
            v_end: OnceLock::new(),
        })
    }

    /// `$ssl_client_escaped_cert`: the PEM, URL-encoded as nginx does.
    pub fn escaped_pem(&self) -> &str {
        self.escaped_pem.get_or_init(|| {
            let pem = pemfile::to_pem("CERTIFICATE", &self.leaf_der);
            utf8_percent_encode(&pem, URI_COMPONENT).to_string()
        })
    }

    /// `$ssl_client_v_start`.
    pub fn v_start(&self) -> &str {
        self.v_start
            .get_or_init(|| openssl_time(self.info.not_before))
    }

    /// `$ssl_client_v_end`.
    pub fn v_end(&self) -> &str {
        self.v_end.get_or_init(|| openssl_time(self.info.not_after))
    }

    /// `$ssl_client_v_remain`: whole days left, 0 when under a day (as nginx computes it).
    pub fn v_remain(&self, now: OffsetDateTime) -> i64 {
        // Whole seconds on both sides, as nginx computes it from time_t values.
        let secs = self.info.not_after.unix_timestamp() - now.unix_timestamp();
        if secs < 86400 {
            0
        } else {
            secs / 86400
        }
    }

    /// The device ID shown in logs and 403 pages.
    pub fn device_id(&self) -> &str {
        self.info
            .device_id
            .as_deref()
            .or(self.info.common_name.as_deref())
            .unwrap_or("-")
    }
}
