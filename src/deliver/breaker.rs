//! The circuit breaker of SPEC §5.3: a receiver that rejects every row is
//! broken, not the rows. After `TRIP_AFTER` distinct rows in a row have
//! been rejected as bad with none accepted in between, further rejections
//! count like a 5xx (rows stay pending) until a row is accepted again.
//!
//! The run of rejected rows is counted by the queue, in the same
//! transaction as each rejection and acceptance, so it survives a restart:
//! otherwise every restart would send a few more rows of a broken
//! receiver's history to the dead list.

/// Distinct rejected rows that open the breaker.
pub const TRIP_AFTER: u64 = 5;

#[derive(Debug, Default)]
pub struct Breaker {
    /// Distinct rows rejected (alone, after bisection) since the last
    /// acceptance.
    run: u64,
}

impl Breaker {
    /// The breaker of a sink whose queue holds this run (at start).
    pub fn at(run: u64) -> Breaker {
        Breaker { run }
    }

    /// A row was rejected as bad on its own, and the queue now counts
    /// `run` distinct rows in a row. Returns true when this opened the
    /// breaker (so the caller logs it once).
    pub fn rejected(&mut self, run: u64) -> bool {
        let was_open = self.is_open();
        self.run = run;
        !was_open && self.is_open()
    }

    /// Something was accepted: rows are judged one by one again. Returns
    /// true when this closed an open breaker.
    pub fn accepted(&mut self) -> bool {
        let was_open = self.is_open();
        self.run = 0;
        was_open
    }

    /// Rejections now mean a broken receiver.
    pub fn is_open(&self) -> bool {
        self.run >= TRIP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_five_distinct_rows_and_closes_on_acceptance() {
        let mut b = Breaker::default();
        for run in 1..=4 {
            assert!(!b.rejected(run));
            assert!(!b.is_open());
        }
        assert!(b.rejected(5), "the fifth distinct row opens it");
        assert!(b.is_open());
        assert!(!b.rejected(6), "opened once");
        assert!(b.accepted());
        assert!(!b.is_open());
        assert!(!b.accepted());
    }

    #[test]
    fn a_run_kept_from_before_a_restart_still_counts() {
        let mut b = Breaker::at(4);
        assert!(!b.is_open());
        assert!(b.rejected(5), "one more row opens it");
        assert!(Breaker::at(7).is_open());
    }
}
