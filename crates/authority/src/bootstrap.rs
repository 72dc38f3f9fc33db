//! Enrollment with a bootstrap certificate instead of a token: EST's `simpleenroll` over
//! mTLS with a certificate from a CA the operator trusts for bootstrap (a manufacturer's
//! device certificate, say). The device waits in the approval queue under the ID its
//! bootstrap certificate names, as a token-less agent enrollment does; it asks again with
//! the same key until an operator approves it, then collects its certificate. The caller
//! (the CA server) has verified the bootstrap chain; this module owns what follows.

use mtlsgate_pki::device as pkidevice;
use mtlsgate_store::{Audit, DeviceStatus, NewDevice, StoreError, Via};
use time::OffsetDateTime;

use crate::enroll::check_text;
use crate::tokens::new_secret;
use crate::{
    token_hash, Authority, AuthorityError, Enrolled, Result, Seen, MAX_AGENT_VERSION, POLL_PREFIX,
    RETRY_AFTER_SECS,
};

/// A device that proved itself with a bootstrap certificate.
#[derive(Debug, Clone)]
pub struct BootstrapRequest {
    /// PEM or DER.
    pub csr: Vec<u8>,
    /// The device ID its bootstrap certificate names (short IDs get the device domain).
    pub device_id: String,
    /// Who vouched for it, for the audit trail: the bootstrap certificate's subject.
    pub bootstrap_subject: String,
    /// A tag it gets while pending (the EST label it came by).
    pub tag: Option<String>,
    pub agent_version: Option<String>,
    pub addr: Option<String>,
}

impl Authority {
    /// Registers the device in the approval queue, tells it to wait while it is pending,
    /// and issues its certificate once an operator approved it — for a CSR with the key it
    /// registered with, so that only the device that waited collects.
    pub async fn enroll_bootstrapped(
        &self,
        r: BootstrapRequest,
        now: OffsetDateTime,
    ) -> Result<Enrolled> {
        check_text(
            "agent version",
            r.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let csr = pkidevice::check_device_csr(&r.csr)?;
        let id = self.device_id(&r.device_id)?;
        let tags = match &r.tag {
            Some(t) => vec![crate::check_tag(t)?],
            None => vec![],
        };
        let seen = Seen {
            now,
            addr: r.addr.clone(),
            agent_version: r.agent_version.clone(),
        };
        let pending = |id: String| Enrolled::Pending {
            device_id: id,
            poll_token: String::new(),
            retry_after: RETRY_AFTER_SECS,
        };
        let Some(d) = self.inv.device(&id).await? else {
            if !self.policy.approval_queue {
                return Err(AuthorityError::NoApprovalQueue);
            }
            if let Some(addr) = &r.addr {
                self.take_enrollment(addr, now)?;
            }
            self.inv
                .expire_pending((now - self.policy.pending_ttl).unix_timestamp())
                .await?;
            let device = NewDevice {
                id: id.clone(),
                status: DeviceStatus::Pending,
                tags,
                lifetime_secs: None,
                created_by: format!("EST with bootstrap certificate {}", r.bootstrap_subject),
                pending_csr: Some(mtlsgate_pki::pemfile::to_pem(
                    "CERTIFICATE REQUEST",
                    &csr.der,
                )),
                // Never handed out: the bootstrap certificate, not a poll token, proves
                // the device when it asks again.
                poll_hash: Some(token_hash(&new_secret(POLL_PREFIX))),
                seen: seen.store(),
            };
            let audit = Audit::new(now.unix_timestamp(), &id, "register")
                .device(&id)
                .detail(format!("EST bootstrap certificate {}", r.bootstrap_subject));
            self.inv
                .insert_pending(&device, &audit, self.policy.pending_limit)
                .await
                .map_err(|e| match e {
                    StoreError::QueueFull { waiting } => AuthorityError::QueueFull { waiting },
                    e => e.into(),
                })?;
            return Ok(pending(id));
        };
        let same_key = || -> Result<()> {
            let registered = d
                .pending_csr
                .as_deref()
                .map(|pem| pkidevice::check_device_csr(pem.as_bytes()))
                .transpose()?;
            match registered {
                Some(reg) if reg.spki_der == csr.spki_der => Ok(()),
                _ => Err(AuthorityError::BootstrapOtherKey { id: id.clone() }),
            }
        };
        match d.status {
            DeviceStatus::Pending => {
                same_key()?;
                Ok(pending(id))
            }
            DeviceStatus::Active if d.cert_serial.is_none() => {
                same_key()?;
                let issued = self
                    .issue_device(
                        &csr,
                        &id,
                        self.lifetime(d.lifetime_secs, &d.tags),
                        Via::Poll {
                            poll_hash: d.poll_hash.clone().unwrap_or_default(),
                        },
                        &seen,
                        ("enroll", Some("approved EST enrollment collected".into())),
                    )
                    .await?;
                Ok(Enrolled::Issued(issued))
            }
            DeviceStatus::Active => Err(AuthorityError::AlreadyEnrolled { id }),
            status => Err(AuthorityError::NotActive { id, status }),
        }
    }
}
