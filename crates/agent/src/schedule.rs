//! When to renew, and how long to wait after a failure. Pure functions: the time (unix
//! seconds) and the random jitter (a number in `[-1, 1]` the caller draws) are passed in,
//! so the rules are tested without clocks or randomness.
//!
//! - Renewal is due at two thirds of the certificate's lifetime, moved by up to ± 5 % of
//!   the lifetime so that a fleet enrolled at once does not renew at once.
//! - After the certificate expired, renewal over mTLS is impossible: recovery is due.
//! - Failures are retried after 1 s, 2 s, 4 s … up to 5 minutes, each ± 20 %.
//! - While an enrollment waits for approval, the server's `retry_after` is respected
//!   (within 1 s … 5 minutes).

use std::time::Duration;

/// Renewal happens at this fraction of the lifetime.
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;
/// The renewal time moves by up to this fraction of the lifetime, either way.
pub const JITTER_FRACTION: f64 = 0.05;
/// The first retry after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Each back-off delay moves by up to this fraction, either way.
pub const BACKOFF_JITTER: f64 = 0.2;
/// The poll interval while waiting for approval when the server names none.
pub const DEFAULT_RETRY_AFTER: u64 = 5;

/// When a certificate valid from `not_before` to `not_after` should be renewed:
/// `not_before + 2/3 · lifetime + jitter · 5 % · lifetime`, never before `not_before` nor
/// after `not_after`.
pub fn renewal_time(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0) as f64;
    let j = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let offset = life * RENEW_FRACTION + life * JITTER_FRACTION * j;
    let t = not_before.saturating_add(offset.round() as i64);
    t.clamp(not_before, not_after.max(not_before))
}

/// What the agent should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing until `until` (unix seconds).
    Wait { until: i64 },
    /// Renew over mTLS with the current certificate.
    Renew,
    /// The certificate expired: recover with the recovery token.
    Recover,
}

/// Decides between waiting, renewing and recovering at `now`.
pub fn due(now: i64, next_renewal: i64, not_after: i64) -> Due {
    if now >= not_after {
        Due::Recover
    } else if now >= next_renewal {
        Due::Renew
    } else {
        Due::Wait {
            until: next_renewal,
        }
    }
}

/// How long to wait before retry number `attempt` (0 for the first retry after a failure):
/// `1 s · 2^attempt`, at most 5 minutes, moved by `jitter · 20 %` and kept within 1 s … 5 min.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
    let base = base.min(BACKOFF_MAX.as_secs_f64());
    let j = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let secs = (base * (1.0 + BACKOFF_JITTER * j))
        .clamp(BACKOFF_MIN.as_secs_f64(), BACKOFF_MAX.as_secs_f64());
    Duration::from_secs_f64(secs)
}

/// How long to wait before asking again whether an enrollment was approved: the server's
/// `retry_after` (seconds), or 5 s without one, kept within 1 s … 5 minutes.
pub fn poll_delay(retry_after: Option<u64>) -> Duration {
    let secs = retry_after
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .clamp(BACKOFF_MIN.as_secs(), BACKOFF_MAX.as_secs());
    Duration::from_secs(secs)
}

/// The time from `now` until `until` (zero when it has passed).
pub fn until(now: i64, until: i64) -> Duration {
    Duration::from_secs(u64::try_from(until.saturating_sub(now)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_is_at_two_thirds_without_jitter() {
        assert_eq!(renewal_time(1_000, 1_000 + DAY, 0.0), 1_000 + 16 * 3600);
        assert_eq!(renewal_time(0, 90, 0.0), 60);
    }

    #[test]
    fn jitter_moves_renewal_by_at_most_five_percent_of_the_lifetime() {
        let (nb, na) = (1_000_000, 1_000_000 + DAY);
        let center = renewal_time(nb, na, 0.0);
        let five = DAY * 5 / 100;
        assert_eq!(renewal_time(nb, na, 1.0), center + five);
        assert_eq!(renewal_time(nb, na, -1.0), center - five);
        // Out-of-range and non-finite jitter is clamped / ignored.
        assert_eq!(renewal_time(nb, na, 7.0), center + five);
        assert_eq!(renewal_time(nb, na, -7.0), center - five);
        assert_eq!(renewal_time(nb, na, f64::NAN), center);
        for i in -10..=10 {
            let t = renewal_time(nb, na, f64::from(i) / 10.0);
            assert!(t >= center - five && t <= center + five, "{t}");
        }
    }

    #[test]
    fn renewal_time_stays_within_the_validity() {
        // A certificate whose validity is empty or inverted: renew at once, at not_before.
        assert_eq!(renewal_time(500, 500, 1.0), 500);
        assert_eq!(renewal_time(500, 400, 1.0), 500);
        // A one-second certificate.
        let t = renewal_time(10, 11, 1.0);
        assert!((10..=11).contains(&t), "{t}");
    }

    #[test]
    fn due_waits_renews_and_recovers() {
        assert_eq!(due(100, 200, 300), Due::Wait { until: 200 });
        assert_eq!(due(200, 200, 300), Due::Renew);
        assert_eq!(due(299, 200, 300), Due::Renew);
        assert_eq!(due(300, 200, 300), Due::Recover);
        assert_eq!(due(10_000, 200, 300), Due::Recover);
        // A renewal time after the expiry (a damaged agent.json) still recovers on time.
        assert_eq!(due(300, 400, 300), Due::Recover);
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (0..12).map(|a| backoff(a, 0.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX, 0.0), BACKOFF_MAX);
    }

    #[test]
    fn backoff_jitter_stays_within_the_bounds() {
        assert_eq!(backoff(3, 1.0), Duration::from_secs_f64(8.0 * 1.2));
        assert_eq!(backoff(3, -1.0), Duration::from_secs_f64(8.0 * 0.8));
        // Never below 1 s, never above 5 min.
        assert_eq!(backoff(0, -1.0), BACKOFF_MIN);
        assert_eq!(backoff(20, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(2, f64::INFINITY), Duration::from_secs(4));
    }

    #[test]
    fn poll_delay_respects_retry_after_within_bounds() {
        assert_eq!(poll_delay(Some(5)), Duration::from_secs(5));
        assert_eq!(poll_delay(Some(42)), Duration::from_secs(42));
        assert_eq!(poll_delay(None), Duration::from_secs(5));
        assert_eq!(poll_delay(Some(0)), Duration::from_secs(1));
        assert_eq!(poll_delay(Some(86_400)), BACKOFF_MAX);
    }

    #[test]
    fn until_is_zero_once_passed() {
        assert_eq!(until(100, 160), Duration::from_secs(60));
        assert_eq!(until(200, 160), Duration::ZERO);
    }
}
