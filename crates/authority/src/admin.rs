//! Creating a CA (`init`: root, intermediate, inventory, and the first administrator's
//! certificate `admin.crt`) and recognising administrators by their client certificate.

use super::*;

/// What `ca init` made.
pub struct Initialized {
    pub dir: PathBuf,
    pub root: Issued,
    pub intermediate: Issued,
    /// `admin.crt`/`admin.key` in the CA directory.
    pub admin: Issued,
    pub location: Location,
}

/// An administrator, as [`Authority::check_admin`] recognised them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The name written into the audit trail: `CN (admin API)`.
    pub actor: String,
    /// Serial of the certificate presented.
    pub serial: String,
}

/// The request for an administrator's client certificate called `name`.
pub fn admin_request(name: &str, validity: Duration) -> LeafRequest {
    LeafRequest {
        kind: CertKind::Client,
        name: name.into(),
        dns: vec![],
        ips: vec![],
        uris: vec![ADMIN_URI.into()],
        device_id: None,
        validity,
        key_type: mtlsgate_pki::key::KeyType::P256,
    }
}

impl Authority {
    /// Creates a CA in `dir` (which must not hold one) with its inventory at `database`
    /// (default: `dir/inventory.db`), recording the root and the intermediate, and an
    /// administrator's client certificate `admin.crt`/`admin.key` (0600) valid for
    /// `admin_validity`. Everything is made in a staging directory that is renamed into
    /// place last, so an interrupted init leaves no CA.
    pub async fn init(
        dir: &Path,
        opts: &InitOptions<'_>,
        database: Option<&Location>,
        admin_validity: Duration,
    ) -> Result<Initialized> {
        let staged = ca::init(dir, opts)?;
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let staging_loc = Location::Sqlite(staged.path().join(Location::FILE));
        let loc = database.cloned().unwrap_or(staging_loc.clone());
        let inv = Inventory::create(&loc).await?;
        let made = async {
            for c in [&staged.root, &staged.intermediate] {
                inv.record(&record_of(c, c.kind.as_str(), None, at)).await?;
            }
            let ca = Ca::open(staged.path())?;
            let signer = ca.signer(opts.passphrase)?;
            let req = admin_request("admin", admin_validity);
            let (admin, key) = signer.issue(&req, &ca.meta.device_domain)?;
            inv.record_issuance(&Issuance {
                cert: record_of(&admin, "admin", None, at),
                device: None,
                audit: Audit::new(at, "ca init", "issue")
                    .serial(&admin.info.serial)
                    .detail("administrator certificate admin.crt"),
            })
            .await?;
            let key_pem = key::to_pkcs8_pem(&key, None)?;
            fsutil::write_atomic(
                &staged.path().join("admin.key"),
                key_pem.as_bytes(),
                fsutil::SECRET_MODE,
            )?;
            let chain = format!("{}{}", admin.pem(), signer.intermediate_pem());
            fsutil::write_atomic(
                &staged.path().join("admin.crt"),
                chain.as_bytes(),
                fsutil::PUBLIC_MODE,
            )?;
            Ok::<Issued, AuthorityError>(admin)
        }
        .await;
        inv.close().await;
        let admin = made?;
        let root = staged.root.clone();
        let intermediate = staged.intermediate.clone();
        let dir = staged.commit()?;
        let location = match database {
            Some(l) => l.clone(),
            None => Location::Sqlite(dir.join(Location::FILE)),
        };
        Ok(Initialized {
            dir,
            root,
            intermediate,
            admin,
            location,
        })
    }

    /// Checks that `client_chain` (the TLS client certificate, leaf first) is an
    /// administrator's: it verifies against this CA at `now`, carries the URI SAN
    /// [`ADMIN_URI`], is recorded in the inventory as an administrator's (kind `admin`,
    /// same SHA-256), and is not revoked there. Returns who it is, for the audit trail.
    pub async fn check_admin(
        &self,
        client_chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<Admin> {
        if client_chain.is_empty() {
            return Err(AuthorityError::NoClientCertificate {
                what: "the admin API needs an administrator's certificate (mtlsgate cert issue admin NAME)",
            });
        }
        self.verifier
            .verify(client_chain, Purpose::Client, unix_time(now))
            .map_err(|f| AuthorityError::ClientCertificate {
                reason: f.to_string(),
            })?;
        let info = CertInfo::from_der(&client_chain[0])?;
        if !info.uris.iter().any(|u| u == ADMIN_URI) {
            return Err(AuthorityError::NotAdmin {
                subject: info.subject,
            });
        }
        match self.inv.get(&info.serial).await {
            Ok(rec) if rec.revoked_at.is_some() => {
                return Err(AuthorityError::ClientCertificate {
                    reason: format!("certificate {} was revoked", info.serial),
                })
            }
            Ok(rec) if rec.kind == "admin" && rec.sha256 == info.sha256_fingerprint => {}
            Ok(_) | Err(StoreError::UnknownSerial(_)) => {
                return Err(AuthorityError::AdminNotRecorded {
                    subject: info.subject,
                    serial: info.serial,
                })
            }
            Err(e) => return Err(e.into()),
        }
        let name = info
            .common_name
            .clone()
            .unwrap_or_else(|| info.subject.clone());
        Ok(Admin {
            actor: format!("{name} (admin API)"),
            serial: info.serial,
        })
    }
}
