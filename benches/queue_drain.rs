//! Drain rate: a 20,000-row backlog posted by the real poster thread to a
//! local keep-alive backend that answers 200 at once, with batch_size 1 and
//! batch_size 100. Targets: ≥ 2,000 rows/s and ≥ 20,000 rows/s.
//!
//! Run: cargo bench --bench queue_drain
//! The queue lives under /var/tmp (or $METRICSD_BENCH_DIR), a real disk.

#[path = "../tests/it/common/backend.rs"]
mod backend;
#[path = "../tests/it/common/rows.rs"]
mod rows;

use metricsd::queue::Queue;
use metricsd::shutdown::{Shutdown, Wake};
use metricsd::status::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKLOG: u64 = 20_000;

fn main() {
    let base = std::env::var_os("METRICSD_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("metricsd-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    println!("queue files in {}", dir.path().display());

    // One backlog, copied for each run so every run starts from the same file.
    let backlog = dir.path().join("backlog.db");
    let t = Instant::now();
    {
        let mut queue = Queue::open(&backlog).unwrap();
        for i in 0..BACKLOG {
            let (id, at, payload) = rows::row(i);
            queue
                .insert(&id, &at, &payload, &[], &["backend"], BACKLOG)
                .unwrap();
        }
        queue.checkpoint().unwrap();
    }
    println!("backlog of {BACKLOG} rows written in {:?}", t.elapsed());

    for (batch_size, target) in [(1usize, 2_000.0), (100, 20_000.0)] {
        let run_dir = dir.path().join(format!("batch-{batch_size}"));
        std::fs::create_dir(&run_dir).unwrap();
        let db = run_dir.join("queue.db");
        std::fs::copy(&backlog, &db).unwrap();

        let server = backend::Backend::start();
        server.set_recording(false);
        let mut config = rows::config(&run_dir, &server.url());
        config.backend.batch_size = batch_size;
        config.queue.max_pending = BACKLOG;
        let status = Arc::new(Status::default());
        let shutdown = Shutdown::new();
        let wake = Wake::new();

        let started = Instant::now();
        let posters = metricsd::deliver::Posters::start(
            metricsd::deliver::PosterContext {
                db_path: db.clone(),
                config: metricsd::config::SharedConfig::new(config),
                status: status.clone(),
                shutdown: shutdown.clone(),
                machine_id: "bench".to_string(),
            },
            wake,
        )
        .unwrap();
        let deadline = started + Duration::from_secs(300);
        while status.delivered_total.load(Ordering::Relaxed) < BACKLOG {
            assert!(Instant::now() < deadline, "drain did not finish in 300 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = started.elapsed();
        shutdown.trigger();
        assert!(posters
            .join_by(Instant::now() + Duration::from_secs(10))
            .is_empty());

        let rate = BACKLOG as f64 / took.as_secs_f64();
        let stats = Queue::connect(&db).unwrap().stats(&["backend"]).unwrap();
        assert_eq!(stats.pending, 0);
        assert_eq!(server.served(), BACKLOG.div_ceil(batch_size as u64));
        println!(
            "batch_size {batch_size:>3}: {BACKLOG} rows in {took:.2?} = {rate:.0} rows/s \
             ({} POSTs; target ≥ {target:.0} rows/s: {})",
            server.served(),
            if rate >= target { "met" } else { "MISSED" }
        );
    }
}
