//! The delivery loop of SPEC §5.2-5.3, the same for every sink: oldest rows
//! → encode (the sink) → POST → delete / back off / dead list.
//!
//! One std thread per sink with its own queue connection and keep-alive
//! HTTP agent, so a sink that is down, hangs or rejects never delays
//! another. It drains without pausing while rows are pending, sleeps on its
//! `wake` (rung after each insert) when none are, and every wait also ends
//! on shutdown. Rows are deleted only after a 2xx or 409 for them, so a
//! crash or shutdown at any moment loses nothing (at worst a row is sent
//! twice, with the same event_id and the same sample timestamps).

use super::breaker::Breaker;
use super::client::{without_body, Client, Outcome};
use super::rows::SinkRows;
use super::sink::{self, Sink};
use super::splay;
use crate::backoff;
use crate::config::{Config, SharedConfig, SinkConfig, SinkKind};
use crate::queue::{QueueError, Row};
use crate::shutdown::{Shutdown, Wake};
use crate::status::{BackendState, SinkStatus, Status};
use crate::throttle::Throttled;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often an idle poster looks at the queue and the configuration even
/// without a wake. Inserts and reloads ring `wake`, so this is only a
/// safety net; each wake-up costs CPU (tens of µs on a virtual machine).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// How long a poster waits for a reload to settle (see `run`); the reload
/// rings it sooner.
const RECONCILE_WAIT: Duration = Duration::from_millis(50);
/// Wait after a queue error (busy beyond its timeout, disk trouble).
const QUEUE_ERROR_WAIT: Duration = Duration::from_secs(2);

/// What every poster shares with the daemon.
#[derive(Clone)]
pub struct PosterContext {
    pub db_path: PathBuf,
    pub config: SharedConfig,
    pub status: Arc<Status>,
    pub shutdown: Shutdown,
    /// For `splay = "auto"`.
    pub machine_id: String,
}

/// Whether a poster goes on serving its sink. A reload that removes the
/// sink asks it to end; it ends at its next look, which can be a request
/// `timeout` away. A reload that brings the sink back before then takes
/// the request back, so that one sink never has two posters.
#[derive(Debug, Default)]
pub struct Tenure(AtomicU8);

const SERVING: u8 = 0;
const ASKED_TO_END: u8 = 1;
const ENDING: u8 = 2;

impl Tenure {
    /// The sink was removed: end at the next look.
    pub fn ask_to_end(&self) {
        let _ = self
            .0
            .compare_exchange(SERVING, ASKED_TO_END, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The sink is back: true if the poster had not yet begun to end, and
    /// now goes on; false if it is ending (wait for it, then start anew).
    pub fn take_back(&self) -> bool {
        self.0
            .compare_exchange(ASKED_TO_END, SERVING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The poster's look, given whether the configuration it has just read
    /// has its sink. The tenure decides, not that read: a reload that
    /// removes the sink and brings it back may take this poster back after
    /// the read. Once it says `End`, `take_back` can no longer stop it.
    fn look(&self, configured: bool) -> Look {
        if self
            .0
            .compare_exchange(ASKED_TO_END, ENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Look::End;
        }
        if configured {
            Look::Serve
        } else {
            // A reload half done: the sink left the configuration and has
            // not been asked to end yet, or came back after the read.
            Look::Settle
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Look {
    Serve,
    /// Read the configuration again once the reload has settled.
    Settle,
    End,
}

/// Starts the poster of one sink. It returns by itself once the sink is no
/// longer configured or `tenure` asks it to end (its rows stay in the
/// file), or on shutdown.
pub fn spawn(
    kind: SinkKind,
    ctx: PosterContext,
    wake: Arc<Wake>,
    tenure: Arc<Tenure>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("poster-{}", kind.name()))
        .spawn(move || {
            let alive = crate::liveness::register(&format!("poster-{}", kind.name()));
            ctx.shutdown.register(&wake);
            let sink_status = ctx.status.sink(kind);
            sink_status.set_configured(true);
            let Some(mut rows) =
                connect(kind, &ctx.db_path, &ctx.status, &sink_status, &ctx.shutdown)
            else {
                return;
            };
            let sink = sink::for_kind(kind);
            let breaker = match rows.rejected_run() {
                Ok(run) => Breaker::at(run),
                Err(e) => {
                    log::warn!("{kind} poster cannot read its rejected rows: {e}");
                    Breaker::default()
                }
            };
            let mut poster = Poster {
                kind,
                rows,
                sink,
                config: ctx.config,
                status: ctx.status,
                sink_status,
                shutdown: ctx.shutdown,
                wake,
                tenure,
                machine_id: ctx.machine_id,
                client: None,
                failures: 0,
                batch_limit: usize::MAX,
                failing: false,
                queue_failing: false,
                breaker,
                caught_up: false,
                expired: Throttled::default(),
                partial: Throttled::default(),
                owed: None,
            };
            poster.set_state(BackendState::Ok);
            if poster.run() == End::Removed {
                alive.retire();
            }
        })
}

/// Opens the poster's own connection, retrying until it works or shutdown.
fn connect(
    kind: SinkKind,
    path: &Path,
    daemon: &Status,
    status: &SinkStatus,
    shutdown: &Shutdown,
) -> Option<SinkRows> {
    let mut logged = false;
    loop {
        // Not before the sampler has opened the queue (a start on a full
        // disk): its checks must not run beside another connection.
        let connected = if daemon.queue_opened() {
            SinkRows::connect(path, kind)
        } else {
            Err(QueueError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("not opened yet: the disk was full at the start"),
            })
        };
        match connected {
            Ok(rows) => return Some(rows),
            Err(e) => {
                if !logged {
                    log::error!("{kind} poster cannot open the queue: {e}; retrying");
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

#[derive(Debug, PartialEq, Eq)]
enum End {
    Shutdown,
    Removed,
}

struct Poster {
    kind: SinkKind,
    rows: SinkRows,
    sink: Box<dyn Sink>,
    config: SharedConfig,
    status: Arc<Status>,
    sink_status: Arc<SinkStatus>,
    shutdown: Shutdown,
    wake: Arc<Wake>,
    tenure: Arc<Tenure>,
    machine_id: String,
    /// Built for the current sink configuration.
    client: Option<Client>,
    /// Consecutive transient failures (picks the backoff step).
    failures: u32,
    /// Rows per POST: halved when a batch is rejected (to isolate the bad
    /// row), doubled after each success, never above `batch_size`.
    batch_limit: usize,
    /// Whether "failing" has been logged (so it is logged once).
    failing: bool,
    queue_failing: bool,
    breaker: Breaker,
    /// The last look found nothing pending: the next row is fresh and splayed.
    caught_up: bool,
    expired: Throttled,
    partial: Throttled,
    owed: Option<Owed>,
}

/// A receiver's verdict the queue could not record yet (a full disk): it is
/// recorded before anything else is sent, so that nothing it judged is sent
/// again meanwhile.
enum Owed {
    /// Rows it took, to delete.
    Delete(Vec<i64>),
    /// A row it called bad, to count (or bury).
    Reject(Rejection),
}

/// A receiver's verdict on one row, to be recorded in the queue.
struct Rejection {
    row: Row,
    status: u16,
    reason: String,
}

impl Poster {
    fn run(&mut self) -> End {
        while !self.shutdown.is_triggered() {
            let config = self.config.get();
            let sink_config = config.sink(self.kind);
            match self.tenure.look(sink_config.enabled()) {
                Look::Serve => {}
                Look::Settle => {
                    self.wake.wait_timeout(RECONCILE_WAIT, &self.shutdown);
                    continue;
                }
                Look::End => {
                    self.removed();
                    return End::Removed;
                }
            }
            if !self.settle(&config) {
                continue;
            }
            if let Err(reason) = self.ensure_client(sink_config) {
                self.transient_failure(reason, None, &config);
                continue;
            }
            let limit = self.batch_limit.min(sink_config.batch_size).max(1);
            let rows = match self.pending(limit, sink_config) {
                Ok(rows) => rows,
                Err(e) => {
                    self.queue_error("read pending rows", &e);
                    self.pause(QUEUE_ERROR_WAIT, &config);
                    continue;
                }
            };
            if rows.is_empty() {
                self.caught_up = true;
                self.sink_status.caught_up.store(true, Ordering::Release);
                self.refresh_status();
                self.wake.wait_timeout(IDLE_RECHECK, &self.shutdown);
                continue;
            }
            if std::mem::take(&mut self.caught_up) {
                self.sink_status.caught_up.store(false, Ordering::Release);
                let wait = self.splay_wait(&rows[0], sink_config, &config);
                if !wait.is_zero() {
                    self.pause(wait, &config);
                    continue;
                }
            }
            crate::fault::point("poster");
            let request = match self.sink.encode(&rows, sink_config) {
                Ok(request) => request,
                Err(bad) => {
                    self.bury(&rows[bad.index.min(rows.len() - 1)], &bad.reason, &config);
                    continue;
                }
            };
            let outcome = match &self.client {
                Some(client) => crate::liveness::network_wait(|| client.post(&request)),
                None => continue,
            };
            match outcome {
                Outcome::Delivered { body, .. } => self.delivered(&rows, limit, &body, &config),
                Outcome::Retry {
                    reason,
                    retry_after,
                } => self.transient_failure(reason, retry_after, &config),
                Outcome::Rejected { status, reason } => {
                    self.rejected(&rows, status, reason, &config)
                }
            }
        }
        End::Shutdown
    }

    /// `<sink> <host>` for logs, e.g. `remote_write 10.0.0.5:8428`.
    fn who(&self) -> String {
        let host = self.client.as_ref().map(Client::host).unwrap_or("(none)");
        format!("{} {host}", self.kind)
    }

    fn set_state(&self, state: BackendState) {
        self.sink_status.set_state(state);
        if self.kind == SinkKind::Backend {
            self.status.set_backend_state(state);
        }
    }

    fn set_last_error(&self, error: Option<String>) {
        if self.kind == SinkKind::Backend {
            self.status.set_last_error(error.clone());
        }
        self.sink_status.set_last_error(error);
    }

    fn count_failure(&self) {
        self.sink_status
            .post_failures_total
            .fetch_add(1, Ordering::Relaxed);
        if self.kind == SinkKind::Backend {
            self.status
                .post_failures_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The oldest pending rows, after removing those older than `max_age`.
    fn pending(&mut self, limit: usize, sink: &SinkConfig) -> Result<Vec<Row>, QueueError> {
        let rows = self.rows.oldest(limit)?;
        if sink.max_age.is_zero() {
            return Ok(rows);
        }
        let cutoff = SystemTime::now() - sink.max_age;
        let too_old = rows
            .first()
            .and_then(|r| humantime::parse_rfc3339_weak(&r.created_at).ok())
            .is_some_and(|at| at < cutoff);
        if !too_old {
            return Ok(rows);
        }
        let expired = self.rows.expire_older_than(cutoff)?;
        if let Some(n) = self.expired.add(expired) {
            log::warn!(
                "{}: {n} row(s) older than max_age {} removed unsent",
                self.who(),
                crate::config::format_duration(sink.max_age)
            );
        }
        self.refresh_status();
        self.rows.oldest(limit)
    }

    /// How long a fresh row still waits before its first send (splay is
    /// counted from the sample's time, which the whole fleet shares).
    fn splay_wait(&self, row: &Row, sink: &SinkConfig, config: &Config) -> Duration {
        let delay = splay::delay(
            sink.splay,
            config.interval,
            &self.machine_id,
            &config.node_id,
        );
        if delay.is_zero() {
            return delay;
        }
        let age = humantime::parse_rfc3339_weak(&row.created_at)
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        delay.saturating_sub(age)
    }

    /// (Re)builds the agent when the sink's configuration changed.
    fn ensure_client(&mut self, sink: &SinkConfig) -> Result<(), String> {
        if self.client.as_ref().is_some_and(|c| c.backend() == sink) {
            return Ok(());
        }
        let first = self.client.is_none();
        let client = Client::new(sink)?;
        if first {
            log::debug!("{} posting to {}", self.kind, client.host());
        } else {
            log::info!(
                "{} configuration changed; posting to {}",
                self.kind,
                client.host()
            );
        }
        self.client = Some(client);
        self.failures = 0;
        self.batch_limit = usize::MAX;
        self.failing = false;
        self.set_state(BackendState::Ok);
        Ok(())
    }

    fn removed(&mut self) {
        if self.client.take().is_some() {
            if self.kind == SinkKind::Backend {
                log::info!("backend url is now empty: not posting; snapshots stay queued");
            } else {
                log::info!(
                    "{} url is now empty: its poster stops; its rows stay queued",
                    self.kind
                );
            }
        }
        self.set_state(BackendState::Disabled);
        self.sink_status.set_configured(false);
    }

    /// Records what is owed, if anything; true once nothing is.
    fn settle(&mut self, config: &Arc<Config>) -> bool {
        match self.owed.take() {
            None => true,
            Some(Owed::Delete(ids)) => {
                let deleted = self.delete_delivered(ids);
                if deleted {
                    self.refresh_status();
                } else {
                    self.pause(QUEUE_ERROR_WAIT, config);
                }
                deleted
            }
            Some(Owed::Reject(rejection)) => self.record_rejection(rejection, config),
        }
    }

    /// Deletes rows the receiver took; when that fails they are owed.
    /// Only a stop before the delete succeeds sends them again (the same
    /// event_ids: at least once).
    fn delete_delivered(&mut self, ids: Vec<i64>) -> bool {
        match self.rows.delete_delivered(&ids) {
            Ok(_) => {
                self.queue_ok();
                true
            }
            Err(e) => {
                self.queue_error("delete delivered rows", &e);
                self.owed = Some(Owed::Delete(ids));
                false
            }
        }
    }

    fn delivered(&mut self, rows: &[Row], limit: usize, body: &[u8], config: &Arc<Config>) {
        let deleted = self.delete_delivered(rows.iter().map(|r| r.id).collect());
        if let Some(partial) = self.sink.read_success(body) {
            self.sink_status
                .otlp_rejected_points_total
                .fetch_add(partial.rejected_points, Ordering::Relaxed);
            if let Some(points) = self.partial.add(partial.rejected_points) {
                log::warn!(
                    "{} took the data but rejected {points} point(s): {}",
                    self.who(),
                    partial.message
                );
            }
        }
        self.sink_ok();
        self.batch_limit = limit.saturating_mul(2);
        if deleted {
            self.refresh_status();
        } else {
            self.pause(QUEUE_ERROR_WAIT, config);
        }
    }

    fn sink_ok(&mut self) {
        self.failures = 0;
        self.breaker.accepted();
        self.answering();
    }

    /// The receiver answers and judges rows again (accepting them, or
    /// rejecting one as bad): the sink is "ok", and the next failure of
    /// the receiver or the way to it is a change to "failing" again.
    fn answering(&mut self) {
        if self.failing {
            log::info!("{} ok again", self.who());
            self.failing = false;
        }
        self.set_state(BackendState::Ok);
    }

    /// The receiver or the way to it failed: rows stay, wait, try again.
    fn transient_failure(
        &mut self,
        reason: String,
        retry_after: Option<Duration>,
        config: &Arc<Config>,
    ) {
        let sink = config.sink(self.kind);
        self.failures = self.failures.saturating_add(1);
        self.count_failure();
        self.set_last_error(Some(format!("{}: {}", self.who(), without_body(&reason))));
        let delay = backoff::retry_delay(
            &sink.retry_backoff,
            self.failures,
            fastrand::f64(),
            retry_after,
            sink.max_retry_after,
        );
        if !self.failing {
            self.failing = true;
            self.set_state(BackendState::Failing);
            log::warn!(
                "{} failing: {reason}; rows stay queued, retrying in {}",
                self.who(),
                crate::config::format_duration(delay)
            );
        } else {
            log::debug!(
                "{} still failing: {reason}; retrying in {delay:?}",
                self.who()
            );
        }
        self.refresh_status();
        self.pause(delay, config);
    }

    /// The receiver called the rows bad: isolate the bad row by halving the
    /// batch, then count attempts on it alone until it goes to the dead
    /// list, unless the breaker says the receiver itself is broken.
    fn rejected(&mut self, rows: &[Row], status: u16, reason: String, config: &Arc<Config>) {
        if self.breaker.is_open() {
            return self.transient_failure(reason, None, config);
        }
        self.count_failure();
        self.set_last_error(Some(format!("{}: {}", self.who(), without_body(&reason))));
        if rows.len() > 1 {
            self.batch_limit = rows.len() / 2;
            log::info!(
                "{} rejected a batch of {} rows (HTTP {status}); splitting it to find the bad row",
                self.who(),
                rows.len()
            );
            return;
        }
        let rejection = Rejection {
            row: rows[0].clone(),
            status,
            reason,
        };
        self.record_rejection(rejection, config);
    }

    /// Records a rejection (its attempt, perhaps the dead list); true once
    /// done. When that fails it is owed.
    fn record_rejection(&mut self, rejection: Rejection, config: &Arc<Config>) -> bool {
        let Rejection {
            row,
            status,
            reason,
        } = rejection;
        let sink = config.sink(self.kind);
        let result = self
            .rows
            .reject(&[row.id], &reason, sink.max_attempts, config.queue.max_dead);
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                self.queue_error("record a rejected row", &e);
                self.owed = Some(Owed::Reject(Rejection {
                    row,
                    status,
                    reason,
                }));
                self.pause(QUEUE_ERROR_WAIT, config);
                return false;
            }
        };
        self.queue_ok();
        if done.moved_to_dead > 0 {
            log::warn!(
                "{}: row {} moved to the dead list after {} rejection(s): {reason}",
                self.kind,
                row.event_id,
                sink.max_attempts
            );
        } else {
            log::warn!(
                "{} rejected row {} (attempt {} of {}): {reason}",
                self.who(),
                row.event_id,
                row.attempts + 1,
                sink.max_attempts
            );
        }
        self.dead_trimmed(done.dead_trimmed, config);
        if self.breaker.rejected(done.rejected_run) {
            // From now on a rejection is the receiver's fault, not the rows'.
            self.failing = true;
            self.failures = 1;
            self.set_state(BackendState::Failing);
            log::error!(
                "{} rejected {} different rows in a row (HTTP {status}) and accepted none: \
                 treating it as broken; rows stay queued until it accepts one",
                self.who(),
                super::breaker::TRIP_AFTER
            );
        } else {
            self.answering();
        }
        self.refresh_status();
        if done.moved_to_dead == 0 {
            // Give a briefly confused receiver a moment before the next try.
            let wait = backoff::with_jitter(backoff::step(&sink.retry_backoff, 1), fastrand::f64());
            self.pause(wait, config);
        }
        true
    }

    /// A row no receiver can take (it cannot even be encoded): dead at once.
    fn bury(&mut self, row: &Row, reason: &str, config: &Arc<Config>) {
        match self.rows.bury(&[row.id], config.queue.max_dead) {
            Ok(done) => {
                self.queue_ok();
                log::warn!(
                    "{}: row {} moved to the dead list: {reason}",
                    self.kind,
                    row.event_id
                );
                self.dead_trimmed(done.dead_trimmed, config);
                self.refresh_status();
            }
            Err(e) => {
                self.queue_error("move an unreadable row to the dead list", &e);
                self.pause(QUEUE_ERROR_WAIT, config);
            }
        }
    }

    fn dead_trimmed(&self, trimmed: u64, config: &Config) {
        if trimmed > 0 {
            log::warn!(
                "{}: dead list full ({} rows): deleted the {trimmed} oldest dead row(s)",
                self.kind,
                config.queue.max_dead
            );
        }
    }

    fn queue_error(&mut self, what: &str, e: &QueueError) {
        if !self.queue_failing {
            log::error!("{} poster could not {what} in the queue: {e}", self.kind);
            self.queue_failing = true;
        }
        self.set_last_error(Some(format!("queue: {e}")));
    }

    fn queue_ok(&mut self) {
        if self.queue_failing {
            log::info!("{} poster can use the queue again", self.kind);
            self.queue_failing = false;
        }
    }

    /// Publishes the sink's persisted counters for /health and /metrics.
    fn refresh_status(&mut self) {
        match self.rows.counts() {
            Ok(c) => {
                self.queue_ok();
                let s = &self.sink_status;
                s.pending.store(c.pending, Ordering::Relaxed);
                s.dead.store(c.dead, Ordering::Relaxed);
                s.dropped_total.store(c.dropped_total, Ordering::Relaxed);
                s.delivered_total
                    .store(c.delivered_total, Ordering::Relaxed);
                s.expired_total.store(c.expired_total, Ordering::Relaxed);
                if self.kind == SinkKind::Backend {
                    let s = &self.status;
                    s.queue_pending.store(c.pending, Ordering::Relaxed);
                    s.queue_dead.store(c.dead, Ordering::Relaxed);
                    s.queue_dropped_total
                        .store(c.dropped_total, Ordering::Relaxed);
                    s.delivered_total
                        .store(c.delivered_total, Ordering::Relaxed);
                }
            }
            Err(e) => self.queue_error("read its counters", &e),
        }
    }

    /// Waits `delay`, ending early on shutdown or on a reload that changed
    /// this sink's own settings (a new URL or token deserves a try at
    /// once). A reload that leaves them as they were keeps the wait: a
    /// server's Retry-After, the backoff and the splay all hold across a
    /// fleet-wide `systemctl reload`.
    fn pause(&self, delay: Duration, config: &Arc<Config>) {
        let deadline = Instant::now() + delay;
        let mut seen = config.clone();
        loop {
            let now = Instant::now();
            if now >= deadline || self.shutdown.is_triggered() {
                return;
            }
            // Inserts ring the wake too: only shutdown or a change of this
            // sink's configuration ends the pause early.
            self.wake.wait_timeout(deadline - now, &self.shutdown);
            if self.shutdown.is_triggered() {
                return;
            }
            let current = self.config.get();
            if !Arc::ptr_eq(&current, &seen) {
                if current.sink(self.kind) != config.sink(self.kind) {
                    return;
                }
                seen = current;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poster_taken_back_after_reading_a_configuration_without_its_sink_goes_on() {
        // Reload 1 removes the sink, the poster reads that configuration,
        // reload 2 brings the sink back and takes the poster back: the
        // stale read must not end the poster that reload 2 kept.
        let tenure = Tenure::default();
        tenure.ask_to_end();
        assert!(tenure.take_back());
        assert_eq!(tenure.look(false), Look::Settle);
        assert_eq!(tenure.look(true), Look::Serve);
    }

    #[test]
    fn asked_to_end_it_ends_and_can_no_longer_be_taken_back() {
        let tenure = Tenure::default();
        assert_eq!(tenure.look(true), Look::Serve);
        // Removed, not yet asked: the reload is half applied.
        assert_eq!(tenure.look(false), Look::Settle);
        tenure.ask_to_end();
        assert_eq!(tenure.look(false), Look::End);
        assert!(!tenure.take_back());
    }
}
