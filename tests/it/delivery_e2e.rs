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
