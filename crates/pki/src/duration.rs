//! Validity periods written the way people write them: `30m`, `24h`, `7d`, `12w`, `1y`.

use crate::error::{PkiError, Result};

/// Parses `N` followed by `s`, `m`, `h`, `d`, `w` or `y` (365 days) into seconds.
pub fn parse_duration(s: &str) -> Result<time::Duration> {
    let bad = |reason: &str| PkiError::InvalidInput {
        what: "duration",
        value: s.into(),
        reason: reason.into(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("add a unit: s, m, h, d, w or y (for example 24h or 90d)"))?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| bad("expected a whole number followed by a unit, like 24h or 90d"))?;
    if n <= 0 {
        return Err(bad("must be greater than zero"));
    }
    let secs_per = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad("unknown unit: use s, m, h, d, w or y")),
    };
    let secs = n
        .checked_mul(secs_per)
        .filter(|v| *v <= 100 * 365 * 86_400)
        .ok_or_else(|| bad("longer than 100 years"))?;
    Ok(time::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("24h").ok(), Some(time::Duration::hours(24)));
        assert_eq!(parse_duration("90d").ok(), Some(time::Duration::days(90)));
        assert_eq!(parse_duration("1y").ok(), Some(time::Duration::days(365)));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("3q").is_err());
        assert!(parse_duration("999999y").is_err());
    }
}
