//! Client commands (SPEC §4.2) and the small messages the server sends besides snapshots.

use crate::snapshot::format_timestamp;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    GetMetrics,
    Ping,
}

/// Parses a text message; the error is the reason sent back to the client.
pub fn parse(text: &str) -> Result<Command, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let command = value
        .as_object()
        .and_then(|o| o.get("command"))
        .ok_or_else(|| r#"expected a JSON object such as {"command":"ping"}"#.to_string())?;
    match command.as_str() {
        Some("get_metrics") => Ok(Command::GetMetrics),
        Some("ping") => Ok(Command::Ping),
        Some(other) => Err(format!(
            "unknown command {other:?} (known: \"get_metrics\", \"ping\")"
        )),
        None => Err("\"command\" must be a string".to_string()),
    }
}

/// The welcome message sent first on every connection.
pub fn welcome(node_id: &str, interval: Duration, now: SystemTime) -> String {
    json!({
        "type": "connection",
        "status": "connected",
        "node_id": node_id,
        "interval": interval_json(interval),
        "timestamp": format_timestamp(now),
    })
    .to_string()
}

pub fn pong(now: SystemTime) -> String {
    json!({"type": "pong", "timestamp": format_timestamp(now)}).to_string()
}

pub fn error(why: &str) -> String {
    json!({"type": "error", "error": why}).to_string()
}

/// Seconds as a whole number when whole (as snapshots carry it), else fractional.
fn interval_json(interval: Duration) -> Value {
    if interval.subsec_nanos() == 0 {
        json!(interval.as_secs())
    } else {
        json!(interval.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_commands() {
        assert_eq!(parse(r#"{"command":"ping"}"#), Ok(Command::Ping));
        assert_eq!(
            parse(r#" {"command":"get_metrics","extra":1} "#),
            Ok(Command::GetMetrics)
        );
    }

    #[test]
    fn explains_bad_input() {
        assert!(parse("{").unwrap_err().starts_with("invalid JSON"));
        assert!(parse("[1]").unwrap_err().contains("JSON object"));
        assert!(parse(r#"{"cmd":"ping"}"#)
            .unwrap_err()
            .contains("JSON object"));
        assert!(parse(r#"{"command":7}"#).unwrap_err().contains("string"));
        assert!(parse(r#"{"command":"reboot"}"#)
            .unwrap_err()
            .contains("unknown command \"reboot\""));
    }

    #[test]
    fn messages_have_the_spec_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let w: Value = serde_json::from_str(&welcome("n1", Duration::from_secs(60), at)).unwrap();
        assert_eq!(w["type"], "connection");
        assert_eq!(w["status"], "connected");
        assert_eq!(w["node_id"], "n1");
        assert_eq!(w["interval"], 60);
        assert_eq!(w["timestamp"], "2023-11-14T22:13:20.123Z");
        let p: Value = serde_json::from_str(&pong(at)).unwrap();
        assert_eq!(p["type"], "pong");
        assert_eq!(p["timestamp"], "2023-11-14T22:13:20.123Z");
        let e: Value = serde_json::from_str(&error("why")).unwrap();
        assert_eq!(e, json!({"type": "error", "error": "why"}));
    }
}
