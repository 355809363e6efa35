//! SQLite outbox (SPEC §5.1, §5.2, §5.4).
//!
//! One file, `<state_dir>/queue.db`, in WAL mode with `synchronous=FULL`: a
//! snapshot is durable once its insert has committed. (The poster's
//! connections alone commit their deletes without an fsync each: see
//! `connect_for_delivery`.) Every change is one short `BEGIN IMMEDIATE`
//! transaction, so the daemon's connections (sampler and posters) and the
//! `metricsd queue` commands can share the file safely.
//!
//! A snapshot is stored once (its flat form and an opaque model blob) with
//! one pending row per sink it is for; each sink has its own pending rows,
//! dead list and counters (`sinks`), and the snapshots double as the
//! history of SPEC §5.2 until they are older than `queue.history` and no
//! sink still needs them.
//!
//! - `schema`: tables, settings, migrations (`PRAGMA user_version`);
//! - `sinks`: the per-sink rows and counters;
//! - `history`: the flat rows kept by age for the live page;
//! - `recovery`: checks before SQLite opens the file, setting a bad file aside.

mod history;
mod recovery;
mod schema;
mod sinks;

pub use history::MAX_HISTORY_ROWS;
pub use recovery::file_bytes;
pub use schema::{DEFAULT_HISTORY, SCHEMA_VERSION};
pub use sinks::{Counts, InsertReport, Rejected, Row, SinkStats};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The sink that `queue` commands act on by default and whose figures the
/// top level of `queue stats` shows (SPEC §1).
pub const DEFAULT_SINK: &str = "backend";

/// Give free pages back to the file system once this many have piled up
/// (1 MiB), e.g. after a large backlog has drained.
const RECLAIM_FREE_PAGES: i64 = 256;
/// Page cache of each poster's connection (KiB).
const DELIVERY_CACHE_KIB: i64 = 64;

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
    #[error("{path}: {reason}")]
    ForeignWal { path: PathBuf, reason: String },
    #[error("{path}: cannot be written ({source})")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
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

    /// True when the failure is what a full disk also gives: "disk full",
    /// a plain I/O error or a file that cannot be made (SQLite's -shm and
    /// -wal), or a write refused with ENOSPC/EDQUOT. Whether the disk is
    /// in fact full is for the caller to check.
    pub fn may_be_for_want_of_space(&self) -> bool {
        match self {
            QueueError::Io { source, .. } => crate::os::statedir::is_out_of_space(source),
            QueueError::Unwritable { .. }
            | QueueError::NotWal { .. }
            | QueueError::NotADatabase { .. }
            | QueueError::ForeignWal { .. }
            | QueueError::TooNew { .. } => false,
            _ => matches!(
                sqlite_code(self),
                Some(ErrorCode::DiskFull)
                    | Some(ErrorCode::SystemIoFailure)
                    | Some(ErrorCode::CannotOpen)
            ),
        }
    }

    /// True when another connection held a lock we could not wait for.
    pub fn is_busy(&self) -> bool {
        matches!(
            sqlite_code(self),
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
        )
    }

    /// True when the file is not a database, is damaged, or comes with a WAL
    /// that is not its own: the daemon sets such a file aside.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            QueueError::NotADatabase { .. } | QueueError::ForeignWal { .. }
        ) || matches!(
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
    /// The backend sink's figures, or the history's when no sink is configured.
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_age_s: u64,
    pub dropped_total: u64,
    pub delivered_total: u64,
    pub db_path: PathBuf,
    /// The main file plus its WAL.
    pub db_bytes: u64,
    /// One entry per configured sink.
    pub sinks: BTreeMap<String, SinkStats>,
}

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

pub struct Queue {
    conn: Connection,
    path: PathBuf,
    /// Sink name → row id in `sinks`, for sinks known to exist in the file.
    sink_ids: HashMap<String, i64>,
    /// The history window this connection last wrote (see `set_history`).
    history_written: Option<Duration>,
}

impl Queue {
    /// Opens the daemon's queue at start-up, creating it if missing: the
    /// process's first connection to the file (see `open_for_command`).
    ///
    /// A file (or its directory) that cannot be written is an error, not
    /// set aside: a read-only or immutable file is someone's decision (or a
    /// read-only mount), renaming it would fail the same way, and starting
    /// with a new file elsewhere would hide the queued rows. The daemon
    /// exits 73 naming the file.
    ///
    /// A file that is not a valid database, or whose WAL belongs to another
    /// database, is renamed aside with its WAL (`queue.db.corrupt-<unix
    /// time>`), logged as an error, and replaced by a new queue.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        recovery::check_writable(path)?;
        let queue = match Self::open_checked(path) {
            Ok(queue) => queue,
            Err(e) if e.is_corrupt() => {
                let aside = recovery::set_aside(path)?;
                log::error!(
                    "queue {} is unusable ({e}); moved it to {} and started a new queue",
                    path.display(),
                    aside.display()
                );
                Self::connect(path)?
            }
            Err(e) => return Err(e),
        };
        // A write proves the file takes inserts (permissions aside, SQLite
        // may have opened it read-only).
        queue.touch().map_err(|e| match e {
            QueueError::Sqlite(source)
                if matches!(
                    source.sqlite_error_code(),
                    Some(ErrorCode::ReadOnly)
                        | Some(ErrorCode::CannotOpen)
                        | Some(ErrorCode::PermissionDenied)
                ) =>
            {
                QueueError::Unwritable {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(source.to_string()),
                }
            }
            other => other,
        })?;
        Ok(queue)
    }

    /// Opens the queue for a `metricsd queue` command, never moving it (the
    /// daemon may be using it): a file that is not a database, or whose WAL
    /// is another database's, is refused before SQLite touches it (SQLite
    /// would delete a stale `-wal` beside a non-database, and would replay a
    /// foreign one into this file). Like `open`, it must be the process's
    /// only connection to the file: it reads the files itself, and closing
    /// a descriptor drops every POSIX lock the process holds on the file,
    /// including SQLite's.
    pub fn open_for_command(path: &Path) -> Result<Queue, QueueError> {
        recovery::check_header(path)?;
        recovery::check_wal(path)?;
        Self::connect(path)
    }

    /// Opens (or creates) the queue without any recovery: for further
    /// connections of a process (the posters'). It touches the file only
    /// through SQLite, which keeps its locks for all the process's
    /// connections together.
    pub fn connect(path: &Path) -> Result<Queue, QueueError> {
        // Switching a new file to WAL takes an exclusive lock for which
        // SQLite does not wait, so two processes creating the queue at once
        // could see "database is locked": try again within the busy timeout.
        let deadline = Instant::now() + schema::BUSY_TIMEOUT;
        loop {
            match Self::connect_once(path) {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
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
        schema::small_lookaside(&conn).map_err(open_err)?;
        schema::configure(&conn, path).map_err(|e| match e {
            QueueError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        let mut queue = Queue {
            conn,
            path: path.to_path_buf(),
            sink_ids: HashMap::new(),
            history_written: None,
        };
        queue.migrate()?;
        Ok(queue)
    }

    /// A poster's connection: like `connect`, but its own commits (deletes
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
        // A poster only walks its own oldest rows and deletes them: a small
        // page cache serves that (the OS caches the file), instead of the
        // sampler's 512 KiB again for every sink.
        queue.conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{DELIVERY_CACHE_KIB}"
        ))?;
        Ok(queue)
    }

    /// `open_for_command` plus a full structure check, so damage is found at
    /// start-up rather than by a failing insert later.
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

    /// Brings the schema up to `SCHEMA_VERSION`: every step from the file's
    /// version, with its `user_version` bump, in one transaction that also
    /// touches the `meta` page. So the upgrade is all or nothing, and it is
    /// marked with the file id like every other write (see `recovery`): an
    /// unmarked migration left in the WAL by a crash would otherwise make
    /// the next start take the file's own WAL for a foreign one and set a
    /// healthy queue aside.
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
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let current: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current < SCHEMA_VERSION {
            for step in current.max(0)..SCHEMA_VERSION {
                schema::MIGRATIONS[step as usize](&tx)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
            // Schema 2 on has the marker beside this counter.
            tx.execute("UPDATE meta SET value = value + 1 WHERE key = 'writes'", [])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Starts a write transaction. Every one touches the `meta` page, so
    /// the WAL frames of every commit name this file (see `recovery`).
    fn write(&mut self) -> Result<Transaction<'_>, QueueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'writes'")?
            .execute([])?;
        Ok(tx)
    }

    /// An empty write transaction.
    fn touch(&self) -> Result<(), QueueError> {
        self.conn.execute_batch(
            "BEGIN IMMEDIATE; UPDATE meta SET value = value + 1 WHERE key = 'writes'; COMMIT;",
        )?;
        Ok(())
    }

    /// The figures of `metricsd queue stats` for the configured sinks.
    pub fn stats(&self, configured: &[&str]) -> Result<Stats, QueueError> {
        let now = SystemTime::now();
        let mut sinks = BTreeMap::new();
        for name in configured {
            sinks.insert(name.to_string(), self.sink_stats(name, now)?);
        }
        let backend = match sinks.get(DEFAULT_SINK) {
            Some(s) => s.clone(),
            None => self.sink_stats(DEFAULT_SINK, now)?,
        };
        let mut stats = Stats {
            pending: backend.pending,
            dead: backend.dead,
            oldest_pending_age_s: backend.oldest_pending_age_s,
            dropped_total: backend.dropped_total,
            delivered_total: backend.delivered_total,
            db_path: self.path.clone(),
            db_bytes: file_bytes(&self.path),
            sinks,
        };
        if configured.is_empty() {
            // No sink: the queue is the local history (SPEC §1).
            let (rows, oldest_ms) = self.history_extent()?;
            stats.pending = rows;
            stats.dead = 0;
            stats.oldest_pending_age_s = oldest_ms.map(|ms| age_s(ms, now)).unwrap_or_default();
        }
        Ok(stats)
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
        self.conn.busy_timeout(schema::BUSY_TIMEOUT)?;
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
    fn reclaim(&mut self) {
        let result = (|| -> Result<(), QueueError> {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if free >= RECLAIM_FREE_PAGES {
                let tx = self.write()?;
                {
                    // Frees one page per step: step it to the end.
                    let mut stmt = tx.prepare_cached("PRAGMA incremental_vacuum")?;
                    let mut rows = stmt.query([])?;
                    while rows.next()?.is_some() {}
                }
                tx.commit()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            log::debug!("queue {}: shrinking postponed: {e}", self.path.display());
        }
    }
}

/// Unix milliseconds of an RFC 3339 timestamp (now if it does not parse).
pub(crate) fn unix_ms_of(created_at: &str) -> i64 {
    let at = humantime::parse_rfc3339_weak(created_at).unwrap_or_else(|_| SystemTime::now());
    unix_ms(at)
}

pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

/// Whole seconds from `ms` (unix milliseconds) to `now`; 0 if in the future.
fn age_s(ms: i64, now: SystemTime) -> u64 {
    (unix_ms(now).saturating_sub(ms) / 1000).max(0) as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_unix_milliseconds() {
        // 1_800_000_000 = 2027-01-15T08:00:00Z
        assert_eq!(unix_ms_of("2027-01-15T08:00:00.250Z"), 1_800_000_000_250);
        assert_eq!(unix_ms_of("2027-01-15T08:00:00Z"), 1_800_000_000_000);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        assert_eq!(age_s(1_800_000_000_000, now), 100);
        assert_eq!(age_s(1_900_000_000_000, now), 0);
    }
}
