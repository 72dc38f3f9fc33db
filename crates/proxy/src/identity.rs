//! Who the client is, worked out once per connection from its certificate chain: the
//! verification outcome and every value the identity headers and policies need.
//! Nothing here runs per request except reading fields.
//!
//! **The device ID is the subject CN** of the client's certificate (what the whitelist.txt apps
//! parse out of `SSL-Client`), and nothing else: DNS SANs never stand in for it. The same
//! value is used by the allowlists, the `$client_device_id` header, the access log and the
//! 403 page. A CA certificate has no device ID.

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
    pub(crate) fn nginx_value(&self) -> String {
        match self {
            VerifyOutcome::Success => "SUCCESS".into(),
            VerifyOutcome::Failed(f) => format!("FAILED:{}", f.openssl_reason()),
            VerifyOutcome::None => "NONE".into(),
        }
    }

    pub(crate) fn is_success(&self) -> bool {
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
    pub(crate) info: CertInfo,
    leaf_der: Vec<u8>,
    /// The device ID, lower-cased, for allowlist matching.
    pub(crate) device_id_lower: Option<String>,
    escaped_pem: OnceLock<String>,
    v_start: OnceLock<String>,
    v_end: OnceLock<String>,
}

impl ClientIdentity {
    pub(crate) fn new(leaf_der: &[u8]) -> Option<ClientIdentity> {
        let info = CertInfo::from_der(leaf_der).ok()?;
        let device_id_lower = info.device_id.as_deref().map(str::to_ascii_lowercase);
        Some(ClientIdentity {
            info,
            leaf_der: leaf_der.to_vec(),
            device_id_lower,
            escaped_pem: OnceLock::new(),
            v_start: OnceLock::new(),
            v_end: OnceLock::new(),
        })
    }

    /// `$ssl_client_escaped_cert`: the PEM, URL-encoded as nginx does.
    pub(crate) fn escaped_pem(&self) -> &str {
        self.escaped_pem.get_or_init(|| {
            let pem = pemfile::to_pem("CERTIFICATE", &self.leaf_der);
            utf8_percent_encode(&pem, URI_COMPONENT).to_string()
        })
    }

    /// `$ssl_client_v_start`.
    pub(crate) fn v_start(&self) -> &str {
        self.v_start
            .get_or_init(|| openssl_time(self.info.not_before))
    }

    /// `$ssl_client_v_end`.
    pub(crate) fn v_end(&self) -> &str {
        self.v_end.get_or_init(|| openssl_time(self.info.not_after))
    }

    /// `$ssl_client_v_remain`: whole days left, 0 when under a day (as nginx computes it).
    pub(crate) fn v_remain(&self, now: OffsetDateTime) -> i64 {
        // Whole seconds on both sides, as nginx computes it from time_t values.
        let secs = self.info.not_after.unix_timestamp() - now.unix_timestamp();
        if secs < 86400 {
            0
        } else {
            secs / 86400
        }
    }

    /// The device ID (the subject CN), as the certificate spells it.
    pub(crate) fn device_id(&self) -> Option<&str> {
        self.info.device_id.as_deref()
    }

    /// The device ID for logs and pages: control bytes and quotes escaped, `-` for none.
    pub(crate) fn device_label(&self) -> std::borrow::Cow<'_, str> {
        match self.device_id() {
            Some(d) => mtlsgate_pki::printable::printable(d),
            None => std::borrow::Cow::Borrowed("-"),
        }
    }
}
