//! The aligned ticker and the sampling loop: collect → snapshot → stream hub
//! and queue. Nothing here waits on the network.

use crate::collect::Collector;
use crate::config::SharedConfig;
use crate::fault;
use crate::hub::Hub;
use crate::liveness;
use crate::os::notify;
use crate::queue::{Queue, QueueError};
use crate::shutdown::{Shutdown, Wake};
use crate::snapshot::Snapshot;
use crate::status::Status;
use crate::throttle::Throttled;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Shortest time between the start-up baseline and the first sample.
const FIRST_SAMPLE_MIN_BASELINE: Duration = Duration::from_millis(250);

/// How far wall-clock alignment may drift (a clock step) before re-anchoring.
const REANCHOR_AFTER: Duration = Duration::from_secs(1);

/// Deadlines at wall-clock multiples of `interval`, computed from one
/// monotonic base so that the work done per tick never adds drift.
#[derive(Debug, Clone)]
pub struct Ticker {
    interval: Duration,
    base_mono: Instant,
    base_wall_ms: u128,
    /// Index of the next tick, counted from the tick at or after the base.
    next: u64,
    first_tick_offset: Duration,
}

impl Ticker {
    pub fn new(interval: Duration, now_mono: Instant, now_wall: SystemTime) -> Ticker {
        let wall_ms = now_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let interval_ms = interval.as_millis().max(1);
        let offset_ms = (interval_ms - wall_ms % interval_ms) % interval_ms;
        Ticker {
            interval,
            base_mono: now_mono,
            base_wall_ms: wall_ms,
            next: 0,
            first_tick_offset: Duration::from_millis(offset_ms as u64),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline_of(&self, index: u64) -> Instant {
        self.base_mono + self.first_tick_offset + self.interval * index as u32
    }

    /// The next deadline strictly after `now` (missed ticks are skipped, not
    /// bunched up) that is at least `min_gap` after `now`.
    pub fn next_deadline(&mut self, now: Instant, min_gap: Duration) -> Instant {
        loop {
            let deadline = self.deadline_of(self.next);
            self.next += 1;
            if deadline > now && deadline.duration_since(now) >= min_gap {
                return deadline;
            }
        }
    }

    /// True when the wall clock no longer agrees with the monotonic schedule
    /// (e.g. the clock was stepped), so alignment should be recomputed.
    /// The first deadline after a reload to `self.interval()`: the next
    /// aligned tick that is at least half an interval after the last sample,
    /// so no sample covers a window too short for its rates to mean anything.
    pub fn next_after_reload(&mut self, now: Instant, last_sample: Instant) -> Instant {
        let earliest = last_sample + self.interval / 2;
        self.next_deadline(now, earliest.saturating_duration_since(now))
    }

    pub fn drifted(&self, now_mono: Instant, now_wall: SystemTime) -> bool {
        let expected = self.base_wall_ms + now_mono.duration_since(self.base_mono).as_millis();
        let actual = now_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        expected.abs_diff(actual) > REANCHOR_AFTER.as_millis()
    }
}

/// What the sampling thread needs.
pub struct SamplerContext {
    pub config: SharedConfig,
    /// Created at start-up, so its baseline predates the first sample.
    pub collector: Collector,
    pub machine_id: String,
    pub hub: Arc<Hub>,
    /// None when the start found the disk full: opened once there is space.
    pub queue: Option<Queue>,
    pub db_path: PathBuf,
    pub status: Arc<Status>,
    pub shutdown: Shutdown,
    /// Woken after every insert so the poster drains at once.
    pub poster_wake: Arc<Wake>,
    /// Woken on reload so a new interval takes effect at once.
    pub reload_wake: Arc<Wake>,
}

/// Builds one snapshot from freshly collected metrics.
pub fn take_snapshot(
    collector: &mut Collector,
    node_id: &str,
    machine_id: &str,
    seq: u64,
    interval: Duration,
) -> Snapshot {
    let timestamp = SystemTime::now();
    let sample = collector.collect();
    Snapshot {
        timestamp,
        node_id: node_id.to_string(),
        machine_id: machine_id.to_string(),
        event_id: Uuid::now_v7(),
        seq,
        interval_secs: interval.as_secs().max(1),
        metrics: sample.metrics,
        collectors: sample.collectors,
    }
}

/// Logs failed queue inserts: the first at once, then at most one line a
/// minute with the count since and the last error, so a broken disk does
/// not write a line per sample. /health and /metrics carry the live state.
#[derive(Default)]
struct InsertFailureLog {
    lines: Throttled,
    failing: bool,
}

impl InsertFailureLog {
    fn failed(&mut self, event_id: &str, error: &str) {
        let first = !std::mem::replace(&mut self.failing, true);
        let Some(n) = self.lines.add(1) else {
            return;
        };
        if first {
            log::error!("queue insert failed, snapshot {event_id} not queued: {error}");
        } else {
            log::error!(
                "queue insert failed for {n} snapshot(s) in the last minute, not queued; last error: {error}"
            );
        }
    }

    fn succeeded(&mut self) {
        if !self.failing {
            return;
        }
        log::info!(
            "queue inserts resumed ({} more failed since the last report)",
            self.lines.held()
        );
        *self = InsertFailureLog::default();
    }
}

/// The sinks a snapshot is queued for: the configured ones (SPEC §5.2).
pub fn configured_sinks(config: &crate::config::Config) -> Vec<&'static str> {
    config.sinks().iter().map(|(kind, _)| kind.name()).collect()
}

/// The sampler's name among the threads that liveness watches.
pub const THREAD: &str = "sampler";

/// The queue, opened now if the start found the disk full (SPEC §5.1: the
/// insert fails until there is space, and the snapshot is still streamed).
/// Until then nothing else in the process has a connection to it, so the
/// recovery checks of `Queue::open` are safe (see `Status::queue_opened`).
fn opened<'q>(
    slot: &'q mut Option<Queue>,
    path: &Path,
    status: &Status,
) -> Result<&'q mut Queue, QueueError> {
    if slot.is_none() {
        *slot = Some(Queue::open(path)?);
        status.set_queue_unopened(false);
        log::info!("queue {} opened", path.display());
    }
    Ok(slot.as_mut().expect("just opened"))
}

/// Runs the sampling loop until shutdown. Returns the queue (if it could be
/// opened) so the caller can checkpoint it.
pub fn run(mut ctx: SamplerContext) -> Option<Queue> {
    let config = ctx.config.get();
    let mut collector = ctx.collector;
    let mut collect_config = config.collect.clone();
    let mut ticker = Ticker::new(config.interval, Instant::now(), SystemTime::now());
    let _alive = liveness::register(THREAD);
    let idle_ping = notify::idle_ping_every();
    // "queue full" warnings, at most once a minute.
    let mut drops = Throttled::default();
    let mut insert_failures = InsertFailureLog::default();
    let mut seq = 0u64;
    ctx.shutdown.register(&ctx.reload_wake);

    // The first sample is taken at once, but CPU time moves in 10 ms ticks:
    // give the start-up baseline a moment so the first figures are real.
    let head_start = FIRST_SAMPLE_MIN_BASELINE.saturating_sub(collector.since_last_reading());
    if ctx.shutdown.sleep(head_start) {
        return ctx.queue;
    }
    let mut deadline = Instant::now();
    loop {
        let config = ctx.config.get();
        if config.collect != collect_config {
            collector.set_config(&config.collect);
            collect_config = config.collect.clone();
        }
        seq += 1;
        fault::point("sampler");
        let started = Instant::now();
        let snapshot = take_snapshot(
            &mut collector,
            &config.node_id,
            &ctx.machine_id,
            seq,
            config.interval,
        );
        let stream_json = snapshot.stream_json_text();
        let flat_json = snapshot.flat_json().to_string();
        let event_id = snapshot.event_id.to_string();
        let timestamp = snapshot.timestamp_string();
        let snapshot = Arc::new(snapshot);
        ctx.hub.publish(snapshot.clone(), stream_json);
        let sinks = configured_sinks(&config);
        // The protocol sinks encode the whole snapshot when they send it;
        // the flat form is all the backend and the history need.
        let model = if config.remote_write.enabled() || config.otlp.enabled() {
            snapshot.to_model_bytes()
        } else {
            Vec::new()
        };
        let inserted = opened(&mut ctx.queue, &ctx.db_path, &ctx.status).and_then(|queue| {
            queue.set_history(config.queue.history)?;
            queue.insert(
                &event_id,
                &timestamp,
                &flat_json,
                &model,
                &sinks,
                config.queue.max_pending,
            )
        });
        match inserted {
            Ok(report) => {
                ctx.status.record_insert_ok();
                insert_failures.succeeded();
                if let Some(n) = drops.add(report.dropped_total()) {
                    log::warn!(
                        "queue full ({} pending): dropped {n} oldest row(s)",
                        config.queue.max_pending
                    );
                }
                // The queue keeps its counts in the file: one small read, no
                // table scan or file stat on the sampling path.
                let queue = ctx.queue.as_ref().expect("opened for the insert");
                if let Ok(stats) = queue.counts(crate::queue::DEFAULT_SINK) {
                    ctx.status
                        .queue_pending
                        .store(stats.pending, Ordering::Relaxed);
                    ctx.status.queue_dead.store(stats.dead, Ordering::Relaxed);
                    ctx.status
                        .queue_dropped_total
                        .store(stats.dropped_total, Ordering::Relaxed);
                }
                // Each sink's growing backlog shows even while its poster
                // is stuck in a request.
                for (kind, _) in config.sinks() {
                    if let Ok(c) = queue.counts(kind.name()) {
                        let sink = ctx.status.sink(kind);
                        sink.pending.store(c.pending, Ordering::Relaxed);
                        sink.dropped_total.store(c.dropped_total, Ordering::Relaxed);
                    }
                }
                ctx.poster_wake.notify();
            }
            Err(e) => {
                let error = e.to_string();
                insert_failures.failed(&event_id, &error);
                ctx.status.record_insert_failure(error);
            }
        }
        let took = started.elapsed();
        ctx.status
            .record_sample(snapshot.timestamp, took.as_micros() as u64);
        notify::feed_watchdog(&ctx.shutdown);
        let m = &snapshot.metrics;
        log::debug!(
            "sample seq={seq} took {}us cpu={:?}% mem_used={:?}MiB load1={:?} procs={:?} conns={:?}",
            took.as_micros(),
            m.cpu.as_ref().and_then(|c| c.usage_percent),
            m.memory.as_ref().map(|mem| mem.used_bytes() / (1024 * 1024)),
            m.load.as_ref().map(|l| l.load1),
            m.processes.as_ref().map(|p| p.count),
            m.tcp.curr_estab
        );

        // Wait for the next aligned tick, a reload, or shutdown.
        let now = Instant::now();
        if ticker.interval() != config.interval || ticker.drifted(now, SystemTime::now()) {
            ticker = Ticker::new(config.interval, now, SystemTime::now());
        }
        deadline = ticker.next_deadline(now.max(deadline), config.interval / 2);
        loop {
            if ctx.shutdown.is_triggered() {
                return ctx.queue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Waiting is healthy: keep the watchdog fed while idle.
            let mut slice = deadline - now;
            if let Some(every) = idle_ping {
                slice = slice.min(every);
            }
            if ctx.reload_wake.wait_timeout(slice, &ctx.shutdown) {
                if ctx.shutdown.is_triggered() {
                    return ctx.queue;
                }
                let new_interval = ctx.config.get().interval;
                if new_interval != ticker.interval() {
                    let now = Instant::now();
                    ticker = Ticker::new(new_interval, now, SystemTime::now());
                    deadline = ticker.next_after_reload(now, started);
                }
            } else if Instant::now() < deadline {
                notify::feed_watchdog(&ctx.shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn ticks_land_on_multiples_of_the_interval() {
        let mono = Instant::now();
        // 10:00:17.250 with a 60 s interval: next tick at 10:01:00.000.
        let start_ms = 1_790_000_000_000 + 17_250;
        let start_ms = start_ms - start_ms % 60_000 + 17_250;
        let mut t = Ticker::new(Duration::from_secs(60), mono, wall(start_ms));
        let d = t.next_deadline(mono, Duration::ZERO);
        assert_eq!(d - mono, Duration::from_millis(60_000 - 17_250));
        let d2 = t.next_deadline(d, Duration::ZERO);
        assert_eq!(d2 - d, Duration::from_secs(60));
    }

    #[test]
    fn no_drift_over_hours_whatever_the_work_takes() {
        let mono = Instant::now();
        let mut t = Ticker::new(Duration::from_secs(60), mono, wall(1_790_000_040_000));
        let first = t.next_deadline(mono, Duration::ZERO);
        let mut now = first;
        let mut last = first;
        // 24 h of ticks, each sample taking 1.7 s of work.
        for _ in 0..1440 {
            now += Duration::from_millis(1700);
            last = t.next_deadline(now, Duration::ZERO);
            now = last;
        }
        assert_eq!(last - first, Duration::from_secs(60 * 1440));
    }

    #[test]
    fn missed_ticks_are_skipped_not_bunched() {
        let mono = Instant::now();
        let mut t = Ticker::new(Duration::from_secs(10), mono, wall(1_790_000_000_000));
        let first = t.next_deadline(mono, Duration::ZERO);
        // The work overran by 25 s: the next deadline is the first one in the future.
        let late = first + Duration::from_secs(25);
        let next = t.next_deadline(late, Duration::ZERO);
        assert_eq!(next - first, Duration::from_secs(30));
    }

    #[test]
    fn a_tick_too_close_to_the_first_sample_is_skipped() {
        let mono = Instant::now();
        // 50 ms before a 1 s boundary: that boundary is too close.
        let mut t = Ticker::new(Duration::from_secs(1), mono, wall(1_790_000_000_950));
        let d = t.next_deadline(mono, Duration::from_millis(500));
        assert_eq!(d - mono, Duration::from_millis(1050));
    }

    #[test]
    fn after_a_reload_the_next_sample_keeps_half_an_interval_from_the_last() {
        let mono = Instant::now();
        // The last sample was at mono; a reload to 1 s comes 10 ms later,
        // 20 ms before a whole second: that tick would make a 30 ms window.
        let last = mono;
        let now = mono + Duration::from_millis(10);
        let mut t = Ticker::new(Duration::from_secs(1), now, wall(1_790_000_000_980));
        let d = t.next_after_reload(now, last);
        assert!(d - last >= Duration::from_millis(500), "{:?}", d - last);
        // It is still an aligned tick: the one after the skipped boundary.
        assert_eq!(d - now, Duration::from_millis(1020));
        // Long after the last sample, the next tick is taken as it comes.
        let later = mono + Duration::from_secs(30);
        let mut t = Ticker::new(Duration::from_secs(1), later, wall(1_790_000_000_900));
        assert_eq!(
            t.next_after_reload(later, last) - later,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_clock_step_is_detected() {
        let mono = Instant::now();
        let t = Ticker::new(Duration::from_secs(60), mono, wall(1_790_000_000_000));
        let later = mono + Duration::from_secs(30);
        assert!(!t.drifted(later, wall(1_790_000_030_000)));
        assert!(t.drifted(later, wall(1_790_000_090_000)));
    }
}
