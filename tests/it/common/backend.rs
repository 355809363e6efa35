//! A real HTTP/1.1 backend on 127.0.0.1 (ephemeral port) for tests and
//! benchmarks. It keeps connections alive, records every request (headers
//! and body, gzip undone) and can be switched between behaviours at any time:
//! answer 200 or any status, 429/503 with Retry-After, reject one event_id,
//! hang (read the request, never answer), or go down (listener and open
//! connections closed, so clients get "connection refused") and come back up
//! on the same port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits that keep a confused client from making the server loop or grow.
const MAX_HEADER_LINES: usize = 200;
const MAX_BODY: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 for everything.
    Ok,
    /// This status for everything.
    Status(u16),
    /// This status with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// `status` for any request whose body holds this event_id, 200 otherwise.
    RejectEvent { event_id: String, status: u16 },
    /// Read the request, never answer (until the behaviour changes or the
    /// server goes down; then the connection is closed unanswered).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// As sent, after undoing `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The status answered; None when the request was left hanging.
    pub answered: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The event_ids in the body: one for an object, each for an array.
    pub fn event_ids(&self) -> Vec<String> {
        event_ids_in(&self.json())
    }

    pub fn delivered(&self) -> bool {
        matches!(self.answered, Some(s) if (200..300).contains(&s) || s == 409)
    }
}

fn event_ids_in(value: &serde_json::Value) -> Vec<String> {
    let one = |v: &serde_json::Value| v["event_id"].as_str().map(str::to_string);
    match value {
        serde_json::Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

struct Shared {
    addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    behaviour: Mutex<Behaviour>,
    delay: Mutex<Duration>,
    record: AtomicBool,
    requests: Mutex<Vec<Request>>,
    served: AtomicU64,
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_connection: AtomicU64,
    /// Bumped by `down`, so hanging handlers of the old life let go.
    generation: AtomicU64,
    stopped: AtomicBool,
}

pub struct Backend {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts answering 200 on 127.0.0.1 at a free port.
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            addr,
            listener: Mutex::new(Some(listener)),
            behaviour: Mutex::new(Behaviour::Ok),
            delay: Mutex::new(Duration::ZERO),
            record: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            served: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let for_thread = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("test-backend".into())
            .spawn(move || accept_loop(for_thread))
            .expect("spawn acceptor");
        Backend {
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/telemetry/snapshot", self.shared.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Wait this long before each answer.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Stop keeping requests (only `served` counts), for long benchmarks.
    pub fn set_recording(&self, on: bool) {
        self.shared.record.store(on, Ordering::SeqCst);
    }

    /// Closes the listener and every open connection: from now on clients
    /// get "connection refused".
    pub fn down(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        *self.shared.listener.lock().unwrap() = None;
        for (_, conn) in self.shared.connections.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.shared.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("re-bind {}: {e}", self.shared.addr),
            }
        };
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        *self.shared.listener.lock().unwrap() = Some(listener);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Requests answered (recorded or not).
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// event_ids of every request answered 2xx/409, in arrival order
    /// (a resent row appears again).
    pub fn delivered_ids(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.delivered())
            .flat_map(Request::event_ids)
            .collect()
    }

    /// Polls `condition` every 10 ms until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&Backend) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.down();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let accepted = match shared.listener.lock().unwrap().as_ref() {
            Some(listener) => listener.accept(),
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    shared.connections.lock().unwrap().push((id, clone));
                }
                let for_conn = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("test-backend-conn".into())
                    .spawn(move || {
                        serve_connection(&for_conn, stream);
                        for_conn
                            .connections
                            .lock()
                            .unwrap()
                            .retain(|(c, _)| *c != id);
                    });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let generation = shared.generation.load(Ordering::SeqCst);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Some(mut request) = read_request(&mut reader) {
        let behaviour = shared.behaviour.lock().unwrap().clone();
        let ids = request.event_ids();
        let (status, extra) = match &behaviour {
            Behaviour::Ok => (200, String::new()),
            Behaviour::Status(s) => (*s, String::new()),
            Behaviour::RetryAfter(s, v) => (*s, format!("Retry-After: {v}\r\n")),
            Behaviour::RejectEvent { event_id, status } if ids.contains(event_id) => {
                (*status, String::new())
            }
            Behaviour::RejectEvent { .. } => (200, String::new()),
            Behaviour::Hang => {
                record(shared, request);
                while *shared.behaviour.lock().unwrap() == Behaviour::Hang
                    && !shared.stopped.load(Ordering::SeqCst)
                    && shared.generation.load(Ordering::SeqCst) == generation
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        };
        let delay = *shared.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        // Recorded before the answer leaves, so whatever the client does
        // after reading it is already visible to the test.
        request.answered = Some(status);
        record(shared, request);
        let body = if (200..300).contains(&status) {
            "ok"
        } else {
            "rejected by test backend"
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            reason(status),
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

fn record(shared: &Shared, request: Request) {
    shared.served.fetch_add(1, Ordering::SeqCst);
    if shared.record.load(Ordering::SeqCst) {
        shared.requests.lock().unwrap().push(request);
    }
}

/// Reads one request; None at end of stream or on anything malformed.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            if body.len() + size > MAX_BODY {
                return None;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).ok()?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf).ok()?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if len > MAX_BODY {
            return None;
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    }
    if get("content-encoding").is_some_and(|v| v.eq_ignore_ascii_case("gzip")) {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .ok()?;
        body = plain;
    }
    Some(Request {
        at,
        method,
        path,
        headers,
        body,
        answered: None,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
