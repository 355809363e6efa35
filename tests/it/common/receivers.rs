//! Real remote-write receivers as child processes: Prometheus
//! (`--web.enable-remote-write-receiver`) and VictoriaMetrics, each on a
//! free loopback port with its own data directory, queried back over its
//! HTTP API, and stopped by PID when dropped. Also the OTLP test receiver
//! (`otlp_receiver.py`, decoding with the official `opentelemetry-proto`).
#![allow(dead_code)]

use super::{free_port, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prometheus,
    VictoriaMetrics,
}

/// A running receiver; killed (SIGKILL by PID) and reaped on drop.
pub struct Receiver {
    pub kind: Kind,
    pub port: u16,
    pub data: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// Whether the receiver's binary is installed (CI installs both).
pub fn installed(kind: Kind) -> bool {
    let bin = match kind {
        Kind::Prometheus => "prometheus",
        Kind::VictoriaMetrics => "victoria-metrics",
    };
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Receiver {
    /// Starts a receiver with a fresh temporary data directory.
    pub fn start(kind: Kind) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut r = Receiver {
            kind,
            port: free_port(),
            data,
            child: None,
            _dir: Some(dir),
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = match self.kind {
            Kind::Prometheus => {
                let config = self.data.with_file_name("prometheus.yml");
                std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
                let mut c = Command::new("prometheus");
                c.arg(format!("--config.file={}", config.display()))
                    .arg("--web.enable-remote-write-receiver")
                    .arg(format!("--storage.tsdb.path={}", self.data.display()))
                    .arg(format!("--web.listen-address={listen}"));
                c
            }
            Kind::VictoriaMetrics => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-storageDataPath={}", self.data.display()))
                    .arg(format!("-httpListenAddr={listen}"))
                    // Samples are searchable at once, not after the default 30 s.
                    .arg("-search.latencyOffset=0s")
                    .arg("-search.disableCache")
                    .arg("-dedup.minScrapeInterval=1ms");
                c
            }
        };
        let log = std::fs::File::create(self.data.with_file_name("receiver.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the receiver");
        self.child = Some(child);
        let ready_path = match self.kind {
            Kind::Prometheus => "/-/ready",
            Kind::VictoriaMetrics => "/health",
        };
        let up = wait_until(START, || {
            matches!(http_get(self.port, ready_path), Some((200, _)))
        });
        assert!(up, "{:?} did not start:\n{}", self.kind, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_file_name("receiver.log")).unwrap_or_default()
    }

    /// The remote-write URL.
    pub fn write_url(&self) -> String {
        match self.kind {
            Kind::Prometheus => format!("http://127.0.0.1:{}/api/v1/write", self.port),
            Kind::VictoriaMetrics => format!("http://127.0.0.1:{}/api/v1/write", self.port),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process (SIGTERM, then SIGKILL), keeping the data directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Flushes what the receiver buffers in memory so queries see it.
    fn flush(&self) {
        if self.kind == Kind::VictoriaMetrics {
            let _ = http_get(self.port, "/internal/force_flush");
        }
    }

    /// `GET /api/v1/query_range`-free export of every sample of `selector`
    /// between `start_ms` and `end_ms`: (labels, [(timestamp_ms, value)]).
    pub fn series(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<(Value, Vec<(i64, f64)>)> {
        self.flush();
        // A range query of the raw samples: `selector[range]` at `end`.
        let range_s = ((end_ms - start_ms) / 1000).max(1) + 1;
        let query = format!("{selector}[{range_s}s]");
        let path = format!(
            "/api/v1/query?query={}&time={:.3}",
            encode(&query),
            end_ms as f64 / 1000.0
        );
        let v = self.api(&path);
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let points = r["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                        let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                        (t, v)
                    })
                    .filter(|(t, _)| *t >= start_ms && *t <= end_ms)
                    .collect();
                (r["metric"].clone(), points)
            })
            .collect()
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str, at_ms: i64) -> Vec<Value> {
        self.flush();
        let path = format!(
            "/api/v1/query?query={}&time={:.3}",
            encode(promql),
            at_ms as f64 / 1000.0
        );
        self.api(&path)["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn api(&self, path: &str) -> Value {
        match http_get(self.port, path) {
            Some((200, body)) => serde_json::from_slice(&body).unwrap_or(Value::Null),
            Some((status, body)) => panic!(
                "{:?} {path}: HTTP {status}: {}",
                self.kind,
                String::from_utf8_lossy(&body)
            ),
            None => Value::Null,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Percent-encoding for a query parameter.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf[end + 4..].to_vec()))
}

/// The OTLP test receiver: a Python process that decodes every request with
/// the official `opentelemetry-proto` package and appends it as one JSON
/// line to a file; what it answers is set through its control file.
pub struct OtlpReceiver {
    pub port: u16,
    pub out: PathBuf,
    control: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Whether Python and the official OTLP package are there.
pub fn otlp_available() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("requests.jsonl");
        let control = dir.path().join("control.json");
        std::fs::write(&control, "{}").unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/common/otlp_receiver.py");
        let log = std::fs::File::create(dir.path().join("receiver.log")).unwrap();
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&out)
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the OTLP receiver");
        let r = OtlpReceiver {
            port,
            out,
            control,
            child,
            _dir: dir,
        };
        assert!(
            wait_until(START, || http_get(port, "/ready").is_some()),
            "OTLP receiver did not start"
        );
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metrics", self.port)
    }

    /// Makes it answer `status`, with a partial success of `rejected` points.
    pub fn answer(&self, status: u16, rejected: i64, message: &str) {
        let control =
            serde_json::json!({"status": status, "rejected": rejected, "message": message});
        // Whole or not at all for the receiver, which reads it per request.
        let staged = self.control.with_extension("staged");
        std::fs::write(&staged, control.to_string()).unwrap();
        std::fs::rename(&staged, &self.control).unwrap();
    }

    /// Every request decoded so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
