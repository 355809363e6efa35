//! `[otlp]`: OTLP/HTTP 1.x with protobuf bodies (SPEC §5.6). A batch of rows
//! becomes one `ExportMetricsServiceRequest` with one `ResourceMetrics` per
//! snapshot, named and measured after the OpenTelemetry semantic
//! conventions for system metrics. Kernel counters are cumulative Sums
//! starting at boot; gauges carry the snapshot's time. A 200 may still say
//! that points were rejected (partial success): that is read here.

use super::client::gzip;
use super::sink::{BadRow, PartialSuccess, Request, Sink};
use crate::config::SinkConfig;
use crate::queue::Row;
use crate::snapshot::{Metrics, Snapshot};
use prost::Message as _;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The subset of the OTLP messages (opentelemetry-proto, metrics v1) that
/// the daemon writes and reads. Oneof members are plain optional fields:
/// on the wire the two are the same.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportMetricsPartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_data_points: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        /// oneof data: gauge = 5, sum = 7.
        #[prost(message, optional, tag = "5")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "7")]
        pub sum: Option<Sum>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        /// 1 delta, 2 cumulative.
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        /// oneof value: as_double = 4, as_int = 6.
        #[prost(double, optional, tag = "4")]
        pub as_double: Option<f64>,
        #[prost(sfixed64, optional, tag = "6")]
        pub as_int: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// oneof value: string_value = 1, bool_value = 2, int_value = 3, double_value = 4.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, optional, tag = "1")]
        pub string_value: Option<String>,
        #[prost(bool, optional, tag = "2")]
        pub bool_value: Option<bool>,
        #[prost(int64, optional, tag = "3")]
        pub int_value: Option<i64>,
        #[prost(double, optional, tag = "4")]
        pub double_value: Option<f64>,
    }
}

use proto::*;

pub const CUMULATIVE: i32 = 2;
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            string_value: Some(value.into()),
            ..Default::default()
        }),
    }
}

/// The snapshot's time as its forms give it (whole milliseconds), in ns.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 * 1_000_000)
        .unwrap_or(0)
}

/// How a metric's points are aggregated.
#[derive(Clone, Copy)]
enum Shape {
    Gauge,
    /// A monotonic cumulative Sum (a kernel counter).
    Counter,
    /// A non-monotonic cumulative Sum (semantic conventions' UpDownCounter).
    UpDown,
}

/// Builds the metrics of one snapshot.
struct SnapshotMetrics {
    metrics: Vec<Metric>,
    time: u64,
    start: u64,
}

/// One data point: attributes and value.
type Point = (Vec<KeyValue>, f64);

impl SnapshotMetrics {
    fn add(&mut self, name: &str, unit: &str, shape: Shape, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let start = match shape {
            Shape::Gauge => 0,
            Shape::Counter | Shape::UpDown => self.start,
        };
        let data_points = points
            .into_iter()
            .map(|(attributes, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.time,
                as_double: Some(value),
                as_int: None,
            })
            .collect();
        let mut metric = Metric {
            name: name.to_string(),
            description: String::new(),
            unit: unit.to_string(),
            gauge: None,
            sum: None,
        };
        match shape {
            Shape::Gauge => metric.gauge = Some(Gauge { data_points }),
            Shape::Counter | Shape::UpDown => {
                metric.sum = Some(Sum {
                    data_points,
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: matches!(shape, Shape::Counter),
                })
            }
        }
        self.metrics.push(metric);
    }

    fn one(&mut self, name: &str, unit: &str, shape: Shape, value: Option<f64>) {
        self.add(
            name,
            unit,
            shape,
            value.map(|v| (Vec::new(), v)).into_iter().collect(),
        );
    }
}

/// The resource and metrics of one snapshot.
pub fn resource_metrics(snapshot: &Snapshot, extra: &BTreeMap<String, String>) -> ResourceMetrics {
    let mut attributes = vec![
        attr("host.name", &snapshot.node_id),
        attr("host.id", &snapshot.machine_id),
        attr("os.type", "linux"),
        attr("service.name", "metricsd"),
        attr("service.version", VERSION),
    ];
    for (k, v) in extra {
        match attributes.iter_mut().find(|a| &a.key == k) {
            Some(a) => *a = attr(k, v),
            None => attributes.push(attr(k, v)),
        }
    }
    let m = &snapshot.metrics;
    let mut out = SnapshotMetrics {
        metrics: Vec::with_capacity(32),
        time: unix_nanos(snapshot.timestamp),
        start: boot_nanos(snapshot),
    };
    add_metrics(&mut out, m);
    ResourceMetrics {
        resource: Some(Resource { attributes }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "metricsd".to_string(),
                version: VERSION.to_string(),
            }),
            metrics: out.metrics,
        }],
    }
}

/// The counters' start (SPEC §5.6: the boot time): /proc/stat's btime, or
/// when the cpu collector could not read it, the snapshot's time less the
/// uptime (whole seconds; stable, as samples fall on the same part of a
/// second); 0, "unknown" to OTLP, only when neither was read.
fn boot_nanos(snapshot: &Snapshot) -> u64 {
    let m = &snapshot.metrics;
    let boot_s = match (&m.activity, m.system.uptime_seconds) {
        (Some(a), _) => a.boot_time_unix,
        (None, Some(uptime)) => snapshot
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs().saturating_sub(uptime)),
        (None, None) => 0,
    };
    boot_s.saturating_mul(1_000_000_000)
}

/// The semantic conventions' `cpu.mode` for a mode of SPEC §3.3: hardware
/// interrupt time is "interrupt" there (as in the Collector's hostmetrics
/// receiver); the other names are the same, and softirq and guest, which
/// the conventions do not list, keep theirs.
fn semconv_mode(mode: &'static str) -> &'static str {
    match mode {
        "irq" => "interrupt",
        other => other,
    }
}

fn add_metrics(out: &mut SnapshotMetrics, m: &Metrics) {
    use Shape::{Counter, Gauge, UpDown};
    if let Some(cpu) = &m.cpu {
        let time = cpu.seconds_total.named();
        out.add(
            "system.cpu.time",
            "s",
            Counter,
            time.iter()
                .map(|(mode, v)| (vec![attr("cpu.mode", semconv_mode(mode))], *v))
                .collect(),
        );
        // No utilization without a previous reading to measure it from.
        if let Some(modes) = &cpu.modes_percent {
            out.add(
                "system.cpu.utilization",
                "1",
                Gauge,
                modes
                    .named()
                    .iter()
                    .map(|(mode, v)| (vec![attr("cpu.mode", semconv_mode(mode))], v / 100.0))
                    .collect(),
            );
        }
    }
    if let Some(load) = &m.load {
        out.one(
            "system.cpu.load_average.1m",
            "{thread}",
            Gauge,
            Some(load.load1),
        );
        out.one(
            "system.cpu.load_average.5m",
            "{thread}",
            Gauge,
            Some(load.load5),
        );
        out.one(
            "system.cpu.load_average.15m",
            "{thread}",
            Gauge,
            Some(load.load15),
        );
    }
    if let Some(mem) = &m.memory {
        let reclaimable = mem.free_bytes + mem.buffers_bytes + mem.cached_bytes + mem.slab_bytes;
        let states = [
            ("used", mem.total_bytes.saturating_sub(reclaimable)),
            ("free", mem.free_bytes),
            ("buffers", mem.buffers_bytes),
            ("cached", mem.cached_bytes),
            ("slab", mem.slab_bytes),
        ];
        let by_state = |scale: f64| -> Vec<Point> {
            states
                .iter()
                .map(|(s, v)| (vec![attr("system.memory.state", *s)], *v as f64 * scale))
                .collect()
        };
        out.add("system.memory.usage", "By", UpDown, by_state(1.0));
        if mem.total_bytes > 0 {
            out.add(
                "system.memory.utilization",
                "1",
                Gauge,
                by_state(1.0 / mem.total_bytes as f64),
            );
        }
        out.one(
            "system.linux.memory.available",
            "By",
            UpDown,
            Some(mem.available_bytes as f64),
        );
    }
    if let Some(mounts) = &m.filesystems {
        let mut usage = Vec::new();
        let mut utilization = Vec::new();
        for fs in mounts {
            let base = || {
                vec![
                    attr("system.device", &fs.device),
                    attr("system.filesystem.mountpoint", &fs.mount),
                    attr("system.filesystem.type", &fs.fs_type),
                ]
            };
            let reserved = fs
                .total_bytes
                .saturating_sub(fs.used_bytes.saturating_add(fs.avail_bytes));
            for (state, v) in [
                ("used", fs.used_bytes),
                ("free", fs.avail_bytes),
                ("reserved", reserved),
            ] {
                let mut a = base();
                a.push(attr("system.filesystem.state", state));
                usage.push((a, v as f64));
            }
            if fs.total_bytes > 0 {
                utilization.push((base(), fs.used_bytes as f64 / fs.total_bytes as f64));
            }
        }
        out.add("system.filesystem.usage", "By", UpDown, usage);
        out.add("system.filesystem.utilization", "1", Gauge, utilization);
    }
    if let Some(disk) = &m.disk_io {
        let per_direction = |read: fn(&crate::snapshot::DeviceMetrics) -> f64,
                             write: fn(&crate::snapshot::DeviceMetrics) -> f64|
         -> Vec<Point> {
            disk.devices
                .iter()
                .flat_map(|d| {
                    [("read", read(d)), ("write", write(d))].map(|(dir, v)| {
                        (
                            vec![
                                attr("system.device", &d.name),
                                attr("disk.io.direction", dir),
                            ],
                            v,
                        )
                    })
                })
                .collect()
        };
        out.add(
            "system.disk.io",
            "By",
            Counter,
            per_direction(
                |d| d.read_bytes_total as f64,
                |d| d.written_bytes_total as f64,
            ),
        );
        out.add(
            "system.disk.operations",
            "{operation}",
            Counter,
            per_direction(|d| d.reads_total as f64, |d| d.writes_total as f64),
        );
        out.add(
            "system.disk.io_time",
            "s",
            Counter,
            disk.devices
                .iter()
                .map(|d| {
                    (
                        vec![attr("system.device", &d.name)],
                        d.io_time_ms_total as f64 / 1000.0,
                    )
                })
                .collect(),
        );
    }
    if let Some(net) = &m.network {
        type Pick = fn(&crate::snapshot::InterfaceMetrics) -> u64;
        let per_direction = |rx: Pick, tx: Pick| -> Vec<Point> {
            net.interfaces
                .iter()
                .flat_map(|i| {
                    [("receive", rx(i)), ("transmit", tx(i))].map(|(dir, v)| {
                        (
                            vec![
                                attr("network.interface.name", &i.name),
                                attr("network.io.direction", dir),
                            ],
                            v as f64,
                        )
                    })
                })
                .collect()
        };
        out.add(
            "system.network.io",
            "By",
            Counter,
            per_direction(|i| i.rx_bytes, |i| i.tx_bytes),
        );
        out.add(
            "system.network.packets",
            "{packet}",
            Counter,
            per_direction(|i| i.rx_packets, |i| i.tx_packets),
        );
        out.add(
            "system.network.errors",
            "{error}",
            Counter,
            per_direction(|i| i.rx_errors, |i| i.tx_errors),
        );
        out.add(
            "system.network.dropped",
            "{packet}",
            Counter,
            per_direction(|i| i.rx_dropped, |i| i.tx_dropped),
        );
    }
    let tcp = &m.tcp;
    let connections: Vec<Point> = [
        ("established", tcp.curr_estab),
        ("time_wait", tcp.time_wait),
    ]
    .into_iter()
    .filter_map(|(state, v)| {
        v.map(|v| {
            (
                vec![
                    attr("network.transport", "tcp"),
                    attr("network.connection.state", state),
                ],
                v as f64,
            )
        })
    })
    .collect();
    out.add(
        "system.network.connections",
        "{connection}",
        UpDown,
        connections,
    );
    let mut processes = Vec::new();
    if let Some(a) = &m.activity {
        processes.push((
            vec![attr("process.status", "running")],
            a.procs_running as f64,
        ));
        processes.push((
            vec![attr("process.status", "blocked")],
            a.procs_blocked as f64,
        ));
    }
    if let Some(zombies) = m.processes.as_ref().and_then(|p| p.zombies) {
        processes.push((vec![attr("process.status", "defunct")], zombies as f64));
    }
    out.add("system.process.count", "{process}", UpDown, processes);
    out.one(
        "system.uptime",
        "s",
        Gauge,
        m.system.uptime_seconds.map(|s| s as f64),
    );
    if let Some(psi) = &m.pressure {
        let mut stall = Vec::new();
        let (mut avg10, mut avg60, mut avg300) = (Vec::new(), Vec::new(), Vec::new());
        for (resource, kind, line) in psi.lines() {
            let Some(line) = line else { continue };
            let a = || {
                vec![
                    attr("system.linux.pressure.resource", resource),
                    attr("system.linux.pressure.kind", kind),
                ]
            };
            stall.push((a(), line.total_us as f64 / 1e6));
            avg10.push((a(), line.avg10 / 100.0));
            avg60.push((a(), line.avg60 / 100.0));
            avg300.push((a(), line.avg300 / 100.0));
        }
        out.add("system.linux.pressure.stall_time", "s", Counter, stall);
        out.add("system.linux.pressure.avg10", "1", Gauge, avg10);
        out.add("system.linux.pressure.avg60", "1", Gauge, avg60);
        out.add("system.linux.pressure.avg300", "1", Gauge, avg300);
    }
}

#[derive(Default)]
pub struct Otlp;

impl Sink for Otlp {
    fn encode(&mut self, rows: &[Row], config: &SinkConfig) -> Result<Request, BadRow> {
        // An `ExportMetricsServiceRequest`, written one `resource_metrics`
        // field at a time: each snapshot's messages are encoded while they
        // are in the cache, and the batch's are never all held at once.
        let mut body = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            let snapshot = super::sink::export_read(index, row)?;
            let resource = resource_metrics(&snapshot, &config.resource_attributes);
            prost::encoding::message::encode(1, &resource, &mut body);
        }
        let mut headers = vec![("Content-Type", "application/x-protobuf".to_string())];
        if config.gzip {
            body = gzip(&body);
            headers.push(("Content-Encoding", "gzip".to_string()));
        }
        Ok(Request { body, headers })
    }

    fn read_success(&mut self, body: &[u8]) -> Option<PartialSuccess> {
        let response = ExportMetricsServiceResponse::decode(body).ok()?;
        let partial = response.partial_success?;
        (partial.rejected_data_points > 0).then(|| PartialSuccess {
            rejected_points: partial.rejected_data_points as u64,
            message: partial.error_message.chars().take(200).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SinkKind};
    use prost::Message;

    /// Every Sum's start in `rm`.
    fn sum_starts(rm: &ResourceMetrics) -> Vec<u64> {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .filter_map(|m| m.sum.as_ref())
            .flat_map(|sum| sum.data_points.iter().map(|p| p.start_time_unix_nano))
            .collect()
    }

    #[test]
    fn counters_start_at_boot_from_the_uptime_when_proc_stat_was_not_read() {
        let mut s = crate::deliver::sink::testing::this_host();
        let btime = s.metrics.activity.as_ref().unwrap().boot_time_unix;
        let starts = sum_starts(&resource_metrics(&s, &BTreeMap::new()));
        assert!(starts.len() > 10);
        assert!(starts.iter().all(|&t| t == btime * 1_000_000_000));

        // The cpu collector failed: no btime, but disks and networks still
        // have counters, which start at the time less the uptime.
        s.metrics.activity = None;
        s.metrics.cpu = None;
        s.timestamp = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_100_250);
        s.metrics.system.uptime_seconds = Some(100);
        let starts = sum_starts(&resource_metrics(&s, &BTreeMap::new()));
        assert!(!starts.is_empty());
        assert!(
            starts.iter().all(|&t| t == 1_700_000_000 * 1_000_000_000),
            "{starts:?}"
        );
    }

    #[test]
    fn a_batch_is_the_request_of_each_snapshots_resource_metrics() {
        let config = Config::default();
        let base = crate::deliver::sink::testing::this_host();
        let rows: Vec<Row> = (0..5)
            .map(|i| {
                let mut s = base.clone();
                s.node_id = format!("web-{i}");
                s.timestamp += std::time::Duration::from_secs(60 * i);
                Row::of_snapshot(i as i64, &s)
            })
            .collect();
        let mut sink_config = config.sink(SinkKind::Otlp).clone();
        sink_config.gzip = false;
        let request = Otlp.encode(&rows, &sink_config).unwrap();
        let expected = ExportMetricsServiceRequest {
            resource_metrics: rows
                .iter()
                .map(|r| {
                    let s = Snapshot::from_model_bytes(&r.model).unwrap();
                    resource_metrics(&s, &sink_config.resource_attributes)
                })
                .collect(),
        };
        assert!(expected.resource_metrics[0].scope_metrics[0].metrics.len() > 10);
        assert_eq!(
            ExportMetricsServiceRequest::decode(&request.body[..]).unwrap(),
            expected
        );
    }
}
