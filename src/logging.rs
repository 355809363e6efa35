//! A journald-aware stderr logger (SPEC §7): `<N>` syslog priority prefixes
//! and no timestamp under journald, timestamps otherwise.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::SystemTime;

struct StderrLogger;

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` names its
/// device and inode, and only a stderr that is still that stream counts
/// (systemd's advice). An inherited variable with stderr sent elsewhere,
/// such as the log file of `run --daemon`, keeps the timestamps.
pub fn stderr_is_journal() -> bool {
    static STREAM: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let Some((dev, ino)) = *STREAM.get_or_init(|| {
        let value = std::env::var_os("JOURNAL_STREAM")?;
        let (dev, ino) = value.to_str()?.split_once(':')?;
        Some((dev.parse().ok()?, ino.parse().ok()?))
    }) else {
        return false;
    };
    // SAFETY: an all-zero stat is valid, and fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 and a valid out-pointer; a closed fd is an error return.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // dev_t and ino_t are not u64 on every target
    let same = st.st_dev as u64 == dev && st.st_ino as u64 == ino;
    same
}

/// Syslog priority for a level, as journald reads it from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Formats one log line (without the trailing newline).
pub fn format_line(journald: bool, level: Level, at: SystemTime, message: &str) -> String {
    // One event per line: an embedded newline would split it in the journal.
    let message = message.replace('\n', " ");
    if journald {
        format!("<{}>{}", priority(level), message)
    } else {
        format!(
            "{} {:<5} {}",
            humantime::format_rfc3339_millis(at),
            level,
            message
        )
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Dependencies (HTTP, TLS, WebSocket) only speak up for warnings.
        metadata.level() <= log::max_level()
            && (metadata.target().starts_with("metricsd") || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            stderr_is_journal(),
            record.level(),
            SystemTime::now(),
            &record.args().to_string(),
        );
        // One write per line so lines from several threads never interleave.
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The level to use: RUST_LOG (a level name, or `metricsd=<level>`) wins
/// over the configured one.
pub fn effective_level(configured: LevelFilter) -> LevelFilter {
    match std::env::var("RUST_LOG") {
        Ok(spec) => level_in(&spec).unwrap_or(configured),
        Err(_) => configured,
    }
}

/// Our level in a RUST_LOG value, as env_logger reads one: `metricsd=` (or
/// a module of it) is more specific than a bare level, whatever the order.
fn level_in(spec: &str) -> Option<LevelFilter> {
    let mut bare = None;
    let mut ours = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some((target, level)) => {
                let target = target.trim();
                if target == "metricsd" || target.starts_with("metricsd::") {
                    if let Ok(level) = level.trim().parse() {
                        ours = Some(level);
                    }
                }
            }
            None => {
                if let Ok(level) = part.trim().parse() {
                    bare = Some(level);
                }
            }
        }
    }
    ours.or(bare)
}

/// Installs the logger once; later calls only change the level.
pub fn init(configured: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(StderrLogger));
    set_level(configured);
}

/// Applies a (reloaded) configured level, RUST_LOG still taking precedence.
pub fn set_level(configured: LevelFilter) {
    log::set_max_level(effective_level(configured));
}

/// Makes a panic in any thread end the process (SPEC §6: nothing
/// half-alive): the panic is logged as an error, then the process exits 1
/// at once, without unwinding the other threads, so systemd restarts it.
/// Covers tokio tasks too, whose panics tokio would otherwise catch.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!("thread {name} panicked{location}: {message}; exiting");
        log::logger().flush();
        // SAFETY: _exit ends the process without running anything else;
        // other threads may be anywhere, so nothing may be torn down orderly.
        unsafe { libc::_exit(crate::error::code::FAILURE) };
    }));
}

/// Points stderr at `path` (appending), so a rotated log file is reopened.
pub fn redirect_stderr(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // SAFETY: both descriptors are valid; dup2 atomically replaces fd 2.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rust_log_gives_our_own_directive_precedence_in_any_order() {
        assert_eq!(level_in("warn,metricsd=debug"), Some(LevelFilter::Debug));
        assert_eq!(level_in("metricsd=debug,warn"), Some(LevelFilter::Debug));
        assert_eq!(level_in("info"), Some(LevelFilter::Info));
        assert_eq!(level_in("ureq=trace,error"), Some(LevelFilter::Error));
        assert_eq!(
            level_in("metricsd::deliver=trace"),
            Some(LevelFilter::Trace)
        );
        assert_eq!(level_in("ureq=trace"), None);
    }

    #[test]
    fn journald_lines_carry_priority_and_no_timestamp() {
        let at = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        assert_eq!(
            format_line(true, Level::Warn, at, "disk full"),
            "<4>disk full"
        );
        assert_eq!(format_line(true, Level::Error, at, "x"), "<3>x");
        assert_eq!(format_line(true, Level::Info, at, "a\nb"), "<6>a b");
        assert_eq!(format_line(true, Level::Debug, at, "d"), "<7>d");
    }

    #[test]
    fn terminal_lines_start_with_a_timestamp() {
        let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        assert_eq!(
            format_line(false, Level::Info, at, "started"),
            "2026-09-21T14:13:20.123Z INFO  started"
        );
    }
}
