//! Golden JSON for both snapshot forms: field names, types, units, rounding.

use metricsd::collect::units::UnitMetrics;
use metricsd::snapshot::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};
use uuid::Uuid;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

pub(crate) fn sample() -> Snapshot {
    let mut units = BTreeMap::new();
    units.insert(
        "nginx.service".to_string(),
        UnitMetrics {
            cpu_percent: Some(12.345),
            memory_mb: Some(64.0),
            tasks: Some(5),
            io_read_mb_per_sec: Some(0.5),
            io_write_mb_per_sec: Some(1.255),
            cpu_pressure_some_avg10: Some(0.1),
            memory_pressure_some_avg10: Some(0.0),
            io_pressure_some_avg10: None,
            cpu_usage_usec: Some(123_456_789),
            memory_bytes: Some(64 * MIB),
            io_read_bytes: Some(1),
            io_write_bytes: Some(2),
        },
    );
    let psi = |avg10: f64, total_us: u64| PsiLine {
        avg10,
        avg60: avg10 / 2.0,
        avg300: avg10 / 4.0,
        total_us,
        stall_ms_per_sec: Some(12.345),
    };
    Snapshot {
        timestamp: UNIX_EPOCH + Duration::from_millis(1_795_428_000_000),
        node_id: "web-1".into(),
        machine_id: "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4".into(),
        event_id: Uuid::parse_str("019ab0c4-6b00-7000-8000-000000000001").unwrap(),
        seq: 17,
        interval_secs: 60,
        metrics: Metrics {
            cpu: Some(CpuMetrics {
                usage_percent: Some(12.3456),
                per_core_percent: Some(vec![10.0, 14.691]),
                core_numbers: Some(vec![0, 1]),
                modes_percent: Some(CpuModes {
                    user: 8.004,
                    nice: 0.5,
                    system: 3.0,
                    idle: 86.0,
                    iowait: 1.5,
                    irq: 0.2,
                    softirq: 0.3,
                    steal: 0.496,
                    guest: 0.0,
                }),
                seconds_total: CpuModes {
                    user: 1000.25,
                    idle: 90000.0,
                    ..Default::default()
                },
            }),
            activity: Some(ActivityMetrics {
                context_switches_total: 9_000_000,
                interrupts_total: 4_000_000,
                forks_total: 50_000,
                context_switches_per_sec: Some(1234.567),
                interrupts_per_sec: Some(500.0),
                forks_per_sec: Some(2.5),
                procs_running: 2,
                procs_blocked: 1,
                boot_time_unix: 1_795_341_600,
            }),
            load: Some(LoadMetrics {
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
            }),
            memory: Some(MemoryMetrics {
                total_bytes: 16 * GIB,
                available_bytes: 12 * GIB,
                free_bytes: 2 * GIB,
                buffers_bytes: GIB / 4,
                cached_bytes: 9 * GIB,
                shared_bytes: GIB / 8,
                slab_bytes: GIB / 2,
                swap_total_bytes: 2 * GIB,
                swap_free_bytes: 2 * GIB - 512 * MIB,
            }),
            vmstat: Some(VmstatMetrics {
                swap_in_pages_total: 10,
                swap_out_pages_total: 20,
                major_faults_total: 30,
                swap_in_pages_per_sec: Some(0.125),
                swap_out_pages_per_sec: Some(1.0),
                major_faults_per_sec: Some(3.333),
            }),
            pressure: Some(PressureMetrics {
                cpu_some: Some(psi(4.0, 100)),
                cpu_full: None,
                memory_some: Some(psi(2.0, 200)),
                memory_full: Some(psi(1.0, 300)),
                io_some: Some(psi(8.0, 400)),
                io_full: Some(psi(6.0, 500)),
            }),
            filesystems: Some(vec![
                MountUsage {
                    mount: "/".into(),
                    fs_type: "ext4".into(),
                    device: "/dev/vda1".into(),
                    total_bytes: 100 * GIB,
                    used_bytes: 40 * GIB,
                    avail_bytes: 55 * GIB,
                    inodes_total: 1000,
                    inodes_free: 750,
                },
                MountUsage {
                    mount: "/data".into(),
                    fs_type: "btrfs".into(),
                    device: "/dev/vdb".into(),
                    total_bytes: 500 * GIB,
                    used_bytes: 100 * GIB,
                    avail_bytes: 400 * GIB,
                    inodes_total: 0,
                    inodes_free: 0,
                },
            ]),
            disk_io: Some(DiskIoMetrics {
                read_bytes_per_sec: 3.0 * MIB as f64,
                write_bytes_per_sec: 1.5 * MIB as f64,
                devices: vec![DeviceMetrics {
                    name: "vda".into(),
                    reads_total: 1,
                    writes_total: 2,
                    read_bytes_total: 3,
                    written_bytes_total: 4,
                    read_time_ms_total: 5,
                    write_time_ms_total: 6,
                    io_time_ms_total: 7,
                    in_flight: 2,
                    read_bytes_per_sec: 3.0 * MIB as f64,
                    write_bytes_per_sec: 1.5 * MIB as f64,
                    reads_per_sec: 10.004,
                    writes_per_sec: 20.0,
                    util_percent: 33.333,
                    read_await_ms: 0.5,
                    write_await_ms: 1.255,
                }],
            }),
            network: Some(NetworkMetrics {
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
                    oper_state: Some("up".into()),
                }],
            }),
            tcp: TcpMetrics {
                curr_estab: Some(42),
                retrans_segs_total: Some(100),
                resets_sent_total: Some(5),
                retrans_segs_per_sec: Some(0.333),
                resets_sent_per_sec: Some(0.0),
                listen_overflows_total: Some(7),
                listen_drops_total: Some(8),
                listen_overflows_per_sec: Some(1.0),
                listen_drops_per_sec: Some(2.0),
                in_use: Some(50),
                time_wait: Some(9),
                orphan: Some(1),
            },
            processes: Some(ProcessMetrics {
                count: 211,
                threads: Some(480),
                zombies: Some(2),
                top_memory: vec![TopProcess {
                    pid: 4242,
                    name: "postgres".into(),
                    memory_bytes: 550 * MIB,
                    memory_percent: Some(3.25678),
                }],
                top_cpu: vec![TopCpuProcess {
                    pid: 77,
                    name: "ffmpeg".into(),
                    cpu_percent: 187.555,
                }],
            }),
            system: SystemMetrics {
                uptime_seconds: Some(86_400),
                boot_id: Some("b6c5a1f0-0000-4000-8000-000000000000".into()),
                file_descriptors_allocated: Some(1500),
                file_descriptors_max: Some(9_223_372_036_854_775_807),
                clock_synced: Some(true),
                clock_max_error_ms: Some(1.5),
                kernel: Some("6.1.0-27-amd64".into()),
                os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            },
            units: Some(units),
        },
        collectors: vec![CollectorRun {
            name: "cpu".into(),
            duration: Duration::from_micros(25),
            ok: true,
            failures_total: 3,
        }],
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
                "load_avg_1min": 0.5, "load_avg_5min": 0.25, "load_avg_15min": 0.13,
                "cpu_modes_percent": {
                    "user": 8.0, "nice": 0.5, "system": 3.0, "idle": 86.0, "iowait": 1.5,
                    "irq": 0.2, "softirq": 0.3, "steal": 0.5, "guest": 0.0
                }
            },
            "memory": {
                "memory_total_gb": 16.0, "memory_used_gb": 4.0, "memory_available_gb": 12.0,
                "memory_usage_percent": 25.0,
                "swap_total_gb": 2.0, "swap_used_gb": 0.5, "swap_usage_percent": 25.0,
                "memory_free_gb": 2.0, "memory_buffers_gb": 0.25, "memory_cached_gb": 9.0,
                "memory_shared_gb": 0.13, "memory_slab_gb": 0.5,
                "swap_in_pages_per_sec": 0.13, "swap_out_pages_per_sec": 1.0,
                "major_faults_per_sec": 3.33
            },
            "pressure": {
                "cpu_some_avg10": 4.0, "cpu_some_avg60": 2.0, "cpu_some_avg300": 1.0,
                "cpu_some_stall_ms_per_sec": 12.35,
                "memory_some_avg10": 2.0, "memory_some_avg60": 1.0, "memory_some_avg300": 0.5,
                "memory_some_stall_ms_per_sec": 12.35,
                "memory_full_avg10": 1.0, "memory_full_avg60": 0.5, "memory_full_avg300": 0.25,
                "memory_full_stall_ms_per_sec": 12.35,
                "io_some_avg10": 8.0, "io_some_avg60": 4.0, "io_some_avg300": 2.0,
                "io_some_stall_ms_per_sec": 12.35,
                "io_full_avg10": 6.0, "io_full_avg60": 3.0, "io_full_avg300": 1.5,
                "io_full_stall_ms_per_sec": 12.35
            },
            "disk": {
                "disk_usage": {
                    "/": { "total_gb": 100.0, "used_gb": 40.0, "free_gb": 55.0, "usage_percent": 42.11,
                           "fs_type": "ext4", "device": "/dev/vda1",
                           "inodes_total": 1000, "inodes_used": 250, "inodes_usage_percent": 25.0 },
                    "/data": { "total_gb": 500.0, "used_gb": 100.0, "free_gb": 400.0, "usage_percent": 20.0,
                               "fs_type": "btrfs", "device": "/dev/vdb",
                               "inodes_total": 0, "inodes_used": 0, "inodes_usage_percent": null }
                },
                "disk_io": {
                    "read_mb_per_sec": 3.0, "write_mb_per_sec": 1.5,
                    "devices": {
                        "vda": {
                            "read_mb_per_sec": 3.0, "write_mb_per_sec": 1.5,
                            "reads_per_sec": 10.0, "writes_per_sec": 20.0,
                            "util_percent": 33.33, "read_await_ms": 0.5, "write_await_ms": 1.25,
                            "in_flight": 2
                        }
                    }
                }
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
                        "rx_errors": 1, "tx_errors": 2, "rx_dropped": 3, "tx_dropped": 4,
                        "rx_packets": 1000, "tx_packets": 500, "oper_state": "up"
                    }
                },
                "tcp": {
                    "in_use": 50, "time_wait": 9, "orphan": 1,
                    "retrans_segs_per_sec": 0.33, "listen_overflows_per_sec": 1.0,
                    "listen_drops_per_sec": 2.0, "resets_sent_per_sec": 0.0
                }
            },
            "processes": {
                "process_count": 211, "running": 2, "blocked": 1,
                "top_memory_processes": [ { "pid": 4242, "name": "postgres", "memory_percent": 3.26 } ],
                "threads": 480, "zombies": 2,
                "top_cpu_processes": [ { "pid": 77, "name": "ffmpeg", "cpu_percent": 187.56 } ]
            },
            "system": {
                "uptime_seconds": 86400, "boot_id": "b6c5a1f0-0000-4000-8000-000000000000",
                "context_switches_per_sec": 1234.57, "interrupts_per_sec": 500.0, "forks_per_sec": 2.5,
                "file_descriptors_allocated": 1500, "file_descriptors_max": 9223372036854775807u64,
                "clock_synced": true, "clock_max_error_ms": 1.5,
                "kernel": "6.1.0-27-amd64", "os": "Debian GNU/Linux 12 (bookworm)",
                "boot_time": "2026-11-22T10:00:00.000Z"
            },
            "units": {
                "nginx.service": {
                    "cpu_percent": 12.35, "memory_mb": 64.0, "tasks": 5,
                    "io_read_mb_per_sec": 0.5, "io_write_mb_per_sec": 1.25,
                    "cpu_pressure_some_avg10": 0.1, "memory_pressure_some_avg10": 0.0,
                    "io_pressure_some_avg10": null
                }
            }
        }
    });
    let stream = sample().stream_json();
    assert_eq!(stream, expected);
    // The contract's key order, section by section (serde_json keeps insertion order).
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&stream), keys(&expected));
    for section in [
        "cpu",
        "memory",
        "pressure",
        "disk",
        "network",
        "processes",
        "system",
    ] {
        assert_eq!(
            keys(&stream["metrics"][section]),
            keys(&expected["metrics"][section]),
            "{section}"
        );
    }
    assert_eq!(
        keys(&stream["metrics"]),
        [
            "cpu",
            "memory",
            "pressure",
            "disk",
            "network",
            "processes",
            "system",
            "units"
        ]
    );
}

#[test]
fn the_model_round_trips_through_compact_bytes() {
    let s = sample();
    let bytes = s.to_model_bytes();
    assert_eq!(Snapshot::from_model_bytes(&bytes).unwrap(), s);
    let stream_len = s.stream_json().to_string().len();
    assert!(
        bytes.len() < stream_len / 2,
        "model {} bytes, stream form {stream_len}",
        bytes.len()
    );
    // Raw counters survive (the sinks export counters, not rates).
    let back = Snapshot::from_model_bytes(&bytes).unwrap();
    assert_eq!(back.metrics.activity.unwrap().forks_total, 50_000);
    assert_eq!(
        back.metrics.pressure.unwrap().io_full.unwrap().total_us,
        500
    );
    assert!(Snapshot::from_model_bytes(b"not deflate").is_err());
    assert!(Snapshot::from_model_bytes(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn the_export_read_of_a_model_is_the_snapshot_without_collector_runs() {
    let s = sample();
    assert!(!s.collectors.is_empty());
    let bytes = s.to_model_bytes();
    let export = Snapshot::from_model_bytes_for_export(&bytes).unwrap();
    assert!(export.collectors.is_empty());
    assert_eq!(
        Snapshot {
            collectors: s.collectors.clone(),
            ..export
        },
        s
    );
    assert!(Snapshot::from_model_bytes_for_export(b"not deflate").is_err());
    assert!(Snapshot::from_model_bytes_for_export(&bytes[..bytes.len() / 2]).is_err());
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
    let mounts = s.metrics.filesystems.as_mut().unwrap();
    mounts.retain(|m| m.mount != "/");
    mounts.push(MountUsage {
        mount: "/small".into(),
        total_bytes: GIB,
        used_bytes: 0,
        avail_bytes: GIB,
        ..Default::default()
    });
    let flat = s.flat_json();
    assert_eq!(flat["disk_total_gb"], json!(500.0));
    assert_eq!(flat["disk_percent"], json!(20.0));
}

#[test]
fn failed_collectors_give_null_in_every_field_never_zero() {
    let mut s = sample();
    s.metrics = Metrics::default();
    let stream = s.stream_json();
    let flat = s.flat_json();
    let count = |v: &Value| v.as_object().unwrap().len();
    assert_eq!(count(&flat), 21);
    assert_eq!(count(&stream["metrics"]), 8);
    let m = &stream["metrics"];
    assert_eq!(count(&m["cpu"]), 6);
    assert_eq!(count(&m["memory"]), 15);
    assert_eq!(count(&m["pressure"]), 20);
    assert_eq!(count(&m["processes"]), 7);
    assert_eq!(count(&m["system"]), 12);
    assert_eq!(count(&m["network"]["tcp"]), 7);
    // Every leaf is null: nothing was measured.
    fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    leaves(v, format!("{path}.{k}"), out);
                }
            }
            other => out.push((path, other.clone())),
        }
    }
    let mut all = Vec::new();
    leaves(m, "metrics".into(), &mut all);
    leaves(&flat, "flat".into(), &mut all);
    for (path, value) in all {
        let identity = [
            "flat.event_id",
            "flat.node_id",
            "flat.machine_id",
            "flat.timestamp",
        ];
        if !identity.contains(&path.as_str()) {
            assert_eq!(value, Value::Null, "{path}");
        }
    }
}

#[test]
fn one_failed_source_nulls_only_its_own_fields() {
    let mut s = sample();
    s.metrics.vmstat = None;
    s.metrics.tcp.listen_drops_per_sec = None;
    let stream = s.stream_json();
    let mem = &stream["metrics"]["memory"];
    assert_eq!(mem["major_faults_per_sec"], Value::Null);
    assert_eq!(mem["memory_total_gb"], json!(16.0));
    assert_eq!(
        stream["metrics"]["network"]["tcp"]["listen_drops_per_sec"],
        Value::Null
    );
    assert_eq!(stream["metrics"]["network"]["tcp"]["in_use"], json!(50));
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

#[test]
fn model_rows_from_before_a_field_existed_still_read_back() {
    // A row as an older daemon wrote it: no depth fields, no collectors.
    let old = json!({
        "timestamp": {"secs_since_epoch": 1_795_428_000u64, "nanos_since_epoch": 0},
        "node_id": "web-1",
        "machine_id": "m",
        "event_id": "019ab0c4-6b00-7000-8000-000000000001",
        "seq": 1,
        "interval_secs": 60,
        "metrics": {"memory": {"total_bytes": 1024, "available_bytes": 512}}
    });
    let mut deflated = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut deflated, old.to_string().as_bytes()).unwrap();
    let s = Snapshot::from_model_bytes(&deflated.finish().unwrap()).unwrap();
    let mem = s.metrics.memory.unwrap();
    assert_eq!(
        (mem.total_bytes, mem.available_bytes, mem.slab_bytes),
        (1024, 512, 0)
    );
    assert!(s.metrics.cpu.is_none() && s.collectors.is_empty());
}

#[test]
fn new_models_carry_a_format_marker_and_beat_bare_deflate() {
    let s = sample();
    let bytes = s.to_model_bytes();
    // 0x07 has deflate block type 3 (reserved), so it never starts a bare
    // raw deflate row of an earlier version.
    assert_eq!(bytes[0], 0x07);
    let json = serde_json::to_vec(&s).unwrap();
    let mut bare = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut bare, &json).unwrap();
    let bare = bare.finish().unwrap();
    assert!(
        bytes.len() < bare.len(),
        "with dictionary {} bytes, bare deflate {}",
        bytes.len(),
        bare.len()
    );
    // The bare form a row written before the marker holds still reads back.
    assert_eq!(Snapshot::from_model_bytes(&bare).unwrap(), s);
    // A marker no version wrote is refused, not guessed at.
    let mut unknown = bytes.clone();
    unknown[0] = 0xff;
    assert!(matches!(
        Snapshot::from_model_bytes(&unknown),
        Err(ModelError::UnknownFormat(0xff))
    ));
    assert!(Snapshot::from_model_bytes(&bytes[..1]).is_err());
}

#[test]
fn dictionary_models_from_another_encoder_read_back() {
    // Written by Python's zlib (level 9, raw deflate, zdict = the frozen
    // dictionary file) after the 0x07 marker: pins the dictionary, since a
    // changed one no longer decodes rows already stored.
    let stored: &[u8] = &[
        0x07, 0xab, 0x26, 0xd4, 0xf5, 0x35, 0x34, 0xb7, 0x34, 0x35, 0x31, 0xb2, 0x30, 0x30, 0x20,
        0xa6, 0x0f, 0x5c, 0x9e, 0x9a, 0xa4, 0x6b, 0x88, 0xde, 0x11, 0xce, 0x45, 0xed, 0x09, 0x1b,
        0x18, 0x5a, 0x26, 0x26, 0x19, 0x24, 0x9b, 0xe8, 0x9a, 0x25, 0x19, 0x18, 0xe8, 0x9a, 0x03,
        0x0d, 0xd6, 0x05, 0x99, 0xae, 0x6b, 0x80, 0x00, 0x86, 0xb0, 0xde, 0xb2, 0x21, 0x46, 0x6f,
        0xd9, 0x0c, 0xb5, 0xbb, 0x8c, 0xa3, 0x07, 0x64, 0x68, 0x60, 0x64, 0x82, 0xa5, 0x13, 0x64,
        0x6a, 0x68, 0x54, 0x5b, 0x5b, 0x0b, 0x00,
    ];
    let s = Snapshot::from_model_bytes(stored).unwrap();
    assert_eq!(
        (s.node_id.as_str(), s.seq, s.interval_secs),
        ("web-1", 1, 60)
    );
    assert_eq!(
        s.event_id.to_string(),
        "019ab0c4-6b00-7000-8000-000000000001"
    );
    let mem = s.metrics.memory.unwrap();
    assert_eq!((mem.total_bytes, mem.available_bytes), (1024, 512));
}
