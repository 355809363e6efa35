//! Whole daemon at steady state: default configuration (but a 1 s interval,
//! so that 30 samples take 30 s) plus a backend and 10 stream clients.
//! Prints start-to-READY time, memory as the kernel counts it (RSS, PSS and
//! anonymous memory from /proc/<pid>/smaps_rollup), the stop time, and
//! the daemon's CPU time per sample (the run time of its threads from
//! /proc/<pid>/task/*/schedstat over at least 30 samples, queue insert,
//! delivery and stream included, per thread and with its wake-ups) without
//! and then with the stream clients, where a sample's time goes by the
//! daemon's own /metrics, and what one wake-up costs here.
//!
//! cargo bench --bench daemon

mod common;

use common::{free_port, wait_for, wait_until};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 10;
const SAMPLES: u64 = 30;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One field (KiB) of /proc/<pid>/smaps_rollup: the kernel's sums over all
/// mappings, with PSS sharing each page among the processes that map it.
fn rollup_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Resident KiB per mapped file (or anonymous), largest first.
fn print_largest_mappings(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib.trim().trim_end_matches(" kB").parse().unwrap_or(0);
            *by_name.entry(name.clone()).or_default() += kib;
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            name = line
                .split_whitespace()
                .nth(5)
                .unwrap_or("[anonymous]")
                .to_string();
        }
    }
    let mut rows: Vec<_> = by_name.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    for (name, kib) in rows.iter().take(6) {
        println!("daemon:   {kib:>6} KiB  {name}");
    }
}

/// Run time and voluntary context switches of each of the daemon's threads
/// (by name), from /proc/<pid>/task/*/schedstat (nanoseconds, exact, unlike
/// utime+stime, which the kernel counts in 10 ms ticks).
fn thread_cpu(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.filter_map(Result::ok) {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let ns: u64 = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let switches: u64 = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let entry = threads
            .entry(read("comm").trim().to_string())
            .or_insert((0, 0));
        entry.0 += ns;
        entry.1 += switches;
    }
    threads
}

/// CPU time one sleep-and-wake of a thread costs on this machine (the
/// schedstat run time of a thread that only sleeps 50 ms, 40 times): on a
/// virtual machine each wake-up is charged tens of microseconds.
fn wake_up_cost() -> Duration {
    std::thread::spawn(|| {
        let run_ns = || -> u64 {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let before = run_ns();
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(50));
        }
        Duration::from_nanos((run_ns() - before) / 40)
    })
    .join()
    .unwrap()
}

/// The daemon's /metrics page (empty if it cannot be read).
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The values of the series whose name (with its labels) starts with `prefix`.
fn series(text: &str, prefix: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect()
}

/// One value from the daemon's /metrics.
fn scrape(port: u16, name: &str) -> u64 {
    value(&metrics_text(port), name) as u64
}

/// Where a sample's time goes inside the running daemon, from its own
/// /metrics over `samples` samples (after the CPU windows, whose two
/// scrapes each this would disturb): the collectors' total, and the whole
/// sample (collectors, encoding, the fsync'd insert). Wall time; the
/// collectors do not block, so theirs is CPU time too.
fn sample_breakdown(port: u16, samples: u64) -> (Duration, Duration) {
    let (mut collectors, mut whole, mut n) = (0.0, 0.0, 0u32);
    let mut last = scrape(port, "metricsd_samples_total");
    for _ in 0..samples {
        // The next sample: the page's sample count has moved.
        let mut text = String::new();
        let next = wait_until(Duration::from_secs(5), || {
            text = metrics_text(port);
            value(&text, "metricsd_samples_total") as u64 != last
        });
        if !next {
            break;
        }
        last = value(&text, "metricsd_samples_total") as u64;
        collectors += series(&text, "metricsd_collector_duration_seconds{")
            .iter()
            .sum::<f64>();
        whole += value(&text, "metricsd_sample_duration_seconds");
        n += 1;
    }
    let n = f64::from(n.max(1));
    (
        Duration::from_secs_f64(collectors / n),
        Duration::from_secs_f64(whole / n),
    )
}

/// The value of the unlabelled series `name` in a /metrics page, or 0.
fn value(text: &str, name: &str) -> f64 {
    series(text, &format!("{name} "))
        .first()
        .copied()
        .unwrap_or(0.0)
}

/// The daemon's CPU time per sample over at least `samples` samples at the
/// 1 s interval, in all and per thread, and its wake-ups per sample. Only two
/// scrapes per window, so the measurement adds next to nothing.
struct PerSample {
    cpu: Duration,
    samples: u64,
    wake_ups: f64,
    threads: Vec<(String, Duration)>,
}

fn cpu_per_sample(pid: u32, port: u16, samples: u64) -> PerSample {
    let (before, seq0) = (thread_cpu(pid), scrape(port, "metricsd_samples_total"));
    std::thread::sleep(Duration::from_secs(samples) + Duration::from_millis(500));
    let (after, seq1) = (thread_cpu(pid), scrape(port, "metricsd_samples_total"));
    let n = seq1.saturating_sub(seq0).max(1);
    let mut threads = Vec::new();
    let (mut ns, mut switches) = (0, 0);
    for (name, (ns1, sw1)) in &after {
        let (ns0, sw0) = before.get(name).copied().unwrap_or_default();
        ns += ns1 - ns0;
        switches += sw1 - sw0;
        threads.push((name.clone(), Duration::from_nanos((ns1 - ns0) / n)));
    }
    PerSample {
        cpu: Duration::from_nanos(ns / n),
        samples: n,
        wake_ups: switches as f64 / n as f64,
        threads,
    }
}

fn print_per_sample(label: &str, m: &PerSample) {
    let threads: Vec<String> = m
        .threads
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(name, d)| format!("{name} {:.2}", d.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "daemon: CPU per sample (1 s interval), {label:<10} {:>6.2} ms over {} samples, {:.1} wake-ups; by thread (ms): {}",
        m.cpu.as_secs_f64() * 1000.0,
        m.samples,
        m.wake_ups,
        threads.join(", ")
    );
}

/// A backend on 127.0.0.1 that accepts every POST at once.
fn start_backend() -> (String, Arc<AtomicU64>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", server.server_addr().to_ip().unwrap());
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            let _ = request.as_reader().read_to_end(&mut body);
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    (url, received)
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("metricsd-bench")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let (url, received) = start_backend();
    let port = free_port();
    let config = dir.path().join("metricsd.toml");
    // DAEMON_BENCH_SINKS=3: remote write and OTLP as well, to the same
    // accepting receiver (the whole daemon with the three sinks).
    let three = std::env::var("DAEMON_BENCH_SINKS").is_ok_and(|v| v == "3");
    let more = if three {
        format!("[remote_write]\nurl = {url:?}\n[otlp]\nurl = {url:?}\n")
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nstate_dir = {:?}\n[stream]\nlisten = \"127.0.0.1:{port}\"\n[backend]\nurl = {url:?}\n{more}",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    if three {
        println!("daemon: three sinks (backend, remote_write, otlp)");
    }
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricsd"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf).expect("READY=1 within 10 s");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    let to_ready = started.elapsed();
    let rss_at_ready = rss_kib(pid, "VmRSS:");

    // Past the first samples (start-up work), then one window without clients.
    wait_for("two samples", Duration::from_secs(10), || {
        scrape(port, "metricsd_samples_total") >= 2
    });
    let alone = cpu_per_sample(pid, port, SAMPLES);
    let (collectors, whole_sample) = sample_breakdown(port, 10);

    let frames = Arc::new(AtomicU64::new(0));
    let frames_in_clients = frames.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..CLIENTS {
                let frames = frames_in_clients.clone();
                tasks.push(tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .unwrap();
                    let (mut ws, _) =
                        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp)
                            .await
                            .unwrap();
                    while let Some(Ok(_)) = ws.next().await {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });

    wait_for("the stream clients", Duration::from_secs(10), || {
        scrape(port, "metricsd_stream_clients") >= CLIENTS as u64
    });
    let with_clients = cpu_per_sample(pid, port, SAMPLES);

    wait_until(Duration::from_secs(SAMPLES + 20), || {
        received.load(Ordering::Relaxed) >= SAMPLES
    });
    let rss = rollup_kib(pid, "Rss:");
    let pss = rollup_kib(pid, "Pss:");
    let pss_anon = rollup_kib(pid, "Pss_Anon:");
    let anon = rss_kib(pid, "RssAnon:");
    let file = rss_kib(pid, "RssFile:");
    print_largest_mappings(pid);
    let hwm = rss_kib(pid, "VmHWM:");
    let stop_sent = Instant::now();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let stop_took = stop_sent.elapsed();

    println!(
        "daemon: start to READY=1            {:>8.1} ms",
        to_ready.as_secs_f64() * 1000.0
    );
    println!(
        "daemon: RSS at READY                {:>8} KiB",
        rss_at_ready
    );
    println!(
        "daemon: after {} samples, {CLIENTS} clients, backend:",
        received.load(Ordering::Relaxed)
    );
    println!(
        "daemon:   RSS     {rss:>6} KiB ({:.2} MiB), peak {hwm} KiB",
        rss as f64 / 1024.0
    );
    println!(
        "daemon:   PSS     {pss:>6} KiB ({:.2} MiB), of which anonymous {pss_anon} KiB",
        pss as f64 / 1024.0
    );
    println!(
        "daemon:   RssAnon {anon:>6} KiB ({:.2} MiB; target <= 1.50 MiB), RssFile {file} KiB",
        anon as f64 / 1024.0
    );
    print_per_sample("no clients", &alone);
    println!(
        "daemon: inside a sample (wall, from its /metrics, mean of 10): collectors {:.0} us, the whole sample (collectors, encoding, fsync'd insert) {:.0} us",
        collectors.as_secs_f64() * 1e6,
        whole_sample.as_secs_f64() * 1e6
    );
    print_per_sample(&format!("{CLIENTS} clients"), &with_clients);
    println!(
        "daemon: one thread wake-up on this machine costs {:.1} us CPU",
        wake_up_cost().as_secs_f64() * 1e6
    );
    println!(
        "daemon: frames received by clients   {:>8}",
        frames.load(Ordering::Relaxed)
    );
    println!(
        "daemon: exit status after SIGTERM    {status}, in {:.0} ms",
        stop_took.as_secs_f64() * 1000.0
    );
}
