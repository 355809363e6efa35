//! One capturing logger for the whole test binary (a process has one
//! logger): every record is kept so tests can check what was logged.
//! Tests filter by text unique to themselves, since others log too.

use std::sync::{Mutex, Once};

/// (level, target, message)
static LINES: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push((
            record.level(),
            record.target().to_string(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

/// Installs the logger (once per process) at trace level.
pub fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Every line captured so far.
pub fn lines() -> Vec<(log::Level, String, String)> {
    LINES.lock().unwrap().clone()
}

/// Lines at `level` or more severe that mention `needle`.
pub fn logged(level: log::Level, needle: &str) -> Vec<String> {
    logged_since(0, level, needle)
}

/// How many lines were captured so far: a test's own lines come after it
/// (an earlier test may have used the same port, and so named the same host).
pub fn mark() -> usize {
    LINES.lock().unwrap().len()
}

/// Like [`logged`], among the lines captured since `mark`.
pub fn logged_since(mark: usize, level: log::Level, needle: &str) -> Vec<String> {
    lines()
        .into_iter()
        .skip(mark)
        .filter(|(l, _, m)| *l <= level && m.contains(needle))
        .map(|(_, _, m)| m)
        .collect()
}
