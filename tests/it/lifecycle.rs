//! The daemon's life cycle with the real binary (SPEC §6, §7): shutdown on
//! SIGTERM with and without a hung backend, reload on SIGHUP, the single
//! instance lock, `run --daemon`, systemd notifications and journal logging.

use crate::common::daemon::{process_alive, send_signal, wait_until, Daemon, Setup};
use crate::common::{self as common, wait_for};
use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite::{self, Message};

const START: Duration = Duration::from_secs(15);

/// The start-up line (SPEC §7), logged once configuration, state directory,
/// lock, queue and listener are in place.
const STARTED: &str = "starting:";
/// The per-sample line at log_level = debug.
const SAMPLED: &str = "sample seq=";
const DEBUG: (&str, &str) = ("METRICSD_LOG_LEVEL", "debug");

// --- a blocking WebSocket reader of snapshots ---------------------------------------

type Ws = tungstenite::WebSocket<TcpStream>;

fn connect_stream(setup: &Setup) -> Ws {
    let tcp = TcpStream::connect(setup.stream_addr()).expect("connect to the stream");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let url = format!("ws://{}/", setup.stream_addr());
    match tungstenite::client::client(url, tcp) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// A snapshot as seen on the stream: its seq, sample time and interval.
#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    at: SystemTime,
    interval: f64,
}

/// The next snapshot message on `ws`, or None when `deadline` passes.
fn next_snapshot(ws: &mut Ws, deadline: Instant) -> Option<Seen> {
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str()).expect("stream sent JSON");
                if v["type"] == "snapshot" {
                    return Some(Seen {
                        seq: v["seq"].as_u64().expect("seq"),
                        at: humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap(),
                        interval: v["interval"].as_f64().expect("interval"),
                    });
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("stream read failed: {e}"),
        }
    }
    None
}

/// Reads snapshots until three consecutive samples (seq n, n+1, n+2) all
/// report `interval` seconds; returns the time between the last two. The
/// first of a run may be off the cadence (the first sample is taken at
/// start-up, a reload may sample early), the later ones are on aligned ticks.
fn spacing_at_interval(ws: &mut Ws, interval: f64, within: Duration) -> Duration {
    let deadline = Instant::now() + within;
    let mut run: Vec<Seen> = Vec::new();
    while let Some(seen) = next_snapshot(ws, deadline) {
        let continues = run.last().is_some_and(|p| seen.seq == p.seq + 1);
        if seen.interval != interval || !continues {
            run.clear();
        }
        if seen.interval == interval {
            run.push(seen);
        }
        if let [.., _, b, c] = run.as_slice() {
            return c.at.duration_since(b.at).unwrap_or_default();
        }
    }
    panic!("no three consecutive snapshots at interval {interval}s within {within:?}");
}

/// Within half of `expected` either way: tells a 1 s cadence from a 2 s one
/// on a busy machine; the precise figures are the benchmarks' business.
fn assert_near(actual: Duration, expected: Duration, what: &str) {
    assert_within(actual, expected, expected / 2, what);
}

fn assert_within(actual: Duration, expected: Duration, slack: Duration, what: &str) {
    let diff = actual.abs_diff(expected);
    assert!(
        diff <= slack,
        "{what}: {actual:?}, expected about {expected:?}"
    );
}

/// Pending rows in the queue, from `metricsd queue stats`.
fn queue_pending(setup: &Setup) -> u64 {
    let out = setup.cli(&["queue", "stats"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "queue stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).expect("queue stats prints JSON");
    stats["pending"].as_u64().expect("pending")
}

// --- shutdown -------------------------------------------------------------------------

#[test]
fn sigterm_when_idle_exits_0_promptly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let setup = Setup::new("1s", "", "");
        let mut daemon = setup.start(&[DEBUG]);
        // Idle: started and past its first sample.
        daemon.wait_for_line(SAMPLED, START);
        let sent = Instant::now();
        daemon.signal(sig);
        let code = daemon.exit_code(Duration::from_secs(5));
        let took = sent.elapsed();
        assert_eq!(code, 0, "signal {sig}; log:\n{}", daemon.log());
        // Idle, nothing waits out a grace period: well inside the 6 s budget
        // (the time itself is printed by `cargo bench --bench daemon`).
        assert!(
            took <= Duration::from_secs(3),
            "signal {sig}: exit took {took:?}"
        );
    }
}

/// A backend that accepts connections, reads requests and never answers.
/// Reports each connection that has sent request bytes.
struct SilentBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: mpsc::Receiver<()>,
}

impl SilentBackend {
    /// A daemon posting to this backend, with a timeout no test waits out.
    fn setup(&self) -> Setup {
        Setup::new(
            "1s",
            "",
            &format!(
                "[backend]\nurl = \"http://127.0.0.1:{}/ingest\"\ntimeout = \"60s\"\n",
                self.port
            ),
        )
    }

    /// Waits for the next POST; without one in `timeout`, fails saying
    /// `what`, with the daemon's log.
    fn wait_post(&self, daemon: &Daemon, timeout: Duration, what: &str) {
        if self.requests.recv_timeout(timeout).is_err() {
            panic!("{what}; log:\n{}", daemon.log());
        }
    }

    fn start() -> SilentBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, requests) = mpsc::channel();
        let stop_flag = stop.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop_flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((mut conn, _)) = listener.accept() {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 1024];
                    if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                        let _ = tx.send(());
                    }
                    // Keep it open and silent.
                    held.push(conn);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        SilentBackend {
            port,
            stop,
            requests,
        }
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn sigterm_during_a_hung_post_exits_within_6s_and_keeps_the_rows() {
    let backend = SilentBackend::start();
    let setup = backend.setup();
    let mut daemon = setup.start(&[]);
    daemon.wait_for_line(STARTED, START);
    backend.wait_post(
        &daemon,
        Duration::from_secs(10),
        "no POST reached the backend",
    );

    let took = daemon.stop_clean(Duration::from_secs(10));
    assert!(
        took <= Duration::from_secs(6),
        "exit took {took:?} with a hung POST"
    );
    // The unanswered rows are still there for the next start.
    assert!(queue_pending(&setup) >= 1, "the in-flight rows were lost");
}

// --- reload ---------------------------------------------------------------------------

#[test]
fn sighup_changes_the_sampling_interval() {
    let setup = Setup::new("2s", "", "");
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), START);
    let mut ws = connect_stream(&setup);
    let before = spacing_at_interval(&mut ws, 2.0, Duration::from_secs(12));
    assert_near(before, Duration::from_secs(2), "spacing at 2s");

    setup.rewrite("1s", "", "");
    daemon.signal(libc::SIGHUP);
    let after = spacing_at_interval(&mut ws, 1.0, Duration::from_secs(10));
    assert_near(after, Duration::from_secs(1), "spacing after reload to 1s");

    daemon.stop_clean(Duration::from_secs(6));
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_configuration() {
    let setup = Setup::new("1s", "", "");
    // Under "journald" the error's priority is visible as <3>.
    let mut daemon = Daemon::spawn(&["--config", setup.config_str(), "run"], &[], true);
    daemon.wait_listening(setup.stream_addr(), START);
    let mut ws = connect_stream(&setup);
    next_snapshot(&mut ws, Instant::now() + Duration::from_secs(5)).expect("a first snapshot");

    let from = daemon.stderr.len();
    std::fs::write(&setup.config, "interval = \"ten\"\n[stream\n").unwrap();
    daemon.signal(libc::SIGHUP);
    let config_path = setup.config_str().to_string();
    let (_, line) = daemon
        .stderr
        .wait_for_from(from, Duration::from_secs(5), |l| {
            l.starts_with("<3>") && l.contains(&config_path)
        })
        .unwrap_or_else(|| {
            panic!(
                "no error line naming {config_path} after SIGHUP; log:\n{}",
                daemon.log()
            )
        });
    assert!(!line.is_empty());
    assert!(
        daemon.try_exit().is_none(),
        "the daemon died on a bad reload"
    );

    // Still sampling at the old interval.
    let spacing = spacing_at_interval(&mut ws, 1.0, Duration::from_secs(6));
    assert_near(
        spacing,
        Duration::from_secs(1),
        "spacing after a rejected reload",
    );

    daemon.stop_clean(Duration::from_secs(6));
}

// --- one instance per state directory ---------------------------------------------------

#[test]
fn second_instance_on_the_same_state_dir_is_refused() {
    let setup = Setup::new("1s", "", "");
    let mut first = setup.start(&[]);
    first.wait_for_line(STARTED, START);

    let out = setup.cli(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "second run: {err}");
    assert!(
        err.contains(&first.pid().to_string()),
        "does not name the running pid {}: {err}",
        first.pid()
    );
    // The first one is untouched.
    assert!(first.try_exit().is_none(), "the first instance exited");

    first.stop_clean(Duration::from_secs(6));
}

// --- the allocator's settings ------------------------------------------------------------

fn environ(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/<pid>/environ");
    raw.split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `run` re-executes itself once with glibc's per-thread caches off (see
/// `os::malloc`): same pid and name, the variable set; a value the user
/// set is left alone.
#[test]
fn run_turns_off_glibc_thread_caches_unless_the_user_set_tunables() {
    let setup = Setup::new("1s", "", "");
    let args = ["--config", setup.config_str(), "run"];
    for user in [None, Some("glibc.malloc.check=0")] {
        let mut cmd = common::daemon::command(&args, &[]);
        cmd.env_remove("GLIBC_TUNABLES");
        if let Some(value) = user {
            cmd.env("GLIBC_TUNABLES", value);
        }
        let mut daemon = Daemon::spawn_command(cmd, false);
        daemon.wait_for_line(STARTED, START);
        let set: Vec<String> = environ(daemon.pid())
            .into_iter()
            .filter(|v| v.starts_with("GLIBC_TUNABLES="))
            .collect();
        let expected = format!(
            "GLIBC_TUNABLES={}",
            user.unwrap_or("glibc.malloc.tcache_count=0")
        );
        assert_eq!(set, vec![expected], "user value {user:?}");
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", daemon.pid())).unwrap();
        assert_eq!(comm.trim(), "metricsd", "the process keeps its name");
        daemon.signal(libc::SIGTERM);
        assert_eq!(
            daemon.exit_code(Duration::from_secs(6)),
            0,
            "{}",
            daemon.log()
        );
    }
}

// --- run --daemon -----------------------------------------------------------------------

/// `--config <config> run --daemon --pidfile <pidfile> --log-file <logfile>`.
fn daemon_mode<'a>(config: &'a str, pidfile: &'a str, logfile: &'a str) -> [&'a str; 8] {
    [
        "--config",
        config,
        "run",
        "--daemon",
        "--pidfile",
        pidfile,
        "--log-file",
        logfile,
    ]
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn file_has_lines(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() > 0)
}

#[test]
fn daemon_mode_writes_pidfile_serves_and_cleans_up() {
    let setup = Setup::new("1s", "", "");
    let pidfile = setup.dir.path().join("run/metricsd.pid");
    let logfile = setup.dir.path().join("log/metricsd.log");
    std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
    std::fs::create_dir_all(logfile.parent().unwrap()).unwrap();
    let _stop = StopDetachedOnDrop(pidfile.clone());
    // Launched from a journald stream (JOURNAL_STREAM set, as a unit's
    // command would inherit it): the detached daemon's stderr is the log
    // file, whose lines still carry timestamps.
    let mut launcher = Daemon::spawn(
        &daemon_mode(
            setup.config_str(),
            pidfile.to_str().unwrap(),
            logfile.to_str().unwrap(),
        ),
        &[],
        true,
    );
    // The foreground process returns once the daemon is detached.
    assert_eq!(
        launcher.exit_code(Duration::from_secs(10)),
        0,
        "log:\n{}",
        launcher.log()
    );

    assert!(
        wait_until(START, || read_pid(&pidfile).is_some()),
        "no pid in {}",
        pidfile.display()
    );
    let pid = read_pid(&pidfile).unwrap();
    assert_ne!(
        pid,
        launcher.pid(),
        "the pidfile names the launcher, not the daemon"
    );
    assert!(
        process_alive(pid),
        "pid {pid} from the pidfile is not running"
    );

    // It serves: the stream delivers snapshots, and it logs to the file.
    let deadline = Instant::now() + START;
    while TcpStream::connect(setup.stream_addr()).is_err() {
        assert!(Instant::now() < deadline, "the daemon never listened");
        thread::sleep(Duration::from_millis(20));
    }
    let mut ws = connect_stream(&setup);
    let a = next_snapshot(&mut ws, Instant::now() + Duration::from_secs(5)).expect("a snapshot");
    let b = next_snapshot(&mut ws, Instant::now() + Duration::from_secs(5)).expect("another");
    assert!(b.seq > a.seq);
    assert!(
        wait_until(Duration::from_secs(5), || file_has_lines(&logfile)),
        "nothing logged to {}",
        logfile.display()
    );
    let text = std::fs::read_to_string(&logfile).unwrap();
    assert!(
        text.lines().all(starts_with_date),
        "log file lines without a timestamp:\n{text}"
    );

    // logrotate's postrotate: after a rename, SIGHUP makes it reopen the file.
    let rotated = logfile.with_extension("log.1");
    std::fs::rename(&logfile, &rotated).unwrap();
    send_signal(pid, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || file_has_lines(&logfile)),
        "no new {} after rotation and SIGHUP",
        logfile.display()
    );

    send_signal(pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(6), || !process_alive(pid)),
        "pid {pid} still running after SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(1), || !pidfile.exists()),
        "{} left behind",
        pidfile.display()
    );
}

// --- systemd notifications ---------------------------------------------------------------

/// The notification socket systemd would provide, collecting what arrives.
struct NotifySocket {
    socket: UnixDatagram,
    got: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket {
            socket,
            got: Vec::new(),
        }
    }

    /// Waits for a datagram with the line `field` (e.g. "READY=1"); returns
    /// when it arrived. Everything received meanwhile is kept in `got`.
    fn wait_for(&mut self, field: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let at = Instant::now();
                let hit = msg.lines().any(|l| l == field);
                self.got.push((at, msg));
                if hit {
                    return Some(at);
                }
            }
        }
        None
    }

    /// Reads every datagram already queued (each read waits at most 50 ms).
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.got.push((Instant::now(), msg));
        }
    }

    fn received(&self) -> Vec<String> {
        self.got.iter().map(|(_, m)| m.clone()).collect()
    }
}

#[test]
fn sd_notify_ready_watchdog_reload_and_stopping() {
    let setup = Setup::new("1s", "", "");
    // A 4 s watchdog: the sampler's pings while it waits (every quarter
    // period) then never come between two 1 s samples.
    let (mut daemon, mut notify) = start_notified(&setup, "4000000", &[]);

    // READY=1 only once the listener takes connections.
    notify.wait_for("READY=1", START).unwrap_or_else(|| {
        panic!(
            "no READY=1; got {:?}; log:\n{}",
            notify.received(),
            daemon.log()
        )
    });
    assert!(
        TcpStream::connect(setup.stream_addr()).is_ok(),
        "READY=1 before the listener accepts connections"
    );

    // WATCHDOG=1 after each sample: at the sampling cadence, not faster.
    let mut pings = Vec::new();
    for _ in 0..4 {
        let at = notify
            .wait_for("WATCHDOG=1", Duration::from_secs(3))
            .unwrap_or_else(|| {
                panic!(
                    "WATCHDOG=1 stopped; got {:?}; log:\n{}",
                    notify.received(),
                    daemon.log()
                )
            });
        pings.push(at);
    }
    // The first sample is taken at once, the next on the aligned tick, so
    // only the later gaps are whole intervals. Their sum, not each one (the
    // test may read two datagrams at once on a busy machine), shows the cadence.
    let span = pings[3] - pings[1];
    assert!(
        span >= Duration::from_secs(1) && span <= Duration::from_secs(6),
        "two WATCHDOG=1 gaps took {span:?} at a 1 s interval"
    );

    // SIGHUP: RELOADING=1, then READY=1 again.
    daemon.signal(libc::SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no RELOADING=1; got {:?}", notify.received()));
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no READY=1 after reload; got {:?}", notify.received()));
    assert!(ready >= reloading);

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(libc::SIGTERM);
    notify
        .wait_for("STOPPING=1", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no STOPPING=1; got {:?}", notify.received()));
    assert_eq!(
        daemon.exit_code(Duration::from_secs(6)),
        0,
        "log:\n{}",
        daemon.log()
    );
}

// --- logging ------------------------------------------------------------------------------

/// `YYYY-MM-DD` at the start of `s`.
fn starts_with_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// Runs the daemon until it has logged start-up and a few samples, stops it,
/// and returns every stderr line.
fn log_lines(journal: bool) -> (Setup, Vec<String>) {
    let setup = Setup::new("1s", "", "");
    let mut daemon = Daemon::spawn(&["--config", setup.config_str(), "run"], &[DEBUG], journal);
    let (first, _) = daemon.wait_for_line_from(0, SAMPLED, START);
    daemon.wait_for_line_from(first + 1, SAMPLED, Duration::from_secs(5));
    daemon.stop_clean(Duration::from_secs(6));
    let lines = daemon.stderr.snapshot();
    assert!(!lines.is_empty(), "nothing logged");
    (setup, lines)
}

#[test]
fn under_journald_lines_carry_priority_and_no_timestamp() {
    let (_, lines) = log_lines(true);
    // info for start-up, debug for samples.
    assert!(lines.iter().any(|l| l.starts_with("<6>")), "no <6> line");
    assert!(lines.iter().any(|l| l.starts_with("<7>")), "no <7> line");
    for line in &lines {
        let b = line.as_bytes();
        assert!(
            b.len() > 3 && b[0] == b'<' && (b'0'..=b'7').contains(&b[1]) && b[2] == b'>',
            "no <N> prefix: {line:?}"
        );
        assert!(
            !starts_with_date(&line[3..]),
            "timestamp under journald: {line:?}"
        );
    }
}

#[test]
fn on_a_terminal_lines_start_with_a_timestamp() {
    let (setup, lines) = log_lines(false);
    for line in &lines {
        assert!(starts_with_date(line), "no timestamp: {line:?}");
    }
    // The start-up line names the version, the listen address and the queue.
    let listen = setup.stream_addr().to_string();
    let queue = setup.state_dir.join("queue.db");
    let queue = queue.to_str().unwrap();
    assert!(
        lines.iter().any(|l| l.contains(env!("CARGO_PKG_VERSION"))
            && l.contains(&listen)
            && l.contains(queue)),
        "no start-up line with version, {listen} and {queue}:\n{}",
        lines.join("\n")
    );
}

// --- nothing half-alive (fault injection: debug builds, FAULT_INJECT) ------------------

/// A backend URL on a port nothing listens on: the poster has rows to send,
/// and every round ends quickly in "connection refused".
fn unreachable_backend() -> String {
    format!(
        "[backend]\nurl = \"http://127.0.0.1:{}/ingest\"\n",
        crate::common::free_port()
    )
}

/// Starts the daemon with a notification socket and a 1 s watchdog.
fn start_with_watchdog(setup: &Setup, env: &[(&str, &str)]) -> (Daemon, NotifySocket) {
    start_notified(setup, "1000000", env)
}

/// Starts the daemon with a notification socket and a watchdog of
/// `watchdog_usec`, as systemd would.
fn start_notified(
    setup: &Setup,
    watchdog_usec: &str,
    env: &[(&str, &str)],
) -> (Daemon, NotifySocket) {
    let socket_path = setup.dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let mut all = vec![
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", watchdog_usec),
    ];
    all.extend_from_slice(env);
    let daemon =
        Daemon::spawn_with_watchdog_pid(&["--config", setup.config_str(), "run"], &all, false);
    (daemon, notify)
}

fn assert_panic_ends_the_process(fault: &str, thread: &str, watchdog: bool) {
    let setup = Setup::new("1s", "", &unreachable_backend());
    let env = [("FAULT_INJECT", fault)];
    let (mut daemon, _notify) = if watchdog {
        let (d, n) = start_with_watchdog(&setup, &env);
        (d, Some(n))
    } else {
        (setup.start(&env), None)
    };
    let code = daemon.exit_code(Duration::from_secs(20));
    assert_ne!(code, 0, "{fault}: exited 0; log:\n{}", daemon.log());
    // The reader thread may still be catching up with the last lines.
    let wanted = format!("thread {thread}");
    let logged = daemon.stderr.wait_for_from(0, Duration::from_secs(5), |l| {
        l.contains(&wanted) && l.contains("panicked") && l.contains("fault injection")
    });
    assert!(
        logged.is_some(),
        "{fault}: the panic was not logged; log:\n{}",
        daemon.log()
    );
}

#[test]
fn a_panic_in_the_poster_ends_the_process_non_zero() {
    assert_panic_ends_the_process("poster:panic", "poster-backend", false);
}

#[test]
fn a_panic_in_the_sampler_ends_the_process_non_zero() {
    // The second sample: the daemon is fully up when it happens.
    assert_panic_ends_the_process("sampler:panic:2", "sampler", false);
}

#[test]
fn a_panic_in_the_stream_runtime_ends_the_process_non_zero() {
    // The stream runtime's liveness tick runs only under a watchdog.
    assert_panic_ends_the_process("stream:panic:3", "stream", true);
}

/// Waits for the "withholding" line naming `thread`, then proves that no
/// WATCHDOG=1 arrives for a few watchdog periods while the process stays up.
fn assert_watchdog_stops_for(fault: &str, thread: &str) {
    let line = format!("withholding the watchdog: thread {thread} has made no progress");
    assert_watchdog_stops_after(fault, &line);
}

/// Waits for `line`, then proves that no WATCHDOG=1 arrives for a few
/// watchdog periods while the process stays up.
fn assert_watchdog_stops_after(fault: &str, line: &str) {
    assert_watchdog_stops_after_in(fault, line, "");
}

/// [`assert_watchdog_stops_after`] with these `[stream]` keys.
fn assert_watchdog_stops_after_in(fault: &str, line: &str, stream_keys: &str) {
    let setup = Setup::new(
        "1s",
        "",
        &(stream_keys.to_string() + &unreachable_backend()),
    );
    let (mut daemon, mut notify) = start_with_watchdog(&setup, &[("FAULT_INJECT", fault)]);
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1; log:\n{}", daemon.log()));
    daemon.wait_for_line(line, Duration::from_secs(15));
    // What was sent before the line is still queued; after it, silence.
    notify.drain();
    assert!(
        notify
            .wait_for("WATCHDOG=1", Duration::from_secs(3))
            .is_none(),
        "WATCHDOG=1 still sent after {line:?}; log:\n{}",
        daemon.log()
    );
    assert!(daemon.try_exit().is_none(), "the daemon exited");
    // The stuck thread does not keep the stop from finishing in its budget.
    daemon.stop_clean(Duration::from_secs(10));
}

#[test]
fn the_watchdog_stops_when_the_poster_hangs_outside_a_network_wait() {
    assert_watchdog_stops_for("poster:hang", "poster-backend");
}

#[test]
fn the_watchdog_stops_when_the_sampler_hangs_and_the_main_thread_says_so() {
    // The sampler sends the pings: when it is the one stuck, the log line
    // must come from elsewhere (the main thread), before systemd's restart,
    // with or without the stream.
    let line = "thread sampler has made no progress for";
    assert_watchdog_stops_after("sampler:hang:3", line);
    assert_watchdog_stops_after_in("sampler:hang:3", line, "enabled = false\n");
}

#[test]
fn the_watchdog_stops_when_the_stream_runtime_is_blocked() {
    assert_watchdog_stops_for("stream:hang:3", "stream");
}

#[test]
fn a_stop_that_finds_a_sample_in_progress_logs_no_error() {
    // The second sample takes 2 s; the stop comes in the middle of it, so
    // the main and stream threads have ended when the sample feeds the
    // watchdog. A 12 s watchdog: the slow sample alone is no trouble (the
    // sampler is reported stuck after half the period, 6 s).
    let setup = Setup::new("1s", "", "");
    let (mut daemon, mut notify) = start_notified(
        &setup,
        "12000000",
        &[
            ("FAULT_INJECT", "sampler:slow:2"),
            // Each finished sample logs a debug line: the slow one's must
            // come after the stop began.
            ("RUST_LOG", "metricsd=debug"),
        ],
    );
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1; log:\n{}", daemon.log()));
    daemon.wait_for_line("fault injection: sampler is slow", Duration::from_secs(15));
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.exit_code(Duration::from_secs(10)),
        0,
        "log:\n{}",
        daemon.log()
    );
    daemon.wait_for_line("stopped in", Duration::from_secs(5));
    let log = daemon.log();
    let stop = log
        .find("SIGTERM received")
        .unwrap_or_else(|| panic!("no stop logged:\n{log}"));
    assert!(
        log[stop..].contains("sample seq="),
        "the stop did not find a sample in progress:\n{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("withholding"),
        "a clean stop logged an error:\n{log}"
    );
}

#[test]
fn the_watchdog_continues_while_the_poster_waits_on_a_hung_backend() {
    let backend = SilentBackend::start();
    let setup = backend.setup();
    let (mut daemon, mut notify) = start_with_watchdog(&setup, &[]);
    backend.wait_post(
        &daemon,
        Duration::from_secs(15),
        "no POST reached the backend",
    );
    // The POST hangs for longer than several watchdog periods: still pinged.
    let until = Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while Instant::now() < until {
        if notify
            .wait_for("WATCHDOG=1", Duration::from_secs(3))
            .is_some()
        {
            pings += 1;
        } else {
            panic!(
                "WATCHDOG=1 stopped during a network wait; log:\n{}",
                daemon.log()
            );
        }
    }
    assert!(pings >= 3, "only {pings} WATCHDOG=1 in 4 s");
    assert!(!daemon.log().contains("withholding the watchdog"));
    daemon.stop_clean(Duration::from_secs(10));
}

// --- the stop budget ----------------------------------------------------------------------

/// The close code a client that read nothing finds after everything the
/// server sent it; None when the connection ended without a close frame.
fn close_code_after_the_fact(mut ws: Ws) -> Option<u16> {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn a_stop_with_hung_posts_and_clients_that_never_read_ends_within_6s_with_an_empty_wal() {
    let backend = SilentBackend::start();
    // Every sink posts to the backend that never answers.
    let base = format!("http://127.0.0.1:{}", backend.port);
    let setup = Setup::new(
        "1s",
        "",
        &format!(
            "[backend]\nurl = \"{base}/ingest\"\ntimeout = \"60s\"\n\
             [remote_write]\nurl = \"{base}/api/v1/write\"\ntimeout = \"60s\"\n\
             [otlp]\nurl = \"{base}/v1/metrics\"\ntimeout = \"60s\"\n"
        ),
    );
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), START);
    // Clients that complete the handshake and then never read.
    let silent: Vec<Ws> = (0..4).map(|_| connect_stream(&setup)).collect();
    for sink in 0..3 {
        backend.wait_post(
            &daemon,
            Duration::from_secs(15),
            &format!("only {sink} of 3 sinks reached the backend"),
        );
    }
    // The welcome and the latest snapshot already wait unread in each socket.

    let took = daemon.stop_clean(Duration::from_secs(15));
    assert!(took <= Duration::from_secs(6), "the stop took {took:?}");

    let wal = setup.state_dir.join("queue.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_bytes, 0, "{} holds {wal_bytes} bytes", wal.display());
    assert!(
        !daemon.log().contains("WAL checkpoint"),
        "log:\n{}",
        daemon.log()
    );
    for ws in silent {
        assert_eq!(
            close_code_after_the_fact(ws),
            Some(1001),
            "log:\n{}",
            daemon.log()
        );
    }
    assert!(queue_pending(&setup) >= 1, "the in-flight rows were lost");
}

// --- run --daemon: start-up failures reach the launching command -------------------------

/// `metricsd --config <config> run --daemon` with its files in `dir`; returns
/// the launcher's exit code and stderr.
fn launch_daemon(dir: &Path, config: &str) -> (i32, String, Daemon) {
    let pidfile = dir.join("metricsd.pid");
    let logfile = dir.join("metricsd.log");
    let mut launcher = Daemon::spawn(
        &daemon_mode(config, pidfile.to_str().unwrap(), logfile.to_str().unwrap()),
        &[],
        false,
    );
    let code = launcher.exit_code(Duration::from_secs(30));
    let log = launcher.log();
    (code, log, launcher)
}

/// Stops a detached daemon by the pid in its pidfile, if it is running.
fn stop_detached(pidfile: &Path) {
    if let Some(pid) = read_pid(pidfile) {
        if process_alive(pid) {
            send_signal(pid, libc::SIGTERM);
            wait_until(Duration::from_secs(10), || !process_alive(pid));
        }
    }
}

/// Stops, when dropped, the detached daemon its pidfile names: a failed
/// assertion must not leave it running after the test (it is nobody's
/// child). A daemon that ignores SIGTERM is killed.
struct StopDetachedOnDrop(PathBuf);

impl Drop for StopDetachedOnDrop {
    fn drop(&mut self) {
        stop_detached(&self.0);
        if let Some(pid) = read_pid(&self.0) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "metricsd" {
                send_signal(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn daemon_mode_reports_a_configuration_error_with_78() {
    let setup = Setup::new("1s", "", "");
    std::fs::write(&setup.config, "interval = \"ten\"\n").unwrap();
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    assert_eq!(code, 78, "stderr: {err}");
    assert!(
        err.contains(setup.config_str()) && err.contains("interval"),
        "{err}"
    );
}

#[test]
fn daemon_mode_reports_a_state_directory_it_cannot_create_with_73() {
    let setup = Setup::new("1s", "", "");
    // A regular file where the state directory's parent should be.
    let blocker = setup.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let state = blocker.join("state");
    let text = crate::common::daemon::config_toml(&state, setup.port, "1s", "", "");
    std::fs::write(&setup.config, text).unwrap();
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    assert_eq!(code, 73, "stderr: {err}");
    assert!(err.contains(state.to_str().unwrap()), "{err}");
}

#[test]
fn daemon_mode_reports_an_unopenable_queue_with_73() {
    let setup = Setup::new("1s", "", "");
    // A directory where the queue file should be: the state directory is
    // fine, the queue cannot be opened (after the detach).
    std::fs::create_dir_all(setup.state_dir.join("queue.db")).unwrap();
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    stop_detached(&setup.dir.path().join("metricsd.pid"));
    assert_eq!(code, 73, "stderr: {err}");
    assert!(err.contains("queue"), "{err}");
}

#[test]
fn daemon_mode_reports_a_held_lock_with_1_naming_the_holder() {
    let setup = Setup::new("1s", "", "");
    let mut first = setup.start(&[]);
    first.wait_for_line(STARTED, START);
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains(&first.pid().to_string()), "{err}");
    assert!(first.try_exit().is_none(), "the first instance exited");
    first.stop_clean(Duration::from_secs(10));
}

#[test]
fn a_second_daemon_is_refused_by_the_instance_lock_naming_the_first_which_keeps_serving() {
    let setup = Setup::new("1s", "", "");
    let pidfile = setup.dir.path().join("metricsd.pid");
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    assert_eq!(code, 0, "first launcher: {err}");
    let first = read_pid(&pidfile).expect("the first daemon's pid file");

    // The same state directory and the same pid file.
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    let still = read_pid(&pidfile);
    let serving = crate::common::receivers::http_get(setup.port, "/health");
    stop_detached(&pidfile);
    assert_eq!(code, 1, "second launcher: {err}");
    assert!(
        err.contains(&format!("pid {first}")),
        "does not name {first}: {err}"
    );
    assert!(
        !err.contains("pid file"),
        "refused by the pid file, not the lock: {err}"
    );
    assert_eq!(still, Some(first), "the second launch touched the pid file");
    assert_eq!(
        serving.map(|(status, _)| status),
        Some(200),
        "the first stopped serving"
    );
}

#[test]
fn a_failed_daemon_start_leaves_no_pid_file() {
    let setup = Setup::new("1s", "", "");
    // Held lock: the pid file of the refused instance must not appear.
    let mut first = setup.start(&[]);
    first.wait_for_line(STARTED, START);
    let refused = setup.dir.path().join("refused");
    std::fs::create_dir_all(&refused).unwrap();
    let (code, err, _) = launch_daemon(&refused, setup.config_str());
    assert_eq!(code, 1, "stderr: {err}");
    assert!(
        !refused.join("metricsd.pid").exists(),
        "pid file left by a refused start"
    );
    first.stop_clean(Duration::from_secs(10));

    // Unopenable queue (fails after the detach, before serving): a
    // directory where the first run's queue file was.
    for name in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        let _ = std::fs::remove_file(setup.state_dir.join(name));
    }
    std::fs::create_dir_all(setup.state_dir.join("queue.db")).unwrap();
    let (code, err, _) = launch_daemon(setup.dir.path(), setup.config_str());
    let pidfile = setup.dir.path().join("metricsd.pid");
    stop_detached(&pidfile);
    assert_eq!(code, 73, "stderr: {err}");
    assert!(!pidfile.exists(), "pid file left by a failed start");
}

#[test]
fn daemon_mode_reports_a_listen_address_in_use_with_1_naming_it() {
    let setup = Setup::new("1s", "", "");
    // Held from the start (no free-port race with parallel tests).
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = crate::common::daemon::config_toml(&setup.state_dir, addr.port(), "1s", "", "");
    std::fs::write(&setup.config, text).unwrap();
    let (code, err, launcher) = launch_daemon(setup.dir.path(), setup.config_str());
    stop_detached(&setup.dir.path().join("metricsd.pid"));
    assert_eq!(code, 1, "stderr: {err}");
    // The launcher's stderr is collected by a reader thread that may lag
    // its exit: wait for the line rather than read it once.
    launcher.wait_for_line(&addr.to_string(), Duration::from_secs(10));
}

#[test]
fn daemon_mode_exits_0_once_serving_and_relative_paths_survive_the_detach_and_a_reload() {
    let backend = crate::common::backend::Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let config_text = |interval: &str| {
        format!(
            "interval = \"{interval}\"\nstate_dir = \"state\"\n\
             [stream]\nlisten = \"127.0.0.1:{port}\"\n\
             [backend]\nurl = \"{}\"\ntoken_file = \"token\"\n",
            backend.url()
        )
    };
    std::fs::write(dir.path().join("metricsd.toml"), config_text("1s")).unwrap();
    std::fs::write(dir.path().join("token"), "first-token\n").unwrap();
    let mut cmd =
        crate::common::daemon::command(&daemon_mode("metricsd.toml", "run.pid", "daemon.log"), &[]);
    cmd.current_dir(dir.path());
    let pidfile = dir.path().join("run.pid");
    let _stop = StopDetachedOnDrop(pidfile.clone());
    let mut launcher = Daemon::spawn_command(cmd, false);
    let code = launcher.exit_code(Duration::from_secs(30));
    let logfile = dir.path().join("daemon.log");
    let log = || std::fs::read_to_string(&logfile).unwrap_or_default();
    assert_eq!(code, 0, "launcher: {}\nlog:\n{}", launcher.log(), log());
    // Exit 0 means serving: the listener takes connections at once.
    TcpStream::connect(("127.0.0.1", port)).expect("not serving when the launcher exited 0");
    let pid = read_pid(&pidfile).expect("a pid in run.pid (relative to the start directory)");
    assert!(
        dir.path().join("state/queue.db").exists(),
        "state_dir not relative to the start"
    );
    let token_sent = |token: &str| {
        let wanted = format!("Bearer {token}");
        backend.wait_until(Duration::from_secs(15), |b| {
            b.requests()
                .iter()
                .any(|r| r.header("authorization") == Some(wanted.as_str()))
        })
    };
    assert!(token_sent("first-token"), "log:\n{}", log());

    // A reload after the detach reads the relative config and token file again.
    std::fs::write(dir.path().join("metricsd.toml"), config_text("2s")).unwrap();
    std::fs::write(dir.path().join("token"), "second-token\n").unwrap();
    send_signal(pid, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("configuration reloaded: interval 2s")),
        "no reload; log:\n{}",
        log()
    );
    assert!(token_sent("second-token"), "log:\n{}", log());

    send_signal(pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "still running"
    );
    assert!(
        wait_until(Duration::from_secs(2), || !pidfile.exists()),
        "run.pid left behind"
    );
}

// --- signals from the first instant --------------------------------------------------------

/// Starts the daemon with its queue file locked by the test, so start-up
/// waits in the queue's opening (after the lock file names the daemon,
/// before anything is served); sends `sig` then, and lets start-up go on.
fn signal_during_start_up(sig: i32) -> (Setup, Daemon) {
    let setup = Setup::new("1s", "", "");
    std::fs::create_dir_all(&setup.state_dir).unwrap();
    let db = rusqlite::Connection::open(setup.state_dir.join("queue.db")).unwrap();
    db.execute_batch("CREATE TABLE hold(x); BEGIN EXCLUSIVE; INSERT INTO hold VALUES (1);")
        .unwrap();
    let mut daemon = setup.start(&[]);
    let lock_names_it = || {
        std::fs::read_to_string(setup.state_dir.join("metricsd.lock"))
            .is_ok_and(|t| t.trim() == daemon.pid().to_string())
    };
    assert!(
        wait_until(START, lock_names_it),
        "the daemon never took its lock; log:\n{}",
        daemon.log()
    );
    assert!(!daemon.log().contains(STARTED), "start-up already finished");
    daemon.signal(sig);
    // Delivered (no longer pending for the process) while start-up waits.
    let pid = daemon.pid();
    assert!(
        wait_until(START, || !signal_in_mask(pid, "ShdPnd", sig)),
        "signal {sig} never delivered"
    );
    assert!(
        daemon.try_exit().is_none(),
        "signal {sig} during start-up killed it"
    );
    db.execute_batch("COMMIT;").unwrap();
    drop(db);
    (setup, daemon)
}

#[test]
fn a_sigterm_during_start_up_is_honoured_with_a_clean_stop() {
    let (setup, mut daemon) = signal_during_start_up(libc::SIGTERM);
    assert_eq!(
        daemon.exit_code(Duration::from_secs(15)),
        0,
        "log:\n{}",
        daemon.log()
    );
    let wal = setup.state_dir.join("queue.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
}

#[test]
fn a_sighup_during_start_up_is_queued_not_fatal() {
    let (_setup, mut daemon) = signal_during_start_up(libc::SIGHUP);

    // The queued reload is honoured once the daemon is up.
    let (started, _) = daemon.wait_for_line_from(0, STARTED, START);
    daemon.wait_for_line_from(started, "configuration reloaded", Duration::from_secs(10));
    daemon.stop_clean(Duration::from_secs(10));
}

/// Whether `sig` is in the `mask` line (SigBlk, SigCgt, ...) of `pid`'s
/// status, which describes its main thread.
fn signal_in_mask(pid: i32, mask: &str, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix(mask)?.strip_prefix(':'))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|bits| bits & (1 << (sig - 1)) != 0)
    })
}

#[test]
fn a_sighup_in_the_first_moments_before_any_handler_is_a_reload() {
    // From its first steps `run` holds the signals it handles (before the
    // allocator's re-exec, which starts the program again without its
    // handlers): one sent then waits for them instead of ending it.
    // The start is made slow (2 s there) so the test can send it then.
    let setup = Setup::new("1s", "", "");
    let mut daemon = setup.start(&[("FAULT_INJECT", "start:slow")]);
    let pid = daemon.pid();
    // Held, and no handler yet: without the hold this SIGHUP would end it.
    let held_unhandled = || {
        signal_in_mask(pid, "SigBlk", libc::SIGHUP) && !signal_in_mask(pid, "SigCgt", libc::SIGHUP)
    };
    assert!(
        wait_until(START, held_unhandled),
        "the daemon never held SIGHUP before handling it; log:\n{}",
        daemon.log()
    );
    daemon.signal(libc::SIGHUP);
    let (started, _) = daemon.wait_for_line_from(0, STARTED, START);
    daemon.wait_for_line_from(started, "configuration reloaded", Duration::from_secs(10));
    daemon.stop_clean(Duration::from_secs(10));
}

#[test]
fn after_a_reload_to_a_shorter_interval_the_next_sample_keeps_half_an_interval() {
    let setup = Setup::new("10s", "", "");
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), START);
    let mut ws = connect_stream(&setup);
    let first = next_snapshot(&mut ws, Instant::now() + START).expect("a first snapshot");
    // Reload at once (long before the next 10 s tick) to 4 s.
    setup.rewrite("4s", "", "");
    daemon.signal(libc::SIGHUP);
    let next = next_snapshot(&mut ws, Instant::now() + Duration::from_secs(15))
        .expect("a snapshot after the reload");
    assert_eq!(next.seq, first.seq + 1);
    let gap = next.at.duration_since(first.at).unwrap_or_default();
    // Lower bound only: a busy machine can make it longer, never shorter.
    assert!(
        gap >= Duration::from_secs(2),
        "the next sample came {gap:?} after the last"
    );
    daemon.stop_clean(Duration::from_secs(10));
}

// --- a failing queue insert -------------------------------------------------------------

/// `chattr +i` on the queue's files while it holds; `-i` again on drop, so
/// the temp directory can always be removed.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    /// None when the files cannot be made immutable here (not root, or a
    /// filesystem without the attribute).
    fn set(paths: Vec<std::path::PathBuf>) -> Option<Immutable> {
        let mut guard = Immutable(Vec::new());
        for path in paths {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            guard.0.push(path);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

fn health(setup: &Setup) -> Value {
    let (_, body) = crate::common::receivers::http_get(setup.port, "/health").unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

fn insert_failures_total(setup: &Setup) -> u64 {
    let (_, body) = crate::common::receivers::http_get(setup.port, "/metrics").unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("metricsd_queue_insert_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn a_failing_queue_insert_gives_health_a_reason_counts_and_logs_once_then_recovers() {
    const FAILED: &str = "queue insert failed";
    let setup = Setup::new("1s", "", "");
    let mut daemon = setup.start(&[DEBUG]);
    daemon.wait_for_line(STARTED, START);
    daemon.wait_for_line(SAMPLED, START);
    wait_for("a queued row", START, || queue_pending(&setup) >= 1);
    let files = ["queue.db", "queue.db-wal"].map(|f| setup.state_dir.join(f));
    let Some(fault) = Immutable::set(files.to_vec()) else {
        crate::common::skip_or_fail(
            "cannot chattr +i the queue files (needs root and ext4-like attributes)",
        );
        return;
    };

    let (first_failure, _) = daemon.wait_for_line_from(0, FAILED, START);
    wait_for("/health giving the failure as its reason", START, || {
        !health(&setup)["reason"].is_null()
    });
    let degraded = health(&setup);
    assert_eq!(degraded["status"], "ok", "SPEC §4.4: sampling goes on");
    assert!(
        degraded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("queue")),
        "{degraded}"
    );
    // Several more samples fail in the same minute: still a single line.
    let mut from = first_failure;
    for _ in 0..4 {
        from = daemon.wait_for_line_from(from + 1, SAMPLED, START).0;
    }
    let failures = insert_failures_total(&setup);
    assert!(
        failures >= 4,
        "metricsd_queue_insert_failures_total = {failures}"
    );
    let logged = daemon
        .stderr
        .snapshot()
        .iter()
        .filter(|l| l.contains(FAILED))
        .count();
    assert_eq!(logged, 1, "logged per sample:\n{}", daemon.log());

    drop(fault);
    daemon.wait_for_line_from(from, "queue inserts resumed", START);
    wait_for("/health without a reason again", START, || {
        let h = health(&setup);
        h["status"] == "ok" && h["reason"].is_null()
    });
    let pending = queue_pending(&setup);
    wait_for("inserts resume", START, || queue_pending(&setup) > pending);
    assert!(insert_failures_total(&setup) >= failures);

    daemon.stop_clean(Duration::from_secs(10));
}
