//! The CA's [`Policy`] (lifetimes, recovery grace, the approval queue and its limits)
//! and how a certificate's lifetime is chosen from it (token, then tags, then default).

use super::*;

/// Lifetimes the CA applies.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lifetime of a device certificate when neither its token nor the device sets one.
    pub default_lifetime: Duration,
    /// No device certificate lives longer.
    pub max_lifetime: Duration,
    /// No device certificate lives shorter (and no token asks for less).
    pub min_lifetime: Duration,
    /// How long after its certificate expired a device may still recover.
    pub recovery_grace: Duration,
    /// Lifetimes by tag: a device without a lifetime of its own (from its token) that
    /// carries one of these tags gets the shortest of its tags' lifetimes.
    pub tag_lifetimes: Vec<(String, Duration)>,
    /// Whether devices may enroll without a token, waiting for an operator's approval.
    pub approval_queue: bool,
    /// At most this many devices wait for approval at once.
    pub pending_limit: u64,
    /// A registration still pending after this long is removed.
    pub pending_ttl: Duration,
    /// Token-less enrollments one address may make at once…
    pub enroll_burst: u32,
    /// …and one more each time this has passed.
    pub enroll_refill: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_lifetime: Duration::hours(24),
            max_lifetime: Duration::days(30),
            min_lifetime: Duration::seconds(60),
            recovery_grace: Duration::days(30),
            tag_lifetimes: Vec::new(),
            approval_queue: true,
            pending_limit: 1000,
            pending_ttl: Duration::days(7),
            enroll_burst: 10,
            enroll_refill: Duration::minutes(1),
        }
    }
}

impl Authority {
    pub(crate) fn check_lifetime(&self, what: &'static str, d: Duration) -> Result<i64> {
        let (min, max) = (
            self.policy.min_lifetime.whole_seconds(),
            self.policy.max_lifetime.whole_seconds(),
        );
        let given = d.whole_seconds();
        if given < min || given > max {
            return Err(AuthorityError::BadLifetime {
                what,
                given,
                min,
                max,
            });
        }
        Ok(given)
    }

    /// Lifetime of a device certificate: the device's (or token's), else the shortest
    /// lifetime set for one of its `tags`, else the default, within the policy's bounds.
    pub fn lifetime(&self, secs: Option<i64>, tags: &[String]) -> Duration {
        let by_tag = || {
            self.policy
                .tag_lifetimes
                .iter()
                .filter(|(t, _)| tags.contains(t))
                .map(|(_, d)| *d)
                .min()
        };
        secs.map(Duration::seconds)
            .or_else(by_tag)
            .unwrap_or(self.policy.default_lifetime)
            .min(self.policy.max_lifetime)
            .max(self.policy.min_lifetime)
    }
}
