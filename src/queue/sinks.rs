//! Per-sink rows and counters (SPEC §5.2-5.4): every rule holds for each
//! sink alone; one snapshot is one insert transaction for all of them.

use super::history::{record, trim_history};
use super::{age_s, unix_ms, unix_ms_of, unix_now, Queue, QueueError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One queued snapshot as a sink sees it (pending or dead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The snapshot's id: insertion order, the same for every sink, kept
    /// when a row moves to the dead list and back.
    pub id: i64,
    pub event_id: String,
    pub created_at: String,
    /// How many times this sink's receiver rejected the row as bad.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The flat JSON form (SPEC §3.2) when the row carries one of its own
    /// (history rows, and files written before models were kept); empty
    /// for a snapshot stored with its model, whose flat form `payload`
    /// derives when a sink needs it: the protocol sinks never do.
    pub flat: String,
    /// The full snapshot, as the sampler stored it (opaque here).
    pub model: Vec<u8>,
}

impl Row {
    /// `snapshot` as the queue hands it to a sink when it was stored with its
    /// model (no flat form of its own), never tried yet.
    pub fn of_snapshot(id: i64, snapshot: &crate::snapshot::Snapshot) -> Row {
        Row {
            id,
            event_id: snapshot.event_id.to_string(),
            created_at: snapshot.timestamp_string(),
            attempts: 0,
            last_error: None,
            flat: String::new(),
            model: snapshot.to_model_bytes(),
        }
    }

    /// The flat JSON form (SPEC §3.2), stored or derived from the model.
    pub fn payload(&self) -> Cow<'_, str> {
        if self.flat.is_empty() {
            Cow::Owned(flat_from_model(&self.model))
        } else {
            Cow::Borrowed(&self.flat)
        }
    }
}

/// A sink's persisted counters, cheap to read after every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub dropped_total: u64,
    pub delivered_total: u64,
    pub expired_total: u64,
}

/// One entry of `sinks` in `queue stats` (SPEC §1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_age_s: u64,
    pub dropped_total: u64,
    pub delivered_total: u64,
    pub expired_total: u64,
}

/// What `Queue::insert` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// The new snapshot's id (its rows' id in every sink).
    pub id: i64,
    /// Oldest pending rows dropped to make room, per sink (only sinks that
    /// dropped any).
    pub dropped: BTreeMap<String, u64>,
}

impl InsertReport {
    /// Rows dropped over all sinks.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// What `Queue::reject` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Rows that reached `max_attempts` and moved to the dead list.
    pub moved_to_dead: u64,
    /// Oldest dead rows deleted to keep the dead list at `max_dead` (and
    /// counted in `dropped_total`).
    pub dead_trimmed: u64,
    /// Distinct rows of the sink rejected in a row, none accepted since
    /// (this one included): what its breaker counts (SPEC §5.3).
    pub rejected_run: u64,
}

const ROW_COLUMNS: &str =
    "p.id, s.event_id, s.created_at, p.attempts, p.last_error, s.flat, s.model";

impl Queue {
    /// Stores one snapshot and queues it for each of `sinks`, in one
    /// transaction. A sink with `max_pending` rows pending first loses its
    /// oldest ones, counted in its `dropped_total` (the caller warns, at
    /// most once a minute). Also trims the history by age.
    pub fn insert(
        &mut self,
        event_id: &str,
        created_at: &str,
        flat: &str,
        model: &[u8],
        sinks: &[&str],
        max_pending: u64,
    ) -> Result<InsertReport, QueueError> {
        let max_pending = max_pending.max(1);
        let known = self.sink_ids.clone();
        let tx = self.write()?;
        let created_ms = unix_ms_of(created_at);
        // A model that gives back exactly this flat form stands in for it
        // (see `schema`); any other bytes are kept as they are, beside it.
        let own_flat = if !model.is_empty() && derived_flat(model).as_deref() == Some(flat) {
            ""
        } else {
            flat
        };
        tx.prepare_cached(
            "INSERT INTO snapshots (event_id, created_at, created_ms, flat, model) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![event_id, created_at, created_ms, own_flat, model])?;
        let id = tx.last_insert_rowid();
        record(&tx, id, created_ms, flat)?;
        let mut report = InsertReport {
            id,
            dropped: BTreeMap::new(),
        };
        let mut created = Vec::new();
        for name in sinks {
            let sink = match known.get(*name) {
                Some(sink) => *sink,
                None => {
                    let sink = ensure_sink(&tx, name)?;
                    created.push((name.to_string(), sink));
                    sink
                }
            };
            let pending: i64 = tx
                .prepare_cached("SELECT pending FROM sinks WHERE id = ?1")?
                .query_row([sink], |r| r.get(0))?;
            let excess = (pending.max(0) as u64 + 1).saturating_sub(max_pending);
            if excess > 0 {
                let dropped = tx
                    .prepare_cached(
                        "DELETE FROM pending WHERE sink = ?1 AND id IN \
                         (SELECT id FROM pending WHERE sink = ?1 ORDER BY id LIMIT ?2)",
                    )?
                    .execute(params![sink, excess as i64])? as u64;
                add_counter(&tx, sink, "dropped_total", dropped)?;
                report.dropped.insert(name.to_string(), dropped);
            }
            tx.prepare_cached("INSERT INTO pending (sink, id) VALUES (?1, ?2)")?
                .execute(params![sink, id])?;
        }
        trim_history(&tx)?;
        tx.commit()?;
        // Known only once committed: a rolled-back sink row does not exist.
        self.sink_ids.extend(created);
        Ok(report)
    }

    /// The `n` oldest pending rows of `sink`, oldest first.
    pub fn oldest(&self, sink: &str, n: usize) -> Result<Vec<Row>, QueueError> {
        self.select_rows("pending", sink, n)
    }

    /// The `n` oldest dead rows of `sink`, oldest first.
    pub fn oldest_dead(&self, sink: &str, n: usize) -> Result<Vec<Row>, QueueError> {
        self.select_rows("dead", sink, n)
    }

    fn select_rows(&self, table: &str, sink: &str, n: usize) -> Result<Vec<Row>, QueueError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM {table} p JOIN snapshots s ON s.id = p.id \
             WHERE p.sink = (SELECT id FROM sinks WHERE name = ?1) ORDER BY p.id LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![sink, n.min(i64::MAX as usize) as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    created_at: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    flat: r.get(5)?,
                    model: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes rows `sink` delivered and adds them to its `delivered_total`,
    /// in one transaction. Returns how many rows were deleted (rows purged
    /// meanwhile are not counted).
    pub fn delete_delivered(&mut self, sink: &str, ids: &[i64]) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        let tx = self.write()?;
        let deleted = delete_pending(&tx, sink, ids)?;
        add_counter(&tx, sink, "delivered_total", deleted)?;
        if deleted > 0 {
            end_rejected_run(&tx, sink)?;
        }
        trim_history(&tx)?;
        tx.commit()?;
        self.reclaim();
        Ok(deleted)
    }

    /// Distinct rows of `sink` rejected in a row with none accepted since,
    /// as kept in the file: a restart does not give a receiver that
    /// rejects everything a fresh run of rows to send to the dead list.
    pub fn rejected_run(&mut self, sink: &str) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        Ok(read_rejected_run(&self.conn, sink)?.0)
    }

    /// Records that `sink`'s receiver rejected these rows as bad: attempts+1
    /// and `last_error`; rows that reach `max_attempts` move to the dead
    /// list, which is then trimmed to `max_dead` (oldest first, counted in
    /// `dropped_total`). One transaction.
    pub fn reject(
        &mut self,
        sink: &str,
        ids: &[i64],
        error: &str,
        max_attempts: u32,
        max_dead: u64,
    ) -> Result<Rejected, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(Rejected::default());
        };
        let tx = self.write()?;
        let mut out = Rejected::default();
        let mut worn_out = Vec::new();
        {
            let mut bump = tx.prepare_cached(
                "UPDATE pending SET attempts = attempts + 1, last_error = ?3 \
                 WHERE sink = ?1 AND id = ?2 RETURNING attempts",
            )?;
            for id in ids {
                let attempts: Option<u32> = bump
                    .query_row(params![sink, id, error], |r| r.get(0))
                    .optional()?;
                if attempts.is_some_and(|a| a >= max_attempts) {
                    worn_out.push(*id);
                }
            }
        }
        out.moved_to_dead = move_to_dead(&tx, sink, &worn_out)?;
        if out.moved_to_dead > 0 {
            out.dead_trimmed = trim_dead(&tx, sink, max_dead)?;
        }
        out.rejected_run = extend_rejected_run(&tx, sink, ids)?;
        trim_history(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Moves rows of `sink` to its dead list at once, keeping their ids.
    pub fn move_to_dead(&mut self, sink: &str, ids: &[i64]) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        let tx = self.write()?;
        let moved = move_to_dead(&tx, sink, ids)?;
        tx.commit()?;
        Ok(moved)
    }

    /// Moves rows that no receiver can take to the dead list and trims it to
    /// `max_dead`, in one transaction (a crash between the two would leave
    /// the list over its bound); returns (moved, trimmed).
    pub fn bury(
        &mut self,
        sink: &str,
        ids: &[i64],
        max_dead: u64,
    ) -> Result<(u64, u64), QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok((0, 0));
        };
        let tx = self.write()?;
        let moved = move_to_dead(&tx, sink, ids)?;
        let trimmed = trim_dead(&tx, sink, max_dead)?;
        trim_history(&tx)?;
        tx.commit()?;
        Ok((moved, trimmed))
    }

    /// Removes the pending rows of `sink` taken before `cutoff`, unsent,
    /// counted in its `expired_total`; returns how many. Walks from the
    /// oldest row and stops at the first younger one (rows are in the order
    /// they were taken).
    pub fn expire_older_than(&mut self, sink: &str, cutoff: SystemTime) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        let cutoff_ms = unix_ms(cutoff);
        let tx = self.write()?;
        let mut old = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT p.id, s.created_ms FROM pending p JOIN snapshots s ON s.id = p.id \
                 WHERE p.sink = ?1 ORDER BY p.id",
            )?;
            let mut rows = stmt.query([sink])?;
            while let Some(row) = rows.next()? {
                if row.get::<_, i64>(1)? >= cutoff_ms {
                    break;
                }
                old.push(row.get::<_, i64>(0)?);
            }
        }
        let expired = delete_pending(&tx, sink, &old)?;
        add_counter(&tx, sink, "expired_total", expired)?;
        trim_history(&tx)?;
        tx.commit()?;
        if expired > 0 {
            self.reclaim();
        }
        Ok(expired)
    }

    /// Moves every dead row of `sink` back to pending with its original id,
    /// so it takes its original place in the order; attempts start again at 0.
    pub fn retry_dead(&mut self, sink: &str) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        let tx = self.write()?;
        let moved = tx.execute(
            "INSERT INTO pending (sink, id, attempts, last_error) \
             SELECT sink, id, 0, last_error FROM dead WHERE sink = ?1 ORDER BY id",
            [sink],
        )? as u64;
        tx.execute("DELETE FROM dead WHERE sink = ?1", [sink])?;
        tx.commit()?;
        Ok(moved)
    }

    /// Deletes every pending row of `sink`; returns how many.
    pub fn purge_pending(&mut self, sink: &str) -> Result<u64, QueueError> {
        self.purge("pending", sink)
    }

    /// Deletes every dead row of `sink`; returns how many.
    pub fn purge_dead(&mut self, sink: &str) -> Result<u64, QueueError> {
        self.purge("dead", sink)
    }

    fn purge(&mut self, table: &str, sink: &str) -> Result<u64, QueueError> {
        let Some(sink) = self.sink_id(sink)? else {
            return Ok(0);
        };
        let tx = self.write()?;
        let purged = tx.execute(&format!("DELETE FROM {table} WHERE sink = ?1"), [sink])? as u64;
        trim_history(&tx)?;
        tx.commit()?;
        self.reclaim();
        Ok(purged)
    }

    /// The persisted counters of `sink` (one small read; zeros for a sink
    /// the file has never seen).
    pub fn counts(&self, sink: &str) -> Result<Counts, QueueError> {
        let counts = self
            .conn
            .prepare_cached(
                "SELECT pending, dead, dropped_total, delivered_total, expired_total \
                 FROM sinks WHERE name = ?1",
            )?
            .query_row([sink], |r| {
                let get = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(Counts {
                    pending: get(0)?,
                    dead: get(1)?,
                    dropped_total: get(2)?,
                    delivered_total: get(3)?,
                    expired_total: get(4)?,
                })
            })
            .optional()?;
        Ok(counts.unwrap_or_default())
    }

    /// Sinks that still have pending or dead rows in the file, by name:
    /// those removed from the configuration keep them until purged or
    /// configured again (SPEC §5.2).
    pub fn sinks_with_rows(&self) -> Result<Vec<String>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM sinks WHERE pending > 0 OR dead > 0 ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    }

    pub(super) fn sink_stats(&self, sink: &str, now: SystemTime) -> Result<SinkStats, QueueError> {
        let c = self.counts(sink)?;
        let oldest_ms: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT s.created_ms FROM pending p JOIN snapshots s ON s.id = p.id \
                 WHERE p.sink = (SELECT id FROM sinks WHERE name = ?1) ORDER BY p.id LIMIT 1",
            )?
            .query_row([sink], |r| r.get(0))
            .optional()?;
        Ok(SinkStats {
            pending: c.pending,
            dead: c.dead,
            oldest_pending_age_s: oldest_ms.map(|ms| age_s(ms, now)).unwrap_or(0),
            dropped_total: c.dropped_total,
            delivered_total: c.delivered_total,
            expired_total: c.expired_total,
        })
    }

    /// The row id of `sink` if the file has it (remembered once seen).
    fn sink_id(&mut self, sink: &str) -> Result<Option<i64>, QueueError> {
        if let Some(id) = self.sink_ids.get(sink) {
            return Ok(Some(*id));
        }
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM sinks WHERE name = ?1")?
            .query_row([sink], |r| r.get(0))
            .optional()?;
        if let Some(id) = id {
            self.sink_ids.insert(sink.to_string(), id);
        }
        Ok(id)
    }
}

/// The flat form a model stands for, if it is a snapshot model.
fn derived_flat(model: &[u8]) -> Option<String> {
    crate::snapshot::Snapshot::from_model_bytes(model)
        .ok()
        .map(|snapshot| snapshot.flat_json().to_string())
}

/// The flat form of a row stored without one. A model that no longer
/// decodes (damage the file's checks did not catch) becomes a JSON string
/// naming the problem, which a receiver rejects, so the row ends in the
/// dead list where it can be looked at instead of blocking its sink.
fn flat_from_model(model: &[u8]) -> String {
    derived_flat(model)
        .unwrap_or_else(|| serde_json::Value::from("unreadable snapshot model").to_string())
}

/// The row id of `name` in `sinks`, adding the sink if new.
/// The run of rejected rows of a sink lives in `meta` under these keys (its
/// length, and the last row in it): rows are sent oldest first, so a row
/// rejected again is the last one, and any other row is a new one.
fn rejected_run_keys(sink: i64) -> (String, String) {
    (
        format!("rejected_run:{sink}"),
        format!("rejected_last:{sink}"),
    )
}

fn read_rejected_run(conn: &Connection, sink: i64) -> rusqlite::Result<(u64, Option<i64>)> {
    let (run, last) = rejected_run_keys(sink);
    let value = |key: &str| -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    };
    Ok((value(&run)?.unwrap_or(0).max(0) as u64, value(&last)?))
}

fn extend_rejected_run(tx: &Transaction, sink: i64, ids: &[i64]) -> rusqlite::Result<u64> {
    let (mut run, mut last) = read_rejected_run(tx, sink)?;
    for id in ids {
        if last != Some(*id) {
            run += 1;
            last = Some(*id);
        }
    }
    let (run_key, last_key) = rejected_run_keys(sink);
    let mut set = tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    set.execute(params![run_key, run as i64])?;
    if let Some(last) = last {
        set.execute(params![last_key, last])?;
    }
    Ok(run)
}

fn end_rejected_run(tx: &Transaction, sink: i64) -> rusqlite::Result<()> {
    let (run, last) = rejected_run_keys(sink);
    tx.prepare_cached("DELETE FROM meta WHERE key IN (?1, ?2)")?
        .execute([run, last])?;
    Ok(())
}

fn ensure_sink(tx: &Transaction, name: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT OR IGNORE INTO sinks (name) VALUES (?1)")?
        .execute([name])?;
    tx.prepare_cached("SELECT id FROM sinks WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
}

fn add_counter(tx: &Transaction, sink: i64, column: &str, n: u64) -> rusqlite::Result<()> {
    if n > 0 {
        tx.prepare_cached(&format!(
            "UPDATE sinks SET {column} = {column} + ?2 WHERE id = ?1"
        ))?
        .execute(params![sink, n as i64])?;
    }
    Ok(())
}

fn delete_pending(tx: &Transaction, sink: i64, ids: &[i64]) -> rusqlite::Result<u64> {
    let mut stmt = tx.prepare_cached("DELETE FROM pending WHERE sink = ?1 AND id = ?2")?;
    let mut deleted = 0;
    for id in ids {
        deleted += stmt.execute(params![sink, id])? as u64;
    }
    Ok(deleted)
}

fn move_to_dead(tx: &Transaction, sink: i64, ids: &[i64]) -> rusqlite::Result<u64> {
    let now = unix_now() as i64;
    let mut copy = tx.prepare_cached(
        "INSERT INTO dead (sink, id, attempts, last_error, died_at) \
         SELECT sink, id, attempts, last_error, ?3 FROM pending WHERE sink = ?1 AND id = ?2",
    )?;
    let mut remove = tx.prepare_cached("DELETE FROM pending WHERE sink = ?1 AND id = ?2")?;
    let mut moved = 0;
    for id in ids {
        if copy.execute(params![sink, id, now])? > 0 {
            remove.execute(params![sink, id])?;
            moved += 1;
        }
    }
    Ok(moved)
}

fn trim_dead(tx: &Transaction, sink: i64, max_dead: u64) -> rusqlite::Result<u64> {
    let dead: i64 = tx
        .prepare_cached("SELECT dead FROM sinks WHERE id = ?1")?
        .query_row([sink], |r| r.get(0))?;
    let excess = (dead.max(0) as u64).saturating_sub(max_dead);
    if excess == 0 {
        return Ok(0);
    }
    let trimmed = tx
        .prepare_cached(
            "DELETE FROM dead WHERE sink = ?1 AND id IN \
             (SELECT id FROM dead WHERE sink = ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![sink, excess as i64])? as u64;
    add_counter(tx, sink, "dropped_total", trimmed)?;
    Ok(trimmed)
}
