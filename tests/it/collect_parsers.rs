//! The collectors' parsers and rate arithmetic on the fixture trees in
//! tests/fixtures (see its README for what changes between state1 and state2),
//! and whole `Collector` runs over copies of those trees.

use metricsd::collect::cpu::{self, StatSample};
use metricsd::collect::disk::{self, DiskCounters};
use metricsd::collect::network::{self, IfCounters};
use metricsd::collect::{
    filesystem, load, memory, pressure, processes, system, tcp, Collector, Filters, Roots,
};
use metricsd::config::{CollectConfig, Config};
use metricsd::snapshot::{Metrics, NetworkMetrics, Snapshot};
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

/// `parser, "fixture" => expected;`: each parser applied to its fixture's
/// text gives what is expected.
macro_rules! assert_parses {
    ($($parse:path, $rel:literal => $expected:expr;)+) => {
        $(assert_eq!($parse(&read($rel)).unwrap(), $expected, "{}", $rel);)+
    };
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
        collectors: Vec::new(),
    }
}

// ---------------------------------------------------------------- /proc/stat

#[test]
fn stat_gives_total_cores_and_procs() {
    let s = stat("state1/proc/stat");
    assert_eq!(s.total.0, [1000, 0, 500, 8000, 500, 0, 0, 0, 0, 0]);
    assert_eq!(s.cores.len(), 2);
    assert_eq!(s.cores[0].0, 0);
    assert_eq!(s.cores[1].0, 1);
    assert_eq!(s.cores[1].1 .0, [500, 0, 250, 4000, 250, 0, 0, 0, 0, 0]);
    assert_eq!((s.procs_running, s.procs_blocked), (3, 1));
    assert_eq!((s.ctxt, s.intr, s.forks), (267_640, 243_087, 7616));
    assert_eq!(s.btime, 1_795_426_522);
    let s2 = stat("state2/proc/stat");
    assert_eq!(s2.total.0, [1120, 10, 540, 8750, 550, 10, 10, 10, 20, 10]);
}

#[test]
fn cpu_modes_between_states_sum_to_100() {
    let m = cpu::mode_percentages(
        &stat("state1/proc/stat").total,
        &stat("state2/proc/stat").total,
    );
    let got: Vec<(&str, f64)> = m.named().to_vec();
    assert_eq!(
        got,
        [
            ("user", 10.0),
            ("nice", 0.0),
            ("system", 4.0),
            ("idle", 75.0),
            ("iowait", 5.0),
            ("irq", 1.0),
            ("softirq", 1.0),
            ("steal", 1.0),
            ("guest", 3.0)
        ]
    );
    // Raw seconds per mode (USER_HZ ticks), guest taken out of user.
    let hz = metricsd::procfs::clock_ticks_per_sec();
    let secs = cpu::mode_seconds(&stat("state2/proc/stat").total, hz);
    assert_eq!(secs.user, 1100.0 / hz);
    assert_eq!(secs.guest, 30.0 / hz);
}

#[test]
fn cpu_usage_between_states() {
    let (total, per_core) = cpu::usage(&stat("state1/proc/stat"), &stat("state2/proc/stat"));
    assert_eq!(total, 20.0);
    // cpu1's iowait went backwards: 0 %, not negative.
    assert_eq!(per_core, vec![40.0, 0.0]);
}

#[test]
fn per_core_figures_carry_the_cpu_number_when_a_cpu_is_offline() {
    use metricsd::collect::Collect as _;
    // /proc/stat lists online CPUs only: cpu1 is offline here.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    let stat = |busy: u64| {
        let line = |name: &str| format!("{name} {busy} 0 0 1000 0 0 0 0 0 0\n");
        format!(
            "{}{}{}{}intr 1 0\nctxt 10\nbtime 1700000000\nprocesses 5\nprocs_running 1\nprocs_blocked 0\n",
            line("cpu "),
            line("cpu0"),
            line("cpu2"),
            line("cpu3")
        )
    };
    std::fs::write(dir.path().join("proc/stat"), stat(100)).unwrap();
    let roots = Roots::under(dir.path());
    let mut collector = cpu::CpuCollector::new(&roots);
    let mut m = Metrics::default();
    let t0 = Instant::now();
    collector.collect(t0, &mut m).unwrap();
    std::fs::write(dir.path().join("proc/stat"), stat(200)).unwrap();
    collector
        .collect(t0 + Duration::from_secs(1), &mut m)
        .unwrap();
    let c = m.cpu.as_ref().unwrap();
    assert_eq!(c.core_numbers.as_deref(), Some(&[0u32, 2, 3][..]));
    assert_eq!(c.per_core_percent.as_ref().map(Vec::len), Some(3));
}

#[test]
fn iowait_going_backwards_holds_its_exported_counter_and_gives_a_zero_share() {
    use metricsd::collect::Collect as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    let stat = |user: u64, idle: u64, iowait: u64| {
        format!(
            "cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 {user} 0 0 {idle} {iowait} 0 0 0 0 0\n\
             intr 1 0\nctxt 10\nbtime 1700000000\nprocesses 5\nprocs_running 1\nprocs_blocked 0\n"
        )
    };
    let hz = metricsd::procfs::clock_ticks_per_sec();
    let path = dir.path().join("proc/stat");
    let mut collector = cpu::CpuCollector::new(&Roots::under(dir.path()));
    let mut m = Metrics::default();
    let t0 = Instant::now();
    let mut at = |user, idle, iowait, s| {
        std::fs::write(&path, stat(user, idle, iowait)).unwrap();
        collector
            .collect(t0 + Duration::from_secs(s), &mut m)
            .unwrap();
        m.cpu.clone().unwrap()
    };
    at(100, 1000, 500, 0);
    let back = at(150, 1050, 480, 1);
    assert_eq!(back.seconds_total.iowait, 500.0 / hz, "the counter held");
    assert_eq!(back.seconds_total.user, 150.0 / hz);
    assert_eq!(back.modes_percent.unwrap().iowait, 0.0);
    let on = at(200, 1100, 490, 2);
    assert_eq!(on.seconds_total.iowait, 500.0 / hz, "still below its high");
    let past = at(250, 1150, 530, 3);
    assert_eq!(past.seconds_total.iowait, 530.0 / hz);
}

#[test]
fn a_tcp_source_that_failed_gives_its_rate_since_its_last_reading_not_zero() {
    use metricsd::collect::Collect as _;
    let (dir, roots) = roots_copy_of_state1();
    let snmp = dir.path().join("proc/net/snmp");
    let text = std::fs::read_to_string(&snmp).unwrap();
    let with_retrans = |n: u64| {
        text.replace(
            "Tcp: 1 200 120000 -1 130 20 0 3 42 22850 15780 0 0 5 0",
            &format!("Tcp: 1 200 120000 -1 130 20 0 3 42 22850 15780 {n} 0 5 0"),
        )
    };
    let mut tcp = metricsd::collect::tcp::TcpCollector::new(&roots);
    let mut m = Metrics::default();
    let t0 = Instant::now();
    std::fs::write(&snmp, with_retrans(100)).unwrap();
    tcp.collect(t0, &mut m).unwrap();
    // Unreadable for one sample: its figures are null, not 0.
    std::fs::remove_file(&snmp).unwrap();
    assert!(tcp.collect(t0 + Duration::from_secs(1), &mut m).is_err());
    assert_eq!(m.tcp.retrans_segs_total, None);
    assert_eq!(m.tcp.retrans_segs_per_sec, None);
    assert!(m.tcp.listen_drops_per_sec.is_some(), "netstat still read");
    // Back: 300 more over the 3 s since its last good reading.
    std::fs::write(&snmp, with_retrans(400)).unwrap();
    tcp.collect(t0 + Duration::from_secs(3), &mut m).unwrap();
    assert_eq!(m.tcp.retrans_segs_per_sec, Some(100.0));
}

// ---------------------------------------------------------- meminfo, loadavg

#[test]
fn meminfo_in_bytes_and_stream_units() {
    let m = memory::parse_meminfo(&read("state1/proc/meminfo")).unwrap();
    assert_eq!(m.total_bytes, MEM_TOTAL);
    assert_eq!(m.available_bytes, 8159464 * 1024);
    assert_eq!(m.swap_total_bytes, 2097148 * 1024);
    assert_eq!(m.swap_free_bytes, 1048574 * 1024);
    assert_eq!(m.free_bytes, 1234567 * 1024);
    assert_eq!(m.buffers_bytes, 102400 * 1024);
    assert_eq!(m.cached_bytes, 4096000 * 1024);
    assert_eq!(m.shared_bytes, 65536 * 1024);
    assert_eq!(m.slab_bytes, 262144 * 1024);
    let json = snapshot(Metrics {
        memory: Some(m),
        ..Metrics::default()
    })
    .stream_json();
    let mem = &json["metrics"]["memory"];
    assert_eq!(mem["memory_usage_percent"], 50.0);
    assert_eq!(mem["swap_usage_percent"], 50.0);
    assert_eq!(mem["memory_total_gb"], 15.56); // 16318928 KiB = 15.563 GiB
    assert_eq!(mem["memory_slab_gb"], 0.25);
    assert_eq!(mem["memory_shared_gb"], 0.06);
    // vmstat failed in this snapshot: its figures are null, not 0.
    assert_eq!(mem["major_faults_per_sec"], serde_json::Value::Null);
}

#[test]
fn vmstat_swap_and_fault_counters() {
    assert_parses! {
        memory::parse_vmstat, "state1/proc/vmstat" => (100, 200, 5000);
        memory::parse_vmstat, "state2/proc/vmstat" => (110, 300, 5050);
    }
    assert!(memory::parse_vmstat("pswpin 1\npswpout x\npgmajfault 2\n").is_err());
}

// ------------------------------------------------------------------ pressure

#[test]
fn pressure_with_and_without_the_full_line() {
    let (some, full) = pressure::parse_pressure(&read("state1/proc/pressure/cpu")).unwrap();
    assert_eq!((some.avg10, some.avg60, some.avg300), (1.5, 1.0, 0.5));
    assert_eq!(some.total_us, 1_000_000);
    assert!(full.is_none(), "cpu has no full line before 5.13");
    let (some, full) = pressure::parse_pressure(&read("state1/proc/pressure/io")).unwrap();
    assert_eq!(some.total_us, 3_000_000);
    assert_eq!(full.unwrap().avg10, 2.0);
    assert!(pressure::parse_pressure("full avg10=1 avg60=1 avg300=1 total=1\n").is_err());
}

// ------------------------------------------------------------- sockets, fds

#[test]
fn snmp_netstat_and_sockstat() {
    assert_parses! {
        tcp::parse_snmp, "state1/proc/net/snmp" => (42, 0, 5);
        tcp::parse_snmp, "state2/proc/net/snmp" => (40, 30, 15);
        tcp::parse_netstat, "state1/proc/net/netstat" => (10, 12);
        tcp::parse_netstat, "state2/proc/net/netstat" => (15, 20);
        tcp::parse_sockstat, "state1/proc/net/sockstat" => (25, 2, 7);
        tcp::parse_sockstat6, "state1/proc/net/sockstat6" => 6;
    }
    assert!(tcp::parse_netstat("IpExt: A\nIpExt: 1\n").is_err());
}

#[test]
fn file_nr_operstate_and_os_release() {
    assert_parses! {
        system::parse_file_nr, "state1/proc/sys/fs/file-nr" => (1632, 9_223_372_036_854_775_807);
        network::parse_operstate, "state1/sys/class/net/eth0/operstate" => "up";
        network::parse_operstate, "state1/sys/class/net/eth1/operstate" => "down";
        system::parse_os_release, "state1/etc/os-release" => "Fixture Linux 1 (test)";
    }
}

// ------------------------------------------------------------- /proc/<pid>/stat

#[test]
fn pid_stat_with_spaces_and_parentheses_in_the_name() {
    let text = read("state1/proc/1000/stat");
    let (name, s) = processes::parse_pid_stat(text.as_bytes()).unwrap();
    assert_eq!(name, b"my (app) x");
    assert_eq!(
        (s.state, s.cpu_ticks, s.threads, s.start_ticks, s.rss_pages),
        (b'R', 3000, 4, 600, 30000)
    );
    let text = read("state1/proc/666/stat");
    let (name, s) = processes::parse_pid_stat(text.as_bytes()).unwrap();
    assert_eq!((name, s.state), (&b"defunct) ("[..], b'Z'));
}

#[test]
fn loadavg_and_uptime_and_boot_id() {
    assert_parses! {
        load::parse_loadavg, "state1/proc/loadavg" => (0.52, 1.25, 2.0);
        system::parse_uptime, "state1/proc/uptime" => 12345;
        system::parse_boot_id, "state1/proc/sys/kernel/random/boot_id" => "4a3e7f4c-9d1b-4b8e-9c55-0f5e2b6a7d10";
    }
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
        network: Some(NetworkMetrics { interfaces: m }),
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
    assert_parses! {
        tcp::parse_curr_estab, "state1/proc/net/snmp" => 42;
        tcp::parse_curr_estab, "state2/proc/net/snmp" => 40;
    }
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
    let io = disk::io_metrics(&before, &after, Duration::from_secs(1));
    assert_eq!(io.read_bytes_per_sec, 10_485_760.0);
    assert_eq!(io.write_bytes_per_sec, 2_097_152.0);
    let io4 = disk::io_metrics(&before, &after, Duration::from_secs(4));
    assert_eq!(
        (io4.read_bytes_per_sec, io4.write_bytes_per_sec),
        (2_621_440.0, 524_288.0)
    );
    let names: Vec<&str> = io.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["sda", "nvme0n1", "sr0", "vdb"]);
    let sda = &io.devices[0];
    assert_eq!((sda.reads_per_sec, sda.writes_per_sec), (200.0, 100.0));
    // +100 ms of I/O in 1 s; 100 ms over 200 reads, 50 ms over 100 writes.
    assert_eq!(sda.util_percent, 10.0);
    assert_eq!((sda.read_await_ms, sda.write_await_ms), (0.5, 0.5));
    assert_eq!(sda.in_flight, 2);
    assert_eq!(sda.read_bytes_total, 120_480 * 512);
    assert_eq!(sda.io_time_ms_total, 1100);
    let nvme = &io.devices[1];
    assert_eq!((nvme.util_percent, nvme.read_bytes_per_sec), (0.0, 0.0));
    // vdb appeared between the samples: counters, but no rate yet.
    let vdb = &io.devices[3];
    assert_eq!((vdb.reads_total, vdb.in_flight), (50, 1));
    assert_eq!((vdb.reads_per_sec, vdb.util_percent), (0.0, 0.0));
}

#[test]
fn mountinfo_decodes_escapes_and_reads_devices() {
    let entries = filesystem::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    assert_eq!(entries.len(), 19, "the malformed line is skipped");
    let spaced = entries.iter().find(|e| e.device == (8, 3)).expect("8:3");
    assert_eq!(spaced.mount_point, "/mnt/my disk");
    assert_eq!(spaced.path.as_bytes(), b"/mnt/my disk");
    assert_eq!(spaced.fs_type, "xfs");
    let tab = entries.iter().find(|e| e.device == (8, 4)).expect("8:4");
    assert_eq!(tab.mount_point, "/tmp\ttab");
    assert_eq!(spaced.source, "/dev/sda3");
    let nfs = entries.iter().find(|e| e.device == (0, 55)).expect("0:55");
    assert_eq!(
        (nfs.mount_point.as_str(), nfs.fs_type.as_str()),
        ("/data", "nfs4")
    );
}

#[test]
fn mount_selection_excludes_dedupes_and_drops_hidden_mounts() {
    let entries = filesystem::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    let selected = filesystem::select_mounts(&entries, &Filters::new(&default_collect()));
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
    let entries = filesystem::parse_mountinfo(read("state1/proc/self/mountinfo").as_bytes());
    let filters = Filters::new(&CollectConfig {
        exclude_fs_types: vec!["nfs4".into(), "ext4".into()],
        exclude_mounts: vec!["/mnt/*".into()],
        ..default_collect()
    });
    let points: Vec<String> = filesystem::select_mounts(&entries, &filters)
        .into_iter()
        .map(|e| e.mount_point)
        .collect();
    assert!(points.contains(&"/boot/efi".to_string()));
    assert!(points.contains(&"/run/user/1000".to_string()));
    assert!(!points
        .iter()
        .any(|p| p == "/" || p == "/data" || p == "/mnt/my disk"));
}

/// A mount table with network and FUSE mounts, and local disks beneath them.
const HUNG_TABLE: &str = "\
20 1 8:1 / / rw - ext4 /dev/vda1 rw
21 20 0:40 / /mnt/nfs rw - nfs4 server:/export rw
22 21 8:2 / /mnt/nfs/local rw - ext4 /dev/vda2 rw
23 20 8:3 / /mnt/nfsx rw - ext4 /dev/vda3 rw
24 20 0:41 / /srv/fuse rw - fuse.sshfs host: rw
25 24 8:4 / /srv/fuse/deep/disk rw - xfs /dev/vda4 rw
26 20 0:42 / /vm rw - virtiofs share rw
27 20 8:5 / /data rw - xfs /dev/vda5 rw
";

#[test]
fn a_mount_beneath_a_network_or_fuse_mount_is_guarded() {
    let table = filesystem::parse_mountinfo(HUNG_TABLE.as_bytes());
    let filters = Filters::new(&default_collect());
    let selected = filesystem::select_mounts(&table, &filters);
    let guarded: Vec<(&str, bool)> = selected
        .iter()
        .map(|m| m.mount_point.as_str())
        .zip(filesystem::guarded_mounts(&table, &selected))
        .collect();
    assert_eq!(
        guarded,
        [
            ("/", false),
            ("/mnt/nfs", true),
            ("/mnt/nfs/local", true),
            ("/mnt/nfsx", false), // a sibling whose name only starts alike
            ("/srv/fuse", true),
            ("/srv/fuse/deep/disk", true),
            ("/vm", true), // virtiofs blocks as long as its host does
            ("/data", false),
        ]
    );

    // Excluding a type that may block also keeps the mounts beneath it out:
    // the path walk to them crosses it (README's advice for a FUSE server
    // that never answers).
    let filters = Filters::new(&CollectConfig {
        exclude_fs_types: vec!["nfs4".into(), "fuse.sshfs".into()],
        ..default_collect()
    });
    let selected = filesystem::select_mounts(&table, &filters);
    let points: Vec<&str> = selected.iter().map(|m| m.mount_point.as_str()).collect();
    assert_eq!(points, ["/", "/mnt/nfsx", "/vm", "/data"]);
}

/// What the hung filesystems of `stat_with_hung_mounts` wait for: opened
/// when the test ends (so their threads end with it), and never waited for
/// longer than 10 s (so code that waits for them fails instead of hanging).
static HUNG_UNTIL_OPENED: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// Opens `HUNG_UNTIL_OPENED` when dropped, however the test ends.
struct OpenHungMounts;

impl Drop for OpenHungMounts {
    fn drop(&mut self) {
        *HUNG_UNTIL_OPENED
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        HUNG_UNTIL_OPENED.1.notify_all();
    }
}

/// statvfs stand-in: every mount at or beneath /mnt/nfs, /srv/fuse and /vm
/// hangs until the test ends (far beyond the sample's budget); the rest
/// answer at once.
fn stat_with_hung_mounts(path: &std::ffi::CStr) -> std::io::Result<filesystem::FsStats> {
    let p = path.to_bytes();
    let hung = [&b"/mnt/nfs"[..], b"/srv/fuse", b"/vm"];
    if hung
        .iter()
        .any(|h| p == *h || (p.starts_with(h) && p.get(h.len()) == Some(&b'/')))
    {
        let (opened, changed) = &HUNG_UNTIL_OPENED;
        let guard = opened.lock().unwrap_or_else(|e| e.into_inner());
        let _ = changed
            .wait_timeout_while(guard, Duration::from_secs(10), |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }
    Ok(filesystem::FsStats {
        total_bytes: 1 << 30,
        used_bytes: 1 << 20,
        avail_bytes: 1 << 29,
        inodes_total: 1000,
        inodes_free: 900,
    })
}

#[test]
fn hung_mounts_share_one_time_budget_and_never_hold_the_sample() {
    // Twelve hung FUSE mounts besides the table above: one after another
    // under a budget each, they would hold a sample for 15 x 200 ms.
    let mut table = HUNG_TABLE.to_string();
    for i in 0..12 {
        table.push_str(&format!(
            "{} 20 0:{} / /vm/share{i} rw - fuse.s3fs s3fs rw\n",
            40 + i,
            60 + i
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("self")).unwrap();
    std::fs::write(dir.path().join("self/mountinfo"), table).unwrap();
    let _open_at_the_end = OpenHungMounts;
    let mut state = filesystem::MountState::new(dir.path()).with_stat(stat_with_hung_mounts);
    let filters = Filters::new(&default_collect());
    let mut reader = metricsd::procfs::FileReader::new();
    let mut warnings = metricsd::collect::Warnings::default();
    for round in ["first", "second"] {
        let started = Instant::now();
        let mounts = state.mounts(&mut reader, &filters, &mut warnings).unwrap();
        let took = started.elapsed();
        // One 200 ms budget in all, with room for a busy machine; the
        // sequential budgets alone would be 3 s, and the disk beneath the
        // NFS mount, unguarded, 10 s.
        assert!(
            took < Duration::from_millis(2000),
            "{round} sample took {took:?}"
        );
        let points: Vec<&str> = mounts.iter().map(|m| m.mount.as_str()).collect();
        assert_eq!(points, ["/", "/mnt/nfsx", "/data"], "{round} sample");
    }
}

/// One /proc/diskstats line with `reads` and `writes` completed (512 sectors each).
fn diskstats_line(major: u32, name: &str, reads: u64, writes: u64) -> String {
    format!(
        "{major} 0 {name} {reads} 0 {} 10 {writes} 0 {} 20 0 30 30 0 0 0 0 0 0\n",
        reads * 512,
        writes * 512
    )
}

#[test]
fn the_disk_collector_counts_nvme_multipath_io_once_on_a_fixture_tree() {
    use metricsd::collect::disk::DiskCollector;
    use metricsd::collect::Collect;
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots {
        proc: dir.path().join("proc"),
        sys: dir.path().join("sys"),
        etc: dir.path().join("etc"),
    };
    for dev in ["nvme0n1", "nvme0c0n1", "nvme0c1n1", "sda"] {
        std::fs::create_dir_all(roots.sys.join("block").join(dev)).unwrap();
    }
    std::fs::create_dir_all(&roots.proc).unwrap();
    let write = |head: u64, paths: [u64; 2], sda: u64| {
        let text = diskstats_line(0, "nvme0c0n1", 0, paths[0])
            + &diskstats_line(0, "nvme0c1n1", 0, paths[1])
            + &diskstats_line(259, "nvme0n1", 0, head)
            + &diskstats_line(8, "sda", 0, sda);
        std::fs::write(roots.proc.join("diskstats"), text).unwrap();
    };
    let sample = |c: &mut DiskCollector, at: Instant| {
        let mut m = Metrics::default();
        c.collect(at, &mut m).unwrap();
        let io = m.disk_io.unwrap();
        let names: Vec<String> = io.devices.iter().map(|d| d.name.clone()).collect();
        (names, io.write_bytes_per_sec)
    };
    let t0 = Instant::now();
    let second = |n: u64| t0 + Duration::from_secs(n);
    // Since Linux 6.2 the head counts its paths' I/O too: one 512-sector
    // write each second on the head (and the paths), and one on sda.
    write(100, [60, 40], 10);
    let mut c = DiskCollector::new(&roots);
    sample(&mut c, second(0));
    write(101, [61, 40], 11);
    let (names, rate) = sample(&mut c, second(1));
    assert_eq!(names, ["nvme0n1", "sda"]);
    assert_eq!(rate, 2.0 * 512.0 * 512.0, "each write counted once");
    // The head's accounting switched off: it stands still, the paths carry on.
    write(101, [62, 41], 12);
    let (names, rate) = sample(&mut c, second(2));
    assert_eq!(names, ["nvme0c0n1", "nvme0c1n1", "nvme0n1", "sda"]);
    assert_eq!(rate, 3.0 * 512.0 * 512.0);
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
    let roots = Roots::under(dir.path());
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
    let sample = collector.collect();
    let after_collect = Instant::now();
    let m = &sample.metrics;
    // The rates use the time between the two readings, which lies between
    // these bounds measured around them.
    let longest = (after_collect - before_new).as_secs_f64();
    let shortest = (before_collect - after_new).as_secs_f64();
    let within = |delta: f64, got: f64, what: &str| {
        assert!(
            delta / longest <= got && got <= delta / shortest,
            "{what} {got}/s outside [{}, {}]",
            delta / longest,
            delta / shortest
        );
    };

    let failed = collector.failed_collectors();
    assert!(failed.is_empty(), "{failed:?}");
    let names: Vec<&str> = sample.collectors.iter().map(|c| c.name.as_ref()).collect();
    for name in [
        "cpu",
        "load",
        "memory",
        "pressure",
        "filesystem",
        "disk",
        "network",
        "tcp",
        "processes",
        "system",
        "units",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(sample
        .collectors
        .iter()
        .all(|c| c.ok && c.failures_total == 0));

    let cpu = m.cpu.as_ref().unwrap();
    assert_eq!(cpu.usage_percent, Some(20.0));
    assert_eq!(cpu.per_core_percent, Some(vec![40.0, 0.0]));
    let modes = cpu.modes_percent.unwrap();
    assert_eq!((modes.user, modes.guest), (10.0, 3.0));
    let activity = m.activity.as_ref().unwrap();
    assert_eq!(activity.forks_total, 7620);
    within(360.0, activity.context_switches_per_sec.unwrap(), "ctxt");
    within(912.0, activity.interrupts_per_sec.unwrap(), "intr");
    within(4.0, activity.forks_per_sec.unwrap(), "forks");
    assert_eq!((activity.procs_running, activity.procs_blocked), (5, 0));
    assert_eq!(activity.boot_time_unix, 1_795_426_522);
    let load = m.load.unwrap();
    assert_eq!((load.load1, load.load5, load.load15), (0.52, 1.25, 2.0));
    assert_eq!(m.memory.as_ref().unwrap().total_bytes, MEM_TOTAL);
    let vm = m.vmstat.as_ref().unwrap();
    assert_eq!(vm.major_faults_total, 5050);
    within(100.0, vm.swap_out_pages_per_sec.unwrap(), "pswpout");
    within(50.0, vm.major_faults_per_sec.unwrap(), "pgmajfault");

    let p = m.pressure.as_ref().unwrap();
    assert!(p.cpu_full.is_none());
    assert_eq!(p.cpu_some.unwrap().avg10, 2.5);
    assert_eq!(p.io_full.unwrap().total_us, 2_500_000);
    // 100000 us of stall = 100 ms, per second of wall time; 250 ms in
    // about 0.2 s would be over 1000 ms/s, which cannot be: capped.
    within(
        100.0,
        p.memory_some.unwrap().stall_ms_per_sec.unwrap(),
        "memory stall ms",
    );
    assert!(shortest > 0.25 || p.cpu_some.unwrap().stall_ms_per_sec == Some(1000.0));
    assert_eq!(p.memory_full.unwrap().stall_ms_per_sec, Some(0.0));

    let tcp = &m.tcp;
    assert_eq!(tcp.curr_estab, Some(40));
    assert_eq!(
        (tcp.in_use, tcp.orphan, tcp.time_wait),
        (Some(31), Some(2), Some(7))
    );
    assert_eq!(tcp.retrans_segs_total, Some(30));
    within(30.0, tcp.retrans_segs_per_sec.unwrap(), "retrans");
    within(10.0, tcp.resets_sent_per_sec.unwrap(), "resets");
    within(5.0, tcp.listen_overflows_per_sec.unwrap(), "overflows");
    within(8.0, tcp.listen_drops_per_sec.unwrap(), "drops");

    let sys = &m.system;
    assert_eq!(sys.uptime_seconds, Some(12346));
    assert_eq!(
        sys.boot_id.as_deref(),
        Some("4a3e7f4c-9d1b-4b8e-9c55-0f5e2b6a7d10")
    );
    assert_eq!(sys.file_descriptors_allocated, Some(1632));
    assert_eq!(sys.os.as_deref(), Some("Fixture Linux 1 (test)"));
    assert!(sys.kernel.is_some() && sys.clock_synced.is_some());

    let net = m.network.as_ref().unwrap();
    let eth0 = net.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    within(31_457_280.0, eth0.rx_bytes_per_sec, "eth0 rx");
    assert_eq!(eth0.oper_state.as_deref(), Some("up"));
    let eth1 = net.interfaces.iter().find(|i| i.name == "eth1").unwrap();
    assert_eq!(eth1.rx_bytes_per_sec, 0.0, "reset counter");
    assert_eq!(eth1.oper_state.as_deref(), Some("down"));
    assert_eq!(net.interfaces.len(), 2);
    let io = m.disk_io.as_ref().unwrap();
    within(10_485_760.0, io.read_bytes_per_sec, "disk read");
    let sda = &io.devices[0];
    within(200.0, sda.reads_per_sec, "sda reads");
    assert_eq!(sda.read_await_ms, 0.5);

    let procs = m.processes.as_ref().unwrap();
    assert_eq!(procs.count, 5, "77 has no stat: it exited during the scan");
    assert_eq!(procs.threads, Some(15));
    assert_eq!(procs.zombies, Some(1));
    let top: Vec<(u32, &str)> = procs
        .top_memory
        .iter()
        .map(|p| (p.pid, p.name.as_str()))
        .collect();
    assert_eq!(
        top,
        [(42, "postgres"), (1000, "my (app) x"), (1, "systemd")]
    );
    let expected = 40_000.0 * page_size() as f64 / MEM_TOTAL as f64 * 100.0;
    assert!((procs.top_memory[0].memory_percent.unwrap() - expected).abs() < 1e-9);
    let top_cpu: Vec<(u32, &str)> = procs
        .top_cpu
        .iter()
        .map(|p| (p.pid, p.name.as_str()))
        .collect();
    assert_eq!(
        top_cpu,
        [(1000, "my (app) x"), (42, "postgres"), (1, "systemd")]
    );
    let hz = metricsd::procfs::clock_ticks_per_sec();
    // 100 ticks of CPU: 100/hz seconds, per second of wall time, in percent.
    within(
        100.0 / hz * 100.0,
        procs.top_cpu[0].cpu_percent,
        "pid 1000 cpu %",
    );

    // Mount points come from the fixture; statvfs runs on this host, where
    // "/" always exists and the others may not (those are left out).
    let selected = [
        "/",
        "/home",
        "/mnt/my disk",
        "/data",
        "/tmp\ttab",
        "/var/lib/stuff",
    ];
    let mounts = m.filesystems.as_ref().unwrap();
    let root = mounts.iter().find(|u| u.mount == "/").unwrap();
    assert!(root.total_bytes > 0);
    assert_eq!(root.device, "/dev/sda1");
    for u in mounts {
        assert!(
            selected.contains(&u.mount.as_str()),
            "unexpected {}",
            u.mount
        );
    }
}

#[test]
fn reload_changes_exclusions_and_top_processes() {
    let (_dir, roots) = roots_copy_of_state1();
    let mut collector = Collector::new(roots, &default_collect());
    let m = collector.collect().metrics;
    assert_eq!(
        m.processes.unwrap().top_memory.len(),
        3,
        "only 3 processes have memory"
    );
    collector.set_config(&CollectConfig {
        top_processes: 0,
        exclude_interfaces: vec!["eth*".into()],
        exclude_mounts: vec!["/*".into()],
        ..default_collect()
    });
    let m = collector.collect().metrics;
    let procs = m.processes.unwrap();
    assert!(procs.top_memory.is_empty() && procs.top_cpu.is_empty());
    // No per-process reads: every numeric entry counts (77 too), the
    // threads are the kernel's task count, zombies are not measured.
    assert_eq!(
        (procs.count, procs.threads, procs.zombies),
        (6, Some(1024), None)
    );
    let names: Vec<String> = m
        .network
        .unwrap()
        .interfaces
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["lo", "veth1a2b"]);
    let mounts = m.filesystems.unwrap();
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn a_reload_keeps_every_collectors_previous_reading() {
    // A reload between two samples must not give any collector a new
    // baseline: the next rates still cover state1 -> state2, never ~0 s.
    let (dir, roots) = roots_copy_of_state1();
    let mut collector = Collector::new(roots, &default_collect());
    copy_tree(&fixture("state2"), dir.path());
    collector.set_config(&CollectConfig {
        top_processes: 7,
        exclude_interfaces: vec!["docker*".into()],
        ..default_collect()
    });
    let m = collector.collect().metrics;
    let cpu = m.cpu.as_ref().unwrap();
    assert_eq!(cpu.usage_percent, Some(20.0));
    assert_eq!(cpu.modes_percent.unwrap().user, 10.0);
    let activity = m.activity.as_ref().unwrap();
    assert!(activity.context_switches_per_sec.unwrap() > 0.0);
    assert!(activity.forks_per_sec.unwrap() > 0.0);
    assert!(m.vmstat.as_ref().unwrap().swap_out_pages_per_sec.unwrap() > 0.0);
    assert!(m.tcp.retrans_segs_per_sec.unwrap() > 0.0);
    let p = m.pressure.as_ref().unwrap();
    assert!(p.memory_some.unwrap().stall_ms_per_sec.unwrap() > 0.0);
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

fn failures(sample: &metricsd::collect::Sample, name: &str) -> u64 {
    sample
        .collectors
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no collector {name}"))
        .failures_total
}

#[test]
fn a_missing_file_gives_null_is_counted_logs_once_and_recovers() {
    capture_logs();
    let (dir, roots) = roots_copy_of_state1();
    let meminfo = roots.proc.join("meminfo");
    std::fs::remove_file(&meminfo).unwrap();
    std::fs::remove_file(roots.proc.join("net/snmp")).unwrap();
    std::fs::remove_file(roots.proc.join("net/dev")).unwrap();

    let mut collector = Collector::new(roots.clone(), &default_collect());
    for round in 1..=3 {
        let sample = collector.collect();
        let m = &sample.metrics;
        // The failing sources' figures are missing...
        assert_eq!(m.memory, None);
        assert_eq!(m.tcp.curr_estab, None);
        assert_eq!(m.tcp.retrans_segs_per_sec, None);
        assert_eq!(m.network, None);
        // ...the same collector's other sources, and everything else, are still measured.
        assert!(
            m.vmstat.is_some(),
            "vmstat is read by the memory collector too"
        );
        assert_eq!(m.tcp.in_use, Some(31));
        assert_eq!(m.load.unwrap().load1, 0.52);
        assert_eq!(m.processes.as_ref().unwrap().count, 5);
        assert_eq!(m.system.uptime_seconds, Some(12345));
        assert_eq!(
            m.cpu
                .as_ref()
                .unwrap()
                .per_core_percent
                .as_ref()
                .map(Vec::len),
            Some(2)
        );
        // Without MemTotal the top list still names processes, without a percentage.
        let top = &m.processes.as_ref().unwrap().top_memory;
        assert!(!top.is_empty());
        assert!(top.iter().all(|p| p.memory_percent.is_none()));
        let failed = collector.failed_collectors();
        for name in ["memory", "tcp", "network"] {
            assert!(failed.contains(&name), "{name} not in {failed:?}");
            assert_eq!(failures(&sample, name), round);
        }
        assert!(!failed.contains(&"cpu"));
        assert_eq!(failures(&sample, "cpu"), 0);
        // The stream form says null, never 0.
        let stream = snapshot(m.clone()).stream_json();
        assert!(stream["metrics"]["memory"]["memory_total_gb"].is_null());
        assert!(stream["metrics"]["network"]["active_connections"].is_null());
        let flat = snapshot(m.clone()).flat_json();
        assert!(flat["memory_total_mb"].is_null() && flat["network_rx_bytes"].is_null());
        assert_eq!(flat["load_avg_1m"], 0.52);
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
    let sample = collector.collect();
    assert_eq!(
        sample.metrics.memory.as_ref().unwrap().total_bytes,
        MEM_TOTAL
    );
    assert!(!collector.failed_collectors().contains(&"memory"));
    assert_eq!(failures(&sample, "memory"), 3, "a counter, not a gauge");
    drop(dir);
}

/// Info lines that mention `text`.
fn infos_mentioning(text: &str) -> usize {
    crate::common::logs::lines()
        .iter()
        .filter(|(level, _, msg)| *level == log::Level::Info && msg.contains(text))
        .count()
}

#[test]
fn a_collector_that_reads_again_says_so_and_its_next_failure_is_logged_again() {
    capture_logs();
    let (_dir, roots) = roots_copy_of_state1();
    let loadavg = roots.proc.join("loadavg");
    let loadavg_text = loadavg.display().to_string();
    let mut collector = Collector::new(roots, &default_collect());
    let back = format!("collector load: {loadavg_text} and every other source read again");
    for round in 1..=2 {
        std::fs::write(&loadavg, "garbage\n").unwrap();
        for _ in 0..3 {
            assert_eq!(collector.collect().metrics.load, None);
        }
        assert_eq!(
            warnings_mentioning(&loadavg_text),
            round,
            "one warning per failing spell"
        );
        std::fs::copy(fixture("state1/proc/loadavg"), &loadavg).unwrap();
        for _ in 0..2 {
            assert!(collector.collect().metrics.load.is_some());
        }
        assert_eq!(infos_mentioning(&back), round, "one line per recovery");
    }
}

#[test]
fn garbage_files_give_null_without_panicking() {
    capture_logs();
    let (_dir, roots) = roots_copy_of_state1();
    for rel in [
        "stat",
        "meminfo",
        "vmstat",
        "loadavg",
        "uptime",
        "net/dev",
        "net/snmp",
        "net/netstat",
        "net/sockstat",
        "diskstats",
        "self/mountinfo",
        "pressure/cpu",
        "sys/fs/file-nr",
    ] {
        std::fs::write(roots.proc.join(rel), "garbage \u{0} \\777 ::: -1\n\n").unwrap();
    }
    std::fs::write(roots.proc.join("42/stat"), "42 (x) y z").unwrap();
    let mut collector = Collector::new(roots, &default_collect());
    let m = collector.collect().metrics;
    assert_eq!(m.cpu, None);
    assert_eq!(m.activity, None);
    assert_eq!(m.memory, None);
    assert_eq!(m.vmstat, None);
    assert_eq!(m.load, None);
    assert_eq!(m.pressure, None);
    assert_eq!(m.filesystems, None);
    assert_eq!(m.disk_io, None);
    assert_eq!(m.network, None);
    assert_eq!(m.tcp, Default::default());
    assert_eq!(m.system.uptime_seconds, None);
    assert_eq!(m.system.file_descriptors_allocated, None);
    // The process scan does not depend on those files; a garbled stat is skipped.
    let procs = m.processes.unwrap();
    assert_eq!(procs.count, 4);
    assert!(!procs.top_memory.iter().any(|p| p.pid == 42));
    let failed = collector.failed_collectors();
    for name in [
        "cpu",
        "load",
        "memory",
        "pressure",
        "filesystem",
        "disk",
        "network",
        "tcp",
        "system",
    ] {
        assert!(failed.contains(&name), "{name} not in {failed:?}");
    }
}

#[test]
fn without_pressure_information_the_figures_are_null_and_not_a_failure() {
    capture_logs();
    let (_dir, roots) = roots_copy_of_state1();
    std::fs::remove_dir_all(roots.proc.join("pressure")).unwrap();
    let mut collector = Collector::new(roots, &default_collect());
    let sample = collector.collect();
    assert_eq!(sample.metrics.pressure, None);
    assert!(!collector.failed_collectors().contains(&"pressure"));
    let stream = snapshot(sample.metrics).stream_json();
    let pressure = stream["metrics"]["pressure"].as_object().unwrap();
    assert_eq!(pressure.len(), 20);
    assert!(pressure.values().all(|v| v.is_null()));
}

#[test]
fn without_ipv6_sockstat6_is_not_a_failure() {
    let (_dir, roots) = roots_copy_of_state1();
    std::fs::remove_file(roots.proc.join("net/sockstat6")).unwrap();
    let mut collector = Collector::new(roots, &default_collect());
    let sample = collector.collect();
    assert_eq!(sample.metrics.tcp.in_use, Some(25));
    assert!(!collector.failed_collectors().contains(&"tcp"));
}

#[test]
fn a_missing_proc_root_gives_an_empty_sample() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots::under(&dir.path().join("nothing"));
    let mut collector = Collector::new(roots, &default_collect());
    let sample = collector.collect();
    let m = sample.metrics;
    assert_eq!(
        (m.cpu, m.memory, m.network, m.processes),
        (None, None, None, None)
    );
    assert_eq!(m.system.uptime_seconds, None);
    assert!(
        collector.failed_collectors().len() >= 9,
        "{:?}",
        collector.failed_collectors()
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

#[test]
fn kernel_threads_are_read_once_and_a_reused_pid_afresh() {
    let (_dir, roots) = roots_copy_of_state1();
    let mut collector = Collector::new(roots.clone(), &default_collect());
    let first = collector.collect().metrics.processes.unwrap();
    assert_eq!((first.count, first.threads), (5, Some(15)));
    // pid 2 is a kernel thread (PF_KTHREAD): not read again while /proc
    // lists the same entry, so a stat that no longer reads changes nothing.
    let kthread = roots.proc.join("2");
    std::fs::write(kthread.join("stat"), "garbage").unwrap();
    let again = collector.collect().metrics.processes.unwrap();
    assert_eq!((again.count, again.threads), (5, Some(15)));
    // The pid is reused: a new /proc entry (a new inode) is read afresh.
    // (Made before the old one goes, so that the inode numbers differ.)
    let reused = roots.proc.join("2.new");
    std::fs::create_dir(&reused).unwrap();
    std::fs::write(
        reused.join("stat"),
        "2 (worker) S 1 2 2 0 -1 4194560 0 0 0 0 5 5 0 0 20 0 6 0 99999 1000 10 0\n",
    )
    .unwrap();
    std::fs::remove_dir_all(&kthread).unwrap();
    std::fs::rename(&reused, &kthread).unwrap();
    let reused = collector.collect().metrics.processes.unwrap();
    assert_eq!((reused.count, reused.threads), (5, Some(20)));
    assert!(reused
        .top_memory
        .iter()
        .any(|p| p.pid == 2 && p.name == "worker"));
}

#[test]
fn a_failed_baseline_gives_null_shares_and_rates_then_real_ones() {
    let (dir, roots) = roots_copy_of_state1();
    std::fs::remove_file(roots.proc.join("stat")).unwrap();
    std::fs::remove_file(roots.proc.join("vmstat")).unwrap();
    let mut collector = Collector::new(roots.clone(), &default_collect());

    // The files are back: the first good reading has nothing to compare with.
    copy_tree(&fixture("state1"), dir.path());
    let first = collector.collect();
    let m = &first.metrics;
    let cpu = m.cpu.as_ref().expect("cpu read");
    assert_eq!(
        (cpu.usage_percent, &cpu.per_core_percent, cpu.modes_percent),
        (None, &None, None)
    );
    assert!(cpu.seconds_total.user > 0.0, "counters are still given");
    let activity = m.activity.as_ref().expect("activity read");
    assert_eq!(activity.forks_total, stat("state1/proc/stat").forks);
    assert_eq!(
        (
            activity.context_switches_per_sec,
            activity.interrupts_per_sec,
            activity.forks_per_sec
        ),
        (None, None, None)
    );
    let vm = m.vmstat.as_ref().expect("vmstat read");
    assert_eq!(
        (
            vm.swap_in_pages_per_sec,
            vm.swap_out_pages_per_sec,
            vm.major_faults_per_sec
        ),
        (None, None, None)
    );
    let first = snapshot(first.metrics);
    let stream = first.stream_json();
    let metrics = &stream["metrics"];
    for (group, field) in [
        ("cpu", "cpu_usage_percent"),
        ("cpu", "cpu_per_core_percent"),
        ("cpu", "cpu_modes_percent"),
        ("system", "context_switches_per_sec"),
        ("system", "interrupts_per_sec"),
        ("system", "forks_per_sec"),
        ("memory", "swap_in_pages_per_sec"),
        ("memory", "swap_out_pages_per_sec"),
        ("memory", "major_faults_per_sec"),
    ] {
        let value = &metrics[group][field];
        assert!(
            value.is_null(),
            "{group}.{field} = {value} without a baseline"
        );
    }
    assert!(first.flat_json()["cpu_percent"].is_null());

    // The next reading has the first as its baseline: real figures.
    std::thread::sleep(Duration::from_millis(50));
    copy_tree(&fixture("state2"), dir.path());
    let second = collector.collect();
    let cpu = second.metrics.cpu.as_ref().unwrap();
    assert_eq!(cpu.usage_percent, Some(20.0));
    assert_eq!(cpu.per_core_percent, Some(vec![40.0, 0.0]));
    let modes = cpu.modes_percent.expect("modes");
    let sum: f64 = modes.named().iter().map(|(_, v)| v).sum();
    assert!((sum - 100.0).abs() < 1e-6, "{modes:?}");
    let activity = second.metrics.activity.as_ref().unwrap();
    assert!(activity.forks_per_sec.unwrap() > 0.0);
    let vm = second.metrics.vmstat.as_ref().unwrap();
    assert!(vm.major_faults_per_sec.unwrap() > 0.0);
    let stream = snapshot(second.metrics).stream_json();
    assert_eq!(stream["metrics"]["cpu"]["cpu_usage_percent"], 20.0);
    assert!(
        stream["metrics"]["system"]["forks_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn a_figure_that_is_not_finite_is_null_not_zero() {
    let metrics = Metrics {
        cpu: Some(metricsd::snapshot::CpuMetrics {
            usage_percent: Some(f64::NAN),
            per_core_percent: Some(vec![f64::INFINITY, 50.0]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let snap = snapshot(metrics);
    let stream = snap.stream_json();
    let cpu = &stream["metrics"]["cpu"];
    assert!(cpu["cpu_usage_percent"].is_null(), "{cpu}");
    assert_eq!(cpu["cpu_per_core_percent"], serde_json::json!([null, 50.0]));
    assert!(snap.flat_json()["cpu_percent"].is_null());
}
