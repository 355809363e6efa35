//! Fleet simulation (SPEC §5.3 splay): N daemons (default 100, interval
//! 10 s, distinct node_ids, each its own state dir and stream port, all on
//! this machine and so sharing one machine-id, like cloned hosts) post to
//! one local receiver. Every daemon samples at the same aligned instant; the
//! receiver records when each post arrives. Printed for `splay = "auto"` and
//! `"0s"`: a histogram of arrivals in 100 ms bins of the interval, the
//! busiest bin against the mean over the splay window, and the span of all
//! arrivals of one round.
//!
//! Run: cargo bench --bench fleet   (FLEET_DAEMONS=N to change N)

#[path = "common/mod.rs"]
mod common;

use common::free_port;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INTERVAL_S: u64 = 10;
const ROUNDS: usize = 3;
const BIN_MS: u64 = 100;

/// (node_id, sample time ms, arrival time ms) of every post.
type Arrivals = Arc<Mutex<Vec<(String, u64, u64)>>>;

fn receiver() -> (String, Arrivals) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                let node = v["node_id"].as_str().unwrap_or("").to_string();
                let at = v["timestamp"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
                    .unwrap_or(0);
                seen.lock().unwrap().push((node, at, now));
            }
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    (url, arrivals)
}

fn run(n: usize, splay: &str, url: &str, arrivals: &Arrivals) -> Vec<u64> {
    arrivals.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = (0..n)
        .map(|i| {
            let d = dir.path().join(format!("d{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let config = d.join("metricsd.toml");
            std::fs::write(
                &config,
                format!(
                    "node_id = \"fleet-{i:03}\"\ninterval = \"{INTERVAL_S}s\"\nstate_dir = {:?}\n\
                     [stream]\nlisten = \"127.0.0.1:{}\"\n[backend]\nurl = {url:?}\nsplay = {splay:?}\n",
                    d.join("state").display().to_string(),
                    free_port()
                ),
            )
            .unwrap();
            Command::new(env!("CARGO_BIN_EXE_metricsd"))
                .arg("--config")
                .arg(&config)
                .arg("run")
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each daemon's first post follows its start, not the aligned tick:
    // count the posts of ROUNDS aligned samples after every daemon is up.
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let first_tick = (started / 1000 / INTERVAL_S + 2) * INTERVAL_S * 1000;
    let last_tick = first_tick + (ROUNDS as u64 - 1) * INTERVAL_S * 1000;
    let deadline = Instant::now() + Duration::from_secs(INTERVAL_S * (ROUNDS as u64 + 6));
    loop {
        let done = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at, _)| *at >= first_tick && *at <= last_tick + 999)
            .count();
        if done >= n * ROUNDS || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in &children {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at, _)| *at >= first_tick && *at <= last_tick + 999)
        .map(|(_, at, arrived)| {
            // Offset of the arrival from its round's aligned tick.
            let tick = at - at % (INTERVAL_S * 1000);
            arrived.saturating_sub(tick)
        })
        .collect()
}

fn report(n: usize, splay: &str, offsets: &[u64]) -> (u64, f64) {
    let bins = (INTERVAL_S * 1000 / BIN_MS) as usize;
    let mut hist = vec![0u64; bins];
    for o in offsets {
        hist[((o / BIN_MS) as usize).min(bins - 1)] += 1;
    }
    let rounds = ROUNDS as f64;
    // The window the splay spreads over: min(interval/2, 30 s).
    let window_bins = (INTERVAL_S * 1000 / 2).min(30_000) / BIN_MS;
    let busiest = *hist.iter().max().unwrap_or(&0);
    let mean = offsets.len() as f64 / window_bins as f64;
    let (lo, hi) = (
        offsets.iter().min().copied().unwrap_or(0),
        offsets.iter().max().copied().unwrap_or(0),
    );
    println!(
        "fleet: {n} daemons, splay {splay:?}: {} posts over {ROUNDS} rounds, arrivals {lo}..{hi} ms after the tick",
        offsets.len()
    );
    println!(
        "  busiest 100 ms bin: {busiest} posts ({:.1} per round); mean over the {} ms window: {mean:.2} ({:.2} per round); ratio {:.2}",
        busiest as f64 / rounds,
        window_bins * BIN_MS,
        mean / rounds,
        busiest as f64 / mean
    );
    println!("  histogram (posts per 100 ms bin, one line per second of the interval):");
    for (s, chunk) in hist.chunks(10).enumerate() {
        if chunk.iter().any(|&c| c > 0) {
            let line: Vec<String> = chunk.iter().map(|c| format!("{c:>3}")).collect();
            println!("   {s:>2}s |{}", line.join(""));
        }
    }
    (busiest, mean)
}

fn main() {
    let n: usize = std::env::var("FLEET_DAEMONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (url, arrivals) = receiver();
    let auto = run(n, "auto", &url, &arrivals);
    let (busiest, mean) = report(n, "auto", &auto);
    let zero = run(n, "0s", &url, &arrivals);
    report(n, "0s", &zero);
    let span = zero.iter().max().unwrap_or(&0) - zero.iter().min().unwrap_or(&0);
    println!(
        "fleet: auto busiest/mean = {:.2} (target ≤ 3); 0s: all {} posts of a round within {span} ms of each other across rounds (expected ~100 ms)",
        busiest as f64 / mean,
        zero.len()
    );
}
