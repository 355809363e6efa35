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
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("three requests", WAIT, || receiver.requests().len() >= 3);
    let times = history_times_ns(&setup);
    let requests = receiver.requests();
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
