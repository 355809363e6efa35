//! Several sinks in one daemon (SPEC §5.2-5.3): each has its own rows,
//! figures and poster, so one that hangs delays nobody; a reload adds and
//! removes sinks live; splay spreads a fleet's posts.

use crate::common::backend::{Backend, Behaviour};
use crate::common::daemon::{Daemon, Setup};
use crate::common::receivers::http_get;
use crate::common::wait_for;
use metricsd::config::Splay;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

fn stats(setup: &Setup) -> Value {
    serde_json::from_slice(&setup.cli(&["queue", "stats"]).stdout).unwrap_or(Value::Null)
}

fn health(setup: &Setup) -> Value {
    let (_, body) = http_get(setup.port, "/health").unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn metrics(setup: &Setup) -> String {
    let (_, body) = http_get(setup.port, "/metrics").unwrap();
    String::from_utf8_lossy(&body).to_string()
}

fn sink_sections(backend: &str, remote_write: &str) -> String {
    let mut s = String::new();
    if !backend.is_empty() {
        s +=
            &format!("[backend]\nurl = {backend:?}\nsplay = \"0s\"\nretry_backoff = [\"200ms\"]\n");
    }
    if !remote_write.is_empty() {
        s += &format!(
            "[remote_write]\nurl = {remote_write:?}\nsplay = \"0s\"\ntimeout = \"30s\"\nretry_backoff = [\"200ms\"]\n"
        );
    }
    s
}

#[test]
fn a_hanging_remote_write_receiver_delays_neither_the_backend_nor_the_stream() {
    let backend = Backend::start();
    let hanging = Backend::start();
    hanging.set(Behaviour::Hang);
    let setup = Setup::new("1s", "", &sink_sections(&backend.url(), &hanging.url()));
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("the remote-write request hangs", WAIT, || {
        hanging.request_count() >= 1
    });
    let started = Instant::now();
    let before = backend.delivered_ids().len();
    wait_for("five more backend deliveries", WAIT, || {
        backend.delivered_ids().len() >= before + 5
    });
    // Five samples at 1 s each: the backend kept the cadence (generously).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hanging.request_count(), 1, "one request, still hanging");

    // Per-sink figures: the backend is caught up, remote write piles up.
    let s = stats(&setup);
    assert!(
        s["sinks"]["remote_write"]["pending"].as_u64().unwrap() >= 5,
        "{s}"
    );
    assert_eq!(s["sinks"]["remote_write"]["delivered_total"], 0);
    assert!(
        s["sinks"]["backend"]["delivered_total"].as_u64().unwrap() >= 5,
        "{s}"
    );
    assert!(
        s["sinks"]["backend"]["pending"].as_u64().unwrap() <= 2,
        "{s}"
    );
    let h = health(&setup);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["sinks"]["backend"]["state"], "ok");
    assert!(
        h["sinks"]["remote_write"]["pending"].as_u64().unwrap() >= 4,
        "{h}"
    );
    let text = metrics(&setup);
    assert!(
        text.contains("metricsd_queue_pending{sink=\"remote_write\"} "),
        "{text}"
    );
    assert!(
        text.contains("metricsd_delivered_total{sink=\"backend\"} "),
        "{text}"
    );
    assert!(
        text.contains("metricsd_expired_total{sink=\"remote_write\"} 0"),
        "{text}"
    );
    // The stream's /health kept answering meanwhile, and a stop is prompt.
    let stop = Instant::now();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(WAIT), 0);
    assert!(
        stop.elapsed() < Duration::from_secs(7),
        "{:?}",
        stop.elapsed()
    );
}

#[test]
fn a_reload_adds_and_removes_sinks_and_a_removed_sinks_rows_stay() {
    let backend = Backend::start();
    let second = Backend::start();
    let setup = Setup::new("1s", "", &sink_sections(&backend.url(), ""));
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), WAIT);
    wait_for("backend deliveries", WAIT, || {
        backend.delivered_ids().len() >= 2
    });
    assert!(health(&setup)["sinks"].get("remote_write").is_none());

    // Add remote write (to a receiver that answers 503: rows stay).
    second.set(Behaviour::Status(503));
    setup.rewrite("1s", "", &sink_sections(&backend.url(), &second.url()));
    daemon.signal(libc::SIGHUP);
    wait_for("remote write posts", WAIT, || second.request_count() >= 1);
    let ct = second.requests()[0]
        .header("content-type")
        .map(str::to_string);
    assert_eq!(ct.as_deref(), Some("application/x-protobuf"));
    wait_for("failing in /health", WAIT, || {
        health(&setup)["sinks"]["remote_write"]["state"] == "failing"
    });
    wait_for("rows pending", WAIT, || {
        stats(&setup)["sinks"]["remote_write"]["pending"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });

    // Remove it: its poster stops, its rows stay in the file.
    setup.rewrite("1s", "", &sink_sections(&backend.url(), ""));
    daemon.signal(libc::SIGHUP);
    wait_for("gone from /health", WAIT, || {
        health(&setup)["sinks"].get("remote_write").is_none()
    });
    daemon.wait_for_line("remote_write url is now empty", WAIT);
    let seen = second.request_count();
    let delivered = backend.delivered_ids().len();
    wait_for("backend goes on", WAIT, || {
        backend.delivered_ids().len() >= delivered + 2
    });
    assert!(second.request_count() <= seen + 1, "no posts after removal");
    let out = setup.cli(&["queue", "peek", "--sink", "remote_write", "-n", "1000"]);
    let kept = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(kept >= 2, "a removed sink's rows stay: {kept}");

    // Configured again with a working receiver, they are delivered.
    second.set(Behaviour::Ok);
    setup.rewrite("1s", "", &sink_sections(&backend.url(), &second.url()));
    daemon.signal(libc::SIGHUP);
    wait_for("backlog delivered", WAIT, || {
        second.requests().iter().filter(|r| r.delivered()).count() >= kept
    });
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(WAIT), 0);
}

/// How long after its snapshot's time each post arrived, per node, skipping
/// each daemon's first post (it may be part of the start-up catch-up).
fn lags(backend: &Backend, wall0: SystemTime, mono0: Instant) -> Vec<(String, Duration, String)> {
    let mut seen_first = std::collections::BTreeSet::new();
    backend
        .requests()
        .into_iter()
        .filter(|r| r.delivered())
        .filter_map(|r| {
            let v = r.json();
            let node = v["node_id"].as_str()?.to_string();
            let machine = v["machine_id"].as_str()?.to_string();
            if seen_first.insert(node.clone()) {
                return None;
            }
            let at = humantime::parse_rfc3339(v["timestamp"].as_str()?).ok()?;
            let arrived = wall0 + r.at.saturating_duration_since(mono0);
            Some((
                node,
                arrived.duration_since(at).unwrap_or_default(),
                machine,
            ))
        })
        .collect()
}

fn fleet(splay: &str, nodes: &[&str]) -> (Backend, Vec<(String, Duration, String)>) {
    let backend = Backend::start();
    let (wall0, mono0) = (SystemTime::now(), Instant::now());
    let mut daemons: Vec<(Setup, Daemon)> = nodes
        .iter()
        .map(|node| {
            let sections = format!(
                "[backend]\nurl = {:?}\nsplay = {splay:?}\nretry_backoff = [\"200ms\"]\n",
                backend.url()
            );
            let setup = Setup::new("4s", &format!("node_id = {node:?}"), &sections);
            let d = setup.start(&[]);
            (setup, d)
        })
        .collect();
    wait_for("three posts per daemon", WAIT, || {
        let lags = lags(&backend, wall0, mono0);
        nodes
            .iter()
            .all(|n| lags.iter().filter(|(node, ..)| node == n).count() >= 2)
    });
    for (_, d) in daemons.iter_mut() {
        d.signal(libc::SIGTERM);
    }
    for (_, d) in daemons.iter_mut() {
        d.wait_exit(WAIT);
    }
    let lags = lags(&backend, wall0, mono0);
    (backend, lags)
}

/// Four node names whose "auto" slots on this machine lie at least 1 s
/// apart (the slots hang on /etc/machine-id, which differs between
/// machines): only the choice of names uses the daemon's formula.
fn nodes_with_distinct_slots() -> Vec<String> {
    assert!(
        Path::new("/etc/machine-id").exists(),
        "the daemons share /etc/machine-id, which this host lacks"
    );
    let machine = metricsd::identity::machine_id(
        Path::new("/etc/machine-id"),
        Path::new("/nonexistent"),
        false,
    );
    let slot = |node: &str| {
        metricsd::deliver::splay::delay(Splay::Auto, Duration::from_secs(4), &machine, node)
    };
    let mut candidates: Vec<(Duration, String)> = (0..64)
        .map(|i| format!("fleet-{i}"))
        .map(|n| (slot(&n), n))
        .collect();
    candidates.sort();
    let (first, last) = (&candidates[0], &candidates[candidates.len() - 1]);
    assert!(last.0 - first.0 >= Duration::from_secs(1));
    let middle = &candidates[candidates.len() / 2];
    let near_middle = &candidates[candidates.len() / 2 + 1];
    vec![
        first.1.clone(),
        middle.1.clone(),
        near_middle.1.clone(),
        last.1.clone(),
    ]
}

#[test]
fn splay_auto_spreads_a_fleet_and_zero_posts_together() {
    let nodes = nodes_with_distinct_slots();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (_b, together) = fleet("0s", &nodes);
    for (node, lag, _) in &together {
        assert!(*lag < Duration::from_millis(1500), "{node}: {lag:?}");
    }
    let (_b, spread) = fleet("auto", &nodes);
    // Each node keeps its slot, below the window of min(interval/2, 30 s)
    // (2 s here), and the first and last nodes' slots are apart.
    let window = Duration::from_secs(2);
    let mut typical = Vec::new();
    for node in &nodes {
        let mut own: Vec<Duration> = spread
            .iter()
            .filter(|(n, ..)| n == node)
            .map(|(_, lag, _)| *lag)
            .collect();
        own.sort();
        let (lo, hi) = (own[0], own[own.len() - 1]);
        assert!(
            hi < window + Duration::from_millis(1500),
            "{node}: a post {hi:?} after its sample"
        );
        assert!(
            hi - lo < Duration::from_millis(700),
            "{node}: its slot moved: {own:?}"
        );
        typical.push(own[own.len() / 2]);
    }
    assert!(
        typical[3] >= typical[0] + Duration::from_millis(500),
        "auto spread no fleet: lags {typical:?} for {nodes:?}"
    );
}
