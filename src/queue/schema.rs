//! The file's schema, its per-connection settings and its migrations.
//!
//! Version 3 (this build) keeps every snapshot a sink still needs once, in
//! `snapshots`, and per sink one small row per snapshot it still has to
//! send (`pending`) or gave up on (`dead`). Counters live in `sinks`, kept
//! exact by triggers, so they are cheap to read after every change;
//! `snapshots.refs` counts the pending and dead rows that point at a
//! snapshot, which goes when none does. The flat forms of the last
//! `queue.history` live apart in `history` (SPEC §5.2), trimmed by age.
//!
//! A snapshot with a model keeps no flat form of its own (`flat = ''`): it
//! is derived from the model when a row is read. The model holds all of
//! it, and storing both would nearly double the file (SPEC §5.2's bound of
//! 20 MiB for a week pending for three sinks).

use super::QueueError;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, Transaction};
use std::path::Path;
use std::time::Duration;

/// The schema this build writes; `PRAGMA user_version` holds the file's.
pub const SCHEMA_VERSION: i32 = 3;

/// How long a connection waits for another one's write transaction.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache per connection, in KiB (negative `cache_size` means KiB).
/// Small on purpose: the whole daemon aims at a few MiB of RSS.
const CACHE_KIB: i64 = 512;
/// Checkpoint the WAL every this many pages (4 KiB each) and truncate it back
/// to `WAL_SIZE_LIMIT`, so the WAL adds at most about 1 MiB to the queue's size.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;
const WAL_SIZE_LIMIT: i64 = 1024 * 1024;

/// Written into the `meta` table (and so into every WAL frame of its page):
/// `<MARKER><file id as 8 hex digits>`. Every write transaction touches that
/// page, so every committed transaction in the WAL names the file it belongs
/// to (see `recovery::check_wal`).
pub(super) const MARKER: &[u8] = b"metricsd-queue-id:";

/// The history kept when the configuration never said (SPEC §5.2).
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// Lookaside (SQLite's per-connection pool for small allocations): slot
/// size and count. SQLite's default (1200 bytes x 40, 48 KiB, every byte
/// written when the connection opens) is resident for each connection, and
/// the daemon has one per sink besides the sampler's; each runs a handful
/// of short statements, for which a few slots do (beyond them SQLite uses
/// malloc).
const SMALL_LOOKASIDE: (i32, i32) = (1200, 8);

/// Gives a connection that has run no statement yet `SMALL_LOOKASIDE`.
pub(super) fn small_lookaside(conn: &Connection) -> rusqlite::Result<()> {
    let (size, count) = SMALL_LOOKASIDE;
    // SAFETY: the handle is open and used by this thread alone; a null
    // buffer asks SQLite to allocate (and own) the slots itself.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            size,
            count,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            Some("cannot set the lookaside size".to_string()),
        ))
    }
}

/// The per-connection settings; fails if WAL mode could not be set.
pub(super) fn configure(conn: &Connection, path: &Path) -> Result<(), QueueError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A cached statement that reads `snapshots` (which has a partial index)
    // is otherwise planned again each time a new value is bound to it: with
    // the query planner stability guarantee it is planned once.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Must be chosen before the first table exists, and before WAL mode
    // writes the header; lets large deletes give space back (see `reclaim`).
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA cache_size = -{CACHE_KIB};
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
    ))?;
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
        [],
        |_| Ok(()),
    )?;
    Ok(())
}

type Migration = fn(&Transaction) -> rusqlite::Result<()>;

/// `MIGRATIONS[v]` takes the schema from version v to v+1. A new file runs
/// them all, so the upgrade path is the path every file takes.
pub(super) const MIGRATIONS: &[Migration] = &[migrate_to_v1, migrate_to_v2, migrate_to_v3];

/// Version 1 (releases up to 168ab1b): one sink, the payload in each row.
fn migrate_to_v1(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE pending (
             id         INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id   TEXT    NOT NULL,
             created_at TEXT    NOT NULL,
             attempts   INTEGER NOT NULL DEFAULT 0,
             last_error TEXT,
             payload    TEXT    NOT NULL
         );
         CREATE TABLE dead (
             id         INTEGER PRIMARY KEY,
             event_id   TEXT    NOT NULL,
             created_at TEXT    NOT NULL,
             attempts   INTEGER NOT NULL,
             last_error TEXT,
             payload    TEXT    NOT NULL,
             died_at    INTEGER NOT NULL
         );
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO meta (key, value) VALUES
             ('pending', 0), ('dead', 0), ('dropped_total', 0), ('delivered_total', 0);
         CREATE TRIGGER pending_added AFTER INSERT ON pending
             BEGIN UPDATE meta SET value = value + 1 WHERE key = 'pending'; END;
         CREATE TRIGGER pending_removed AFTER DELETE ON pending
             BEGIN UPDATE meta SET value = value - 1 WHERE key = 'pending'; END;
         CREATE TRIGGER dead_added AFTER INSERT ON dead
             BEGIN UPDATE meta SET value = value + 1 WHERE key = 'dead'; END;
         CREATE TRIGGER dead_removed AFTER DELETE ON dead
             BEGIN UPDATE meta SET value = value - 1 WHERE key = 'dead'; END;",
    )
}

/// Version 2: snapshots stored once, rows per sink, a history, a file id.
/// Version 1's rows become the `backend` sink's, keeping their ids (and so
/// their order), attempts, last_error and the counters.
fn migrate_to_v2(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DROP TRIGGER pending_added;
         DROP TRIGGER pending_removed;
         DROP TRIGGER dead_added;
         DROP TRIGGER dead_removed;
         ALTER TABLE pending RENAME TO v1_pending;
         ALTER TABLE dead RENAME TO v1_dead;
         ALTER TABLE meta RENAME TO v1_meta;

         CREATE TABLE snapshots (
             id         INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id   TEXT    NOT NULL,
             created_at TEXT    NOT NULL,
             created_ms INTEGER NOT NULL,
             flat       TEXT    NOT NULL,
             model      BLOB    NOT NULL,
             refs       INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX snapshots_by_time ON snapshots (created_ms);
         -- Exactly the rows the history trim may delete, oldest first.
         CREATE INDEX snapshots_unreferenced ON snapshots (created_ms) WHERE refs = 0;
         CREATE TABLE sinks (
             id              INTEGER PRIMARY KEY,
             name            TEXT    NOT NULL UNIQUE,
             pending         INTEGER NOT NULL DEFAULT 0,
             dead            INTEGER NOT NULL DEFAULT 0,
             dropped_total   INTEGER NOT NULL DEFAULT 0,
             delivered_total INTEGER NOT NULL DEFAULT 0,
             expired_total   INTEGER NOT NULL DEFAULT 0
         );
         CREATE TABLE pending (
             sink       INTEGER NOT NULL,
             id         INTEGER NOT NULL,
             attempts   INTEGER NOT NULL DEFAULT 0,
             last_error TEXT,
             PRIMARY KEY (sink, id)
         ) WITHOUT ROWID;
         CREATE TABLE dead (
             sink       INTEGER NOT NULL,
             id         INTEGER NOT NULL,
             attempts   INTEGER NOT NULL,
             last_error TEXT,
             died_at    INTEGER NOT NULL,
             PRIMARY KEY (sink, id)
         ) WITHOUT ROWID;
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;

         CREATE TRIGGER pending_added AFTER INSERT ON pending BEGIN
             UPDATE sinks SET pending = pending + 1 WHERE id = NEW.sink;
             UPDATE snapshots SET refs = refs + 1 WHERE id = NEW.id;
         END;
         CREATE TRIGGER pending_removed AFTER DELETE ON pending BEGIN
             UPDATE sinks SET pending = pending - 1 WHERE id = OLD.sink;
             UPDATE snapshots SET refs = refs - 1 WHERE id = OLD.id;
         END;
         CREATE TRIGGER dead_added AFTER INSERT ON dead BEGIN
             UPDATE sinks SET dead = dead + 1 WHERE id = NEW.sink;
             UPDATE snapshots SET refs = refs + 1 WHERE id = NEW.id;
         END;
         CREATE TRIGGER dead_removed AFTER DELETE ON dead BEGIN
             UPDATE sinks SET dead = dead - 1 WHERE id = OLD.sink;
             UPDATE snapshots SET refs = refs - 1 WHERE id = OLD.id;
         END;",
    )?;

    // The old rows, each snapshot once (a dead row kept its pending id).
    let mut read = tx.prepare(
        "SELECT id, event_id, created_at, payload FROM v1_pending
         UNION ALL SELECT id, event_id, created_at, payload FROM v1_dead
         ORDER BY id",
    )?;
    let mut write = tx.prepare(
        "INSERT INTO snapshots (id, event_id, created_at, created_ms, flat, model)
         VALUES (?1, ?2, ?3, ?4, ?5, X'')",
    )?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let created_at: String = row.get(2)?;
        write.execute(params![
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            created_at,
            super::unix_ms_of(&created_at),
            row.get::<_, String>(3)?,
        ])?;
    }
    drop(rows);
    drop(read);
    drop(write);

    let meta = |key: &str| -> rusqlite::Result<i64> {
        tx.query_row("SELECT value FROM v1_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
    };
    tx.execute(
        "INSERT INTO sinks (name, dropped_total, delivered_total) VALUES ('backend', ?1, ?2)",
        params![meta("dropped_total")?, meta("delivered_total")?],
    )?;
    tx.execute_batch(
        "INSERT INTO pending (sink, id, attempts, last_error)
             SELECT (SELECT id FROM sinks WHERE name = 'backend'), id, attempts, last_error
             FROM v1_pending ORDER BY id;
         INSERT INTO dead (sink, id, attempts, last_error, died_at)
             SELECT (SELECT id FROM sinks WHERE name = 'backend'), id, attempts, last_error, died_at
             FROM v1_dead ORDER BY id;",
    )?;

    // Ids are never reused: go on from the old sequence, not the highest row.
    let old_seq: i64 = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'v1_pending'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let new_seq: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM snapshots", [], |r| {
        r.get(0)
    })?;
    tx.execute("DELETE FROM sqlite_sequence WHERE name = 'snapshots'", [])?;
    tx.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('snapshots', ?1)",
        [old_seq.max(new_seq)],
    )?;
    tx.execute_batch(
        "DROP TABLE v1_pending;
         DROP TABLE v1_dead;
         DROP TABLE v1_meta;",
    )?;

    // The file id: in the header (application_id) and as the marker row.
    let file_id = loop {
        let id = fastrand::u32(..);
        if id != 0 {
            break id;
        }
    };
    let mut marker = MARKER.to_vec();
    marker.extend_from_slice(format!("{file_id:08x}").as_bytes());
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2), ('history_ms', ?3), ('writes', 0)",
        params![
            String::from_utf8(marker).expect("ASCII"),
            i64::from(file_id),
            DEFAULT_HISTORY.as_millis() as i64
        ],
    )?;
    tx.execute_batch(&format!("PRAGMA application_id = {}", file_id as i32))?;
    Ok(())
}

/// Version 3: the history in its own table (so its rows never hold a
/// model, and the snapshots no sink needs go at once); snapshots with a
/// model drop their flat copy.
fn migrate_to_v3(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE history (
             id         INTEGER PRIMARY KEY,
             created_ms INTEGER NOT NULL,
             flat       TEXT    NOT NULL
         );
         CREATE INDEX history_by_time ON history (created_ms);
         INSERT INTO history (id, created_ms, flat)
             SELECT id, created_ms, flat FROM snapshots WHERE flat != '';
         DELETE FROM snapshots WHERE refs = 0;
         UPDATE snapshots SET flat = '' WHERE length(model) > 0;
         DROP INDEX snapshots_by_time;
         DROP INDEX snapshots_unreferenced;
         CREATE INDEX snapshots_unreferenced ON snapshots (id) WHERE refs = 0;",
    )
}
