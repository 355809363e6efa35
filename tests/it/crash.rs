//! Crash safety with the real binary (SPEC §5.1, §5.3): a snapshot whose
//! insert has committed survives kill -9, and kill -9 in the middle of a
//! drain loses nothing (a row may be sent twice, with the same event_id).

use crate::common::backend::Backend;
use crate::common::daemon::Setup;
use crate::common::rows::row;
use metricsd::queue::Queue;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sink most tests use.
const B: &str = "backend";

/// The daemon's files, posting to `url` with at most `max_pending` rows queued.
fn setup(url: &str, max_pending: u64) -> Setup {
    Setup::new(
        "1s",
        "log_level = \"debug\"",
        &format!(
            "[queue]\n\
             max_pending = {max_pending}\n\
             [backend]\n\
             url = {url:?}\n\
             timeout = \"2s\"\n\
             retry_backoff = [\"100ms\"]\n"
        ),
    )
}

/// `metricsd --config <file> <args>`, which must succeed; its stdout.
fn metricsd(setup: &Setup, args: &[&str]) -> String {
    let out = setup.cli(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "metricsd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `metricsd queue peek -n 100000`: the pending event_ids, oldest first.
fn peek_ids(setup: &Setup) -> Vec<String> {
    metricsd(setup, &["queue", "peek", "-n", "100000"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn pending(db: &Path) -> u64 {
    // Before the daemon has made its state directory there is nothing yet.
    Queue::connect(db)
        .map(|q| q.stats(&[B]).unwrap().pending)
        .unwrap_or(0)
}

/// Every body the backend accepted for an event_id is the same body.
fn duplicates_only_repeat(backend: &Backend) {
    let mut bodies: HashMap<String, Value> = HashMap::new();
    for request in backend.requests().iter().filter(|r| r.delivered()) {
        let items = match request.json() {
            Value::Array(items) => items,
            one => vec![one],
        };
        for item in items {
            let id = item["event_id"].as_str().expect("event_id").to_string();
            if let Some(earlier) = bodies.insert(id.clone(), item.clone()) {
                assert_eq!(earlier, item, "a resent {id} differs from the first");
            }
        }
    }
}

#[test]
fn committed_snapshots_survive_kill_9() {
    let backend = Backend::start();
    backend.down();
    let setup = setup(&backend.url(), 10_080);
    let db = setup.state_dir.join("queue.db");

    let daemon = setup.start(&[]);
    daemon.wait_for("3 queued snapshots", Duration::from_secs(15), || {
        pending(&db) >= 3
    });
    let stats: Value = serde_json::from_str(&metricsd(&setup, &["queue", "stats"])).unwrap();
    assert!(stats["pending"].as_u64().unwrap() >= 3, "{stats}");
    let queued = peek_ids(&setup);
    assert!(queued.len() >= 3);
    daemon.kill_9();

    backend.up();
    let mut daemon = setup.start(&[]);
    daemon.wait_for(
        "every queued snapshot at the backend",
        Duration::from_secs(15),
        || {
            let delivered: HashSet<String> = backend.delivered_ids().into_iter().collect();
            queued.iter().all(|id| delivered.contains(id))
        },
    );
    daemon.stop_clean(Duration::from_secs(10));
    // Oldest first: the backlog arrives in the order it was queued.
    let delivered = backend.delivered_ids();
    assert_eq!(delivered[..queued.len()], queued[..]);
    duplicates_only_repeat(&backend);
}

#[test]
fn kill_9_during_a_drain_loses_nothing() {
    const ROUNDS: usize = 20;
    const BACKLOG: u64 = 1500;
    let backend = Backend::start();
    // Slow enough that every kill lands in the middle of the drain.
    backend.set_delay(Duration::from_millis(5));
    let setup = setup(&backend.url(), 100_000);
    std::fs::create_dir_all(&setup.state_dir).unwrap();
    let db = setup.state_dir.join("queue.db");

    // A backlog written by the library before the daemon ever runs.
    let mut seen: HashSet<String> = HashSet::new();
    {
        let mut queue = Queue::open(&db).unwrap();
        for i in 0..BACKLOG {
            let (id, at, payload) = row(i);
            queue
                .insert(&id, &at, &payload, &[], &[B], 100_000)
                .unwrap();
            seen.insert(id);
        }
    }

    let started = Instant::now();
    for round in 0..ROUNDS {
        // Between rounds nothing runs: everything pending now must arrive.
        seen.extend(peek_ids(&setup));
        let served = backend.served();
        let daemon = setup.start(&[]);
        daemon.wait_for(
            &format!("round {round}: the drain to start"),
            Duration::from_secs(15),
            || backend.served() > served,
        );
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..150)));
        daemon.kill_9();
        // The kill landed in the middle of the drain, not after it.
        assert!(pending(&db) > 0, "round {round}: the backlog ran out");
    }
    seen.extend(peek_ids(&setup));

    // A last run drains what is left.
    let mut daemon = setup.start(&[]);
    // A generous bound: a debug build on two busy cores drains slowly.
    daemon.wait_for("every row at the backend", Duration::from_secs(120), || {
        let delivered: HashSet<String> = backend.delivered_ids().into_iter().collect();
        seen.iter().all(|id| delivered.contains(id))
    });
    daemon.stop_clean(Duration::from_secs(10));

    let delivered = backend.delivered_ids();
    let unique: HashSet<&String> = delivered.iter().collect();
    duplicates_only_repeat(&backend);
    eprintln!(
        "{ROUNDS} kills in {:?}: {} rows seen, {} deliveries, {} unique",
        started.elapsed(),
        seen.len(),
        delivered.len(),
        unique.len()
    );
}

/// One snapshot is one insert transaction for every sink: a kill -9 at any
/// moment leaves each snapshot queued for all three sinks or for none. The
/// test re-runs itself as the inserting child (by its full path).
#[test]
fn kill_9_never_leaves_a_snapshot_queued_for_some_sinks_only() {
    const CHILD: &str = "METRICSD_TEST_INSERT_CHILD";
    const SINKS: [&str; 3] = ["backend", "remote_write", "otlp"];
    if let Some(db) = std::env::var_os(CHILD) {
        // The child: insert until killed.
        let mut queue = Queue::open(Path::new(&db)).unwrap();
        for i in 0.. {
            let (id, at, payload) = row(i);
            queue
                .insert(&id, &at, &payload, b"model", &SINKS, 1_000_000)
                .unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    drop(Queue::open(&db).unwrap());
    let exe = std::env::current_exe().unwrap();
    let pending = |sink: &str| Queue::connect(&db).unwrap().counts(sink).unwrap().pending;
    for round in 0..20 {
        let before = pending(B);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::kill_9_never_leaves_a_snapshot_queued_for_some_sinks_only",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::common::wait_for(
            &format!("round {round}: inserts"),
            Duration::from_secs(20),
            || pending(B) > before,
        );
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
        child.kill().unwrap();
        child.wait().unwrap();

        let queue = Queue::open(&db).unwrap();
        let ids = |sink: &str| -> Vec<i64> {
            queue
                .oldest(sink, usize::MAX)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        let backend = ids(B);
        assert!(backend.len() as u64 > before, "round {round}");
        for sink in SINKS {
            assert_eq!(ids(sink), backend, "round {round}: {sink}");
            assert_eq!(queue.counts(sink).unwrap().pending, backend.len() as u64);
        }
        assert_eq!(
            queue.history(0, usize::MAX).unwrap().len(),
            backend.len(),
            "round {round}: every snapshot once"
        );
    }
}
