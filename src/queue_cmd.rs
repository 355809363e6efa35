//! `metricsd queue ...` (SPEC §1).

use crate::cli::QueueCommand;
use std::path::Path;

/// Runs one queue command against `<state_dir>/queue.db`; returns the exit code.
pub fn run(_command: &QueueCommand, _state_dir: &Path) -> i32 {
    eprintln!("metricsd: queue commands are not yet available");
    1
}
