//! `GET /metrics` (SPEC §4.5): Prometheus text exposition 0.0.4 of the
//! latest snapshot (`host_*`) and of the daemon itself (`metricsd_*`).

use crate::snapshot::Snapshot;
use crate::status::Status;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// A sample value: integers stay exact (counters can exceed 2^53).
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

/// Builds the exposition text one metric family at a time.
struct Exposition {
    out: String,
}

impl Exposition {
    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(
            name,
            kind,
            help,
            [(Vec::<(&str, &str)>::new(), value.into())],
        );
    }

    /// A family with one unlabelled sample, left out when the value is
    /// missing (its collector failed in this sample).
    fn maybe<V: Into<Value>>(&mut self, name: &str, kind: Kind, help: &str, value: Option<V>) {
        if let Some(value) = value {
            self.single(name, kind, help, value);
        }
    }

    /// A family whose samples are told apart by labels; skipped when empty.
    fn family<'a, L>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl IntoIterator<Item = (L, Value)>,
    ) where
        L: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            let mut first = true;
            for (label, label_value) in labels {
                self.out.push(if first { '{' } else { ',' });
                first = false;
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(label_value));
            }
            if !first {
                self.out.push('}');
            }
            self.out.push(' ');
            format_value(&mut self.out, value);
            self.out.push('\n');
        }
    }
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and newline.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(out: &mut String, value: Value) {
    let _ = match value {
        Value::Int(v) => write!(out, "{v}"),
        Value::Float(v) if v.is_nan() => write!(out, "NaN"),
        Value::Float(v) if v.is_infinite() => {
            write!(out, "{}", if v > 0.0 { "+Inf" } else { "-Inf" })
        }
        Value::Float(v) => write!(out, "{v}"),
    };
}

/// Renders the exposition: host metrics when a snapshot exists, daemon metrics always.
pub fn render(snapshot: Option<&Snapshot>, status: &Status) -> String {
    let mut e = Exposition {
        out: String::with_capacity(8 * 1024),
    };
    if let Some(s) = snapshot {
        host_metrics(&mut e, s);
    }
    daemon_metrics(&mut e, status);
    e.out
}

/// Reads one per-interface figure.
type InterfaceValue = fn(&crate::snapshot::InterfaceMetrics) -> Value;

fn host_metrics(e: &mut Exposition, s: &Snapshot) {
    use Kind::{Counter, Gauge};
    let m = &s.metrics;
    let cpu = m.cpu.as_ref();
    e.maybe(
        "host_cpu_usage_percent",
        Gauge,
        "CPU busy time since the previous sample, 0-100.",
        cpu.map(|c| c.usage_percent),
    );
    let per_core: &[f64] = cpu.map_or(&[], |c| &c.per_core_percent);
    let cores: Vec<String> = (0..per_core.len()).map(|i| i.to_string()).collect();
    e.family(
        "host_cpu_core_usage_percent",
        Gauge,
        "Per-core busy time since the previous sample, 0-100.",
        cores
            .iter()
            .zip(per_core)
            .map(|(core, v)| ([("core", core.as_str())], Value::Float(*v))),
    );
    let load = m.load.as_ref();
    e.maybe(
        "host_load1",
        Gauge,
        "1-minute load average.",
        load.map(|l| l.load1),
    );
    e.maybe(
        "host_load5",
        Gauge,
        "5-minute load average.",
        load.map(|l| l.load5),
    );
    e.maybe(
        "host_load15",
        Gauge,
        "15-minute load average.",
        load.map(|l| l.load15),
    );

    let mem = m.memory.as_ref();
    e.maybe(
        "host_memory_total_bytes",
        Gauge,
        "MemTotal.",
        mem.map(|m| m.total_bytes),
    );
    e.maybe(
        "host_memory_used_bytes",
        Gauge,
        "MemTotal - MemAvailable.",
        mem.map(|m| m.used_bytes()),
    );
    e.maybe(
        "host_memory_available_bytes",
        Gauge,
        "MemAvailable.",
        mem.map(|m| m.available_bytes),
    );
    e.maybe(
        "host_swap_total_bytes",
        Gauge,
        "SwapTotal.",
        mem.map(|m| m.swap_total_bytes),
    );
    e.maybe(
        "host_swap_used_bytes",
        Gauge,
        "SwapTotal - SwapFree.",
        mem.map(|m| m.swap_used_bytes()),
    );
    e.maybe(
        "host_swap_free_bytes",
        Gauge,
        "SwapFree.",
        mem.map(|m| m.swap_free_bytes),
    );

    let mounts: &[crate::snapshot::MountUsage] = m.filesystems.as_deref().unwrap_or(&[]);
    let by_mount = |f: fn(&crate::snapshot::MountUsage) -> u64| {
        mounts
            .iter()
            .map(move |u| ([("mount", u.mount.as_str())], Value::Int(f(u))))
    };
    e.family(
        "host_filesystem_size_bytes",
        Gauge,
        "Filesystem size (statvfs f_blocks).",
        by_mount(|u| u.total_bytes),
    );
    e.family(
        "host_filesystem_used_bytes",
        Gauge,
        "Filesystem space used (f_blocks - f_bfree).",
        by_mount(|u| u.used_bytes),
    );
    e.family(
        "host_filesystem_avail_bytes",
        Gauge,
        "Filesystem space available to unprivileged users (f_bavail).",
        by_mount(|u| u.avail_bytes),
    );
    let io = m.disk_io.as_ref();
    e.maybe(
        "host_disk_read_bytes_per_second",
        Gauge,
        "Bytes read from whole block devices per second since the previous sample.",
        io.map(|d| d.read_bytes_per_sec),
    );
    e.maybe(
        "host_disk_write_bytes_per_second",
        Gauge,
        "Bytes written to whole block devices per second since the previous sample.",
        io.map(|d| d.write_bytes_per_sec),
    );

    let ifaces: &[crate::snapshot::InterfaceMetrics] =
        m.network.as_ref().map_or(&[], |n| &n.interfaces);
    let by_iface = |f: fn(&crate::snapshot::InterfaceMetrics) -> Value| {
        ifaces
            .iter()
            .map(move |i| ([("interface", i.name.as_str())], f(i)))
    };
    let network: [(&str, Kind, &str, InterfaceValue); 10] = [
        (
            "host_network_receive_bytes_total",
            Counter,
            "Bytes received since boot.",
            |i| Value::Int(i.rx_bytes),
        ),
        (
            "host_network_transmit_bytes_total",
            Counter,
            "Bytes sent since boot.",
            |i| Value::Int(i.tx_bytes),
        ),
        (
            "host_network_receive_packets_total",
            Counter,
            "Packets received since boot.",
            |i| Value::Int(i.rx_packets),
        ),
        (
            "host_network_transmit_packets_total",
            Counter,
            "Packets sent since boot.",
            |i| Value::Int(i.tx_packets),
        ),
        (
            "host_network_receive_errors_total",
            Counter,
            "Receive errors since boot.",
            |i| Value::Int(i.rx_errors),
        ),
        (
            "host_network_transmit_errors_total",
            Counter,
            "Transmit errors since boot.",
            |i| Value::Int(i.tx_errors),
        ),
        (
            "host_network_receive_drop_total",
            Counter,
            "Received packets dropped since boot.",
            |i| Value::Int(i.rx_dropped),
        ),
        (
            "host_network_transmit_drop_total",
            Counter,
            "Transmitted packets dropped since boot.",
            |i| Value::Int(i.tx_dropped),
        ),
        (
            "host_network_receive_bytes_per_second",
            Gauge,
            "Bytes received per second since the previous sample.",
            |i| Value::Float(i.rx_bytes_per_sec),
        ),
        (
            "host_network_transmit_bytes_per_second",
            Gauge,
            "Bytes sent per second since the previous sample.",
            |i| Value::Float(i.tx_bytes_per_sec),
        ),
    ];
    for (name, kind, help, f) in network {
        e.family(name, kind, help, by_iface(f));
    }
    e.maybe(
        "host_tcp_active_connections",
        Gauge,
        "TCP connections in ESTABLISHED or CLOSE-WAIT (CurrEstab).",
        m.tcp.curr_estab,
    );

    e.maybe(
        "host_processes",
        Gauge,
        "Processes.",
        m.processes.as_ref().map(|p| p.count),
    );
    let activity = m.activity.as_ref();
    e.maybe(
        "host_processes_running",
        Gauge,
        "Runnable processes.",
        activity.map(|a| a.procs_running),
    );
    e.maybe(
        "host_processes_blocked",
        Gauge,
        "Processes blocked on I/O.",
        activity.map(|a| a.procs_blocked),
    );
    e.maybe(
        "host_uptime_seconds",
        Gauge,
        "Seconds since boot.",
        m.system.uptime_seconds,
    );
    let sampled_at = s
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    e.single(
        "metricsd_last_sample_timestamp_seconds",
        Gauge,
        "Wall-clock time of the snapshot these host metrics come from (Unix seconds).",
        sampled_at,
    );
    e.single(
        "metricsd_last_sample_seq",
        Gauge,
        "Sequence number of the snapshot these host metrics come from.",
        s.seq,
    );
}

fn daemon_metrics(e: &mut Exposition, st: &Status) {
    use Kind::{Counter, Gauge};
    e.single("metricsd_up", Gauge, "1 while the daemon runs.", 1u64);
    e.single(
        "metricsd_uptime_seconds",
        Gauge,
        "Seconds since the daemon started.",
        st.started.elapsed().as_secs_f64(),
    );
    e.single(
        "metricsd_samples_total",
        Counter,
        "Samples taken since start.",
        st.samples_total.load(Relaxed),
    );
    e.single(
        "metricsd_sample_duration_seconds",
        Gauge,
        "How long the last sample took.",
        st.last_sample_duration_us.load(Relaxed) as f64 / 1e6,
    );
    e.single(
        "metricsd_queue_pending",
        Gauge,
        "Rows waiting to be posted.",
        st.queue_pending.load(Relaxed),
    );
    e.single(
        "metricsd_queue_dead",
        Gauge,
        "Rows the backend rejected too often (queue peek --dead).",
        st.queue_dead.load(Relaxed),
    );
    e.single(
        "metricsd_queue_dropped_total",
        Counter,
        "Oldest pending rows dropped because the queue was full (kept across restarts).",
        st.queue_dropped_total.load(Relaxed),
    );
    e.single(
        "metricsd_queue_insert_failures_total",
        Counter,
        "Snapshots that could not be queued since start.",
        st.queue_insert_failures_total.load(Relaxed),
    );
    e.single(
        "metricsd_delivered_total",
        Counter,
        "Rows delivered to the backend (kept across restarts).",
        st.delivered_total.load(Relaxed),
    );
    e.single(
        "metricsd_post_failures_total",
        Counter,
        "Failed posts to the backend since start.",
        st.post_failures_total.load(Relaxed),
    );
    e.single(
        "metricsd_backend_failing",
        Gauge,
        "1 while posting to the backend fails, else 0.",
        u64::from(st.backend_state() == crate::status::BackendState::Failing),
    );
    e.single(
        "metricsd_stream_clients",
        Gauge,
        "Connected WebSocket clients.",
        st.stream_clients.load(Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{
        CpuMetrics, InterfaceMetrics, MemoryMetrics, Metrics, MountUsage, NetworkMetrics,
    };
    use std::time::SystemTime;

    fn snapshot() -> Snapshot {
        let metrics = Metrics {
            cpu: Some(CpuMetrics {
                per_core_percent: vec![1.5, 99.0],
                ..Default::default()
            }),
            memory: Some(MemoryMetrics::default()),
            filesystems: Some(vec![MountUsage {
                mount: "/mnt/a \"q\"\\b\nc".into(),
                total_bytes: 10,
                used_bytes: 4,
                avail_bytes: 6,
                ..Default::default()
            }]),
            network: Some(NetworkMetrics {
                interfaces: vec![InterfaceMetrics {
                    name: "eth0".into(),
                    rx_bytes: u64::MAX,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        Snapshot {
            timestamp: SystemTime::now(),
            node_id: "n".into(),
            machine_id: "m".into(),
            event_id: uuid::Uuid::nil(),
            seq: 3,
            interval_secs: 60,
            metrics,
            collectors: Vec::new(),
        }
    }

    #[test]
    fn labels_are_escaped_and_counters_exact() {
        let text = render(Some(&snapshot()), &Status::default());
        assert!(
            text.contains("host_filesystem_used_bytes{mount=\"/mnt/a \\\"q\\\"\\\\b\\nc\"} 4\n")
        );
        assert!(text.contains(&format!(
            "host_network_receive_bytes_total{{interface=\"eth0\"}} {}\n",
            u64::MAX
        )));
        assert!(text.contains("host_cpu_core_usage_percent{core=\"1\"} 99\n"));
        assert!(text.contains("# TYPE metricsd_delivered_total counter\n"));
        assert!(text.contains("# TYPE host_memory_used_bytes gauge\n"));
    }

    #[test]
    fn without_a_snapshot_only_daemon_metrics() {
        let text = render(None, &Status::default());
        assert!(!text.contains("host_"));
        assert!(text.contains("metricsd_up 1\n"));
    }

    #[test]
    fn special_floats() {
        let mut s = String::new();
        format_value(&mut s, Value::Float(f64::NAN));
        s.push(' ');
        format_value(&mut s, Value::Float(f64::NEG_INFINITY));
        s.push(' ');
        format_value(&mut s, Value::Float(0.25));
        assert_eq!(s, "NaN -Inf 0.25");
    }
}
