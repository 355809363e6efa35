//! The collectors' parsers and rate arithmetic on the fixture trees in
//! tests/fixtures (see its README for what changes between state1 and state2),
//! and whole `Collector` runs over copies of those trees.

use metricsd::collect::cpu::{self, StatSample};
use metricsd::collect::disk::{self, DiskCounters};
use metricsd::collect::network::{self, IfCounters};
use metricsd::collect::{load, memory, system, Collector, Filters, Roots};
use metricsd::config::{CollectConfig, Config};
use metricsd::snapshot::{Metrics, Snapshot};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn default_collect() -> CollectConfig {
    Config::default().collect
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

const MEM_TOTAL: u64 = 16318928 * 1024;

fn stat(rel: &str) -> StatSample {
    let mut s = StatSample::default();
    cpu::parse_stat(&read(rel), &mut s).unwrap();
    s
}

fn net_dev(rel: &str) -> Vec<IfCounters> {
    let mut v = Vec::new();
    network::parse_net_dev(&read(rel), &mut v).unwrap();
    v
}

/// Whole disks as the collector decides them: not virtual, and in <sys>/block.
fn diskstats(rel: &str) -> Vec<DiskCounters> {
    let sys_block = fixture("state1/sys/block");
    let mut v = Vec::new();
    disk::parse_diskstats(
        &read(rel),
        |name| !disk::is_virtual_device(name) && sys_block.join(name).exists(),
        &mut v,
    )
    .unwrap();
    v
}

fn snapshot(metrics: Metrics) -> Snapshot {
    Snapshot {
        timestamp: SystemTime::UNIX_EPOCH,
        node_id: "n".into(),
        machine_id: "m".into(),
        event_id: uuid::Uuid::nil(),
        seq: 1,
        interval_secs: 1,
        metrics,
    }
}

// ---------------------------------------------------------------- /proc/stat

#[test]
fn stat_gives_total_cores_and_procs() {
    let s = stat("state1/proc/stat");
    assert_eq!(s.total.0, [1000, 0, 500, 8000, 500, 0, 0, 0]);
    assert_eq!(s.cores.len(), 2);
    assert_eq!(s.cores[0].0, 0);
    assert_eq!(s.cores[1].0, 1);
    assert_eq!(s.cores[1].1 .0, [500, 0, 250, 4000, 250, 0, 0, 0]);
    assert_eq!((s.procs_running, s.procs_blocked), (3, 1));
}

#[test]
fn cpu_usage_between_states() {
    let (total, per_core) = cpu::usage(&stat("state1/proc/stat"), &stat("state2/proc/stat"));
    assert_eq!(total, 20.0);
    // cpu1's iowait went backwards: 0 %, not negative.
    assert_eq!(per_core, vec![40.0, 0.0]);
}

// ---------------------------------------------------------- meminfo, loadavg

#[test]
fn meminfo_in_bytes_and_stream_units() {
    let m = memory::parse_meminfo(&read("state1/proc/meminfo")).unwrap();
    assert_eq!(m.total_bytes, MEM_TOTAL);
    assert_eq!(m.available_bytes, 8159464 * 1024);
    assert_eq!(m.swap_total_bytes, 2097148 * 1024);
    assert_eq!(m.swap_free_bytes, 1048574 * 1024);
    let json = snapshot(Metrics {
        memory: m,
        ..Metrics::default()
    })
    .stream_json();
    let mem = &json["metrics"]["memory"];
    assert_eq!(mem["memory_usage_percent"], 50.0);
    assert_eq!(mem["swap_usage_percent"], 50.0);
    assert_eq!(mem["memory_total_gb"], 15.56); // 16318928 KiB = 15.563 GiB
}

#[test]
fn loadavg_and_uptime_and_boot_id() {
    assert_eq!(
        load::parse_loadavg(&read("state1/proc/loadavg")).unwrap(),
        (0.52, 1.25, 2.0)
    );
    assert_eq!(
        system::parse_uptime(&read("state1/proc/uptime")).unwrap(),
        12345
    );
    assert_eq!(
        system::parse_boot_id(&read("state1/proc/sys/kernel/random/boot_id")).unwrap(),
        "4a3e7f4c-9d1b-4b8e-9c55-0f5e2b6a7d10"
    );
}

// ------------------------------------------------------------------- network

#[test]
fn net_dev_counters() {
    let v = net_dev("state1/proc/net/dev");
    let names: Vec<&str> = v.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0", "eth1", "veth1a2b"]);
    let eth0 = &v[1];
    assert_eq!(
        (
            eth0.rx_bytes,
            eth0.rx_packets,
            eth0.rx_errors,
            eth0.rx_dropped
        ),
        (1_000_000_000, 800_000, 2, 3)
    );
    assert_eq!(
        (
            eth0.tx_bytes,
            eth0.tx_packets,
            eth0.tx_errors,
            eth0.tx_dropped
        ),
        (500_000_000, 400_000, 4, 5)
    );
}

/// The system this replaces divided network deltas by the wrong time: a
/// known byte delta over a known elapsed time must give the exact rate.
#[test]
fn network_rate_is_exact_for_a_known_delta_and_elapsed_time() {
    let (before, after) = (
        net_dev("state1/proc/net/dev"),
        net_dev("state2/proc/net/dev"),
    );
    let filters = Filters::new(&default_collect());
    let m = network::interface_metrics(&before, &after, Duration::from_secs(1), &filters);
    let names: Vec<&str> = m.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"], "lo and veth* are excluded");
    assert_eq!(m[0].rx_bytes_per_sec, 31_457_280.0);
    assert_eq!(m[0].tx_bytes_per_sec, 10_485_760.0);
    assert_eq!(m[0].rx_dropped, 7);
    // eth1 was reset: its counters went backwards, so 0 (not negative, not huge).
    assert_eq!((m[1].rx_bytes_per_sec, m[1].tx_bytes_per_sec), (0.0, 0.0));
    assert_eq!(m[1].rx_bytes, 1000);

    let json = snapshot(Metrics {
        network: metricsd::snapshot::NetworkMetrics {
            interfaces: m,
            active_connections: 0,
        },
        ..Metrics::default()
    });
    let stream = json.stream_json();
    assert_eq!(stream["metrics"]["network"]["bytes_recv_mb_per_sec"], 30.0);
    assert_eq!(stream["metrics"]["network"]["bytes_sent_mb_per_sec"], 10.0);
    assert_eq!(
        stream["metrics"]["network"]["interfaces"]["eth0"]["rx_bytes_per_sec"],
        31_457_280.0
    );
    let flat = json.flat_json();
    assert_eq!(flat["network_rx_rate_mbps"], 251.66); // 31457280 * 8 / 1e6
    assert_eq!(flat["network_rx_bytes"], 1_031_457_280u64 + 1000);

    // The same delta over 2.5 s.
    let m = network::interface_metrics(&before, &after, Duration::from_millis(2500), &filters);
    assert_eq!(m[0].rx_bytes_per_sec, 12_582_912.0);
}

#[test]
fn curr_estab_from_snmp() {
    assert_eq!(
        network::parse_curr_estab(&read("state1/proc/net/snmp")).unwrap(),
        42
    );
    assert_eq!(
        network::parse_curr_estab(&read("state2/proc/net/snmp")).unwrap(),
        40
    );
}

// ---------------------------------------------------------------------- disk

#[test]
fn diskstats_keeps_whole_physical_disks_only() {
    let v = diskstats("state1/proc/diskstats");
    let names: Vec<&str> = v.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["sda", "nvme0n1", "sr0"]);
    assert_eq!((v[0].read_sectors, v[0].write_sectors), (100_000, 200_000));
}

#[test]
fn disk_io_rate_in_bytes_with_a_reset_device() {
    let (before, after) = (
        diskstats("state1/proc/diskstats"),
        diskstats("state2/proc/diskstats"),
    );
    // sda: +20480 and +4096 sectors of 512 bytes; nvme0n1 reset → 0.
    let (read, write) = disk::io_rates(&before, &after, Duration::from_secs(1));
    assert_eq!(read, 10_485_760.0);
    assert_eq!(write, 2_097_152.0);
    let (read, write) = disk::io_rates(&before, &after, Duration::from_secs(4));
    assert_eq!((read, write), (2_621_440.0, 524_288.0));
}

#[test]
fn mountinfo_decodes_escapes_and_reads_devices() {
    let entries = disk::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    assert_eq!(entries.len(), 19, "the malformed line is skipped");
    let spaced = entries.iter().find(|e| e.device == (8, 3)).expect("8:3");
    assert_eq!(spaced.mount_point, "/mnt/my disk");
    assert_eq!(spaced.path.as_bytes(), b"/mnt/my disk");
    assert_eq!(spaced.fs_type, "xfs");
    let tab = entries.iter().find(|e| e.device == (8, 4)).expect("8:4");
    assert_eq!(tab.mount_point, "/tmp\ttab");
    let nfs = entries.iter().find(|e| e.device == (0, 55)).expect("0:55");
    assert_eq!(
        (nfs.mount_point.as_str(), nfs.fs_type.as_str()),
        ("/data", "nfs4")
    );
}

#[test]
fn mount_selection_excludes_dedupes_and_drops_hidden_mounts() {
    let entries = disk::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    let selected = disk::select_mounts(entries, &Filters::new(&default_collect()));
    let got: Vec<(&str, (u32, u32))> = selected
        .iter()
        .map(|e| (e.mount_point.as_str(), e.device))
        .collect();
    assert_eq!(
        got,
        [
            ("/", (8, 1)),              // /var/lib/c/root is a bind mount of it
            ("/home", (259, 1)),        // /srv/alice is a bind mount of it
            ("/mnt/my disk", (8, 3)),   // \040 decoded
            ("/data", (0, 55)),         // nfs4 is not excluded by default
            ("/tmp\ttab", (8, 4)),      // \011 decoded
            ("/var/lib/stuff", (8, 6))  // 8:5 is hidden under it
        ]
    );

    // Custom filters: types are exact names, globs cross '/'.
    let entries = disk::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    let filters = Filters::new(&CollectConfig {
        exclude_fs_types: vec!["nfs4".into(), "ext4".into()],
        exclude_mounts: vec!["/mnt/*".into()],
        ..default_collect()
    });
    let points: Vec<String> = disk::select_mounts(entries, &filters)
        .into_iter()
        .map(|e| e.mount_point)
        .collect();
    assert!(points.contains(&"/boot/efi".to_string()));
    assert!(points.contains(&"/run/user/1000".to_string()));
    assert!(!points
        .iter()
        .any(|p| p == "/" || p == "/data" || p == "/mnt/my disk"));
}

// ------------------------------------------------ whole collector on fixtures

/// Copies a fixture tree into a temporary directory.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn roots_copy_of_state1() -> (tempfile::TempDir, Roots) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("state1"), dir.path());
    let roots = Roots {
        proc: dir.path().join("proc"),
        sys: dir.path().join("sys"),
    };
    (dir, roots)
}

#[test]
fn collector_over_two_fixture_states() {
    let (dir, roots) = roots_copy_of_state1();
    let config = CollectConfig {
        top_processes: 3,
        ..default_collect()
    };
    let before_new = Instant::now();
    let mut collector = Collector::new(roots.clone(), &config);
    let after_new = Instant::now();
    // Let time pass so the elapsed interval is well away from 0.
    std::thread::sleep(Duration::from_millis(200));
    copy_tree(&fixture("state2"), dir.path());
    let before_collect = Instant::now();
    let m = collector.collect();
    let after_collect = Instant::now();

    assert_eq!(m.cpu.usage_percent, 20.0);
    assert_eq!(m.cpu.per_core_percent, vec![40.0, 0.0]);
    assert_eq!((m.cpu.load1, m.cpu.load5, m.cpu.load15), (0.52, 1.25, 2.0));
    assert_eq!(m.memory.total_bytes, MEM_TOTAL);
    assert_eq!(m.network.active_connections, 40);
    assert_eq!(m.system.uptime_seconds, 12346);
    assert_eq!(m.system.boot_id, "4a3e7f4c-9d1b-4b8e-9c55-0f5e2b6a7d10");

    // The rate uses the time between the two readings, which lies between
    // these bounds measured around them.
    let longest = (after_collect - before_new).as_secs_f64();
    let shortest = (before_collect - after_new).as_secs_f64();
    let eth0 = m
        .network
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .unwrap();
    let rx = eth0.rx_bytes_per_sec;
    assert!(
        31_457_280.0 / longest <= rx && rx <= 31_457_280.0 / shortest,
        "eth0 rx {rx} B/s outside [{}, {}]",
        31_457_280.0 / longest,
        31_457_280.0 / shortest
    );
    let eth1 = m
        .network
        .interfaces
        .iter()
        .find(|i| i.name == "eth1")
        .unwrap();
    assert_eq!(eth1.rx_bytes_per_sec, 0.0, "reset counter");
    assert_eq!(m.network.interfaces.len(), 2);
    let read = m.disk.read_bytes_per_sec;
    assert!(10_485_760.0 / longest <= read && read <= 10_485_760.0 / shortest);

    assert_eq!(m.processes.count, 5);
    assert_eq!((m.processes.running, m.processes.blocked), (5, 0));
    let top: Vec<(u32, &str)> = m
        .processes
        .top_memory
        .iter()
        .map(|p| (p.pid, p.name.as_str()))
        .collect();
    // 77 has more memory than 1 but exits before its name is read.
    assert_eq!(top, [(42, "postgres"), (1000, "my app"), (1, "systemd")]);
    let expected = 40_000.0 * page_size() as f64 / MEM_TOTAL as f64 * 100.0;
    assert!((m.processes.top_memory[0].memory_percent - expected).abs() < 1e-9);

    // Mount points come from the fixture; statvfs runs on this host, where
    // "/" always exists and the others may not (those are left out).
    let selected: Vec<&str> = [
        "/",
        "/home",
        "/mnt/my disk",
        "/data",
        "/tmp\ttab",
        "/var/lib/stuff",
    ]
    .to_vec();
    assert!(m
        .disk
        .mounts
        .iter()
        .any(|u| u.mount == "/" && u.total_bytes > 0));
    for u in &m.disk.mounts {
        assert!(
            selected.contains(&u.mount.as_str()),
            "unexpected {}",
            u.mount
        );
    }
    assert!(
        !collector.failed_areas().contains(&"memory"),
        "{:?}",
        collector.failed_areas()
    );
}

#[test]
fn reload_changes_exclusions_and_top_processes() {
    let (_dir, roots) = roots_copy_of_state1();
    let mut collector = Collector::new(roots, &default_collect());
    let m = collector.collect();
    assert_eq!(
        m.processes.top_memory.len(),
        3,
        "only 3 processes have a name and memory"
    );
    collector.set_config(&CollectConfig {
        top_processes: 0,
        exclude_interfaces: vec!["eth*".into()],
        exclude_mounts: vec!["/*".into()],
        ..default_collect()
    });
    let m = collector.collect();
    assert!(m.processes.top_memory.is_empty());
    assert_eq!(m.processes.count, 5);
    let names: Vec<&str> = m
        .network
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["lo", "veth1a2b"]);
    assert!(m.disk.mounts.is_empty(), "{:?}", m.disk.mounts);
}

// ------------------------------------------------------- failing collectors

use crate::common::logs::capture as capture_logs;

/// Warnings that mention `text` (this module's fixtures paths are unique to it).
fn warnings_mentioning(text: &str) -> usize {
    crate::common::logs::lines()
        .iter()
        .filter(|(level, _, msg)| *level == log::Level::Warn && msg.contains(text))
        .count()
}

#[test]
fn a_missing_file_falls_back_logs_once_and_recovers() {
    capture_logs();
    let (dir, roots) = roots_copy_of_state1();
    let meminfo = roots.proc.join("meminfo");
    std::fs::remove_file(&meminfo).unwrap();
    std::fs::remove_file(roots.proc.join("net/snmp")).unwrap();
    std::fs::remove_file(roots.proc.join("net/dev")).unwrap();

    let mut collector = Collector::new(roots.clone(), &default_collect());
    for _ in 0..3 {
        let m = collector.collect();
        // The failing areas take their fallbacks...
        assert_eq!(m.memory, Default::default());
        assert_eq!(m.network.active_connections, 0);
        assert!(m.network.interfaces.is_empty());
        // ...and everything else is still measured.
        assert_eq!((m.cpu.load1, m.cpu.load5, m.cpu.load15), (0.52, 1.25, 2.0));
        assert_eq!(m.processes.count, 5);
        assert_eq!(m.system.uptime_seconds, 12345);
        assert_eq!(m.cpu.per_core_percent.len(), 2);
        // Without MemTotal the top list still names processes, at 0 %.
        assert!(m
            .processes
            .top_memory
            .iter()
            .all(|p| p.memory_percent == 0.0));
        assert!(!m.processes.top_memory.is_empty());
        let failed = collector.failed_areas();
        for area in ["memory", "connections", "network"] {
            assert!(failed.contains(&area), "{area} not in {failed:?}");
        }
        assert!(!failed.contains(&"cpu"));
    }
    let meminfo_text = meminfo.display().to_string();
    assert_eq!(
        warnings_mentioning(&meminfo_text),
        1,
        "warned once, not per sample"
    );
    let dev = roots.proc.join("net/dev").display().to_string();
    assert_eq!(warnings_mentioning(&dev), 1);

    // The file comes back: so do the figures.
    std::fs::copy(fixture("state1/proc/meminfo"), &meminfo).unwrap();
    let m = collector.collect();
    assert_eq!(m.memory.total_bytes, MEM_TOTAL);
    assert!(!collector.failed_areas().contains(&"memory"));
    drop(dir);
}

#[test]
fn garbage_files_fall_back_without_panicking() {
    capture_logs();
    let (_dir, roots) = roots_copy_of_state1();
    for rel in [
        "stat",
        "meminfo",
        "loadavg",
        "uptime",
        "net/dev",
        "net/snmp",
        "diskstats",
        "self/mountinfo",
    ] {
        std::fs::write(roots.proc.join(rel), "garbage \u{0} \\777 ::: -1\n\n").unwrap();
    }
    std::fs::write(roots.proc.join("42/statm"), "x y z").unwrap();
    let mut collector = Collector::new(roots, &default_collect());
    let m = collector.collect();
    assert_eq!(m.cpu, Default::default());
    assert_eq!(m.memory, Default::default());
    assert!(m.disk.mounts.is_empty());
    assert_eq!(m.disk.read_bytes_per_sec, 0.0);
    assert!(m.network.interfaces.is_empty());
    assert_eq!(m.system.uptime_seconds, 0);
    // The process scan does not depend on those files.
    assert_eq!(m.processes.count, 5);
    assert!(!m.processes.top_memory.iter().any(|p| p.pid == 42));
    let failed = collector.failed_areas();
    for area in [
        "cpu",
        "load",
        "memory",
        "disk",
        "disk_io",
        "network",
        "connections",
        "uptime",
    ] {
        assert!(failed.contains(&area), "{area} not in {failed:?}");
    }
}

#[test]
fn a_missing_proc_root_gives_an_empty_sample() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots {
        proc: dir.path().join("no-proc"),
        sys: dir.path().join("no-sys"),
    };
    let mut collector = Collector::new(roots, &default_collect());
    let m = collector.collect();
    assert_eq!(m, Metrics::default());
    assert!(
        collector.failed_areas().len() >= 9,
        "{:?}",
        collector.failed_areas()
    );
}

#[test]
fn time_since_the_last_reading() {
    let (_dir, roots) = roots_copy_of_state1();
    let mut collector = Collector::new(roots, &default_collect());
    std::thread::sleep(Duration::from_millis(60));
    assert!(collector.since_last_reading() >= Duration::from_millis(60));
    let started = Instant::now();
    collector.collect();
    assert!(collector.since_last_reading() <= started.elapsed());
}
