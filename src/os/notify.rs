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
/// progress and looks for stalled threads: often enough within one watchdog
/// period; None without a watchdog.
pub fn liveness_tick() -> Option<Duration> {
    watchdog_period().map(|p| (p / 8).max(Duration::from_millis(50)))
}

/// Whether the ping is being withheld (and that has been logged): shared by
/// the sampler, which sends the pings, and the stream runtime, which only
/// looks, so that a stalled sampler is reported too.
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
    } else {
        withholding(&troubles);
    }
}

/// From a thread other than the sampler, which sends the pings: when the
/// sampler itself is stuck (busy for a quarter of the watchdog period, where
/// a sample takes milliseconds), no ping follows, and this is where that is
/// said, while systemd has at least half a period left before the restart.
pub fn report_stalls(shutdown: &crate::shutdown::Shutdown) {
    let Some(period) = watchdog_period() else {
        return;
    };
    let trouble = crate::liveness::global().trouble_of(crate::sampler::THREAD, period / 4);
    if let Some(trouble) = trouble {
        if !shutdown.is_triggered() {
            withholding(&[trouble]);
        }
    }
}

fn withholding(troubles: &[String]) {
    if !WITHHELD.swap(true, Ordering::Relaxed) {
        log::error!("withholding the watchdog: {}", troubles.join("; "));
    }
}
