//! Runs the real `metricsd` binary for end-to-end tests: a config file in a
//! temporary directory, the process with a clean environment, its stderr
//! (and stdout) lines collected by reader threads, waits with deadlines,
//! signals, and free loopback ports.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metricsd");

/// How often polling loops look again.
const POLL: Duration = Duration::from_millis(10);

/// Environment variables the daemon reads that a test must not inherit from
/// whoever runs the suite (systemd, a developer's shell).
const HOST_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "STATE_DIRECTORY",
    "RUST_LOG",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// A `Command` for the binary with the host's metricsd/systemd variables
/// removed and `env` applied.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    clean_env(&mut cmd, env);
    cmd
}

pub fn clean_env(cmd: &mut Command, env: &[(&str, &str)]) {
    for (name, _) in std::env::vars() {
        if name.starts_with("METRICSD_") {
            cmd.env_remove(&name);
        }
    }
    for name in HOST_ENV {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Runs a short command (`check-config`, `once`, `queue stats`) to completion.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metricsd");
    // Read both pipes on threads so a full pipe never stalls the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = wait_child(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("metricsd {args:?} did not finish within 60 s");
    });
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `metricsd --config <config> <args>` run to completion.
pub fn run_with_config(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_cli(&all, &[])
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

pub use super::{free_port, wait_until};

/// Writes `text` as `<dir>/<name>` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A daemon configuration: state in `state_dir`, the stream on `port`, the
/// given interval; `extra_top` lines go before the sections, `sections` after.
pub fn config_toml(
    state_dir: &Path,
    port: u16,
    interval: &str,
    extra_top: &str,
    sections: &str,
) -> String {
    format!(
        "interval = \"{interval}\"\nstate_dir = \"{}\"\n{extra_top}\n\
         [stream]\nlisten = \"127.0.0.1:{port}\"\n\n{sections}\n",
        state_dir.display()
    )
}

/// A working directory with a state dir, a config file and a stream port.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
}

impl Setup {
    /// `extra_top` and `sections` as in [`config_toml`].
    pub fn new(interval: &str, extra_top: &str, sections: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let port = free_port();
        let text = config_toml(&state_dir, port, interval, extra_top, sections);
        let config = write_file(dir.path(), "metricsd.toml", &text);
        Setup {
            dir,
            state_dir,
            config,
            port,
        }
    }

    /// Rewrites the config file (for SIGHUP tests), keeping port and state dir.
    pub fn rewrite(&self, interval: &str, extra_top: &str, sections: &str) {
        let text = config_toml(&self.state_dir, self.port, interval, extra_top, sections);
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn config_str(&self) -> &str {
        self.config.to_str().unwrap()
    }

    pub fn stream_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `metricsd --config <file> run` with `env`.
    pub fn start(&self, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(&["--config", self.config_str(), "run"], env, false)
    }

    /// `metricsd --config <file> <args>` run to completion (e.g. `queue stats`).
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_config(&self.config, args)
    }
}

/// Lines read from one of the child's pipes, shared with the reader thread.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// Set once the reader has seen the pipe's end: every line is in.
    ended: Arc<AtomicBool>,
}

impl Lines {
    fn collect_from(&self, source: impl Read + Send + 'static) {
        let (sink, ended) = (self.lines.clone(), self.ended.clone());
        thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
            ended.store(true, Ordering::SeqCst);
        });
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The first line at index >= `from` that satisfies `pred`, waiting up to
    /// `timeout`; returns its index and text.
    pub fn wait_for_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                    return Some((i, l.clone()));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }
}

/// A running `metricsd` process.
pub struct Daemon {
    pub child: Child,
    pub stderr: Lines,
    pub stdout: Lines,
    /// Whether JOURNAL_STREAM was set to the stderr pipe's device:inode.
    pub journal: bool,
    exited: Option<ExitStatus>,
}

/// A pipe whose write end goes to the child; returns (read end, write end).
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nothing else.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Daemon {
    /// Spawns `metricsd <args>`. With `journal`, stderr is a pipe whose
    /// device:inode is passed in JOURNAL_STREAM, as systemd does for a
    /// service whose output goes to the journal.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], journal: bool) -> Daemon {
        Daemon::spawn_command(command(args, env), journal)
    }

    /// Spawns `metricsd <args>` with WATCHDOG_PID set to its own pid, as
    /// systemd does (sd_watchdog_enabled() checks it): a shell records its pid
    /// and then execs the binary, which keeps that pid.
    pub fn spawn_with_watchdog_pid(args: &[&str], env: &[(&str, &str)], journal: bool) -> Daemon {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args);
        clean_env(&mut sh, env);
        Daemon::spawn_command(sh, journal)
    }

    /// Spawns a prepared command (e.g. with a working directory) as [`Daemon::spawn`] does.
    pub fn spawn_command(mut cmd: Command, journal: bool) -> Daemon {
        let (err_read, err_write) = pipe();
        if journal {
            let meta = File::from(err_write.try_clone().unwrap())
                .metadata()
                .unwrap();
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_write))
            .spawn()
            .expect("spawn metricsd");
        // `cmd` holds the parent's copy of the write end; drop it so the
        // reader sees EOF when the child (and its descendants) close theirs.
        drop(cmd);
        let stderr = Lines::default();
        stderr.collect_from(err_read);
        let stdout = Lines::default();
        stdout.collect_from(child.stdout.take().unwrap());
        Daemon {
            child,
            stderr,
            stdout,
            journal,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        send_signal(self.pid(), sig);
    }

    /// Waits for a stderr line containing `needle`; panics with the log on timeout.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_from(0, needle, timeout).1
    }

    /// Like [`Daemon::wait_for_line`], looking only at lines from index `from` on.
    pub fn wait_for_line_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> (usize, String) {
        self.stderr
            .wait_for_from(from, timeout, |l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                )
            })
    }

    /// The stderr collected so far, for failure messages.
    pub fn log(&self) -> String {
        self.stderr.snapshot().join("\n")
    }

    /// Waits until the stream port accepts connections (the daemon is up),
    /// failing early if the process exits.
    pub fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "metricsd exited ({status}) before listening on {addr}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "metricsd not listening on {addr} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls `condition` until it holds; on timeout fails naming `what`,
    /// with the log.
    pub fn wait_for(&self, what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
        if !wait_until(timeout, condition) {
            panic!(
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                self.log()
            );
        }
    }

    /// kill -9, and reap it.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9 metricsd");
        self.exited = Some(self.child.wait().expect("wait for metricsd"));
    }

    /// SIGTERM, then the exit status; None if it is still running at the deadline.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// SIGTERM, then a clean exit (code 0) within `timeout`; fails with the
    /// log otherwise. Returns how long the stop took.
    pub fn stop_clean(&mut self, timeout: Duration) -> Duration {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        let code = self.exit_code(timeout);
        let took = sent.elapsed();
        assert_eq!(code, 0, "exit code after SIGTERM; log:\n{}", self.log());
        took
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let status = self.child.try_wait().expect("try_wait");
            self.set_exited(status);
        }
        self.exited
    }

    /// Waits for the process to exit; None if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let status = wait_child(&mut self.child, timeout);
            self.set_exited(status);
        }
        self.exited
    }

    /// Records the exit; once exited, waits (briefly) for the reader threads
    /// to take in what the process wrote last, so its log is complete.
    fn set_exited(&mut self, status: Option<ExitStatus>) {
        self.exited = status;
        if status.is_some() {
            wait_until(Duration::from_secs(5), || {
                self.stderr.ended() && self.stdout.ended()
            });
        }
    }

    /// Waits for the exit and returns the code; panics with the log if the
    /// process is still running or was killed by a signal.
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        match self.wait_exit(timeout) {
            Some(status) => status.code().unwrap_or_else(|| {
                panic!(
                    "metricsd killed by a signal ({status}); log:\n{}",
                    self.log()
                )
            }),
            None => panic!(
                "metricsd still running after {timeout:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its reaper).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}
