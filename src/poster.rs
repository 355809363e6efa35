//! Delivery loop: oldest rows → POST → delete / back off / dead list (SPEC §5.3).
//!
//! One std thread with its own queue connection and one keep-alive HTTP
//! agent. It drains without pausing while rows are pending, sleeps on `wake`
//! (notified after each insert) when none are, and every wait also ends on
//! shutdown. Rows are deleted only after a 2xx or 409 for them, so a crash or
//! shutdown at any moment loses nothing (at worst a row is sent twice, with
//! the same event_id).

pub mod client;
mod resolver;

use crate::backoff;
use crate::config::{BackendConfig, Config, SharedConfig};
use crate::queue::{Queue, QueueError, Row};

/// The sink this poster drains.
const SINK: &str = crate::queue::DEFAULT_SINK;
use crate::shutdown::{Shutdown, Wake};
use crate::status::{BackendState, Status};
use client::{without_body, Client, Outcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often an idle poster looks at the configuration even without a wake
/// (a reload may have set or changed the backend URL).
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Wait after a queue error (busy beyond its timeout, disk trouble).
const QUEUE_ERROR_WAIT: Duration = Duration::from_secs(2);
/// Backoff waits are cut into slices this long to notice a reload.
const PAUSE_SLICE: Duration = Duration::from_millis(250);

/// Starts the poster thread with its own queue connection and HTTP agent.
pub fn spawn(
    db_path: PathBuf,
    config: SharedConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
    wake: Arc<Wake>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("poster".into())
        .spawn(move || {
            let _alive = crate::liveness::register("poster");
            shutdown.register(&wake);
            if let Some(queue) = connect(&db_path, &status, &shutdown) {
                Poster {
                    queue,
                    config,
                    status,
                    shutdown,
                    wake,
                    client: None,
                    failures: 0,
                    batch_limit: usize::MAX,
                    failing: false,
                    queue_failing: false,
                }
                .run();
            }
        })
}

/// Opens the poster's own connection, retrying until it works or shutdown.
fn connect(path: &Path, status: &Status, shutdown: &Shutdown) -> Option<Queue> {
    let mut logged = false;
    loop {
        match Queue::connect_for_delivery(path) {
            Ok(queue) => return Some(queue),
            Err(e) => {
                if !logged {
                    log::error!("poster cannot open the queue: {e}; retrying");
                    logged = true;
                }
                status.set_last_error(Some(format!("queue: {e}")));
            }
        }
        if shutdown.sleep(QUEUE_ERROR_WAIT) {
            return None;
        }
    }
}

struct Poster {
    queue: Queue,
    config: SharedConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
    wake: Arc<Wake>,
    /// Built for the current backend configuration; None when disabled.
    client: Option<Client>,
    /// Consecutive transient failures (picks the backoff step).
    failures: u32,
    /// Rows per POST: halved when a batch is rejected (to isolate the bad
    /// row), doubled after each success, never above `batch_size`.
    batch_limit: usize,
    /// Whether "failing" has been logged (so it is logged once).
    failing: bool,
    queue_failing: bool,
}

impl Poster {
    fn run(&mut self) {
        while !self.shutdown.is_triggered() {
            let config = self.config.get();
            let backend = &config.backend;
            if !backend.enabled() {
                self.disable();
                self.refresh_status();
                self.wake.wait_timeout(IDLE_RECHECK, &self.shutdown);
                continue;
            }
            if let Err(reason) = self.ensure_client(backend) {
                self.transient_failure(reason, None, &config);
                continue;
            }
            let limit = self.batch_limit.min(backend.batch_size).max(1);
            let rows = match self.queue.oldest(SINK, limit) {
                Ok(rows) => rows,
                Err(e) => {
                    self.queue_error("read pending rows", &e);
                    self.pause(QUEUE_ERROR_WAIT, &config);
                    continue;
                }
            };
            if rows.is_empty() {
                self.refresh_status();
                self.wake.wait_timeout(IDLE_RECHECK, &self.shutdown);
                continue;
            }
            crate::fault::point("poster");
            let outcome = match &self.client {
                Some(client) => crate::liveness::network_wait(|| client.post(&rows)),
                None => continue,
            };
            match outcome {
                Outcome::Delivered { .. } => self.delivered(&rows, limit, &config),
                Outcome::Retry {
                    reason,
                    retry_after,
                } => self.transient_failure(reason, retry_after, &config),
                Outcome::Rejected { status, reason } => {
                    self.rejected(&rows, status, reason, &config)
                }
            }
        }
    }

    fn host(&self) -> &str {
        self.client.as_ref().map(Client::host).unwrap_or("backend")
    }

    /// (Re)builds the agent when the backend configuration changed.
    fn ensure_client(&mut self, backend: &BackendConfig) -> Result<(), String> {
        if self.client.as_ref().is_some_and(|c| c.backend() == backend) {
            return Ok(());
        }
        let first = self.client.is_none();
        let client = Client::new(backend)?;
        if first {
            log::debug!("posting to {}", client.host());
        } else {
            log::info!(
                "backend configuration changed; posting to {}",
                client.host()
            );
        }
        self.client = Some(client);
        self.failures = 0;
        self.batch_limit = usize::MAX;
        self.failing = false;
        self.status.set_backend_state(BackendState::Ok);
        Ok(())
    }

    fn disable(&mut self) {
        if self.client.take().is_some() {
            log::info!("backend url is now empty: not posting; snapshots stay queued");
        }
        self.failing = false;
        self.status.set_backend_state(BackendState::Disabled);
    }

    fn delivered(&mut self, rows: &[Row], limit: usize, config: &Arc<Config>) {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if let Err(e) = self.queue.delete_delivered(SINK, &ids) {
            // At-least-once: the rows will be sent again with the same event_ids.
            self.queue_error("delete delivered rows", &e);
            self.pause(QUEUE_ERROR_WAIT, config);
            return;
        }
        self.queue_ok();
        self.backend_ok();
        self.batch_limit = limit.saturating_mul(2);
        self.refresh_status();
    }

    fn backend_ok(&mut self) {
        self.failures = 0;
        if self.failing {
            log::info!("backend {} ok again", self.host());
            self.failing = false;
        }
        self.status.set_backend_state(BackendState::Ok);
    }

    /// The backend or the way to it failed: rows stay, wait, try again.
    fn transient_failure(
        &mut self,
        reason: String,
        retry_after: Option<Duration>,
        config: &Arc<Config>,
    ) {
        let backend = &config.backend;
        self.failures = self.failures.saturating_add(1);
        self.status
            .post_failures_total
            .fetch_add(1, Ordering::Relaxed);
        self.status.set_last_error(Some(format!(
            "backend {}: {}",
            self.host(),
            without_body(&reason)
        )));
        let delay = backoff::retry_delay(
            &backend.retry_backoff,
            self.failures,
            fastrand::f64(),
            retry_after,
            backend.max_retry_after,
        );
        if !self.failing {
            self.failing = true;
            self.status.set_backend_state(BackendState::Failing);
            log::warn!(
                "backend {} failing: {reason}; rows stay queued, retrying in {}",
                self.host(),
                crate::config::format_duration(delay)
            );
        } else {
            log::debug!(
                "backend {} still failing: {reason}; retrying in {delay:?}",
                self.host()
            );
        }
        self.refresh_status();
        self.pause(delay, config);
    }

    /// The backend called the rows bad: isolate the bad row by halving the
    /// batch, then count attempts on it alone until it goes to the dead list.
    fn rejected(&mut self, rows: &[Row], status: u16, reason: String, config: &Arc<Config>) {
        let backend = &config.backend;
        self.backend_ok();
        self.status
            .post_failures_total
            .fetch_add(1, Ordering::Relaxed);
        self.status.set_last_error(Some(format!(
            "backend {}: {}",
            self.host(),
            without_body(&reason)
        )));
        if rows.len() > 1 {
            self.batch_limit = rows.len() / 2;
            log::info!(
                "backend {} rejected a batch of {} rows (HTTP {status}); splitting it to find the bad row",
                self.host(),
                rows.len()
            );
            return;
        }
        let row = &rows[0];
        let result = self.queue.reject(
            SINK,
            &[row.id],
            &reason,
            backend.max_attempts,
            config.queue.max_dead,
        );
        match result {
            Ok(done) => {
                self.queue_ok();
                if done.moved_to_dead > 0 {
                    log::warn!(
                        "row {} moved to the dead list after {} rejection(s): {reason}",
                        row.event_id,
                        backend.max_attempts
                    );
                } else {
                    log::warn!(
                        "backend {} rejected row {} (attempt {} of {}): {reason}",
                        self.host(),
                        row.event_id,
                        row.attempts + 1,
                        backend.max_attempts
                    );
                }
                if done.dead_trimmed > 0 {
                    log::warn!(
                        "dead list full ({} rows): deleted the {} oldest dead row(s)",
                        config.queue.max_dead,
                        done.dead_trimmed
                    );
                }
                self.refresh_status();
                if done.moved_to_dead == 0 {
                    // Give a briefly confused backend a moment before the next try.
                    let wait = backoff::with_jitter(
                        backoff::step(&backend.retry_backoff, 1),
                        fastrand::f64(),
                    );
                    self.pause(wait, config);
                }
            }
            Err(e) => {
                self.queue_error("record a rejected row", &e);
                self.pause(QUEUE_ERROR_WAIT, config);
            }
        }
    }

    fn queue_error(&mut self, what: &str, e: &QueueError) {
        if !self.queue_failing {
            log::error!("poster could not {what} in the queue: {e}");
            self.queue_failing = true;
        }
        self.status.set_last_error(Some(format!("queue: {e}")));
    }

    fn queue_ok(&mut self) {
        if self.queue_failing {
            log::info!("poster can use the queue again");
            self.queue_failing = false;
        }
    }

    /// Publishes the queue's persisted counters for /health and /metrics.
    fn refresh_status(&mut self) {
        match self.queue.counts(SINK) {
            Ok(c) => {
                self.queue_ok();
                let s = &self.status;
                s.queue_pending.store(c.pending, Ordering::Relaxed);
                s.queue_dead.store(c.dead, Ordering::Relaxed);
                s.queue_dropped_total
                    .store(c.dropped_total, Ordering::Relaxed);
                s.delivered_total
                    .store(c.delivered_total, Ordering::Relaxed);
            }
            Err(e) => self.queue_error("read its counters", &e),
        }
    }

    /// Waits `delay`, ending early on shutdown or on a configuration reload
    /// (a new URL or token deserves a try at once).
    fn pause(&self, delay: Duration, config: &Arc<Config>) {
        let deadline = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if self.shutdown.sleep((deadline - now).min(PAUSE_SLICE)) {
                return;
            }
            if !Arc::ptr_eq(&self.config.get(), config) {
                return;
            }
        }
    }
}
