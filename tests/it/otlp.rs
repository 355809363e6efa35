//! OTLP/HTTP through the real binary (SPEC §5.6), checked by an independent
//! decoder: a Python receiver using the official `opentelemetry-proto`
//! package, which writes each request as JSON for the test to read.

use crate::common::daemon::Setup;
use crate::common::receivers::{http_get, otlp_available, OtlpReceiver};
use crate::common::wait_for;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn sections(url: &str) -> String {
    format!(
        "[otlp]\nurl = {url:?}\nsplay = \"0s\"\ngzip = true\nretry_backoff = [\"200ms\"]\n\
         resource_attributes = {{ \"deployment.environment\" = \"it\" }}\n"
    )
}

fn attrs(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let text = v["string_value"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            (kv["key"].as_str().unwrap().to_string(), text)
        })
        .collect()
}

fn boot_time_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    btime * 1_000_000_000
}

/// A point's number, as_double or as_int (which the JSON form gives as a string).
fn value(point: &Value) -> f64 {
    point["as_double"].as_f64().unwrap_or_else(|| {
        point["as_int"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| point["as_int"].as_f64())
            .unwrap_or_else(|| panic!("no value in {point}"))
    })
}

/// What the test reads itself, before the daemon starts and after the
/// requests: every point's value must lie between the two.
struct Reading {
    cpu_ticks: u64,
    uptime_s: f64,
    mem_free: f64,
    /// Received bytes per interface.
    rx_bytes: BTreeMap<String, u64>,
    /// `total` of the `some` line of /proc/pressure/cpu (µs), where PSI is on.
    cpu_stall_us: Option<u64>,
}

impl Reading {
    fn now() -> Reading {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu: Vec<u64> = stat.lines().next().unwrap()["cpu".len()..]
            .split_whitespace()
            .take(8)
            .map(|v| v.parse().unwrap())
            .collect();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
        let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
        Reading {
            cpu_ticks: cpu.iter().sum(),
            uptime_s: uptime.split_whitespace().next().unwrap().parse().unwrap(),
            mem_free: meminfo_bytes("MemFree"),
            rx_bytes: dev
                .lines()
                .skip(2)
                .filter_map(|l| {
                    let (name, rest) = l.split_once(':')?;
                    Some((
                        name.trim().to_string(),
                        rest.split_whitespace().next()?.parse().ok()?,
                    ))
                })
                .collect(),
            cpu_stall_us: std::fs::read_to_string("/proc/pressure/cpu")
                .ok()
                .and_then(|text| {
                    let some = text.lines().find(|l| l.starts_with("some "))?;
                    some.split_whitespace()
                        .find_map(|f| f.strip_prefix("total="))?
                        .parse()
                        .ok()
                }),
        }
    }
}

/// A /proc/meminfo field, in bytes.
fn meminfo_bytes(field: &str) -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    kib * 1024.0
}

/// The points' values against the test's own readings of /proc.
fn values_are_the_hosts(metrics: &BTreeMap<String, Value>, before: &Reading, after: &Reading) {
    let points = |name: &str, shape: &str| -> Vec<Value> {
        metrics[name][shape]["data_points"]
            .as_array()
            .unwrap()
            .clone()
    };
    let hz = metricsd::procfs::clock_ticks_per_sec();
    // CPU time: the modes add up to the whole time since boot.
    let cpu_s: f64 = points("system.cpu.time", "sum").iter().map(value).sum();
    let (low, high) = (before.cpu_ticks as f64 / hz, after.cpu_ticks as f64 / hz);
    assert!(
        cpu_s >= low - 0.02 && cpu_s <= high + 0.02,
        "system.cpu.time sums to {cpu_s} s, /proc/stat {low}..{high}"
    );
    // Utilization: ratios (not percentages) that share the interval.
    let shares: Vec<f64> = points("system.cpu.utilization", "gauge")
        .iter()
        .map(value)
        .collect();
    assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)), "{shares:?}");
    let total: f64 = shares.iter().sum();
    assert!((total - 1.0).abs() < 0.01, "utilization sums to {total}");
    // Memory: the states partition MemTotal.
    let states = points("system.memory.usage", "sum");
    let memory: f64 = states.iter().map(value).sum();
    let mem_total = meminfo_bytes("MemTotal");
    assert!(
        (memory - mem_total).abs() <= 1024.0,
        "memory states sum to {memory}, MemTotal {mem_total}"
    );
    // Each state is its own field: free is MemFree, near the readings
    // around it (the parallel suite moves it by hundreds of MiB; another
    // state in its place would be GiBs off).
    let free = states
        .iter()
        .find(|p| attrs(&p["attributes"])["system.memory.state"] == "free")
        .map(value)
        .unwrap();
    let (low, high) = (
        before.mem_free.min(after.mem_free),
        before.mem_free.max(after.mem_free),
    );
    let slack = 1024.0 * 1024.0 * 1024.0;
    assert!(
        free >= low - slack && free <= high + slack,
        "free {free}, MemFree {low}..{high}"
    );
    let uptime = value(&points("system.uptime", "gauge")[0]);
    assert!(
        uptime >= before.uptime_s.floor() - 1.0 && uptime <= after.uptime_s + 1.0,
        "uptime {uptime}, /proc/uptime {}..{}",
        before.uptime_s,
        after.uptime_s
    );
    // Received bytes of each interface, from /proc/net/dev.
    let mut checked = 0;
    for p in points("system.network.io", "sum") {
        let a = attrs(&p["attributes"]);
        if a["network.io.direction"] != "receive" {
            continue;
        }
        let name = &a["network.interface.name"];
        let (low, high) = (before.rx_bytes[name] as f64, after.rx_bytes[name] as f64);
        let got = value(&p);
        assert!(
            got >= low && got <= high,
            "{name} rx {got}, /proc/net/dev {low}..{high}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no received bytes to check");
    // Pressure: the stall time between the readings, and every average as
    // a ratio for each resource and kind the stall time has.
    let (Some(low), Some(high)) = (before.cpu_stall_us, after.cpu_stall_us) else {
        return;
    };
    let key = |p: &Value| {
        let a = attrs(&p["attributes"]);
        (
            a["system.linux.pressure.resource"].clone(),
            a["system.linux.pressure.kind"].clone(),
        )
    };
    let stall = points("system.linux.pressure.stall_time", "sum");
    let cpu_some = stall
        .iter()
        .find(|p| key(p) == ("cpu".into(), "some".into()))
        .map(value)
        .expect("no cpu/some stall time");
    let (low, high) = (low as f64 / 1e6, high as f64 / 1e6);
    assert!(
        cpu_some >= low && cpu_some <= high,
        "cpu some stall {cpu_some} s, /proc/pressure/cpu {low}..{high}"
    );
    let mut keys: Vec<_> = stall.iter().map(key).collect();
    keys.sort();
    for name in ["avg10", "avg60", "avg300"] {
        let name = format!("system.linux.pressure.{name}");
        let metric = metrics
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(metric["unit"], "1", "{name}");
        let averages = points(&name, "gauge");
        let mut got: Vec<_> = averages.iter().map(key).collect();
        got.sort();
        assert_eq!(got, keys, "{name}");
        assert!(
            averages.iter().all(|p| (0.0..=1.0).contains(&value(p))),
            "{name}: {averages:?}"
        );
    }
}

fn history_times_ns(setup: &Setup) -> Vec<u64> {
    let (_, body) = http_get(setup.port, "/api/history?limit=10000").unwrap();
    serde_json::from_slice::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let t = humantime::parse_rfc3339(r["timestamp"].as_str().unwrap()).unwrap();
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        })
        .collect()
}

#[test]
fn requests_decode_with_the_official_package_and_follow_the_conventions() {
    if !otlp_available() {
        // CI installs python3-protobuf and opentelemetry-proto.
        crate::common::skip_or_fail("python3 with opentelemetry-proto is not available");
        return;
    }
    let receiver = OtlpReceiver::start();
    let setup = Setup::new("1s", "node_id = \"otlp-host\"", &sections(&receiver.url()));
    let before = Reading::now();
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("three requests", WAIT, || receiver.requests().len() >= 3);
    let times = history_times_ns(&setup);
    let requests = receiver.requests();
    // After the requests were taken: each was sampled before this reading.
    let after = Reading::now();
    let boot = boot_time_ns();

    for record in &requests {
        let headers = &record["headers"];
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["content-encoding"], "gzip");
        assert!(headers["user-agent"]
            .as_str()
            .unwrap()
            .starts_with("metricsd/"));
        for rm in record["request"]["resource_metrics"].as_array().unwrap() {
            let resource = attrs(&rm["resource"]["attributes"]);
            assert_eq!(resource["host.name"], "otlp-host");
            assert!(!resource["host.id"].is_empty());
            assert_eq!(resource["os.type"], "linux");
            assert_eq!(resource["service.name"], "metricsd");
            assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(resource["deployment.environment"], "it");
            let scopes = rm["scope_metrics"].as_array().unwrap();
            assert_eq!(scopes.len(), 1);
            assert_eq!(scopes[0]["scope"]["name"], "metricsd");
            let metrics: BTreeMap<String, Value> = scopes[0]["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["name"].as_str().unwrap().to_string(), m.clone()))
                .collect();
            for (name, unit) in [
                ("system.cpu.time", "s"),
                ("system.cpu.utilization", "1"),
                ("system.cpu.load_average.1m", "{thread}"),
                ("system.memory.usage", "By"),
                ("system.memory.utilization", "1"),
                ("system.filesystem.usage", "By"),
                ("system.disk.io", "By"),
                ("system.disk.operations", "{operation}"),
                ("system.network.io", "By"),
                ("system.network.packets", "{packet}"),
                ("system.process.count", "{process}"),
                ("system.uptime", "s"),
                ("system.linux.memory.available", "By"),
            ] {
                let m = metrics
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing"));
                assert_eq!(m["unit"], unit, "{name}");
            }
            values_are_the_hosts(&metrics, &before, &after);
            // Counters: cumulative monotonic Sums from boot time.
            let cpu = &metrics["system.cpu.time"]["sum"];
            assert_eq!(
                cpu["aggregation_temporality"],
                "AGGREGATION_TEMPORALITY_CUMULATIVE"
            );
            assert_eq!(cpu["is_monotonic"], true);
            let points = cpu["data_points"].as_array().unwrap();
            let modes: Vec<String> = points
                .iter()
                .map(|p| attrs(&p["attributes"])["cpu.mode"].clone())
                .collect();
            for mode in ["user", "system", "idle", "iowait", "interrupt", "steal"] {
                assert!(
                    modes.contains(&mode.to_string()),
                    "no cpu.mode {mode}: {modes:?}"
                );
            }
            assert!(
                !modes.contains(&"irq".to_string()),
                "irq is \"interrupt\" in OTLP"
            );
            let point_time: u64 = points[0]["time_unix_nano"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            for p in points {
                let start: u64 = p["start_time_unix_nano"].as_str().unwrap().parse().unwrap();
                assert_eq!(start, boot, "start time = boot time");
            }
            // Every point carries its snapshot's time, one the daemon took.
            assert!(times.contains(&point_time), "{point_time} not in {times:?}");
            let gauge = &metrics["system.cpu.utilization"]["gauge"]["data_points"][0];
            let t: u64 = gauge["time_unix_nano"].as_str().unwrap().parse().unwrap();
            assert_eq!(t, point_time);
            let memory = &metrics["system.memory.usage"]["sum"];
            assert_eq!(memory["is_monotonic"], Value::Null, "non-monotonic (false)");
            let states: Vec<String> = memory["data_points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| attrs(&p["attributes"])["system.memory.state"].clone())
                .collect();
            assert_eq!(states, ["used", "free", "buffers", "cached", "slab"]);
            let net = &metrics["system.network.io"]["sum"]["data_points"][0];
            let net_attrs = attrs(&net["attributes"]);
            assert!(net_attrs.contains_key("network.interface.name"));
            assert!(["receive", "transmit"].contains(&net_attrs["network.io.direction"].as_str()));
        }
    }

    // A partial success is delivered, counted and warned about.
    receiver.answer(200, 7, "points out of order");
    let before = requests.len();
    wait_for("partial successes", WAIT, || {
        receiver.requests().len() >= before + 2
    });
    let (_, metrics) = http_get(setup.port, "/metrics").unwrap();
    let text = String::from_utf8_lossy(&metrics).to_string();
    let rejected: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("metricsd_otlp_rejected_points_total "))
        .expect("metricsd_otlp_rejected_points_total")
        .parse()
        .unwrap();
    assert!(rejected >= 14 && rejected % 7 == 0, "{rejected}");
    daemon.wait_for_line("rejected 7 point(s): points out of order", WAIT);
    let stats: Value = serde_json::from_slice(&setup.cli(&["queue", "stats"]).stdout).unwrap();
    assert_eq!(stats["sinks"]["otlp"]["dead"], 0);
    assert!(stats["sinks"]["otlp"]["delivered_total"].as_u64().unwrap() >= 5);
    // A 503 keeps rows pending; the state shows in /health.
    receiver.answer(503, 0, "");
    wait_for("failing", WAIT, || {
        let (_, body) = http_get(setup.port, "/health").unwrap();
        let health: Value = serde_json::from_slice(&body).unwrap();
        health["sinks"]["otlp"]["state"] == "failing"
            && health["sinks"]["otlp"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("503"))
    });
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(WAIT), 0);
}
