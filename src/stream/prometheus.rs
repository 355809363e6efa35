//! `GET /metrics` (SPEC §4.5): Prometheus text exposition 0.0.4 of the
//! latest snapshot (`host_*`) and of the daemon itself (`metricsd_*`).

use crate::export::families;
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
        out: String::with_capacity(16 * 1024),
    };
    if let Some(s) = snapshot {
        host_metrics(&mut e, s);
    }
    daemon_metrics(&mut e, status);
    e.out
}

/// The snapshot's families (the same list remote write encodes), then
/// which snapshot they come from.
fn host_metrics(e: &mut Exposition, s: &Snapshot) {
    for family in families::host_families(s)
        .iter()
        .chain(&families::collector_families(s))
    {
        e.family(
            family.name,
            match family.kind {
                families::Kind::Gauge => Kind::Gauge,
                families::Kind::Counter => Kind::Counter,
            },
            family.help,
            family.samples.iter().map(|sample| {
                (
                    sample.labels.iter().map(|(k, v)| (*k, v.as_ref())),
                    Value::Float(sample.value),
                )
            }),
        );
    }
    let sampled_at = s
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    e.single(
        "metricsd_last_sample_timestamp_seconds",
        Kind::Gauge,
        "Wall-clock time of the snapshot these host metrics come from (Unix seconds).",
        sampled_at,
    );
    e.single(
        "metricsd_last_sample_seq",
        Kind::Gauge,
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
    per_sink(
        e,
        st,
        "metricsd_queue_pending",
        Gauge,
        "Rows waiting to be posted.",
        Some(st.queue_pending.load(Relaxed)),
        |s| &s.pending,
    );
    per_sink(
        e,
        st,
        "metricsd_queue_dead",
        Gauge,
        "Rows the backend rejected too often (queue peek --dead).",
        Some(st.queue_dead.load(Relaxed)),
        |s| &s.dead,
    );
    per_sink(
        e,
        st,
        "metricsd_queue_dropped_total",
        Counter,
        "Oldest pending rows dropped because the queue was full (kept across restarts).",
        Some(st.queue_dropped_total.load(Relaxed)),
        |s| &s.dropped_total,
    );
    e.single(
        "metricsd_queue_insert_failures_total",
        Counter,
        "Snapshots that could not be queued since start.",
        st.queue_insert_failures_total.load(Relaxed),
    );
    per_sink(
        e,
        st,
        "metricsd_delivered_total",
        Counter,
        "Rows delivered to the backend (kept across restarts).",
        Some(st.delivered_total.load(Relaxed)),
        |s| &s.delivered_total,
    );
    per_sink(
        e,
        st,
        "metricsd_post_failures_total",
        Counter,
        "Failed posts to the backend since start.",
        Some(st.post_failures_total.load(Relaxed)),
        |s| &s.post_failures_total,
    );
    e.single(
        "metricsd_backend_failing",
        Gauge,
        "1 while posting to the backend fails, else 0.",
        u64::from(st.backend_state() == crate::status::BackendState::Failing),
    );
    per_sink(
        e,
        st,
        "metricsd_expired_total",
        Counter,
        "Rows older than max_age removed unsent (kept across restarts).",
        None,
        |s| &s.expired_total,
    );
    e.family(
        "metricsd_sink_failing",
        Gauge,
        "1 while posting to the sink fails, else 0.",
        st.configured_sinks().into_iter().map(|(kind, s)| {
            let failing = s.state() == crate::status::BackendState::Failing;
            ([("sink", kind.name())], Value::Int(u64::from(failing)))
        }),
    );
    let otlp = st.sink(crate::config::SinkKind::Otlp);
    if otlp.configured() {
        e.single(
            "metricsd_otlp_rejected_points_total",
            Counter,
            "Data points the OTLP receiver reported as rejected in partial successes since start.",
            otlp.otlp_rejected_points_total.load(Relaxed),
        );
    }
    e.single(
        "metricsd_stream_clients",
        Gauge,
        "Connected WebSocket clients.",
        st.stream_clients.load(Relaxed),
    );
}

/// A daemon family with one sample per configured sink (`sink` label),
/// after the unlabelled one of the backend (or local history) when given.
fn per_sink(
    e: &mut Exposition,
    st: &Status,
    name: &str,
    kind: Kind,
    help: &str,
    unlabelled: Option<u64>,
    field: impl Fn(&crate::status::SinkStatus) -> &std::sync::atomic::AtomicU64,
) {
    let sinks = st.configured_sinks();
    let labelled = sinks
        .iter()
        .map(|(k, s)| (vec![("sink", k.name())], Value::Int(field(s).load(Relaxed))));
    let plain = unlabelled.map(|v| (Vec::new(), Value::Int(v)));
    e.family(name, kind, help, plain.into_iter().chain(labelled));
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
                per_core_percent: Some(vec![1.5, 99.0]),
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
                    rx_bytes: 123_456_789_012,
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
    fn labels_are_escaped_and_counters_whole() {
        let text = render(Some(&snapshot()), &Status::default());
        assert!(
            text.contains("host_filesystem_used_bytes{mount=\"/mnt/a \\\"q\\\"\\\\b\\nc\"} 4\n")
        );
        assert!(
            text.contains("host_network_receive_bytes_total{interface=\"eth0\"} 123456789012\n")
        );
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
