//! The snapshot model and the views derived from it (SPEC §3): the nested
//! stream form for WebSocket clients and `once`, the flat form for the
//! backend, and the compact model bytes the queue keeps so that the protocol
//! sinks can encode the whole snapshot later.
//!
//! The model holds what was measured: raw cumulative counters where the
//! kernel keeps them (for `/metrics`, remote write and OTLP) next to the
//! rates and percentages derived from two readings (for the JSON forms).
//! Each group of fields is filled by one collector (`crate::collect`); a
//! group whose collector failed in this sample is `None`, and every view
//! shows it as `null` (never a made-up 0). Every model struct is
//! `serde(default)`: a queued row written before a field existed still reads back.

use crate::collect::units::UnitMetrics;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

mod stream_form;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Rounds to 2 decimals, as every float in both forms is. A value that is
/// not finite stays so: serde_json shows it as `null`, never a made-up 0.
pub fn round2(value: f64) -> f64 {
    if !value.is_finite() {
        return value;
    }
    let rounded = (value * 100.0).round() / 100.0;
    // -0.0 (from a tiny negative) prints as "-0.0": say 0.
    if rounded == 0.0 {
        0.0
    } else {
        rounded
    }
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

/// The nine CPU modes of SPEC §3.3. `user` and `nice` exclude guest time
/// (the kernel counts it in both), `guest` is guest + guest_nice, so the
/// nine add up to all the time there is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
#[serde(default)]
pub struct CpuModes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
}

impl CpuModes {
    /// (mode name, value) in the contract's order.
    pub fn named(&self) -> [(&'static str, f64); 9] {
        [
            ("user", self.user),
            ("nice", self.nice),
            ("system", self.system),
            ("idle", self.idle),
            ("iowait", self.iowait),
            ("irq", self.irq),
            ("softirq", self.softirq),
            ("steal", self.steal),
            ("guest", self.guest),
        ]
    }
}

/// From /proc/stat (collector `cpu`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct CpuMetrics {
    /// Busy share of all CPUs since the previous sample (not idle, not
    /// iowait). The shares are `None` without a previous reading.
    pub usage_percent: Option<f64>,
    pub per_core_percent: Option<Vec<f64>>,
    /// The CPU number of each `per_core_percent` entry (`cpuN` in
    /// /proc/stat, which lists online CPUs only): with a CPU offline the
    /// position is not the number. Absent in models stored before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_numbers: Option<Vec<u32>>,
    /// Share of each mode since the previous sample; the nine sum to 100.
    pub modes_percent: Option<CpuModes>,
    /// Cumulative seconds per mode since boot, all CPUs together.
    pub seconds_total: CpuModes,
}

/// Kernel activity counters from /proc/stat (collector `cpu`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ActivityMetrics {
    /// `ctxt`, since boot.
    pub context_switches_total: u64,
    /// `intr` (first field: all interrupts), since boot.
    pub interrupts_total: u64,
    /// `processes`: forks since boot.
    pub forks_total: u64,
    /// Rates since the previous reading; `None` without one.
    pub context_switches_per_sec: Option<f64>,
    pub interrupts_per_sec: Option<f64>,
    pub forks_per_sec: Option<f64>,
    pub procs_running: u64,
    pub procs_blocked: u64,
    /// `btime`: boot time, Unix seconds.
    pub boot_time_unix: u64,
}

/// From /proc/loadavg (collector `load`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
#[serde(default)]
pub struct LoadMetrics {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// From /proc/meminfo (collector `memory`), in bytes.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct MemoryMetrics {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// MemFree
    pub free_bytes: u64,
    pub buffers_bytes: u64,
    pub cached_bytes: u64,
    /// Shmem
    pub shared_bytes: u64,
    pub slab_bytes: u64,
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

/// From /proc/vmstat (collector `memory`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct VmstatMetrics {
    /// pswpin, pswpout, pgmajfault: since boot.
    pub swap_in_pages_total: u64,
    pub swap_out_pages_total: u64,
    pub major_faults_total: u64,
    /// Rates since the previous reading; `None` without one.
    pub swap_in_pages_per_sec: Option<f64>,
    pub swap_out_pages_per_sec: Option<f64>,
    pub major_faults_per_sec: Option<f64>,
}

/// One line of a /proc/pressure file.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
#[serde(default)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time, microseconds.
    pub total_us: u64,
    /// Δtotal in ms per second of wall time since the previous sample,
    /// 0..1000; `None` without a previous reading of this line.
    pub stall_ms_per_sec: Option<f64>,
}

/// From /proc/pressure (collector `pressure`). A line the kernel does not
/// give (no `full` line for cpu before 5.13) is `None`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct PressureMetrics {
    pub cpu_some: Option<PsiLine>,
    pub cpu_full: Option<PsiLine>,
    pub memory_some: Option<PsiLine>,
    pub memory_full: Option<PsiLine>,
    pub io_some: Option<PsiLine>,
    pub io_full: Option<PsiLine>,
}

impl PressureMetrics {
    /// (resource, kind, line) for every line, in a fixed order.
    pub fn lines(&self) -> [(&'static str, &'static str, Option<&PsiLine>); 6] {
        [
            ("cpu", "some", self.cpu_some.as_ref()),
            ("cpu", "full", self.cpu_full.as_ref()),
            ("memory", "some", self.memory_some.as_ref()),
            ("memory", "full", self.memory_full.as_ref()),
            ("io", "some", self.io_some.as_ref()),
            ("io", "full", self.io_full.as_ref()),
        ]
    }
}

/// One mounted filesystem, from statvfs (collector `filesystem`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct MountUsage {
    pub mount: String,
    /// As /proc/self/mountinfo names them.
    pub fs_type: String,
    pub device: String,
    /// f_blocks * f_frsize
    pub total_bytes: u64,
    /// (f_blocks - f_bfree) * f_frsize
    pub used_bytes: u64,
    /// f_bavail * f_frsize (what df calls Avail)
    pub avail_bytes: u64,
    /// f_files (0 on filesystems without a fixed inode table)
    pub inodes_total: u64,
    /// f_ffree
    pub inodes_free: u64,
}

impl MountUsage {
    /// used / (used + avail), as df computes Use%.
    pub fn usage_percent(&self) -> f64 {
        percent(
            self.used_bytes as f64,
            self.used_bytes.saturating_add(self.avail_bytes) as f64,
        )
    }
    /// f_files − f_ffree
    pub fn inodes_used(&self) -> u64 {
        self.inodes_total.saturating_sub(self.inodes_free)
    }
    /// None when the filesystem reports no inode count (btrfs, some FUSE).
    pub fn inodes_usage_percent(&self) -> Option<f64> {
        (self.inodes_total > 0)
            .then(|| percent(self.inodes_used() as f64, self.inodes_total as f64))
    }
}

/// The filesystem the flat form describes: `/`, else the largest one.
pub fn primary_mount(mounts: &[MountUsage]) -> Option<&MountUsage> {
    mounts
        .iter()
        .find(|m| m.mount == "/")
        .or_else(|| mounts.iter().max_by_key(|m| m.total_bytes))
}

/// One whole block device from /proc/diskstats (collector `disk`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct DeviceMetrics {
    pub name: String,
    /// Cumulative since boot (or since the device appeared).
    pub reads_total: u64,
    pub writes_total: u64,
    pub read_bytes_total: u64,
    pub written_bytes_total: u64,
    pub read_time_ms_total: u64,
    pub write_time_ms_total: u64,
    pub io_time_ms_total: u64,
    /// I/Os currently in progress.
    pub in_flight: u64,
    /// Since the previous sample (0 for a device seen for the first time).
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    pub util_percent: f64,
    pub read_await_ms: f64,
    pub write_await_ms: f64,
}

/// Collector `disk`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct DiskIoMetrics {
    /// Summed over `devices`.
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub devices: Vec<DeviceMetrics>,
}

/// One interface from /proc/net/dev and /sys/class/net (collector `network`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
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
    /// /sys/class/net/<if>/operstate ("up", "down", ...); None when unreadable.
    pub oper_state: Option<String>,
}

/// Collector `network`: only the interfaces that are not excluded.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct NetworkMetrics {
    pub interfaces: Vec<InterfaceMetrics>,
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
    // fold from 0.0: an empty f64 sum() is -0.0, which JSON would show.
    pub fn rx_bytes_per_sec(&self) -> f64 {
        self.interfaces
            .iter()
            .fold(0.0, |a, i| a + i.rx_bytes_per_sec)
    }
    pub fn tx_bytes_per_sec(&self) -> f64 {
        self.interfaces
            .iter()
            .fold(0.0, |a, i| a + i.tx_bytes_per_sec)
    }
}

/// Collector `tcp`. Three sources, each of which may fail on its own:
/// /proc/net/snmp (connections, retransmits, resets), /proc/net/netstat
/// (listen queue) and /proc/net/sockstat(6) (sockets by state).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct TcpMetrics {
    /// CurrEstab: ESTABLISHED + CLOSE-WAIT, IPv4 and IPv6.
    pub curr_estab: Option<u64>,
    pub retrans_segs_total: Option<u64>,
    pub resets_sent_total: Option<u64>,
    pub retrans_segs_per_sec: Option<f64>,
    pub resets_sent_per_sec: Option<f64>,
    pub listen_overflows_total: Option<u64>,
    pub listen_drops_total: Option<u64>,
    pub listen_overflows_per_sec: Option<f64>,
    pub listen_drops_per_sec: Option<f64>,
    /// sockstat TCP inuse + sockstat6 TCP6 inuse.
    pub in_use: Option<u64>,
    pub time_wait: Option<u64>,
    pub orphan: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct TopProcess {
    pub pid: u32,
    pub name: String,
    pub memory_bytes: u64,
    /// Of MemTotal; None when memory could not be read this sample.
    pub memory_percent: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct TopCpuProcess {
    pub pid: u32,
    pub name: String,
    /// Since the previous sample; 100 = one core.
    pub cpu_percent: f64,
}

/// The per-process scan (collector `processes`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ProcessMetrics {
    /// Processes, not threads.
    pub count: u64,
    /// Tasks of all processes; None when they cannot be counted (pids
    /// hidden by hidepid, or with the scan off inside a pid namespace,
    /// where the kernel's task count covers the whole host).
    pub threads: Option<u64>,
    /// Processes in state Z; None when the per-process scan is off
    /// (`top_processes = 0`).
    pub zombies: Option<u64>,
    pub top_memory: Vec<TopProcess>,
    pub top_cpu: Vec<TopCpuProcess>,
}

/// Collector `system`; each field has its own source, so each may be None.
/// `boot_time_unix` lives in `ActivityMetrics` (it comes from /proc/stat).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct SystemMetrics {
    pub uptime_seconds: Option<u64>,
    pub boot_id: Option<String>,
    pub file_descriptors_allocated: Option<u64>,
    pub file_descriptors_max: Option<u64>,
    pub clock_synced: Option<bool>,
    pub clock_max_error_ms: Option<f64>,
    pub kernel: Option<String>,
    pub os: Option<String>,
}

/// Everything the collectors measured in one sample. `None`: the collector
/// of that group failed (or the host has no such source) in this sample.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Metrics {
    pub cpu: Option<CpuMetrics>,
    pub activity: Option<ActivityMetrics>,
    pub load: Option<LoadMetrics>,
    pub memory: Option<MemoryMetrics>,
    pub vmstat: Option<VmstatMetrics>,
    pub pressure: Option<PressureMetrics>,
    pub filesystems: Option<Vec<MountUsage>>,
    pub disk_io: Option<DiskIoMetrics>,
    pub network: Option<NetworkMetrics>,
    pub tcp: TcpMetrics,
    pub processes: Option<ProcessMetrics>,
    pub system: SystemMetrics,
    /// cgroup v2 per systemd unit; `Some(empty)` without cgroup v2.
    pub units: Option<BTreeMap<String, UnitMetrics>>,
}

/// How one collector did in one sample (for `metricsd_collector_*`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CollectorRun {
    pub name: Cow<'static, str>,
    pub duration: Duration,
    /// The latest sample's result.
    pub ok: bool,
    /// Failed samples since the daemon started.
    pub failures_total: u64,
}

/// One sample: the metrics plus who and when.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub timestamp: SystemTime,
    pub node_id: String,
    pub machine_id: String,
    pub event_id: Uuid,
    pub seq: u64,
    pub interval_secs: u64,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub collectors: Vec<CollectorRun>,
}

/// A `Snapshot` model read without its `collectors` (skipped unparsed).
#[derive(Deserialize)]
struct HostModel {
    timestamp: SystemTime,
    node_id: String,
    machine_id: String,
    event_id: Uuid,
    seq: u64,
    interval_secs: u64,
    #[serde(default)]
    metrics: Metrics,
}

/// The JSON of model bytes: a `DICTIONARY_FORMAT` model, or the bare raw
/// deflate of earlier versions.
fn model_json(bytes: &[u8]) -> Result<Vec<u8>, ModelError> {
    match bytes.split_first() {
        Some((&DICTIONARY_FORMAT, body)) => inflate_with_dictionary(body),
        Some((&first, _)) if !starts_raw_deflate(first) => Err(ModelError::UnknownFormat(first)),
        _ => {
            let mut json = Vec::with_capacity(bytes.len() * 4);
            flate2::read::DeflateDecoder::new(bytes)
                .take(MAX_MODEL_JSON)
                .read_to_end(&mut json)?;
            Ok(json)
        }
    }
}

/// Model bytes that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("snapshot model is not valid deflate data: {0}")]
    Inflate(#[from] std::io::Error),
    #[error("snapshot model has unknown format marker {0:#04x}")]
    UnknownFormat(u8),
    #[error("snapshot model does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The first byte of a model written with `MODEL_DICTIONARY`. Older models
/// are bare raw deflate, whose first byte never has both block-type bits
/// (1 and 2) set, as that block type is reserved: this byte is one of those.
const DICTIONARY_FORMAT: u8 = 0x07;

/// The preset deflate dictionary: the model's JSON shape with neutral
/// values, so that key names cost a back-reference instead of literals.
/// Frozen: rows written with `DICTIONARY_FORMAT` only read back with these
/// exact bytes, so a changed model gets a new file and a new marker.
const MODEL_DICTIONARY: &[u8] = include_bytes!("snapshot/model_dictionary.json");

/// Whether `byte` can start a raw deflate stream (block type is not 3).
fn starts_raw_deflate(byte: u8) -> bool {
    byte & 0b110 != 0b110
}

/// `DICTIONARY_FORMAT` followed by the raw deflate of `input` against
/// `MODEL_DICTIONARY`.
///
/// The deflate state (~380 KiB with zlib-rs) lives only for this call: kept
/// between snapshots it would stay resident for the daemon's whole life to
/// save a fraction of a millisecond once per interval.
fn deflate(input: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    c.set_dictionary(MODEL_DICTIONARY)
        .expect("dictionary on a fresh deflate stream");
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    out.push(DICTIONARY_FORMAT);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flate2::FlushCompress::Finish)
            .expect("deflate into a Vec");
        if status == flate2::Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(256));
    }
}

/// Inflates a `DICTIONARY_FORMAT` body (the bytes after the marker), refusing
/// output beyond `MAX_MODEL_JSON`.
fn inflate_with_dictionary(input: &[u8]) -> Result<Vec<u8>, ModelError> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut d = flate2::Decompress::new(false);
    d.set_dictionary(MODEL_DICTIONARY)
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(input.len() * 6);
    loop {
        let consumed = d.total_in() as usize;
        let status = d
            .decompress_vec(
                &input[consumed..],
                &mut out,
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| bad(e.to_string()))?;
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        if out.len() < out.capacity() {
            // Room left but no end: the input ran out.
            return Err(bad("deflate stream ends early".into()).into());
        }
        if out.len() as u64 >= MAX_MODEL_JSON {
            return Err(bad(format!("model inflates past {MAX_MODEL_JSON} bytes")).into());
        }
        out.reserve(out.capacity().max(256));
    }
}

/// Model bytes larger than this are refused when decoding (a bound on the
/// memory one corrupt row can take).
const MAX_MODEL_JSON: u64 = 16 * 1024 * 1024;

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

    /// The compact model form the queue keeps: a format byte, then JSON
    /// deflated against a preset dictionary.
    pub fn to_model_bytes(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        let json = serde_json::to_vec(self).expect("snapshot model serialises");
        deflate(&json)
    }

    /// Reads back what `to_model_bytes` wrote, and the bare raw deflate
    /// models of earlier versions.
    pub fn from_model_bytes(bytes: &[u8]) -> Result<Snapshot, ModelError> {
        Ok(serde_json::from_slice(&model_json(bytes)?)?)
    }

    /// As `from_model_bytes`, without the collector runs (`collectors` is
    /// empty): what the protocol sinks read. Those runs are the daemon's
    /// own figures, not host series, and a fifth of the model's JSON with
    /// the dearest part of it to read.
    pub fn from_model_bytes_for_export(bytes: &[u8]) -> Result<Snapshot, ModelError> {
        let host: HostModel = serde_json::from_slice(&model_json(bytes)?)?;
        Ok(Snapshot {
            timestamp: host.timestamp,
            node_id: host.node_id,
            machine_id: host.machine_id,
            event_id: host.event_id,
            seq: host.seq,
            interval_secs: host.interval_secs,
            metrics: host.metrics,
            collectors: Vec::new(),
        })
    }

    /// The nested stream form (SPEC §3.1 and §3.3) as JSON text: what the
    /// clients, the page and the history receive.
    pub fn stream_json_text(&self) -> String {
        stream_form::write(self)
    }

    /// The nested stream form (SPEC §3.1 and §3.3) as a JSON value.
    pub fn stream_json(&self) -> Value {
        serde_json::from_str(&self.stream_json_text()).expect("the stream form is JSON")
    }

    /// The flat backend form (SPEC §3.2); a figure whose collector failed is null.
    pub fn flat_json(&self) -> Value {
        let m = &self.metrics;
        let mem = m.memory.as_ref();
        let primary = m.filesystems.as_deref().and_then(primary_mount);
        let net = m.network.as_ref();
        let load = m.load.as_ref();
        json!({
            "event_id": self.event_id.to_string(),
            "node_id": self.node_id,
            "machine_id": self.machine_id,
            "timestamp": self.timestamp_string(),
            "cpu_percent": m.cpu.as_ref().and_then(|c| c.usage_percent).map(round2),
            "memory_percent": mem.map(|mem| percent(mem.used_bytes() as f64, mem.total_bytes as f64)),
            "memory_used_mb": mem.map(|mem| mem.used_bytes() / (1024 * 1024)),
            "memory_total_mb": mem.map(|mem| mem.total_bytes / (1024 * 1024)),
            "disk_percent": primary.map(|d| d.usage_percent()),
            "disk_used_gb": primary.map(|d| gib(d.used_bytes)),
            "disk_total_gb": primary.map(|d| gib(d.total_bytes)),
            "network_rx_bytes": net.map(|n| n.rx_bytes()),
            "network_tx_bytes": net.map(|n| n.tx_bytes()),
            "network_rx_rate_mbps": net.map(|n| megabits_per_sec(n.rx_bytes_per_sec())),
            "network_tx_rate_mbps": net.map(|n| megabits_per_sec(n.tx_bytes_per_sec())),
            "uptime_seconds": m.system.uptime_seconds,
            "process_count": m.processes.as_ref().map(|p| p.count),
            "active_connections": m.tcp.curr_estab,
            "load_avg_1m": load.map(|l| round2(l.load1)),
            "load_avg_5m": load.map(|l| round2(l.load5)),
            "load_avg_15m": load.map(|l| round2(l.load15)),
        })
    }
}
