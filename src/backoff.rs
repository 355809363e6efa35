//! Retry waits (SPEC §5.3): backoff steps with ±20% jitter, and the server's
//! `Retry-After` (delta seconds or HTTP date) capped by `max_retry_after`.
//! Pure functions: the caller supplies the random value and the clock.

use std::time::{Duration, SystemTime};

/// Fraction of the step the jitter may add or take away.
pub const JITTER: f64 = 0.2;
/// Used only if the configuration gives no steps at all.
const FALLBACK_STEP: Duration = Duration::from_secs(5);

/// The step for the `failures`-th consecutive failure (1-based): `steps[0]`,
/// `steps[1]`, ..., then the last step for ever.
pub fn step(steps: &[Duration], failures: u32) -> Duration {
    let i = (failures.max(1) - 1) as usize;
    steps
        .get(i)
        .or(steps.last())
        .copied()
        .unwrap_or(FALLBACK_STEP)
}

/// `base` scaled by a factor in [0.8, 1.2], chosen by `random` in [0, 1]
/// (0 → 0.8, 0.5 → 1.0, 1 → 1.2; out-of-range values are clamped).
pub fn with_jitter(base: Duration, random: f64) -> Duration {
    let r = if random.is_nan() {
        0.5
    } else {
        random.clamp(0.0, 1.0)
    };
    base.mul_f64(1.0 - JITTER + 2.0 * JITTER * r)
}

/// Parses a `Retry-After` value: delta seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), as a wait from `now`. A date in the
/// past gives zero; anything else unparsable gives None.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before retrying after the `failures`-th consecutive transient
/// failure: the server's `Retry-After` when it gave a positive one (capped by
/// `max_retry_after`), else the backoff step with jitter.
pub fn retry_delay(
    steps: &[Duration],
    failures: u32,
    random: f64,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
) -> Duration {
    match retry_after.map(|d| d.min(max_retry_after)) {
        // Zero (or a cap of zero) would make a tight loop; back off instead.
        Some(d) if !d.is_zero() => d,
        _ => with_jitter(step(steps, failures), random),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn steps_advance_then_stay_at_the_last() {
        let steps = [s(5), s(15), s(60)];
        assert_eq!(step(&steps, 1), s(5));
        assert_eq!(step(&steps, 2), s(15));
        assert_eq!(step(&steps, 3), s(60));
        assert_eq!(step(&steps, 4), s(60));
        assert_eq!(step(&steps, 1000), s(60));
        // 0 failures is treated as the first.
        assert_eq!(step(&steps, 0), s(5));
        assert_eq!(step(&[], 3), FALLBACK_STEP);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(with_jitter(s(10), 0.0), s(8));
        assert_eq!(with_jitter(s(10), 0.5), s(10));
        assert_eq!(with_jitter(s(10), 1.0), s(12));
        assert_eq!(with_jitter(s(10), -3.0), s(8));
        assert_eq!(with_jitter(s(10), 7.0), s(12));
        assert_eq!(with_jitter(s(10), f64::NAN), s(10));
        for i in 0..=100 {
            let d = with_jitter(s(60), i as f64 / 100.0);
            assert!(d >= s(48) && d <= s(72), "{d:?}");
        }
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = UNIX_EPOCH + s(1_000_000);
        assert_eq!(parse_retry_after("2", now), Some(s(2)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(s(120)));
        assert_eq!(parse_retry_after("0", now), Some(s(0)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_as_http_date_is_relative_to_now() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let now = UNIX_EPOCH + s(784_111_777 - 30);
        assert_eq!(parse_retry_after(date, now), Some(s(30)));
        let later = UNIX_EPOCH + s(784_111_777 + 30);
        assert_eq!(parse_retry_after(date, later), Some(Duration::ZERO));
    }

    #[test]
    fn delay_prefers_retry_after_capped() {
        let steps = [s(5), s(15)];
        assert_eq!(retry_delay(&steps, 1, 0.5, Some(s(2)), s(3600)), s(2));
        assert_eq!(retry_delay(&steps, 1, 0.5, Some(s(7200)), s(3600)), s(3600));
        // No usable Retry-After: backoff with jitter.
        assert_eq!(retry_delay(&steps, 2, 0.5, None, s(3600)), s(15));
        assert_eq!(retry_delay(&steps, 2, 0.0, Some(s(0)), s(3600)), s(12));
        assert_eq!(retry_delay(&steps, 1, 1.0, Some(s(9)), s(0)), s(6));
    }
}
