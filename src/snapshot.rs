//! The `Snapshot` type and its two JSON forms (SPEC §3): the nested stream
//! form for WebSocket clients and `once`, and the flat form for the backend.

use serde_json::{json, Map, Value};
use std::time::SystemTime;
use uuid::Uuid;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Rounds to 2 decimals, as every float in both forms is.
pub fn round2(value: f64) -> f64 {
    if !value.is_finite() {
        return 0.0;
    }
    (value * 100.0).round() / 100.0
}

/// `part / whole` as a percentage with 2 decimals; 0 when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        0.0
    } else {
        round2(part / whole * 100.0)
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-23T10:00:00.000Z`.
pub fn format_timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuMetrics {
    pub usage_percent: f64,
    pub per_core_percent: Vec<f64>,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryMetrics {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

impl MemoryMetrics {
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
    pub fn swap_used_bytes(&self) -> u64 {
        self.swap_total_bytes.saturating_sub(self.swap_free_bytes)
    }
}

/// One mounted filesystem, from statvfs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountUsage {
    pub mount: String,
    /// f_blocks * f_frsize
    pub total_bytes: u64,
    /// (f_blocks - f_bfree) * f_frsize
    pub used_bytes: u64,
    /// f_bavail * f_frsize (what df calls Avail)
    pub avail_bytes: u64,
}

impl MountUsage {
    /// used / (used + avail), as df computes Use%.
    pub fn usage_percent(&self) -> f64 {
        percent(
            self.used_bytes as f64,
            (self.used_bytes + self.avail_bytes) as f64,
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskMetrics {
    pub mounts: Vec<MountUsage>,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
}

impl DiskMetrics {
    /// The filesystem the flat form describes: `/`, else the largest included one.
    pub fn primary(&self) -> Option<&MountUsage> {
        self.mounts
            .iter()
            .find(|m| m.mount == "/")
            .or_else(|| self.mounts.iter().max_by_key(|m| m.total_bytes))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceMetrics {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes_per_sec: f64,
    pub tx_bytes_per_sec: f64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkMetrics {
    /// Only the interfaces that are not excluded.
    pub interfaces: Vec<InterfaceMetrics>,
    /// CurrEstab from /proc/net/snmp.
    pub active_connections: u64,
}

impl NetworkMetrics {
    pub fn rx_bytes(&self) -> u64 {
        self.interfaces.iter().map(|i| i.rx_bytes).sum()
    }
    pub fn tx_bytes(&self) -> u64 {
        self.interfaces.iter().map(|i| i.tx_bytes).sum()
    }
    pub fn rx_packets(&self) -> u64 {
        self.interfaces.iter().map(|i| i.rx_packets).sum()
    }
    pub fn tx_packets(&self) -> u64 {
        self.interfaces.iter().map(|i| i.tx_packets).sum()
    }
    pub fn rx_bytes_per_sec(&self) -> f64 {
        self.interfaces.iter().map(|i| i.rx_bytes_per_sec).sum()
    }
    pub fn tx_bytes_per_sec(&self) -> f64 {
        self.interfaces.iter().map(|i| i.tx_bytes_per_sec).sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopProcess {
    pub pid: u32,
    pub name: String,
    pub memory_percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessMetrics {
    pub count: u64,
    pub running: u64,
    pub blocked: u64,
    pub top_memory: Vec<TopProcess>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemMetrics {
    pub uptime_seconds: u64,
    pub boot_id: String,
}

/// Everything the collectors measure in one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub cpu: CpuMetrics,
    pub memory: MemoryMetrics,
    pub disk: DiskMetrics,
    pub network: NetworkMetrics,
    pub processes: ProcessMetrics,
    pub system: SystemMetrics,
}

/// One sample: the metrics plus who and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub timestamp: SystemTime,
    pub node_id: String,
    pub machine_id: String,
    pub event_id: Uuid,
    pub seq: u64,
    pub interval_secs: u64,
    pub metrics: Metrics,
}

fn gib(bytes: u64) -> f64 {
    round2(bytes as f64 / GIB)
}

fn mib_per_sec(bytes_per_sec: f64) -> f64 {
    round2(bytes_per_sec / MIB)
}

fn megabits_per_sec(bytes_per_sec: f64) -> f64 {
    round2(bytes_per_sec * 8.0 / 1_000_000.0)
}

impl Snapshot {
    pub fn timestamp_string(&self) -> String {
        format_timestamp(self.timestamp)
    }

    /// The nested stream form (SPEC §3.1).
    pub fn stream_json(&self) -> Value {
        let m = &self.metrics;
        let mut disk_usage = Map::new();
        for mount in &m.disk.mounts {
            disk_usage.insert(
                mount.mount.clone(),
                json!({
                    "total_gb": gib(mount.total_bytes),
                    "used_gb": gib(mount.used_bytes),
                    "free_gb": gib(mount.avail_bytes),
                    "usage_percent": mount.usage_percent(),
                }),
            );
        }
        let mut interfaces = Map::new();
        for i in &m.network.interfaces {
            interfaces.insert(
                i.name.clone(),
                json!({
                    "rx_bytes": i.rx_bytes,
                    "tx_bytes": i.tx_bytes,
                    "rx_bytes_per_sec": round2(i.rx_bytes_per_sec),
                    "tx_bytes_per_sec": round2(i.tx_bytes_per_sec),
                    "rx_errors": i.rx_errors,
                    "tx_errors": i.tx_errors,
                    "rx_dropped": i.rx_dropped,
                    "tx_dropped": i.tx_dropped,
                }),
            );
        }
        let top: Vec<Value> = m
            .processes
            .top_memory
            .iter()
            .map(|p| json!({"pid": p.pid, "name": p.name, "memory_percent": round2(p.memory_percent)}))
            .collect();
        let mem = &m.memory;
        json!({
            "type": "snapshot",
            "timestamp": self.timestamp_string(),
            "node_id": self.node_id,
            "machine_id": self.machine_id,
            "event_id": self.event_id.to_string(),
            "seq": self.seq,
            "interval": self.interval_secs,
            "metrics": {
                "cpu": {
                    "cpu_usage_percent": round2(m.cpu.usage_percent),
                    "cpu_per_core_percent": m.cpu.per_core_percent.iter().map(|v| round2(*v)).collect::<Vec<_>>(),
                    "load_avg_1min": round2(m.cpu.load1),
                    "load_avg_5min": round2(m.cpu.load5),
                    "load_avg_15min": round2(m.cpu.load15),
                },
                "memory": {
                    "memory_total_gb": gib(mem.total_bytes),
                    "memory_used_gb": gib(mem.used_bytes()),
                    "memory_available_gb": gib(mem.available_bytes),
                    "memory_usage_percent": percent(mem.used_bytes() as f64, mem.total_bytes as f64),
                    "swap_total_gb": gib(mem.swap_total_bytes),
                    "swap_used_gb": gib(mem.swap_used_bytes()),
                    "swap_usage_percent": percent(mem.swap_used_bytes() as f64, mem.swap_total_bytes as f64),
                },
                "disk": {
                    "disk_usage": disk_usage,
                    "disk_io": {
                        "read_mb_per_sec": mib_per_sec(m.disk.read_bytes_per_sec),
                        "write_mb_per_sec": mib_per_sec(m.disk.write_bytes_per_sec),
                    },
                },
                "network": {
                    "bytes_sent_mb_per_sec": mib_per_sec(m.network.tx_bytes_per_sec()),
                    "bytes_recv_mb_per_sec": mib_per_sec(m.network.rx_bytes_per_sec()),
                    "packets_sent": m.network.tx_packets(),
                    "packets_recv": m.network.rx_packets(),
                    "active_connections": m.network.active_connections,
                    "interfaces": interfaces,
                },
                "processes": {
                    "process_count": m.processes.count,
                    "running": m.processes.running,
                    "blocked": m.processes.blocked,
                    "top_memory_processes": top,
                },
                "system": {
                    "uptime_seconds": m.system.uptime_seconds,
                    "boot_id": m.system.boot_id,
                },
            },
        })
    }

    /// The flat backend form (SPEC §3.2).
    pub fn flat_json(&self) -> Value {
        let m = &self.metrics;
        let mem = &m.memory;
        let (disk_percent, disk_used_gb, disk_total_gb) = match m.disk.primary() {
            Some(d) => (d.usage_percent(), gib(d.used_bytes), gib(d.total_bytes)),
            None => (0.0, 0.0, 0.0),
        };
        json!({
            "event_id": self.event_id.to_string(),
            "node_id": self.node_id,
            "machine_id": self.machine_id,
            "timestamp": self.timestamp_string(),
            "cpu_percent": round2(m.cpu.usage_percent),
            "memory_percent": percent(mem.used_bytes() as f64, mem.total_bytes as f64),
            "memory_used_mb": mem.used_bytes() / (1024 * 1024),
            "memory_total_mb": mem.total_bytes / (1024 * 1024),
            "disk_percent": disk_percent,
            "disk_used_gb": disk_used_gb,
            "disk_total_gb": disk_total_gb,
            "network_rx_bytes": m.network.rx_bytes(),
            "network_tx_bytes": m.network.tx_bytes(),
            "network_rx_rate_mbps": megabits_per_sec(m.network.rx_bytes_per_sec()),
            "network_tx_rate_mbps": megabits_per_sec(m.network.tx_bytes_per_sec()),
            "uptime_seconds": m.system.uptime_seconds,
            "process_count": m.processes.count,
            "active_connections": m.network.active_connections,
            "load_avg_1m": round2(m.cpu.load1),
            "load_avg_5m": round2(m.cpu.load5),
            "load_avg_15m": round2(m.cpu.load15),
        })
    }
}
