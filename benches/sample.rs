//! One sample's cost: 1,000 samples back to back on this host, CPU time
//! (user + system, from getrusage, so the kernel's work producing /proc
//! files counts) and wall time per sample, with every collector and
//! top_processes = 5 and 0; the kernel floor (the same files read with
//! pread alone, no parsing); then each collector alone (1,000 calls each),
//! the resident set before and after 1,000 samples (no per-sample growth),
//! and the size of one snapshot in the model form the queue keeps and in
//! the JSON forms. For comparison it also times the process scan alone and
//! sysinfo's process refresh (which the scan does not use).
//!
//! Run: cargo bench --bench sample

#[path = "common/mod.rs"]
mod common;

use common::cpu_time;
use metricsd::collect::processes::ProcessScanner;
use metricsd::collect::{build, Collector, Roots};
use metricsd::config::Config;
use metricsd::procfs::End;
use metricsd::snapshot::Metrics;
use std::path::Path;
use std::time::{Duration, Instant};

const SAMPLES: u32 = 1000;
const WARM_UP: u32 = 20;

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

    // The kernel's share: the same /proc and /sys files read with pread
    // into one buffer (kept open, no parsing, no allocation), the same
    // statfs and adjtimex calls, and for top 5 the /proc listing plus every
    // user process's stat file. What the collectors cost beyond this is
    // ours; this part only a cheaper source could remove.
    for (top, label) in [(true, "top 5"), (false, "top 0")] {
        let mut floor = KernelFloor::open(top);
        let figures = measure(|| floor.read_all());
        report(
            &format!("kernel floor (the reads alone), {label}"),
            &figures,
            None,
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
    let figures = measure(|| {
        assert!(!snapshot.stream_json_text().is_empty());
    });
    report("stream form (JSON text for the clients)", &figures, None);
    let units = snapshot.metrics.units.as_ref().map_or(0, |u| u.len());
    println!(
        "snapshot size: model {} bytes (target <= 2048), stream JSON {} bytes, flat JSON {} bytes ({units} units)",
        model.len(),
        snapshot.stream_json_text().len(),
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

    // The daemon samples once a second, not back to back: after a second
    // asleep the caches are cold. The same collect and the same bare reads,
    // each after a 1 s sleep, show what that costs on this machine.
    let mut collector = Collector::new(Roots::default(), &defaults);
    let mut floor = KernelFloor::open(true);
    for _ in 0..WARM_UP {
        collector.collect();
        floor.read_all();
    }
    let collect = after_sleep(|| {
        collector.collect();
    });
    let bare = after_sleep(|| floor.read_all());
    println!(
        "after a 1 s sleep ({SLEPT_SAMPLES} each, median): Collector::collect top 5 cpu {:.1} us, kernel floor top 5 cpu {:.1} us",
        collect.as_secs_f64() * 1e6,
        bare.as_secs_f64() * 1e6,
    );
}

const SLEPT_SAMPLES: usize = 11;

/// Median CPU time of this thread for `f`, each call after a 1 s sleep.
fn after_sleep(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..SLEPT_SAMPLES)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            let start = common::thread_cpu_time();
            f();
            common::thread_cpu_time() - start
        })
        .collect();
    times.sort();
    times[SLEPT_SAMPLES / 2]
}

/// The system calls of one sample without the collectors around them.
struct KernelFloor {
    files: Vec<(std::fs::File, End)>,
    pid_stats: Vec<std::fs::File>,
    proc_dir: Option<metricsd::procfs::DirScan>,
    reader: metricsd::procfs::FileReader,
    buf: Vec<u8>,
}

impl KernelFloor {
    fn open(with_processes: bool) -> KernelFloor {
        use std::fs::File;
        // Each file stops where its collector's read stops (procfs::End).
        let whole = End::WholeInOneRead;
        let mut paths: Vec<(std::path::PathBuf, End)> = [
            ("stat", whole),
            ("loadavg", whole),
            ("meminfo", whole),
            ("vmstat", End::Eof),
            ("pressure/cpu", whole),
            ("pressure/memory", whole),
            ("pressure/io", whole),
            ("diskstats", End::Eof),
            ("net/dev", End::Eof),
            ("net/snmp", whole),
            ("net/netstat", whole),
            ("net/sockstat", whole),
            ("net/sockstat6", whole),
            ("sys/fs/file-nr", whole),
            ("uptime", whole),
        ]
        .iter()
        .map(|(f, end)| (Path::new("/proc").join(f), *end))
        .collect();
        if !with_processes {
            // Without the per-process reads, the thread count comes from
            // loadavg again (the process count still from listing /proc).
            paths.push((Path::new("/proc/loadavg").to_path_buf(), whole));
        }
        if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
            paths.extend(
                dir.filter_map(Result::ok)
                    .map(|e| (e.path().join("operstate"), whole)),
            );
        }
        let files = paths
            .iter()
            .filter_map(|(p, end)| Some((File::open(p).ok()?, *end)))
            .collect();
        let mut pid_stats = Vec::new();
        if with_processes {
            for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
                let stat = entry.path().join("stat");
                let Ok(bytes) = std::fs::read(&stat) else {
                    continue;
                };
                let user = metricsd::collect::processes::parse_pid_stat(&bytes)
                    .is_some_and(|(_, s)| !s.kernel_thread);
                if user {
                    if let Ok(f) = File::open(&stat) {
                        pid_stats.push(f);
                    }
                }
            }
        }
        KernelFloor {
            files,
            pid_stats,
            // Listed with top 0 as well: `process_count` counts its entries.
            proc_dir: Some(metricsd::procfs::DirScan::open(Path::new("/proc")).unwrap()),
            reader: metricsd::procfs::FileReader::new(),
            buf: vec![0; 1024],
        }
    }

    /// Reads every file as far as the collectors do: one read per
    /// process's stat.
    fn read_all(&mut self) {
        use std::os::unix::fs::FileExt;
        let mut total = 0usize;
        for (f, end) in &self.files {
            total += self.reader.read_from_start(f, *end).map_or(0, |b| b.len());
        }
        for f in &self.pid_stats {
            total += f.read_at(&mut self.buf, 0).unwrap_or(0);
        }
        if let Some(dir) = &mut self.proc_dir {
            dir.for_each(|name, _, _| total += name.len()).unwrap();
        }
        // SAFETY: statvfs and adjtimex only write into the zeroed structs.
        unsafe {
            let mut vfs: libc::statvfs = std::mem::zeroed();
            libc::statvfs(c"/".as_ptr(), &mut vfs);
            let mut timex: libc::timex = std::mem::zeroed();
            libc::adjtimex(&mut timex);
        }
        std::hint::black_box(total);
    }
}
