//! The SQLite outbox on real files (SPEC §5.1, §5.2).

use crate::common::rows::{flat_payload, row, timestamp};
use metricsd::queue::{Queue, QueueError, SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("queue.db")
}

/// Inserts `n` realistic rows; returns their event_ids in order.
fn fill(queue: &mut Queue, n: u64, max_pending: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (id, at, payload) = row(i);
            queue.insert(&id, &at, &payload, max_pending).unwrap();
            id
        })
        .collect()
}

fn pending_ids(queue: &Queue) -> Vec<String> {
    queue
        .peek(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

fn dead_ids(queue: &Queue) -> Vec<String> {
    queue
        .peek_dead(usize::MAX)
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
    let stats = queue.stats().unwrap();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.db_path, path);
    assert!(stats.db_bytes > 0);
}

#[test]
fn rows_come_back_oldest_first_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 5, 100);
    let rows = queue.peek(3).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>(),
        ids[..3]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let first = &rows[0];
    assert_eq!(first.attempts, 0);
    assert_eq!(first.last_error, None);
    let payload: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
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
        let first: Vec<i64> = queue.peek(2).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(queue.delete_delivered(&first).unwrap(), 2);
        // Deleting again (e.g. after a purge) counts nothing twice.
        assert_eq!(queue.delete_delivered(&first).unwrap(), 0);
        ids
    };
    let queue = Queue::open(&path).unwrap();
    let stats = queue.stats().unwrap();
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
        dropped += queue.insert(&id, &at, &payload, 5).unwrap();
        ids.push(id);
    }
    assert_eq!(dropped, 7);
    let stats = queue.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_total), (5, 7));
    assert_eq!(pending_ids(&queue), ids[7..]);
    // A lower limit after a reload trims several at once.
    let (id, at, payload) = row(99);
    assert_eq!(queue.insert(&id, &at, &payload, 2).unwrap(), 4);
    assert_eq!(pending_ids(&queue), vec![ids[11].clone(), id]);
    assert_eq!(queue.stats().unwrap().dropped_total, 11);
}

#[test]
fn rejected_rows_go_dead_after_max_attempts_and_dead_list_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 4, 100);
    let rows = queue.peek(4).unwrap();
    let bad = rows[1].id;
    for attempt in 1..=2 {
        let r = queue.reject(&[bad], "HTTP 400: bad row", 3, 10).unwrap();
        assert_eq!(r.moved_to_dead, 0);
        let row = queue
            .peek(4)
            .unwrap()
            .into_iter()
            .find(|r| r.id == bad)
            .unwrap();
        assert_eq!(row.attempts, attempt);
        assert_eq!(row.last_error.as_deref(), Some("HTTP 400: bad row"));
    }
    let r = queue.reject(&[bad], "HTTP 422", 3, 10).unwrap();
    assert_eq!(r.moved_to_dead, 1);
    assert_eq!(dead_ids(&queue), vec![ids[1].clone()]);
    let dead = &queue.peek_dead(1).unwrap()[0];
    assert_eq!((dead.id, dead.attempts), (bad, 3));
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 422"));
    assert_eq!(
        pending_ids(&queue),
        vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    let stats = queue.stats().unwrap();
    assert_eq!((stats.pending, stats.dead), (3, 1));

    // max_dead = 2: the oldest dead rows give way.
    let rest: Vec<i64> = queue.peek(3).unwrap().iter().map(|r| r.id).collect();
    let r = queue.reject(&rest, "HTTP 400", 1, 2).unwrap();
    assert_eq!(r.moved_to_dead, 3);
    assert_eq!(r.dead_trimmed, 2);
    assert_eq!(dead_ids(&queue), ids[2..]);
    assert_eq!(queue.stats().unwrap().dead, 2);
}

#[test]
fn retry_dead_puts_rows_back_in_their_original_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let ids = fill(&mut queue, 5, 100);
    let rows = queue.peek(5).unwrap();
    queue.move_to_dead(&[rows[1].id, rows[3].id]).unwrap();
    assert_eq!(dead_ids(&queue), vec![ids[1].clone(), ids[3].clone()]);
    // Newer rows arrive while those are dead.
    let later = fill(&mut queue, 2, 100);
    assert_eq!(queue.retry_dead().unwrap(), 2);
    let mut expected = ids.clone();
    expected.extend(later);
    assert_eq!(pending_ids(&queue), expected);
    assert!(queue.peek(100).unwrap().iter().all(|r| r.attempts == 0));
    let stats = queue.stats().unwrap();
    assert_eq!((stats.pending, stats.dead), (7, 0));
    assert_eq!(queue.retry_dead().unwrap(), 0);
}

#[test]
fn purge_empties_pending_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    fill(&mut queue, 5, 100);
    let first = queue.peek(2).unwrap();
    queue
        .move_to_dead(&first.iter().map(|r| r.id).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(queue.purge_dead().unwrap(), 2);
    assert_eq!(queue.purge_pending().unwrap(), 3);
    let stats = queue.stats().unwrap();
    assert_eq!((stats.pending, stats.dead, stats.dropped_total), (0, 0, 0));
    // Ids are never reused, so order still holds after a purge.
    let ids = fill(&mut queue, 2, 100);
    assert!(queue.peek(1).unwrap()[0].id > first[1].id);
    assert_eq!(pending_ids(&queue), ids);
}

#[test]
fn oldest_pending_age_comes_from_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&db(&dir)).unwrap();
    let old = timestamp(SystemTime::now() - Duration::from_secs(3600));
    queue
        .insert("old", &old, &flat_payload("old", &old, 0), 10)
        .unwrap();
    let now = timestamp(SystemTime::now());
    queue
        .insert("new", &now, &flat_payload("new", &now, 1), 10)
        .unwrap();
    let age = queue.stats().unwrap().oldest_pending_age_s;
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
    assert_eq!(queue.stats().unwrap().pending, 0);
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
    fill(&mut queue, 10, 10_000);
    // Cap the file just above its current size: a stand-in for a full disk.
    let cap = queue.set_size_limit(Some(64 * 1024)).unwrap();
    assert!(cap >= 64 * 1024 - 4096, "{cap}");
    let mut inserted = 0;
    let failure = loop {
        let (id, at, payload) = row(inserted);
        match queue.insert(&id, &at, &payload, 10_000) {
            Ok(_) => inserted += 1,
            Err(e) => break e,
        }
        assert!(inserted < 1000, "the size limit never took effect");
    };
    assert!(failure.is_full(), "{failure}");
    let before = queue.stats().unwrap();
    // The failed insert left nothing half-done, and keeps failing cleanly.
    let (id, at, payload) = row(0);
    assert!(queue.insert(&id, &at, &payload, 10_000).is_err());
    assert_eq!(queue.stats().unwrap().pending, before.pending);

    // Freeing space (delivering the backlog) makes inserts work again...
    let all: Vec<i64> = queue
        .peek(usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    queue.delete_delivered(&all).unwrap();
    let ids = fill(&mut queue, 3, 10_000);
    assert_eq!(pending_ids(&queue), ids);
    // ...as does lifting the cap.
    queue.set_size_limit(None).unwrap();
    fill(&mut queue, 50, 10_000);
    assert_eq!(queue.stats().unwrap().pending, 53);
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
        let rows = reader.peek(10).unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        reader.delete_delivered(&ids).unwrap();
        delivered.extend(rows.into_iter().map(|r| r.event_id));
    }
    let inserted = inserter.join().unwrap();
    assert_eq!(delivered, inserted);
    let stats = reader.stats().unwrap();
    assert_eq!((stats.pending, stats.delivered_total), (0, 300));
}

#[test]
fn the_file_shrinks_after_a_backlog_drains() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut queue = Queue::open(&path).unwrap();
    fill(&mut queue, 1500, 100_000);
    queue.checkpoint().unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    assert!(full > 800 * 1024, "{full}");
    while !queue.peek(100).unwrap().is_empty() {
        let ids: Vec<i64> = queue.peek(100).unwrap().iter().map(|r| r.id).collect();
        queue.delete_delivered(&ids).unwrap();
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
