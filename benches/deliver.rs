//! Delivery to real receivers and the cost of each sink's encoding.
//!
//! 1. Encoding: CPU time per snapshot for each sink (JSON backend, remote
//!    write, OTLP), on snapshots of this host, batches of 100; the model
//!    decoding the protocol sinks do first is shown apart. Each figure is
//!    the best of 5 rounds over 1,000 snapshots (the cores are shared).
//! 2. Drain: a backlog of 10,080 snapshots (7 days at 60 s) for
//!    `[remote_write]` with batch_size = 100, posted by the real poster to a
//!    real VictoriaMetrics on this machine. Target ≥ 500 snapshots/s.
//!
//! Run: cargo bench --bench deliver
//! Only the encoding part (no receiver, a few seconds):
//!   DELIVER_BENCH=encoding cargo bench --bench deliver
//! Only the drain: DELIVER_BENCH=drain cargo bench --bench deliver
//! The queue lives under /var/tmp (or $METRICSD_BENCH_DIR), a real disk.

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use common::receivers::{Kind, Receiver};
use metricsd::collect::{Collector, Roots};
use metricsd::config::{Config, SharedConfig, SinkKind, Splay};
use metricsd::deliver::sink::{for_kind, Sink};
use metricsd::deliver::{PosterContext, Posters};
use metricsd::queue::{Queue, Row};
use metricsd::shutdown::{Shutdown, Wake};
use metricsd::snapshot::Snapshot;
use metricsd::status::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const BACKLOG: u64 = 10_080;
const BATCH: usize = 100;

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `n` snapshots of this host, a minute apart, ending now.
fn snapshots(n: u64) -> Vec<Snapshot> {
    let config = Config::default();
    let mut collector = Collector::new(Roots::default(), &config.collect);
    std::thread::sleep(Duration::from_millis(300));
    let base = metricsd::sampler::take_snapshot(
        &mut collector,
        "bench-host",
        "bench-machine",
        1,
        Duration::from_secs(60),
    );
    let now = SystemTime::now();
    (0..n)
        .map(|i| {
            let mut s = base.clone();
            s.timestamp = now - Duration::from_secs(60 * (n - i));
            s.event_id = uuid::Uuid::now_v7();
            s.seq = i + 1;
            s
        })
        .collect()
}

/// Rounds of each encoding measurement; the cheapest is printed, as the
/// cores are shared and other work only ever adds to a round.
const ROUNDS: usize = 5;

/// The least CPU time per row over `ROUNDS` runs of `run` over `rows`,
/// and what the last run returned.
fn best_of<T>(rows: &[Row], mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..ROUNDS {
        let t = thread_cpu();
        last = Some(run());
        best = best.min((thread_cpu() - t) / rows.len() as u32);
    }
    (best, last.expect("at least one round"))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn encoding(snaps: &[Snapshot]) {
    let rows: Vec<Row> = snaps
        .iter()
        .enumerate()
        // As the queue hands them over: the model only (the JSON backend
        // derives the flat form when it encodes).
        .map(|(i, s)| Row::of_snapshot(i as i64, s))
        .collect();
    let samples: usize = metricsd::export::families::host_families(&snaps[0])
        .iter()
        .map(|f| f.samples.len())
        .sum();
    println!(
        "encoding: {} snapshots of this host, {samples} host samples each, model {} bytes, flat {} bytes; best of {ROUNDS} rounds; load average {}",
        rows.len(),
        rows[0].model.len(),
        rows[0].payload().len(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let (full, _) = best_of(&rows, || {
        for r in &rows {
            std::hint::black_box(Snapshot::from_model_bytes(&r.model).unwrap());
        }
    });
    println!(
        "  model decode, whole snapshot (inflate + JSON)  {:>6.1} µs CPU per snapshot",
        micros(full)
    );
    // What the protocol sinks start each row with.
    let (decode, _) = best_of(&rows, || {
        for r in &rows {
            std::hint::black_box(Snapshot::from_model_bytes_for_export(&r.model).unwrap());
        }
    });
    println!(
        "  model decode, export read (no collector runs)  {:>6.1} µs CPU per snapshot",
        micros(decode)
    );
    for (kind, batch) in [
        (SinkKind::Backend, 1usize),
        (SinkKind::Backend, BATCH),
        (SinkKind::RemoteWrite, BATCH),
        (SinkKind::Otlp, BATCH),
    ] {
        let mut sink: Box<dyn Sink> = for_kind(kind);
        let mut config = Config::default().sink(kind).clone();
        config.batch_size = batch;
        let (per, bytes) = best_of(&rows, || {
            rows.chunks(batch)
                .map(|chunk| sink.encode(chunk, &config).unwrap().body.len())
                .sum::<usize>()
        });
        // The JSON backend derives the flat form from the whole model.
        let apart = if kind == SinkKind::Backend {
            format!(
                "incl. the flat form from the model, {:.1} without the decode",
                micros(per.saturating_sub(full))
            )
        } else {
            format!(
                "incl. decode, {:.1} without",
                micros(per.saturating_sub(decode))
            )
        };
        println!(
            "  {:<14} batch {:>3}: {:>6.1} µs CPU per snapshot {apart}; {} body bytes per snapshot",
            kind.name(),
            batch,
            micros(per),
            bytes / rows.len()
        );
    }
}

fn drain(snaps: &[Snapshot]) {
    if !common::receivers::installed(Kind::VictoriaMetrics) {
        println!("drain: skipped, victoria-metrics is not installed");
        return;
    }
    let base = std::env::var_os("METRICSD_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("metricsd-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    let db = dir.path().join("queue.db");
    let t = Instant::now();
    {
        let mut queue = Queue::open(&db).unwrap();
        for s in snaps {
            queue
                .insert(
                    &s.event_id.to_string(),
                    &s.timestamp_string(),
                    &s.flat_json().to_string(),
                    &s.to_model_bytes(),
                    &["remote_write"],
                    BACKLOG,
                )
                .unwrap();
        }
    }
    println!(
        "drain: backlog of {} snapshots written in {:?}, queue file {:.1} MiB",
        snaps.len(),
        t.elapsed(),
        metricsd::queue::file_bytes(&db) as f64 / 1048576.0
    );
    let receiver = Receiver::start(Kind::VictoriaMetrics);
    let mut config = Config::default();
    config.state_dir = dir.path().to_path_buf();
    config.queue.max_pending = BACKLOG;
    config.remote_write.url = receiver.write_url();
    config.remote_write.batch_size = BATCH;
    config.remote_write.splay = Splay::Fixed(Duration::ZERO);
    let status = Arc::new(Status::default());
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let posters = Posters::start(
        PosterContext {
            db_path: db.clone(),
            config: SharedConfig::new(config),
            status: status.clone(),
            shutdown: shutdown.clone(),
            machine_id: "bench-machine".to_string(),
        },
        Wake::new(),
    )
    .unwrap();
    let sink = status.sink(SinkKind::RemoteWrite);
    let deadline = started + Duration::from_secs(600);
    while sink.delivered_total.load(Ordering::Relaxed) < snaps.len() as u64 {
        assert!(Instant::now() < deadline, "drain did not finish in 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    shutdown.trigger();
    assert!(posters
        .join_by(Instant::now() + Duration::from_secs(10))
        .is_empty());
    let samples: usize = metricsd::export::families::host_families(&snaps[0])
        .iter()
        .map(|f| f.samples.len())
        .sum();
    let rate = snaps.len() as f64 / took.as_secs_f64();
    println!(
        "drain: {} snapshots to VictoriaMetrics, batch_size {BATCH}: {:.2?}, {rate:.0} snapshots/s, {:.0} samples/s (target ≥ 500 snapshots/s: {})",
        snaps.len(),
        took,
        rate * samples as f64,
        if rate >= 500.0 { "met" } else { "NOT met" }
    );
    // Every snapshot's sample is in the receiver.
    let first = snaps[0].timestamp;
    let last = snaps.last().unwrap().timestamp;
    let ms = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let stored: usize = receiver
        .series("host_load1{instance=\"bench-host\"}", ms(first), ms(last))
        .iter()
        .map(|(_, p)| p.len())
        .sum();
    println!(
        "drain: host_load1 samples stored by the receiver: {stored} of {}",
        snaps.len()
    );
}

fn main() {
    let part = std::env::var("DELIVER_BENCH").unwrap_or_default();
    let (encode, drain_too) = match part.as_str() {
        "" => (true, true),
        "encoding" => (true, false),
        "drain" => (false, true),
        other => panic!("DELIVER_BENCH={other}: expected encoding or drain"),
    };
    let snaps = snapshots(BACKLOG);
    if encode {
        encoding(&snaps[..1000]);
    }
    if drain_too {
        drain(&snaps);
    }
}
