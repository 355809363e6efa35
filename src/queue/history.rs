//! The history (SPEC §5.2, §4.6): the flat form of every snapshot stays in
//! `history` for `queue.history` after it was taken, delivered or not,
//! counted against no sink, and is trimmed by age.

use super::{unix_ms, Queue, QueueError, Row};
use rusqlite::{params, OptionalExtension, Transaction};
use std::time::{Duration, SystemTime};

/// The most rows one `history` call returns (7 days at 60 s).
pub const MAX_HISTORY_ROWS: usize = 10_080;

impl Queue {
    /// Sets how long snapshots are kept as history (0 = none). Stored in the
    /// file, so every connection (and `queue` command) trims alike; written
    /// only when it changes, so calling it before every insert is cheap.
    pub fn set_history(&mut self, history: Duration) -> Result<(), QueueError> {
        if self.history_written == Some(history) {
            return Ok(());
        }
        let ms = history.as_millis().min(i64::MAX as u128) as i64;
        let tx = self.write()?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'history_ms'",
            params![ms],
        )?;
        trim_history(&tx)?;
        tx.commit()?;
        self.history_written = Some(history);
        Ok(())
    }

    /// The flat forms of the kept snapshots taken at or after
    /// `since_unix_ms`, oldest first, at most `limit` (capped at
    /// `MAX_HISTORY_ROWS`). Only rows within the history window count, even
    /// if a sink still holds older ones.
    pub fn history(&self, since_unix_ms: i64, limit: usize) -> Result<Vec<String>, QueueError> {
        history_rows(&self.conn, since_unix_ms, limit)
    }

    /// `history` through a read-only connection of its own, opened for
    /// this read and closed after it (for the page's HTTP requests: no page
    /// cache held between them, no schema work, no lock beyond the read).
    pub fn read_history(
        path: &std::path::Path,
        since_unix_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        use rusqlite::OpenFlags;
        let open_err = |source| QueueError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(super::schema::BUSY_TIMEOUT)
            .map_err(open_err)?;
        history_rows(&conn, since_unix_ms, limit)
    }

    /// The `n` oldest history rows as queue rows (SPEC §5.2: without a sink
    /// the queue is a bounded local history that `queue peek` shows). Their
    /// event_id and created_at come from the flat form itself.
    pub fn oldest_history(&self, n: usize) -> Result<Vec<Row>, QueueError> {
        let since = window_start(&self.conn)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, flat FROM history WHERE created_ms >= ?1 ORDER BY created_ms, id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![since, n.min(i64::MAX as usize) as i64], |r| {
                let id: i64 = r.get(0)?;
                let flat: String = r.get(1)?;
                Ok((id, flat))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(id, flat)| {
                let field = |name: &str| -> String {
                    serde_json::from_str::<serde_json::Value>(&flat)
                        .ok()
                        .and_then(|v| v.get(name).and_then(|f| f.as_str()).map(str::to_string))
                        .unwrap_or_default()
                };
                Row {
                    id,
                    event_id: field("event_id"),
                    created_at: field("timestamp"),
                    attempts: 0,
                    last_error: None,
                    flat,
                    model: Vec::new(),
                }
            })
            .collect())
    }

    /// (rows in the history window, the oldest one's unix ms).
    pub(super) fn history_extent(&self) -> Result<(u64, Option<i64>), QueueError> {
        let since = window_start(&self.conn)?;
        let (rows, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT count(*), min(created_ms) FROM history WHERE created_ms >= ?1",
            [since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((rows.max(0) as u64, oldest))
    }
}

fn history_rows(
    conn: &rusqlite::Connection,
    since_unix_ms: i64,
    limit: usize,
) -> Result<Vec<String>, QueueError> {
    let since = since_unix_ms.max(window_start(conn)?);
    let limit = limit.min(MAX_HISTORY_ROWS) as i64;
    let mut stmt = conn.prepare_cached(
        "SELECT flat FROM history WHERE created_ms >= ?1 ORDER BY created_ms, id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![since, limit], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

/// Unix ms of the oldest moment the history keeps.
fn window_start(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    let history_ms: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'history_ms'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(unix_ms(SystemTime::now()).saturating_sub(history_ms.max(0)))
}

/// Deletes the history older than the window and the snapshots no sink
/// needs any more. The partial index holds exactly the unreferenced
/// snapshots, so this touches only what it deletes.
pub(super) fn trim_history(tx: &Transaction) -> rusqlite::Result<u64> {
    let cutoff = window_start(tx)?;
    let trimmed = tx
        .prepare_cached("DELETE FROM history WHERE created_ms < ?1")?
        .execute([cutoff])? as u64;
    tx.prepare_cached("DELETE FROM snapshots WHERE refs = 0")?
        .execute([])?;
    Ok(trimmed)
}

/// Adds a snapshot's flat form to the history (none when it is off).
pub(super) fn record(
    tx: &Transaction,
    id: i64,
    created_ms: i64,
    flat: &str,
) -> rusqlite::Result<()> {
    let history_ms: i64 = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'history_ms'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if history_ms > 0 {
        tx.prepare_cached("INSERT INTO history (id, created_ms, flat) VALUES (?1, ?2, ?3)")?
            .execute(params![id, created_ms, flat])?;
    }
    Ok(())
}
