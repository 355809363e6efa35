//! The circuit breaker of SPEC §5.3: a receiver that rejects every row is
//! broken, not the rows. After `TRIP_AFTER` distinct rows in a row have
//! been rejected as bad with none accepted in between, further rejections
//! count like a 5xx (rows stay pending) until a row is accepted again.

use std::collections::BTreeSet;

/// Distinct rejected rows that open the breaker.
pub const TRIP_AFTER: usize = 5;

#[derive(Debug, Default)]
pub struct Breaker {
    /// Rows rejected (alone, after bisection) since the last acceptance.
    rejected: BTreeSet<i64>,
}

impl Breaker {
    /// A row was rejected as bad on its own. Returns true when this opened
    /// the breaker (so the caller logs it once).
    pub fn rejected(&mut self, row: i64) -> bool {
        let was_open = self.is_open();
        self.rejected.insert(row);
        !was_open && self.is_open()
    }

    /// Something was accepted: rows are judged one by one again. Returns
    /// true when this closed an open breaker.
    pub fn accepted(&mut self) -> bool {
        let was_open = self.is_open();
        self.rejected.clear();
        was_open
    }

    /// Rejections now mean a broken receiver.
    pub fn is_open(&self) -> bool {
        self.rejected.len() >= TRIP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_five_distinct_rows_and_closes_on_acceptance() {
        let mut b = Breaker::default();
        for id in 1..=4 {
            assert!(!b.rejected(id));
            // The same row again does not count twice.
            assert!(!b.rejected(id));
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
    fn an_acceptance_in_between_starts_the_count_again() {
        let mut b = Breaker::default();
        for id in 1..=4 {
            b.rejected(id);
        }
        b.accepted();
        for id in 5..=8 {
            assert!(!b.rejected(id));
        }
        assert!(!b.is_open());
    }
}
