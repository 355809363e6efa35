//! `GET /metrics` of the real daemon on this host (SPEC §4.5): the
//! exposition parses strictly, carries the promised names, its counters
//! never go backwards between two samples, it has no per-process series,
//! and `promtool check metrics` finds nothing wrong with it.

use crate::common::cgroup::{LiveUnit, IDLE};
use crate::common::daemon::Setup;
use crate::common::stream_client::{check_exposition, http, Family};
use metricsd::collect::units;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Present in every scrape once a sample exists, whatever the host.
const REQUIRED: &[&str] = &[
    "host_cpu_usage_percent",
    "host_cpu_seconds_total",
    "host_cpu_mode_percent",
    "host_load1",
    "host_memory_used_bytes",
    "host_memory_available_bytes",
    "host_context_switches_total",
    "host_interrupts_total",
    "host_forks_total",
    "host_file_descriptors_allocated",
    "host_clock_synced",
    "host_processes_zombie",
    "host_tcp_retransmitted_segments_total",
    "host_uptime_seconds",
    "metricsd_collector_duration_seconds",
    "metricsd_collector_success",
    "metricsd_collector_failures_total",
    "metricsd_queue_pending",
    "metricsd_queue_dead",
    "metricsd_queue_dropped_total",
    "metricsd_delivered_total",
    "metricsd_post_failures_total",
    "metricsd_stream_clients",
    "metricsd_sample_duration_seconds",
];

async fn scrape(addr: SocketAddr) -> String {
    let response = http(addr, "GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// A single-number line of /proc/stat (`ctxt`, `btime`, `processes`).
fn proc_stat_field(name: &str) -> f64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/stat"))
}

fn parse(text: &str) -> HashMap<String, Family> {
    check_exposition(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn value(families: &HashMap<String, Family>, name: &str) -> f64 {
    families
        .get(name)
        .and_then(|f| f.samples.first())
        .unwrap_or_else(|| panic!("{name} missing"))
        .value
}

/// Each series as `name{sorted labels}` → value.
fn series(families: &HashMap<String, Family>, kind: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (name, family) in families.iter().filter(|(_, f)| f.kind == kind) {
        for sample in &family.samples {
            let mut labels = sample.labels.clone();
            labels.sort();
            out.insert(format!("{name}{labels:?}"), sample.value);
        }
    }
    out
}

fn promtool(text: &str) -> Result<(), String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::common::skip_or_fail(
                "promtool is not installed (Debian's prometheus package ships it)",
            );
            return Ok(());
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}): {said}", out.status))
    }
}

#[test]
fn promtool_failures_are_seen() {
    // The check must be able to fail: a counter without _total and a
    // duplicate HELP are problems promtool reports.
    if Command::new("promtool").arg("--version").output().is_err() {
        crate::common::skip_or_fail("promtool not installed (.ci/run installs prometheus)");
        return;
    }
    let bad = "# HELP x_bytes A counter without its suffix.\n# TYPE x_bytes counter\nx_bytes 1\n";
    assert!(promtool(bad).is_err());
    let good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n";
    assert_eq!(promtool(good), Ok(()));
}

#[tokio::test]
async fn live_scrape_is_strict_complete_monotonic_and_passes_promtool() {
    // An idle unit in this host's cgroup v2 tree, so the unit families have
    // something to show (none when no cgroup can be made here: said below).
    let unit = units::find_v2_root(Path::new("/sys"))
        .ok_or_else(|| "no cgroup v2 hierarchy".to_string())
        .and_then(|v2| LiveUnit::start(&v2, IDLE))
        .map_err(|why| {
            crate::common::skip_or_fail(&format!("no unit cgroup for the unit families: {why}"))
        })
        .ok();
    let unit_glob = unit
        .as_ref()
        .map_or("*.service".to_string(), |u| u.name.clone());
    let setup = Setup::new("1s", "", &format!("[collect]\nunits = [\"{unit_glob}\"]\n"));
    let counters_at_start = (proc_stat_field("ctxt"), proc_stat_field("processes"));
    let mut daemon = setup.start(&[]);
    let addr = setup.stream_addr();
    daemon.wait_listening(addr, Duration::from_secs(20));

    let mut first = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !first.contains("\nhost_cpu_usage_percent ") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no host metrics:\n{first}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        first = scrape(addr).await;
    }
    let a = parse(&first);
    let seq = value(&a, "metricsd_last_sample_seq");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let second = loop {
        let second = scrape(addr).await;
        if value(&parse(&second), "metricsd_last_sample_seq") > seq {
            break second;
        }
        assert!(tokio::time::Instant::now() < deadline, "no second sample");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b = parse(&second);

    // Values in base units, against /proc read by the test: exact where
    // the kernel's figure is fixed, between two readings for counters.
    let mem_total_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(value(&b, "host_memory_total_bytes"), mem_total_kib * 1024.0);
    assert_eq!(
        value(&b, "host_boot_time_seconds"),
        proc_stat_field("btime")
    );
    let fd_max: f64 = std::fs::read_to_string("/proc/sys/fs/file-nr")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(value(&b, "host_file_descriptors_max"), fd_max);
    for (name, field, at_start) in [
        ("host_context_switches_total", "ctxt", counters_at_start.0),
        ("host_forks_total", "processes", counters_at_start.1),
    ] {
        let (got, now) = (value(&b, name), proc_stat_field(field));
        assert!(
            at_start <= got && got <= now,
            "{name} {got} not in [{at_start}, {now}]"
        );
    }

    // Strict text format (every line HELP, TYPE or a sample; valid names
    // and labels; no duplicate series): check_exposition above.
    // Types follow the names: counters end in _total, nothing else does.
    for (name, family) in &b {
        let expected = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(family.kind, expected, "{name}");
    }
    for name in REQUIRED {
        assert!(b.contains_key(*name), "{name} missing:\n{second}");
    }
    // One series per CPU mode, every collector reported.
    assert_eq!(b["host_cpu_seconds_total"].samples.len(), 9);
    let collectors: Vec<&str> = b["metricsd_collector_success"]
        .samples
        .iter()
        .map(|s| s.labels[0].1.as_str())
        .collect();
    for expected in ["cpu", "memory", "processes", "units"] {
        assert!(collectors.contains(&expected), "{collectors:?}");
    }
    // Per-mount, per-device, per-interface and pressure families wherever
    // the host has the source.
    if Path::new("/proc/pressure/cpu").exists() {
        let kinds: Vec<_> = b["host_pressure_stall_seconds_total"]
            .samples
            .iter()
            .map(|s| s.labels.clone())
            .collect();
        assert!(kinds.contains(&vec![
            ("resource".to_string(), "cpu".to_string()),
            ("kind".to_string(), "some".to_string())
        ]));
    }
    // Which sources this host has, read here: an interface the default
    // configuration keeps (it leaves out lo, veth*, docker*, br-*, virbr*),
    // and a block device that is not virtual (loop, ram, zram, dm-, md).
    let interfaces = std::fs::read_to_string("/proc/net/dev").unwrap();
    let has_interface = interfaces.lines().skip(2).any(|l| {
        let name = l.split(':').next().unwrap_or("").trim();
        !(name == "lo"
            || ["veth", "docker", "br-", "virbr"]
                .iter()
                .any(|p| name.starts_with(p)))
    });
    let has_disk = std::fs::read_dir("/sys/block").unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        !["loop", "ram", "zram", "dm-", "md"]
            .iter()
            .any(|p| name.starts_with(p))
    });
    for (labelled, expected) in [
        ("host_filesystem_used_bytes", true),
        ("host_filesystem_inodes_used", true),
        ("host_network_receive_bytes_total", has_interface),
        ("host_network_transmit_bytes_total", has_interface),
        ("host_network_receive_errors_total", has_interface),
        ("host_network_receive_drops_total", has_interface),
        ("host_disk_read_bytes_total", has_disk),
        ("host_disk_written_bytes_total", has_disk),
        ("host_disk_io_time_seconds_total", has_disk),
    ] {
        match b.get(labelled) {
            Some(family) => assert!(!family.samples.is_empty(), "{labelled}"),
            None => assert!(
                !expected,
                "{labelled} missing though the host has its source"
            ),
        }
    }
    assert!(
        b.contains_key("host_filesystem_used_bytes"),
        "/ is a filesystem"
    );
    if let Some(unit) = &unit {
        let cpu = &b["host_unit_cpu_seconds_total"];
        assert!(
            cpu.samples
                .iter()
                .any(|s| s.labels == [("unit".to_string(), unit.name.clone())]),
            "no series for {}",
            unit.name
        );
        // memory.current only where the v2 tree has the memory controller.
        assert_eq!(
            b.contains_key("host_unit_memory_bytes"),
            unit.file("memory.current").is_some()
        );
    }

    // No per-process series.
    for (name, family) in &b {
        assert!(!name.contains("process") || !name.contains("top"), "{name}");
        for sample in &family.samples {
            assert!(
                sample.labels.iter().all(|(k, _)| k != "pid"),
                "{name} has a pid label"
            );
        }
    }

    // Counters never go backwards from one sample to the next.
    let before = series(&a, "counter");
    let after = series(&b, "counter");
    let mut compared = 0;
    for (key, old) in &before {
        if let Some(new) = after.get(key) {
            assert!(new >= old, "{key}: {old} -> {new}");
            compared += 1;
        }
    }
    assert!(
        compared >= 20,
        "only {compared} counter series in both scrapes"
    );

    promtool(&second).unwrap_or_else(|e| panic!("{e}\n{second}"));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(15)), 0);
    drop(unit);
}
