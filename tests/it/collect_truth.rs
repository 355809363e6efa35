//! The collector on this live host agrees with independent readings taken by
//! the test itself (its own parsing of /proc, libc statvfs, `df`, `ss`).
//! Values that move while the test runs are bracketed by readings taken
//! before and after the sample.

use metricsd::collect::processes::ProcessScanner;
use metricsd::collect::{Collector, Roots};
use metricsd::config::{CollectConfig, Config};
use metricsd::snapshot::Metrics;
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn default_collect() -> CollectConfig {
    Config::default().collect
}

fn sample(config: &CollectConfig) -> Metrics {
    Collector::new(Roots::default(), config).collect().metrics
}

fn proc_text(rel: &str) -> String {
    std::fs::read_to_string(Path::new("/proc").join(rel)).unwrap()
}

fn meminfo_bytes(key: &str) -> u64 {
    let text = proc_text("meminfo");
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(key))
        .unwrap_or_else(|| panic!("no {key}"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn loadavg() -> [f64; 3] {
    let text = proc_text("loadavg");
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map(|s| s.parse().unwrap())
        .collect();
    [v[0], v[1], v[2]]
}

fn numeric_proc_entries() -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
        })
        .count() as u64
}

fn uptime_secs() -> f64 {
    proc_text("uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// name → (rx bytes, tx bytes)
fn net_dev() -> HashMap<String, (u64, u64)> {
    proc_text("net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect();
            Some((name.trim().to_string(), (v[0], v[8])))
        })
        .collect()
}

fn curr_estab() -> u64 {
    let text = proc_text("net/snmp");
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let i = tcp[0]
        .split_whitespace()
        .position(|h| h == "CurrEstab")
        .unwrap();
    tcp[1].split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// (read bytes, written bytes) summed over whole, non-virtual disks.
fn disk_bytes() -> (u64, u64) {
    let mut sum = (0, 0);
    for line in proc_text("diskstats").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = f[2];
        let is_virtual = ["loop", "ram", "zram", "dm-", "md"]
            .iter()
            .any(|p| name.starts_with(p));
        if is_virtual
            || !Path::new("/sys/block")
                .join(name.replace('/', "!"))
                .exists()
        {
            continue;
        }
        sum.0 += f[5].parse::<u64>().unwrap() * 512;
        sum.1 += f[9].parse::<u64>().unwrap() * 512;
    }
    sum
}

/// (total, used, avail) bytes of `path` by statvfs.
fn statvfs(path: &str) -> (u64, u64, u64) {
    let c = CString::new(path).unwrap();
    // SAFETY: zeroed statvfs is valid; statvfs writes into it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    let unit = s.f_frsize as u64;
    (
        s.f_blocks as u64 * unit,
        (s.f_blocks - s.f_bfree) as u64 * unit,
        s.f_bavail as u64 * unit,
    )
}

fn within(value: f64, low: f64, high: f64) -> bool {
    low <= value && value <= high
}

/// Readings taken around `Collector::new` and `collect` give bounds on the
/// rate the collector can have reported: the counter moved at least
/// (inner delta) and at most (outer delta), over at least the inner and at
/// most the outer interval.
struct Bracket {
    t0: Instant,
    t1: Instant,
    t2: Instant,
    t3: Instant,
}

impl Bracket {
    fn bounds(&self, r0: u64, r1: u64, r2: u64, r3: u64) -> (f64, f64) {
        let outer = (self.t3 - self.t0).as_secs_f64();
        let inner = (self.t2 - self.t1).as_secs_f64();
        (
            r2.saturating_sub(r1) as f64 / outer,
            r3.saturating_sub(r0) as f64 / inner,
        )
    }
}

#[test]
fn memory_matches_meminfo() {
    let m = sample(&default_collect()).memory.expect("memory");
    assert_eq!(m.total_bytes, meminfo_bytes("MemTotal"));
    assert_eq!(m.swap_total_bytes, meminfo_bytes("SwapTotal"));
    let available = meminfo_bytes("MemAvailable") as f64;
    assert!(
        (m.available_bytes as f64 - available).abs() <= available * 0.05,
        "MemAvailable {} vs {available}",
        m.available_bytes
    );
}

#[test]
fn load_averages_match_loadavg() {
    let before = loadavg();
    let m = sample(&default_collect());
    let after = loadavg();
    let l = m.load.expect("load");
    let got = [l.load1, l.load5, l.load15];
    for i in 0..3 {
        let (low, high) = (before[i].min(after[i]), before[i].max(after[i]));
        assert!(
            within(got[i], low - 0.01, high + 0.01),
            "load {i}: {} not in [{low}, {high}]",
            got[i]
        );
    }
}

#[test]
fn process_count_matches_proc_entries() {
    let config = CollectConfig {
        top_processes: 0,
        ..default_collect()
    };
    let before = numeric_proc_entries();
    let m = sample(&config);
    let after = numeric_proc_entries();
    let (low, high) = (before.min(after), before.max(after));
    let count = m.processes.as_ref().expect("processes").count;
    assert!(
        within(count as f64, low as f64 - 5.0, high as f64 + 5.0),
        "count {count} vs {before}..{after}"
    );
    // Without the per-process scan: threads from the kernel's task count,
    // zombies not measured (null, not 0).
    let procs = m.processes.as_ref().unwrap();
    assert_eq!(procs.zombies, None);
    assert!(procs.top_cpu.is_empty() && procs.top_memory.is_empty());
    let threads = procs.threads.expect("threads in the initial pid namespace");
    assert!(threads >= count, "{threads} threads");
    // The sampling thread itself is running.
    assert!(m.activity.expect("activity").procs_running >= 1);
}

#[test]
fn uptime_and_boot_id_match_and_uptime_stays_fresh() {
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let first = collector.collect().metrics.system;
    let first_uptime = first.uptime_seconds.expect("uptime");
    let now = uptime_secs();
    assert!(
        (first_uptime as f64 - now).abs() <= 2.0,
        "uptime {first_uptime} vs {now}"
    );
    assert_eq!(
        first.boot_id.as_deref(),
        Some(proc_text("sys/kernel/random/boot_id").trim())
    );
    // The file is kept open and re-read: later samples must see time pass.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let uptime = collector.collect().metrics.system.uptime_seconds.unwrap();
        let now = uptime_secs();
        assert!((uptime as f64 - now).abs() <= 2.0);
        if uptime > first_uptime {
            break;
        }
        assert!(Instant::now() < deadline, "uptime never advanced");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn root_filesystem_matches_statvfs_and_df() {
    const SLACK: f64 = 64.0 * 1024.0 * 1024.0;
    let before = statvfs("/");
    let m = sample(&default_collect());
    let after = statvfs("/");
    let root = m
        .filesystems
        .as_ref()
        .expect("filesystems")
        .iter()
        .find(|u| u.mount == "/")
        .expect("/ is reported");
    assert_eq!(root.total_bytes, before.0);
    let used = root.used_bytes as f64;
    let (lo, hi) = (before.1.min(after.1) as f64, before.1.max(after.1) as f64);
    assert!(
        within(used, lo - SLACK, hi + SLACK),
        "used {used} vs {lo}..{hi}"
    );
    let avail = root.avail_bytes as f64;
    let (lo, hi) = (before.2.min(after.2) as f64, before.2.max(after.2) as f64);
    assert!(
        within(avail, lo - SLACK, hi + SLACK),
        "avail {avail} vs {lo}..{hi}"
    );

    let df = Command::new("df")
        .args(["-B1", "--output=size,used,avail", "/"])
        .output()
        .expect("df runs");
    assert!(
        df.status.success(),
        "{}",
        String::from_utf8_lossy(&df.stderr)
    );
    let text = String::from_utf8(df.stdout).unwrap();
    let v: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(root.total_bytes, v[0], "df size");
    assert!(
        (root.used_bytes as f64 - v[1] as f64).abs() <= 4.0 * SLACK,
        "df used {} vs {}",
        v[1],
        root.used_bytes
    );
    // Use% as df computes it: used / (used + avail), rounded up by df.
    let df_percent = v[1] as f64 / (v[1] + v[2]) as f64 * 100.0;
    assert!((root.usage_percent() - df_percent).abs() < 1.0);
}

#[test]
fn network_counters_and_rates_lie_between_readings() {
    // Include lo, the one interface this test can put traffic on.
    let config = CollectConfig {
        exclude_interfaces: vec![],
        ..default_collect()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });

    let t0 = Instant::now();
    let r0 = net_dev();
    let mut collector = Collector::new(Roots::default(), &config);
    let r1 = net_dev();
    let t1 = Instant::now();
    const PAYLOAD: usize = 8 * 1024 * 1024;
    let mut client = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 1 << 16];
    for _ in 0..PAYLOAD / chunk.len() {
        client.write_all(&chunk).unwrap();
    }
    drop(client);
    assert_eq!(sink.join().unwrap(), PAYLOAD);
    std::thread::sleep(Duration::from_millis(50));
    let t2 = Instant::now();
    let r2 = net_dev();
    let m = collector.collect().metrics;
    let r3 = net_dev();
    let t3 = Instant::now();
    let bracket = Bracket { t0, t1, t2, t3 };

    let interfaces = &m.network.as_ref().expect("network").interfaces;
    assert!(!interfaces.is_empty());
    for i in interfaces {
        let (Some(b), Some(a)) = (r2.get(&i.name), r3.get(&i.name)) else {
            continue; // appeared or vanished meanwhile
        };
        assert!(
            within(i.rx_bytes as f64, b.0 as f64, a.0 as f64),
            "{} rx",
            i.name
        );
        assert!(
            within(i.tx_bytes as f64, b.1 as f64, a.1 as f64),
            "{} tx",
            i.name
        );
        if let (Some(z), Some(o)) = (r0.get(&i.name), r1.get(&i.name)) {
            let (low, high) = bracket.bounds(z.0, o.0, b.0, a.0);
            assert!(
                within(i.rx_bytes_per_sec, low, high),
                "{} rx rate {} not in [{low}, {high}]",
                i.name,
                i.rx_bytes_per_sec
            );
            let (low, high) = bracket.bounds(z.1, o.1, b.1, a.1);
            assert!(within(i.tx_bytes_per_sec, low, high), "{} tx rate", i.name);
        }
    }
    // The loopback traffic was seen, so the lower bound on lo was not 0.
    let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
    assert!(r2["lo"].0 - r1["lo"].0 >= PAYLOAD as u64);
    assert!(lo.rx_bytes_per_sec > 0.0);

    // With the defaults lo is not reported.
    let m = sample(&default_collect());
    assert!(m.network.unwrap().interfaces.iter().all(|i| i.name != "lo"));
}

#[test]
fn disk_io_rate_lies_between_readings() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t0 = Instant::now();
    let r0 = disk_bytes();
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let r1 = disk_bytes();
    let t1 = Instant::now();
    let mut file = std::fs::File::create(dir.path().join("blob")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..16 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    let t2 = Instant::now();
    let r2 = disk_bytes();
    let io = collector.collect().metrics.disk_io.expect("disk");
    let r3 = disk_bytes();
    let t3 = Instant::now();
    let bracket = Bracket { t0, t1, t2, t3 };
    let (low, high) = bracket.bounds(r0.1, r1.1, r2.1, r3.1);
    assert!(
        within(io.write_bytes_per_sec, low, high),
        "write {} not in [{low}, {high}]",
        io.write_bytes_per_sec
    );
    let (low, high) = bracket.bounds(r0.0, r1.0, r2.0, r3.0);
    assert!(within(io.read_bytes_per_sec, low, high), "read");
    if r0 != (0, 0) {
        // A host with a physical disk: the fsync'd 16 MiB reached it.
        assert!(
            r2.1 - r1.1 >= 16 << 20,
            "only {} bytes written",
            r2.1 - r1.1
        );
        assert!(io.write_bytes_per_sec > 0.0);
    }
}

#[test]
fn established_connections_match_snmp_and_ss() {
    // Hold a few connections open over IPv4 and, where available, IPv6
    // (both ends of a loopback connection count).
    let mut held = Vec::new();
    let mut v6_pairs = 0;
    for (addr, pairs) in [("127.0.0.1:0", 4), ("[::1]:0", 3)] {
        let Ok(listener) = TcpListener::bind(addr) else {
            continue;
        };
        for _ in 0..pairs {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            held.push((client, server));
            if addr.starts_with('[') {
                v6_pairs += 1;
            }
        }
    }
    let before = curr_estab();
    let m = sample(&default_collect());
    let after = curr_estab();
    let got = m.tcp.curr_estab.expect("CurrEstab");
    // Other tests on this host open and close connections meanwhile.
    let slack = 2.0 + before.max(after) as f64 * 0.05;
    assert!(
        within(
            got as f64,
            before.min(after) as f64 - slack,
            before.max(after) as f64 + slack
        ),
        "CurrEstab {got} vs {before}..{after}"
    );
    assert!(
        got >= 2 * held.len() as u64,
        "{got} < our own {}",
        2 * held.len()
    );

    // IPv6 sockets are in the same counter: /proc/net/snmp6 has no Tcp section.
    let snmp6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
    assert!(!snmp6.lines().any(|l| l.starts_with("Tcp")));

    // ss walks every socket; it agrees loosely (connections come and go).
    let ss = Command::new("ss")
        .args(["-tanH", "state", "established", "state", "close-wait"])
        .output();
    match ss {
        Err(_) => crate::common::skip_or_fail("ss not found (.ci/run installs iproute2)"),
        Ok(out) => {
            assert!(out.status.success(), "ss failed: {out:?}");
            let listed = String::from_utf8_lossy(&out.stdout).lines().count() as f64;
            assert!(
                (got as f64 - listed).abs() <= 3.0 + listed * 0.1,
                "CurrEstab {got} vs ss {listed}"
            );
            if v6_pairs > 0 {
                let v6 = Command::new("ss")
                    .args(["-6tanH", "state", "established"])
                    .output()
                    .unwrap();
                let v6 = String::from_utf8_lossy(&v6.stdout).lines().count();
                assert!(v6 >= 2 * v6_pairs, "ss sees {v6} IPv6 sockets");
            }
        }
    }
    drop(held);
}

#[test]
fn cpu_cores_and_usage_match_proc_stat() {
    fn times() -> Vec<(String, u64, u64)> {
        proc_text("stat")
            .lines()
            .filter(|l| l.starts_with("cpu"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let v: Vec<u64> = f[1..9].iter().map(|s| s.parse().unwrap()).collect();
                let idle = v[3] + v[4];
                (f[0].to_string(), v.iter().sum::<u64>() - idle, idle)
            })
            .collect()
    }
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let a = times();
    // Keep one core busy for most of the interval.
    let stop = Instant::now() + Duration::from_millis(900);
    let burner = std::thread::spawn(move || {
        let mut x = 0u64;
        while Instant::now() < stop {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        x
    });
    burner.join().unwrap();
    let b = times();
    let m = collector.collect().metrics.cpu.expect("cpu");

    let cores = a.iter().filter(|(n, _, _)| n != "cpu").count();
    let per_core = m
        .per_core_percent
        .expect("per-core shares after a baseline");
    let usage = m.usage_percent.expect("usage after a baseline");
    assert_eq!(per_core.len(), cores);
    let parallelism = std::thread::available_parallelism().unwrap().get();
    assert!(parallelism <= cores, "{parallelism} > {cores}");
    assert!(per_core.iter().all(|p| (0.0..=100.0).contains(p)));

    let busy = (b[0].1 - a[0].1) as f64;
    let idle = (b[0].2 - a[0].2) as f64;
    let independent = busy / (busy + idle) * 100.0;
    assert!(
        (usage - independent).abs() <= 10.0,
        "cpu {usage} vs {independent}"
    );
    // One core of `cores` was busy.
    assert!(usage >= 100.0 / cores as f64 * 0.7);
}

#[test]
fn top_processes_match_statm() {
    fn resident_pages(pid: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        text.split_whitespace().nth(1)?.parse().ok()
    }
    fn all_resident() -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((resident_pages(&pid.to_string())?, pid))
            })
            .collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
    // Make this process large: 256 MiB, touched.
    let ballast = vec![1u8; 256 << 20];
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let total = meminfo_bytes("MemTotal") as f64;
    let me = std::process::id();

    let before = all_resident();
    let m = sample(&default_collect());
    let after = all_resident();
    let top = &m.processes.as_ref().expect("processes").top_memory;
    assert_eq!(top.len(), 5);
    assert!(top
        .windows(2)
        .all(|w| w[0].memory_percent >= w[1].memory_percent));
    for p in top {
        let Some(pages) = resident_pages(&p.pid.to_string()) else {
            continue; // exited since
        };
        let independent = pages as f64 * page / total * 100.0;
        assert!(
            (p.memory_percent.unwrap() - independent).abs() <= 0.5,
            "{} {}: {} vs {independent}",
            p.pid,
            p.name,
            p.memory_percent.unwrap()
        );
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)) {
            assert_eq!(p.name, comm.trim_end_matches('\n'));
        }
    }
    // If this process is clearly in the top 5 before and after, it is listed.
    let clearly_top = |list: &[(u64, u32)]| {
        list.iter()
            .position(|(_, pid)| *pid == me)
            .is_some_and(|i| {
                i < 5
                    && list
                        .get(5)
                        .is_none_or(|sixth| list[i].0 > sixth.0 * 11 / 10)
            })
    };
    if clearly_top(&before) && clearly_top(&after) {
        assert!(top.iter().any(|p| p.pid == me), "{me} missing from {top:?}");
    }
    drop(ballast);
}

#[test]
fn stat_files_of_exited_processes_are_closed() {
    let mut scanner = ProcessScanner::new(Path::new("/proc"));
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let scan = scanner.scan(5).unwrap();
    assert!(scan.count > 0);
    assert!(scanner.kept_open().contains(&pid));
    child.kill().unwrap();
    child.wait().unwrap();
    scanner.scan(5).unwrap();
    assert!(!scanner.kept_open().contains(&pid));
}

/// A new mount shows up on the next sample and an unmounted one goes away:
/// on the real /proc the mount table is re-read only when poll() reports a
/// change. The test re-runs itself inside a private mount namespace
/// (`unshare -m`) so that its mounts never touch the host.
#[test]
fn new_mounts_are_seen_on_the_next_sample() {
    const CHILD: &str = "METRICSD_TEST_IN_MOUNT_NAMESPACE";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let run = |extra: &[&str]| {
            Command::new("unshare")
                .args(extra)
                .args(["-m", "--propagation", "private"])
                .arg(&exe)
                .args([
                    "--exact",
                    "collect_truth::new_mounts_are_seen_on_the_next_sample",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
        };
        let probe = Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .status();
        let extra: &[&str] = match probe {
            Ok(s) if s.success() => &[],
            // Unprivileged: a user namespace where we map to root.
            _ => &["-r"],
        };
        let out = run(extra).expect("run unshare");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && text.contains("unshare failed") {
            crate::common::skip_or_fail(&format!("cannot create a mount namespace here: {text}"));
            return;
        }
        assert!(out.status.success(), "in the namespace:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }

    // In the private mount namespace.
    let config = CollectConfig {
        exclude_fs_types: vec![],
        exclude_mounts: vec![],
        ..default_collect()
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let point = dir.path().to_str().unwrap().to_string();
    let mut collector = Collector::new(Roots::default(), &config);
    let has = |m: metricsd::collect::Sample| {
        let mounts = m.metrics.filesystems.expect("filesystems");
        mounts.into_iter().find(|u| u.mount == point)
    };
    assert!(has(collector.collect()).is_none());
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", &point])
        .status()
        .unwrap();
    assert!(status.success(), "mount");
    let mounted = has(collector.collect()).expect("new mount seen");
    assert_eq!(mounted.total_bytes, 4 << 20);
    assert!(has(collector.collect()).is_some(), "still there");
    let status = Command::new("umount").arg(&point).status().unwrap();
    assert!(status.success(), "umount");
    assert!(has(collector.collect()).is_none(), "unmount seen");
}

// ------------------------------------------------- depth (SPEC §3.3) fields

/// `key value` lines of /proc/stat (ctxt, processes, ...).
fn stat_counter(key: &str) -> u64 {
    proc_text("stat")
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/stat"))
}

/// The ten counters of the `cpu` line.
fn cpu_line() -> [u64; 10] {
    let text = proc_text("stat");
    let line = text.lines().find(|l| l.starts_with("cpu ")).unwrap();
    let mut v = [0u64; 10];
    for (slot, f) in v.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = f.parse().unwrap();
    }
    v
}

/// (state, utime + stime) of a pid from /proc/<pid>/stat.
fn pid_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?;
    Some((f[0].chars().next()?, ticks))
}

/// Every process's state letter.
fn all_states() -> Vec<char> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| pid_stat(e.file_name().to_str()?.parse().ok()?))
        .map(|(state, _)| state)
        .collect()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// A child process that keeps one core busy until killed.
struct BusyChild(std::process::Child);

impl BusyChild {
    fn start() -> BusyChild {
        BusyChild(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn sh"),
        )
    }
}

impl Drop for BusyChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cpu_modes_match_proc_stat_deltas_with_a_busy_child() {
    let busy_child = BusyChild::start();
    let child = busy_child.0.id();
    let child_ticks = || pid_stat(child).expect("busy child's stat").1;
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let a = cpu_line();
    let child_a = child_ticks();
    std::thread::sleep(Duration::from_millis(1500));
    let child_b = child_ticks();
    let b = cpu_line();
    let cpu = collector.collect().metrics.cpu.expect("cpu");
    let d: Vec<f64> = (0..10).map(|i| b[i].saturating_sub(a[i]) as f64).collect();
    let total: f64 = d[..8].iter().sum();
    let independent = [
        ("user", d[0] - d[8]),
        ("nice", d[1] - d[9]),
        ("system", d[2]),
        ("idle", d[3]),
        ("iowait", d[4]),
        ("irq", d[5]),
        ("softirq", d[6]),
        ("steal", d[7]),
        ("guest", d[8] + d[9]),
    ];
    let mode_shares = cpu.modes_percent.expect("modes after a baseline");
    let modes = mode_shares.named();
    let sum: f64 = modes.iter().map(|(_, v)| v).sum();
    assert!((sum - 100.0).abs() <= 0.1, "modes sum to {sum}");
    for ((name, got), (_, ticks)) in modes.iter().zip(independent) {
        let expected = ticks / total * 100.0;
        // The collector's window is a few ms wider than the test's.
        assert!(
            (got - expected).abs() <= 5.0,
            "{name}: {got} vs {expected} ({modes:?})"
        );
    }
    // The busy child's own ticks are busy time the collector must count.
    let ours = child_b - child_a;
    assert!(ours > 0, "the busy child ran");
    let child_share = ours as f64 / total * 100.0;
    let busy = 100.0 - mode_shares.idle - mode_shares.iowait;
    assert!(
        busy >= child_share - 5.0,
        "busy {busy} below the busy child's own {child_share}"
    );
    // Raw seconds agree with the counters.
    let hz = clock_ticks();
    let user_secs = (b[0] - b[8]) as f64 / hz;
    assert!((cpu.seconds_total.user - user_secs).abs() <= 5.0);
}

#[test]
fn top_cpu_process_is_the_busy_child() {
    let child = BusyChild::start();
    let pid = child.0.id();
    let config = CollectConfig {
        // Every process that used CPU is listed, so the child must be.
        top_processes: 10_000,
        ..default_collect()
    };
    let t0 = Instant::now();
    let (_, r0) = pid_stat(pid).unwrap();
    let mut collector = Collector::new(Roots::default(), &config);
    let (_, r1) = pid_stat(pid).unwrap();
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let t2 = Instant::now();
    let (_, r2) = pid_stat(pid).unwrap();
    let procs = collector.collect().metrics.processes.expect("processes");
    let (_, r3) = pid_stat(pid).unwrap();
    let t3 = Instant::now();
    let (low, high) = Bracket { t0, t1, t2, t3 }.bounds(r0, r1, r2, r3);
    let hz = clock_ticks();
    // A tick of slack each side: CPU time is counted in whole ticks.
    let (low, high) = ((low - 1.0) / hz * 100.0, (high + 1.0) / hz * 100.0);
    let listed = procs
        .top_cpu
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("{pid} not in {:?}", procs.top_cpu));
    assert_eq!(listed.name, "sh");
    assert!(
        within(listed.cpu_percent, low, high),
        "child cpu {}% not in [{low}, {high}]",
        listed.cpu_percent
    );
    assert!(
        listed.cpu_percent <= 100.5,
        "one thread is at most one core"
    );
    assert!(procs
        .top_cpu
        .windows(2)
        .all(|w| w[0].cpu_percent >= w[1].cpu_percent));
}

#[test]
fn zombies_include_a_real_zombie() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not reaped: once it has exited it is a zombie until `wait`.
    assert!(
        crate::common::wait_until(Duration::from_secs(10), || pid_stat(pid)
            .is_some_and(|(s, _)| s == 'Z')),
        "child never became a zombie"
    );
    let before = all_states().iter().filter(|s| **s == 'Z').count() as u64;
    let procs = sample(&default_collect()).processes.expect("processes");
    let after = all_states().iter().filter(|s| **s == 'Z').count() as u64;
    let zombies = procs
        .zombies
        .expect("zombies are measured with top_processes > 0");
    assert!(zombies >= 1, "our zombie was not counted");
    assert!(
        within(
            zombies as f64,
            before.min(after) as f64 - 2.0,
            before.max(after) as f64 + 2.0
        ),
        "zombies {zombies} vs {before}..{after}"
    );
    child.wait().unwrap();
}

#[test]
fn threads_match_the_kernels_task_count() {
    // The second figure of loadavg's "running/total" is every task the
    // kernel schedules: the threads of all processes.
    let tasks = || -> u64 {
        let text = proc_text("loadavg");
        let field = text.split_whitespace().nth(3).unwrap();
        field.split_once('/').unwrap().1.parse().unwrap()
    };
    // 32 threads of this process held until both readings are taken.
    let release = std::sync::Arc::new(std::sync::Barrier::new(33));
    let extra: Vec<_> = (0..32)
        .map(|_| {
            let release = release.clone();
            std::thread::spawn(move || {
                release.wait();
            })
        })
        .collect();
    let before = tasks();
    let procs = sample(&default_collect()).processes.expect("processes");
    let after = tasks();
    release.wait();
    for t in extra {
        t.join().unwrap();
    }
    // Other tests start and end threads meanwhile: a little slack, well
    // under the 32 held ones.
    let slack = 8.0 + before as f64 * 0.02;
    assert!(
        within(
            procs.threads.expect("threads") as f64,
            before.min(after) as f64 - slack,
            before.max(after) as f64 + slack
        ),
        "threads {:?} vs {before}..{after}",
        procs.threads
    );
}

#[test]
fn forks_and_context_switches_lie_between_readings() {
    let t0 = Instant::now();
    let (f0, c0) = (stat_counter("processes"), stat_counter("ctxt"));
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let (f1, c1) = (stat_counter("processes"), stat_counter("ctxt"));
    let t1 = Instant::now();
    const FORKS: u64 = 20;
    for _ in 0..FORKS {
        Command::new("true").status().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let t2 = Instant::now();
    let (f2, c2) = (stat_counter("processes"), stat_counter("ctxt"));
    let a = collector.collect().metrics.activity.expect("activity");
    let (f3, c3) = (stat_counter("processes"), stat_counter("ctxt"));
    let forks_per_sec = a.forks_per_sec.expect("forks/s after a baseline");
    let t3 = Instant::now();
    let bracket = Bracket { t0, t1, t2, t3 };
    assert!(within(a.forks_total as f64, f2 as f64, f3 as f64));
    assert!(f2 - f1 >= FORKS, "our forks were counted by the kernel");
    let (low, high) = bracket.bounds(f0, f1, f2, f3);
    assert!(
        within(forks_per_sec, low, high),
        "forks/s {forks_per_sec} not in [{low}, {high}]"
    );
    assert!(forks_per_sec >= FORKS as f64 / (t3 - t0).as_secs_f64());
    let (low, high) = bracket.bounds(c0, c1, c2, c3);
    let ctxt_per_sec = a.context_switches_per_sec.expect("ctxt/s after a baseline");
    assert!(within(ctxt_per_sec, low, high), "ctxt/s");
    let btime = stat_counter("btime");
    assert_eq!(a.boot_time_unix, btime);
}

/// name → (writes completed, sectors written, ms doing I/O, ms writing) of whole disks.
fn disk_devices() -> HashMap<String, (u64, u64, u64, u64)> {
    proc_text("diskstats")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (f[2].to_string(), (n(7), n(9), n(12), n(10)))
        })
        .collect()
}

#[test]
fn disk_device_writes_and_utilisation_with_an_fsyncd_write() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t0 = Instant::now();
    let r0 = disk_devices();
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let r1 = disk_devices();
    let t1 = Instant::now();
    let mut file = std::fs::File::create(dir.path().join("blob")).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    for _ in 0..16 {
        file.write_all(&chunk).unwrap();
        file.sync_data().unwrap();
    }
    let t2 = Instant::now();
    let r2 = disk_devices();
    let io = collector.collect().metrics.disk_io.expect("disk");
    let r3 = disk_devices();
    let t3 = Instant::now();
    let bracket = Bracket { t0, t1, t2, t3 };
    assert!(
        !io.devices.is_empty() || r0.keys().all(|n| !Path::new("/sys/block").join(n).exists()),
        "no whole disk reported"
    );
    let mut saw_our_write = false;
    for d in &io.devices {
        let (Some(a), Some(b), Some(c), Some(e)) = (
            r0.get(&d.name),
            r1.get(&d.name),
            r2.get(&d.name),
            r3.get(&d.name),
        ) else {
            continue;
        };
        let (low, high) = bracket.bounds(a.0, b.0, c.0, e.0);
        assert!(
            within(d.writes_per_sec, low, high),
            "{} writes/s {} not in [{low}, {high}]",
            d.name,
            d.writes_per_sec
        );
        let (low, high) = bracket.bounds(a.1 * 512, b.1 * 512, c.1 * 512, e.1 * 512);
        assert!(
            within(d.write_bytes_per_sec, low, high),
            "{} bytes/s",
            d.name
        );
        // ms of I/O per ms: the same bracket, in percent (capped at 100).
        let (low, high) = bracket.bounds(a.2, b.2, c.2, e.2);
        let (low, high) = ((low / 10.0).min(100.0), (high / 10.0).min(100.0));
        assert!(
            within(d.util_percent, low - 0.01, high + 0.01),
            "{} util {} not in [{low}, {high}]",
            d.name,
            d.util_percent
        );
        if e.2 == a.2 {
            // The kernel's I/O time stood still over the whole window.
            assert_eq!(d.util_percent, 0.0, "{}: {d:?}", d.name);
        }
        assert!(d.written_bytes_total >= c.1 * 512 && d.written_bytes_total <= e.1 * 512);
        if (c.1 - b.1) * 512 >= 16 << 20 {
            saw_our_write = true;
            assert!(d.writes_per_sec > 0.0, "{}: {d:?}", d.name);
            // The kernel counts I/O time in jiffies: 16 quick writes can
            // all fall within one. Whenever its count moved inside the
            // collector's window, the utilisation must show it.
            if c.2 > b.2 {
                assert!(d.util_percent > 0.0, "{}: {d:?}", d.name);
            }
            // Δ(ms writing) / Δ(writes) over the collector's window, which
            // lies between the inner (r1..r2) and outer (r0..r3) readings.
            let low = (c.3 - b.3) as f64 / (e.0 - a.0) as f64;
            let high = (e.3 - a.3) as f64 / (c.0 - b.0).max(1) as f64;
            assert!(
                within(d.write_await_ms, low - 0.01, high + 0.01),
                "{} write await {} ms not in [{low}, {high}]",
                d.name,
                d.write_await_ms
            );
        }
    }
    if !io.devices.is_empty() {
        assert!(saw_our_write, "the fsync'd 16 MiB reached no reported disk");
    }
}

/// (inuse, orphan, tw) of TCP in sockstat, plus TCP6 inuse.
fn sockstat() -> (u64, u64, u64) {
    let pick = |text: &str, label: &str, key: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(label)).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let i = f.iter().position(|k| *k == key).unwrap();
        f[i + 1].parse().unwrap()
    };
    let v4 = proc_text("net/sockstat");
    let v6 = std::fs::read_to_string("/proc/net/sockstat6").unwrap_or_default();
    let inuse6 = if v6.is_empty() {
        0
    } else {
        pick(&v6, "TCP6:", "inuse")
    };
    (
        pick(&v4, "TCP:", "inuse") + inuse6,
        pick(&v4, "TCP:", "orphan"),
        pick(&v4, "TCP:", "tw"),
    )
}

/// A counter of the `Tcp:` lines of /proc/net/snmp (names, then values).
fn snmp_tcp(key: &str) -> u64 {
    let text = proc_text("net/snmp");
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Tcp {key} in /proc/net/snmp"))
}

#[test]
fn tcp_sockets_match_sockstat_with_real_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        held.push((client, server));
    }
    // Closing the client side first leaves it in TIME_WAIT.
    for _ in 0..5 {
        let (client, server) = held.pop().unwrap();
        drop(client);
        let mut server = server;
        let _ = server.read(&mut [0u8; 1]);
        drop(server);
    }
    let t0 = Instant::now();
    let r0 = snmp_tcp("RetransSegs");
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let r1 = snmp_tcp("RetransSegs");
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let before = sockstat();
    let t2 = Instant::now();
    let r2 = snmp_tcp("RetransSegs");
    let tcp = collector.collect().metrics.tcp;
    let r3 = snmp_tcp("RetransSegs");
    let t3 = Instant::now();
    let after = sockstat();
    let check = |got: Option<u64>, a: u64, b: u64, what: &str| {
        let got = got.unwrap_or_else(|| panic!("{what} missing"));
        let slack = 5.0 + a.max(b) as f64 * 0.1;
        assert!(
            within(got as f64, a.min(b) as f64 - slack, a.max(b) as f64 + slack),
            "{what} {got} vs {a}..{b}"
        );
        got
    };
    let in_use = check(tcp.in_use, before.0, after.0, "in_use");
    check(tcp.orphan, before.1, after.1, "orphan");
    let time_wait = check(tcp.time_wait, before.2, after.2, "time_wait");
    assert!(in_use > 2 * held.len() as u64, "{in_use}: ours are 11");
    assert!(time_wait >= 5, "our 5 closed connections wait: {time_wait}");
    // Counters are there, and the rate lies between independent readings.
    assert!(tcp.retrans_segs_total.is_some() && tcp.listen_drops_total.is_some());
    let (low, high) = Bracket { t0, t1, t2, t3 }.bounds(r0, r1, r2, r3);
    let retrans = tcp
        .retrans_segs_per_sec
        .expect("retrans/s after a baseline");
    assert!(
        within(retrans, low, high),
        "retrans/s {retrans} not in [{low}, {high}]"
    );
    drop(held);
}

#[test]
fn root_inodes_match_statvfs() {
    let inodes = || {
        let c = CString::new("/").unwrap();
        // SAFETY: zeroed statvfs is valid; statvfs writes into it.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out-pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        (s.f_files as u64, (s.f_files - s.f_ffree) as u64)
    };
    let before = inodes();
    let m = sample(&default_collect());
    let after = inodes();
    let root = m
        .filesystems
        .unwrap()
        .into_iter()
        .find(|u| u.mount == "/")
        .expect("/ is reported");
    assert_eq!(root.inodes_total, before.0);
    let used = root.inodes_used() as f64;
    let (lo, hi) = (before.1.min(after.1) as f64, before.1.max(after.1) as f64);
    assert!(
        within(used, lo - 1000.0, hi + 1000.0),
        "inodes used {used} vs {lo}..{hi}"
    );
    // fs_type and device as the mount table names them.
    let mounts = proc_text("self/mountinfo");
    let line = mounts
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    let after_dash: Vec<&str> = line
        .split(" - ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(root.fs_type, after_dash[0]);
    assert_eq!(root.device, after_dash[1]);
}

#[test]
fn file_descriptors_match_file_nr() {
    let file_nr = || -> (u64, u64) {
        let text = proc_text("sys/fs/file-nr");
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        (f[0], f[2])
    };
    // Hold some descriptors so the figure is not trivially small.
    let _held: Vec<std::fs::File> = (0..50)
        .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
        .collect();
    let before = file_nr();
    let s = sample(&default_collect()).system;
    let after = file_nr();
    let got = s.file_descriptors_allocated.expect("allocated");
    let slack = 100.0 + before.0 as f64 * 0.1;
    assert!(
        within(
            got as f64,
            before.0.min(after.0) as f64 - slack,
            before.0.max(after.0) as f64 + slack
        ),
        "allocated {got} vs {}..{}",
        before.0,
        after.0
    );
    assert!(got >= 50);
    assert_eq!(s.file_descriptors_max, Some(before.1));
}

#[test]
fn pressure_matches_proc_pressure() {
    if !Path::new("/proc/pressure/cpu").exists() {
        // The collector's behaviour without PSI is checked on fixtures
        // (collect_parsers::without_pressure_information...).
        crate::common::skip_or_fail("this kernel has no /proc/pressure");
        return;
    }
    /// (avg10, total) of resource/kind.
    fn psi(resource: &str, kind: &str) -> Option<(f64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?;
        let line = text.lines().find(|l| l.starts_with(kind))?;
        let get = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap()
                .to_string()
        };
        Some((get("avg10").parse().ok()?, get("total").parse().ok()?))
    }
    let all = || -> Vec<_> {
        ["cpu", "memory", "io"]
            .iter()
            .map(|r| (psi(r, "some"), psi(r, "full")))
            .collect()
    };
    let _busy = BusyChild::start();
    let t0 = Instant::now();
    let r0 = all();
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let r1 = all();
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let t2 = Instant::now();
    let before: Vec<_> = ["cpu", "memory", "io"]
        .iter()
        .map(|r| (psi(r, "some"), psi(r, "full")))
        .collect();
    let p = collector.collect().metrics.pressure.expect("pressure");
    let after: Vec<_> = ["cpu", "memory", "io"]
        .iter()
        .map(|r| (psi(r, "some"), psi(r, "full")))
        .collect();
    let t3 = Instant::now();
    let bracket = Bracket { t0, t1, t2, t3 };
    // (collected, reading before the baseline, after it, before the
    // sample, after it)
    type Reading = Option<(f64, u64)>;
    let pick = |i: usize, full: bool| -> [Reading; 4] {
        let of = |r: &Vec<(Reading, Reading)>| if full { r[i].1 } else { r[i].0 };
        [of(&r0), of(&r1), of(&before), of(&after)]
    };
    let lines = [
        (&p.cpu_some, pick(0, false), "cpu some"),
        (&p.memory_some, pick(1, false), "memory some"),
        (&p.memory_full, pick(1, true), "memory full"),
        (&p.io_some, pick(2, false), "io some"),
        (&p.io_full, pick(2, true), "io full"),
    ];
    for (got, [r0, r1, b, a], what) in lines {
        let (Some(b), Some(a)) = (b, a) else {
            assert!(got.is_none(), "{what}: the kernel has no such line");
            continue;
        };
        let got = got.unwrap_or_else(|| panic!("{what} missing"));
        // avg10 is recomputed every 2 s: it is one of the two readings.
        let (lo, hi) = (b.0.min(a.0), b.0.max(a.0));
        assert!(
            within(got.avg10, lo, hi),
            "{what} avg10 {} vs {lo}..{hi}",
            got.avg10
        );
        assert!(
            within(got.total_us as f64, b.1 as f64, a.1 as f64),
            "{what} total"
        );
        // The stall rate of every line, between the bounds its totals
        // give over the two windows around the baseline and the sample.
        let stall = got
            .stall_ms_per_sec
            .expect("a rate from the previous reading");
        let (r0, r1) = (r0.unwrap().1, r1.unwrap().1);
        let (low, high) = bracket.bounds(r0, r1, b.1, a.1);
        let (low, high) = ((low / 1000.0).min(1000.0), (high / 1000.0).min(1000.0));
        assert!(
            within(stall, low - 0.01, high + 0.01),
            "{what} stall {stall} ms/s not in [{low}, {high}]"
        );
    }
}

#[test]
fn memory_breakdown_and_faults_match_meminfo_and_vmstat() {
    const MIB: f64 = 1024.0 * 1024.0;
    // What other tests running at the same moment can move in a few ms:
    // free and cached memory a lot, the rest little (so a collector that
    // gave 0, or swapped two of them, fails even where they are small).
    let keys = ["MemFree", "Buffers", "Cached", "Shmem", "Slab"];
    let slack = [64.0 * MIB, 2.0 * MIB, 64.0 * MIB, 2.0 * MIB, 8.0 * MIB];
    let vmstat = |key: &str| -> u64 {
        proc_text("vmstat")
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    let t0 = Instant::now();
    let f0 = vmstat("pgmajfault");
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let f1 = vmstat("pgmajfault");
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let t2 = Instant::now();
    let f2 = vmstat("pgmajfault");
    let before: Vec<u64> = keys.iter().map(|k| meminfo_bytes(k)).collect();
    let swap_before = (vmstat("pswpin"), vmstat("pswpout"));
    let m = collector.collect().metrics;
    let swap_after = (vmstat("pswpin"), vmstat("pswpout"));
    let f3 = vmstat("pgmajfault");
    let t3 = Instant::now();
    let after: Vec<u64> = keys.iter().map(|k| meminfo_bytes(k)).collect();
    let mem = m.memory.expect("memory");
    let got = [
        mem.free_bytes,
        mem.buffers_bytes,
        mem.cached_bytes,
        mem.shared_bytes,
        mem.slab_bytes,
    ];
    for i in 0..keys.len() {
        let (lo, hi) = (
            before[i].min(after[i]) as f64,
            before[i].max(after[i]) as f64,
        );
        assert!(
            within(got[i] as f64, lo - slack[i], hi + slack[i]),
            "{} {} vs {lo}..{hi}",
            keys[i],
            got[i]
        );
    }
    let vm = m.vmstat.expect("vmstat");
    let now = vmstat("pgmajfault");
    assert!(vm.major_faults_total <= now && vm.major_faults_total + 100_000 >= now);
    // Swap counters between readings taken right around the collect (on a
    // host without swap all are 0, and equal).
    assert!((swap_before.0..=swap_after.0).contains(&vm.swap_in_pages_total));
    assert!((swap_before.1..=swap_after.1).contains(&vm.swap_out_pages_total));
    let (low, high) = Bracket { t0, t1, t2, t3 }.bounds(f0, f1, f2, f3);
    let faults = vm.major_faults_per_sec.expect("faults/s after a baseline");
    assert!(
        within(faults, low, high),
        "major faults/s {faults} not in [{low}, {high}]"
    );
}

#[test]
fn clock_kernel_and_os_match_independent_readings() {
    // SAFETY: an all-zero timex is valid; modes 0 only reads.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    let s = sample(&default_collect()).system;
    if state < 0 {
        assert_eq!(
            s.clock_synced, None,
            "adjtimex fails here: null, not a guess"
        );
    } else {
        assert_eq!(s.clock_synced, Some(tx.status & libc::STA_UNSYNC == 0));
        // The maximum error grows by 0.5 ms/s while unsynchronised.
        let ms = tx.maxerror as f64 / 1000.0;
        let got = s.clock_max_error_ms.unwrap();
        assert!((got - ms).abs() <= 50.0, "max error {got} vs {ms} ms");
    }
    let uname = Command::new("uname").arg("-r").output().unwrap();
    let release = String::from_utf8(uname.stdout).unwrap();
    assert_eq!(s.kernel.as_deref(), Some(release.trim()));
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap();
    let pretty = text
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(s.os.as_deref(), Some(pretty));
}

#[test]
fn every_collector_succeeds_on_this_host() {
    let mut collector = Collector::new(Roots::default(), &default_collect());
    let sample = collector.collect();
    let failed: Vec<_> = sample.collectors.iter().filter(|c| !c.ok).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(sample.collectors.len() >= 11);
    assert!(sample
        .collectors
        .iter()
        .all(|c| c.duration < Duration::from_secs(5)));
    let m = &sample.metrics;
    assert!(m.cpu.is_some() && m.memory.is_some() && m.processes.is_some());
    assert!(m.system.uptime_seconds.is_some() && m.system.boot_id.is_some());
}

/// How many of a process's descriptors are interfaces' operstate files.
fn operstate_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.ends_with("operstate"))
                .count()
        })
        .unwrap_or(0)
}

/// Runs the daemon in a private network namespace with `BRIDGES` bridges
/// under `prlimit --nofile=<nofile>`, and returns how many operstate files
/// it keeps open once `samples` snapshots are queued and the count has
/// reached `expected` (or the deadline passed). None when the namespace
/// cannot be made here.
fn operstate_kept(nofile: &str, expected: usize, samples: u64) -> Option<usize> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metricsd.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nstate_dir = {:?}\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let script = format!(
        "mount -t sysfs sysfs /sys && ip link set lo up || exit 90; \
         i=0; while [ $i -lt {BRIDGES} ]; do i=$((i+1)); ip link add b$i type bridge || exit 90; done; \
         exec prlimit --nofile={nofile} {exe} --config {config} run",
        exe = env!("CARGO_BIN_EXE_metricsd"),
        config = config.display(),
    );
    let mut child = Command::new("unshare")
        .args(["-n", "-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run unshare");
    let pid = child.id();
    let queued = || {
        let out = Command::new(env!("CARGO_BIN_EXE_metricsd"))
            .args(["--config", config.to_str().unwrap(), "queue", "stats"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["pending"].as_u64())
            .unwrap_or(0)
    };
    let (mut kept, mut exited) = (0, None);
    // `queue stats` is a process of its own: asked at most every 200 ms.
    let mut asked = Instant::now() - Duration::from_secs(1);
    crate::common::wait_until(Duration::from_secs(30), || {
        exited = child.try_wait().ok().flatten();
        kept = operstate_fds(pid);
        if exited.is_some() {
            return true;
        }
        if kept != expected || asked.elapsed() < Duration::from_millis(200) {
            return false;
        }
        asked = Instant::now();
        queued() >= samples
    });
    if let Some(status) = exited {
        let err = crate::common::stderr_of(&mut child);
        if status.code() == Some(90) || err.contains("unshare failed") {
            crate::common::skip_or_fail(&format!(
                "no private network namespace with bridges: {err}"
            ));
            return None;
        }
        panic!("the daemon exited ({status}): {err}");
    }
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    Some(kept)
}

const BRIDGES: usize = 40;

#[test]
fn operstate_files_are_kept_open_once_the_raised_limit_allows() {
    // A soft limit of 256 (a sixteenth: 16 kept files) raised to the hard
    // 4096 (256): from then on all 40 are kept open.
    if let Some(kept) = operstate_kept("256:4096", BRIDGES, 2) {
        assert_eq!(kept, BRIDGES, "operstate files kept open after the raise");
    }
    // A hard limit of 256 too: no more than 16, however many samples.
    if let Some(kept) = operstate_kept("256:256", 16, 4) {
        assert_eq!(kept, 16, "operstate files kept open under a limit of 256");
    }
}
