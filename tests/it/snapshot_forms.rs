//! Golden JSON for both snapshot forms: field names, types, units, rounding.

use metricsd::snapshot::*;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};
use uuid::Uuid;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn sample() -> Snapshot {
    Snapshot {
        timestamp: UNIX_EPOCH + Duration::from_millis(1_795_428_000_000),
        node_id: "web-1".into(),
        machine_id: "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4".into(),
        event_id: Uuid::parse_str("019ab0c4-6b00-7000-8000-000000000001").unwrap(),
        seq: 17,
        interval_secs: 60,
        metrics: Metrics {
            cpu: CpuMetrics {
                usage_percent: 12.3456,
                per_core_percent: vec![10.0, 14.691],
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
            },
            memory: MemoryMetrics {
                total_bytes: 16 * GIB,
                available_bytes: 12 * GIB,
                swap_total_bytes: 2 * GIB,
                swap_free_bytes: 2 * GIB - 512 * MIB,
            },
            disk: DiskMetrics {
                mounts: vec![
                    MountUsage {
                        mount: "/".into(),
                        total_bytes: 100 * GIB,
                        used_bytes: 40 * GIB,
                        avail_bytes: 55 * GIB,
                    },
                    MountUsage {
                        mount: "/data".into(),
                        total_bytes: 500 * GIB,
                        used_bytes: 100 * GIB,
                        avail_bytes: 400 * GIB,
                    },
                ],
                read_bytes_per_sec: 3.0 * MIB as f64,
                write_bytes_per_sec: 1.5 * MIB as f64,
            },
            network: NetworkMetrics {
                interfaces: vec![InterfaceMetrics {
                    name: "eth0".into(),
                    rx_bytes: 123_456_789,
                    tx_bytes: 987_654,
                    rx_packets: 1000,
                    tx_packets: 500,
                    // 30 MiB/s: the figure the replaced daemon reported as 463,898 MB/s.
                    rx_bytes_per_sec: 31_457_280.0,
                    tx_bytes_per_sec: 125_000.0,
                    rx_errors: 1,
                    tx_errors: 2,
                    rx_dropped: 3,
                    tx_dropped: 4,
                }],
                active_connections: 42,
            },
            processes: ProcessMetrics {
                count: 211,
                running: 2,
                blocked: 1,
                top_memory: vec![TopProcess {
                    pid: 4242,
                    name: "postgres".into(),
                    memory_percent: 3.25678,
                }],
            },
            system: SystemMetrics {
                uptime_seconds: 86_400,
                boot_id: "b6c5a1f0-0000-4000-8000-000000000000".into(),
            },
        },
    }
}

#[test]
fn stream_form_is_exactly_the_contract() {
    let expected = json!({
        "type": "snapshot",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "node_id": "web-1",
        "machine_id": "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4",
        "event_id": "019ab0c4-6b00-7000-8000-000000000001",
        "seq": 17,
        "interval": 60,
        "metrics": {
            "cpu": {
                "cpu_usage_percent": 12.35,
                "cpu_per_core_percent": [10.0, 14.69],
                "load_avg_1min": 0.5, "load_avg_5min": 0.25, "load_avg_15min": 0.13
            },
            "memory": {
                "memory_total_gb": 16.0, "memory_used_gb": 4.0, "memory_available_gb": 12.0,
                "memory_usage_percent": 25.0,
                "swap_total_gb": 2.0, "swap_used_gb": 0.5, "swap_usage_percent": 25.0
            },
            "disk": {
                "disk_usage": {
                    "/": { "total_gb": 100.0, "used_gb": 40.0, "free_gb": 55.0, "usage_percent": 42.11 },
                    "/data": { "total_gb": 500.0, "used_gb": 100.0, "free_gb": 400.0, "usage_percent": 20.0 }
                },
                "disk_io": { "read_mb_per_sec": 3.0, "write_mb_per_sec": 1.5 }
            },
            "network": {
                "bytes_sent_mb_per_sec": 0.12,
                "bytes_recv_mb_per_sec": 30.0,
                "packets_sent": 500, "packets_recv": 1000,
                "active_connections": 42,
                "interfaces": {
                    "eth0": {
                        "rx_bytes": 123456789, "tx_bytes": 987654,
                        "rx_bytes_per_sec": 31457280.0, "tx_bytes_per_sec": 125000.0,
                        "rx_errors": 1, "tx_errors": 2, "rx_dropped": 3, "tx_dropped": 4
                    }
                }
            },
            "processes": {
                "process_count": 211, "running": 2, "blocked": 1,
                "top_memory_processes": [ { "pid": 4242, "name": "postgres", "memory_percent": 3.26 } ]
            },
            "system": { "uptime_seconds": 86400, "boot_id": "b6c5a1f0-0000-4000-8000-000000000000" }
        }
    });
    assert_eq!(sample().stream_json(), expected);
}

#[test]
fn flat_form_is_exactly_the_contract() {
    let expected = json!({
        "event_id": "019ab0c4-6b00-7000-8000-000000000001",
        "node_id": "web-1",
        "machine_id": "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "cpu_percent": 12.35,
        "memory_percent": 25.0,
        "memory_used_mb": 4096,
        "memory_total_mb": 16384,
        "disk_percent": 42.11,
        "disk_used_gb": 40.0,
        "disk_total_gb": 100.0,
        "network_rx_bytes": 123456789,
        "network_tx_bytes": 987654,
        "network_rx_rate_mbps": 251.66,
        "network_tx_rate_mbps": 1.0,
        "uptime_seconds": 86400,
        "process_count": 211,
        "active_connections": 42,
        "load_avg_1m": 0.5,
        "load_avg_5m": 0.25,
        "load_avg_15m": 0.13
    });
    let flat = sample().flat_json();
    assert_eq!(flat, expected);
    // Integer MiB, not floats.
    assert!(flat["memory_used_mb"].is_u64());
}

#[test]
fn flat_disk_falls_back_to_the_largest_filesystem_without_root() {
    let mut s = sample();
    s.metrics.disk.mounts.retain(|m| m.mount != "/");
    s.metrics.disk.mounts.push(MountUsage {
        mount: "/small".into(),
        total_bytes: GIB,
        used_bytes: 0,
        avail_bytes: GIB,
    });
    let flat = s.flat_json();
    assert_eq!(flat["disk_total_gb"], json!(500.0));
    assert_eq!(flat["disk_percent"], json!(20.0));
}

#[test]
fn empty_metrics_still_have_every_field() {
    let mut s = sample();
    s.metrics = Metrics::default();
    let stream = s.stream_json();
    let flat = s.flat_json();
    let count = |v: &Value| v.as_object().unwrap().len();
    assert_eq!(count(&flat), 21);
    assert_eq!(count(&stream["metrics"]), 6);
    assert_eq!(count(&stream["metrics"]["memory"]), 7);
    assert_eq!(
        stream["metrics"]["memory"]["memory_usage_percent"],
        json!(0.0)
    );
    assert_eq!(flat["disk_percent"], json!(0.0));
}

#[test]
fn timestamps_always_carry_milliseconds() {
    let at = UNIX_EPOCH + Duration::from_secs(1_795_428_000);
    assert_eq!(format_timestamp(at), "2026-11-23T10:00:00.000Z");
    assert_eq!(
        format_timestamp(at + Duration::from_micros(7_900)),
        "2026-11-23T10:00:00.007Z"
    );
}
