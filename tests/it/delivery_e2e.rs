//! End to end through the real binary: snapshots reach a real HTTP backend,
//! and a backend that never answers does not hold up sampling.

use crate::common::wait_for;
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    config: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, backend_url: &str, extra: &str) -> Daemon {
        let config = dir.join("metricsd.toml");
        std::fs::write(
            &config,
            format!(
                "interval = \"1s\"\nstate_dir = {:?}\n[stream]\nenabled = false\n[backend]\nurl = {backend_url:?}\nretry_backoff = [\"200ms\"]\n{extra}",
                dir.join("state").display().to_string()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_metricsd"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, config }
    }

    fn queue_stats(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_metricsd"))
            .arg("--config")
            .arg(&self.config)
            .args(["queue", "stats"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Received {
    headers: Vec<(String, String)>,
    body: Value,
}

#[test]
fn snapshots_arrive_at_the_backend_in_the_flat_form() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/telemetry/snapshot",
        server.server_addr().to_ip().unwrap()
    );
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let headers = request
                .headers()
                .iter()
                .map(|h| {
                    (
                        h.field.as_str().as_str().to_ascii_lowercase(),
                        h.value.as_str().to_string(),
                    )
                })
                .collect();
            sink.lock().unwrap().push(Received {
                headers,
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
            });
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &url, "token = \"t0ps3cret\"\n");
    wait_for("3 posts", Duration::from_secs(20), || {
        received.lock().unwrap().len() >= 3
    });
    assert!(daemon.stop().success());

    let got = received.lock().unwrap();
    let mut last_ts = String::new();
    for r in got.iter() {
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let flat = r
            .body
            .as_object()
            .expect("batch_size 1 posts one JSON object");
        assert_eq!(flat.len(), 21, "the flat form has 21 fields");
        assert_eq!(
            header("idempotency-key"),
            flat["event_id"].as_str().unwrap()
        );
        assert_eq!(header("content-type"), "application/json");
        assert!(header("user-agent").starts_with("metricsd/"));
        assert_eq!(header("authorization"), "Bearer t0ps3cret");
        let ts = flat["timestamp"].as_str().unwrap().to_string();
        assert!(ts > last_ts, "oldest first");
        last_ts = ts;
    }
}

#[test]
fn a_hanging_backend_does_not_hold_up_sampling() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let held: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    let holder = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            holder.lock().unwrap().push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &url, "timeout = \"30s\"\n");
    // One sample a second goes on while the first POST hangs for 30 s.
    wait_for("5 queued snapshots", Duration::from_secs(15), || {
        daemon.queue_stats()["pending"].as_u64().unwrap_or(0) >= 5
    });
    assert!(!held.lock().unwrap().is_empty(), "the poster did connect");
    let started = Instant::now();
    assert!(daemon.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "stop gives up the hanging POST within 5 s"
    );
}

/// Runs the daemon of `setup` with its state directory on a 3 MiB tmpfs, in
/// a mount namespace of its own; `prelude` runs in that namespace first (a
/// shell command; `$1` is the state directory). None (skipped) where no
/// such namespace can be made.
fn on_a_small_tmpfs(
    setup: &crate::common::daemon::Setup,
    prelude: &str,
) -> Option<crate::common::daemon::Daemon> {
    use crate::common::daemon::{clean_env, Daemon, BIN};
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "mkdir -p \"$1\"; mount -t tmpfs -o size=3m tmpfs \"$1\"; {prelude}\n\
             exec \"$2\" --config \"$3\" run"
        ))
        .args([
            "sh",
            setup.state_dir.to_str().unwrap(),
            BIN,
            setup.config_str(),
        ]);
    clean_env(&mut cmd, &[]);
    let daemon = Daemon::spawn_command(cmd, false);
    if daemon
        .stderr
        .wait_for_from(0, Duration::from_secs(20), |l| {
            l.contains(" starting: interval")
        })
        .is_none()
    {
        let log = daemon.log();
        if log.contains("unshare failed") || log.contains("mount:") {
            crate::common::skip_or_fail(&format!("no private tmpfs here: {log}"));
            return None;
        }
        panic!("the daemon did not start:\n{log}");
    }
    Some(daemon)
}

/// The daemon's state directory as the test reaches it, through the
/// daemon's own root (its mount namespace).
fn state_seen_by(
    daemon: &crate::common::daemon::Daemon,
    setup: &crate::common::daemon::Setup,
) -> std::path::PathBuf {
    Path::new(&format!("/proc/{}/root", daemon.pid()))
        .join(setup.state_dir.strip_prefix("/").unwrap())
}

/// Fills the filesystem under `dir` until it has no space left; returns the
/// file that holds the space.
fn fill_up(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            // The last bytes that fit.
            while file.write_all(&block[..512]).is_ok() {}
            return path;
        }
    }
}

/// A daemon at 1 s whose backend refused its first rows (503) and whose
/// state directory (a small tmpfs) is then full: inserts fail from now on.
/// Returns the backend, the setup, the daemon and the file that holds the
/// space; None (skipped) where no private tmpfs can be made.
fn refused_then_full(
    backend_keys: &str,
) -> Option<(
    crate::common::backend::Backend,
    crate::common::daemon::Setup,
    crate::common::daemon::Daemon,
    std::path::PathBuf,
)> {
    use crate::common::backend::{Backend, Behaviour};
    use crate::common::daemon::Setup;
    let backend = Backend::start();
    backend.set(Behaviour::Status(503));
    let setup = Setup::new(
        "1s",
        "",
        &format!(
            "[backend]\nurl = \"{}\"\n{backend_keys}retry_backoff = [\"1s\"]\nsplay = \"0s\"\n[queue]\nhistory = \"0s\"\n",
            backend.url()
        ),
    );
    let daemon = on_a_small_tmpfs(&setup, "")?;
    let state = state_seen_by(&daemon, &setup);
    assert!(backend.wait_until(Duration::from_secs(20), |b| b.request_count() >= 2));
    let filler = fill_up(&state);
    daemon.wait_for_line("queue insert failed", Duration::from_secs(20));
    Some((backend, setup, daemon, filler))
}

/// `metricsd_queue_insert_failures_total` from /metrics.
fn insert_failures(setup: &crate::common::daemon::Setup) -> u64 {
    let (_, body) = crate::common::receivers::http_get(setup.port, "/metrics").expect("/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("metricsd_queue_insert_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("metricsd_queue_insert_failures_total")
}

/// Waits until `n` more samples have found the disk full: the poster has
/// had that long (several of its 2 s retries) to send anything again.
fn wait_samples_on_a_full_disk(setup: &crate::common::daemon::Setup, n: u64) {
    let from = insert_failures(setup);
    wait_for(
        "samples taken while the disk is full",
        Duration::from_secs(30),
        || insert_failures(setup) >= from + n,
    );
}

#[test]
fn rows_the_backend_took_are_not_sent_again_while_the_disk_is_too_full_to_delete_them() {
    use crate::common::backend::Behaviour;
    let Some((backend, setup, mut daemon, filler)) = refused_then_full("") else {
        return;
    };
    backend.set(Behaviour::Ok);
    daemon.wait_for_line(
        "backend poster could not delete delivered rows",
        Duration::from_secs(20),
    );
    // The disk stays full for a while: in that time the rows the backend
    // took must not be sent again (the poster retries its delete every 2 s).
    wait_samples_on_a_full_disk(&setup, 6);
    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for_line("poster can use the queue again", Duration::from_secs(20));
    assert!(backend.wait_until(Duration::from_secs(20), |b| b.delivered_ids().len() >= 3));

    let mut delivered = backend.delivered_ids();
    let total = delivered.len();
    delivered.sort();
    delivered.dedup();
    assert_eq!(
        delivered.len(),
        total,
        "rows delivered more than once while the disk was full; log:\n{}",
        daemon.log()
    );
    daemon.stop_clean(Duration::from_secs(10));
}

#[test]
fn on_a_full_disk_the_daemon_starts_streams_and_queues_once_there_is_space() {
    use crate::common::daemon::Setup;
    // SPEC §5.1: a full disk fails the insert; sampling and streaming go on.
    // That holds from the start too: a restart on a full disk still serves.
    let setup = Setup::new("1s", "", "[queue]\nhistory = \"0s\"\n");
    let fill = "dd if=/dev/zero of=\"$1/filler\" bs=64k 2>/dev/null || true";
    let Some(mut daemon) = on_a_small_tmpfs(&setup, fill) else {
        return;
    };
    let state = state_seen_by(&daemon, &setup);
    daemon.wait_for_line(
        "no space left; starting without it",
        Duration::from_secs(20),
    );
    use crate::common::receivers::http_get;
    let health = || -> Value {
        http_get(setup.port, "/health")
            .and_then(|(_, body)| serde_json::from_slice(&body).ok())
            .unwrap_or(Value::Null)
    };
    wait_for(
        "two samples taken without a queue",
        Duration::from_secs(20),
        || {
            let h = health();
            h["status"] == "ok" && h["reason"].is_string() && h["last_sample_at"].is_string()
        },
    );
    let before = health()["last_sample_at"].clone();
    wait_for("sampling goes on", Duration::from_secs(20), || {
        health()["last_sample_at"] != before
    });
    // Nothing but the sampler may connect to the queue before it has
    // opened it: the history says so.
    let (status, body) = http_get(setup.port, "/api/history").expect("an answer");
    let body = String::from_utf8_lossy(&body);
    assert!(
        status == 503 && body.contains("not open yet"),
        "{status} {body}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".metricsd-write-test"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    std::fs::remove_file(state.join("filler")).unwrap();
    daemon.wait_for_line("queue.db opened", Duration::from_secs(20));
    wait_for("inserts resumed", Duration::from_secs(20), || {
        health()["reason"].is_null()
    });
    assert!(state.join("queue.db").exists());
    daemon.stop_clean(Duration::from_secs(10));
}

#[test]
fn a_rejected_row_is_not_sent_again_while_the_disk_is_too_full_to_record_the_rejection() {
    use crate::common::backend::Behaviour;
    let Some((backend, setup, mut daemon, filler)) = refused_then_full("batch_size = 1\n") else {
        return;
    };
    // The oldest row, which every try sends first, is the one the backend
    // will call bad.
    let bad = backend.requests()[0].event_ids()[0].clone();
    backend.set(Behaviour::RejectEvent {
        event_id: bad.clone(),
        status: 400,
    });
    daemon.wait_for_line(
        "backend poster could not record a rejected row",
        Duration::from_secs(20),
    );
    // The disk stays full for a while: the row the backend called bad must
    // not be sent again meanwhile (the poster retries the record every 2 s).
    wait_samples_on_a_full_disk(&setup, 6);
    let freed_at = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for_line("poster can use the queue again", Duration::from_secs(20));
    let rejected_while_full = backend
        .requests()
        .iter()
        .filter(|r| r.at < freed_at && r.answered == Some(400) && r.event_ids().contains(&bad))
        .count();
    assert_eq!(
        rejected_while_full,
        1,
        "the bad row was sent again while its rejection could not be recorded; log:\n{}",
        daemon.log()
    );
    daemon.stop_clean(Duration::from_secs(10));
}
