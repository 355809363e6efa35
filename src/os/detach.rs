//! `run --daemon` (SPEC §6): detach (double fork, setsid) and let the
//! launching command report how start-up ended. A pipe from the detached
//! daemon carries "serving" or the start-up error with its exit code; the
//! launcher exits with that code, 0 only once the daemon serves.
//!
//! The daemon keeps the directory it was started in as its working
//! directory, so every relative path (`--config`, `state_dir`, `token_file`,
//! `ca_file`, `--pidfile`, `--log-file`, ...) resolves as it would in the
//! foreground, at start-up and at every reload alike.

use crate::error::{code, Error};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Files `run --daemon` uses.
pub struct Files {
    pub pidfile: PathBuf,
    pub log_file: PathBuf,
}

const SERVING: &str = "serving";

/// The detached daemon's end of the report pipe.
pub struct Report {
    pipe: File,
}

impl Report {
    /// Start-up is done: the launcher exits 0.
    pub fn serving(mut self) {
        let _ = writeln!(self.pipe, "{SERVING}");
    }

    /// Start-up failed: the launcher prints `error` and exits with its code.
    pub fn failed(mut self, error: &Error) {
        let _ = write!(self.pipe, "error {}\n{error}", error.exit_code());
    }
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and belong to nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(read), File::from(write)))
}

/// Detaches from the terminal. Must run before any thread or runtime exists.
/// Returns only in the detached daemon; the launching process waits for the
/// daemon's report and exits with its code.
pub fn detach(files: &Files, working_dir: &Path) -> Result<Report, Error> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log_file)
        .map_err(|e| Error::State(format!("log file {}: {e}", files.log_file.display())))?;
    let (read, write) = pipe().map_err(|e| Error::Failure(format!("cannot detach: pipe: {e}")))?;
    // No pid file here: it is written only once the daemon holds the
    // instance lock and serves (`write_pidfile`), so a second instance is
    // refused by the lock, naming its holder, and a failed start leaves none.
    let outcome = daemonize::Daemonize::new()
        .working_directory(working_dir)
        .umask(0o027)
        .stdout(daemonize::Stdio::devnull())
        .stderr(log)
        .execute();
    match outcome {
        daemonize::Outcome::Parent(Err(e)) => Err(Error::Failure(format!("cannot detach: {e}"))),
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(write);
            std::process::exit(await_report(read, &files.log_file))
        }
        daemonize::Outcome::Child(result) => {
            drop(read);
            let report = Report { pipe: write };
            match result {
                Ok(_) => Ok(report),
                Err(e) => {
                    let error = Error::Failure(format!("cannot detach: {e}"));
                    report.failed(&error);
                    Err(error)
                }
            }
        }
    }
}

/// Writes this process's pid to `path` (through a temporary file and a
/// rename, so a reader never sees a partial pid).
pub fn write_pidfile(path: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::State(format!("pid file {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        // A write that failed half-way (a full disk) leaves no file behind.
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// In the launcher: reads the daemon's report, prints an error, returns the exit code.
fn await_report(mut pipe: File, log_file: &Path) -> i32 {
    let mut text = String::new();
    let _ = pipe.read_to_string(&mut text);
    let (code, message) = parse_report(&text, log_file);
    if let Some(message) = message {
        eprintln!("metricsd: {message}");
    }
    code
}

/// The exit code and the message to print for a report.
fn parse_report(text: &str, log_file: &Path) -> (i32, Option<String>) {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    if first == SERVING {
        return (code::OK, None);
    }
    if let Some(n) = first.strip_prefix("error ").and_then(|n| n.parse().ok()) {
        return (n, Some(rest.to_string()));
    }
    (
        code::FAILURE,
        Some(format!(
            "the daemon exited before serving; see {}",
            log_file.display()
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_into_exit_codes() {
        let log = Path::new("/var/log/m.log");
        assert_eq!(parse_report("serving\n", log), (0, None));
        assert_eq!(
            parse_report("error 73\nqueue /x: denied", log),
            (73, Some("queue /x: denied".into()))
        );
        let (code, message) = parse_report("", log);
        assert_eq!(code, 1);
        assert!(message.unwrap().contains("/var/log/m.log"));
    }
}
