//! The SQLite outbox on real files (SPEC §5.1, §5.2).

use crate::common::rows::{event_id, flat_payload, row, timestamp};
use metricsd::queue::{Queue, QueueError, SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The sink most tests use.
const B: &str = "backend";

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("queue.db")
}

/// Inserts `n` realistic rows; returns their event_ids in order.
fn fill(queue: &mut Queue, n: u64, max_pending: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (id, at, payload) = row(i);
            queue
                .insert(&id, &at, &payload, &[], &[B], max_pending)
                .unwrap();
            id
        })
        .collect()
}

fn pending_ids(queue: &Queue) -> Vec<String> {
    queue
        .oldest(B, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

fn dead_ids(queue: &Queue) -> Vec<String> {
    queue
        .oldest_dead(B, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

fn pragma(path: &Path, name: &str) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("PRAGMA {name}"), [], |r| {
        r.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| match v {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
    .unwrap()
}

#[test]
fn new_queue_is_wal_versioned_and_incrementally_vacuumed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let queue = Queue::open(&path).unwrap();
    assert_eq!(pragma(&path, "journal_mode"), "wal");
    assert_eq!(pragma(&path, "user_version"), SCHEMA_VERSION.to_string());
    // 2 = INCREMENTAL
    assert_eq!(pragma(&path, "auto_vacuum"), "2");
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.db_path, path);
    assert!(stats.db_bytes > 0);
}

#[test]
fn rows_come_back_oldest_first_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 5, 100);
    let rows = queue.oldest(B, 3).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>(),
        ids[..3]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let first = &rows[0];
    assert_eq!(first.attempts, 0);
    assert_eq!(first.last_error, None);
    let payload: serde_json::Value = serde_json::from_str(&first.payload()).unwrap();
    assert_eq!(payload["event_id"], ids[0]);
    assert_eq!(payload["timestamp"], first.created_at);
    assert_eq!(pending_ids(&queue), ids);
}

#[test]
fn delivered_rows_are_deleted_and_counted_and_counts_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let ids = {
        let mut queue = Queue::open(&path).unwrap();
        let ids = fill(&mut queue, 6, 3);
        let first: Vec<i64> = queue.oldest(B, 2).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(queue.delete_delivered(B, &first).unwrap(), 2);
        // Deleting again (e.g. after a purge) counts nothing twice.
        assert_eq!(queue.delete_delivered(B, &first).unwrap(), 0);
        ids
    };
    let queue = Queue::open(&path).unwrap();
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!(stats.pending, 1);
    assert_eq!(stats.delivered_total, 2);
    assert_eq!(stats.dropped_total, 3);
    assert_eq!(pending_ids(&queue), ids[5..]);
}

#[test]
fn a_full_queue_drops_the_oldest_pending_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let mut ids = Vec::new();
    let mut dropped = 0;
    for i in 0..12 {
        let (id, at, payload) = row(i);
        dropped += queue
            .insert(&id, &at, &payload, &[], &[B], 5)
            .unwrap()
            .dropped_total();
        ids.push(id);
    }
    assert_eq!(dropped, 7);
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.dropped_total), (5, 7));
    assert_eq!(pending_ids(&queue), ids[7..]);
    // A lower limit after a reload trims several at once.
    let (id, at, payload) = row(99);
    assert_eq!(
        queue
            .insert(&id, &at, &payload, &[], &[B], 2)
            .unwrap()
            .dropped[B],
        4
    );
    assert_eq!(pending_ids(&queue), vec![ids[11].clone(), id]);
    assert_eq!(queue.stats(&[B]).unwrap().dropped_total, 11);
}

#[test]
fn rejected_rows_go_dead_after_max_attempts_and_dead_list_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 4, 100);
    let rows = queue.oldest(B, 4).unwrap();
    let bad = rows[1].id;
    for attempt in 1..=2 {
        let r = queue.reject(B, &[bad], "HTTP 400: bad row", 3, 10).unwrap();
        assert_eq!(r.moved_to_dead, 0);
        let row = queue
            .oldest(B, 4)
            .unwrap()
            .into_iter()
            .find(|r| r.id == bad)
            .unwrap();
        assert_eq!(row.attempts, attempt);
        assert_eq!(row.last_error.as_deref(), Some("HTTP 400: bad row"));
    }
    let r = queue.reject(B, &[bad], "HTTP 422", 3, 10).unwrap();
    assert_eq!(r.moved_to_dead, 1);
    assert_eq!(dead_ids(&queue), vec![ids[1].clone()]);
    let dead = &queue.oldest_dead(B, 1).unwrap()[0];
    assert_eq!((dead.id, dead.attempts), (bad, 3));
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 422"));
    assert_eq!(
        pending_ids(&queue),
        vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.dead), (3, 1));

    // max_dead = 2: the oldest dead rows give way.
    let rest: Vec<i64> = queue.oldest(B, 3).unwrap().iter().map(|r| r.id).collect();
    let r = queue.reject(B, &rest, "HTTP 400", 1, 2).unwrap();
    assert_eq!(r.moved_to_dead, 3);
    assert_eq!(r.dead_trimmed, 2);
    assert_eq!(dead_ids(&queue), ids[2..]);
    assert_eq!(queue.stats(&[B]).unwrap().dead, 2);
}

#[test]
fn the_run_of_rejected_rows_is_kept_in_the_file_until_a_row_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    fill(&mut queue, 4, 100);
    let rows: Vec<i64> = queue.oldest(B, 4).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(queue.rejected_run(B).unwrap(), 0);
    // The same row again is not a new one; the next row is.
    assert_eq!(
        queue
            .reject(B, &[rows[0]], "HTTP 400", 2, 10)
            .unwrap()
            .rejected_run,
        1
    );
    assert_eq!(
        queue
            .reject(B, &[rows[0]], "HTTP 400", 2, 10)
            .unwrap()
            .rejected_run,
        1
    );
    assert_eq!(
        queue
            .reject(B, &[rows[1]], "HTTP 400", 2, 10)
            .unwrap()
            .rejected_run,
        2
    );
    // Another connection (a restarted daemon) reads the same run.
    drop(queue);
    let mut queue = Queue::open(&db(&dir)).unwrap();
    assert_eq!(queue.rejected_run(B).unwrap(), 2);
    // An accepted row ends it.
    assert_eq!(queue.delete_delivered(B, &[rows[2]]).unwrap(), 1);
    assert_eq!(queue.rejected_run(B).unwrap(), 0);
    assert_eq!(
        queue
            .reject(B, &[rows[1]], "HTTP 400", 2, 10)
            .unwrap()
            .rejected_run,
        1
    );
}

#[test]
fn burying_rows_moves_them_and_keeps_the_dead_list_bounded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 5, 100);
    let rows = queue.oldest(B, 100).unwrap();
    let buried: Vec<i64> = rows[..3].iter().map(|r| r.id).collect();
    assert_eq!(queue.bury(B, &buried, 2).unwrap(), (3, 1));
    assert_eq!(
        dead_ids(&queue),
        ids[1..3].to_vec(),
        "the oldest dead row went"
    );
    assert_eq!(pending_ids(&queue), ids[3..].to_vec());
    let c = queue.counts(B).unwrap();
    assert_eq!((c.pending, c.dead, c.dropped_total), (2, 2, 1));
}

#[test]
fn retry_dead_puts_rows_back_in_their_original_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 5, 100);
    let rows = queue.oldest(B, 5).unwrap();
    queue.move_to_dead(B, &[rows[1].id, rows[3].id]).unwrap();
    assert_eq!(dead_ids(&queue), vec![ids[1].clone(), ids[3].clone()]);
    // Newer rows arrive while those are dead.
    let later = fill(&mut queue, 2, 100);
    assert_eq!(queue.retry_dead(B).unwrap(), 2);
    let mut expected = ids.clone();
    expected.extend(later);
    assert_eq!(pending_ids(&queue), expected);
    assert!(queue
        .oldest(B, 100)
        .unwrap()
        .iter()
        .all(|r| r.attempts == 0));
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.dead), (7, 0));
    assert_eq!(queue.retry_dead(B).unwrap(), 0);
}

#[test]
fn purge_empties_pending_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    fill(&mut queue, 5, 100);
    let first = queue.oldest(B, 2).unwrap();
    queue
        .move_to_dead(B, &first.iter().map(|r| r.id).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(queue.purge_dead(B).unwrap(), 2);
    assert_eq!(queue.purge_pending(B).unwrap(), 3);
    let stats = queue.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.dead, stats.dropped_total), (0, 0, 0));
    // Ids are never reused, so order still holds after a purge.
    let ids = fill(&mut queue, 2, 100);
    assert!(queue.oldest(B, 1).unwrap()[0].id > first[1].id);
    assert_eq!(pending_ids(&queue), ids);
}

#[test]
fn oldest_pending_age_comes_from_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let old = timestamp(SystemTime::now() - Duration::from_secs(3600));
    queue
        .insert("old", &old, &flat_payload("old", &old, 0), &[], &[B], 10)
        .unwrap();
    let now = timestamp(SystemTime::now());
    queue
        .insert("new", &now, &flat_payload("new", &now, 1), &[], &[B], 10)
        .unwrap();
    let age = queue.stats(&[B]).unwrap().oldest_pending_age_s;
    assert!((3599..=3610).contains(&age), "{age}");
}

#[test]
fn garbage_queue_file_is_set_aside_and_a_new_queue_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let garbage = b"this is not an SQLite database, just some bytes \x00\x01\x02".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    std::fs::write(dir.path().join("queue.db-wal"), b"stale wal").unwrap();
    std::fs::write(dir.path().join("queue.db-shm"), b"stale shm").unwrap();

    // The queue commands never move the file (the daemon may be using it).
    let err = Queue::open_for_command(&path)
        .err()
        .expect("garbage must not open");
    assert!(err.is_corrupt(), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);

    let mut queue = Queue::open(&path).unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("queue.db.corrupt-") && !name.ends_with("-wal")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    let mut aside_wal = aside[0].clone().into_os_string();
    aside_wal.push("-wal");
    assert_eq!(std::fs::read(aside_wal).unwrap(), b"stale wal");

    let ids = fill(&mut queue, 3, 100);
    assert_eq!(pending_ids(&queue), ids);
    drop(queue);
    assert_eq!(pending_ids(&Queue::open(&path).unwrap()), ids);
}

#[test]
fn damaged_pages_are_found_at_open_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let mut queue = Queue::open(&path).unwrap();
        fill(&mut queue, 200, 1000);
        queue.checkpoint().unwrap();
    }
    // Overwrite a b-tree page in the middle of the file with noise.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let victim = (bytes.len() / page / 2) * page;
    for (i, b) in bytes[victim..victim + page].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    let mut queue = Queue::open(&path).unwrap();
    assert_eq!(queue.stats(&[B]).unwrap().pending, 0);
    let ids = fill(&mut queue, 2, 100);
    assert_eq!(pending_ids(&queue), ids);
    let set_aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("queue.db.corrupt-")
        })
        .count();
    assert_eq!(set_aside, 1);
}

#[test]
fn a_newer_schema_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Queue::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    match Queue::open(&path) {
        Err(QueueError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema must not open"),
    }
    assert_eq!(pragma(&path, "user_version"), "99");
}

#[test]
fn an_empty_file_becomes_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::write(&path, b"").unwrap();
    let mut queue = Queue::open(&path).unwrap();
    let ids = fill(&mut queue, 1, 10);
    assert_eq!(pending_ids(&queue), ids);
}

#[test]
fn a_full_disk_fails_the_insert_and_inserts_work_again_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    // No history, so delivered rows free their space.
    queue.set_history(Duration::ZERO).unwrap();
    fill(&mut queue, 10, 10_000);
    // Cap the file just above its current size: a stand-in for a full disk.
    let cap = queue.set_size_limit(Some(64 * 1024)).unwrap();
    assert!(cap >= 64 * 1024 - 4096, "{cap}");
    let mut inserted = 0;
    let failure = loop {
        let (id, at, payload) = row(inserted);
        match queue.insert(&id, &at, &payload, &[], &[B], 10_000) {
            Ok(_) => inserted += 1,
            Err(e) => break e,
        }
        assert!(inserted < 1000, "the size limit never took effect");
    };
    assert!(failure.is_full(), "{failure}");
    let before = queue.stats(&[B]).unwrap();
    // The failed insert left nothing half-done, and keeps failing cleanly.
    let (id, at, payload) = row(0);
    assert!(queue.insert(&id, &at, &payload, &[], &[B], 10_000).is_err());
    assert_eq!(queue.stats(&[B]).unwrap().pending, before.pending);

    // Freeing space (delivering the backlog) makes inserts work again...
    let all: Vec<i64> = queue
        .oldest(B, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    queue.delete_delivered(B, &all).unwrap();
    let ids = fill(&mut queue, 3, 10_000);
    assert_eq!(pending_ids(&queue), ids);
    // ...as does lifting the cap.
    queue.set_size_limit(None).unwrap();
    fill(&mut queue, 50, 10_000);
    assert_eq!(queue.stats(&[B]).unwrap().pending, 53);
}

#[test]
fn two_connections_write_at_once_without_errors() {
    // The sampler inserts while the poster deletes, each on its own connection.
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut writer = Queue::open(&path).unwrap();
    let mut reader = Queue::connect(&path).unwrap();
    let inserter = std::thread::spawn(move || fill(&mut writer, 300, 100_000));
    let mut delivered = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered.len() < 300 && std::time::Instant::now() < deadline {
        let rows = reader.oldest(B, 10).unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        reader.delete_delivered(B, &ids).unwrap();
        delivered.extend(rows.into_iter().map(|r| r.event_id));
    }
    let inserted = inserter.join().unwrap();
    assert_eq!(delivered, inserted);
    let stats = reader.stats(&[B]).unwrap();
    assert_eq!((stats.pending, stats.delivered_total), (0, 300));
}

#[test]
fn the_file_shrinks_after_a_backlog_drains() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut queue = Queue::open(&path).unwrap();
    queue.set_history(Duration::ZERO).unwrap();
    fill(&mut queue, 1500, 100_000);
    queue.checkpoint().unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    assert!(full > 800 * 1024, "{full}");
    while !queue.oldest(B, 100).unwrap().is_empty() {
        let ids: Vec<i64> = queue.oldest(B, 100).unwrap().iter().map(|r| r.id).collect();
        queue.delete_delivered(B, &ids).unwrap();
    }
    queue.checkpoint().unwrap();
    let drained = std::fs::metadata(&path).unwrap().len();
    assert!(drained < full / 2, "full {full}, drained {drained}");
}

#[test]
fn connections_opening_a_new_queue_at_once_all_succeed() {
    // Connections racing to create a new queue (the daemon and a queue
    // command, say) all succeed and agree on its settings.
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let openers: Vec<_> = (0..3)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Queue::connect(&path).map(|_| ()).map_err(|e| e.to_string())
                })
            })
            .collect();
        for opener in openers {
            opener
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert_eq!(pragma(&path, "journal_mode"), "wal");
        assert_eq!(pragma(&path, "auto_vacuum"), "2");
    }
}

// --- per sink ---------------------------------------------------------------------------

const SINKS: [&str; 3] = ["backend", "remote_write", "otlp"];

/// Inserts `n` snapshots for `sinks`, `model` = the row number's bytes.
fn fill_for(queue: &mut Queue, n: u64, sinks: &[&str], max_pending: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (id, at, payload) = row(i);
            let model = format!("model-{id}");
            queue
                .insert(&id, &at, &payload, model.as_bytes(), sinks, max_pending)
                .unwrap();
            id
        })
        .collect()
}

fn ids_of(queue: &Queue, sink: &str) -> Vec<String> {
    let rows = queue.oldest(sink, usize::MAX).unwrap();
    rows.into_iter().map(|r| r.event_id).collect()
}

fn dead_of(queue: &Queue, sink: &str) -> Vec<String> {
    let rows = queue.oldest_dead(sink, usize::MAX).unwrap();
    rows.into_iter().map(|r| r.event_id).collect()
}

#[test]
fn one_snapshot_is_queued_once_for_every_sink_with_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill_for(&mut queue, 4, &SINKS, 100);
    for sink in SINKS {
        let rows = queue.oldest(sink, 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>(),
            ids
        );
        for r in &rows {
            assert_eq!(r.model, format!("model-{}", r.event_id).as_bytes());
            let flat: serde_json::Value = serde_json::from_str(&r.payload()).unwrap();
            assert_eq!(flat["event_id"], r.event_id);
        }
        assert_eq!(queue.counts(sink).unwrap().pending, 4);
    }
    // The same snapshot has the same id in every sink.
    let first: Vec<i64> = SINKS
        .iter()
        .map(|s| queue.oldest(s, 1).unwrap()[0].id)
        .collect();
    assert!(first.windows(2).all(|w| w[0] == w[1]), "{first:?}");
    // A sink the file has never seen has no rows and zero counts.
    assert!(queue.oldest("nowhere", 10).unwrap().is_empty());
    assert_eq!(
        queue.counts("nowhere").unwrap(),
        metricsd::queue::Counts::default()
    );
}

#[test]
fn what_one_sink_does_never_touches_another_sinks_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill_for(&mut queue, 6, &SINKS, 100);
    let backend_rows = queue.oldest("backend", 6).unwrap();

    // backend delivers two, remote_write rejects one to the dead list, otlp
    // expires everything older than the fourth row.
    let delivered: Vec<i64> = backend_rows[..2].iter().map(|r| r.id).collect();
    assert_eq!(queue.delete_delivered("backend", &delivered).unwrap(), 2);
    let r = queue
        .reject("remote_write", &[backend_rows[2].id], "HTTP 400", 1, 10)
        .unwrap();
    assert_eq!(r.moved_to_dead, 1);
    let r = queue
        .reject("otlp", &[backend_rows[5].id], "HTTP 422", 3, 10)
        .unwrap();
    assert_eq!(r.moved_to_dead, 0);
    // Ids of another sink's deleted rows change nothing here.
    assert_eq!(queue.delete_delivered("otlp", &[-1]).unwrap(), 0);

    assert_eq!(ids_of(&queue, "backend"), ids[2..]);
    assert_eq!(
        ids_of(&queue, "remote_write"),
        [&ids[..2], &ids[3..]].concat()
    );
    assert_eq!(dead_of(&queue, "remote_write"), vec![ids[2].clone()]);
    assert_eq!(ids_of(&queue, "otlp"), ids);
    let otlp = queue.oldest("otlp", 10).unwrap();
    assert_eq!(
        (otlp[5].attempts, otlp[5].last_error.as_deref()),
        (1, Some("HTTP 422"))
    );
    assert!(queue
        .oldest("backend", 10)
        .unwrap()
        .iter()
        .all(|r| r.attempts == 0 && r.last_error.is_none()));

    // Retry and purge act on one sink alone too.
    assert_eq!(queue.retry_dead("backend").unwrap(), 0);
    assert_eq!(queue.retry_dead("remote_write").unwrap(), 1);
    assert_eq!(ids_of(&queue, "remote_write"), ids);
    assert_eq!(queue.purge_pending("otlp").unwrap(), 6);
    assert!(ids_of(&queue, "otlp").is_empty());
    assert_eq!(ids_of(&queue, "backend"), ids[2..]);
    assert_eq!(ids_of(&queue, "remote_write"), ids);

    let stats = queue.stats(&SINKS).unwrap();
    let s = |name: &str| stats.sinks[name].clone();
    assert_eq!((s("backend").pending, s("backend").delivered_total), (4, 2));
    assert_eq!((s("remote_write").pending, s("remote_write").dead), (6, 0));
    assert_eq!((s("otlp").pending, s("otlp").delivered_total), (0, 0));
    assert_eq!(stats.pending, 4, "the top level is the backend sink");
    assert_eq!(stats.delivered_total, 2);
}

#[test]
fn expiry_removes_one_sinks_old_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let now = SystemTime::now();
    let mut ids = Vec::new();
    for (i, age_s) in [7200u64, 3700, 1800, 10].into_iter().enumerate() {
        let at = timestamp(now - Duration::from_secs(age_s));
        let id = format!("row-{i}");
        queue
            .insert(
                &id,
                &at,
                &flat_payload(&id, &at, i as u64),
                b"m",
                &SINKS,
                100,
            )
            .unwrap();
        ids.push(id);
    }
    let cutoff = now - Duration::from_secs(3600);
    assert_eq!(queue.expire_older_than("remote_write", cutoff).unwrap(), 2);
    assert_eq!(queue.expire_older_than("remote_write", cutoff).unwrap(), 0);
    assert_eq!(ids_of(&queue, "remote_write"), ids[2..]);
    assert_eq!(ids_of(&queue, "backend"), ids);
    assert_eq!(ids_of(&queue, "otlp"), ids);
    let counts = queue.counts("remote_write").unwrap();
    assert_eq!((counts.pending, counts.expired_total), (2, 2));
    assert_eq!(queue.counts("backend").unwrap().expired_total, 0);
}

#[test]
fn max_pending_and_max_dead_hold_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill_for(&mut queue, 3, &SINKS, 3);
    // otlp delivered everything; the others are full.
    let otlp: Vec<i64> = queue
        .oldest("otlp", 3)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    queue.delete_delivered("otlp", &otlp).unwrap();
    let (id, at, payload) = row(9);
    let report = queue.insert(&id, &at, &payload, b"", &SINKS, 3).unwrap();
    assert_eq!(report.dropped.get("backend"), Some(&1));
    assert_eq!(report.dropped.get("remote_write"), Some(&1));
    assert_eq!(report.dropped.get("otlp"), None);
    assert_eq!(report.dropped_total(), 2);
    let newest = vec![ids[1].clone(), ids[2].clone(), id.clone()];
    assert_eq!(ids_of(&queue, "backend"), newest);
    assert_eq!(ids_of(&queue, "otlp"), vec![id]);
    assert_eq!(queue.counts("backend").unwrap().dropped_total, 1);
    assert_eq!(queue.counts("otlp").unwrap().dropped_total, 0);

    // max_dead = 1 on backend drops its oldest dead row, counted as dropped.
    let rows: Vec<i64> = queue
        .oldest("backend", 2)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let r = queue.reject("backend", &rows, "HTTP 400", 1, 1).unwrap();
    assert_eq!((r.moved_to_dead, r.dead_trimmed), (2, 1));
    assert_eq!(dead_of(&queue, "backend"), vec![ids[2].clone()]);
    assert_eq!(queue.counts("backend").unwrap().dropped_total, 2);
    assert_eq!(queue.counts("remote_write").unwrap().dead, 0);
}

#[test]
fn every_sinks_counters_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let ids = {
        let mut queue = Queue::open(&path).unwrap();
        let ids = fill_for(&mut queue, 5, &SINKS, 4);
        let rows = queue.oldest("remote_write", 2).unwrap();
        queue
            .delete_delivered("remote_write", &[rows[0].id])
            .unwrap();
        queue.move_to_dead("otlp", &[rows[1].id]).unwrap();
        queue
            .expire_older_than("backend", SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        ids
    };
    let queue = Queue::open(&path).unwrap();
    let c = |s: &str| queue.counts(s).unwrap();
    assert_eq!(
        (
            c("backend").pending,
            c("backend").dropped_total,
            c("backend").expired_total
        ),
        (0, 1, 4)
    );
    assert_eq!(
        (c("remote_write").pending, c("remote_write").delivered_total),
        (3, 1)
    );
    assert_eq!((c("otlp").pending, c("otlp").dead), (3, 1));
    assert_eq!(ids_of(&queue, "remote_write"), ids[2..]);
    assert_eq!(dead_of(&queue, "otlp"), vec![ids[2].clone()]);
}

#[test]
fn a_sink_left_out_of_the_configuration_keeps_its_rows_until_purged() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let old = fill_for(&mut queue, 2, &["backend", "otlp"], 100);
    let new = fill_for(&mut queue, 2, &["backend"], 100);
    assert_eq!(ids_of(&queue, "otlp"), old);
    assert_eq!(ids_of(&queue, "backend"), [&old[..], &new[..]].concat());
    assert_eq!(queue.sinks_with_rows().unwrap(), vec!["backend", "otlp"]);
    // Configured again, it goes on after its own rows.
    let again = fill_for(&mut queue, 1, &["backend", "otlp"], 100);
    assert_eq!(ids_of(&queue, "otlp"), [&old[..], &again[..]].concat());
    assert_eq!(queue.purge_pending("otlp").unwrap(), 3);
    assert_eq!(queue.sinks_with_rows().unwrap(), vec!["backend"]);
}

// --- history ----------------------------------------------------------------------------

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Inserts a snapshot taken `age` ago for `sinks`; returns its event_id.
fn insert_aged(queue: &mut Queue, age: Duration, sinks: &[&str]) -> String {
    let id = event_id();
    let at = timestamp(SystemTime::now() - age);
    queue
        .insert(&id, &at, &flat_payload(&id, &at, 0), b"", sinks, 100_000)
        .unwrap();
    id
}

fn history_ids(queue: &Queue, since: i64, limit: usize) -> Vec<String> {
    queue
        .history(since, limit)
        .unwrap()
        .iter()
        .map(|flat| {
            let v: serde_json::Value = serde_json::from_str(flat).unwrap();
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn history_keeps_delivered_snapshots_oldest_first_with_since_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut queue = Queue::open(&path).unwrap();
    let minute = Duration::from_secs(60);
    // Five snapshots a minute apart, the oldest 5 minutes ago; no sink for
    // the first two, backend for the rest.
    let mut ids = Vec::new();
    for i in 0..5u32 {
        let sinks: &[&str] = if i < 2 { &[] } else { &[B] };
        ids.push(insert_aged(&mut queue, minute * (5 - i), sinks));
    }
    // Delivered rows stay in the history.
    let all: Vec<i64> = queue.oldest(B, 10).unwrap().iter().map(|r| r.id).collect();
    queue.delete_delivered(B, &all).unwrap();
    assert_eq!(history_ids(&queue, 0, 1440), ids);
    let since = unix_ms(SystemTime::now() - minute * 3) - 500;
    assert_eq!(history_ids(&queue, since, 1440), ids[2..]);
    assert_eq!(history_ids(&queue, 0, 2), ids[..2]);
    assert_eq!(history_ids(&queue, since, 1), ids[2..3]);
    assert!(history_ids(&queue, unix_ms(SystemTime::now()) + 60_000, 10).is_empty());
    assert!(history_ids(&queue, 0, 0).is_empty());
    // The flat form comes back as stored.
    let flat: serde_json::Value = serde_json::from_str(&queue.history(0, 1).unwrap()[0]).unwrap();
    assert_eq!(
        flat["node_id"],
        "web-frontend-eu-west-1a-07.prod.example.internal"
    );
    // History counts against no sink.
    assert_eq!(queue.counts(B).unwrap().pending, 0);

    drop(queue);
    let queue = Queue::open(&path).unwrap();
    assert_eq!(history_ids(&queue, 0, 1440), ids, "after reopening");
    // With no sink configured, `queue stats` describes the history.
    let stats = queue.stats(&[]).unwrap();
    assert_eq!(stats.pending, 5);
    assert!(
        (295..=320).contains(&stats.oldest_pending_age_s),
        "{stats:?}"
    );
}

#[test]
fn history_is_trimmed_by_age_but_never_under_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    queue.set_history(Duration::from_secs(3600)).unwrap();
    let hour = Duration::from_secs(3600);
    let day = 24 * hour;
    let old_free = insert_aged(&mut queue, day, &[]);
    let old_pending = insert_aged(&mut queue, day, &[B]);
    let recent = insert_aged(&mut queue, Duration::from_secs(60), &[]);
    // Only the recent one is history; the old pending one still goes out.
    assert_eq!(history_ids(&queue, 0, 100), vec![recent.clone()]);
    assert_eq!(ids_of(&queue, B), vec![old_pending.clone()]);
    assert!(queue.oldest(B, 1).unwrap()[0]
        .payload()
        .contains(&old_pending));
    let _ = old_free;

    // A shorter window trims at once; a longer one cannot bring rows back.
    queue.set_history(Duration::from_secs(30)).unwrap();
    assert!(history_ids(&queue, 0, 100).is_empty());
    queue.set_history(day * 2).unwrap();
    assert!(history_ids(&queue, 0, 100).is_empty());
    assert_eq!(ids_of(&queue, B), vec![old_pending.clone()]);

    // History off: nothing is kept for no sink.
    queue.set_history(Duration::ZERO).unwrap();
    insert_aged(&mut queue, Duration::ZERO, &[]);
    assert!(history_ids(&queue, 0, 100).is_empty());
    assert_eq!(ids_of(&queue, B), vec![old_pending]);
}

#[test]
fn history_returns_at_most_a_week_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut queue = Queue::open(&path).unwrap();
    queue
        .set_history(Duration::from_secs(8 * 24 * 3600))
        .unwrap();
    for _ in 0..4 {
        insert_aged(&mut queue, Duration::from_secs(3600), &[]);
    }
    drop(queue);
    // 10,100 rows through plain SQL in one transaction (10,100 inserts of
    // the queue's own would fsync 10,100 times).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10096)
         INSERT INTO history (created_ms, flat)
         SELECT created_ms + i, flat FROM n, (SELECT * FROM history LIMIT 1);",
    )
    .unwrap();
    drop(conn);
    let queue = Queue::open(&path).unwrap();
    assert_eq!(
        queue.history(0, usize::MAX).unwrap().len(),
        metricsd::queue::MAX_HISTORY_ROWS
    );
    assert_eq!(metricsd::queue::MAX_HISTORY_ROWS, 10_080);
    assert_eq!(queue.history(0, 1440).unwrap().len(), 1440);
}

// --- upgrade ----------------------------------------------------------------------------

/// tests/fixtures/queue/v1.db: written by the release before per-sink rows
/// (see the README there).
fn v1_fixture(dir: &tempfile::TempDir) -> PathBuf {
    let path = db(dir);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queue/v1.db");
    std::fs::copy(fixture, &path).unwrap();
    path
}

#[test]
fn a_schema_1_file_upgrades_keeping_every_backend_row_and_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = v1_fixture(&dir);
    assert_eq!(pragma(&path, "user_version"), "1");
    let mut queue = Queue::open(&path).unwrap();
    assert_eq!(pragma(&path, "user_version"), SCHEMA_VERSION.to_string());

    let event = |i: u64| format!("0193a000-0000-7000-8000-{i:012}");
    let pending = queue.oldest(B, 100).unwrap();
    let summary: Vec<(i64, String, u32, Option<String>)> = pending
        .iter()
        .map(|r| (r.id, r.event_id.clone(), r.attempts, r.last_error.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (6, event(5), 1, Some("HTTP 422".to_string())),
            (8, event(7), 0, None),
            (9, event(8), 0, None),
            (10, event(9), 0, None),
        ]
    );
    assert_eq!(pending[0].created_at, "2026-11-30T12:05:00.000Z");
    let flat: serde_json::Value = serde_json::from_str(&pending[0].payload()).unwrap();
    assert_eq!(
        (flat["event_id"].as_str(), flat["cpu_percent"].as_f64()),
        (Some(&*event(5)), Some(5.5))
    );
    let dead = queue.oldest_dead(B, 100).unwrap();
    let dead: Vec<(i64, u32, Option<&str>)> = dead
        .iter()
        .map(|r| (r.id, r.attempts, r.last_error.as_deref()))
        .collect();
    assert_eq!(
        dead,
        vec![
            (5, 3, Some("HTTP 400: bad row")),
            (7, 3, Some("HTTP 400: bad row"))
        ]
    );
    let c = queue.counts(B).unwrap();
    assert_eq!(
        (
            c.pending,
            c.dead,
            c.dropped_total,
            c.delivered_total,
            c.expired_total
        ),
        (4, 2, 2, 2, 0)
    );

    // New snapshots go after the old ones (ids are never reused) and the
    // old dead rows retry into their places.
    let (id, at, payload) = row(0);
    let report = queue.insert(&id, &at, &payload, b"m", &[B], 100).unwrap();
    assert!(report.id > 10, "{}", report.id);
    assert_eq!(queue.retry_dead(B).unwrap(), 2);
    assert_eq!(
        ids_of(&queue, B),
        vec![
            event(4),
            event(5),
            event(6),
            event(7),
            event(8),
            event(9),
            id
        ]
    );
    drop(queue);
    let queue = Queue::open(&path).unwrap();
    assert_eq!(queue.counts(B).unwrap().pending, 7);
    assert_eq!(queue.counts(B).unwrap().delivered_total, 2);
}

// --- files SQLite must not be given -----------------------------------------------------

/// Copies a live queue (main file and WAL, as a crash would leave them).
fn crash_image(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let wal = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    std::fs::copy(wal(from), wal(to)).unwrap();
}

fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn our_own_wal_after_a_crash_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let mut queue = Queue::open(&live).unwrap();
    let ids = fill_for(&mut queue, 30, &SINKS, 100);
    let crashed = db(&dir);
    crash_image(&live, &crashed);
    drop(queue);
    let wal_len = std::fs::metadata(format!("{}-wal", crashed.display()))
        .unwrap()
        .len();
    assert!(
        wal_len > 4096,
        "the image has a WAL to replay ({wal_len} bytes)"
    );
    let queue = Queue::open(&crashed).unwrap();
    for sink in SINKS {
        assert_eq!(ids_of(&queue, sink), ids);
    }
    assert!(files_named(dir.path(), "queue.db.corrupt-").is_empty());
}

/// What SQLite's automatic checkpoint does: copies the WAL into the main
/// file (header and file id included) but leaves the WAL's transactions in
/// place until the next write starts it over. A crash in that gap leaves
/// both on disk.
fn checkpoint_keeping_the_wal(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let (busy, frames, copied): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((busy, copied), (0, frames), "every frame copied");
    assert!(frames > 0, "the WAL had transactions");
}

/// Opens a crash image of `live` (taken after a checkpoint that kept the
/// WAL) and returns it; the image must not be set aside.
fn reopen_crash_image_after_checkpoint(dir: &tempfile::TempDir, live: &Path) -> Queue {
    checkpoint_keeping_the_wal(live);
    let crashed = db(dir);
    crash_image(live, &crashed);
    let queue = Queue::open(&crashed).unwrap();
    assert!(
        files_named(dir.path(), "queue.db.corrupt-").is_empty(),
        "a healthy queue was set aside"
    );
    queue
}

#[test]
fn a_new_queue_crashed_after_its_first_checkpoint_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let mut queue = Queue::open(&live).unwrap();
    let ids = fill_for(&mut queue, 5, &SINKS, 100);
    let crashed = reopen_crash_image_after_checkpoint(&dir, &live);
    for sink in SINKS {
        assert_eq!(ids_of(&crashed, sink), ids);
    }
}

#[test]
fn an_upgraded_queue_crashed_after_a_checkpoint_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let live = v1_fixture(&old);
    let queue = Queue::open(&live).unwrap();
    let before = ids_of(&queue, B);
    assert_eq!(before.len(), 4, "the fixture's pending rows");
    let crashed = reopen_crash_image_after_checkpoint(&dir, &live);
    assert_eq!(ids_of(&crashed, B), before);
    assert_eq!(
        pragma(&db(&dir), "user_version"),
        SCHEMA_VERSION.to_string()
    );
}

#[test]
fn our_wal_is_ours_even_beside_a_transaction_without_the_file_id() {
    // An earlier build migrated in transactions that did not name the file;
    // the WAL it left still holds this file's marked transactions.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let mut queue = Queue::open(&live).unwrap();
    let ids = fill_for(&mut queue, 2, &[B], 100);
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute_batch("CREATE TABLE unmarked (x INTEGER)")
        .unwrap();
    let crashed = reopen_crash_image_after_checkpoint(&dir, &live);
    assert_eq!(ids_of(&crashed, B), ids);
}

#[test]
fn a_wal_of_another_queue_is_set_aside_with_its_file() {
    crate::common::logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Ours: rows, cleanly closed (no WAL).
    let mine = {
        let mut queue = Queue::open(&path).unwrap();
        let ids = fill_for(&mut queue, 20, &[B], 100);
        queue.checkpoint().unwrap();
        ids
    };
    let before = std::fs::read(&path).unwrap();
    // Another queue with the same page size, caught with a live WAL.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("queue.db");
    let mut foreign = Queue::open(&other).unwrap();
    // Its purge rewrites the pages that hold our rows.
    fill_for(&mut foreign, 20, &[B], 100);
    foreign.checkpoint().unwrap();
    foreign.purge_pending(B).unwrap();
    let stale = std::fs::read(format!("{}-wal", other.display())).unwrap();
    drop(foreign);
    std::fs::write(format!("{}-wal", path.display()), &stale).unwrap();

    // A queue command refuses it and leaves both files as they are.
    let err = Queue::open_for_command(&path)
        .err()
        .expect("foreign WAL refused");
    assert!(err.to_string().contains("another queue"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        std::fs::read(format!("{}-wal", path.display())).unwrap(),
        stale
    );

    // The daemon sets the pair aside, says so, and starts a new queue.
    let mut queue = Queue::open(&path).unwrap();
    assert!(ids_of(&queue, B).is_empty());
    let aside = files_named(dir.path(), "queue.db.corrupt-");
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), before);
    assert_eq!(std::fs::read(dir.path().join(&aside[1])).unwrap(), stale);
    let logged = crate::common::logs::logged(log::Level::Error, &path.display().to_string());
    assert!(
        logged
            .iter()
            .any(|l| l.contains("another queue") && l.contains("corrupt-")),
        "{logged:?}"
    );
    let ids = fill_for(&mut queue, 2, &[B], 100);
    assert_eq!(ids_of(&queue, B), ids);
    // Our rows are intact in the file set aside (read without its WAL).
    let kept = dir.path().join("kept.db");
    std::fs::copy(dir.path().join(&aside[0]), &kept).unwrap();
    assert_eq!(ids_of(&Queue::open(&kept).unwrap(), B), mine);
}

#[test]
fn a_wal_of_some_other_database_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let mut queue = Queue::open(&path).unwrap();
        fill_for(&mut queue, 5, &[B], 100);
    }
    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();
    std::fs::copy(
        format!("{}-wal", other.display()),
        format!("{}-wal", path.display()),
    )
    .unwrap();
    drop(conn);
    let err = Queue::open_for_command(&path).err().expect("refused");
    assert!(
        err.to_string().contains("not written by this queue"),
        "{err}"
    );
    let queue = Queue::open(&path).unwrap();
    assert!(ids_of(&queue, B).is_empty());
    assert_eq!(files_named(dir.path(), "queue.db.corrupt-").len(), 2);
}

/// Makes `path` unwritable for this process: immutable when root (who
/// passes permission bits), read-only otherwise. Undone on drop.
struct Unwritable(PathBuf, bool);

impl Unwritable {
    fn make(path: &Path) -> Option<Unwritable> {
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                crate::common::skip_or_fail(&format!("chattr +i failed on {}", path.display()));
                return None;
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        Some(Unwritable(path.to_path_buf(), root))
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn a_queue_that_cannot_be_written_is_an_error_not_a_new_file() {
    for what in ["file", "directory"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let path = state.join("queue.db");
        let ids = {
            let mut queue = Queue::open(&path).unwrap();
            fill_for(&mut queue, 3, &[B], 100)
        };
        let target = if what == "file" {
            path.clone()
        } else {
            state.clone()
        };
        let Some(_guard) = Unwritable::make(&target) else {
            return;
        };
        let before = std::fs::read(&path).unwrap();
        match Queue::open(&path) {
            Err(e @ QueueError::Unwritable { .. }) => {
                assert!(
                    e.to_string().contains(&*target.to_string_lossy()),
                    "{what}: {e}"
                );
            }
            Err(other) => panic!("{what}: unexpected error {other}"),
            Ok(_) => panic!("{what}: an unwritable queue must not open"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "{what}: untouched");
        assert_eq!(files_named(&state, "queue.db"), vec!["queue.db"], "{what}");
        drop(_guard);
        assert_eq!(ids_of(&Queue::open(&path).unwrap(), B), ids, "{what}");
    }
}

#[test]
fn a_row_stored_as_its_model_is_read_without_its_flat_form_until_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let s = crate::snapshot_forms::sample();
    let flat = s.flat_json().to_string();
    queue
        .insert(
            &s.event_id.to_string(),
            &s.timestamp_string(),
            &flat,
            &s.to_model_bytes(),
            &SINKS,
            100,
        )
        .unwrap();
    for sink in SINKS {
        let row = queue.oldest(sink, 1).unwrap().remove(0);
        // Reading rows decodes no model: the protocol sinks never need the
        // flat form, and the poster reads its rows again after a splay.
        assert!(row.flat.is_empty(), "{sink}: flat form derived on read");
        assert_eq!(row.payload(), flat, "{sink}");
    }
}
