//! `metricsd queue ...` (SPEC §1): inspect and repair the delivery queue,
//! safely while the daemon runs (WAL, short transactions, busy timeout).

use crate::cli::QueueCommand;
use crate::queue::{Queue, Row, SinkStats, Stats, DEFAULT_SINK};
use std::io::{self, Write};
use std::path::Path;

/// The queue file inside the state directory.
pub const QUEUE_FILE: &str = "queue.db";

use crate::error::code::{CANT_CREATE as EXIT_CANT_OPEN, FAILURE as EXIT_FAILURE, OK as EXIT_OK};

/// Runs one queue command against `<state_dir>/queue.db`; `sinks` are the
/// configured sinks (`stats` shows one entry each). Returns the exit code.
pub fn run(command: &QueueCommand, state_dir: &Path, sinks: &[&str]) -> i32 {
    run_to(
        command,
        state_dir,
        sinks,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// `run` with its output and error streams supplied.
pub fn run_to(
    command: &QueueCommand,
    state_dir: &Path,
    sinks: &[&str],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let db_path = state_dir.join(QUEUE_FILE);
    let mut queue = match open_existing(state_dir, &db_path) {
        Ok(queue) => queue,
        Err(message) => {
            let _ = writeln!(err, "metricsd: {message}");
            return EXIT_CANT_OPEN;
        }
    };
    let result = match (command, queue.as_mut()) {
        (QueueCommand::Stats, Some(q)) => q.stats(sinks).map(|s| write_stats(out, &s)),
        (QueueCommand::Stats, None) => Ok(write_stats(
            out,
            &Stats {
                db_path: db_path.clone(),
                sinks: sinks
                    .iter()
                    .map(|name| (name.to_string(), SinkStats::default()))
                    .collect(),
                ..Stats::default()
            },
        )),
        (QueueCommand::Peek { n, dead, sink }, Some(q)) => {
            let n = usize::try_from(*n).unwrap_or(usize::MAX);
            let rows = match sink.as_deref() {
                // No sink configured: the queue is the local history.
                None if sinks.is_empty() && !*dead => q.oldest_history(n),
                sink => {
                    let sink = sink.unwrap_or(DEFAULT_SINK);
                    if *dead {
                        q.oldest_dead(sink, n)
                    } else {
                        q.oldest(sink, n)
                    }
                }
            };
            rows.map(|rows| {
                rows.iter()
                    .try_for_each(|row| writeln!(out, "{}", row_json(row)))
            })
        }
        (QueueCommand::Peek { .. }, None) => Ok(Ok(())),
        (QueueCommand::RetryDead { sink }, q) => q
            .map_or(Ok(0), |q| q.retry_dead(sink))
            .map(|n| writeln!(out, "{{\"moved\":{n}}}")),
        (QueueCommand::Purge { dead, sink }, q) => q
            .map_or(Ok(0), |q| {
                // SPEC §1: the default is backend, configured or not (the
                // rows of a removed sink stay until purged); the local
                // history is the page's and is trimmed by age only.
                if *dead {
                    q.purge_dead(sink)
                } else {
                    q.purge_pending(sink)
                }
            })
            .map(|n| writeln!(out, "{{\"purged\":{n}}}")),
    };
    let result = result.map(|written| written.and_then(|()| out.flush()));
    match result {
        Ok(Ok(())) => EXIT_OK,
        // `metricsd queue peek | head` closing the pipe early is not a failure.
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Ok(Err(e)) => {
            let _ = writeln!(err, "metricsd: cannot write output: {e}");
            EXIT_FAILURE
        }
        Err(e) => {
            let _ = writeln!(err, "metricsd: queue {}: {e}", db_path.display());
            EXIT_FAILURE
        }
    }
}

/// Opens the queue if it exists. A missing state directory or queue file is
/// not an error (there is simply nothing queued, and a command must not
/// create one); one that cannot be read is.
fn open_existing(state_dir: &Path, db_path: &Path) -> Result<Option<Queue>, String> {
    match std::fs::metadata(state_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("state directory {}: {e}", state_dir.display())),
        Ok(m) if !m.is_dir() => {
            return Err(format!(
                "state directory {}: not a directory",
                state_dir.display()
            ))
        }
        Ok(_) => {}
    }
    if let Err(e) = std::fs::read_dir(state_dir) {
        return Err(format!("state directory {}: {e}", state_dir.display()));
    }
    match std::fs::metadata(db_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("queue {}: {e}", db_path.display())),
        Ok(_) => {}
    }
    Queue::open_for_command(db_path)
        .map(Some)
        .map_err(|e| format!("cannot open the queue: {e}"))
}

fn write_stats(out: &mut dyn Write, s: &Stats) -> io::Result<()> {
    let sinks: serde_json::Map<String, serde_json::Value> = s
        .sinks
        .iter()
        .map(|(name, k)| {
            let entry = serde_json::json!({
                "pending": k.pending,
                "dead": k.dead,
                "oldest_pending_age_s": k.oldest_pending_age_s,
                "dropped_total": k.dropped_total,
                "delivered_total": k.delivered_total,
                "expired_total": k.expired_total,
            });
            (name.clone(), entry)
        })
        .collect();
    let stats = serde_json::json!({
        "pending": s.pending,
        "dead": s.dead,
        "oldest_pending_age_s": s.oldest_pending_age_s,
        "dropped_total": s.dropped_total,
        "delivered_total": s.delivered_total,
        "db_path": s.db_path.to_string_lossy(),
        "db_bytes": s.db_bytes,
        "sinks": sinks,
    });
    writeln!(out, "{stats}")
}

/// One `peek` line. The payload is embedded as the JSON object it is (not a
/// string), keeping its field order; a payload that is not valid JSON is
/// shown as a string rather than breaking the line.
pub fn row_json(row: &Row) -> String {
    let flat = row.payload();
    let payload_is_json = serde_json::from_str::<serde::de::IgnoredAny>(&flat).is_ok();
    let payload = if payload_is_json {
        flat.trim().to_string()
    } else {
        json_string(&flat)
    };
    let last_error = row
        .last_error
        .as_deref()
        .map(json_string)
        .unwrap_or_else(|| "null".to_string());
    format!(
        "{{\"id\":{},\"event_id\":{},\"created_at\":{},\"attempts\":{},\"last_error\":{},\"payload\":{}}}",
        row.id,
        json_string(&row.event_id),
        json_string(&row.created_at),
        row.attempts,
        last_error,
        payload
    )
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: &str, last_error: Option<&str>) -> Row {
        Row {
            id: 7,
            event_id: "e\"7".to_string(),
            created_at: "2026-01-01T00:00:00.000Z".to_string(),
            attempts: 2,
            last_error: last_error.map(str::to_string),
            flat: payload.to_string(),
            model: Vec::new(),
        }
    }

    #[test]
    fn peek_lines_embed_the_payload_object_in_order() {
        let line = row_json(&row(r#"{"z":1,"a":2}"#, Some("HTTP 400")));
        assert_eq!(
            line,
            r#"{"id":7,"event_id":"e\"7","created_at":"2026-01-01T00:00:00.000Z","attempts":2,"last_error":"HTTP 400","payload":{"z":1,"a":2}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"]["a"], 2);
    }

    #[test]
    fn peek_lines_survive_a_damaged_payload() {
        let v: serde_json::Value = serde_json::from_str(&row_json(&row("{oops", None))).unwrap();
        assert_eq!(v["payload"], "{oops");
        assert!(v["last_error"].is_null());
    }
}
