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
    assert!(
        within(
            got as f64,
            before.min(after) as f64 - 2.0,
            before.max(after) as f64 + 2.0
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
    if let Ok(out) = ss {
        if out.status.success() {
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
    assert_eq!(m.per_core_percent.len(), cores);
    let parallelism = std::thread::available_parallelism().unwrap().get();
    assert!(parallelism <= cores, "{parallelism} > {cores}");
    assert!(m.per_core_percent.iter().all(|p| (0.0..=100.0).contains(p)));

    let busy = (b[0].1 - a[0].1) as f64;
    let idle = (b[0].2 - a[0].2) as f64;
    let independent = busy / (busy + idle) * 100.0;
    assert!(
        (m.usage_percent - independent).abs() <= 10.0,
        "cpu {} vs {independent}",
        m.usage_percent
    );
    // One core of `cores` was busy.
    assert!(m.usage_percent >= 100.0 / cores as f64 * 0.7);
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
            eprintln!("cannot create a mount namespace here, not checked: {text}");
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
