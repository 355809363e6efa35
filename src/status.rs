//! Counters and state shared between the sampler, the poster and the stream
//! server, read by `/health` and `/metrics`.

use crate::config::SinkKind;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `/health` reports about the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Disabled = 0,
    Ok = 1,
    Failing = 2,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Disabled => "disabled",
            BackendState::Ok => "ok",
            BackendState::Failing => "failing",
        }
    }
}

pub struct Status {
    pub started: Instant,
    /// Wall-clock time of the last sample, in ms since the epoch (0: none yet).
    pub last_sample_unix_ms: AtomicI64,
    /// When the last sample was recorded, on the monotonic clock: staleness
    /// is judged on it, so a wall-clock step never makes the daemon stale.
    last_sample_at: Mutex<Option<Instant>>,
    /// Duration of the last sample in microseconds.
    pub last_sample_duration_us: AtomicU64,
    pub samples_total: AtomicU64,
    pub queue_pending: AtomicU64,
    pub queue_dead: AtomicU64,
    pub queue_dropped_total: AtomicU64,
    pub queue_insert_failures_total: AtomicU64,
    /// Whether the latest queue insert failed (snapshots are being lost).
    insert_failing: AtomicBool,
    /// Set while the queue is still to be opened by the sampler (a start on a
    /// full disk): its recovery checks must not run beside other connections
    /// in the process, so the posters and the history wait until then.
    queue_unopened: AtomicBool,
    last_insert_error: Mutex<Option<String>>,
    pub delivered_total: AtomicU64,
    pub post_failures_total: AtomicU64,
    pub stream_clients: AtomicU64,
    backend_state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// One entry per sink that has had a poster since start (SPEC §4.4, §4.5).
    sinks: Mutex<BTreeMap<SinkKind, Arc<SinkStatus>>>,
}

/// One sink's figures for `/health` (`sinks`) and `/metrics` (`sink` label),
/// published by its poster.
pub struct SinkStatus {
    /// Whether the sink is configured now (a removed sink keeps its figures
    /// here but is left out of `/health` and `/metrics`).
    configured: AtomicBool,
    state: AtomicU8,
    pub pending: AtomicU64,
    pub dead: AtomicU64,
    pub dropped_total: AtomicU64,
    pub delivered_total: AtomicU64,
    pub expired_total: AtomicU64,
    pub post_failures_total: AtomicU64,
    /// OTLP only: data points the receiver reported as rejected in a partial success.
    pub otlp_rejected_points_total: AtomicU64,
    /// The poster's last look found nothing pending: the next row is fresh
    /// and waits the splay (a backlog does not). Not exported; the tests
    /// wait on it rather than on time.
    pub caught_up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Default for SinkStatus {
    fn default() -> Self {
        SinkStatus {
            configured: AtomicBool::new(false),
            state: AtomicU8::new(BackendState::Disabled as u8),
            pending: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            delivered_total: AtomicU64::new(0),
            expired_total: AtomicU64::new(0),
            post_failures_total: AtomicU64::new(0),
            otlp_rejected_points_total: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }
}

impl SinkStatus {
    pub fn state(&self) -> BackendState {
        state_of(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: BackendState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn configured(&self) -> bool {
        self.configured.load(Ordering::Relaxed)
    }

    pub fn set_configured(&self, configured: bool) {
        self.configured.store(configured, Ordering::Relaxed);
    }

    /// What failed last (a status code, a timeout; never a response body).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap() = error;
    }
}

fn state_of(value: u8) -> BackendState {
    match value {
        1 => BackendState::Ok,
        2 => BackendState::Failing,
        _ => BackendState::Disabled,
    }
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            last_sample_unix_ms: AtomicI64::new(0),
            last_sample_at: Mutex::new(None),
            last_sample_duration_us: AtomicU64::new(0),
            queue_unopened: AtomicBool::new(false),
            samples_total: AtomicU64::new(0),
            queue_pending: AtomicU64::new(0),
            queue_dead: AtomicU64::new(0),
            queue_dropped_total: AtomicU64::new(0),
            queue_insert_failures_total: AtomicU64::new(0),
            insert_failing: AtomicBool::new(false),
            last_insert_error: Mutex::new(None),
            delivered_total: AtomicU64::new(0),
            post_failures_total: AtomicU64::new(0),
            stream_clients: AtomicU64::new(0),
            backend_state: AtomicU8::new(BackendState::Disabled as u8),
            last_error: Mutex::new(None),
            sinks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Status {
    pub fn backend_state(&self) -> BackendState {
        state_of(self.backend_state.load(Ordering::Relaxed))
    }

    /// The figures of one sink (made on first use).
    pub fn sink(&self, kind: SinkKind) -> Arc<SinkStatus> {
        self.sinks.lock().unwrap().entry(kind).or_default().clone()
    }

    /// The configured sinks' figures, in [`SinkKind::ALL`] order.
    pub fn configured_sinks(&self) -> Vec<(SinkKind, Arc<SinkStatus>)> {
        self.sinks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.configured())
            .map(|(k, s)| (*k, s.clone()))
            .collect()
    }

    pub fn set_backend_state(&self, state: BackendState) {
        self.backend_state.store(state as u8, Ordering::Relaxed);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap() = error;
    }

    /// Records a sample taken now whose snapshot carries the wall-clock time `at`.
    pub fn record_sample(&self, at: SystemTime, duration_us: u64) {
        self.record_sample_seen(at, Instant::now(), duration_us);
    }

    /// Records a sample with both of its times (tests give an earlier `seen`).
    pub fn record_sample_seen(&self, at: SystemTime, seen: Instant, duration_us: u64) {
        *self.last_sample_at.lock().unwrap() = Some(seen);
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.last_sample_unix_ms.store(ms, Ordering::Relaxed);
        self.last_sample_duration_us
            .store(duration_us, Ordering::Relaxed);
        self.samples_total.fetch_add(1, Ordering::Relaxed);
    }

    /// How long ago the last sample was recorded (monotonic), if any was.
    pub fn since_last_sample(&self) -> Option<Duration> {
        self.last_sample_at.lock().unwrap().map(|at| at.elapsed())
    }

    /// A queue insert failed: the snapshot was not queued.
    pub fn record_insert_failure(&self, error: String) {
        self.queue_insert_failures_total
            .fetch_add(1, Ordering::Relaxed);
        *self.last_insert_error.lock().unwrap() = Some(error);
        self.insert_failing.store(true, Ordering::Relaxed);
    }

    /// Whether the queue is still to be opened (see `queue_unopened`).
    pub fn set_queue_unopened(&self, unopened: bool) {
        self.queue_unopened.store(unopened, Ordering::Release);
    }

    pub fn queue_opened(&self) -> bool {
        !self.queue_unopened.load(Ordering::Acquire)
    }

    /// A queue insert succeeded: the queue is healthy again.
    pub fn record_insert_ok(&self) {
        self.insert_failing.store(false, Ordering::Relaxed);
    }

    /// The error of the failing queue inserts, while they fail.
    pub fn insert_failure(&self) -> Option<String> {
        if !self.insert_failing.load(Ordering::Relaxed) {
            return None;
        }
        self.last_insert_error.lock().unwrap().clone()
    }
}
