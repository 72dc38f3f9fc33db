//! Enrollment: with a token (the device is issued its certificate at once, the token
//! consumed in the same transaction) or without (registered as pending, rate-limited per
//! address, collected with a poll token once an operator approved it). Where an
//! enrollment is decided: [`Authority::enroll`] and [`Authority::poll`].

use super::*;

/// What a device sends to enroll.
#[derive(Clone, Default)]
pub struct EnrollRequest {
    /// PEM or DER.
    pub csr: Vec<u8>,
    pub token: Option<String>,
    pub agent_version: Option<String>,
    pub hostname: Option<String>,
    /// The address it connected from.
    pub addr: Option<String>,
    /// The device ID the device asks for (EST's HTTP Basic user name): with a token bound
    /// to an ID it must name that ID; with an unbound token it becomes the device's ID
    /// (short IDs get the device domain). `None`: the token's ID, or a new random one.
    pub device_id: Option<String>,
    /// The label of the EST path it came by (`/.well-known/est/LABEL/…`): the token must
    /// carry it as one of its tags.
    pub label: Option<String>,
}

/// The answer to an enrollment or a poll.
#[derive(Clone)]
pub enum Enrolled {
    Issued(DeviceIssued),
    Pending {
        device_id: String,
        poll_token: String,
        retry_after: u32,
    },
}

/// A device's new certificate and what comes with it (the API's `Issued`).
#[derive(Clone, Serialize)]
pub struct DeviceIssued {
    pub device_id: String,
    pub serial: String,
    /// Leaf + intermediate, PEM.
    pub certificate: String,
    /// Root + intermediate, PEM.
    pub ca_bundle: String,
    pub not_after: i64,
    pub recovery_token: String,
    pub recovery_expires: i64,
    pub tags: Vec<String>,
}

// Tokens, recovery and poll tokens never reach Debug output.
mtlsgate_store::debug_hiding!(EnrollRequest {
    csr, agent_version, hostname, addr, device_id, label,
} hiding { token });
mtlsgate_store::debug_hiding!(DeviceIssued {
    device_id, serial, certificate, ca_bundle, not_after, recovery_expires, tags,
} hiding { recovery_token });

impl fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enrolled::Issued(i) => f.debug_tuple("Issued").field(i).finish(),
            Enrolled::Pending {
                device_id,
                poll_token: _,
                retry_after,
            } => f
                .debug_struct("Pending")
                .field("device_id", device_id)
                .field("poll_token", &mtlsgate_store::Hidden(true))
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// When and from where a device speaks.
#[derive(Debug, Clone)]
pub struct Seen {
    pub now: OffsetDateTime,
    pub addr: Option<String>,
    pub agent_version: Option<String>,
}

impl Seen {
    pub fn at(now: OffsetDateTime) -> Self {
        Seen {
            now,
            addr: None,
            agent_version: None,
        }
    }

    pub(crate) fn store(&self) -> mtlsgate_store::Seen {
        mtlsgate_store::Seen {
            at: self.now.unix_timestamp(),
            addr: self.addr.clone(),
            agent_version: self.agent_version.clone(),
        }
    }
}

/// What one address may still enroll without a token: `left` enrollments at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    left: f64,
    at: OffsetDateTime,
}

/// What one allowance of token-less enrollments belongs to: an IPv4 address, or an IPv6
/// address's /64 (one host usually has a whole /64 to pick addresses from).
pub(crate) fn rate_key(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| addr.to_string()),
        _ => addr.to_string(),
    }
}

/// Refuses free text longer than `max` bytes.
pub(crate) fn check_text(what: &'static str, v: Option<&str>, max: usize) -> Result<()> {
    match v {
        Some(t) if t.len() > max => Err(AuthorityError::TooLong {
            what,
            len: t.len(),
            max,
        }),
        _ => Ok(()),
    }
}

impl Authority {
    pub(crate) fn random_device_id(&self) -> String {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        format!("{}.{}", hex::encode(b), self.domain())
    }

    pub(crate) fn new_recovery(&self, issued: &Issued) -> (String, NewRecovery) {
        let token = new_secret(RECOVERY_PREFIX);
        let expires_at = (issued.info.not_after + self.policy.recovery_grace).unix_timestamp();
        let rec = NewRecovery {
            hash: token_hash(&token),
            expires_at,
        };
        (token, rec)
    }

    /// Signs a device certificate, records it with `via`, and builds the answer.
    pub(crate) async fn issue_device(
        &self,
        csr: &DeviceCsr,
        id: &str,
        lifetime: Duration,
        via: Via,
        seen: &Seen,
        (action, detail): (&str, Option<String>),
    ) -> Result<DeviceIssued> {
        let issued = self.signer()?.sign_device(csr, id, lifetime)?;
        let (recovery_token, recovery) = self.new_recovery(&issued);
        let recovery_expires = recovery.expires_at;
        let at = seen.now.unix_timestamp();
        let mut audit = Audit::new(at, id, action)
            .device(id)
            .serial(&issued.info.serial);
        audit.detail = detail;
        let device = self
            .inv
            .record_issuance(&Issuance {
                cert: record_of(&issued, "client", Some(id), at),
                device: Some(DeviceIssuance {
                    id: id.into(),
                    via,
                    seen: seen.store(),
                    recovery,
                }),
                audit,
            })
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.into()))?;
        Ok(DeviceIssued {
            device_id: id.into(),
            serial: issued.info.serial.clone(),
            certificate: self.chain_pem(&issued),
            ca_bundle: self.bundle_pem(),
            not_after: issued.info.not_after.unix_timestamp(),
            recovery_token,
            recovery_expires,
            tags: device.tags,
        })
    }

    /// Enrolls a device. With a token: the token is checked (known, unused, unexpired),
    /// the device gets the token's bound ID or a new random one, and its certificate —
    /// consuming the token, adding the device and recording the certificate in one
    /// transaction. Without: the device is registered as pending with its CSR, and gets a
    /// poll token to collect its certificate once an operator approved it.
    pub async fn enroll(&self, r: EnrollRequest, now: OffsetDateTime) -> Result<Enrolled> {
        check_text("hostname", r.hostname.as_deref(), MAX_HOSTNAME)?;
        check_text(
            "agent version",
            r.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let csr = pkidevice::check_device_csr(&r.csr)?;
        if csr.der.len() > MAX_DEVICE_CSR {
            return Err(AuthorityError::TooLong {
                what: "CSR",
                len: csr.der.len(),
                max: MAX_DEVICE_CSR,
            });
        }
        let seen = Seen {
            now,
            addr: r.addr.clone(),
            agent_version: r.agent_version.clone(),
        };
        let at = now.unix_timestamp();
        let host = r.hostname.as_deref().map(|h| format!("hostname {h}"));
        let Some(token) = &r.token else {
            if !self.policy.approval_queue {
                return Err(AuthorityError::NoApprovalQueue);
            }
            if let Some(addr) = &r.addr {
                self.take_enrollment(addr, now)?;
            }
            self.inv
                .expire_pending((now - self.policy.pending_ttl).unix_timestamp())
                .await?;
            let id = self.random_device_id();
            let poll_token = new_secret(POLL_PREFIX);
            let device = NewDevice {
                id: id.clone(),
                status: DeviceStatus::Pending,
                tags: vec![],
                lifetime_secs: None,
                created_by: "enrollment without a token".into(),
                pending_csr: Some(pemfile::to_pem("CERTIFICATE REQUEST", &csr.der)),
                poll_hash: Some(token_hash(&poll_token)),
                seen: seen.store(),
            };
            let mut audit = Audit::new(at, &id, "register").device(&id);
            audit.detail = host;
            self.inv
                .insert_pending(&device, &audit, self.policy.pending_limit)
                .await
                .map_err(|e| match e {
                    StoreError::QueueFull { waiting } => AuthorityError::QueueFull { waiting },
                    e => e.into(),
                })?;
            return Ok(Enrolled::Pending {
                device_id: id,
                poll_token,
                retry_after: RETRY_AFTER_SECS,
            });
        };
        if !well_formed(token, TOKEN_PREFIX) {
            return Err(AuthorityError::NotAToken {
                what: "enrollment token",
                prefix: TOKEN_PREFIX,
            });
        }
        let hash = token_hash(token);
        let t = self
            .inv
            .token(&hash)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
        if let Some(used) = t.used_at {
            return Err(StoreError::TokenUsed {
                at: used,
                by: t.used_by.unwrap_or_else(|| "an unknown device".into()),
            }
            .into());
        }
        if t.expires_at <= at {
            return Err(StoreError::TokenExpired { at: t.expires_at }.into());
        }
        if let Some(label) = &r.label {
            if !t.tags.iter().any(|tag| tag == label) {
                return Err(AuthorityError::LabelNotInToken {
                    label: label.clone(),
                });
            }
        }
        let asked = r
            .device_id
            .as_deref()
            .map(|a| self.device_id(a))
            .transpose()?;
        let (id, again) = match (&t.device_id, asked) {
            (Some(bound), Some(asked)) if *bound != asked => {
                return Err(AuthorityError::TokenForOtherDevice {
                    asked,
                    bound: bound.clone(),
                })
            }
            (Some(bound), _) => (bound.clone(), self.enrollable(bound).await?),
            (None, Some(asked)) => {
                let again = self.enrollable(&asked).await.map_err(|e| match e {
                    AuthorityError::AlreadyEnrolled { id } => AuthorityError::IdTaken { id },
                    e => e,
                })?;
                (asked, again)
            }
            (None, None) => (self.random_device_id(), false),
        };
        let device = NewDevice {
            id: id.clone(),
            status: DeviceStatus::Active,
            tags: t.tags.clone(),
            lifetime_secs: t.lifetime_secs,
            created_by: format!("token of {}", t.created_by),
            pending_csr: None,
            poll_hash: None,
            seen: seen.store(),
        };
        let issued = self
            .issue_device(
                &csr,
                &id,
                self.lifetime(t.lifetime_secs, &t.tags),
                if again {
                    Via::Reenroll { hash, device }
                } else {
                    Via::Token { hash, device }
                },
                &seen,
                ("enroll", host),
            )
            .await
            .map_err(|e| match e {
                AuthorityError::Store(StoreError::DeviceExists(id)) => {
                    AuthorityError::AlreadyEnrolled { id }
                }
                other => other,
            })?;
        Ok(Enrolled::Issued(issued))
    }

    /// Whether a token bound to `id` may enroll a device under it: `Ok(false)` for an ID
    /// not in the inventory, `Ok(true)` for a revoked device an operator allowed to enroll
    /// again (`devices allow`) since it was revoked; a revoked device not allowed again is
    /// refused with the way back, any other device as already enrolled.
    pub(crate) async fn enrollable(&self, id: &str) -> Result<bool> {
        match self.inv.device(id).await? {
            None => Ok(false),
            Some(d) if d.status == DeviceStatus::Revoked => {
                if self.allowed_again(id).await? {
                    Ok(true)
                } else {
                    Err(AuthorityError::DeviceRevoked { id: id.into() })
                }
            }
            Some(_) => Err(AuthorityError::AlreadyEnrolled { id: id.into() }),
        }
    }

    /// Whether the last word on device `id` in the audit trail is an operator's `allow`
    /// after its revocation (the way back for a revoked ID).
    pub(crate) async fn allowed_again(&self, id: &str) -> Result<bool> {
        let mut allowed = false;
        for e in self.inv.audit_of(id, AUDIT_SCAN).await? {
            if e.action == Action::Revoke.as_str() {
                allowed = false;
            } else if e.action == Action::Allow.as_str() {
                allowed = true;
            }
        }
        Ok(allowed)
    }

    /// The rule for `cert issue client --device-id ID` (a certificate made by the CA
    /// directly, outside enrollment): a revoked device ID gets none until an operator
    /// allowed it to enroll again (`devices allow ID`).
    pub async fn check_issuable(&self, device_id: &str) -> Result<()> {
        let id = self.device_id(device_id)?;
        match self.inv.device(&id).await? {
            Some(d) if d.status == DeviceStatus::Revoked && !self.allowed_again(&id).await? => {
                Err(AuthorityError::DeviceRevoked { id })
            }
            _ => Ok(()),
        }
    }

    /// Takes one token-less enrollment from `addr`'s allowance (a token bucket: at most
    /// `enroll_burst` at once, one more per `enroll_refill`).
    pub(crate) fn take_enrollment(&self, addr: &str, now: OffsetDateTime) -> Result<()> {
        let burst = f64::from(self.policy.enroll_burst.max(1));
        let refill = self.policy.enroll_refill.as_seconds_f64().max(0.001);
        let mut buckets = self
            .enroll_buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fill =
            |b: &Bucket| (b.left + (now - b.at).as_seconds_f64().max(0.0) / refill).min(burst);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| fill(b) < burst);
            if buckets.len() >= MAX_BUCKETS {
                // Memory stays bounded; the pending limit still bounds what is written.
                buckets.clear();
            }
        }
        let addr = rate_key(addr);
        let b = buckets.entry(addr.clone()).or_insert(Bucket {
            left: burst,
            at: now,
        });
        let left = fill(b);
        if left < 1.0 {
            *b = Bucket { left, at: now };
            return Err(AuthorityError::TooManyEnrollments {
                addr,
                burst: self.policy.enroll_burst.max(1),
                refill: self.policy.enroll_refill.whole_seconds().max(1),
            });
        }
        *b = Bucket {
            left: left - 1.0,
            at: now,
        };
        Ok(())
    }

    /// A pending device asks for its certificate with its poll token: still pending, or
    /// (once approved) its certificate — the poll token is then spent. An unknown device
    /// gets the answer a wrong poll token gets.
    pub async fn poll(&self, device_id: &str, poll_token: &str, seen: Seen) -> Result<Enrolled> {
        check_text(
            "agent version",
            seen.agent_version.as_deref(),
            MAX_AGENT_VERSION,
        )?;
        let id = device_id.trim().to_ascii_lowercase();
        let refused = || AuthorityError::PollToken {
            id: mtlsgate_pki::printable::printable(&id).into_owned(),
        };
        if id.len() > MAX_HOSTNAME {
            return Err(refused());
        }
        let Some(d) = self.inv.device(&id).await? else {
            return Err(refused());
        };
        let hash = token_hash(poll_token);
        if !well_formed(poll_token, POLL_PREFIX) || d.poll_hash.as_deref() != Some(hash.as_str()) {
            return Err(refused());
        }
        match d.status {
            DeviceStatus::Pending => Ok(Enrolled::Pending {
                device_id: id,
                poll_token: poll_token.trim().into(),
                retry_after: RETRY_AFTER_SECS,
            }),
            DeviceStatus::Active => {
                let pem = d.pending_csr.clone().unwrap_or_default();
                let csr = pkidevice::check_device_csr(pem.as_bytes())?;
                let issued = self
                    .issue_device(
                        &csr,
                        &id,
                        self.lifetime(d.lifetime_secs, &d.tags),
                        Via::Poll { poll_hash: hash },
                        &seen,
                        ("enroll", Some("approved enrollment collected".into())),
                    )
                    .await?;
                Ok(Enrolled::Issued(issued))
            }
            status => Err(AuthorityError::NotActive { id, status }),
        }
    }
}
