//! Enrollment tokens: making one (only its hash is stored; the clear token is returned
//! once, in [`NewTokenSecret`]), and the shape and hash of the secrets devices present.

use super::*;

/// An enrollment token request.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Bind the token to this device ID (`dev1` becomes `dev1.<device domain>`).
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    /// How long the token can be used.
    pub ttl: Duration,
    /// Lifetime of the device's certificates (default: the CA's).
    pub lifetime: Option<Duration>,
}

/// A new enrollment token: the clear token exists only here.
#[derive(Clone, Serialize, Deserialize)]
pub struct NewTokenSecret {
    pub token: String,
    pub expires_at: i64,
    pub device_id: Option<String>,
    pub tags: Vec<String>,
    pub lifetime_secs: Option<i64>,
}

// The clear token never reaches Debug output.
mtlsgate_store::debug_hiding!(NewTokenSecret {
    expires_at, device_id, tags, lifetime_secs,
} hiding { token });

/// SHA-256, lower-case hex: how tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

/// `prefix` + base64url (no padding) of 32 random bytes.
pub(crate) fn new_secret(prefix: &str) -> String {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(b.as_mut());
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.as_ref())
    )
}

/// Whether `token` looks like one of ours with `prefix` (43 base64url characters after it).
pub(crate) fn well_formed(token: &str, prefix: &str) -> bool {
    token.trim().strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

impl Authority {
    /// Makes an enrollment token. The clear token is returned once; the inventory keeps
    /// its hash.
    pub async fn create_token(
        &self,
        t: TokenRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<NewTokenSecret> {
        let at = now.unix_timestamp();
        let bad_ttl = || AuthorityError::BadLifetime {
            what: "token TTL",
            given: t.ttl.whole_seconds(),
            min: 1,
            max: MAX_TOKEN_TTL.whole_seconds(),
        };
        if t.ttl < Duration::SECOND || t.ttl > MAX_TOKEN_TTL {
            return Err(bad_ttl());
        }
        let expires_at = at.checked_add(t.ttl.whole_seconds()).ok_or_else(bad_ttl)?;
        let device_id = match &t.device_id {
            Some(id) => {
                let full = ca::normalize_device_id(id, self.domain())?.to_ascii_lowercase();
                self.enrollable(&full).await?;
                Some(full)
            }
            None => None,
        };
        let mut tags = t
            .tags
            .iter()
            .map(|x| check_tag(x))
            .collect::<Result<Vec<_>>>()?;
        tags.sort();
        tags.dedup();
        let lifetime_secs = t
            .lifetime
            .map(|l| self.check_lifetime("certificate lifetime", l))
            .transpose()?;
        let token = new_secret(TOKEN_PREFIX);
        let mut audit = Audit::new(at, actor, "token").detail(format!(
            "expires {expires_at}{}",
            if tags.is_empty() {
                String::new()
            } else {
                format!(", tags {}", tags.join(","))
            }
        ));
        audit.device_id = device_id.clone();
        self.inv
            .insert_token(
                &NewToken {
                    hash: token_hash(&token),
                    device_id: device_id.clone(),
                    tags: tags.clone(),
                    lifetime_secs,
                    expires_at,
                    created_at: at,
                    created_by: actor.into(),
                },
                &audit,
            )
            .await?;
        Ok(NewTokenSecret {
            token,
            expires_at,
            device_id,
            tags,
            lifetime_secs,
        })
    }
}

impl Authority {
    /// Withdraws an unused enrollment token (by its hash, as the inventory lists it): it
    /// expires now, with an audit record naming `actor`. Whether it was withdrawn (`false`:
    /// unknown, used or expired already; nothing changes).
    pub async fn withdraw_token(
        &self,
        hash: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let at = now.unix_timestamp();
        let audit =
            Audit::new(at, actor, "token-withdraw").detail(format!("token {}", &hash[..16]));
        Ok(self.inv.withdraw_token(&hash, at, &audit).await?)
    }
}
