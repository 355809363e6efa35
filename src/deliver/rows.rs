//! One sink's view of the queue: its pending rows, dead list and counters,
//! on the poster's own connection.

use crate::config::SinkKind;
use crate::queue::{Counts, Queue, QueueError, Rejected, Row};
use std::path::Path;
use std::time::SystemTime;

pub struct SinkRows {
    queue: Queue,
    sink: &'static str,
}

impl SinkRows {
    pub fn connect(path: &Path, kind: SinkKind) -> Result<SinkRows, QueueError> {
        Ok(SinkRows {
            queue: Queue::connect_for_delivery(path)?,
            sink: kind.name(),
        })
    }

    pub fn oldest(&self, n: usize) -> Result<Vec<Row>, QueueError> {
        self.queue.oldest(self.sink, n)
    }

    pub fn delete_delivered(&mut self, ids: &[i64]) -> Result<u64, QueueError> {
        self.queue.delete_delivered(self.sink, ids)
    }

    /// Distinct rows rejected in a row, as the file keeps them.
    pub fn rejected_run(&mut self) -> Result<u64, QueueError> {
        self.queue.rejected_run(self.sink)
    }

    pub fn reject(
        &mut self,
        ids: &[i64],
        error: &str,
        max_attempts: u32,
        max_dead: u64,
    ) -> Result<Rejected, QueueError> {
        self.queue
            .reject(self.sink, ids, error, max_attempts, max_dead)
    }

    /// Moves rows that no receiver can take to the dead list at once.
    pub fn bury(&mut self, ids: &[i64], max_dead: u64) -> Result<Rejected, QueueError> {
        let (moved, trimmed) = self.queue.bury(self.sink, ids, max_dead)?;
        Ok(Rejected {
            moved_to_dead: moved,
            dead_trimmed: trimmed,
            rejected_run: 0,
        })
    }

    /// Removes rows taken before `cutoff`, unsent; returns how many.
    pub fn expire_older_than(&mut self, cutoff: SystemTime) -> Result<u64, QueueError> {
        self.queue.expire_older_than(self.sink, cutoff)
    }

    pub fn counts(&self) -> Result<Counts, QueueError> {
        self.queue.counts(self.sink)
    }
}
