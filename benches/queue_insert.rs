//! Queue insert latency with synchronous=FULL, and the queue file's size
//! with a full week of rows (10,080), after draining, and after a refill.
//!
//! Run: cargo bench --bench queue_insert
//! The file lives under /var/tmp (or $METRICSD_BENCH_DIR): a real disk, not
//! tmpfs, or the fsync figures would mean nothing.

#[path = "../tests/it/common/rows.rs"]
mod rows;

use metricsd::queue::{file_bytes, Queue};
use std::path::Path;
use std::time::{Duration, Instant};

const TIMED_INSERTS: usize = 1_000;
const WEEK_OF_ROWS: u64 = 10_080;
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let base = std::env::var_os("METRICSD_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into());
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

    let payload_len = rows::row(0).2.len();
    let mut latencies = Vec::with_capacity(TIMED_INSERTS);
    for i in 0..TIMED_INSERTS {
        let (id, at, payload) = rows::row(i as u64);
        let t = Instant::now();
        queue.insert(&id, &at, &payload, WEEK_OF_ROWS).unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "insert ({payload_len}-byte flat payload, synchronous=FULL, {TIMED_INSERTS} inserts): \
         median {:?}, p99 {:?}, max {:?}, mean {mean:?}",
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );

    fill(&mut queue, WEEK_OF_ROWS - TIMED_INSERTS as u64);
    report("with 10,080 pending rows", &queue, &path);
    queue.checkpoint().unwrap();
    report(
        "with 10,080 pending rows, after a checkpoint",
        &queue,
        &path,
    );

    drain(&mut queue);
    report("after draining", &queue, &path);
    queue.checkpoint().unwrap();
    report("after draining and a checkpoint", &queue, &path);

    fill(&mut queue, WEEK_OF_ROWS);
    queue.checkpoint().unwrap();
    report(
        "after a second fill to 10,080 rows and a checkpoint",
        &queue,
        &path,
    );
    let bytes = file_bytes(&path);
    assert!(
        bytes <= 10 * 1024 * 1024,
        "queue file with a week of rows is {bytes} bytes, over 10 MiB"
    );
}

fn fill(queue: &mut Queue, n: u64) {
    let t = Instant::now();
    for i in 0..n {
        let (id, at, payload) = rows::row(i);
        queue.insert(&id, &at, &payload, WEEK_OF_ROWS).unwrap();
    }
    println!("  (filled {n} rows in {:?})", t.elapsed());
}

fn drain(queue: &mut Queue) {
    loop {
        let ids: Vec<i64> = queue.peek(100).unwrap().iter().map(|r| r.id).collect();
        if ids.is_empty() {
            break;
        }
        queue.delete_delivered(&ids).unwrap();
    }
}

fn report(when: &str, queue: &Queue, path: &Path) {
    let stats = queue.stats().unwrap();
    let main = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "size {when}: {:.2} MiB (main file {:.2} MiB + WAL {:.2} MiB), {} pending",
        stats.db_bytes as f64 / MIB,
        main as f64 / MIB,
        (stats.db_bytes - main) as f64 / MIB,
        stats.pending
    );
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
