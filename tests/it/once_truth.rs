//! `metricsd once` and `once --flat` on the live host agree with independent
//! readings of /proc, statvfs and /etc/machine-id taken by the test itself.

use serde_json::Value;
use std::process::Command;
use std::time::SystemTime;

const GIB: f64 = (1u64 << 30) as f64;

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Runs `metricsd once` with a private state dir and the default excludes.
fn once(flat: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metricsd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricsd"));
    cmd.arg("--config").arg(&config).arg("once");
    if flat {
        cmd.arg("--flat");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("once prints JSON")
}

fn meminfo_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    [v[0], v[1], v[2]]
}

fn process_count() -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count() as u64
}

fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Cumulative (rx, tx) bytes over interfaces the default excludes keep.
fn net_bytes() -> (u64, u64) {
    let excluded = ["lo", "veth*", "docker*", "br-*", "virbr*"];
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':').unwrap();
        let name = name.trim();
        if excluded
            .iter()
            .any(|p| glob::Pattern::new(p).unwrap().matches(name))
        {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        rx += f[0];
        tx += f[8];
    }
    (rx, tx)
}

fn curr_estab() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "CurrEstab").unwrap();
    values[i].parse().unwrap()
}

fn statvfs_root() -> (u64, u64, u64) {
    let path = std::ffi::CString::new("/").unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut s) }, 0);
    let f = s.f_frsize as u64;
    (
        s.f_blocks as u64 * f,
        (s.f_blocks - s.f_bfree) as u64 * f,
        s.f_bavail as u64 * f,
    )
}

fn cpu_lines() -> usize {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

fn machine_id_uuid() -> Option<String> {
    let hex = std::fs::read_to_string("/etc/machine-id").ok()?;
    let h = hex.trim();
    (h.len() == 32).then(|| {
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
}

fn within(value: f64, low: f64, high: f64, slack: f64, what: &str) {
    assert!(
        value >= low - slack && value <= high + slack,
        "{what}: {value} not within [{low}, {high}] ± {slack}"
    );
}

/// Like [`within`], between two readings taken before and after, whichever
/// is larger.
fn around(value: f64, before: f64, after: f64, slack: f64, what: &str) {
    within(value, before.min(after), before.max(after), slack, what);
}

#[test]
fn stream_form_matches_the_host() {
    let load_before = loadavg();
    let procs_before = process_count();
    let up_before = uptime();
    let (rx_before, tx_before) = net_bytes();
    let estab_before = curr_estab();
    let s = once(false);
    let load_after = loadavg();
    let procs_after = process_count();
    let up_after = uptime();
    let (rx_after, tx_after) = net_bytes();
    let estab_after = curr_estab();
    let m = &s["metrics"];

    assert_eq!(
        m["memory"]["memory_total_gb"].as_f64().unwrap(),
        round2(meminfo_kib("MemTotal") as f64 * 1024.0 / GIB)
    );
    for (i, key) in ["load_avg_1min", "load_avg_5min", "load_avg_15min"]
        .iter()
        .enumerate()
    {
        around(
            m["cpu"][key].as_f64().unwrap(),
            load_before[i],
            load_after[i],
            0.01,
            key,
        );
    }
    let count = m["processes"]["process_count"].as_u64().unwrap();
    around(
        count as f64,
        procs_before as f64,
        procs_after as f64,
        5.0,
        "process_count",
    );
    within(
        m["system"]["uptime_seconds"].as_f64().unwrap(),
        up_before,
        up_after,
        1.0,
        "uptime",
    );
    assert_eq!(
        m["cpu"]["cpu_per_core_percent"].as_array().unwrap().len(),
        cpu_lines()
    );
    let cpu = m["cpu"]["cpu_usage_percent"].as_f64().unwrap();
    within(cpu, 0.0, 100.0, 0.0, "cpu_usage_percent");

    let (total, used, avail) = statvfs_root();
    let root = &m["disk"]["disk_usage"]["/"];
    assert_eq!(
        root["total_gb"].as_f64().unwrap(),
        round2(total as f64 / GIB)
    );
    within(
        root["used_gb"].as_f64().unwrap(),
        used as f64 / GIB,
        used as f64 / GIB,
        0.5,
        "used_gb",
    );
    within(
        root["free_gb"].as_f64().unwrap(),
        avail as f64 / GIB,
        avail as f64 / GIB,
        0.5,
        "free_gb",
    );

    let ifaces = m["network"]["interfaces"].as_object().unwrap();
    assert!(!ifaces.contains_key("lo"), "lo is excluded by default");
    let rx: u64 = ifaces
        .values()
        .map(|i| i["rx_bytes"].as_u64().unwrap())
        .sum();
    let tx: u64 = ifaces
        .values()
        .map(|i| i["tx_bytes"].as_u64().unwrap())
        .sum();
    within(
        rx as f64,
        rx_before as f64,
        rx_after as f64,
        0.0,
        "rx_bytes",
    );
    within(
        tx as f64,
        tx_before as f64,
        tx_after as f64,
        0.0,
        "tx_bytes",
    );
    let estab = m["network"]["active_connections"].as_u64().unwrap();
    around(
        estab as f64,
        estab_before as f64,
        estab_after as f64,
        3.0,
        "active_connections",
    );

    if let Some(id) = machine_id_uuid() {
        assert_eq!(s["machine_id"].as_str().unwrap(), id);
    }
    let event = uuid::Uuid::parse_str(s["event_id"].as_str().unwrap()).unwrap();
    assert_eq!(event.get_version_num(), 7);
}

#[test]
fn flat_form_matches_the_host() {
    let load_before = loadavg();
    let procs_before = process_count();
    let up_before = uptime();
    let (rx_before, tx_before) = net_bytes();
    let f = once(true);
    let load_after = loadavg();
    let procs_after = process_count();
    let up_after = uptime();
    let (rx_after, tx_after) = net_bytes();

    assert_eq!(
        f["memory_total_mb"].as_u64().unwrap(),
        meminfo_kib("MemTotal") / 1024
    );
    let used_mb = f["memory_used_mb"].as_u64().unwrap() as f64;
    let independent_used = (meminfo_kib("MemTotal") - meminfo_kib("MemAvailable")) as f64 / 1024.0;
    within(
        used_mb,
        independent_used,
        independent_used,
        200.0,
        "memory_used_mb",
    );
    for (i, key) in ["load_avg_1m", "load_avg_5m", "load_avg_15m"]
        .iter()
        .enumerate()
    {
        around(
            f[key].as_f64().unwrap(),
            load_before[i],
            load_after[i],
            0.01,
            key,
        );
    }
    around(
        f["process_count"].as_f64().unwrap(),
        procs_before as f64,
        procs_after as f64,
        5.0,
        "process_count",
    );
    within(
        f["uptime_seconds"].as_f64().unwrap(),
        up_before,
        up_after,
        1.0,
        "uptime_seconds",
    );
    let (total, used, avail) = statvfs_root();
    assert_eq!(
        f["disk_total_gb"].as_f64().unwrap(),
        round2(total as f64 / GIB)
    );
    let pct = used as f64 / (used + avail) as f64 * 100.0;
    within(
        f["disk_percent"].as_f64().unwrap(),
        pct,
        pct,
        0.5,
        "disk_percent",
    );
    within(
        f["network_rx_bytes"].as_f64().unwrap(),
        rx_before as f64,
        rx_after as f64,
        0.0,
        "network_rx_bytes",
    );
    within(
        f["network_tx_bytes"].as_f64().unwrap(),
        tx_before as f64,
        tx_after as f64,
        0.0,
        "network_tx_bytes",
    );
    if let Some(id) = machine_id_uuid() {
        assert_eq!(f["machine_id"].as_str().unwrap(), id);
    }
    assert!(f["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        f["timestamp"].as_str().unwrap().len(),
        "2026-11-23T10:00:00.000Z".len()
    );
}

#[test]
fn df_agrees_on_the_root_filesystem() {
    let Ok(out) = Command::new("df")
        .args(["-B1", "--output=size,used,avail", "/"])
        .output()
    else {
        crate::common::skip_or_fail("df not found");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let s = once(false);
    let root = &s["metrics"]["disk"]["disk_usage"]["/"];
    assert_eq!(root["total_gb"].as_f64().unwrap(), round2(v[0] / GIB));
    within(
        root["used_gb"].as_f64().unwrap(),
        v[1] / GIB,
        v[1] / GIB,
        0.5,
        "df used",
    );
    within(
        root["free_gb"].as_f64().unwrap(),
        v[2] / GIB,
        v[2] / GIB,
        0.5,
        "df avail",
    );
}

/// Every field of SPEC §3.3 is in `once`'s stream form, and on this host
/// (which has every source) none is null.
#[test]
fn every_depth_field_is_present_and_measured() {
    let s = once(false);
    let m = &s["metrics"];
    let present = |v: &Value, path: &str| {
        let mut at = v;
        for key in path.split('.') {
            at = at
                .get(key)
                .unwrap_or_else(|| panic!("{path}: no {key} in {at}"));
        }
        assert!(!at.is_null(), "{path} is null");
        at.clone()
    };
    let modes = present(m, "cpu.cpu_modes_percent");
    let sum: f64 = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
    ]
    .iter()
    .map(|k| modes[*k].as_f64().unwrap())
    .sum();
    assert!((sum - 100.0).abs() <= 0.1, "modes sum to {sum}");
    for key in [
        "memory_free_gb",
        "memory_buffers_gb",
        "memory_cached_gb",
        "memory_shared_gb",
        "memory_slab_gb",
        "swap_in_pages_per_sec",
        "swap_out_pages_per_sec",
        "major_faults_per_sec",
    ] {
        present(&m["memory"], key);
    }
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        for resource in [
            "cpu_some",
            "memory_some",
            "memory_full",
            "io_some",
            "io_full",
        ] {
            for field in ["avg10", "avg60", "avg300", "stall_ms_per_sec"] {
                present(&m["pressure"], &format!("{resource}_{field}"));
            }
        }
    }
    let root = &m["disk"]["disk_usage"]["/"];
    for key in ["fs_type", "device", "inodes_total", "inodes_used"] {
        present(root, key);
    }
    let devices = present(m, "disk.disk_io.devices");
    for (name, d) in devices.as_object().unwrap() {
        for key in [
            "read_mb_per_sec",
            "write_mb_per_sec",
            "reads_per_sec",
            "writes_per_sec",
            "util_percent",
            "read_await_ms",
            "write_await_ms",
            "in_flight",
        ] {
            present(d, key);
        }
        let util = d["util_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&util), "{name} util {util}");
    }
    for key in [
        "in_use",
        "time_wait",
        "orphan",
        "retrans_segs_per_sec",
        "listen_overflows_per_sec",
        "listen_drops_per_sec",
        "resets_sent_per_sec",
    ] {
        present(&m["network"]["tcp"], key);
    }
    for (_, i) in m["network"]["interfaces"].as_object().unwrap() {
        for key in ["rx_packets", "tx_packets", "oper_state"] {
            present(i, key);
        }
    }
    for key in ["threads", "zombies", "top_cpu_processes"] {
        present(&m["processes"], key);
    }
    for key in [
        "context_switches_per_sec",
        "interrupts_per_sec",
        "forks_per_sec",
        "file_descriptors_allocated",
        "file_descriptors_max",
        "clock_synced",
        "clock_max_error_ms",
        "kernel",
        "os",
        "boot_time",
    ] {
        present(&m["system"], key);
    }
    let boot = present(&m["system"], "boot_time");
    let boot = humantime::parse_rfc3339(boot.as_str().unwrap()).expect("RFC 3339");
    let up = m["system"]["uptime_seconds"].as_f64().unwrap();
    let since_boot = SystemTime::now()
        .duration_since(boot)
        .unwrap()
        .as_secs_f64();
    assert!((since_boot - up).abs() <= 5.0, "boot_time vs uptime");
    assert!(
        m["units"].is_object(),
        "units is an object (empty without cgroup v2)"
    );
}

/// The pids /proc lists now.
fn pids() -> std::collections::HashSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn out_of_descriptors_the_process_figures_are_null_never_short() {
    use std::os::unix::process::CommandExt;
    // Limits from "too few to start the scan" to "enough": somewhere in
    // between, opening a process's stat file fails with EMFILE.
    let limits: Vec<u64> = (16..=48).step_by(2).collect();
    let before = pids();
    let runs: Vec<(u64, std::process::Child, tempfile::TempDir)> = limits
        .iter()
        .map(|&limit| {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("metricsd.toml");
            std::fs::write(&config, "").unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricsd"));
            cmd.env("METRICSD_STATE_DIR", dir.path())
                .arg("--config")
                .arg(&config)
                .arg("once")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            (limit, cmd.spawn().unwrap(), dir)
        })
        .collect();
    let outputs: Vec<(u64, std::process::Output)> = runs
        .into_iter()
        .map(|(limit, child, _dir)| (limit, child.wait_with_output().unwrap()))
        .collect();
    let after = pids();
    // Every process that lived through the whole window was there to count.
    let lived_through = before.intersection(&after).count() as u64;
    let (mut counted, mut refused) = (0, 0);
    for (limit, out) in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let Ok(snapshot) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue; // too few descriptors to get as far as a snapshot
        };
        let processes = &snapshot["metrics"]["processes"];
        match processes["process_count"].as_u64() {
            Some(count) => {
                counted += 1;
                assert!(
                    count >= lived_through,
                    "limit {limit}: process_count {count}, yet {lived_through} processes \
                     lived through the run: a short count, not null\n{stderr}"
                );
            }
            None => {
                assert!(processes["threads"].is_null(), "limit {limit}: {processes}");
                if stderr.contains("reading a process's stat file") {
                    refused += 1;
                }
            }
        }
    }
    assert!(counted > 0, "no limit was enough for a whole scan");
    assert!(
        refused > 0,
        "no limit ran out of descriptors inside the scan: the range misses the case"
    );
}

/// `metricsd once` as nobody in a private pid and mount namespace, beside
/// two root processes (sh and sleep), after `setup` ran there as root;
/// its processes figures, or None (skipped) where no such namespace can be
/// made.
fn processes_in_a_pid_namespace(setup: &str, env: &str) -> Option<Value> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        crate::common::skip_or_fail("needs root for a pid namespace and setpriv");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let config = dir.path().join("metricsd.toml");
    std::fs::write(&config, "").unwrap();
    let script = format!(
        "{setup} || exit 90; sleep 60 & \
         setpriv --reuid 65534 --regid 65534 --clear-groups \
         env METRICSD_STATE_DIR={state} {env} {exe} --config {config} once; \
         code=$?; kill $!; exit $code",
        state = dir.path().join("state").display(),
        exe = env!("CARGO_BIN_EXE_metricsd"),
        config = config.display(),
    );
    // Bounded: a daemon that hung would otherwise hold the suite.
    let out = Command::new("timeout")
        .args([
            "60",
            "unshare",
            "-m",
            "-p",
            "-f",
            "--propagation",
            "private",
        ])
        .args(["--mount-proc", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(90) || stderr.contains("unshare failed") {
        crate::common::skip_or_fail(&format!("no private pid namespace here: {stderr}"));
        return None;
    }
    assert!(out.status.success(), "{stderr}");
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("once prints JSON");
    Some(snapshot["metrics"]["processes"].clone())
}

#[test]
fn processes_hidden_by_hidepid_are_counted_and_their_threads_not_guessed() {
    // hidepid=1: other users' processes are listed, but their files refuse
    // with EPERM.
    let Some(processes) = processes_in_a_pid_namespace("mount -o remount,hidepid=1 /proc", "")
    else {
        return;
    };
    // sh, sleep and the daemon itself, visible or not.
    let count = processes["process_count"]
        .as_u64()
        .expect("a process count");
    assert!(count >= 3, "hidden processes left out: {processes}");
    // Their states are unknown: no zombie or thread count made of the
    // visible ones, and not the kernel's task count either, which inside a
    // pid namespace covers the whole host.
    assert!(processes["zombies"].is_null(), "{processes}");
    assert!(processes["threads"].is_null(), "{processes}");
}

#[test]
fn with_the_scan_off_inside_a_pid_namespace_threads_are_null_not_the_hosts() {
    let Some(processes) = processes_in_a_pid_namespace("true", "METRICSD_COLLECT_TOP_PROCESSES=0")
    else {
        return;
    };
    assert!(
        processes["process_count"].as_u64() >= Some(3),
        "{processes}"
    );
    // /proc/loadavg's task count is the whole host's.
    assert!(processes["threads"].is_null(), "{processes}");
    // And without hidden pids and with the scan on, threads are counted.
    let Some(scanned) = processes_in_a_pid_namespace("true", "") else {
        return;
    };
    let threads = scanned["threads"]
        .as_u64()
        .expect("threads counted by the scan");
    assert!((3..100).contains(&threads), "{scanned}");
}
