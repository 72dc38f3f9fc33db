//! What operators do with devices: status changes by the status machine, tags, listing,
//! one device's detail.

use super::*;

/// A device with its certificates and audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: Device,
    pub certificates: Vec<CertRecord>,
    pub audit: Vec<AuditEntry>,
}

/// A tag: 1–64 letters, digits and `- _ . : / =`.
pub fn check_tag(tag: &str) -> Result<String> {
    let t = tag.trim();
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/=".contains(&b));
    if ok {
        Ok(t.to_string())
    } else {
        Err(AuthorityError::BadTag { tag: tag.into() })
    }
}

impl Authority {
    /// Changes a device's status by the status machine ([`transition`]), as a
    /// compare-and-set in the inventory, with an audit record naming `actor`. Revoking a
    /// device revokes its certificates too.
    pub async fn set_status(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Device> {
        check_text("reason", reason, MAX_REASON)?;
        let id = id.trim().to_ascii_lowercase();
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        let mut audit = Audit::new(now.unix_timestamp(), actor, action.as_str()).device(&id);
        audit.detail = reason.map(str::to_string);
        if d.status == DeviceStatus::Revoked && action == Action::Allow {
            // The way back for a revoked ID: it stays revoked (and so do its certificates)
            // until a token bound to it enrolls a device again; the audit records the allow.
            audit.detail = Some(format!(
                "may enroll again with a new token{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ));
            return match self
                .inv
                .update_status(
                    &id,
                    &[DeviceStatus::Revoked],
                    DeviceStatus::Revoked,
                    None,
                    &audit,
                )
                .await
            {
                Err(StoreError::StatusChanged { id, now }) => Err(AuthorityError::Transition {
                    id,
                    status: now,
                    action,
                }),
                other => Ok(other?),
            };
        }
        let to = transition(&id, d.status, action)?;
        let revoke = (action == Action::Revoke).then_some(Reason::CessationOfOperation.as_str());
        match self
            .inv
            .update_status(&id, action.sources(), to, revoke, &audit)
            .await
        {
            Ok(d) => Ok(d),
            Err(StoreError::StatusChanged { id, now }) => Err(AuthorityError::Transition {
                id,
                status: now,
                action,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds and removes tags of a device.
    pub async fn tag(
        &self,
        id: &str,
        add: &[String],
        remove: &[String],
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Device> {
        let id = id.trim().to_ascii_lowercase();
        let add = add
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>>>()?;
        let remove = remove
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>>>()?;
        let d = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        let mut tags: Vec<String> = d
            .tags
            .into_iter()
            .chain(add.iter().cloned())
            .filter(|t| !remove.contains(t))
            .collect();
        tags.sort();
        tags.dedup();
        let mut detail = Vec::new();
        if !add.is_empty() {
            detail.push(format!("+{}", add.join(",+")));
        }
        if !remove.is_empty() {
            detail.push(format!("-{}", remove.join(",-")));
        }
        let audit = Audit::new(now.unix_timestamp(), actor, "tag")
            .device(&id)
            .detail(detail.join(" "));
        Ok(self.inv.update_tags(&id, &tags, &audit).await?)
    }

    /// Devices matching `f`.
    pub async fn devices(&self, f: &DeviceFilter) -> Result<Vec<Device>> {
        Ok(self.inv.devices(f).await?)
    }

    /// One page of the devices matching `f`, oldest first, after `cursor` (the previous
    /// page's `next`); at most `limit` ([`MAX_PAGE`]) devices.
    pub async fn devices_page(
        &self,
        f: &DeviceFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Device>> {
        Ok(self.inv.devices_page(f, cursor, limit).await?)
    }

    /// One device, with its certificates and its last 100 audit records.
    pub async fn device(&self, id: &str) -> Result<DeviceDetail> {
        let id = id.trim().to_ascii_lowercase();
        let device = self
            .inv
            .device(&id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(id.clone()))?;
        Ok(DeviceDetail {
            certificates: self.inv.certificates_of(&id).await?,
            audit: self.inv.audit_of(&id, 100).await?,
            device,
        })
    }

    /// The full form of a device ID (`dev1` → `dev1.<device domain>`, lower-case).
    pub fn device_id(&self, id: &str) -> Result<String> {
        Ok(ca::normalize_device_id(id, self.domain())?.to_ascii_lowercase())
    }
}
