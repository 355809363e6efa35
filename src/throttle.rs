//! Repeated events logged at most once a minute, with how many there were,
//! so that a cause outside the daemon (a broken receiver, a client opening
//! connections in a loop) cannot flood the journal.

use std::time::{Duration, Instant};

/// The shortest gap between two lines about the same kind of event.
pub const EVERY: Duration = Duration::from_secs(60);

pub struct Throttled {
    period: Duration,
    last: Option<Instant>,
    unreported: u64,
}

impl Default for Throttled {
    fn default() -> Throttled {
        Throttled::with_period(EVERY)
    }
}

impl Throttled {
    /// Lines at most once per `period` (tests use a short one).
    pub fn with_period(period: Duration) -> Throttled {
        Throttled {
            period,
            last: None,
            unreported: 0,
        }
    }

    /// Adds `n` events; returns the count to report now, if it is time.
    pub fn add(&mut self, n: u64) -> Option<u64> {
        self.unreported += n;
        if self.unreported == 0 || self.last.is_some_and(|t| t.elapsed() < self.period) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.unreported))
    }

    /// Events added and not yet reported.
    pub fn held(&self) -> u64 {
        self.unreported
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_reported_and_the_next_ones_wait_and_are_counted() {
        let mut t = Throttled::default();
        assert_eq!(t.add(0), None);
        assert_eq!(t.add(1), Some(1));
        assert_eq!(t.add(1), None);
        assert_eq!(t.add(2), None);
        t.last = Some(Instant::now() - EVERY);
        assert_eq!(t.add(0), Some(3));
        assert_eq!(t.add(0), None);
    }
}
