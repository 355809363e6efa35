//! `GET /health` (SPEC §4.4).

use crate::snapshot::format_timestamp;
use crate::status::Status;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, UNIX_EPOCH};

/// How many intervals without a sample make the daemon stale.
const STALE_INTERVALS: u32 = 3;

/// The status code and JSON body of /health now. Staleness is judged on the
/// monotonic clock: a wall-clock step does not make a fresh sample look old.
pub fn report(status: &Status, interval: Duration) -> (u16, String) {
    let stale_after = interval * STALE_INTERVALS;
    let waited = status
        .since_last_sample()
        .unwrap_or_else(|| status.started.elapsed());
    let last_ms = status.last_sample_unix_ms.load(Relaxed);
    let last_sample_at =
        (last_ms > 0).then(|| format_timestamp(UNIX_EPOCH + Duration::from_millis(last_ms as u64)));
    let (state, reason) = if waited > stale_after {
        let why = format!("no sample in the last {} s", waited.as_secs());
        ("stale", Some(why))
    } else if let Some(error) = status.insert_failure() {
        // SPEC §4.4 knows "ok" and "stale" only (scripts test for "ok"):
        // the daemon is sampling and serving, so it is "ok", and `reason`
        // says what is wrong with the queue.
        let why = format!("queue inserts are failing, snapshots are not queued: {error}");
        ("ok", Some(why))
    } else {
        ("ok", None)
    };
    let body = json!({
        "status": state,
        "reason": reason,
        "uptime_s": status.started.elapsed().as_secs(),
        "last_sample_at": last_sample_at,
        "queue_pending": status.queue_pending.load(Relaxed),
        "queue_dead": status.queue_dead.load(Relaxed),
        "backend": status.backend_state().as_str(),
        "last_error": status.last_error(),
        "sinks": sinks(status),
    });
    (if state == "stale" { 503 } else { 200 }, body.to_string())
}

/// One object per configured sink (SPEC §4.4); errors never carry body text.
fn sinks(status: &Status) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = status
        .configured_sinks()
        .into_iter()
        .map(|(kind, s)| {
            let v = json!({
                "state": s.state().as_str(),
                "pending": s.pending.load(Relaxed),
                "dead": s.dead.load(Relaxed),
                "last_error": s.last_error(),
            });
            (kind.name().to_string(), v)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::{Instant, SystemTime};

    fn body(status: &Status, interval: Duration) -> (u16, Value) {
        let (code, body) = report(status, interval);
        (code, serde_json::from_str(&body).unwrap())
    }

    #[test]
    fn ok_after_a_recent_sample_and_stale_after_three_intervals() {
        let status = Status::default();
        let Some(earlier) = Instant::now().checked_sub(Duration::from_secs(5)) else {
            return; // the monotonic clock started less than 5 s ago
        };
        status.record_sample_seen(SystemTime::now(), earlier, 1200);
        let (code, v) = body(&status, Duration::from_secs(2));
        assert_eq!(code, 200);
        assert_eq!(v["status"], "ok");
        assert!(v["reason"].is_null());
        assert!(v["last_sample_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["backend"], "disabled");
        assert!(v["last_error"].is_null());

        let (code, v) = body(&status, Duration::from_secs(1));
        assert_eq!(code, 503);
        assert_eq!(v["status"], "stale");
        assert!(v["reason"].as_str().unwrap().contains("no sample"));
    }

    #[test]
    fn a_forward_wall_clock_step_is_not_staleness() {
        let status = Status::default();
        // The snapshot's wall-clock time is an hour behind "now" (the clock
        // stepped forward after it), but it was recorded a moment ago.
        status.record_sample(SystemTime::now() - Duration::from_secs(3600), 1000);
        let (code, v) = body(&status, Duration::from_secs(1));
        assert_eq!(code, 200);
        assert_eq!(v["status"], "ok");
    }

    #[test]
    fn failing_inserts_give_a_reason_until_one_succeeds() {
        let status = Status::default();
        status.record_sample(SystemTime::now(), 1000);
        status.record_insert_failure("attempt to write a readonly database".into());
        let (code, v) = body(&status, Duration::from_secs(60));
        assert_eq!(code, 200);
        assert_eq!(v["status"], "ok", "SPEC §4.4: a 200 says ok");
        assert!(v["reason"].as_str().unwrap().contains("readonly database"));
        status.record_insert_ok();
        let (_, v) = body(&status, Duration::from_secs(60));
        assert_eq!(
            (v["status"].as_str(), v["reason"].is_null()),
            (Some("ok"), true)
        );
    }

    #[test]
    fn before_the_first_sample_ok_until_three_intervals_passed() {
        let status = Status::default();
        let (code, v) = body(&status, Duration::from_secs(60));
        assert_eq!(code, 200);
        assert!(v["last_sample_at"].is_null());
        // Started more than three intervals ago, still no sample: stale.
        let mut status = status;
        let Some(earlier) = Instant::now().checked_sub(Duration::from_secs(5)) else {
            return; // the monotonic clock started less than 5 s ago
        };
        status.started = earlier;
        let (code, v) = body(&status, Duration::from_secs(1));
        assert_eq!((code, v["status"].as_str()), (503, Some("stale")));
    }
}
