//! Counters and state shared between the sampler, the poster and the stream
//! server, read by `/health` and `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
    /// Duration of the last sample in microseconds.
    pub last_sample_duration_us: AtomicU64,
    pub samples_total: AtomicU64,
    pub queue_pending: AtomicU64,
    pub queue_dead: AtomicU64,
    pub queue_dropped_total: AtomicU64,
    pub queue_insert_failures_total: AtomicU64,
    pub delivered_total: AtomicU64,
    pub post_failures_total: AtomicU64,
    pub stream_clients: AtomicU64,
    backend_state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            last_sample_unix_ms: AtomicI64::new(0),
            last_sample_duration_us: AtomicU64::new(0),
            samples_total: AtomicU64::new(0),
            queue_pending: AtomicU64::new(0),
            queue_dead: AtomicU64::new(0),
            queue_dropped_total: AtomicU64::new(0),
            queue_insert_failures_total: AtomicU64::new(0),
            delivered_total: AtomicU64::new(0),
            post_failures_total: AtomicU64::new(0),
            stream_clients: AtomicU64::new(0),
            backend_state: AtomicU8::new(BackendState::Disabled as u8),
            last_error: Mutex::new(None),
        }
    }
}

impl Status {
    pub fn backend_state(&self) -> BackendState {
        match self.backend_state.load(Ordering::Relaxed) {
            1 => BackendState::Ok,
            2 => BackendState::Failing,
            _ => BackendState::Disabled,
        }
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

    pub fn record_sample(&self, at: SystemTime, duration_us: u64) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.last_sample_unix_ms.store(ms, Ordering::Relaxed);
        self.last_sample_duration_us
            .store(duration_us, Ordering::Relaxed);
        self.samples_total.fetch_add(1, Ordering::Relaxed);
    }
}
