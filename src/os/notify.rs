//! systemd notifications (sd_notify); all are no-ops outside systemd.

use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog period systemd asked for (WatchdogSec), if any.
pub fn watchdog_period() -> Option<Duration> {
    static PERIOD: OnceLock<Option<Duration>> = OnceLock::new();
    *PERIOD.get_or_init(|| {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
    })
}

/// How often a thread that has no natural waits (the stream runtime) marks
/// progress: often enough within one watchdog period; None without a watchdog.
pub fn liveness_tick() -> Option<Duration> {
    watchdog_period().map(|p| (p / 4).max(Duration::from_millis(50)))
}

/// How often the main thread looks for a stuck sampler; None without a
/// watchdog.
pub fn stall_check_every() -> Option<Duration> {
    watchdog_period().map(|p| (p / 8).max(Duration::from_millis(50)))
}

/// How often the sampler pings while it waits for its next sample: at least
/// every quarter period, so that systemd's restart comes at least three
/// quarters of a period after a stall begins, after `report_stalls` spoke.
pub fn idle_ping_every() -> Option<Duration> {
    watchdog_period().map(|p| p / 4)
}

/// Whether the ping is being withheld (and that has been logged).
static WITHHELD: AtomicBool = AtomicBool::new(false);

/// Sends `WATCHDOG=1` only while every registered thread is alive and making
/// progress (a busy stretch shorter than one watchdog period). Logs once when
/// it starts withholding the ping, and once when all threads are well again.
/// During a stop threads end by design: nothing is withheld or logged.
pub fn feed_watchdog(shutdown: &crate::shutdown::Shutdown) {
    let Some(period) = watchdog_period() else {
        return;
    };
    let troubles = crate::liveness::global().troubles(period);
    if shutdown.is_triggered() {
        return;
    }
    if troubles.is_empty() {
        if WITHHELD.swap(false, Ordering::Relaxed) {
            log::info!("all threads make progress again: watchdog resumed");
        }
        watchdog();
    } else if !WITHHELD.swap(true, Ordering::Relaxed) {
        log::error!("withholding the watchdog: {}", troubles.join("; "));
    }
}

/// From the main thread: the sampler sends the pings, so when it is the
/// thread that is stuck nobody else would say so before systemd's restart.
/// Busy for half a period (a sample takes milliseconds) counts as stuck: the
/// restart then comes at least a quarter of a period later (see
/// `idle_ping_every`). Logged once a stall, and its end too.
pub fn report_stalls(shutdown: &crate::shutdown::Shutdown) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let Some(period) = watchdog_period() else {
        return;
    };
    match crate::liveness::global().trouble_of(crate::sampler::THREAD, period / 2) {
        Some(_) if shutdown.is_triggered() => {}
        Some(trouble) => {
            if !REPORTED.swap(true, Ordering::Relaxed) {
                log::error!(
                    "{trouble}: no watchdog ping until it makes progress; systemd restarts the daemon {} s after the last one",
                    period.as_secs_f64()
                );
            }
        }
        None => {
            if REPORTED.swap(false, Ordering::Relaxed) {
                log::info!("thread {} makes progress again", crate::sampler::THREAD);
            }
        }
    }
}
