//! Helpers for the stream tests: a real stream server started through the
//! library, real WebSocket clients, raw HTTP requests, realistic snapshots,
//! and a strict checker for the Prometheus text format.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use metricsd::collect::units::UnitMetrics;
use metricsd::config::{Config, SharedConfig};
use metricsd::hub::Hub;
use metricsd::shutdown::Shutdown;
use metricsd::snapshot::{
    ActivityMetrics, CollectorRun, CpuMetrics, CpuModes, DeviceMetrics, DiskIoMetrics,
    InterfaceMetrics, LoadMetrics, MemoryMetrics, Metrics, MountUsage, NetworkMetrics,
    PressureMetrics, ProcessMetrics, PsiLine, Snapshot, SystemMetrics, TcpMetrics, TopCpuProcess,
    TopProcess, VmstatMetrics,
};
use metricsd::status::Status;
use metricsd::stream;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// A stream server on 127.0.0.1 with an ephemeral port, driven through the library.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    pub config: SharedConfig,
    pub status: Arc<Status>,
    pub shutdown: Shutdown,
    handle: Option<JoinHandle<()>>,
}

/// The configuration the tests start from: 1 s interval, listen on port 0.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.node_id = "test-node".to_string();
    config.interval = Duration::from_secs(1);
    config.stream.listen = "127.0.0.1:0".parse().unwrap();
    config
}

impl TestServer {
    pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with_status(configure, Status::default())
    }

    pub fn start_with_status(configure: impl FnOnce(&mut Config), status: Status) -> TestServer {
        let mut config = test_config();
        configure(&mut config);
        let listener = stream::bind(config.stream.listen).expect("bind");
        let addr = listener.local_addr().unwrap();
        let config = SharedConfig::new(config);
        let hub = Hub::new();
        let status = Arc::new(status);
        let shutdown = Shutdown::new();
        let handle = stream::spawn(
            listener,
            hub.clone(),
            config.clone(),
            status.clone(),
            shutdown.clone(),
        )
        .expect("spawn");
        TestServer {
            addr,
            hub,
            config,
            status,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Publishes a snapshot the way the sampler does; returns it.
    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        let json = snapshot.stream_json().to_string();
        self.hub.publish(snapshot.clone(), json);
        snapshot
    }

    pub fn clients(&self) -> u64 {
        self.status
            .stream_clients
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Triggers shutdown and waits for the server thread; returns how long that took.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        if let Some(handle) = self.handle.take() {
            handle.join().expect("stream thread panicked");
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Async twin of [`wait_until`], for use inside tokio tests.
pub async fn wait_until_async(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A snapshot with realistic content in every group: 8 CPUs, a few mounts,
/// `interfaces` NICs, one disk, two units.
pub fn snapshot(seq: u64, interfaces: usize) -> Snapshot {
    let modes = |scale: f64| CpuModes {
        user: 8.0 * scale,
        nice: 0.5 * scale,
        system: 3.0 * scale,
        idle: 87.0 * scale,
        iowait: 1.0 * scale,
        irq: 0.1 * scale,
        softirq: 0.3 * scale,
        steal: 0.1 * scale,
        guest: 0.0,
    };
    let psi = |avg10: f64| PsiLine {
        avg10,
        avg60: avg10 / 2.0,
        avg300: avg10 / 4.0,
        total_us: 1_000_000 + seq * 10_000,
        stall_ms_per_sec: Some(avg10 * 10.0),
    };
    let mut units = std::collections::BTreeMap::new();
    for (name, cpu) in [("metricsd.service", 0.5), ("nginx.service", 12.0)] {
        units.insert(
            name.to_string(),
            UnitMetrics {
                cpu_percent: Some(cpu),
                memory_mb: Some(12.5),
                tasks: Some(3),
                io_read_mb_per_sec: Some(0.0),
                io_write_mb_per_sec: Some(0.25),
                cpu_pressure_some_avg10: Some(0.0),
                memory_pressure_some_avg10: Some(0.0),
                io_pressure_some_avg10: Some(0.0),
                cpu_usage_usec: Some(5_000_000 + seq),
                memory_bytes: Some(13_107_200),
                io_read_bytes: Some(0),
                io_write_bytes: Some(1 << 20),
            },
        );
    }
    let metrics = Metrics {
        cpu: Some(CpuMetrics {
            usage_percent: Some(12.5),
            per_core_percent: Some((0..8).map(|i| i as f64 * 3.25).collect()),
            core_numbers: Some((0..8).collect()),
            modes_percent: Some(modes(1.0)),
            seconds_total: modes(1000.0 + seq as f64),
        }),
        activity: Some(ActivityMetrics {
            context_switches_total: 1_000_000 + seq * 100,
            interrupts_total: 500_000 + seq * 50,
            forks_total: 20_000 + seq,
            context_switches_per_sec: Some(100.0),
            interrupts_per_sec: Some(50.0),
            forks_per_sec: Some(1.0),
            procs_running: 2,
            procs_blocked: 0,
            boot_time_unix: 1_795_000_000,
        }),
        load: Some(LoadMetrics {
            load1: 0.42,
            load5: 0.37,
            load15: 0.3,
        }),
        memory: Some(MemoryMetrics {
            total_bytes: 16 << 30,
            available_bytes: 9 << 30,
            free_bytes: 4 << 30,
            buffers_bytes: 1 << 28,
            cached_bytes: 4 << 30,
            shared_bytes: 1 << 27,
            slab_bytes: 1 << 28,
            swap_total_bytes: 2 << 30,
            swap_free_bytes: 1 << 30,
        }),
        vmstat: Some(VmstatMetrics {
            swap_in_pages_total: 100,
            swap_out_pages_total: 200 + seq,
            major_faults_total: 3_000 + seq,
            swap_in_pages_per_sec: Some(0.0),
            swap_out_pages_per_sec: Some(1.0),
            major_faults_per_sec: Some(1.0),
        }),
        pressure: Some(PressureMetrics {
            cpu_some: Some(psi(2.5)),
            cpu_full: Some(psi(0.0)),
            memory_some: Some(psi(0.5)),
            memory_full: Some(psi(0.25)),
            io_some: Some(psi(1.5)),
            io_full: Some(psi(1.0)),
        }),
        filesystems: Some(
            [
                ("/", 100u64 << 30),
                ("/home", 400 << 30),
                ("/var", 50 << 30),
            ]
            .into_iter()
            .map(|(mount, total)| MountUsage {
                mount: mount.to_string(),
                fs_type: "ext4".to_string(),
                device: "/dev/sda1".to_string(),
                total_bytes: total,
                used_bytes: total / 3,
                avail_bytes: total / 2,
                inodes_total: 1_000_000,
                inodes_free: 900_000,
            })
            .collect(),
        ),
        disk_io: Some(DiskIoMetrics {
            read_bytes_per_sec: 1_048_576.0,
            write_bytes_per_sec: 524_288.0,
            devices: vec![DeviceMetrics {
                name: "sda".to_string(),
                reads_total: 10_000 + seq,
                writes_total: 20_000 + seq,
                read_bytes_total: 1 << 30,
                written_bytes_total: 2 << 30,
                read_time_ms_total: 5_000,
                write_time_ms_total: 9_000,
                io_time_ms_total: 12_000 + seq,
                in_flight: 1,
                read_bytes_per_sec: 1_048_576.0,
                write_bytes_per_sec: 524_288.0,
                reads_per_sec: 10.0,
                writes_per_sec: 20.0,
                util_percent: 3.5,
                read_await_ms: 0.5,
                write_await_ms: 1.25,
            }],
        }),
        network: Some(NetworkMetrics {
            interfaces: (0..interfaces)
                .map(|i| InterfaceMetrics {
                    name: format!("eth{i}"),
                    rx_bytes: 1_000_000 + seq * 1000 + i as u64,
                    tx_bytes: 2_000_000 + seq * 500,
                    rx_packets: 10_000 + seq,
                    tx_packets: 9_000 + seq,
                    rx_bytes_per_sec: 1500.5,
                    tx_bytes_per_sec: 700.25,
                    rx_errors: 1,
                    tx_errors: 0,
                    rx_dropped: 2,
                    tx_dropped: 0,
                    oper_state: Some("up".to_string()),
                })
                .collect(),
        }),
        tcp: TcpMetrics {
            curr_estab: Some(17),
            retrans_segs_total: Some(40 + seq),
            resets_sent_total: Some(7),
            retrans_segs_per_sec: Some(0.5),
            resets_sent_per_sec: Some(0.0),
            listen_overflows_total: Some(0),
            listen_drops_total: Some(0),
            listen_overflows_per_sec: Some(0.0),
            listen_drops_per_sec: Some(0.0),
            in_use: Some(20),
            time_wait: Some(3),
            orphan: Some(0),
        },
        processes: Some(ProcessMetrics {
            count: 312,
            threads: Some(640),
            zombies: Some(1),
            top_memory: (0..5)
                .map(|i| TopProcess {
                    pid: 1000 + i,
                    name: format!("proc{i}"),
                    memory_bytes: (5 - i as u64) << 28,
                    memory_percent: Some(5.0 - i as f64),
                })
                .collect(),
            top_cpu: (0..5)
                .map(|i| TopCpuProcess {
                    pid: 2000 + i,
                    name: format!("busy{i}"),
                    cpu_percent: 100.0 - i as f64 * 10.0,
                })
                .collect(),
        }),
        system: SystemMetrics {
            uptime_seconds: Some(86_400 + seq),
            boot_id: Some("0d5c6a3e-9f55-4c55-9b43-3f0c9b5d1e2a".to_string()),
            file_descriptors_allocated: Some(1_500),
            file_descriptors_max: Some(1_000_000),
            clock_synced: Some(true),
            clock_max_error_ms: Some(12.5),
            kernel: Some("6.1.0-test".to_string()),
            os: Some("Debian GNU/Linux 12 (bookworm)".to_string()),
        },
        units: Some(units),
    };
    Snapshot {
        timestamp: SystemTime::now(),
        node_id: "test-node".to_string(),
        machine_id: "6b9e2f5e-2b1f-4a8e-9d7c-1f0e3d2c4b5a".to_string(),
        event_id: uuid::Uuid::now_v7(),
        seq,
        interval_secs: 1,
        metrics,
        collectors: ["cpu", "memory", "units"]
            .into_iter()
            .map(|name| CollectorRun {
                name: name.into(),
                duration: Duration::from_micros(20),
                ok: true,
                failures_total: 0,
            })
            .collect(),
    }
}

/// Connects a WebSocket client to `path` with extra request headers.
pub async fn connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    let stream = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    // tungstenite's default 128 KiB read buffer is zero-filled on every read;
    // a small one keeps 1,000 benchmark clients from measuring their own memset.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

pub async fn connect(addr: SocketAddr) -> Ws {
    connect_with(addr, "/", &[]).await.expect("connect")
}

/// The HTTP status of a refused upgrade (panics if the upgrade succeeded).
pub async fn refused_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    match connect_with(addr, path, headers).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// What a client saw next.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Close(Option<CloseCode>),
    /// The connection ended without a close frame.
    Ended(String),
}

/// The next text (as JSON) or close frame within `limit`; pings are skipped
/// (tungstenite answers them).
pub async fn next(ws: &mut Ws, limit: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing received within {limit:?}"));
        match message {
            Some(Ok(Message::Text(text))) => {
                return Next::Json(serde_json::from_str(&text).expect("server sent invalid JSON"))
            }
            Some(Ok(Message::Close(frame))) => return Next::Close(frame.map(|f| f.code)),
            Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Next::Ended(e.to_string()),
            None => return Next::Ended("stream ended".to_string()),
        }
    }
}

/// The next message, which must be JSON text.
pub async fn next_json(ws: &mut Ws, limit: Duration) -> Value {
    match next(ws, limit).await {
        Next::Json(v) => v,
        other => panic!("expected a JSON message, got {other:?}"),
    }
}

/// Reads the welcome message and checks its fields.
pub async fn expect_welcome(ws: &mut Ws) -> Value {
    let welcome = next_json(ws, Duration::from_secs(5)).await;
    assert_eq!(welcome["type"], "connection", "{welcome}");
    assert_eq!(welcome["status"], "connected");
    assert!(welcome["node_id"].is_string());
    assert!(welcome["interval"].is_number());
    assert!(welcome["timestamp"].as_str().unwrap().ends_with('Z'));
    welcome
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}

/// A plain HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends one HTTP/1.1 request and reads the whole response (the server closes).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    http_raw(addr, request.as_bytes()).await
}

pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("response within 5 s")
        .expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let response = HttpResponse {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(len) = response.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), response.body.len());
    }
    response
}

/// One sample of a Prometheus exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: its type and samples.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub help: bool,
    pub samples: Vec<Sample>,
}

/// Strictly checks Prometheus text format 0.0.4 (plus the promtool lint
/// rules that matter here) and returns the families by name.
pub fn check_exposition(text: &str) -> Result<HashMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            check_metric_name(name).map_err(at)?;
            let family = families.entry(name.to_string()).or_default();
            if family.help {
                return Err(at("second HELP".into()));
            }
            family.help = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type".into()))?;
            check_metric_name(name).map_err(at)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind:?}")));
            }
            let family = families.entry(name.to_string()).or_default();
            if !family.kind.is_empty() {
                return Err(at("second TYPE".into()));
            }
            if !family.samples.is_empty() {
                return Err(at("TYPE after samples".into()));
            }
            family.kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = parse_sample(line).map_err(at)?;
        let family = families
            .get_mut(&name)
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at(format!("sample of {name} before its # TYPE")))?;
        if current.as_deref() != Some(&name) {
            if finished.contains(&name) {
                return Err(at(format!("samples of {name} are not together")));
            }
            if let Some(previous) = current.replace(name.clone()) {
                finished.insert(previous);
            }
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !series.insert(format!("{name}{key_labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        family.samples.push(Sample { labels, value });
    }
    for (name, family) in &families {
        if !family.help {
            return Err(format!("{name}: no HELP"));
        }
        if family.kind.is_empty() {
            return Err(format!("{name}: no TYPE"));
        }
        if family.kind == "counter" && !name.ends_with("_total") {
            return Err(format!("{name}: counter names end in _total"));
        }
        if family.kind != "counter" && name.ends_with("_total") {
            return Err(format!("{name}: only counters end in _total"));
        }
    }
    Ok(families)
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("invalid label name {name:?}"))
    }
}

type ParsedSample = (String, Vec<(String, String)>, f64);

/// `name{label="value",...} value [timestamp]`
fn parse_sample(line: &str) -> Result<ParsedSample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, used) = parse_labels(after)?;
        labels = parsed;
        rest = &after[used..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| "expected one space before the value".to_string())?;
    let mut parts = rest.split(' ');
    let value_text = parts.next().unwrap_or("");
    let value = parse_value(value_text)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

/// Parses `label="value",...}`; returns the labels and the bytes used (through `}`).
fn parse_labels(s: &str) -> Result<(Vec<(String, String)>, usize), String> {
    let bytes = s.as_bytes();
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    if bytes.first() == Some(&b'}') {
        return Ok((labels, 1));
    }
    loop {
        let eq = s[i..].find('=').ok_or("label without =")? + i;
        let label = &s[i..eq];
        check_label_name(label)?;
        i = eq + 1;
        if bytes.get(i) != Some(&b'"') {
            return Err(format!("label {label} value not quoted"));
        }
        i += 1;
        let mut value = String::new();
        loop {
            let c = s[i..].chars().next().ok_or("unterminated label value")?;
            i += c.len_utf8();
            match c {
                '\\' => {
                    let e = s[i..].chars().next().ok_or("unterminated escape")?;
                    i += e.len_utf8();
                    match e {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("invalid escape \\{other}")),
                    }
                }
                '"' => break,
                '\n' => return Err("raw newline in label value".into()),
                c => value.push(c),
            }
        }
        if labels.iter().any(|(l, _)| l == label) {
            return Err(format!("label {label} repeated"));
        }
        labels.push((label.to_string(), value));
        match bytes.get(i) {
            Some(b',') if bytes.get(i + 1) == Some(&b'}') => return Ok((labels, i + 2)),
            Some(b',') => i += 1,
            Some(b'}') => return Ok((labels, i + 1)),
            _ => return Err("expected , or } after a label value".into()),
        }
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => return Ok(f64::NAN),
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also accepts "inf" and "infinity"; the format does not.
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return Err(format!("invalid value {text:?}"));
    }
    text.parse::<f64>()
        .map_err(|_| format!("invalid value {text:?}"))
}

/// A WebSocket upgrade head with the given `Host` and `Sec-WebSocket-Key`.
pub fn upgrade_head(host: &str, key: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
}

/// The bytes waiting in the kernel's send queue of the TCP socket from
/// `local` to `remote` (the `tx_queue` column of /proc/net/tcp), if found.
pub fn send_queue_bytes(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, _rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(tx, 16).ok()
    })
}
