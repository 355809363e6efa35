//! Remote write 1.0 through the real binary to real receivers (SPEC §5.5):
//! Prometheus and VictoriaMetrics as child processes, queried back over
//! their HTTP APIs and compared with the snapshots the daemon kept in its
//! history (the flat form of every snapshot it took).

use crate::common::daemon::{send_signal, Daemon, Setup};
use crate::common::receivers::{http_get, installed, Kind, Receiver};
use crate::common::{wait_for, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn sections(url: &str, extra: &str) -> String {
    format!(
        "[remote_write]\nurl = {url:?}\nsplay = \"0s\"\nretry_backoff = [\"200ms\"]\nbatch_size = 50\n\
         labels = {{ env = \"it\" }}\n{extra}\n"
    )
}

fn setup(node: &str, url: &str, extra: &str) -> Setup {
    Setup::new("1s", &format!("node_id = {node:?}"), &sections(url, extra))
}

/// `queue stats` of the running daemon's state dir.
fn stats(setup: &Setup) -> Value {
    let out = setup.cli(&["queue", "stats"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn sink_figure(setup: &Setup, sink: &str, key: &str) -> u64 {
    stats(setup)["sinks"][sink][key].as_u64().unwrap_or(0)
}

/// The flat rows of every snapshot the daemon took (its history).
fn history(setup: &Setup) -> Vec<Value> {
    let (status, body) = http_get(setup.port, "/api/history?limit=10000").expect("history");
    assert_eq!(status, 200);
    serde_json::from_slice::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ms(row: &Value) -> i64 {
    let t = humantime::parse_rfc3339(row["timestamp"].as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Timestamps of `selector`'s samples in the receiver between the rows' times.
fn arrived(receiver: &Receiver, selector: &str, rows: &[Value]) -> BTreeSet<i64> {
    let (first, last) = (ms(&rows[0]), ms(rows.last().unwrap()));
    receiver
        .series(selector, first - 1000, last + 1000)
        .into_iter()
        .flat_map(|(_, points)| points.into_iter().map(|(t, _)| t))
        .collect()
}

fn skip_without(kind: Kind) -> bool {
    if installed(kind) {
        return false;
    }
    // CI installs both receivers (and fails here without one); a
    // developer machine may lack one.
    crate::common::skip_or_fail(&format!("{kind:?} is not installed"));
    true
}

fn series_match_the_snapshots(kind: Kind) {
    if skip_without(kind) {
        return;
    }
    let receiver = Receiver::start(kind);
    let node = format!("rw-{:?}", kind).to_lowercase();
    let setup = setup(&node, &receiver.write_url(), "");
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("five delivered snapshots", WAIT, || {
        sink_figure(&setup, "remote_write", "delivered_total") >= 5
    });
    let rows = history(&setup);
    let pending: BTreeSet<String> = pending_ids(&setup);
    let delivered: Vec<Value> = rows
        .into_iter()
        .filter(|r| !pending.contains(r["event_id"].as_str().unwrap()))
        .collect();
    assert!(delivered.len() >= 5, "{delivered:?}");
    let selector = format!("host_load1{{instance=\"{node}\"}}");
    let expected: BTreeSet<i64> = delivered.iter().map(ms).collect();
    let mut got = BTreeSet::new();
    let complete = wait_until(WAIT, || {
        got = arrived(&receiver, &selector, &delivered);
        expected.is_subset(&got)
    });
    assert!(
        complete,
        "missing {:?}",
        expected.difference(&got).collect::<Vec<_>>()
    );

    // Labels and values, sample by sample.
    let series = receiver.series(
        &selector,
        ms(&delivered[0]) - 1000,
        ms(delivered.last().unwrap()) + 1000,
    );
    assert_eq!(series.len(), 1, "{series:?}");
    let (labels, points) = &series[0];
    assert_eq!(labels["__name__"], "host_load1");
    assert_eq!(labels["instance"], node.as_str());
    assert_eq!(labels["machine_id"], delivered[0]["machine_id"]);
    assert_eq!(labels["env"], "it");
    for row in &delivered {
        let (_, value) = points.iter().find(|(t, _)| *t == ms(row)).unwrap();
        let streamed = row["load_avg_1m"].as_f64().unwrap();
        assert!((value - streamed).abs() < 0.006, "{value} vs {streamed}");
    }
    // A labelled counter family arrives too, with its label values.
    let at = ms(delivered.last().unwrap());
    let rx: f64 = receiver
        .series(
            &format!("host_network_receive_bytes_total{{instance=\"{node}\"}}"),
            at - 500,
            at + 500,
        )
        .iter()
        .flat_map(|(_, points)| points.iter().filter(|(t, _)| *t == at).map(|(_, v)| *v))
        .sum();
    let streamed = delivered.last().unwrap()["network_rx_bytes"]
        .as_f64()
        .unwrap();
    assert_eq!(
        rx, streamed,
        "the interfaces' counters add up to the flat total"
    );
    // And the receiver can rate() a counter.
    let q = format!("rate(host_cpu_seconds_total{{instance=\"{node}\",mode=\"idle\"}}[5s])");
    let at = ms(delivered.last().unwrap());
    let rate = receiver.query(&q, at);
    assert_eq!(rate.len(), 1, "{rate:?}");
    let per_second: f64 = rate[0]["value"][1].as_str().unwrap().parse().unwrap();
    // Idle seconds per second: at most one per CPU (ticks or milliseconds
    // would be 100 or 1,000 times that).
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        (0.0..=cpus * 1.05).contains(&per_second),
        "idle rate {per_second} with {cpus} CPUs"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(WAIT), 0);
}

fn pending_ids(setup: &Setup) -> BTreeSet<String> {
    let out = setup.cli(&["queue", "peek", "--sink", "remote_write", "-n", "100000"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn series_arrive_in_victoria_metrics_with_the_snapshots_labels_values_and_times() {
    series_match_the_snapshots(Kind::VictoriaMetrics);
}

#[test]
fn series_arrive_in_prometheus_with_the_snapshots_labels_values_and_times() {
    series_match_the_snapshots(Kind::Prometheus);
}

#[test]
fn an_outage_of_victoria_metrics_loses_no_snapshot() {
    if skip_without(Kind::VictoriaMetrics) {
        return;
    }
    let mut receiver = Receiver::start(Kind::VictoriaMetrics);
    let setup = setup("rw-outage", &receiver.write_url(), "");
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("a delivery", WAIT, || {
        sink_figure(&setup, "remote_write", "delivered_total") >= 2
    });
    receiver.stop();
    wait_for("rows queue up", WAIT, || {
        sink_figure(&setup, "remote_write", "pending") >= 4
    });
    receiver.restart();
    wait_for("backlog drained", WAIT, || {
        sink_figure(&setup, "remote_write", "pending") == 0
    });
    let rows = history(&setup);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(WAIT), 0);
    let expected: BTreeSet<i64> = rows.iter().map(ms).collect();
    let selector = "host_load1{instance=\"rw-outage\"}";
    let mut got = BTreeSet::new();
    let complete = wait_until(WAIT, || {
        got = arrived(&receiver, selector, &rows);
        expected.is_subset(&got)
    });
    assert!(
        complete,
        "missing {:?}",
        expected.difference(&got).collect::<Vec<_>>()
    );
}

#[test]
fn twenty_kill_9_rounds_during_a_drain_lose_no_timestamp() {
    if skip_without(Kind::VictoriaMetrics) {
        return;
    }
    let receiver = Receiver::start(Kind::VictoriaMetrics);
    // A backlog first: the receiver's URL is wrong until the rounds begin.
    let dead_end = format!(
        "http://127.0.0.1:{}/api/v1/write",
        crate::common::free_port()
    );
    let setup = setup("rw-kill", &dead_end, "");
    let mut daemon = setup.start(&[]);
    wait_for("a backlog", WAIT, || {
        sink_figure(&setup, "remote_write", "pending") >= 8
    });
    send_signal(daemon.pid(), libc::SIGKILL);
    daemon.wait_exit(WAIT);
    // batch_size 1: the drain takes many requests, so kills land mid-drain.
    setup.rewrite(
        "1s",
        "node_id = \"rw-kill\"",
        &sections(&receiver.write_url(), "").replace("batch_size = 50", "batch_size = 1"),
    );
    for round in 0..20 {
        let d = setup.start(&[]);
        let delivered = sink_figure(&setup, "remote_write", "delivered_total");
        // Kill at a random moment once it is delivering (a sample a
        // second keeps giving it rows once the backlog is gone).
        assert!(
            wait_until(WAIT, || {
                sink_figure(&setup, "remote_write", "delivered_total") > delivered
            }),
            "round {round}: nothing delivered"
        );
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        send_signal(d.pid(), libc::SIGKILL);
        let mut d = d;
        assert!(d.wait_exit(WAIT).is_some(), "round {round}");
    }
    let mut last: Daemon = setup.start(&[]);
    last.wait_listening(setup.stream_addr(), WAIT);
    wait_for("drained", WAIT, || {
        sink_figure(&setup, "remote_write", "pending") == 0
    });
    let rows = history(&setup);
    last.signal(libc::SIGTERM);
    assert_eq!(last.exit_code(WAIT), 0);
    let expected: BTreeSet<i64> = rows.iter().map(ms).collect();
    assert!(expected.len() >= 20, "{}", expected.len());
    let mut got = BTreeSet::new();
    let complete = wait_until(WAIT, || {
        got = arrived(&receiver, "host_load1{instance=\"rw-kill\"}", &rows);
        expected.is_subset(&got)
    });
    assert!(
        complete,
        "missing {:?}",
        expected.difference(&got).collect::<Vec<_>>()
    );
}
