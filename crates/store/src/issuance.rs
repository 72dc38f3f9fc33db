//! Recording an issued certificate with everything that goes with it, in one transaction
//! ([`Inventory::record_issuance`]): the condition of the issuance (a token consumed once,
//! a poll token spent, the current certificate or recovery token unchanged), the device
//! row, the recovery token rotation and the audit record.

use crate::model::tags_to_text;
use crate::{Device, Inventory, Issuance, Result, StoreError, Via};

impl Inventory {
    /// Records an issued certificate and everything that goes with it, in one
    /// transaction: the certificate row; for a device, the condition of [`Via`] (token
    /// consumed, poll token spent, current certificate or recovery token unchanged), the
    /// device's current certificate, when it was seen, and its recovery token rotation;
    /// and the audit record. Either all of it is recorded or nothing is.
    pub async fn record_issuance(&self, i: &Issuance) -> Result<Option<Device>> {
        let c = &i.cert;
        let device_id = i.device.as_ref().map(|d| d.id.clone());
        // The body runs while this task holds the SQLite connection: a refused token is
        // explained once the block below returned it.
        let refused_token: Result<Option<&str>> = async {
            transaction!(self, |tx, pg| {
                if let Some(d) = &i.device {
                    match &d.via {
                        Via::Token { hash, device } | Via::Reenroll { hash, device } => {
                            let rev = next_revision!(tx, pg);
                            let used: Option<String> = sqlx::query_scalar(
                                crate::hot::TOKEN_CONSUME,
                            )
                            .bind(d.seen.at)
                            .bind(&d.id)
                            .bind(hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if used.is_none() {
                                drop(tx);
                                return Ok(Some(hash.as_str()));
                            }
                            if let Via::Reenroll { .. } = &d.via {
                                let done: Option<String> = sqlx::query_scalar(
                                    crate::hot::DEVICE_REENROLL,
                                )
                                .bind(device.status.as_str())
                                .bind(tags_to_text(&device.tags))
                                .bind(device.seen.at)
                                .bind(&device.seen.addr)
                                .bind(&device.seen.agent_version)
                                .bind(&c.serial)
                                .bind(c.not_after)
                                .bind(device.lifetime_secs)
                                .bind(&device.created_by)
                                .bind(rev)
                                .bind(&device.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                                if done.is_none() {
                                    return Err(StoreError::Changed {
                                        id: device.id.clone(),
                                        what: "it is no longer a revoked device",
                                    });
                                }
                                sqlx::query(crate::hot::RECOVERY_FORGET)
                                    .bind(&device.id)
                                    .execute(&mut *tx)
                                    .await?;
                            } else {
                                insert_device!(tx, device, rev, Some(c));
                            }
                        }
                        Via::Poll { poll_hash } => {
                            let done: Option<String> = sqlx::query_scalar(
                                crate::hot::DEVICE_COLLECT,
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(poll_hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "it is no longer an approved device waiting for its first certificate",
                                });
                            }
                        }
                        Via::Retry {
                            abandoned,
                            presented,
                            reason,
                        } => {
                            let rev = next_revision!(tx, pg);
                            let done: Option<String> = sqlx::query_scalar(
                                crate::hot::DEVICE_RETRY,
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(abandoned)
                            .bind(presented)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "its certificate was renewed or its status changed meanwhile",
                                });
                            }
                            sqlx::query(
                                crate::hot::CERT_REVOKE_ABANDONED,
                            )
                            .bind(d.seen.at)
                            .bind(reason)
                            .bind(rev)
                            .bind(abandoned)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Via::Renewal { serial } | Via::Recovery { serial, .. } => {
                            if let Via::Recovery { recovery_hash, .. } = &d.via {
                                let replaced: Option<String> = sqlx::query_scalar(
                                    crate::hot::RECOVERY_SPEND,
                                )
                                .bind(d.seen.at)
                                .bind(recovery_hash)
                                .bind(&d.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                                if replaced.is_none() {
                                    return Err(StoreError::Changed {
                                        id: d.id.clone(),
                                        what: "its recovery token was replaced meanwhile",
                                    });
                                }
                            }
                            let done: Option<String> = sqlx::query_scalar(
                                crate::hot::DEVICE_RENEW,
                            )
                            .bind(&c.serial)
                            .bind(c.not_after)
                            .bind(d.seen.at)
                            .bind(&d.seen.addr)
                            .bind(&d.seen.agent_version)
                            .bind(&d.id)
                            .bind(serial)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if done.is_none() {
                                return Err(StoreError::Changed {
                                    id: d.id.clone(),
                                    what: "its certificate was renewed or its status changed meanwhile",
                                });
                            }
                        }
                    }
                    sqlx::query(
                        crate::hot::RECOVERY_ROTATE,
                    )
                    .bind(d.seen.at)
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO recovery (hash, device_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&d.recovery.hash)
                    .bind(&d.id)
                    .bind(d.seen.at)
                    .bind(d.recovery.expires_at)
                    .execute(&mut *tx)
                    .await?;
                }
                insert_cert!(tx, c);
                write_audit!(tx, &i.audit);
            });
            Ok(None)
        }
        .await;
        if let Some(hash) = refused_token? {
            return Err(self.why_token_refused(hash).await);
        }
        match device_id {
            Some(id) => self.device(&id).await,
            None => Ok(None),
        }
    }
}

impl Inventory {
    /// Records a device that already holds a certificate (issued elsewhere, or by this CA
    /// before it kept an inventory) with that certificate as its current one, in one
    /// transaction at the next revision, and writes `audit`. The certificate may be
    /// recorded already (this CA issued it), as long as it is the same one and not revoked.
    /// A device ID already in the inventory is [`StoreError::DeviceExists`], another
    /// certificate with its serial [`StoreError::Duplicate`], a revoked one
    /// [`StoreError::AlreadyRevoked`]; nothing is recorded then.
    pub async fn import_device(
        &self,
        device: &crate::NewDevice,
        cert: &crate::CertRecord,
        audit: &crate::Audit,
    ) -> Result<Device> {
        transaction!(self, |tx, pg| {
            let rev = next_revision!(tx, pg);
            insert_device!(tx, device, rev, Some(cert));
            // A certificate this CA issued is recorded already: the same one is kept.
            let recorded: Option<(String, Option<i64>)> =
                sqlx::query_as("SELECT sha256, revoked_at FROM certificates WHERE serial = $1")
                    .bind(&cert.serial)
                    .fetch_optional(&mut *tx)
                    .await?;
            match recorded {
                None => insert_cert!(tx, cert),
                Some((sha256, None)) if sha256 == cert.sha256 => {}
                Some((sha256, Some(at))) if sha256 == cert.sha256 => {
                    return Err(StoreError::AlreadyRevoked {
                        serial: cert.serial.clone(),
                        at,
                    })
                }
                Some(_) => return Err(StoreError::Duplicate(cert.serial.clone())),
            }
            write_audit!(tx, audit);
        });
        self.device(&device.id)
            .await?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }
}
