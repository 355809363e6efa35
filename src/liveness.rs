//! Which threads are alive and making progress (SPEC §6), so that
//! `WATCHDOG=1` is sent only while all of them are.
//!
//! Every long-lived thread registers a [`Beat`]. A thread is healthy while
//! it waits (an idle wait that shutdown interrupts, or a network wait: both
//! are marked with [`waiting`]) or while its current busy stretch is shorter
//! than the stall limit. A thread that ended or has been busy for longer is
//! not: the watchdog stops and systemd restarts the daemon.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// One thread's liveness, shared with the registry.
pub struct Beat {
    name: String,
    epoch: Instant,
    /// Milliseconds since `epoch` when the current busy stretch began.
    busy_since_ms: AtomicU64,
    /// Nesting depth of waits in progress (a wait may wrap another).
    waits: AtomicU32,
    ended: AtomicBool,
    /// Ended on purpose (see [`Registration::retire`]): no longer watched.
    retired: AtomicBool,
}

impl Beat {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Progress: the busy stretch starts again now.
    pub fn tick(&self) {
        self.busy_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Why this thread is not healthy, if it is not.
    fn trouble(&self, limit: Duration) -> Option<String> {
        if self.retired.load(Ordering::Relaxed) {
            return None;
        }
        if self.ended.load(Ordering::Acquire) {
            return Some(format!("thread {} has ended", self.name));
        }
        if self.waits.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let busy = self
            .now_ms()
            .saturating_sub(self.busy_since_ms.load(Ordering::Relaxed));
        (busy > limit.as_millis() as u64).then(|| {
            format!(
                "thread {} has made no progress for {:.1} s",
                self.name,
                busy as f64 / 1000.0
            )
        })
    }
}

/// The beats of every registered thread.
#[derive(Default)]
pub struct Registry {
    beats: Mutex<Vec<Arc<Beat>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Beat>>> = const { RefCell::new(None) };
}

/// The daemon's registry.
pub fn global() -> &'static Registry {
    static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);
    &GLOBAL
}

/// Ends the registration when dropped: the thread counts as ended.
pub struct Registration {
    beat: Arc<Beat>,
}

impl Registration {
    /// The thread ends on purpose (the poster of a sink that a reload
    /// removed): it stops being watched instead of counting as dead.
    pub fn retire(self) {
        self.beat.retired.store(true, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.beat.ended.store(true, Ordering::Release);
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Registry {
    /// Registers the calling thread under `name`; keep the returned value
    /// for the thread's lifetime.
    pub fn register(&self, name: &str) -> Registration {
        let beat = Arc::new(Beat {
            name: name.to_string(),
            epoch: Instant::now(),
            busy_since_ms: AtomicU64::new(0),
            waits: AtomicU32::new(0),
            ended: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        });
        let mut beats = self.beats.lock().unwrap();
        beats.retain(|b| !b.retired.load(Ordering::Relaxed));
        beats.push(beat.clone());
        drop(beats);
        CURRENT.with(|c| *c.borrow_mut() = Some(beat.clone()));
        Registration { beat }
    }

    /// What keeps the daemon from being healthy: one line per thread that
    /// ended or has been busy for more than `limit`; empty when all are well.
    pub fn troubles(&self, limit: Duration) -> Vec<String> {
        self.beats
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b.trouble(limit))
            .collect()
    }

    /// Why the thread registered as `name` is not healthy, if it is not.
    pub fn trouble_of(&self, name: &str, limit: Duration) -> Option<String> {
        self.beats
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.name == name)
            .find_map(|b| b.trouble(limit))
    }
}

/// Registers the calling thread in the daemon's registry.
pub fn register(name: &str) -> Registration {
    global().register(name)
}

/// Progress on the calling thread (no-op for an unregistered thread).
pub fn tick() {
    CURRENT.with(|c| {
        if let Some(beat) = c.borrow().as_ref() {
            beat.tick();
        }
    });
}

/// Runs `wait` with the calling thread marked as waiting: an idle wait that
/// shutdown interrupts, or a network wait (a POST to a slow backend). The
/// thread is healthy meanwhile, and its busy stretch restarts afterwards.
pub fn waiting<T>(wait: impl FnOnce() -> T) -> T {
    let beat = CURRENT.with(|c| c.borrow().clone());
    let Some(beat) = beat else {
        return wait();
    };
    /// Unmarks the wait even if `wait` unwinds.
    struct Unmark(Arc<Beat>);
    impl Drop for Unmark {
        fn drop(&mut self) {
            self.0.tick();
            self.0.waits.fetch_sub(1, Ordering::Relaxed);
        }
    }
    beat.waits.fetch_add(1, Ordering::Relaxed);
    let _unmark = Unmark(beat);
    wait()
}

/// A network wait (see [`waiting`]): named apart so call sites say what they wait on.
pub fn network_wait<T>(wait: impl FnOnce() -> T) -> T {
    waiting(wait)
}

/// For an async thread (the stream runtime): ticks every `period` for as long
/// as the runtime gets to run its tasks; a task that blocks the runtime stops it.
pub async fn keep_ticking(period: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        crate::fault::point("stream");
        tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Long enough that a descheduled test thread does not look stuck.
    const LIMIT: Duration = Duration::from_secs(1);

    #[test]
    fn a_busy_thread_is_stuck_once_past_the_limit_and_well_after_progress() {
        let registry = Registry::default();
        let _me = registry.register("worker");
        assert!(registry.troubles(LIMIT).is_empty());
        std::thread::sleep(LIMIT * 2);
        let troubles = registry.troubles(LIMIT);
        assert_eq!(troubles.len(), 1, "{troubles:?}");
        assert!(troubles[0].contains("worker"), "{troubles:?}");
        tick();
        assert!(registry.troubles(LIMIT).is_empty());
    }

    #[test]
    fn a_waiting_thread_is_healthy_however_long_it_waits() {
        let registry = Registry::default();
        let _me = registry.register("poster");
        waiting(|| {
            std::thread::sleep(LIMIT * 2);
            assert!(registry.troubles(LIMIT).is_empty());
            // Nested waits keep it marked until the outer one ends.
            network_wait(|| ());
            std::thread::sleep(LIMIT * 2);
            assert!(registry.troubles(LIMIT).is_empty());
        });
        // The wait's end counts as progress.
        assert!(registry.troubles(LIMIT).is_empty());
    }

    #[test]
    fn an_ended_thread_is_reported() {
        let registry = Arc::new(Registry::default());
        let r = registry.clone();
        std::thread::spawn(move || {
            let _reg = r.register("sampler");
        })
        .join()
        .unwrap();
        let troubles = registry.troubles(LIMIT);
        assert_eq!(troubles, vec!["thread sampler has ended".to_string()]);
    }

    #[test]
    fn a_retired_thread_is_not_reported() {
        let registry = Arc::new(Registry::default());
        let r = registry.clone();
        std::thread::spawn(move || r.register("poster remote_write").retire())
            .join()
            .unwrap();
        assert!(registry.troubles(LIMIT).is_empty());
    }
}
