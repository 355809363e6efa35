//! systemd notifications (sd_notify); all are no-ops outside systemd.

use sd_notify::NotifyState;
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

/// Sends `WATCHDOG=1` only while every registered thread is alive and making
/// progress (a busy stretch shorter than one watchdog period). Logs once when
/// it starts withholding the ping, and once when all threads are well again.
#[derive(Default)]
pub struct Watchdog {
    withheld: bool,
}

impl Watchdog {
    /// During a stop threads end by design: nothing is withheld or logged.
    pub fn feed(&mut self, shutdown: &crate::shutdown::Shutdown) {
        let Some(period) = watchdog_period() else {
            return;
        };
        let troubles = crate::liveness::global().troubles(period);
        if shutdown.is_triggered() {
            return;
        }
        if troubles.is_empty() {
            if self.withheld {
                log::info!("all threads make progress again: watchdog resumed");
                self.withheld = false;
            }
            watchdog();
        } else if !self.withheld {
            log::error!("withholding the watchdog: {}", troubles.join("; "));
            self.withheld = true;
        }
    }
}
