//! Queue insert latency with synchronous=FULL (one transaction for three
//! sinks), the queue file's size with a full week of snapshots (10,080)
//! pending for each of three sinks, after draining, and after a refill, and
//! the time to read a day of history (1,440 rows) for `/api/history`.
//!
//! Run: cargo bench --bench queue_insert
//! The file lives under /var/tmp (or $METRICSD_BENCH_DIR): a real disk, not
//! tmpfs, or the fsync figures would mean nothing. Every row is a real
//! snapshot of this host (its flat form and `Snapshot::to_model_bytes`, as
//! the sampler stores them with a protocol sink configured), with its own
//! event_id, seq and time.

use metricsd::queue::{file_bytes, Queue};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const TIMED_INSERTS: usize = 1_000;
const WEEK_OF_ROWS: u64 = 10_080;
const DAY_OF_ROWS: usize = 1_440;
const SINKS: [&str; 3] = ["backend", "remote_write", "otlp"];
const MIB: f64 = 1024.0 * 1024.0;
const INTERVAL: Duration = Duration::from_secs(60);

fn main() {
    let base = std::env::var_os("METRICSD_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into());
    let base_snapshot = host_snapshot();
    let dir = tempfile::Builder::new()
        .prefix("metricsd-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    println!(
        "queue file in {} (file system: {})",
        dir.path().display(),
        fs_type(dir.path())
    );
    let path = dir.path().join("queue.db");
    let mut queue = Queue::open(&path).unwrap();
    queue.set_history(Duration::from_secs(24 * 3600)).unwrap();

    // A week of snapshots a minute apart, ending now: the last day of them
    // is history, the rest only waits for the sinks.
    let start = SystemTime::now() - INTERVAL * WEEK_OF_ROWS as u32;
    let (_, _, first_flat, first_model) = snapshot(&base_snapshot, 0, start);
    let (payload_len, model_bytes) = (first_flat.len(), first_model.len());
    let mut latencies = Vec::with_capacity(TIMED_INSERTS);
    for i in 0..TIMED_INSERTS as u64 {
        let (id, at, payload, model) = snapshot(&base_snapshot, i, start);
        let t = Instant::now();
        queue
            .insert(&id, &at, &payload, &model, &SINKS, WEEK_OF_ROWS)
            .unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "insert ({payload_len}-byte flat form + {model_bytes}-byte model, 3 sinks, \
         synchronous=FULL, {TIMED_INSERTS} inserts): median {:?}, p99 {:?}, max {:?}, mean {mean:?}",
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );

    fill(
        &mut queue,
        TIMED_INSERTS as u64..WEEK_OF_ROWS,
        start,
        &base_snapshot,
    );
    report(
        "with 10,080 snapshots pending for each of 3 sinks",
        &queue,
        &path,
    );
    queue.checkpoint().unwrap();
    let full = report(
        "with 10,080 snapshots pending for each of 3 sinks, after a checkpoint",
        &queue,
        &path,
    );
    println!(
        "  = {:.0} bytes per snapshot (model, 3 pending rows, a day of flat history, indexes)",
        full as f64 / WEEK_OF_ROWS as f64
    );

    history(&queue);

    for sink in SINKS {
        drain(&mut queue, sink);
    }
    report(
        "after draining every sink (a day of history stays)",
        &queue,
        &path,
    );
    queue.checkpoint().unwrap();
    let drained = report("after draining and a checkpoint", &queue, &path);

    // Another week's backlog of the same shape (new event_ids; its last
    // day again in the history window): the drained space is used again.
    fill(&mut queue, 0..WEEK_OF_ROWS, start, &base_snapshot);
    queue.checkpoint().unwrap();
    let refilled = report(
        "after a second week pending for 3 sinks and a checkpoint",
        &queue,
        &path,
    );
    println!(
        "reuse: full {:.2} MiB, drained {:.2} MiB, refilled {:.2} MiB",
        full as f64 / MIB,
        drained as f64 / MIB,
        refilled as f64 / MIB
    );
    let limit = 20 * 1024 * 1024;
    assert!(
        full <= limit && refilled <= limit,
        "queue file with a week pending for 3 sinks is over 20 MiB ({full}, {refilled} bytes)"
    );
    assert!(
        refilled <= full + full / 10,
        "the drained space was not reused"
    );
}

/// A real snapshot of this host (the second one, so rates and percentages
/// are filled in as in the daemon).
fn host_snapshot() -> metricsd::snapshot::Snapshot {
    use metricsd::collect::{Collector, Roots};
    let config = metricsd::config::Config::default();
    let mut collector = Collector::new(Roots::default(), &config.collect);
    std::thread::sleep(Duration::from_millis(200));
    let take = |collector: &mut Collector, seq| {
        metricsd::sampler::take_snapshot(collector, "bench-host", "bench-machine", seq, INTERVAL)
    };
    take(&mut collector, 1);
    std::thread::sleep(Duration::from_millis(200));
    take(&mut collector, 2)
}

/// Snapshot `i` of a series a minute apart from `start`:
/// (event_id, created_at, flat form, model).
fn snapshot(
    base: &metricsd::snapshot::Snapshot,
    i: u64,
    start: SystemTime,
) -> (String, String, String, Vec<u8>) {
    let mut s = base.clone();
    s.event_id = uuid::Uuid::now_v7();
    s.seq = i + 1;
    s.timestamp = start + INTERVAL * i as u32;
    (
        s.event_id.to_string(),
        s.timestamp_string(),
        s.flat_json().to_string(),
        s.to_model_bytes(),
    )
}

fn fill(
    queue: &mut Queue,
    range: std::ops::Range<u64>,
    start: SystemTime,
    base: &metricsd::snapshot::Snapshot,
) {
    let t = Instant::now();
    let n = range.end - range.start;
    for i in range {
        let (id, at, payload, model) = snapshot(base, i, start);
        queue
            .insert(&id, &at, &payload, &model, &SINKS, WEEK_OF_ROWS)
            .unwrap();
    }
    println!("  (inserted {n} snapshots in {:?})", t.elapsed());
}

fn drain(queue: &mut Queue, sink: &str) {
    let t = Instant::now();
    loop {
        let ids: Vec<i64> = queue
            .oldest(sink, 100)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            break;
        }
        queue.delete_delivered(sink, &ids).unwrap();
    }
    println!("  (drained {sink} in {:?})", t.elapsed());
}

/// `/api/history` for a day: the rows, joined into the JSON array it serves.
fn history(queue: &Queue) {
    let since = metricsd_unix_ms(SystemTime::now() - Duration::from_secs(24 * 3600));
    let mut times = Vec::new();
    let mut body_len = 0;
    let mut rows_read = 0;
    for _ in 0..30 {
        let t = Instant::now();
        let rows = queue.history(since, DAY_OF_ROWS).unwrap();
        let body = format!("[{}]", rows.join(","));
        times.push(t.elapsed());
        body_len = body.len();
        rows_read = rows.len();
    }
    times.sort();
    println!(
        "history: {rows_read} rows ({:.0} KiB as a JSON array) in median {:?}, max {:?} (30 reads, target <= 20 ms)",
        body_len as f64 / 1024.0,
        times[times.len() / 2],
        times[times.len() - 1]
    );
    // The window slides while the benchmark runs: a few may have aged out.
    assert!(
        rows_read + 10 >= DAY_OF_ROWS,
        "a day of history: {rows_read} rows"
    );
}

fn metricsd_unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn report(when: &str, queue: &Queue, path: &Path) -> u64 {
    let stats = queue.stats(&SINKS).unwrap();
    let main = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bytes = file_bytes(path);
    let pending: Vec<String> = stats
        .sinks
        .iter()
        .map(|(name, s)| format!("{name} {}", s.pending))
        .collect();
    println!(
        "size {when}: {:.2} MiB (main file {:.2} MiB + WAL {:.2} MiB), pending: {}",
        bytes as f64 / MIB,
        main as f64 / MIB,
        (bytes - main) as f64 / MIB,
        pending.join(", ")
    );
    bytes
}

/// The file system type of `path`, to show the benchmark ran on a real disk.
fn fs_type(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is NUL-terminated; st is a valid out-pointer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".to_string();
    }
    match st.f_type as i64 {
        0x0102_1994 => "tmpfs (NOT a real disk!)".to_string(),
        0xEF53 => "ext2/3/4".to_string(),
        0x5846_5342 => "xfs".to_string(),
        0x9123_683E => "btrfs".to_string(),
        other => format!("0x{other:x}"),
    }
}
