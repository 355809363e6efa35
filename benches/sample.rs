//! One sample's cost: 1,000 samples back to back on this host, CPU time
//! (user + system, from getrusage, so the kernel's work producing /proc
//! files counts) and wall time per sample, with every collector and
//! top_processes = 5 and 0; then each collector alone (1,000 calls each),
//! the resident set before and after 1,000 samples (no per-sample growth),
//! and the size of one snapshot in the model form the queue keeps and in
//! the JSON forms. For comparison it also times the process scan alone and
//! sysinfo's process refresh (which the scan does not use).
//!
//! Run: cargo bench --bench sample

use metricsd::collect::processes::ProcessScanner;
use metricsd::collect::{build, Collector, Roots};
use metricsd::config::Config;
use metricsd::snapshot::Metrics;
use std::path::Path;
use std::time::{Duration, Instant};

const SAMPLES: u32 = 1000;
const WARM_UP: u32 = 20;

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Figures {
    cpu_per_call: Duration,
    wall_per_call: Duration,
}

fn measure(mut f: impl FnMut()) -> Figures {
    for _ in 0..WARM_UP {
        f();
    }
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..SAMPLES {
        f();
    }
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    Figures {
        cpu_per_call: cpu / SAMPLES,
        wall_per_call: wall / SAMPLES,
    }
}

fn report(label: &str, figures: &Figures, target: Option<Duration>) {
    let verdict = match target {
        Some(t) if figures.cpu_per_call <= t => format!("  (target <= {t:?}: met)"),
        Some(t) => format!("  (target <= {t:?}: NOT MET)"),
        None => String::new(),
    };
    println!(
        "{label:<44} cpu {:>8.1} us/sample   wall {:>8.1} us/sample{verdict}",
        figures.cpu_per_call.as_secs_f64() * 1e6,
        figures.wall_per_call.as_secs_f64() * 1e6,
    );
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("{SAMPLES} samples back to back; host: {processes} processes, {cores} CPUs");

    let defaults = Config::default().collect;
    for (top, target_us) in [(5usize, 200u64), (0, 120)] {
        let config = metricsd::config::CollectConfig {
            top_processes: top,
            ..defaults.clone()
        };
        let mut collector = Collector::new(Roots::default(), &config);
        let mut checksum = 0u64;
        let figures = measure(|| {
            let sample = collector.collect();
            let count = sample.metrics.processes.map_or(0, |p| p.count);
            checksum = checksum.wrapping_add(count);
        });
        assert!(checksum > 0, "the samples saw no processes");
        assert!(
            collector.failed_collectors().is_empty(),
            "collectors failed: {:?}",
            collector.failed_collectors()
        );
        report(
            &format!("Collector::collect, top_processes = {top}"),
            &figures,
            Some(Duration::from_micros(target_us)),
        );
    }

    // Each collector alone, in the order the loop runs them.
    println!("per collector (top_processes = 5):");
    let mut metrics = Metrics::default();
    for mut collector in build(&Roots::default(), &defaults) {
        let name = collector.name();
        let figures = measure(|| {
            // Memory first would give the process scan its MemTotal; the
            // cost is the same without it.
            let _ = collector.collect(Instant::now(), &mut metrics);
        });
        report(&format!("  {name}"), &figures, None);
    }

    // Resident set over 1,000 samples, after a warm-up (buffers grown,
    // files opened): a per-sample allocation that is never given back
    // would show here.
    let mut collector = Collector::new(Roots::default(), &defaults);
    for _ in 0..WARM_UP {
        collector.collect();
    }
    let before = rss_kib();
    for _ in 0..SAMPLES {
        collector.collect();
    }
    let after = rss_kib();
    println!(
        "resident set: {before} KiB before {SAMPLES} samples, {after} KiB after ({:+} KiB)",
        after as i64 - before as i64
    );

    // One snapshot's size in each form.
    let snapshot = metricsd::sampler::take_snapshot(
        &mut collector,
        "bench-node",
        "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4",
        1,
        Duration::from_secs(60),
    );
    let model = snapshot.to_model_bytes();
    let figures = measure(|| {
        assert!(!snapshot.to_model_bytes().is_empty());
    });
    report("to_model_bytes", &figures, None);
    let units = snapshot.metrics.units.as_ref().map_or(0, |u| u.len());
    println!(
        "snapshot size: model {} bytes (target <= 2048), stream JSON {} bytes, flat JSON {} bytes ({units} units)",
        model.len(),
        snapshot.stream_json().to_string().len(),
        snapshot.flat_json().to_string().len(),
    );

    // Cold: a new Collector each time, so nothing is kept open yet (the
    // cost of the first sample, and an upper bound for hosts whose processes
    // all change between samples). Includes Collector::new's baseline reads.
    let config = Config::default().collect;
    let figures = measure(|| {
        let mut collector = Collector::new(Roots::default(), &config);
        let sample = collector.collect();
        assert!(sample.metrics.processes.is_some_and(|p| p.count > 0));
    });
    report(
        "cold: Collector::new + first collect, top 5",
        &figures,
        None,
    );

    let total = Config::default().collect.top_processes;
    let mut scanner = ProcessScanner::new(Path::new("/proc"));
    let figures = measure(|| {
        let scan = scanner.scan(total).expect("scan /proc");
        assert!(scan.count > 0);
    });
    report(
        "process scan alone (/proc/<pid>/stat), top 5",
        &figures,
        None,
    );

    // sysinfo's equivalent: one System kept across refreshes, memory only.
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
    let mut system = System::new().expect("sysinfo System");
    let figures = measure(|| {
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        assert!(!system.processes().is_empty());
    });
    report("sysinfo refresh_processes (memory only)", &figures, None);
}
