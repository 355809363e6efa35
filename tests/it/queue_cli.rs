//! `metricsd queue stats | peek | retry-dead | purge` (SPEC §1): through the
//! library entry point (exact output) and through the real binary.

use crate::common::daemon::{run_with_config, Daemon};
use crate::common::rows::row;
use metricsd::cli::QueueCommand;
use metricsd::queue::Queue;
use metricsd::queue_cmd::run_to;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The sink most tests use.
const B: &str = "backend";

/// Runs a queue command in-process: (exit code, stdout, stderr).
fn run(command: QueueCommand, state_dir: &Path) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_to(&command, state_dir, &[B], &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn peek(n: u64, dead: bool) -> QueueCommand {
    QueueCommand::Peek {
        n,
        dead,
        sink: Some(B.into()),
    }
}

/// A queue with `n` rows; returns the open queue and the event_ids.
fn queue_with(dir: &Path, n: u64) -> (Queue, Vec<String>) {
    let mut queue = Queue::open(&dir.join("queue.db")).unwrap();
    let ids = (0..n)
        .map(|i| {
            let (id, at, payload) = row(i);
            queue.insert(&id, &at, &payload, &[], &[B], 1000).unwrap();
            id
        })
        .collect();
    (queue, ids)
}

fn retry_dead() -> QueueCommand {
    QueueCommand::RetryDead { sink: B.into() }
}

fn purge(dead: bool) -> QueueCommand {
    QueueCommand::Purge {
        dead,
        sink: B.into(),
    }
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn stats_prints_one_object_with_the_spec_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, _) = queue_with(dir.path(), 4);
    let first = queue.oldest(B, 1).unwrap();
    queue.delete_delivered(B, &[first[0].id]).unwrap();
    let second = queue.oldest(B, 1).unwrap();
    queue.move_to_dead(B, &[second[0].id]).unwrap();

    let (code, out, err) = run(QueueCommand::Stats, dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("{\"pending\":2,\"dead\":1,"), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    // The contract's order (serde_json keeps it: preserve_order).
    let expected = [
        "pending",
        "dead",
        "oldest_pending_age_s",
        "dropped_total",
        "delivered_total",
        "db_path",
        "db_bytes",
        "sinks",
    ];
    assert_eq!(keys, expected);
    assert_eq!(v["delivered_total"], 1);
    assert_eq!(v["dropped_total"], 0);
    assert!(v["oldest_pending_age_s"].as_u64().unwrap() < 60);
    assert_eq!(
        v["db_path"],
        dir.path().join("queue.db").to_string_lossy().as_ref()
    );
    assert!(v["db_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_missing_queue_shows_zeros_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for state_dir in [dir.path().to_path_buf(), dir.path().join("not-yet-made")] {
        let (code, out, err) = run(QueueCommand::Stats, &state_dir);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["pending"], 0);
        assert_eq!(v["dead"], 0);
        assert_eq!(v["db_bytes"], 0);
        assert_eq!(
            v["db_path"],
            state_dir.join("queue.db").to_string_lossy().as_ref()
        );
        assert_eq!(run(peek(10, false), &state_dir).1, "");
        assert_eq!(run(retry_dead(), &state_dir).1, "{\"moved\":0}\n");
        assert_eq!(run(purge(false), &state_dir).1, "{\"purged\":0}\n");
        assert!(!state_dir.join("queue.db").exists());
    }
    assert!(!dir.path().join("not-yet-made").exists());
}

#[test]
fn an_unopenable_state_directory_exits_73_naming_path_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, out, err) = run(QueueCommand::Stats, &file);
    assert_eq!(code, 73);
    assert_eq!(out, "");
    assert!(
        err.contains(&*file.to_string_lossy()) && err.contains("not a directory"),
        "{err}"
    );

    let below = file.join("state");
    let (code, _, err) = run(QueueCommand::Stats, &below);
    assert_eq!(code, 73);
    assert!(
        err.contains(&*below.to_string_lossy()) && err.contains("os error 20"),
        "{err}"
    );
}

#[test]
fn a_garbage_queue_file_exits_73_and_is_left_for_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    std::fs::write(&path, b"definitely not sqlite".repeat(50)).unwrap();
    let (code, _, err) = run(QueueCommand::Stats, dir.path());
    assert_eq!(code, 73);
    assert!(err.contains("not an SQLite database"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"definitely not sqlite".repeat(50)
    );
}

#[test]
fn peek_prints_the_oldest_rows_with_the_payload_as_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, ids) = queue_with(dir.path(), 12);
    let (code, out, _) = run(peek(10, false), dir.path());
    assert_eq!(code, 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 10);
    let rows = queue.oldest(B, 10).unwrap();
    for ((line, id), row) in lines.iter().zip(&ids).zip(&rows) {
        let keys = keys_of(line);
        assert_eq!(
            keys,
            [
                "id",
                "event_id",
                "created_at",
                "attempts",
                "last_error",
                "payload"
            ]
        );
        assert_eq!(line["id"], row.id);
        assert_eq!(line["event_id"], id.as_str());
        assert_eq!(line["created_at"], row.created_at.as_str());
        assert_eq!(line["attempts"], 0);
        assert!(line["last_error"].is_null());
        assert!(line["payload"].is_object());
        assert_eq!(line["payload"]["event_id"], id.as_str());
        // The stored flat form, field order and all.
        assert_eq!(line["payload"].to_string(), row.payload());
    }
    assert_eq!(json_lines(&run(peek(3, false), dir.path()).1).len(), 3);
    assert_eq!(json_lines(&run(peek(100, false), dir.path()).1).len(), 12);
    assert_eq!(run(peek(0, false), dir.path()).1, "");
}

#[test]
fn dead_rows_can_be_peeked_retried_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, ids) = queue_with(dir.path(), 5);
    let rows = queue.oldest(B, 5).unwrap();
    queue
        .reject(B, &[rows[1].id], "HTTP 400: bad", 1, 100)
        .unwrap();
    queue.reject(B, &[rows[3].id], "HTTP 413", 1, 100).unwrap();

    let dead = json_lines(&run(peek(10, true), dir.path()).1);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["event_id"], ids[1].as_str());
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["last_error"], "HTTP 400: bad");
    assert_eq!(dead[1]["event_id"], ids[3].as_str());

    let (code, out, _) = run(retry_dead(), dir.path());
    assert_eq!((code, out.as_str()), (0, "{\"moved\":2}\n"));
    let pending: Vec<Value> = json_lines(&run(peek(10, false), dir.path()).1);
    let order: Vec<&str> = pending
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());

    queue.reject(B, &[rows[0].id], "HTTP 400", 1, 100).unwrap();
    let (code, out, _) = run(purge(true), dir.path());
    assert_eq!((code, out.as_str()), (0, "{\"purged\":1}\n"));
    let (code, out, _) = run(purge(false), dir.path());
    assert_eq!((code, out.as_str()), (0, "{\"purged\":4}\n"));
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
}

#[test]
fn commands_work_while_the_daemon_writes() {
    // The daemon's connection inserts and deletes all the time; the commands
    // share the file through WAL and short transactions.
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = queue_with(dir.path(), 1);
    let db = dir.path().join("queue.db");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut queue = Queue::open(&db).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 100_000 {
                let (id, at, payload) = row(n);
                queue.insert(&id, &at, &payload, &[], &[B], 50).unwrap();
                let oldest = queue.oldest(B, 1).unwrap();
                queue.delete_delivered(B, &[oldest[0].id]).unwrap();
                n += 1;
                // The daemon's writes are spaced by HTTP round trips and
                // sample intervals; a writer that never lets go would starve
                // any other connection past its busy timeout.
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    while Instant::now() < deadline {
        for command in [
            QueueCommand::Stats,
            peek(20, false),
            retry_dead(),
            purge(true),
        ] {
            let (code, _, err) = run(command, dir.path());
            assert_eq!(code, 0, "{err}");
            runs += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = daemon.join().unwrap();
    assert!(written > 10 && runs > 10, "written {written}, runs {runs}");
}

// ---- the real binary ----

/// The keys of a JSON object, in order.
fn keys_of(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// `metricsd queue stats`, which must succeed, as JSON.
fn stats_json(config: &Path) -> Value {
    let out = run_with_config(config, &["queue", "stats"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config_file(dir: &Path, state_dir: &Path) -> std::path::PathBuf {
    let path = dir.join("metricsd.toml");
    std::fs::write(
        &path,
        // A backend (never reached: no daemon runs) makes the top level of
        // `queue stats` describe the backend sink's rows.
        format!(
            "state_dir = {:?}\n[backend]\nurl = \"http://127.0.0.1:9/\"\n",
            state_dir.to_string_lossy()
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_binary_runs_the_queue_commands() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let (mut queue, ids) = queue_with(&state, 3);
    let first = queue.oldest(B, 1).unwrap();
    queue.reject(B, &[first[0].id], "HTTP 400", 1, 10).unwrap();
    let config = config_file(dir.path(), &state);

    let v = stats_json(&config);
    assert_eq!(
        (v["pending"].as_u64(), v["dead"].as_u64()),
        (Some(2), Some(1))
    );

    let out = run_with_config(&config, &["queue", "peek", "-n", "1"]);
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event_id"], ids[1].as_str());

    let out = run_with_config(&config, &["queue", "peek", "--dead"]);
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines[0]["event_id"], ids[0].as_str());

    let out = run_with_config(&config, &["queue", "retry-dead"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"moved\":1}\n");
    let out = run_with_config(&config, &["queue", "purge"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"purged\":3}\n");
    let out = run_with_config(&config, &["queue", "purge", "--dead"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"purged\":0}\n");
}

#[test]
fn the_binary_exits_73_for_an_unopenable_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let config = config_file(dir.path(), &file.join("state"));
    let out = run_with_config(&config, &["queue", "stats"]);
    assert_eq!(out.status.code(), Some(73));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
}

#[test]
fn the_binary_never_cuts_off_a_running_daemons_connections() {
    // The daemon holds two connections (sampler and poster); each queue
    // command opens and closes its own. If the daemon's locks were lost, a
    // closing command would think itself the last user and delete the WAL
    // under the daemon, whose later writes would then vanish.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = config_file(dir.path(), &state);
    let db = state.join("queue.db");
    let mut sampler = Queue::open(&db).unwrap();
    let mut poster = Queue::connect_for_delivery(&db).unwrap();
    let mut expected = 0;
    for round in 0..5 {
        for i in 0..3 {
            let (id, at, payload) = row(round * 10 + i);
            sampler.insert(&id, &at, &payload, &[], &[B], 1000).unwrap();
            expected += 1;
        }
        let oldest = poster.oldest(B, 1).unwrap();
        poster.delete_delivered(B, &[oldest[0].id]).unwrap();
        expected -= 1;
        let v = stats_json(&config);
        assert_eq!(v["pending"], expected, "round {round}");
        assert!(
            state.join("queue.db-wal").exists(),
            "round {round}: WAL deleted"
        );
    }
}

// --- per sink ---------------------------------------------------------------------------

fn run_for(command: QueueCommand, state_dir: &Path, sinks: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_to(&command, state_dir, sinks, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Three snapshots for backend and otlp; otlp's oldest is dead, backend's
/// oldest delivered.
fn two_sinks(dir: &Path) -> (Queue, Vec<String>) {
    let mut queue = Queue::open(&dir.join("queue.db")).unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (id, at, payload) = row(i);
            queue
                .insert(&id, &at, &payload, b"m", &[B, "otlp"], 1000)
                .unwrap();
            id
        })
        .collect();
    let first = queue.oldest(B, 1).unwrap()[0].id;
    queue.delete_delivered(B, &[first]).unwrap();
    queue.reject("otlp", &[first], "HTTP 400", 1, 10).unwrap();
    (queue, ids)
}

#[test]
fn stats_has_one_entry_per_configured_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (_queue, _) = two_sinks(dir.path());
    let (code, out, err) = run_for(
        QueueCommand::Stats,
        dir.path(),
        &[B, "remote_write", "otlp"],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let sinks = v["sinks"].as_object().unwrap();
    assert_eq!(
        sinks.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["backend", "otlp", "remote_write"]
    );
    let keys = keys_of(&sinks["otlp"]);
    assert_eq!(
        keys,
        [
            "pending",
            "dead",
            "oldest_pending_age_s",
            "dropped_total",
            "delivered_total",
            "expired_total"
        ]
    );
    assert_eq!(
        (
            sinks["otlp"]["pending"].as_u64(),
            sinks["otlp"]["dead"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(sinks["backend"]["delivered_total"], 1);
    assert_eq!(sinks["remote_write"]["pending"], 0);
    assert_eq!(
        (v["pending"].as_u64(), v["delivered_total"].as_u64()),
        (Some(2), Some(1))
    );

    // Only the configured ones are listed; with none, the top level is the history.
    let (_, out, _) = run_for(QueueCommand::Stats, dir.path(), &[]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sinks"], serde_json::json!({}));
    assert_eq!(
        (v["pending"].as_u64(), v["dead"].as_u64()),
        (Some(3), Some(0))
    );
}

#[test]
fn peek_retry_dead_and_purge_act_on_the_named_sink_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, ids) = two_sinks(dir.path());
    let peek_of = |sink: &str, dead: bool| {
        let command = QueueCommand::Peek {
            n: 10,
            dead,
            sink: Some(sink.into()),
        };
        let (code, out, err) = run_for(command, dir.path(), &[B]);
        assert_eq!(code, 0, "{err}");
        json_lines(&out)
            .iter()
            .map(|l| l["event_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(peek_of(B, false), ids[1..]);
    assert_eq!(peek_of("otlp", false), ids[1..]);
    assert_eq!(peek_of("otlp", true), ids[..1]);
    assert!(peek_of(B, true).is_empty());
    // Its own attempts and last_error; the payload is the flat form.
    let (_, out, _) = run_for(
        QueueCommand::Peek {
            n: 1,
            dead: true,
            sink: Some("otlp".into()),
        },
        dir.path(),
        &[B],
    );
    let line = &json_lines(&out)[0];
    assert_eq!(
        (line["attempts"].as_u64(), line["last_error"].as_str()),
        (Some(1), Some("HTTP 400"))
    );
    assert_eq!(line["payload"]["event_id"], ids[0].as_str());

    let retry = |sink: &str| QueueCommand::RetryDead { sink: sink.into() };
    assert_eq!(run_for(retry(B), dir.path(), &[B]).1, "{\"moved\":0}\n");
    assert_eq!(
        run_for(retry("otlp"), dir.path(), &[B]).1,
        "{\"moved\":1}\n"
    );
    assert_eq!(peek_of("otlp", false), ids);
    let purge = |sink: &str| QueueCommand::Purge {
        dead: false,
        sink: sink.into(),
    };
    assert_eq!(
        run_for(purge("otlp"), dir.path(), &[B]).1,
        "{\"purged\":3}\n"
    );
    assert!(peek_of("otlp", false).is_empty());
    assert_eq!(peek_of(B, false), ids[1..]);
    // A sink the file never had is simply empty.
    assert_eq!(
        run_for(purge("remote_write"), dir.path(), &[B]).1,
        "{\"purged\":0}\n"
    );
    drop(queue);
}

#[test]
fn the_binary_takes_sink_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let (_queue, ids) = two_sinks(&state);
    let config = config_file(dir.path(), &state);
    let out = run_with_config(&config, &["queue", "peek", "--dead", "--sink", "otlp"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event_id"], ids[0].as_str());
    let out = run_with_config(&config, &["queue", "retry-dead", "--sink", "otlp"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"moved\":1}\n");
    let out = run_with_config(&config, &["queue", "purge", "--sink", "otlp"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"purged\":3}\n");
    // stats lists the configured sinks: here the backend alone.
    let out = run_with_config(&config, &["queue", "stats"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sinks"].as_object().unwrap().len(), 1, "{v}");
    assert_eq!(v["sinks"]["backend"]["pending"], 2);

    let out = run_with_config(&config, &["queue", "peek", "--sink", "prometheus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prometheus") && err.contains("remote_write"),
        "{err}"
    );
}

#[test]
fn the_daemon_exits_73_when_its_queue_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let (queue, _) = queue_with(&state, 2);
    drop(queue);
    let db = state.join("queue.db");
    let root = unsafe { libc::geteuid() } == 0;
    let locked = if root {
        Command::new("chattr")
            .arg("+i")
            .arg(&db)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).is_ok()
    };
    if !locked {
        crate::common::skip_or_fail(&format!("cannot make {} unwritable here", db.display()));
        return;
    }
    let config = dir.path().join("metricsd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[stream]\nenabled = false\n",
            state.to_string_lossy()
        ),
    )
    .unwrap();
    // A daemon that started anyway would run forever: it is killed on drop.
    let mut daemon = Daemon::spawn(&["--config", config.to_str().unwrap(), "run"], &[], false);
    let status = daemon.wait_exit(Duration::from_secs(20));
    if root {
        let _ = Command::new("chattr").arg("-i").arg(&db).status();
    }
    let err = daemon.log();
    assert!(
        status.is_some(),
        "the daemon started with an unwritable queue: {err}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(73), "{err}");
    assert!(
        err.contains(&*db.to_string_lossy()) && err.contains("cannot be written"),
        "{err}"
    );
    // Nothing was set aside or made beside it.
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("queue.db"))
        .collect();
    assert_eq!(names, vec!["queue.db"]);
}

#[test]
fn without_a_sink_peek_shows_the_local_history() {
    // SPEC 5.2: every snapshot is kept with or without a sink; without one
    // the queue is a bounded local history that `queue peek` shows.
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&dir.path().join("queue.db")).unwrap();
    queue
        .set_history(std::time::Duration::from_secs(3600))
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (id, at, payload) = row(i);
            queue.insert(&id, &at, &payload, b"m", &[], 1000).unwrap();
            id
        })
        .collect();
    let no_sink = QueueCommand::Peek {
        n: 2,
        dead: false,
        sink: None,
    };
    let (code, out, err) = run_for(no_sink, dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let shown: Vec<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown,
        ids[..2].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(lines[0]["payload"]["event_id"], ids[0].as_str());
    assert_eq!(lines[0]["attempts"], 0);
    assert!(lines[0]["last_error"].is_null());
    assert!(lines[0]["created_at"].as_str().unwrap().ends_with('Z'));

    // With a sink configured, the default is that sink's pending rows (none).
    let with_sink = QueueCommand::Peek {
        n: 2,
        dead: false,
        sink: None,
    };
    let (code, out, _) = run_for(with_sink, dir.path(), &[B]);
    assert_eq!(code, 0);
    assert!(out.is_empty(), "{out}");

    // purge acts on the backend's rows (SPEC §1), never on the history,
    // which stays for the page.
    let (code, out, err) = run_for(
        QueueCommand::Purge {
            dead: false,
            sink: B.into(),
        },
        dir.path(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "{\"purged\":0}");
    let (_, out, _) = run_for(
        QueueCommand::Peek {
            n: 10,
            dead: false,
            sink: None,
        },
        dir.path(),
        &[],
    );
    assert_eq!(json_lines(&out).len(), 3, "{out}");
}
