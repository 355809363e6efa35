//! The live page's cost: time to first byte and bytes on the wire for `GET /`
//! and for `GET /api/history` with 24 h of history at 60 s (1,440 rows), and
//! the daemon's anonymous memory (RssAnon, /proc/<pid>/smaps_rollup) without
//! a page, with one page open in headless Chromium, and after it closed.
//! Targets (issue 11): history for 1,440 rows ≤ 20 ms; document + history
//! ≤ 300 KiB with gzip; one open page within 0.5 MiB of none.
//!
//! cargo bench --bench page

#[path = "../tests/it/common/browser.rs"]
mod browser;

#[path = "common/mod.rs"]
mod common;

use metricsd::queue::Queue;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
// browser.rs reaches these as `super::`.
pub use common::{free_port, wait_for, wait_until};

const ROWS: u64 = 1440;
const ROUNDS: usize = 30;
const HISTORY_TARGET_MS: f64 = 20.0;
const WIRE_TARGET_KIB: f64 = 300.0;
const MEMORY_TARGET_KIB: i64 = 512;

/// A day of flat rows at 60 s, ending now, as the sampler would have queued them.
fn fill_history(db: &std::path::Path) {
    let mut queue = Queue::open(db).expect("open the queue");
    queue
        .set_history(Duration::from_secs(24 * 3600))
        .expect("set the history");
    let now = SystemTime::now();
    for i in 0..ROWS {
        let at = now - Duration::from_secs((ROWS - 1 - i) * 60);
        let created_at = humantime::format_rfc3339_millis(at).to_string();
        let event_id = uuid::Uuid::now_v7().to_string();
        let flat = serde_json::json!({
            "event_id": event_id, "node_id": "web-frontend-07.prod.example.internal",
            "machine_id": "6f1c2a4e-9b3d-4c1e-8f7a-2d5e6b7c8a90", "timestamp": created_at,
            "cpu_percent": 12.34 + (i % 50) as f64, "memory_percent": 63.21,
            "memory_used_mb": 10_342 + i % 100, "memory_total_mb": 16_012,
            "disk_percent": 71.05, "disk_used_gb": 338.61, "disk_total_gb": 476.94,
            "network_rx_bytes": 98_765_432_101u64 + i * 1_000_003,
            "network_tx_bytes": 12_345_678_901u64 + i * 250_007,
            "network_rx_rate_mbps": 123.45 + (i % 7) as f64, "network_tx_rate_mbps": 67.89,
            "uptime_seconds": 8_640_000 + i * 60, "process_count": 412 + i % 9,
            "active_connections": 1_337, "load_avg_1m": 1.25, "load_avg_5m": 0.98,
            "load_avg_15m": 0.87,
        })
        .to_string();
        queue
            .insert(&event_id, &created_at, &flat, b"", &[], 100_000)
            .expect("insert");
    }
}

struct Fetch {
    first_byte: Duration,
    total: Duration,
    /// Bytes after the head: what went over the wire for the body.
    body: usize,
}

fn fetch(addr: SocketAddr, target: &str, gzip: bool) -> Fetch {
    let encoding = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{encoding}\r\n");
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).unwrap();
    let first_byte = started.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let total = started.elapsed();
    let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        rest.starts_with(b"TTP/1.1 200"),
        "{target}: {:?}",
        String::from_utf8_lossy(&rest[..40])
    );
    Fetch {
        first_byte,
        total,
        body: rest.len() - head_end,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and worst of `ROUNDS` fetches.
fn measure(addr: SocketAddr, target: &str, gzip: bool) -> (f64, f64, f64, usize) {
    let mut runs: Vec<Fetch> = (0..ROUNDS).map(|_| fetch(addr, target, gzip)).collect();
    runs.sort_by_key(|f| f.total);
    let median = &runs[ROUNDS / 2];
    let worst_ttfb = runs.iter().map(|f| f.first_byte).max().unwrap();
    (
        ms(median.first_byte),
        ms(median.total),
        ms(worst_ttfb),
        median.body,
    )
}

/// CPU time the daemon used so far (all threads), in ms: the cost of a
/// request without the waiting a busy machine adds to wall-clock figures.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1000.0 / hz
}

/// Daemon CPU per request over `rounds` requests.
fn cpu_per_request(pid: u32, addr: SocketAddr, target: &str, gzip: bool, rounds: usize) -> f64 {
    let before = cpu_ms(pid);
    for _ in 0..rounds {
        fetch(addr, target, gzip);
    }
    (cpu_ms(pid) - before) / rounds as f64
}

fn rss_anon_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("Anonymous: in smaps_rollup")
}

/// RssAnon settles within a sample or two; take the largest of a few readings.
fn settled_anon(pid: u32, over: Duration) -> i64 {
    let deadline = Instant::now() + over;
    let mut most = 0;
    while Instant::now() < deadline {
        most = most.max(rss_anon_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    most
}

fn start_daemon(dir: &std::path::Path, port: u16) -> Child {
    let config = dir.join("metricsd.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nstate_dir = {:?}\n[stream]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_metricsd"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("metricsd-page-bench")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    fill_history(&dir.path().join("state/queue.db"));
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut daemon = start_daemon(dir.path(), port);
    let pid = daemon.id();
    wait_for("the daemon to listen", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    std::thread::sleep(Duration::from_secs(3));

    // Memory first, before any request to the page's routes: the daemon's
    // own warm-up (its first samples grow its buffers), a quiet baseline,
    // then one real page, then after it closed (the blocking pool's idle
    // threads exit after 10 s).
    let started = rss_anon_kib(pid);
    std::thread::sleep(Duration::from_secs(20));
    let without = settled_anon(pid, Duration::from_secs(5));
    println!(
        "page: daemon RssAnon 3 s after start {started:>6} KiB, 25 s after {without} KiB (its own warm-up)"
    );
    let page = browser::Browser::start();
    page.goto(&format!("http://{addr}/"));
    wait_for("the page to go live", Duration::from_secs(30), || {
        page.eval(
            "return document.querySelector('#state').textContent",
            serde_json::json!([]),
        ) == "live"
    });
    let with_page = settled_anon(pid, Duration::from_secs(8));
    let charted = page.eval(
        "return Number(document.querySelector('#chart-load path').dataset.points)",
        serde_json::json!([]),
    );
    drop(page);
    std::thread::sleep(Duration::from_secs(12));
    let after = settled_anon(pid, Duration::from_secs(5));
    let delta = with_page - without;
    println!("page: daemon RssAnon without a page  {without:>6} KiB");
    println!(
        "page: daemon RssAnon with one page   {with_page:>6} KiB ({delta:+} KiB; target within {MEMORY_TARGET_KIB} KiB) {}; the page charted {charted} points",
        if delta.abs() <= MEMORY_TARGET_KIB { "ok" } else { "OVER" }
    );
    println!("page: daemon RssAnon after it closed {after:>6} KiB");

    let history = format!("/api/history?limit={ROWS}");
    let rows: Vec<Value> = {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {history} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
    };
    assert_eq!(rows.len() as u64, ROWS, "the history holds a day");

    let doc_gz = measure(addr, "/", true);
    let doc = measure(addr, "/", false);
    let hist_gz = measure(addr, &history, true);
    let hist = measure(addr, &history, false);
    let health = measure(addr, "/health", false);
    let print = |what: &str, (ttfb, total, worst, body): (f64, f64, f64, usize)| {
        println!(
            "page: {what:<34} first byte {ttfb:>6.2} ms (worst {worst:>6.2}), complete {total:>6.2} ms, body {:>7.1} KiB",
            body as f64 / 1024.0
        );
    };
    print("GET / (gzip)", doc_gz);
    print("GET / (identity)", doc);
    print(&format!("GET /api/history {ROWS} rows (gzip)"), hist_gz);
    print(&format!("GET /api/history {ROWS} rows (identity)"), hist);
    print("GET /health", health);
    let cpu_gz = cpu_per_request(pid, addr, &history, true, 100);
    let cpu_plain = cpu_per_request(pid, addr, &history, false, 100);
    println!(
        "page: daemon CPU per /api/history {ROWS} rows: {cpu_gz:.2} ms gzip, {cpu_plain:.2} ms identity (load average {})",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?")
    );
    let wire_kib = (doc_gz.3 + hist_gz.3 + health.3) as f64 / 1024.0;
    println!(
        "page: whole page on the wire (gzip): {wire_kib:.1} KiB (target ≤ {WIRE_TARGET_KIB} KiB) {}",
        if wire_kib <= WIRE_TARGET_KIB { "ok" } else { "OVER" }
    );
    let worst_history = hist_gz.1.max(hist.1);
    println!(
        "page: /api/history {ROWS} rows, median complete {worst_history:.2} ms (target ≤ {HISTORY_TARGET_MS} ms) {}",
        if worst_history <= HISTORY_TARGET_MS { "ok" } else { "OVER" }
    );

    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
