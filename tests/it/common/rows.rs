//! Queue rows shaped like the daemon's: the flat form (SPEC §3.2) with
//! realistic values, about 600 bytes each (long host names and large
//! counters, as on a busy server).
#![allow(dead_code)]

use metricsd::config::{Config, SharedConfig};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A fresh event_id (UUID v7, as the daemon makes them).
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RFC 3339 UTC with milliseconds, like snapshot timestamps.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The flat form for sample number `i`.
pub fn flat_payload(event_id: &str, created_at: &str, i: u64) -> String {
    serde_json::json!({
        "event_id": event_id,
        "node_id": "web-frontend-eu-west-1a-07.prod.example.internal",
        "machine_id": "6f1c2a4e-9b3d-4c1e-8f7a-2d5e6b7c8a90",
        "timestamp": created_at,
        "cpu_percent": 12.34 + (i % 50) as f64,
        "memory_percent": 63.21,
        "memory_used_mb": 10_342 + i % 100,
        "memory_total_mb": 16_012,
        "disk_percent": 71.05,
        "disk_used_gb": 338.61,
        "disk_total_gb": 476.94,
        "network_rx_bytes": 98_765_432_101u64 + i * 1_000_003,
        "network_tx_bytes": 12_345_678_901u64 + i * 250_007,
        "network_rx_rate_mbps": 123.45,
        "network_tx_rate_mbps": 67.89,
        "uptime_seconds": 8_640_000 + i * 60,
        "process_count": 412,
        "active_connections": 1_337,
        "load_avg_1m": 1.25,
        "load_avg_5m": 0.98,
        "load_avg_15m": 0.87,
    })
    .to_string()
}

/// One row ready for `Queue::insert`: (event_id, created_at, payload).
pub fn row(i: u64) -> (String, String, String) {
    let id = event_id();
    let at = timestamp(SystemTime::now());
    let payload = flat_payload(&id, &at, i);
    (id, at, payload)
}

/// Defaults with the state directory and backend set, and fast retries.
pub fn config(state_dir: &Path, url: &str) -> Config {
    let mut c = Config::default();
    c.state_dir = state_dir.to_path_buf();
    c.backend.url = url.to_string();
    c.backend.timeout = Duration::from_secs(5);
    c.backend.retry_backoff = vec![Duration::from_millis(100)];
    // Rows are posted as they come; the splay has tests of its own.
    c.backend.splay = metricsd::config::Splay::Fixed(Duration::ZERO);
    c
}

pub fn shared(config: Config) -> SharedConfig {
    SharedConfig::new(config)
}
