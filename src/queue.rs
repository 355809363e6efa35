//! SQLite outbox (SPEC §5.1, §5.2).
//!
//! One file, `<state_dir>/queue.db`, in WAL mode with `synchronous=FULL`: a
//! row is durable once its insert has committed. (The poster's connection
//! alone commits its deletes without an fsync each: see
//! `connect_for_delivery`.) Every change is one short
//! `BEGIN IMMEDIATE` transaction, so the daemon's connections (sampler and
//! poster) and the `metricsd queue` commands can share the file safely.
//!
//! Row counts live in the `meta` table, kept exact by triggers, so the poster
//! can report them after every delivery without scanning the table.

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The schema this build writes; `PRAGMA user_version` holds the file's.
pub const SCHEMA_VERSION: i32 = 1;

/// How long a connection waits for another one's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache per connection, in KiB (negative `cache_size` means KiB).
/// Small on purpose: the whole daemon aims at a few MiB of RSS.
const CACHE_KIB: i64 = 512;
/// Checkpoint the WAL every this many pages (4 KiB each) and truncate it back
/// to `WAL_SIZE_LIMIT`, so the WAL adds at most about 1 MiB to the queue's size.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;
const WAL_SIZE_LIMIT: i64 = 1024 * 1024;
/// Give free pages back to the file system once this many have piled up
/// (1 MiB), e.g. after a large backlog has drained.
const RECLAIM_FREE_PAGES: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: journal_mode is {mode:?}, not WAL")]
    NotWal { path: PathBuf, mode: String },
    #[error("{path}: not an SQLite database ({reason})")]
    NotADatabase { path: PathBuf, reason: String },
    #[error(
        "{path}: schema version {found} is newer than this build understands ({SCHEMA_VERSION})"
    )]
    TooNew { path: PathBuf, found: i32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl QueueError {
    /// True when the failure says the disk (or the file's size limit) is full.
    pub fn is_full(&self) -> bool {
        sqlite_code(self) == Some(ErrorCode::DiskFull)
    }

    /// True when another connection held a lock we could not wait for.
    pub fn is_busy(&self) -> bool {
        matches!(
            sqlite_code(self),
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
        )
    }

    /// True when the file is not a database or is damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, QueueError::NotADatabase { .. })
            || matches!(
                sqlite_code(self),
                Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt)
            )
    }
}

fn sqlite_code(error: &QueueError) -> Option<ErrorCode> {
    let source = match error {
        QueueError::Open { source, .. } | QueueError::Sqlite(source) => source,
        _ => return None,
    };
    source.sqlite_error_code()
}

/// What `metricsd queue stats` prints (SPEC §1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_age_s: u64,
    pub dropped_total: u64,
    pub delivered_total: u64,
    pub db_path: PathBuf,
    /// The main file plus its WAL.
    pub db_bytes: u64,
}

/// The persisted counters, cheap to read after every change.
/// What a WAL checkpoint did (SQLite's `wal_checkpoint` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Another connection kept it from finishing.
    pub busy: bool,
    /// Frames in the WAL, and how many of them reached the main file.
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}

impl Checkpoint {
    /// Everything in the WAL is in the main file (and the WAL truncated).
    pub fn complete(&self) -> bool {
        !self.busy && self.wal_frames == self.checkpointed_frames
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub dropped_total: u64,
    pub delivered_total: u64,
}

/// One queued snapshot (pending or dead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Insertion order; kept when a row moves to the dead list and back.
    pub id: i64,
    pub event_id: String,
    pub created_at: String,
    /// How many times the backend rejected this row as bad.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The flat JSON form, as sent.
    pub payload: String,
}

/// What `Queue::reject` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Rows that reached `max_attempts` and moved to the dead list.
    pub moved_to_dead: u64,
    /// Oldest dead rows deleted to keep the dead list at `max_dead`.
    pub dead_trimmed: u64,
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

impl Queue {
    /// Opens the daemon's queue, creating it if missing: the process's first
    /// connection to the file (see `open_for_command`). A file that is not a
    /// valid database is renamed aside (`queue.db.corrupt-<unix time>`),
    /// logged as an error, and replaced by a new queue.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        match Self::open_checked(path) {
            Ok(queue) => Ok(queue),
            Err(e) if e.is_corrupt() => {
                let aside = set_aside(path)?;
                log::error!(
                    "queue {} is unreadable ({e}); moved it to {} and started a new queue",
                    path.display(),
                    aside.display()
                );
                Self::connect(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the queue for a `metricsd queue` command, never moving it (the
    /// daemon may be using it): a file that is not a database is refused
    /// before SQLite touches it, since SQLite would delete a stale `-wal`
    /// beside it, and that may be the very data worth examining. Like
    /// `open`, it must be the process's only connection to the file: it
    /// reads the file's header through its own descriptor, and closing that
    /// drops every POSIX lock the process holds on the file, including
    /// SQLite's.
    pub fn open_for_command(path: &Path) -> Result<Queue, QueueError> {
        check_header(path)?;
        Self::connect(path)
    }

    /// Opens (or creates) the queue without any recovery: for further
    /// connections of a process (the poster's). It touches the file only
    /// through SQLite, which keeps its locks for all the process's
    /// connections together.
    pub fn connect(path: &Path) -> Result<Queue, QueueError> {
        // Switching a new file to WAL takes an exclusive lock for which
        // SQLite does not wait, so two processes creating the queue at once
        // could see "database is locked": try again within the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::connect_once(path) {
                Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5 + fastrand::u64(0..20)));
                }
                result => return result,
            }
        }
    }

    fn connect_once(path: &Path) -> Result<Queue, QueueError> {
        let open_err = |source| QueueError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn, path).map_err(|e| match e {
            QueueError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        let mut queue = Queue {
            conn,
            path: path.to_path_buf(),
        };
        queue.migrate()?;
        Ok(queue)
    }

    /// The poster's connection: like `connect`, but its own commits (deletes
    /// of delivered rows, attempt counts) are not flushed to disk one by one
    /// (`synchronous=NORMAL`; WAL keeps the file consistent either way). A
    /// power cut may then undo the last deletes, and those rows are sent
    /// again with the same event_id, which at-least-once delivery allows
    /// (SPEC §5.3). Inserts, on the sampler's connection, stay
    /// `synchronous=FULL`, so no committed snapshot is ever lost. Without
    /// this, one fsync per delivered row caps the drain at the disk's fsync
    /// rate.
    pub fn connect_for_delivery(path: &Path) -> Result<Queue, QueueError> {
        let queue = Self::connect(path)?;
        queue.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        Ok(queue)
    }

    /// `connect` plus a full structure check, so damage is found at start-up
    /// rather than by a failing insert later.
    fn open_checked(path: &Path) -> Result<Queue, QueueError> {
        let queue = Self::open_for_command(path)?;
        let verdict: String = queue
            .conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Err(QueueError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(verdict),
                ),
            });
        }
        Ok(queue)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the schema up to `SCHEMA_VERSION`, one step per version, each
    /// step in its own transaction together with its `user_version` bump.
    fn migrate(&mut self) -> Result<(), QueueError> {
        let version: i32 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::TooNew {
                path: self.path.clone(),
                found: version,
            });
        }
        for step in version..SCHEMA_VERSION {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the lock.
            let current: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if current == step {
                MIGRATIONS[step as usize](&tx)?;
                tx.execute_batch(&format!("PRAGMA user_version = {}", step + 1))?;
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// Inserts one row; returns how many old rows were dropped to make room.
    /// With `max_pending` rows already pending, the oldest pending rows are
    /// deleted first and counted in `dropped_total` (the caller warns, at
    /// most once a minute).
    pub fn insert(
        &mut self,
        event_id: &str,
        created_at: &str,
        payload: &str,
        max_pending: u64,
    ) -> Result<u64, QueueError> {
        let max_pending = max_pending.max(1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending = meta_get(&tx, "pending")?;
        let excess = (pending + 1).saturating_sub(max_pending);
        let mut dropped = 0;
        if excess > 0 {
            dropped = tx.execute(
                "DELETE FROM pending WHERE id IN (SELECT id FROM pending ORDER BY id LIMIT ?1)",
                [excess as i64],
            )? as u64;
            meta_add(&tx, "dropped_total", dropped)?;
        }
        tx.execute(
            "INSERT INTO pending (event_id, created_at, payload) VALUES (?1, ?2, ?3)",
            params![event_id, created_at, payload],
        )?;
        tx.commit()?;
        Ok(dropped)
    }

    /// The `n` oldest pending rows, oldest first.
    pub fn peek(&self, n: usize) -> Result<Vec<Row>, QueueError> {
        self.select_rows("pending", n)
    }

    /// The `n` oldest dead rows, oldest first.
    pub fn peek_dead(&self, n: usize) -> Result<Vec<Row>, QueueError> {
        self.select_rows("dead", n)
    }

    fn select_rows(&self, table: &str, n: usize) -> Result<Vec<Row>, QueueError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, event_id, created_at, attempts, last_error, payload \
             FROM {table} ORDER BY id LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([n.min(i64::MAX as usize) as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    created_at: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    payload: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes rows the backend accepted and adds them to `delivered_total`,
    /// in one transaction. Returns how many rows were deleted (rows purged
    /// meanwhile are not counted).
    pub fn delete_delivered(&mut self, ids: &[i64]) -> Result<u64, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM pending WHERE id = ?1")?;
            for id in ids {
                deleted += stmt.execute([id])? as u64;
            }
        }
        meta_add(&tx, "delivered_total", deleted)?;
        tx.commit()?;
        self.reclaim();
        Ok(deleted)
    }

    /// Records that the backend rejected these rows as bad: attempts+1 and
    /// `last_error`; rows that reach `max_attempts` move to the dead list,
    /// which is then trimmed to `max_dead` (oldest first). One transaction.
    pub fn reject(
        &mut self,
        ids: &[i64],
        error: &str,
        max_attempts: u32,
        max_dead: u64,
    ) -> Result<Rejected, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Rejected::default();
        {
            let mut bump = tx.prepare_cached(
                "UPDATE pending SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            )?;
            for id in ids {
                bump.execute(params![id, error])?;
            }
            let mut worn =
                tx.prepare_cached("SELECT id FROM pending WHERE id = ?1 AND attempts >= ?2")?;
            let mut dead_ids = Vec::new();
            for id in ids {
                if let Some(id) = worn
                    .query_row(params![id, max_attempts], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    dead_ids.push(id);
                }
            }
            out.moved_to_dead = move_to_dead(&tx, &dead_ids)?;
        }
        if out.moved_to_dead > 0 {
            out.dead_trimmed = trim_dead(&tx, max_dead)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Moves rows to the dead list at once, keeping their ids (and so their order).
    pub fn move_to_dead(&mut self, ids: &[i64]) -> Result<u64, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let moved = move_to_dead(&tx, ids)?;
        tx.commit()?;
        Ok(moved)
    }

    /// Deletes the oldest dead rows beyond `max_dead`; returns how many.
    pub fn trim_dead(&mut self, max_dead: u64) -> Result<u64, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let trimmed = trim_dead(&tx, max_dead)?;
        tx.commit()?;
        Ok(trimmed)
    }

    /// Moves every dead row back to pending with its original id, so it
    /// takes its original place in the order; attempts start again at 0.
    pub fn retry_dead(&mut self) -> Result<u64, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "INSERT INTO pending (id, event_id, created_at, attempts, last_error, payload) \
             SELECT id, event_id, created_at, 0, last_error, payload FROM dead ORDER BY id",
            [],
        )? as u64;
        tx.execute("DELETE FROM dead", [])?;
        tx.commit()?;
        Ok(moved)
    }

    /// Deletes every pending row; returns how many.
    pub fn purge_pending(&mut self) -> Result<u64, QueueError> {
        self.purge("pending")
    }

    /// Deletes every dead row; returns how many.
    pub fn purge_dead(&mut self) -> Result<u64, QueueError> {
        self.purge("dead")
    }

    fn purge(&mut self, table: &str) -> Result<u64, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let purged = tx.execute(&format!("DELETE FROM {table}"), [])? as u64;
        tx.commit()?;
        self.reclaim();
        Ok(purged)
    }

    /// The persisted counters (one small read).
    pub fn counts(&self) -> Result<Counts, QueueError> {
        let mut stmt = self.conn.prepare_cached("SELECT key, value FROM meta")?;
        let mut counts = Counts::default();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let value = row.get::<_, i64>(1)?.max(0) as u64;
            match key.as_str() {
                "pending" => counts.pending = value,
                "dead" => counts.dead = value,
                "dropped_total" => counts.dropped_total = value,
                "delivered_total" => counts.delivered_total = value,
                _ => {}
            }
        }
        Ok(counts)
    }

    pub fn stats(&self) -> Result<Stats, QueueError> {
        let counts = self.counts()?;
        let oldest: Option<String> = self
            .conn
            .query_row(
                "SELECT created_at FROM pending ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Stats {
            pending: counts.pending,
            dead: counts.dead,
            oldest_pending_age_s: oldest
                .as_deref()
                .map(|t| age_seconds(t, SystemTime::now()))
                .unwrap_or(0),
            dropped_total: counts.dropped_total,
            delivered_total: counts.delivered_total,
            db_path: self.path.clone(),
            db_bytes: file_bytes(&self.path),
        })
    }

    /// Folds the WAL into the main file and truncates it (on clean shutdown).
    pub fn checkpoint(&self) -> Result<Checkpoint, QueueError> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok(Checkpoint {
                    busy: r.get::<_, i64>(0)? != 0,
                    wal_frames: r.get(1)?,
                    checkpointed_frames: r.get(2)?,
                })
            })?)
    }

    /// [`Queue::checkpoint`] waiting at most `wait` for other connections
    /// (the rest of the stop budget) instead of the usual busy timeout.
    pub fn checkpoint_within(&self, wait: Duration) -> Result<Checkpoint, QueueError> {
        self.conn.busy_timeout(wait)?;
        let done = self.checkpoint();
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        done
    }

    /// Caps the main file at `max_bytes` (rounded down to whole pages, never
    /// below its current size); None lifts the cap. Inserts beyond it fail
    /// like on a full disk. Returns the cap in bytes now in force.
    pub fn set_size_limit(&self, max_bytes: Option<u64>) -> Result<u64, QueueError> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = match max_bytes {
            Some(bytes) => (bytes / page_size as u64).max(1) as i64,
            None => i64::from(u32::MAX) - 1,
        };
        let set: i64 =
            self.conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })?;
        Ok(set as u64 * page_size as u64)
    }

    /// Returns free pages to the file system once enough have piled up, so
    /// the file shrinks after a backlog drains (at the next checkpoint).
    /// Runs after the change it follows has committed, so a failure here
    /// (another connection busy) only postpones the shrinking.
    fn reclaim(&self) {
        let result = (|| -> rusqlite::Result<()> {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if free >= RECLAIM_FREE_PAGES {
                // Frees one page per step: step it to the end.
                let mut stmt = self.conn.prepare_cached("PRAGMA incremental_vacuum")?;
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            log::debug!("queue {}: shrinking postponed: {e}", self.path.display());
        }
    }
}

/// Refuses a file that does not start like an SQLite database before SQLite
/// opens it (see `Queue::open_for_command`).
fn check_header(path: &Path) -> Result<(), QueueError> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        // Missing: SQLite creates it. Unreadable: SQLite gives the error.
        Err(_) => return Ok(()),
    };
    let mut head = Vec::with_capacity(16);
    let read = file.by_ref().take(16).read_to_end(&mut head);
    match read {
        Ok(0) => Ok(()),
        Ok(_) if head == MAGIC => Ok(()),
        Ok(_) => Err(QueueError::NotADatabase {
            path: path.to_path_buf(),
            reason: "the file does not start with the SQLite header".to_string(),
        }),
        Err(source) => Err(QueueError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The per-connection settings; fails if WAL mode could not be set.
fn configure(conn: &Connection, path: &Path) -> Result<(), QueueError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
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

type Migration = fn(&rusqlite::Transaction) -> rusqlite::Result<()>;

/// `MIGRATIONS[v]` takes the schema from version v to v+1.
const MIGRATIONS: &[Migration] = &[migrate_to_v1];

fn migrate_to_v1(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
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

fn meta_get(tx: &rusqlite::Transaction, key: &str) -> rusqlite::Result<u64> {
    let value: i64 = tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
    Ok(value.max(0) as u64)
}

fn meta_add(tx: &rusqlite::Transaction, key: &str, n: u64) -> rusqlite::Result<()> {
    if n > 0 {
        tx.execute(
            "UPDATE meta SET value = value + ?2 WHERE key = ?1",
            params![key, n as i64],
        )?;
    }
    Ok(())
}

fn move_to_dead(tx: &rusqlite::Transaction, ids: &[i64]) -> rusqlite::Result<u64> {
    let now = unix_now() as i64;
    let mut copy = tx.prepare_cached(
        "INSERT INTO dead (id, event_id, created_at, attempts, last_error, payload, died_at) \
         SELECT id, event_id, created_at, attempts, last_error, payload, ?2 \
         FROM pending WHERE id = ?1",
    )?;
    let mut remove = tx.prepare_cached("DELETE FROM pending WHERE id = ?1")?;
    let mut moved = 0;
    for id in ids {
        if copy.execute(params![id, now])? > 0 {
            remove.execute([id])?;
            moved += 1;
        }
    }
    Ok(moved)
}

fn trim_dead(tx: &rusqlite::Transaction, max_dead: u64) -> rusqlite::Result<u64> {
    let dead = meta_get(tx, "dead")?;
    let excess = dead.saturating_sub(max_dead);
    if excess == 0 {
        return Ok(0);
    }
    Ok(tx.execute(
        "DELETE FROM dead WHERE id IN (SELECT id FROM dead ORDER BY id LIMIT ?1)",
        [excess as i64],
    )? as u64)
}

/// Seconds from an RFC 3339 timestamp to `now` (0 if unparsable or future).
fn age_seconds(created_at: &str, now: SystemTime) -> u64 {
    humantime::parse_rfc3339_weak(created_at)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The main file plus its WAL, in bytes (0 for files that do not exist).
pub fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(&sidecar(path, "-wal"))
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Renames a damaged queue file to `<name>.corrupt-<unix time>` (its WAL
/// alongside, as `...-wal`, so the pair can still be examined) and removes
/// its shared-memory index. Returns the new name.
fn set_aside(path: &Path) -> Result<PathBuf, QueueError> {
    let io_err = |p: &Path, source| QueueError::Io {
        path: p.to_path_buf(),
        source,
    };
    let base = format!("{}.corrupt-{}", path.display(), unix_now());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(|e| io_err(path, e))?;
    let wal = sidecar(path, "-wal");
    if wal.exists() {
        let to = sidecar(&aside, "-wal");
        std::fs::rename(&wal, &to).map_err(|e| io_err(&wal, e))?;
    }
    let shm = sidecar(path, "-shm");
    match std::fs::remove_file(&shm) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&shm, e)),
        _ => {}
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_of_rfc3339_timestamps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        // 1_800_000_000 = 2027-01-15T08:00:00Z
        assert_eq!(age_seconds("2027-01-15T08:00:00.000Z", now), 100);
        assert_eq!(age_seconds("2027-01-15T08:00:00Z", now), 100);
        assert_eq!(age_seconds("not a time", now), 0);
        assert_eq!(age_seconds("2030-01-01T00:00:00.000Z", now), 0);
    }
}
