//! Reliability under faults, with the real binary (issue 10, "Reliability
//! figures"):
//! 1. kill -9 at random moments while the poster drains a backlog to a real
//!    HTTP backend, a restart each time; then event_ids queued vs delivered
//!    (lost must be 0; duplicates are counted, at-least-once allows them);
//! 2. 1,000 idle TCP connections and 1,000 that send a request head one byte
//!    a second, while a normal client asks for /health (p50/p99) and a
//!    WebSocket client measures the snapshot cadence;
//! 3. a full disk (a small tmpfs as the state directory; needs root) for 100
//!    samples, then space again: nothing committed is lost.
//!
//! cargo bench --bench faults                 (all three)
//! cargo bench --bench faults -- kill9 flood disk   (a selection)
//! FAULTS_ROUNDS=20 cargo bench --bench faults -- kill9

#[path = "../tests/it/common/backend.rs"]
mod backend;
#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/common/rows.rs"]
mod rows;

use backend::Backend;
use common::daemon::Daemon;
use common::{free_port, wait_until};
use metricsd::queue::Queue;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const BIN: &str = env!("CARGO_BIN_EXE_metricsd");

/// `metricsd --config <config> run`.
fn start(config: &Path) -> Daemon {
    Daemon::spawn(&["--config", config.to_str().unwrap(), "run"], &[], false)
}

/// SIGTERM; the exit status as text.
fn stop(mut daemon: Daemon) -> String {
    let timeout = Duration::from_secs(120);
    match daemon.terminate(timeout) {
        Some(status) => status.to_string(),
        None => format!("still running {timeout:?} after SIGTERM"),
    }
}

fn metricsd(config: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("METRICSD_CONFIG")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pending event_ids (`metricsd queue peek`).
fn peek_ids(config: &Path) -> Vec<String> {
    metricsd(config, &["queue", "peek", "-n", "1000000"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["event_id"].as_str().map(str::to_string))
        .collect()
}

fn pending(config: &Path) -> u64 {
    metricsd(config, &["queue", "stats"])
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["pending"].as_u64())
        .unwrap_or(0)
}

fn write_config(dir: &Path, state: &Path, port: u16, url: &str, extra_backend: &str) -> PathBuf {
    let path = dir.join("metricsd.toml");
    std::fs::write(
        &path,
        format!(
            "interval = \"1s\"\nstate_dir = {:?}\n\
             [stream]\nlisten = \"127.0.0.1:{port}\"\n\
             [queue]\nmax_pending = 1000000\n\
             [backend]\nurl = {url:?}\ntimeout = \"2s\"\nretry_backoff = [\"100ms\"]\n{extra_backend}",
            state.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// Lost (queued, never delivered) and duplicate deliveries.
fn tally(queued: &HashSet<String>, backend: &Backend) -> (usize, usize, usize) {
    let delivered = backend.delivered_ids();
    let unique: HashSet<&String> = delivered.iter().collect();
    let lost = queued.iter().filter(|id| !unique.contains(id)).count();
    (lost, delivered.len() - unique.len(), unique.len())
}

// --- 1. kill -9 during a drain --------------------------------------------------------------

fn kill9_rounds() {
    let rounds: usize = std::env::var("FAULTS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    // About what 100 rounds drain (a few hundred rows each), so the kills
    // land mid-drain until the end.
    let backlog: u64 = 250 * rounds as u64;
    let backend = Backend::start();
    // Slow enough (10 rows per POST, 10 ms each) that kills land mid-drain.
    backend.set_delay(Duration::from_millis(10));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = write_config(
        dir.path(),
        &state,
        free_port(),
        &backend.url(),
        "batch_size = 10\n",
    );

    let mut queued: HashSet<String> = HashSet::new();
    {
        let mut queue = Queue::open(&state.join("queue.db")).unwrap();
        for i in 0..backlog {
            let (id, at, payload) = rows::row(i);
            queue
                .insert(&id, &at, &payload, &[], &["backend"], 1_000_000)
                .unwrap();
            queued.insert(id);
        }
    }
    let started = Instant::now();
    let mut ran_dry = 0;
    for round in 0..rounds {
        // Between rounds nothing runs: whatever is pending must arrive.
        queued.extend(peek_ids(&config));
        let served = backend.served();
        let daemon = start(&config);
        if !wait_until(Duration::from_secs(15), || backend.served() > served) {
            panic!(
                "round {round}: the drain never started; log:\n{}",
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        daemon.kill_9();
        if pending(&config) == 0 {
            ran_dry += 1;
        }
    }
    queued.extend(peek_ids(&config));
    let daemon = start(&config);
    // `queue stats` is cheap; reading every body the backend got is not.
    let all_in = wait_until(Duration::from_secs(300), || {
        std::thread::sleep(Duration::from_millis(500));
        pending(&config) == 0
    });
    let status = stop(daemon);
    let (lost, duplicates, unique) = tally(&queued, &backend);
    println!(
        "faults: kill -9 x{rounds} mid-drain in {:.0} s: {} queued, {unique} delivered, \
         {lost} lost, {duplicates} duplicate deliveries{}{}; final stop: {status}",
        started.elapsed().as_secs_f64(),
        queued.len(),
        if all_in {
            ""
        } else {
            " (final drain timed out)"
        },
        if ran_dry > 0 {
            format!(", backlog ran out in {ran_dry} rounds")
        } else {
            String::new()
        },
    );
}

// --- 2. idle and slow connections -----------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One GET /health on a fresh connection; its latency and status line.
fn health(addr: SocketAddr) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        tcp,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_string();
    Ok((started.elapsed(), status))
}

/// Whether the server has closed this connection (EOF or reset).
fn closed_by_server(mut tcp: &TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn connection_flood() {
    const IDLE: usize = 1000;
    const SLOW: usize = 1000;
    const WINDOW: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = write_config(dir.path(), &state, port, "", "");
    let mut daemon = start(&config);
    assert!(
        wait_until(Duration::from_secs(15), || TcpStream::connect(addr).is_ok()),
        "not listening; log:\n{}",
        daemon.log()
    );

    // The stream client: when each snapshot arrives.
    let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let ws_thread = {
        let arrivals = arrivals.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/"), tcp).unwrap();
            while !done.load(Ordering::Relaxed) {
                match ws.read() {
                    Ok(Message::Text(t)) if t.as_str().contains("\"snapshot\"") => {
                        arrivals.lock().unwrap().push(Instant::now());
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        })
    };

    let flood_started = Instant::now();
    let mut refused = 0;
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..IDLE {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => idle.push(c),
            Err(_) => refused += 1,
        }
    }
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => slow.push(c),
            Err(_) => refused += 1,
        }
    }
    let opened = flood_started.elapsed();
    // One byte a second on every slow connection (the head never completes).
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64)
    );
    let slow_done = done.clone();
    let slow_thread = std::thread::spawn(move || {
        let mut at = 0;
        let mut writes_failed = 0;
        while !slow_done.load(Ordering::Relaxed) {
            let byte = &head.as_bytes()[at % head.len()..at % head.len() + 1];
            for c in slow.iter_mut() {
                if c.write_all(byte).is_err() {
                    writes_failed += 1;
                }
            }
            at += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        (slow, writes_failed)
    });

    // The normal client meanwhile.
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let until = Instant::now() + WINDOW;
    while Instant::now() < until {
        match health(addr) {
            Ok((took, status)) if status.contains(" 200 ") => latencies.push(took),
            Ok((_, status)) => failures.push(status),
            Err(e) => failures.push(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let (slow, _writes_failed) = slow_thread.join().unwrap();
    ws_thread.join().unwrap();
    let idle_closed = idle.iter().filter(|c| closed_by_server(c)).count();
    let slow_closed = slow.iter().filter(|c| closed_by_server(c)).count();
    let alive = daemon.try_exit().is_none();
    drop(idle);
    drop(slow);
    let status = stop(daemon);

    latencies.sort();
    let arrivals = arrivals.lock().unwrap().clone();
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    println!(
        "faults: flood: {IDLE} idle + {SLOW} slow-head connections opened in {:.1} s ({refused} not accepted within 2 s)",
        opened.as_secs_f64()
    );
    println!(
        "faults: flood: /health over {} s: {} ok, {} failed; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        WINDOW.as_secs(),
        latencies.len(),
        failures.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    if let Some(first) = failures.first() {
        println!("faults: flood:   first failure: {first}");
    }
    println!(
        "faults: flood: stream at a 1 s interval: {} snapshots, gap p50 {:.0} ms, max {:.0} ms",
        arrivals.len(),
        ms(percentile(&gaps, 0.5)),
        ms(percentile(&gaps, 1.0)),
    );
    println!(
        "faults: flood: closed by the server after {} s: {idle_closed} of {} idle, {slow_closed} of {} slow; \
         daemon alive: {alive}; stop: {status}",
        WINDOW.as_secs(),
        IDLE - refused.min(IDLE),
        SLOW,
    );
}

// --- 3. a full disk ---------------------------------------------------------------------------

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Fills the file system holding `dir` until a write fails.
fn fill(dir: &Path) -> u64 {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // Then the last few bytes, so that not even one page is free.
    while let Ok(n) = file.write(&chunk[..512]) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = file.sync_all();
    written
}

fn insert_failures(addr: SocketAddr) -> Option<u64> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("metricsd_queue_insert_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The latest snapshot seq on the stream (a fresh connection each time).
fn latest_seq(addr: SocketAddr) -> Option<u64> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/"), tcp).ok()?;
    for _ in 0..3 {
        if let Ok(Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(t.as_str()).ok()?;
            if v["type"] == "snapshot" {
                return v["seq"].as_u64();
            }
        }
    }
    None
}

fn full_disk() {
    const SAMPLES: u64 = 100;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("faults: disk: skipped (mounting a tmpfs needs root)");
        return;
    }
    let backend = Backend::start();
    backend.down();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    if !run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            state.to_str().unwrap(),
        ],
    ) {
        println!("faults: disk: skipped (mount -t tmpfs failed)");
        return;
    }
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = write_config(dir.path(), &state, port, &backend.url(), "");
    let mut daemon = start(&config);
    assert!(
        wait_until(Duration::from_secs(20), || pending(&config) >= 3),
        "no rows queued; log:\n{}",
        daemon.log()
    );
    let filler_dir = state.clone();
    let mut committed: HashSet<String> = peek_ids(&config).into_iter().collect();
    let filled = fill(&filler_dir);
    let failures_before = insert_failures(addr).unwrap_or(0);
    let seq_full = latest_seq(addr).unwrap_or(0);
    let full_started = Instant::now();
    let sampled = wait_until(Duration::from_secs(SAMPLES + 60), || {
        latest_seq(addr).is_some_and(|s| s >= seq_full + SAMPLES)
    });
    let full_for = full_started.elapsed();
    let failed_inserts = insert_failures(addr).unwrap_or(0) - failures_before;
    let alive_while_full = daemon.try_exit().is_none();

    std::fs::remove_file(filler_dir.join("filler")).unwrap();
    let pending_after_full = pending(&config);
    let resumed = wait_until(Duration::from_secs(30), || {
        pending(&config) > pending_after_full
    });
    committed.extend(peek_ids(&config));
    backend.up();
    let all_in = wait_until(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(500));
        pending(&config) == 0
    });
    let status = stop(daemon);
    let (lost, duplicates, _) = tally(&committed, &backend);
    run("umount", &[state.to_str().unwrap()]);
    println!(
        "faults: disk: tmpfs of 4 MiB filled ({} KiB of filler); {} samples in {:.0} s while full{}: \
         {failed_inserts} inserts failed, daemon alive: {alive_while_full}",
        filled / 1024,
        SAMPLES,
        full_for.as_secs_f64(),
        if sampled { "" } else { " (timed out)" },
    );
    println!(
        "faults: disk: after space returned inserts resumed: {resumed}; {} committed rows, {lost} lost, \
         {duplicates} duplicates{}; stop: {status}",
        committed.len(),
        if all_in { "" } else { " (drain timed out)" },
    );
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if selected("kill9") {
        kill9_rounds();
    }
    if selected("flood") {
        connection_flood();
    }
    if selected("disk") {
        full_disk();
    }
}
