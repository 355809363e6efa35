//! `[backend]`: the flat JSON form (SPEC §5.3), one object per
//! POST, or a JSON array of up to `batch_size` rows.

use super::client::gzip;
use super::sink::{BadRow, Request, Sink};
use crate::config::SinkConfig;
use crate::queue::Row;

pub struct Json;

impl Sink for Json {
    fn encode(&mut self, rows: &[Row], config: &SinkConfig) -> Result<Request, BadRow> {
        let batch = config.batch_size > 1;
        let mut body = request_body(rows, batch);
        let mut headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("Idempotency-Key", idempotency_key(rows, batch)),
        ];
        if config.gzip {
            body = gzip(&body);
            headers.push(("Content-Encoding", "gzip".to_string()));
        }
        Ok(Request { body, headers })
    }
}

/// The request body: the flat object itself, or (batch mode) a JSON array
/// of them, even of one. The flat forms are JSON already, so no re-encoding.
pub fn request_body(rows: &[Row], batch: bool) -> Vec<u8> {
    if !batch {
        return rows
            .first()
            .map(|r| r.payload().into_owned().into_bytes())
            .unwrap_or_default();
    }
    // A flat form is about 550 bytes: one allocation for most batches.
    let mut body = Vec::with_capacity(rows.len() * 600 + 2);
    body.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(row.payload().as_bytes());
    }
    body.push(b']');
    body
}

/// The event_id, or for a batch the first and last joined by `..`. Only
/// visible ASCII is kept, so a damaged row cannot make the header invalid.
pub fn idempotency_key(rows: &[Row], batch: bool) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_graphic()).collect() };
    match (rows.first(), rows.last()) {
        (Some(first), Some(last)) if batch => {
            format!("{}..{}", clean(&first.event_id), clean(&last.event_id))
        }
        (Some(first), _) => clean(&first.event_id),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event_id: &str, payload: &str) -> Row {
        Row {
            id,
            event_id: event_id.to_string(),
            created_at: "2026-01-01T00:00:00.000Z".to_string(),
            attempts: 0,
            last_error: None,
            flat: payload.to_string(),
            model: Vec::new(),
        }
    }

    #[test]
    fn single_body_is_the_object_and_batch_body_an_array() {
        let rows = [
            row(1, "a", r#"{"event_id":"a"}"#),
            row(2, "b", r#"{"event_id":"b"}"#),
        ];
        assert_eq!(request_body(&rows[..1], false), br#"{"event_id":"a"}"#);
        assert_eq!(request_body(&rows[..1], true), br#"[{"event_id":"a"}]"#);
        let both: serde_json::Value = serde_json::from_slice(&request_body(&rows, true)).unwrap();
        assert_eq!(both[1]["event_id"], "b");
    }

    #[test]
    fn idempotency_keys() {
        let rows = [row(1, "a", "{}"), row(2, "b", "{}"), row(3, "c", "{}")];
        assert_eq!(idempotency_key(&rows[..1], false), "a");
        assert_eq!(idempotency_key(&rows, true), "a..c");
        assert_eq!(idempotency_key(&rows[..1], true), "a..a");
        assert_eq!(idempotency_key(&[row(1, "x\r\ny z", "{}")], false), "xyz");
    }
}
