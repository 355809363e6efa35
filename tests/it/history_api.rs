//! `GET /api/history` (SPEC §4.6, §5.2) and the page's access rules, against
//! the real daemon sampling every second: rows in order, `since` in both
//! forms, `limit` and its bounds, gzip, survival across a restart, the
//! token, and Origin and Host checks.

use crate::common::daemon::{Daemon, Setup};
use crate::common::wait_for;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const START: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(30);
const TOKEN: &str = "hist-t0ken";

/// The flat form's fields (SPEC §3.2), in order.
const FLAT_FIELDS: &[&str] = &[
    "event_id",
    "node_id",
    "machine_id",
    "timestamp",
    "cpu_percent",
    "memory_percent",
    "memory_used_mb",
    "memory_total_mb",
    "disk_percent",
    "disk_used_gb",
    "disk_total_gb",
    "network_rx_bytes",
    "network_tx_bytes",
    "network_rx_rate_mbps",
    "network_tx_rate_mbps",
    "uptime_seconds",
    "process_count",
    "active_connections",
    "load_avg_1m",
    "load_avg_5m",
    "load_avg_15m",
];

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn rows(&self) -> Vec<Value> {
        assert_eq!(self.status, 200, "{}{}", self.head, self.text());
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json")
        );
        serde_json::from_slice(&self.body).expect("a JSON array")
    }
}

/// One request with exactly these headers (Host included when given); the
/// server closes the connection after answering.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, target: &str) -> Answer {
    request(addr, "GET", target, &[])
}

fn start(setup: &Setup) -> Daemon {
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), START);
    daemon
}

fn timestamps(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["timestamp"].as_str().unwrap().to_string())
        .collect()
}

fn unix_ms(ts: &str) -> u128 {
    humantime::parse_rfc3339(ts)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn rows_come_oldest_first_from_since_up_to_limit() {
    let setup = Setup::new("1s", "", "");
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    wait_for("6 rows of history", LONG, || {
        get(addr, "/api/history").rows().len() >= 6
    });
    let rows = get(addr, "/api/history").rows();
    for row in &rows {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, FLAT_FIELDS, "a flat-form row: {row}");
    }
    let ts = timestamps(&rows);
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "oldest first: {ts:?}");

    // limit: the oldest N from since.
    let two = get(addr, "/api/history?limit=2").rows();
    assert_eq!(timestamps(&two), ts[..2]);

    // since as RFC 3339: rows at or after it, the one at it included.
    let from_third = get(addr, &format!("/api/history?since={}", ts[2])).rows();
    assert_eq!(timestamps(&from_third)[..ts.len() - 2], ts[2..]);
    let one = get(addr, &format!("/api/history?since={}&limit=1", ts[2])).rows();
    assert_eq!(timestamps(&one), [ts[2].clone()]);

    // since as unix seconds (a fraction allowed).
    let third_s = unix_ms(&ts[2]) as f64 / 1000.0;
    let by_seconds = get(addr, &format!("/api/history?since={third_s:.3}&limit=3")).rows();
    assert_eq!(timestamps(&by_seconds), ts[2..5]);
    let whole = get(
        addr,
        &format!("/api/history?since={}&limit=3", unix_ms(&ts[2]) / 1000),
    )
    .rows();
    assert!(unix_ms(&timestamps(&whole)[0]) >= unix_ms(&ts[2]) / 1000 * 1000);

    // After everything: nothing.
    let future = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    assert!(get(addr, &format!("/api/history?since={future}"))
        .rows()
        .is_empty());

    // A small answer goes out as it is, even to a client that takes gzip
    // (large ones are gzipped: see the unit tests and `cargo bench --bench page`).
    let small = request(
        addr,
        "GET",
        "/api/history?limit=3",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(timestamps(&small.rows()), ts[..3]);
}

#[test]
fn bad_queries_are_400_with_a_reason_and_bounds_hold() {
    let setup = Setup::new("1s", "", "");
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    wait_for("a row of history", LONG, || {
        !get(addr, "/api/history").rows().is_empty()
    });
    for (query, names) in [
        ("limit=0", "limit"),
        ("limit=10081", "limit"),
        ("limit=-3", "limit"),
        ("limit=many", "limit"),
        ("since=yesterday", "since"),
        ("since=2026-13-40T00:00:00Z", "since"),
        ("since=-1", "since"),
        // Multi-byte characters where the offset would be: a 400, and the
        // daemon goes on (it once panicked on these).
        ("since=%E2%82%ACabcd", "since"),
        ("since=%FFabcd", "since"),
    ] {
        let answer = get(addr, &format!("/api/history?{query}"));
        assert_eq!(answer.status, 400, "{query}: {}", answer.text());
        assert!(answer.text().contains(names), "{query}: {}", answer.text());
    }
    assert!(!get(addr, "/api/history?limit=10080").rows().is_empty());
    assert!(!get(addr, "/api/history?limit=1&since=0").rows().is_empty());
    let post = request(addr, "POST", "/api/history", &[("Content-Length", "0")]);
    assert_eq!(post.status, 405);
    assert_eq!(get(addr, "/health").status, 200, "still serving");
}

#[test]
fn history_survives_a_restart_of_the_daemon() {
    let setup = Setup::new("1s", "", "");
    let mut daemon = start(&setup);
    let addr = setup.stream_addr();
    wait_for("3 rows of history", LONG, || {
        get(addr, "/api/history").rows().len() >= 3
    });
    // Rows taken after this read only add to the end.
    let before = timestamps(&get(addr, "/api/history").rows());
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(LONG), 0, "{}", daemon.log());

    let again = start(&setup);
    // With no sink, the start-up line counts what `queue stats` calls
    // pending: the history kept from the first run.
    let line = again.wait_for_line(" starting: interval", LONG);
    let pending: usize = line
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(" pending)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no pending count in {line:?}"));
    assert!(pending >= before.len(), "{line}");
    wait_for("a row from the new run", LONG, || {
        get(addr, "/api/history").rows().len() > before.len()
    });
    let after = timestamps(&get(addr, "/api/history").rows());
    assert_eq!(
        after[..before.len()],
        before[..],
        "the first run's rows are kept, in order"
    );
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
}

#[test]
fn the_token_guards_history_but_not_the_document() {
    let setup = Setup::new("1s", "", &format!("token = \"{TOKEN}\"\n"));
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    let bearer = format!("Bearer {TOKEN}");
    wait_for("a row of history", LONG, || {
        let answer = request(addr, "GET", "/api/history", &[("Authorization", &bearer)]);
        answer.status == 200 && !answer.rows().is_empty()
    });
    assert_eq!(get(addr, "/api/history").status, 401);
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/history",
            &[("Authorization", "Bearer nope")]
        )
        .status,
        401
    );
    assert_eq!(get(addr, "/api/history?token=nope").status, 401);
    assert!(!get(addr, &format!("/api/history?token={TOKEN}"))
        .rows()
        .is_empty());
    // The document holds no host data: it is served without the token.
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<!doctype html>"));
}

#[test]
fn the_page_has_its_security_headers() {
    let setup = Setup::new("1s", "", "");
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    let page = request(addr, "GET", "/", &[("Accept-Encoding", "gzip")]);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(page.header("content-encoding").as_deref(), Some("gzip"));
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let plain = get(addr, "/");
    assert!(plain.header("content-encoding").is_none());
    assert!(plain.text().contains("<script>") && !plain.text().contains("<script src"));
}

/// A WebSocket upgrade request's status (101 when accepted). Only the head
/// is read: an accepted upgrade keeps the connection open.
fn upgrade_status(addr: SocketAddr, host: &str, origin: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&raw);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"))
}

#[test]
fn own_origin_is_accepted_and_other_origins_and_hosts_are_refused() {
    // allowed_origins stays empty: only the page's own origin passes.
    let setup = Setup::new("1s", "", "");
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    let port = addr.port();
    let own_ip = format!("127.0.0.1:{port}");
    let own_name = format!("localhost:{port}");
    assert_eq!(
        upgrade_status(addr, &own_ip, &format!("http://{own_ip}")),
        101
    );
    assert_eq!(
        upgrade_status(addr, &own_name, &format!("http://{own_name}")),
        101
    );
    assert_eq!(upgrade_status(addr, &own_ip, "http://evil.example"), 403);
    assert_eq!(
        upgrade_status(addr, &own_ip, &format!("http://{own_name}")),
        403
    );
    assert_eq!(
        upgrade_status(addr, &own_ip, &format!("https://{own_ip}")),
        403
    );
    // DNS rebinding: a name that is not an IP literal, localhost or listed.
    let rebound = format!("rebind.example:{port}");
    assert_eq!(
        upgrade_status(addr, &rebound, &format!("http://{rebound}")),
        403
    );

    let from = |origin: &str| request(addr, "GET", "/api/history", &[("Origin", origin)]).status;
    assert_eq!(from(&format!("http://{own_ip}")), 200);
    assert_eq!(from("http://evil.example"), 403);
    for path in ["/api/history", "/", "/health"] {
        let answer = request(addr, "GET", path, &[("Host", &rebound)]);
        let text = answer.text();
        let start = &text[..text.len().min(200)];
        assert_eq!(answer.status, 403, "{path} with Host {rebound}: {start}");
    }
}

#[test]
fn history_is_trimmed_by_age() {
    let setup = Setup::new("1s", "", "\n[queue]\nhistory = \"3s\"\n");
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    let mut first = None;
    wait_for("a first row", LONG, || {
        first = get(addr, "/api/history").rows().first().cloned();
        first.is_some()
    });
    let first = unix_ms(first.unwrap()["timestamp"].as_str().unwrap());
    let mut rows = Vec::new();
    wait_for("8 s of samples after the first row", LONG, || {
        rows = timestamps(&get(addr, "/api/history").rows());
        rows.last().is_some_and(|t| unix_ms(t) >= first + 8_000)
    });
    let newest = unix_ms(rows.last().unwrap());
    assert!(
        unix_ms(&rows[0]) > first,
        "the first row was trimmed: {rows:?}"
    );
    // 3 s of history at 1 s, plus the sample that may be on its way out.
    assert!(rows.len() <= 5, "{rows:?}");
    for t in &rows {
        assert!(
            unix_ms(t) + 4_500 >= newest,
            "{t} is older than the history: {rows:?}"
        );
    }
}

/// A request for the history that is never read: its answer waits on the
/// socket (small buffers) until the daemon's write timeout.
fn unread_history_request(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    write!(stream, "GET /api/history HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    stream
}

#[test]
fn history_answers_in_progress_are_bounded_and_the_rest_get_503() {
    // A day of history at 60 s, with rows of 6 KB: 8.7 MB a body, far more
    // than the socket buffers of a client that does not read.
    let setup = Setup::new("60s", "", "");
    {
        let db = setup.dir.path().join("state/queue.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let mut queue = metricsd::queue::Queue::open(&db).unwrap();
        queue.set_history(Duration::from_secs(86_400)).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for i in 0..1440u64 {
            let at = humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_secs(now - 86_000 + i * 59),
            )
            .to_string();
            let flat = format!(
                "{{\"event_id\":\"e{i}\",\"timestamp\":\"{at}\",\"pad\":\"{}\"}}",
                "x".repeat(6000)
            );
            queue
                .insert(&format!("e{i}"), &at, &flat, &[], &[], 10)
                .unwrap();
        }
    }
    let _daemon = start(&setup);
    let addr = setup.stream_addr();
    assert!(get(addr, "/api/history").rows().len() >= 1440);

    let held: Vec<TcpStream> = (0..12).map(|_| unread_history_request(addr)).collect();
    // Four answers are being written to clients that do not read: the next
    // request is told to come back, at once, instead of one more read and
    // one more body in memory for every such client.
    wait_for(
        "a 503 while unread history answers are in progress",
        LONG,
        || {
            let answer = get(addr, "/api/history");
            answer.status == 503 && answer.header("retry-after").as_deref() == Some("1")
        },
    );
    assert_eq!(get(addr, "/health").status, 200, "other answers are served");
    assert_eq!(get(addr, "/metrics").status, 200, "and scrapes");
    // Once the held answers give up (the write timeout), history is served again.
    wait_for("history served again", LONG, || {
        get(addr, "/api/history").status == 200
    });
    drop(held);
}

#[test]
fn a_history_that_cannot_be_read_is_503_each_time_and_logged_once() {
    let setup = Setup::new("1s", "", "");
    let daemon = start(&setup);
    let addr = setup.stream_addr();
    wait_for("a row of history", LONG, || {
        !get(addr, "/api/history").rows().is_empty()
    });
    // The file moved away under the running daemon (its own connections
    // keep the open file): each history read now fails to open it.
    let db = setup.state_dir.join("queue.db");
    let aside = setup.state_dir.join("queue.db.aside");
    std::fs::rename(&db, &aside).unwrap();
    for _ in 0..5 {
        assert_eq!(get(addr, "/api/history").status, 503);
    }
    std::fs::rename(&aside, &db).unwrap();
    let warnings = daemon
        .log()
        .lines()
        .filter(|l| l.contains("history: reading the queue failed"))
        .count();
    assert_eq!(warnings, 1, "log:\n{}", daemon.log());
    assert_eq!(get(addr, "/api/history").status, 200);
}
