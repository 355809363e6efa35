//! `GET /health` (SPEC §4.4).

use crate::snapshot::format_timestamp;
use crate::status::Status;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many intervals without a sample make the daemon stale.
const STALE_INTERVALS: u32 = 3;

/// The status code and JSON body of /health at `now`.
pub fn report(status: &Status, interval: Duration, now: SystemTime) -> (u16, String) {
    let last_ms = status
        .last_sample_unix_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let last_sample = (last_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(last_ms as u64));
    let stale_after = interval * STALE_INTERVALS;
    let stale = match last_sample {
        // A clock stepped backwards makes the sample look recent: not stale.
        Some(at) => now.duration_since(at).unwrap_or_default() > stale_after,
        None => status.started.elapsed() > stale_after,
    };
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let body = json!({
        "status": if stale { "stale" } else { "ok" },
        "uptime_s": status.started.elapsed().as_secs(),
        "last_sample_at": last_sample.map(format_timestamp),
        "queue_pending": status.queue_pending.load(relaxed),
        "queue_dead": status.queue_dead.load(relaxed),
        "backend": status.backend_state().as_str(),
        "last_error": status.last_error(),
    });
    (if stale { 503 } else { 200 }, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn ok_after_a_recent_sample_and_stale_after_three_intervals() {
        let status = Status::default();
        let now = SystemTime::now();
        status.record_sample(now - Duration::from_secs(5), 1200);
        let (code, body) = report(&status, Duration::from_secs(2), now);
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert!(v["last_sample_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["backend"], "disabled");
        assert!(v["last_error"].is_null());

        let (code, body) = report(&status, Duration::from_secs(1), now);
        assert_eq!(code, 503);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "stale");
    }

    #[test]
    fn before_the_first_sample_ok_until_three_intervals_passed() {
        let status = Status::default();
        let (code, body) = report(&status, Duration::from_secs(60), SystemTime::now());
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["last_sample_at"].is_null());
    }
}
