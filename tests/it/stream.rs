//! The WebSocket stream, /health and /metrics (SPEC §4), driven through the
//! library with a real listener and real clients, and end to end through the
//! real binary.

use crate::common::stream_client::*;
use futures_util::{SinkExt, StreamExt};
use metricsd::status::BackendState;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SOON: Duration = Duration::from_secs(5);

/// A client of `addr` past the welcome.
async fn welcomed(addr: std::net::SocketAddr) -> Ws {
    let mut ws = connect(addr).await;
    expect_welcome(&mut ws).await;
    ws
}

/// A server with the test configuration and a client past its welcome.
async fn server_and_client() -> (TestServer, Ws) {
    let server = TestServer::start(|_| {});
    let ws = welcomed(server.addr).await;
    (server, ws)
}

/// Sends `{"command": command}` and returns the next message.
async fn ask(ws: &mut Ws, command: &str) -> Value {
    send_text(ws, &format!(r#"{{"command":"{command}"}}"#)).await;
    next_json(ws, SOON).await
}

#[tokio::test]
async fn welcome_then_latest_then_new_snapshots_in_order() {
    let server = TestServer::start(|_| {});
    let first = server.publish(snapshot(1, 2));

    let mut ws = connect(server.addr).await;
    let welcome = expect_welcome(&mut ws).await;
    assert_eq!(welcome["node_id"], "test-node");
    assert_eq!(welcome["interval"], 1);

    let latest = next_json(&mut ws, SOON).await;
    assert_eq!(latest["type"], "snapshot");
    assert_eq!(latest["seq"], 1);
    assert_eq!(latest["event_id"], first.event_id.to_string());
    assert_eq!(latest, first.stream_json());

    for seq in 2..=5 {
        let published = server.publish(snapshot(seq, 2));
        let got = next_json(&mut ws, SOON).await;
        assert_eq!(got["seq"], seq);
        assert_eq!(got["event_id"], published.event_id.to_string());
    }
}

#[tokio::test]
async fn before_any_snapshot_only_the_welcome_then_the_first_snapshot() {
    let (server, mut ws) = server_and_client().await;
    let reply = ask(&mut ws, "get_metrics").await;
    assert_eq!(reply["type"], "error", "{reply}");
    server.publish(snapshot(1, 1));
    let got = next_json(&mut ws, SOON).await;
    assert_eq!(got["type"], "snapshot");
    assert_eq!(got["seq"], 1);
}

#[tokio::test]
async fn get_metrics_answers_at_once_with_the_latest_snapshot() {
    let server = TestServer::start(|_| {});
    let published = server.publish(snapshot(7, 2));
    let mut ws = welcomed(server.addr).await;
    assert_eq!(next_json(&mut ws, SOON).await["seq"], 7);

    let asked = Instant::now();
    let reply = ask(&mut ws, "get_metrics").await;
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(reply["type"], "snapshot");
    assert_eq!(reply["seq"], 7, "no new sample is taken");
    assert_eq!(reply["event_id"], published.event_id.to_string());
}

#[tokio::test]
async fn ping_gets_pong() {
    let (_server, mut ws) = server_and_client().await;
    let pong = ask(&mut ws, "ping").await;
    assert_eq!(pong["type"], "pong");
    let ts = pong["timestamp"].as_str().unwrap();
    let at = humantime::parse_rfc3339(ts).expect("RFC 3339 timestamp");
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(age < Duration::from_secs(5), "{ts}");
}

#[tokio::test]
async fn bad_commands_get_an_error_and_the_connection_stays_open() {
    let (_server, mut ws) = server_and_client().await;

    let cases: [(Message, &str); 5] = [
        (Message::text(r#"{"command":"reboot"}"#), "unknown command"),
        (Message::text("not json"), "invalid JSON"),
        (Message::text(r#"["ping"]"#), "JSON object"),
        (Message::text(r#"{"command":1}"#), "string"),
        (Message::binary(vec![1u8, 2, 3]), "binary"),
    ];
    for (message, why) in cases {
        ws.send(message).await.unwrap();
        let reply = next_json(&mut ws, SOON).await;
        assert_eq!(reply["type"], "error", "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(why), "{error:?} should mention {why:?}");
    }
    assert_eq!(ask(&mut ws, "ping").await["type"], "pong");
}

#[tokio::test]
async fn a_100_kib_frame_closes_with_1009() {
    let (server, mut ws) = server_and_client().await;
    let big = format!(r#"{{"command":"ping","pad":"{}"}}"#, "x".repeat(100 * 1024));
    ws.send(Message::text(big)).await.unwrap();
    match next(&mut ws, SOON).await {
        Next::Close(code) => assert_eq!(code, Some(CloseCode::Size)),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert!(wait_until_async(SOON, || server.clients() == 0).await);
}

#[tokio::test]
async fn a_message_just_under_64_kib_is_accepted() {
    let (_server, mut ws) = server_and_client().await;
    let body = r#"{"command":"ping","pad":""}"#;
    let big = body.replace(
        r#""pad":"""#,
        &format!(r#""pad":"{}""#, "x".repeat(60 * 1024)),
    );
    send_text(&mut ws, &big).await;
    assert_eq!(next_json(&mut ws, SOON).await["type"], "pong");
}

#[tokio::test]
async fn origin_refused_unless_listed_or_absent() {
    let server = TestServer::start(|c| {
        c.stream.allowed_origins = vec!["http://dash.local".into()];
    });
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(refused_status(server.addr, "/", &evil).await, 403);
    let mut listed = connect_with(server.addr, "/", &[("Origin", "http://dash.local")])
        .await
        .expect("listed origin");
    expect_welcome(&mut listed).await;
    let mut absent = connect(server.addr).await;
    expect_welcome(&mut absent).await;
    assert_eq!(
        http(server.addr, "GET", "/metrics", &evil).await.status,
        403
    );

    // allowed_origins is read per connection: a reload applies at once.
    let mut config = (*server.config.get()).clone();
    config.stream.allowed_origins = vec!["*".into()];
    server.config.set(config);
    let mut now_ok = connect_with(server.addr, "/", &evil)
        .await
        .expect("any origin");
    expect_welcome(&mut now_ok).await;
}

#[tokio::test]
async fn token_required_for_stream_and_metrics_not_health() {
    let server = TestServer::start(|c| c.stream.token = "s3cret".into());
    let addr = server.addr;
    assert_eq!(refused_status(addr, "/", &[]).await, 401);
    assert_eq!(
        refused_status(addr, "/", &[("Authorization", "Bearer wrong")]).await,
        401
    );
    assert_eq!(refused_status(addr, "/?token=wrong", &[]).await, 401);

    let mut with_header = connect_with(addr, "/", &[("Authorization", "Bearer s3cret")])
        .await
        .expect("bearer token");
    expect_welcome(&mut with_header).await;
    let mut with_query = connect_with(addr, "/stream?token=s3cret", &[])
        .await
        .expect("query token");
    expect_welcome(&mut with_query).await;

    let health = http(addr, "GET", "/health", &[]).await;
    assert_eq!(health.status, 200);
    let metrics = http(addr, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 401);
    assert!(metrics.header("www-authenticate").is_some());
    let auth = [("Authorization", "Bearer s3cret")];
    assert_eq!(http(addr, "GET", "/metrics", &auth).await.status, 200);
    assert_eq!(
        http(addr, "GET", "/metrics?token=s3cret", &[]).await.status,
        200
    );

    // The token is read per connection: changing it applies to the next one.
    let mut config = (*server.config.get()).clone();
    config.stream.token = String::new();
    server.config.set(config);
    let mut open = connect(addr).await;
    expect_welcome(&mut open).await;
}

#[tokio::test]
async fn one_client_over_max_clients_gets_503_and_the_others_keep_receiving() {
    let server = TestServer::start(|c| c.stream.max_clients = 2);
    let mut a = connect(server.addr).await;
    let mut b = connect(server.addr).await;
    expect_welcome(&mut a).await;
    expect_welcome(&mut b).await;
    assert_eq!(server.clients(), 2);
    assert_eq!(refused_status(server.addr, "/", &[]).await, 503);

    server.publish(snapshot(1, 1));
    assert_eq!(next_json(&mut a, SOON).await["seq"], 1);
    assert_eq!(next_json(&mut b, SOON).await["seq"], 1);

    // A place frees up when a client leaves.
    drop(b);
    assert!(wait_until_async(SOON, || server.clients() == 1).await);
    let mut c = connect(server.addr).await;
    expect_welcome(&mut c).await;
    assert_eq!(next_json(&mut c, SOON).await["seq"], 1);
}

#[tokio::test]
async fn clients_refused_in_a_loop_are_logged_once_not_once_each() {
    crate::common::logs::capture();
    // max_clients = 1 is this test's alone: its log lines say "1 clients".
    let server = TestServer::start(|c| c.stream.max_clients = 1);
    let mut a = connect(server.addr).await;
    expect_welcome(&mut a).await;
    for _ in 0..20 {
        assert_eq!(refused_status(server.addr, "/", &[]).await, 503);
    }
    let lines = crate::common::logs::logged(log::Level::Info, "1 clients connected (max_clients)");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("refused 1 client(s)"), "{lines:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_delays_nobody_and_is_dropped() {
    let server = TestServer::start(|_| {});
    // Connected, welcomed by the server, but never read from again.
    let stalled = connect(server.addr).await;
    let mut reader = connect(server.addr).await;
    expect_welcome(&mut reader).await;
    assert_eq!(server.clients(), 2);

    // The reader records when each snapshot arrives.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let reading = tokio::spawn(async move {
        while let Some(Ok(message)) = reader.next().await {
            if let Message::Text(text) = message {
                let v: Value = serde_json::from_str(&text).unwrap();
                let _ = seen_tx.send((v["seq"].as_u64().unwrap(), Instant::now()));
            }
        }
    });

    // Large snapshots (~400 KB) published quickly fill the stalled client's
    // socket buffers within a second or two; then its 10 s write limit runs.
    let started = Instant::now();
    let mut published: Vec<(u64, Instant)> = Vec::new();
    let mut seq = 0;
    let mut slowest_publish = Duration::ZERO;
    while server.clients() == 2 && started.elapsed() < Duration::from_secs(25) {
        seq += 1;
        let snap = std::sync::Arc::new(snapshot(seq, 1500));
        let json = snap.stream_json().to_string();
        let before = Instant::now();
        server.hub.publish(snap, json);
        slowest_publish = slowest_publish.max(before.elapsed());
        published.push((seq, Instant::now()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped_after = started.elapsed();
    assert_eq!(server.clients(), 1, "the stalled client was not dropped");
    // Publishing only swaps the latest value: a stalled client (10 s) never
    // holds it up; the bound is generous for a busy machine.
    assert!(
        slowest_publish < Duration::from_secs(1),
        "publish waited {slowest_publish:?}"
    );
    assert!(
        dropped_after >= Duration::from_secs(10) && dropped_after < Duration::from_secs(20),
        "dropped after {dropped_after:?}"
    );

    // Every publish reached the reader promptly (it may skip to a newer one).
    let last = published.last().unwrap().0;
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    while seen.last().is_none_or(|(s, _)| *s < last) {
        let got = tokio::time::timeout(SOON, seen_rx.recv())
            .await
            .expect("reader kept receiving")
            .unwrap();
        seen.push(got);
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    let mut worst = Duration::ZERO;
    for (seq, at) in &published {
        let arrival = seen.iter().find(|(s, _)| s >= seq).unwrap().1;
        worst = worst.max(arrival.saturating_duration_since(*at));
    }
    // Waiting on the stalled client would cost its 10 s write limit; half of
    // that leaves room for a loaded machine and still tells the two apart.
    assert!(
        worst < Duration::from_secs(5),
        "a snapshot took {worst:?} to reach the reader"
    );
    // A reader that falls behind skips to the newest snapshot (SPEC 4.3),
    // so only a large share of them must arrive.
    assert!(
        seen.len() * 2 >= published.len(),
        "the reader skipped too many: {} of {}",
        seen.len(),
        published.len()
    );
    drop(stalled);
    reading.abort();
}

#[tokio::test]
async fn a_slow_reader_gets_a_snapshot_that_takes_longer_than_10_s_to_cross() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(|_| {});
    // One large snapshot (~600 KB) waiting before the client connects.
    let snap = std::sync::Arc::new(snapshot(1, 2300));
    let json = snap.stream_json().to_string();
    server.hub.publish(snap, json.clone());
    // A raw client with a small receive buffer that reads about 40 KB a
    // second: the snapshot takes some 15 s to cross, but the socket always
    // takes bytes, so it must not be dropped as stalled (10 s of nothing).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let started = Instant::now();
    while received.len() < json.len() + 512 && started.elapsed() < Duration::from_secs(60) {
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk))
            .await
            .expect("the server kept sending")
            .unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    // The tail of the snapshot's text arrived: the whole frame got through.
    let tail = &json.as_bytes()[json.len() - 64..];
    assert!(
        received.windows(tail.len()).any(|w| w == tail),
        "only {} of about {} bytes arrived in {took:?}",
        received.len(),
        json.len()
    );
    assert!(took > Duration::from_secs(10), "too fast to tell: {took:?}");
}

#[tokio::test]
async fn the_server_pings_and_drops_clients_silent_for_30_s() {
    let server = TestServer::start(|_| {});
    // Never polled again: it neither reads nor answers pings, but its socket
    // buffers take the few small frames, so only silence can get it dropped.
    let mut silent = connect(server.addr).await;
    expect_welcome(&mut silent).await;
    let started = Instant::now();
    // This one reads, so tungstenite answers the server's pings.
    let mut live = connect(server.addr).await;
    expect_welcome(&mut live).await;
    let pinged = tokio::spawn(async move {
        let mut pinged_at = None;
        while let Some(Ok(message)) = live.next().await {
            if let Message::Ping(_) = message {
                pinged_at.get_or_insert_with(Instant::now);
            }
            if pinged_at.is_some_and(|at: Instant| at.elapsed() > Duration::from_secs(16)) {
                break;
            }
        }
        (pinged_at, live)
    });
    assert!(wait_until_async(Duration::from_secs(45), || server.clients() == 1).await);
    let dropped_after = started.elapsed();
    assert!(
        dropped_after >= Duration::from_secs(29) && dropped_after < Duration::from_secs(40),
        "the silent client was dropped after {dropped_after:?}"
    );
    let (pinged_at, _live) = pinged.await.unwrap();
    let first_ping = pinged_at
        .expect("the server pinged")
        .duration_since(started);
    assert!(
        first_ping >= Duration::from_secs(19) && first_ping < Duration::from_secs(26),
        "first ping after {first_ping:?}"
    );
    assert_eq!(server.clients(), 1, "the answering client stays");
    drop(silent);
}

#[tokio::test]
async fn health_reports_its_fields() {
    let server = TestServer::start(|_| {});
    server.status.record_sample(SystemTime::now(), 1500);
    server.status.queue_pending.store(3, Ordering::Relaxed);
    server.status.queue_dead.store(1, Ordering::Relaxed);
    server.status.set_backend_state(BackendState::Failing);
    server
        .status
        .set_last_error(Some("POST http://backend: 503".into()));

    let response = http(server.addr, "GET", "/health", &[]).await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = response.json();
    assert_eq!(body["status"], "ok");
    assert!(body["uptime_s"].is_u64());
    let last = body["last_sample_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(last).is_ok(), "{last}");
    assert_eq!(last.len(), "2026-11-23T10:00:00.000Z".len());
    assert_eq!(body["queue_pending"], 3);
    assert_eq!(body["queue_dead"], 1);
    assert_eq!(body["backend"], "failing");
    assert_eq!(body["last_error"], "POST http://backend: 503");
}

#[tokio::test]
async fn health_is_503_stale_after_three_intervals_without_a_sample() {
    // Never sampled: ok at first, stale once 3 intervals (3 s) have passed.
    let never = TestServer::start(|_| {});
    let started = Instant::now();
    let response = http(never.addr, "GET", "/health", &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.json()["last_sample_at"].is_null());

    // A last sample 5 s ago with a 1 s interval.
    let server = TestServer::start(|_| {});
    let five_s_ago = Instant::now()
        .checked_sub(Duration::from_secs(5))
        .expect("the monotonic clock runs for more than 5 s");
    server
        .status
        .record_sample_seen(SystemTime::now(), five_s_ago, 1000);
    let response = http(server.addr, "GET", "/health", &[]).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["status"], "stale");
    // A fresh sample makes it healthy again.
    server.status.record_sample(SystemTime::now(), 1000);
    assert_eq!(http(server.addr, "GET", "/health", &[]).await.status, 200);

    let deadline = Instant::now() + Duration::from_secs(8);
    let stale = loop {
        let response = http(never.addr, "GET", "/health", &[]).await;
        if response.status == 503 {
            break response;
        }
        assert_eq!(response.status, 200);
        assert!(Instant::now() < deadline, "never became stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(started.elapsed() >= Duration::from_secs(3));
    let body = stale.json();
    assert_eq!(body["status"], "stale");
    assert!(body["last_sample_at"].is_null());
}

/// The names SPEC §4.5 and the daemon's documentation promise, present
/// whenever a snapshot exists (every host has a CPU).
const PROMISED: &[&str] = &[
    "host_cpu_usage_percent",
    "host_cpu_core_usage_percent",
    "host_load1",
    "host_load5",
    "host_load15",
    "host_memory_total_bytes",
    "host_memory_used_bytes",
    "host_memory_available_bytes",
    "host_swap_total_bytes",
    "host_swap_used_bytes",
    "host_disk_read_bytes_per_second",
    "host_disk_write_bytes_per_second",
    "host_tcp_active_connections",
    "host_processes",
    "host_processes_running",
    "host_processes_blocked",
    "host_uptime_seconds",
    "metricsd_queue_pending",
    "metricsd_queue_dead",
    "metricsd_queue_dropped_total",
    "metricsd_queue_insert_failures_total",
    "metricsd_delivered_total",
    "metricsd_post_failures_total",
    "metricsd_stream_clients",
    "metricsd_sample_duration_seconds",
    "metricsd_samples_total",
    "metricsd_up",
];

/// Per-mount and per-interface families: present when the host has any
/// included filesystem or interface (a container's overlay root may have none).
const PROMISED_LABELLED: &[&str] = &[
    "host_filesystem_size_bytes",
    "host_filesystem_used_bytes",
    "host_filesystem_avail_bytes",
    "host_network_receive_bytes_total",
    "host_network_transmit_bytes_total",
    "host_network_receive_errors_total",
    "host_network_transmit_errors_total",
    "host_network_receive_drops_total",
    "host_network_transmit_drops_total",
];

fn value(
    families: &std::collections::HashMap<String, Family>,
    name: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    let family = families
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    family
        .samples
        .iter()
        .find(|s| match label {
            None => s.labels.is_empty(),
            Some((k, v)) => s.labels.iter().any(|(lk, lv)| lk == k && lv == v),
        })
        .unwrap_or_else(|| panic!("{name} {label:?} missing"))
        .value
}

#[tokio::test]
async fn metrics_is_valid_prometheus_text_with_the_promised_names() {
    let server = TestServer::start(|_| {});
    let mut snap = snapshot(4, 2);
    snap.metrics
        .filesystems
        .get_or_insert_with(Vec::new)
        .push(metricsd::snapshot::MountUsage {
            mount: "/mnt/odd \"name\" \\ here".into(),
            total_bytes: 1 << 30,
            used_bytes: 1 << 29,
            avail_bytes: 1 << 29,
            ..Default::default()
        });
    server.publish(snap);
    server.status.record_sample(SystemTime::now(), 2500);
    server.status.delivered_total.store(42, Ordering::Relaxed);
    server.status.queue_pending.store(5, Ordering::Relaxed);
    let _client = connect(server.addr).await;
    assert!(wait_until_async(SOON, || server.clients() == 1).await);

    let response = http(server.addr, "GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let families =
        check_exposition(&response.body).unwrap_or_else(|e| panic!("{e}\n{}", response.body));
    for name in PROMISED.iter().chain(PROMISED_LABELLED) {
        assert!(families.contains_key(*name), "{name} missing from /metrics");
    }
    for (name, family) in &families {
        let expected = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(family.kind, expected, "{name}");
    }
    assert_eq!(
        value(&families, "host_memory_total_bytes", None),
        (16u64 << 30) as f64
    );
    assert_eq!(
        value(&families, "host_memory_used_bytes", None),
        (7u64 << 30) as f64
    );
    assert_eq!(value(&families, "host_load1", None), 0.42);
    assert_eq!(
        value(
            &families,
            "host_cpu_core_usage_percent",
            Some(("core", "3"))
        ),
        9.75
    );
    assert_eq!(
        value(
            &families,
            "host_filesystem_used_bytes",
            Some(("mount", "/mnt/odd \"name\" \\ here"))
        ),
        (1u64 << 29) as f64
    );
    assert_eq!(
        value(
            &families,
            "host_network_receive_bytes_total",
            Some(("interface", "eth1"))
        ),
        (1_000_000 + 4 * 1000 + 1) as f64
    );
    assert_eq!(value(&families, "metricsd_delivered_total", None), 42.0);
    assert_eq!(value(&families, "metricsd_queue_pending", None), 5.0);
    assert_eq!(value(&families, "metricsd_stream_clients", None), 1.0);
    assert_eq!(value(&families, "metricsd_samples_total", None), 1.0);
    assert_eq!(
        value(&families, "metricsd_sample_duration_seconds", None),
        0.0025
    );
    assert_eq!(value(&families, "metricsd_up", None), 1.0);
}

#[tokio::test]
async fn metrics_before_the_first_sample_has_the_daemon_metrics() {
    let server = TestServer::start(|_| {});
    let response = http(server.addr, "GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    let families = check_exposition(&response.body).unwrap();
    assert!(families.contains_key("metricsd_up"));
    assert!(!families.keys().any(|k| k.starts_with("host_")));
}

#[test]
fn the_prometheus_checker_rejects_malformed_output() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\na_total{x=\"2\"} 4.5e3\n# HELP b B.\n# TYPE b gauge\nb NaN\n";
    let families = check_exposition(good).unwrap();
    assert_eq!(families["a_total"].samples[0].labels[1].1, "q\"\\\n");
    assert_eq!(families["a_total"].samples[1].value, 4500.0);

    let bad = [
        ("no TYPE", "# HELP b B.\nb 1\n"),
        ("TYPE after sample", "# HELP b B.\nb 1\n# TYPE b gauge\n"),
        ("no HELP", "# TYPE b gauge\nb 1\n"),
        ("bad name", "# HELP 1b B.\n# TYPE 1b gauge\n1b 1\n"),
        ("bad value", "# HELP b B.\n# TYPE b gauge\nb one\n"),
        ("inf spelled wrong", "# HELP b B.\n# TYPE b gauge\nb inf\n"),
        ("unquoted label", "# HELP b B.\n# TYPE b gauge\nb{x=1} 1\n"),
        ("unescaped quote", "# HELP b B.\n# TYPE b gauge\nb{x=\"a\"b\"} 1\n"),
        ("bad escape", "# HELP b B.\n# TYPE b gauge\nb{x=\"a\\tb\"} 1\n"),
        ("unterminated labels", "# HELP b B.\n# TYPE b gauge\nb{x=\"a\" 1\n"),
        ("duplicate series", "# HELP b B.\n# TYPE b gauge\nb 1\nb 2\n"),
        ("two spaces", "# HELP b B.\n# TYPE b gauge\nb  1\n"),
        ("counter without _total", "# HELP b B.\n# TYPE b counter\nb 1\n"),
        ("gauge with _total", "# HELP b_total B.\n# TYPE b_total gauge\nb_total 1\n"),
        ("unknown type", "# HELP b B.\n# TYPE b meter\nb 1\n"),
        (
            "split family",
            "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na{x=\"1\"} 1\nb 1\na{x=\"2\"} 1\n",
        ),
        ("no final newline", "# HELP b B.\n# TYPE b gauge\nb 1"),
        ("empty line", "# HELP b B.\n# TYPE b gauge\n\nb 1\n"),
    ];
    for (what, text) in bad {
        assert!(check_exposition(text).is_err(), "accepted {what}: {text:?}");
    }
}

/// Sends raw bytes and returns the answer as text: all of it when the
/// server closes, else (an accepted upgrade) up to the end of its head.
async fn raw_answer(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        raw.extend_from_slice(&chunk[..n]);
        let switched =
            raw.starts_with(b"HTTP/1.1 101 ") && raw.windows(4).any(|w| w == b"\r\n\r\n");
        if n == 0 || switched {
            return String::from_utf8_lossy(&raw).into_owned();
        }
    }
}

#[tokio::test]
async fn request_forms_of_rfc_9112_get_their_due_answers() {
    let server = TestServer::start(|_| {});
    let addr = server.addr;
    // HEAD is another method (SPEC §4: 405), and its answer has no body.
    let head = raw_answer(addr, "HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405 "), "{head:?}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a body after the head: {head:?}"
    );
    // Absolute form: routed on its path, its authority checked as the Host.
    let absolute = format!("GET http://{addr}/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    assert_eq!(http_raw(addr, absolute.as_bytes()).await.status, 200);
    let rebound = "GET http://evil.example/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(http_raw(addr, rebound.as_bytes()).await.status, 403);
    for hosts in ["", "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n"] {
        let bad = format!("GET http://{addr}/health HTTP/1.1\r\n{hosts}\r\n");
        assert_eq!(
            http_raw(addr, bad.as_bytes()).await.status,
            400,
            "{hosts:?}"
        );
    }
    // Nothing but empty lines fills the head: too large, not a long target.
    let empty_lines = "\r\n".repeat(5000);
    assert_eq!(http_raw(addr, empty_lines.as_bytes()).await.status, 431);
    // Two Host headers: 400, whichever comes first.
    for hosts in [
        "127.0.0.1\r\nHost: evil.example",
        "evil.example\r\nHost: 127.0.0.1",
    ] {
        let twice = format!("GET /health HTTP/1.1\r\nHost: {hosts}\r\n\r\n");
        assert_eq!(
            http_raw(addr, twice.as_bytes()).await.status,
            400,
            "{hosts}"
        );
    }
    // An escaped unreserved character is the character.
    assert_eq!(http(addr, "GET", "/%68ealth", &[]).await.status, 200);
    // A request target longer than the limit: 414 (a long header stays 431).
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(http_raw(addr, long.as_bytes()).await.status, 414);
    let after_empty_lines = format!("\r\n\r\n{long}");
    assert_eq!(
        http_raw(addr, after_empty_lines.as_bytes()).await.status,
        414
    );
    // A WebSocket upgrade needs HTTP/1.1 and a Host (RFC 6455 §4.2.1).
    let upgrade = |version: &str, host: &str| {
        format!(
            "GET / HTTP/{version}\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let host = format!("Host: {addr}\r\n");
    assert_eq!(
        http_raw(addr, upgrade("1.0", &host).as_bytes())
            .await
            .status,
        400
    );
    assert_eq!(
        http_raw(addr, upgrade("1.0", "").as_bytes()).await.status,
        400
    );
    let accepted = raw_answer(addr, &upgrade("1.1", &host)).await;
    assert!(accepted.starts_with("HTTP/1.1 101 "), "{accepted:?}");
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let server = TestServer::start(|_| {});
    let addr = server.addr;
    assert_eq!(http(addr, "GET", "/index.html", &[]).await.status, 404);
    assert_eq!(http(addr, "GET", "/healthz", &[]).await.status, 404);
    assert_eq!(
        http(addr, "POST", "/", &[("Content-Length", "0")])
            .await
            .status,
        405
    );
    assert_eq!(http(addr, "PUT", "/api/history", &[]).await.status, 405);
    assert_eq!(http(addr, "POST", "/nope", &[]).await.status, 404);
    let post = http(addr, "POST", "/health", &[("Content-Length", "0")]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(http(addr, "DELETE", "/metrics", &[]).await.status, 405);
    assert_eq!(
        http(addr, "GET", "/health?verbose=1", &[]).await.status,
        200
    );

    // A body the server does not read still gets its answer.
    let with_body = format!(
        "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20000\r\n\r\n{}",
        "y".repeat(20000)
    );
    assert_eq!(http_raw(addr, with_body.as_bytes()).await.status, 405);
    // Malformed and oversized heads are refused, not crashed on.
    assert_eq!(http_raw(addr, b"NONSENSE\r\n\r\n").await.status, 400);
    let huge = format!(
        "GET /health HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(9000)
    );
    assert_eq!(http_raw(addr, huge.as_bytes()).await.status, 431);
    // The server still serves afterwards.
    assert_eq!(http(addr, "GET", "/health", &[]).await.status, 200);
}

#[tokio::test]
async fn shutdown_sends_1001_to_every_client() {
    let mut server = TestServer::start(|_| {});
    server.publish(snapshot(1, 1));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = welcomed(server.addr).await;
        assert_eq!(next_json(&mut ws, SOON).await["seq"], 1);
        clients.push(ws);
    }
    // The clients read concurrently while the server stops.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { next(&mut ws, SOON).await }))
        .collect();
    let took = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    for reader in readers {
        match reader.await.unwrap() {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Away)),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
}

#[test]
fn binding_an_address_in_use_fails() {
    let first = metricsd::stream::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let err = metricsd::stream::bind(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn clients_are_counted() {
    let server = TestServer::start(|_| {});
    let mut a = connect(server.addr).await;
    expect_welcome(&mut a).await;
    let mut b = connect(server.addr).await;
    expect_welcome(&mut b).await;
    assert_eq!(server.clients(), 2);
    a.close(None).await.unwrap();
    assert!(wait_until_async(SOON, || server.clients() == 1).await);
    drop(b);
    assert!(wait_until_async(SOON, || server.clients() == 0).await);
}

/// End to end through the real binary: `metricsd run` with a 1 s interval.
mod binary {
    use super::*;
    use std::io::Read;
    use std::process::{Child, Command, Stdio};

    struct Daemon {
        child: Child,
        addr: std::net::SocketAddr,
        _dir: tempfile::TempDir,
    }

    impl Daemon {
        fn start(extra_stream: &str) -> Daemon {
            let dir = tempfile::tempdir().unwrap();
            // An ephemeral port the kernel just handed out and released.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let config = dir.path().join("metricsd.toml");
            std::fs::write(
                &config,
                format!(
                    "interval = \"1s\"\nstate_dir = \"{}\"\nnode_id = \"e2e-node\"\n[stream]\nlisten = \"{addr}\"\n{extra_stream}\n",
                    dir.path().join("state").display()
                ),
            )
            .unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_metricsd"))
                .arg("--config")
                .arg(&config)
                .arg("run")
                .env_remove("METRICSD_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start metricsd");
            Daemon {
                child,
                addr,
                _dir: dir,
            }
        }

        /// Waits until /health reports a sample.
        async fn wait_for_first_sample(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    let mut err = String::new();
                    self.child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("metricsd exited with {status}: {err}");
                }
                if let Ok(Ok(mut s)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(self.addr),
                )
                .await
                {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = s
                        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        .await;
                    let mut raw = String::new();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut raw))
                            .await;
                    if raw.contains("\"last_sample_at\":\"") {
                        return;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no sample reported by /health within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        async fn terminate(&mut self) -> std::process::ExitStatus {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "metricsd did not exit after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn the_daemon_streams_welcome_latest_and_one_snapshot_per_interval() {
        let mut daemon = Daemon::start("");
        daemon.wait_for_first_sample().await;

        let mut ws = connect(daemon.addr).await;
        let welcome = expect_welcome(&mut ws).await;
        assert_eq!(welcome["node_id"], "e2e-node");
        assert_eq!(welcome["interval"], 1);
        let latest = next_json(&mut ws, Duration::from_millis(900)).await;
        assert_eq!(latest["type"], "snapshot");
        let mut seq = latest["seq"].as_u64().unwrap();
        let mut at = Instant::now();
        for _ in 0..3 {
            let got = next_json(&mut ws, Duration::from_secs(3)).await;
            assert_eq!(got["type"], "snapshot");
            assert_eq!(
                got["seq"].as_u64().unwrap(),
                seq + 1,
                "one snapshot per sample, in order"
            );
            let gap = at.elapsed();
            assert!(
                gap < Duration::from_millis(2500),
                "snapshots {gap:?} apart at a 1 s interval"
            );
            seq += 1;
            at = Instant::now();
        }

        send_text(&mut ws, r#"{"command":"get_metrics"}"#).await;
        let reply = next_json(&mut ws, Duration::from_secs(3)).await;
        assert_eq!(reply["type"], "snapshot");
        assert!(reply["seq"].as_u64().unwrap() >= seq);

        let metrics = http(daemon.addr, "GET", "/metrics", &[]).await;
        assert_eq!(metrics.status, 200);
        let families = check_exposition(&metrics.body).unwrap_or_else(|e| panic!("{e}"));
        for name in PROMISED {
            assert!(
                families.contains_key(*name),
                "{name} missing from the daemon's /metrics"
            );
        }
        assert!(value(&families, "host_memory_total_bytes", None) > 0.0);
        assert_eq!(value(&families, "metricsd_stream_clients", None), 1.0);

        let reader = tokio::spawn(async move {
            loop {
                match next(&mut ws, Duration::from_secs(10)).await {
                    Next::Json(_) => continue,
                    other => return other,
                }
            }
        });
        let status = daemon.terminate().await;
        assert!(status.success(), "exit status {status}");
        match reader.await.unwrap() {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Away)),
            other => panic!("expected close 1001 at shutdown, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_daemon_enforces_the_token() {
        let mut daemon = Daemon::start("token = \"e2e-token\"");
        daemon.wait_for_first_sample().await;
        assert_eq!(refused_status(daemon.addr, "/", &[]).await, 401);
        let mut ws = connect_with(daemon.addr, "/?token=e2e-token", &[])
            .await
            .unwrap();
        expect_welcome(&mut ws).await;
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(2)).await["type"],
            "snapshot"
        );
        assert_eq!(http(daemon.addr, "GET", "/metrics", &[]).await.status, 401);
        assert_eq!(http(daemon.addr, "GET", "/health", &[]).await.status, 200);
    }

    #[test]
    fn a_second_daemon_on_the_same_address_exits_1_naming_it() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("metricsd.toml");
        std::fs::write(
            &config,
            format!(
                "interval = \"1s\"\nstate_dir = \"{}\"\n[stream]\nlisten = \"{addr}\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_metricsd"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_remove("METRICSD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("metricsd kept running with its listen address in use");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = crate::common::stderr_of(&mut child);
        assert_eq!(status.code(), Some(1), "stderr: {err}");
        assert!(
            err.contains(&addr.to_string()),
            "stderr should name {addr}: {err}"
        );
    }
}

/// Hardening of the listener (SPEC §4.3, issue 10): request heads, Host,
/// token reloads, protocol errors, exhaustion and slow readers.
mod hardening {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// What the server answered, or "closed" when it closed without answering.
    async fn status_line_after(stream: &mut TcpStream, limit: Duration) -> String {
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(limit, stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        text.lines().next().unwrap_or("closed").to_string()
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_off_within_a_few_seconds() {
        let server = TestServer::start(|_| {});
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        let started = Instant::now();
        // One byte every 200 ms: never a complete head.
        let head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut answer = String::new();
        for byte in head {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    answer = String::from_utf8_lossy(&buf[..n]).to_string();
                    break;
                }
                Err(_) => {}
            }
        }
        let took = started.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "expected 408, got {answer:?} after {took:?}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(8),
            "cut off after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_websocket_key_gets_400() {
        let server = TestServer::start(|_| {});
        for key in ["abc", "dGhlIHNhbXBsZSBub25jZQ", "not base64 at all!!!!!=="] {
            let head = upgrade_head(&server.addr.to_string(), key);
            let response = http_raw(server.addr, head.as_bytes()).await;
            assert_eq!(response.status, 400, "key {key:?}: {}", response.body);
        }
        let head = upgrade_head(&server.addr.to_string(), GOOD_KEY);
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    }

    #[tokio::test]
    async fn host_must_be_an_ip_literal_localhost_or_listed() {
        let server = TestServer::start(|_| {});
        let addr = server.addr;
        let port = addr.port();
        let get = |path: &str, host: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
        };
        // DNS rebinding: a page on evil.example whose name now points here.
        for host in [
            "evil.example",
            &format!("evil.example:{port}"),
            "127.0.0.1.evil.example",
        ] {
            for path in ["/health", "/metrics", "/"] {
                let response = http_raw(addr, &get(path, host)).await;
                assert_eq!(response.status, 403, "{path} with Host {host}");
            }
            let upgrade = http_raw(addr, upgrade_head(host, GOOD_KEY).as_bytes()).await;
            assert_eq!(upgrade.status, 403, "upgrade with Host {host}");
        }
        for host in [
            format!("127.0.0.1:{port}"),
            "127.0.0.1".to_string(),
            format!("localhost:{port}"),
            "localhost".to_string(),
            format!("[::1]:{port}"),
        ] {
            let response = http_raw(addr, &get("/health", &host)).await;
            assert_eq!(response.status, 200, "Host {host}");
        }
        // HTTP/1.1 requires Host; HTTP/1.0 did not.
        let missing = http_raw(addr, b"GET /health HTTP/1.1\r\n\r\n").await;
        assert_eq!(missing.status, 400);
        let old = http_raw(addr, b"GET /health HTTP/1.0\r\n\r\n").await;
        assert_eq!(old.status, 200);

        // allowed_hosts is read per request: a reload applies at once.
        let mut config = (*server.config.get()).clone();
        config.stream.allowed_hosts = vec!["metrics.lan".into()];
        server.config.set(config);
        let listed = http_raw(addr, &get("/health", &format!("metrics.lan:{port}"))).await;
        assert_eq!(listed.status, 200);
        let other = http_raw(addr, &get("/health", "evil.example")).await;
        assert_eq!(other.status, 403);
    }

    #[tokio::test]
    async fn a_reload_that_sets_or_changes_the_token_closes_clients_without_it_with_1008() {
        let server = TestServer::start(|_| {});
        server.publish(snapshot(1, 1));
        let mut without = connect(server.addr).await;
        expect_welcome(&mut without).await;
        assert_eq!(next_json(&mut without, SOON).await["seq"], 1);
        let mut holder = connect_with(server.addr, "/?token=first", &[])
            .await
            .unwrap();
        expect_welcome(&mut holder).await;
        assert_eq!(next_json(&mut holder, SOON).await["seq"], 1);
        let mut bearer = connect_with(server.addr, "/", &[("Authorization", "Bearer first")])
            .await
            .unwrap();
        expect_welcome(&mut bearer).await;
        assert_eq!(next_json(&mut bearer, SOON).await["seq"], 1);

        let set_token = |token: &str| {
            let mut config = (*server.config.get()).clone();
            config.stream.token = token.to_string();
            server.config.set(config);
        };
        set_token("first");
        match next(&mut without, SOON).await {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Policy)),
            other => panic!("expected close 1008, got {other:?}"),
        }
        assert!(wait_until_async(SOON, || server.clients() == 2).await);
        // Those holding the token keep receiving.
        server.publish(snapshot(2, 1));
        assert_eq!(next_json(&mut holder, SOON).await["seq"], 2);
        assert_eq!(next_json(&mut bearer, SOON).await["seq"], 2);
        // /health needs no token; /metrics does.
        let health = http(server.addr, "GET", "/health", &[]).await;
        assert_eq!(health.status, 200);
        assert_eq!(http(server.addr, "GET", "/metrics", &[]).await.status, 401);

        // A changed token closes the clients holding the old one.
        set_token("second");
        for ws in [&mut holder, &mut bearer] {
            match next(ws, SOON).await {
                Next::Close(code) => assert_eq!(code, Some(CloseCode::Policy)),
                other => panic!("expected close 1008, got {other:?}"),
            }
        }
        assert!(wait_until_async(SOON, || server.clients() == 0).await);
        let mut fresh = connect_with(server.addr, "/?token=second", &[])
            .await
            .unwrap();
        expect_welcome(&mut fresh).await;
    }

    async fn close_code_after(frame: Frame) -> Next {
        let (server, mut ws) = server_and_client().await;
        ws.send(Message::Frame(frame)).await.unwrap();
        let got = next(&mut ws, SOON).await;
        assert!(wait_until_async(SOON, || server.clients() == 0).await);
        got
    }

    #[tokio::test]
    async fn protocol_violations_close_with_1002() {
        // A reserved bit without a negotiated extension.
        let mut frame = Frame::message(r#"{"command":"ping"}"#, OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        match close_code_after(frame).await {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Protocol)),
            other => panic!("expected close 1002, got {other:?}"),
        }
        // A continuation frame with nothing to continue.
        let frame = Frame::message("x", OpCode::Data(Data::Continue), true);
        match close_code_after(frame).await {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Protocol)),
            other => panic!("expected close 1002, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_utf8_text_closes_with_1007() {
        let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        match close_code_after(frame).await {
            Next::Close(code) => assert_eq!(code, Some(CloseCode::Invalid)),
            other => panic!("expected close 1007, got {other:?}"),
        }
    }

    /// Sends one /health request and returns its status, or 0 when the
    /// connection was closed or nothing came within `limit`.
    async fn health_status(addr: std::net::SocketAddr, limit: Duration) -> u16 {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let line = status_line_after(&mut stream, limit).await;
            line.split(' ').nth(1)?.parse().ok()
        };
        tokio::time::timeout(limit, attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_normal_client_is_served_while_1000_idle_and_slow_connections_and_a_flood_are_held() {
        // A long interval: never stale while the test runs.
        let server = TestServer::start(|c| c.interval = Duration::from_secs(60));
        let addr = server.addr;
        // 1,000 connections that never send anything.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(
                TcpStream::connect(addr)
                    .await
                    .expect("the backlog takes 1,000 connections"),
            );
        }
        // 200 that send a head one byte a second.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut slow = Vec::new();
        for _ in 0..200 {
            let stop = stop.clone();
            slow.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    for byte in b"GET /health HTTP/1.1\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }));
        }
        // A client that reconnects as fast as it can, holding each a moment.
        let flooded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flood = {
            let stop = stop.clone();
            let flooded = flooded.clone();
            tokio::spawn(async move {
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = TcpStream::connect(addr).await {
                        flooded.fetch_add(1, Ordering::Relaxed);
                        held.push_back(s);
                        if held.len() > 300 {
                            held.pop_front();
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        // /health is asked only once the flood is on.
        assert!(
            wait_until_async(Duration::from_secs(30), || flooded.load(Ordering::Relaxed)
                > 100)
            .await,
            "the flood never got going"
        );

        let mut answered = 0;
        let mut seen = Vec::new();
        for _ in 0..20 {
            let asked = Instant::now();
            let status = health_status(addr, Duration::from_secs(5)).await;
            seen.push((status, asked.elapsed()));
            if status == 200 {
                answered += 1;
            }
        }

        stop.store(true, Ordering::Relaxed);
        flood.await.unwrap();
        let made = flooded.load(Ordering::Relaxed);
        for task in slow {
            task.abort();
        }
        assert_eq!(
            answered, 20,
            "/health answered {answered} of 20 (the flood made {made} connections): {seen:?}"
        );
        assert!(made > 100, "the flood made only {made} connections");

        // The idle connections were closed by the server (shed or timed out):
        // none holds a place for long.
        let mut closed = 0;
        for mut s in idle {
            let mut buf = [0u8; 256];
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await
            {
                closed += 1;
            }
        }
        assert_eq!(
            closed, 1000,
            "only {closed} of 1,000 idle connections were closed"
        );
        // And the stream still works.
        let mut ws = connect(addr).await;
        expect_welcome(&mut ws).await;
    }

    #[tokio::test]
    async fn a_client_that_never_reads_pins_a_small_send_queue() {
        let server = TestServer::start(|_| {});
        let stalled = connect(server.addr).await;
        let client_side = stalled.get_ref().local_addr().unwrap();
        let mut reader = connect(server.addr).await;
        expect_welcome(&mut reader).await;
        let reading = tokio::spawn(async move {
            let mut got = 0u64;
            while let Some(Ok(message)) = reader.next().await {
                if let Message::Text(_) = message {
                    got += 1;
                }
            }
            got
        });
        // ~400 KB snapshots, 5 MB in all: far more than the 4 MiB a socket's
        // send buffer may grow to by itself.
        let big = std::sync::Arc::new(snapshot(1, 1500));
        let json = big.stream_json().to_string();
        let mut queued_max = 0;
        for _ in 0..12 {
            server.hub.publish(big.clone(), json.clone());
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Some(queued) = send_queue_bytes(server.addr, client_side) {
                queued_max = queued_max.max(queued);
            }
        }
        assert!(
            queued_max > 0,
            "the stalled client's socket was not found or never queued"
        );
        assert!(
            queued_max <= 256 * 1024,
            "{queued_max} bytes wait in the kernel for a client that never reads"
        );
        drop(stalled);
        reading.abort();
    }

    #[tokio::test]
    async fn health_ignores_a_forward_wall_clock_step_and_reports_failing_inserts() {
        let server = TestServer::start(|_| {});
        // The snapshot's wall-clock time is an hour old (the clock stepped
        // forward after it), but the sample was taken a moment ago.
        server
            .status
            .record_sample(SystemTime::now() - Duration::from_secs(3600), 1000);
        let response = http(server.addr, "GET", "/health", &[]).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["status"], "ok");

        server
            .status
            .record_insert_failure("attempt to write a readonly database".into());
        let response = http(server.addr, "GET", "/health", &[]).await;
        assert_eq!(response.status, 200);
        let body = response.json();
        assert_eq!(body["status"], "ok", "SPEC §4.4 knows ok and stale only");
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains("queue inserts") && reason.contains("readonly"),
            "{reason}"
        );
        let metrics = http(server.addr, "GET", "/metrics", &[]).await;
        let families = check_exposition(&metrics.body).unwrap();
        assert_eq!(
            families["metricsd_queue_insert_failures_total"].samples[0].value,
            1.0
        );
        server.status.record_insert_ok();
        let body = http(server.addr, "GET", "/health", &[]).await.json();
        assert_eq!(body["status"], "ok");
        assert!(body["reason"].is_null());
    }

    /// End to end: a backend whose error answers carry a body; /health (which
    /// needs no token) names the status code and never the body's text.
    #[tokio::test]
    async fn health_last_error_never_carries_the_backend_body() {
        use crate::common::backend::{Backend, Behaviour};
        use crate::common::daemon::Setup;
        const BODY_TEXT: &str = "rejected by test backend"; // what its error answers say
        let backend = Backend::start();
        backend.set(Behaviour::Status(503));
        let setup = Setup::new(
            "1s",
            "",
            &format!(
                "[backend]\nurl = \"{}\"\nretry_backoff = [\"1s\"]\n",
                backend.url()
            ),
        );
        let mut daemon = setup.start(&[]);
        daemon.wait_listening(setup.stream_addr(), Duration::from_secs(15));
        assert!(backend.wait_until(Duration::from_secs(15), |b| b.served() > 0));
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = loop {
            let body = http(setup.stream_addr(), "GET", "/health", &[])
                .await
                .json();
            if body["last_error"].is_string() {
                break body;
            }
            assert!(Instant::now() < deadline, "no last_error reported: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let error = body["last_error"].as_str().unwrap();
        assert_eq!(body["backend"], "failing");
        assert!(error.contains("HTTP 503"), "{error}");
        assert!(
            !error.contains(BODY_TEXT),
            "the body reached /health: {error}"
        );
        let sink_error = body["sinks"]["backend"]["last_error"]
            .as_str()
            .unwrap_or("");
        assert!(sink_error.contains("HTTP 503"), "{body}");
        assert!(
            !sink_error.contains(BODY_TEXT),
            "the body reached /health: {body}"
        );
    }
}

/// Resident set of process `pid` in KiB (VmRSS).
fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A TCP connection with small kernel buffers, so that what the other end
/// holds for it shows in the other end's own memory, not in the kernel's.
fn small_buffered_connection(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(1024 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

#[test]
fn a_client_that_floods_pings_and_never_reads_holds_one_pong_and_is_dropped() {
    use crate::common::daemon::Setup;
    use std::io::{ErrorKind, Read, Write};
    let setup = Setup::new("60s", "", "");
    let mut daemon = setup.start(&[("RUST_LOG", "metricsd=debug")]);
    let addr = setup.stream_addr();
    daemon.wait_listening(addr, Duration::from_secs(20));
    // After the first sample, the next one is a minute away: nothing but
    // the pongs is for this client to send meanwhile.
    daemon.wait_for_line("sample seq=1 ", Duration::from_secs(20));
    let rss_before = vm_rss_kib(daemon.pid());

    let mut client = small_buffered_connection(addr);
    client
        .write_all(upgrade_head(&addr.to_string(), "dGhlIHNhbXBsZSBub25jZQ==").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Masked pings of 125 bytes (the largest a control frame may carry),
    // sent until the daemon stops taking them, or 48 MiB.
    let mut frame = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    frame.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][usize::from(i) % 4]));
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 64)
        .collect();
    // Sent as fast as the daemon takes them, for up to 15 s (it drops a
    // client whose socket accepts nothing for 10 s, which ends this early).
    client.set_nonblocking(true).unwrap();
    let flood_until = Instant::now() + Duration::from_secs(15);
    let (mut sent, mut at) = (0usize, 0usize);
    while sent < 48 << 20 && Instant::now() < flood_until {
        match client.write(&batch[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % batch.len();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Until the socket takes more (or 100 ms, to look at the deadline).
                use std::os::unix::io::AsRawFd;
                let mut writable = libc::pollfd {
                    fd: client.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut writable, 1, 100) };
            }
            Err(_) => break,
        }
    }
    let grown_kib = vm_rss_kib(daemon.pid()).saturating_sub(rss_before);
    // Each ping's pong waits in the daemon until it is written: one at a
    // time, not a write buffer that grows with every ping (up to 16 MiB).
    assert!(
        grown_kib < 4 * 1024,
        "the daemon grew by {grown_kib} KiB for a client that sent {sent} bytes of pings and read nothing"
    );
    daemon.wait_for_line("accepted nothing for 10 s", Duration::from_secs(60));
    drop(client);
}
