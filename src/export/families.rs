//! The Prometheus metric families of one snapshot (SPEC §4.5): a `host_*`
//! family for every field of SPEC §3.1 and §3.3, in base units (bytes,
//! seconds; `*_percent` gauges stay 0..100), with the kernel's cumulative
//! counters exported raw as `*_total` counters so that `rate()` works across
//! daemon restarts. Top processes stay out (a changing set of pids would
//! make series churn); they are in the JSON forms only.
//!
//! A group whose collector failed in this sample gives no family at all
//! (never a made-up 0). String fields (filesystem type and device, an
//! interface's operational state, boot id, kernel and OS names) become
//! `*_info` gauges of value 1 carrying them as labels.
//!
//! The stream and flat forms' host totals (network bytes per second and
//! packets over all included interfaces) are the sums of the per-interface
//! families here, so they are not repeated as families of their own.

use crate::snapshot::{
    CpuModes, DeviceMetrics, InterfaceMetrics, Metrics, MountUsage, PsiLine, Snapshot,
};
use smallvec::SmallVec;
use std::borrow::Cow;

/// The Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    /// The type's name in the text exposition's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// A sample's labels, borrowed from the snapshot: no family has more
/// than three, so they live inline (the families are built for every
/// snapshot remote write sends, and an allocation per sample would cost
/// more than encoding it).
pub type Labels<'a> = SmallVec<[(&'static str, Cow<'a, str>); 3]>;

/// One series of a family: its labels (besides the family name) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub labels: Labels<'a>,
    pub value: f64,
}

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The base unit of the values ("bytes", "seconds", "percent"), or ""
    /// for counts and ratios.
    pub unit: &'static str,
    /// Never empty: a family without samples is left out.
    pub samples: Samples<'a>,
}

/// A family's samples: most families have one, kept inline (no allocation
/// for each of them in every snapshot).
pub type Samples<'a> = SmallVec<[Sample<'a>; 1]>;

const MS: f64 = 1e-3;
const US: f64 = 1e-6;

/// Collects families, leaving out those without samples.
struct Families<'a>(Vec<Family<'a>>);

impl<'a> Families<'a> {
    fn add(
        &mut self,
        name: &'static str,
        kind: Kind,
        unit: &'static str,
        help: &'static str,
        samples: Vec<Sample<'a>>,
    ) {
        self.add_samples(name, kind, unit, help, SmallVec::from_vec(samples));
    }

    fn add_samples(
        &mut self,
        name: &'static str,
        kind: Kind,
        unit: &'static str,
        help: &'static str,
        samples: Samples<'a>,
    ) {
        if !samples.is_empty() {
            self.0.push(Family {
                name,
                help,
                kind,
                unit,
                samples,
            });
        }
    }

    /// A family of one unlabelled sample, left out when the value is missing.
    fn one(
        &mut self,
        name: &'static str,
        kind: Kind,
        unit: &'static str,
        help: &'static str,
        value: Option<f64>,
    ) {
        self.add_samples(
            name,
            kind,
            unit,
            help,
            value.map(plain).into_iter().collect(),
        );
    }
}

fn plain<'a>(value: f64) -> Sample<'a> {
    Sample {
        labels: Labels::new(),
        value,
    }
}

fn labelled<'a>(label: &'static str, text: impl Into<Cow<'a, str>>, value: f64) -> Sample<'a> {
    Sample {
        labels: smallvec::smallvec![(label, text.into())],
        value,
    }
}

use Kind::{Counter, Gauge};

/// Every `host_*` family of the snapshot, in a fixed order.
pub fn host_families(snapshot: &Snapshot) -> Vec<Family<'_>> {
    let m = &snapshot.metrics;
    let mut f = Families(Vec::with_capacity(96));
    cpu(&mut f, m);
    memory(&mut f, m);
    pressure(&mut f, m);
    filesystems(&mut f, m);
    disks(&mut f, m);
    network(&mut f, m);
    tcp(&mut f, m);
    processes(&mut f, m);
    system(&mut f, m);
    units(&mut f, m);
    f.0
}

/// `metricsd_collector_*`: how each collector did in this sample.
pub fn collector_families(snapshot: &Snapshot) -> Vec<Family<'_>> {
    let runs = &snapshot.collectors;
    let each = |value: &dyn Fn(&crate::snapshot::CollectorRun) -> f64| {
        runs.iter()
            .map(|r| labelled("collector", &*r.name, value(r)))
            .collect::<Vec<_>>()
    };
    let mut f = Families(Vec::with_capacity(3));
    f.add(
        "metricsd_collector_duration_seconds",
        Gauge,
        "seconds",
        "How long each collector took in the latest sample.",
        each(&|r| r.duration.as_secs_f64()),
    );
    f.add(
        "metricsd_collector_success",
        Gauge,
        "",
        "1 when the collector succeeded in the latest sample, else 0 (its fields are then missing).",
        each(&|r| if r.ok { 1.0 } else { 0.0 }),
    );
    f.add(
        "metricsd_collector_failures_total",
        Counter,
        "",
        "Samples in which the collector failed, since the daemon started.",
        each(&|r| r.failures_total as f64),
    );
    f.0
}

fn by_mode<'a>(modes: &CpuModes, scale: f64) -> Vec<Sample<'a>> {
    modes
        .named()
        .iter()
        .map(|(mode, v)| labelled("mode", *mode, v * scale))
        .collect()
}

fn cpu<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let cpu = m.cpu.as_ref();
    f.one(
        "host_cpu_usage_percent",
        Gauge,
        "percent",
        "CPU busy time (not idle, not iowait) since the previous sample, 0-100.",
        cpu.and_then(|c| c.usage_percent),
    );
    f.add(
        "host_cpu_core_usage_percent",
        Gauge,
        "percent",
        "Per-core busy time since the previous sample, 0-100.",
        cpu.and_then(|c| Some((c.per_core_percent.as_ref()?, c.core_numbers.as_ref())))
            .map_or_else(Vec::new, |(cores, numbers)| {
                cores
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        // The CPU's own number; models stored before it was
                        // kept have the position only.
                        let core = numbers.and_then(|n| n.get(i)).map_or(i as u32, |n| *n);
                        labelled("core", core.to_string(), *v)
                    })
                    .collect()
            }),
    );
    f.add(
        "host_cpu_mode_percent",
        Gauge,
        "percent",
        "Share of all CPU time in each mode since the previous sample; the nine sum to 100.",
        cpu.and_then(|c| c.modes_percent.as_ref())
            .map_or_else(Vec::new, |modes| by_mode(modes, 1.0)),
    );
    f.add(
        "host_cpu_seconds_total",
        Counter,
        "seconds",
        "CPU time in each mode since boot, all CPUs together (user and nice exclude guest).",
        cpu.map_or_else(Vec::new, |c| by_mode(&c.seconds_total, 1.0)),
    );

    let load = m.load.as_ref();
    f.one(
        "host_load1",
        Gauge,
        "",
        "1-minute load average.",
        load.map(|l| l.load1),
    );
    f.one(
        "host_load5",
        Gauge,
        "",
        "5-minute load average.",
        load.map(|l| l.load5),
    );
    f.one(
        "host_load15",
        Gauge,
        "",
        "15-minute load average.",
        load.map(|l| l.load15),
    );

    let a = m.activity.as_ref();
    f.one(
        "host_context_switches_total",
        Counter,
        "",
        "Context switches since boot (/proc/stat ctxt).",
        a.map(|a| a.context_switches_total as f64),
    );
    f.one(
        "host_context_switches_per_second",
        Gauge,
        "",
        "Context switches per second since the previous sample.",
        a.and_then(|a| a.context_switches_per_sec),
    );
    f.one(
        "host_interrupts_total",
        Counter,
        "",
        "Interrupts since boot (/proc/stat intr).",
        a.map(|a| a.interrupts_total as f64),
    );
    f.one(
        "host_interrupts_per_second",
        Gauge,
        "",
        "Interrupts per second since the previous sample.",
        a.and_then(|a| a.interrupts_per_sec),
    );
    f.one(
        "host_forks_total",
        Counter,
        "",
        "Processes and threads created since boot (/proc/stat processes).",
        a.map(|a| a.forks_total as f64),
    );
    f.one(
        "host_forks_per_second",
        Gauge,
        "",
        "Forks per second since the previous sample.",
        a.and_then(|a| a.forks_per_sec),
    );
    f.one(
        "host_processes_running",
        Gauge,
        "",
        "Runnable tasks (/proc/stat procs_running).",
        a.map(|a| a.procs_running as f64),
    );
    f.one(
        "host_processes_blocked",
        Gauge,
        "",
        "Tasks blocked on I/O (/proc/stat procs_blocked).",
        a.map(|a| a.procs_blocked as f64),
    );
    f.one(
        "host_boot_time_seconds",
        Gauge,
        "seconds",
        "Boot time, Unix seconds (/proc/stat btime).",
        a.map(|a| a.boot_time_unix as f64),
    );
}

fn memory<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let mem = m.memory.as_ref();
    type Bytes = fn(&crate::snapshot::MemoryMetrics) -> u64;
    let bytes: [(&'static str, &'static str, Bytes); 10] = [
        ("host_memory_total_bytes", "MemTotal.", |m| m.total_bytes),
        ("host_memory_used_bytes", "MemTotal - MemAvailable.", |m| {
            m.used_bytes()
        }),
        ("host_memory_available_bytes", "MemAvailable.", |m| {
            m.available_bytes
        }),
        ("host_memory_free_bytes", "MemFree.", |m| m.free_bytes),
        ("host_memory_buffers_bytes", "Buffers.", |m| m.buffers_bytes),
        ("host_memory_cached_bytes", "Cached.", |m| m.cached_bytes),
        ("host_memory_shared_bytes", "Shmem.", |m| m.shared_bytes),
        ("host_memory_slab_bytes", "Slab.", |m| m.slab_bytes),
        ("host_swap_total_bytes", "SwapTotal.", |m| {
            m.swap_total_bytes
        }),
        ("host_swap_used_bytes", "SwapTotal - SwapFree.", |m| {
            m.swap_used_bytes()
        }),
    ];
    for (name, help, value) in bytes {
        f.one(name, Gauge, "bytes", help, mem.map(|m| value(m) as f64));
    }
    f.one(
        "host_swap_free_bytes",
        Gauge,
        "bytes",
        "SwapFree.",
        mem.map(|m| m.swap_free_bytes as f64),
    );
    f.one(
        "host_memory_usage_percent",
        Gauge,
        "percent",
        "Memory used of MemTotal, 0-100.",
        mem.map(|m| crate::snapshot::percent(m.used_bytes() as f64, m.total_bytes as f64)),
    );
    f.one(
        "host_swap_usage_percent",
        Gauge,
        "percent",
        "Swap used of SwapTotal, 0-100 (0 without swap).",
        mem.map(|m| {
            crate::snapshot::percent(m.swap_used_bytes() as f64, m.swap_total_bytes as f64)
        }),
    );

    let vm = m.vmstat.as_ref();
    f.one(
        "host_swap_in_pages_total",
        Counter,
        "",
        "Pages swapped in since boot (/proc/vmstat pswpin).",
        vm.map(|v| v.swap_in_pages_total as f64),
    );
    f.one(
        "host_swap_out_pages_total",
        Counter,
        "",
        "Pages swapped out since boot (/proc/vmstat pswpout).",
        vm.map(|v| v.swap_out_pages_total as f64),
    );
    f.one(
        "host_major_faults_total",
        Counter,
        "",
        "Major page faults since boot (/proc/vmstat pgmajfault).",
        vm.map(|v| v.major_faults_total as f64),
    );
    f.one(
        "host_swap_in_pages_per_second",
        Gauge,
        "",
        "Pages swapped in per second since the previous sample.",
        vm.and_then(|v| v.swap_in_pages_per_sec),
    );
    f.one(
        "host_swap_out_pages_per_second",
        Gauge,
        "",
        "Pages swapped out per second since the previous sample.",
        vm.and_then(|v| v.swap_out_pages_per_sec),
    );
    f.one(
        "host_major_faults_per_second",
        Gauge,
        "",
        "Major page faults per second since the previous sample.",
        vm.and_then(|v| v.major_faults_per_sec),
    );
}

fn pressure<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let lines: Vec<(&str, &str, &PsiLine)> = m.pressure.as_ref().map_or_else(Vec::new, |p| {
        p.lines()
            .into_iter()
            .filter_map(|(resource, kind, line)| line.map(|l| (resource, kind, l)))
            .collect()
    });
    let each = |value: fn(&PsiLine) -> Option<f64>| {
        lines
            .iter()
            .filter_map(|(resource, kind, line)| {
                Some(Sample {
                    labels: smallvec::smallvec![
                        ("resource", Cow::Borrowed(*resource)),
                        ("kind", Cow::Borrowed(*kind)),
                    ],
                    value: value(line)?,
                })
            })
            .collect::<Vec<_>>()
    };
    f.add(
        "host_pressure_avg10_percent",
        Gauge,
        "percent",
        "Share of the last 10 s in which some (or all) tasks stalled on the resource, 0-100 (/proc/pressure).",
        each(|l| Some(l.avg10)),
    );
    f.add(
        "host_pressure_avg60_percent",
        Gauge,
        "percent",
        "As avg10, over the last 60 s.",
        each(|l| Some(l.avg60)),
    );
    f.add(
        "host_pressure_avg300_percent",
        Gauge,
        "percent",
        "As avg10, over the last 300 s.",
        each(|l| Some(l.avg300)),
    );
    f.add(
        "host_pressure_stall_seconds_total",
        Counter,
        "seconds",
        "Time some (or all) tasks stalled on the resource since boot (/proc/pressure total).",
        each(|l| Some(l.total_us as f64 * US)),
    );
    f.add(
        "host_pressure_stall_seconds_per_second",
        Gauge,
        "",
        "Stall time per second of wall time since the previous sample, 0-1.",
        each(|l| l.stall_ms_per_sec.map(|v| v * MS)),
    );
}

fn filesystems<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let mounts: &[MountUsage] = m.filesystems.as_deref().unwrap_or(&[]);
    let each = |value: fn(&MountUsage) -> Option<f64>| {
        mounts
            .iter()
            .filter_map(|u| value(u).map(|v| labelled("mount", &*u.mount, v)))
            .collect::<Vec<_>>()
    };
    f.add(
        "host_filesystem_info",
        Gauge,
        "",
        "Always 1: the filesystem's type and device as /proc/self/mountinfo names them.",
        mounts
            .iter()
            .map(|u| Sample {
                labels: smallvec::smallvec![
                    ("mount", Cow::Borrowed(&*u.mount)),
                    ("fs_type", Cow::Borrowed(&*u.fs_type)),
                    ("device", Cow::Borrowed(&*u.device)),
                ],
                value: 1.0,
            })
            .collect(),
    );
    f.add(
        "host_filesystem_size_bytes",
        Gauge,
        "bytes",
        "Filesystem size (statvfs f_blocks).",
        each(|u| Some(u.total_bytes as f64)),
    );
    f.add(
        "host_filesystem_used_bytes",
        Gauge,
        "bytes",
        "Filesystem space used (f_blocks - f_bfree).",
        each(|u| Some(u.used_bytes as f64)),
    );
    f.add(
        "host_filesystem_avail_bytes",
        Gauge,
        "bytes",
        "Filesystem space available to unprivileged users (f_bavail).",
        each(|u| Some(u.avail_bytes as f64)),
    );
    f.add(
        "host_filesystem_usage_percent",
        Gauge,
        "percent",
        "used / (used + avail), as df computes Use%, 0-100.",
        each(|u| Some(u.usage_percent())),
    );
    f.add(
        "host_filesystem_inodes",
        Gauge,
        "",
        "Inodes (statvfs f_files; 0 on filesystems without a fixed inode table).",
        each(|u| Some(u.inodes_total as f64)),
    );
    f.add(
        "host_filesystem_inodes_used",
        Gauge,
        "",
        "Inodes in use (f_files - f_ffree).",
        each(|u| Some(u.inodes_used() as f64)),
    );
    f.add(
        "host_filesystem_inodes_usage_percent",
        Gauge,
        "percent",
        "Inodes used of f_files, 0-100 (absent where the filesystem has no inode count).",
        each(MountUsage::inodes_usage_percent),
    );
}

fn disks<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let io = m.disk_io.as_ref();
    f.one(
        "host_disk_read_bytes_per_second",
        Gauge,
        "bytes",
        "Bytes read from whole block devices per second since the previous sample.",
        io.map(|d| d.read_bytes_per_sec),
    );
    f.one(
        "host_disk_write_bytes_per_second",
        Gauge,
        "bytes",
        "Bytes written to whole block devices per second since the previous sample.",
        io.map(|d| d.write_bytes_per_sec),
    );
    let devices: &[DeviceMetrics] = io.map_or(&[], |d| &d.devices);
    type Value = fn(&DeviceMetrics) -> f64;
    let list: [(&'static str, Kind, &'static str, &'static str, Value); 15] = [
        (
            "host_disk_read_bytes_total",
            Counter,
            "bytes",
            "Bytes read since boot.",
            |d| d.read_bytes_total as f64,
        ),
        (
            "host_disk_written_bytes_total",
            Counter,
            "bytes",
            "Bytes written since boot.",
            |d| d.written_bytes_total as f64,
        ),
        (
            "host_disk_reads_completed_total",
            Counter,
            "",
            "Reads completed since boot.",
            |d| d.reads_total as f64,
        ),
        (
            "host_disk_writes_completed_total",
            Counter,
            "",
            "Writes completed since boot.",
            |d| d.writes_total as f64,
        ),
        (
            "host_disk_read_time_seconds_total",
            Counter,
            "seconds",
            "Time spent reading since boot.",
            |d| d.read_time_ms_total as f64 * MS,
        ),
        (
            "host_disk_write_time_seconds_total",
            Counter,
            "seconds",
            "Time spent writing since boot.",
            |d| d.write_time_ms_total as f64 * MS,
        ),
        (
            "host_disk_io_time_seconds_total",
            Counter,
            "seconds",
            "Time spent doing I/O since boot.",
            |d| d.io_time_ms_total as f64 * MS,
        ),
        (
            "host_disk_io_in_flight",
            Gauge,
            "",
            "I/Os in progress now.",
            |d| d.in_flight as f64,
        ),
        (
            "host_disk_device_read_bytes_per_second",
            Gauge,
            "bytes",
            "Bytes read per second since the previous sample.",
            |d| d.read_bytes_per_sec,
        ),
        (
            "host_disk_device_write_bytes_per_second",
            Gauge,
            "bytes",
            "Bytes written per second since the previous sample.",
            |d| d.write_bytes_per_sec,
        ),
        (
            "host_disk_reads_per_second",
            Gauge,
            "",
            "Reads completed per second since the previous sample.",
            |d| d.reads_per_sec,
        ),
        (
            "host_disk_writes_per_second",
            Gauge,
            "",
            "Writes completed per second since the previous sample.",
            |d| d.writes_per_sec,
        ),
        (
            "host_disk_util_percent",
            Gauge,
            "percent",
            "Time the device was busy since the previous sample, 0-100.",
            |d| d.util_percent,
        ),
        (
            "host_disk_read_await_seconds",
            Gauge,
            "seconds",
            "Mean time per read completed since the previous sample (0 when none).",
            |d| d.read_await_ms * MS,
        ),
        (
            "host_disk_write_await_seconds",
            Gauge,
            "seconds",
            "Mean time per write completed since the previous sample (0 when none).",
            |d| d.write_await_ms * MS,
        ),
    ];
    for (name, kind, unit, help, value) in list {
        f.add(
            name,
            kind,
            unit,
            help,
            devices
                .iter()
                .map(|d| labelled("device", &*d.name, value(d)))
                .collect(),
        );
    }
}

fn network<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let ifaces: &[InterfaceMetrics] = m.network.as_ref().map_or(&[], |n| &n.interfaces);
    type Value = fn(&InterfaceMetrics) -> f64;
    let list: [(&'static str, Kind, &'static str, &'static str, Value); 10] = [
        (
            "host_network_receive_bytes_total",
            Counter,
            "bytes",
            "Bytes received since boot.",
            |i| i.rx_bytes as f64,
        ),
        (
            "host_network_transmit_bytes_total",
            Counter,
            "bytes",
            "Bytes sent since boot.",
            |i| i.tx_bytes as f64,
        ),
        (
            "host_network_receive_packets_total",
            Counter,
            "",
            "Packets received since boot.",
            |i| i.rx_packets as f64,
        ),
        (
            "host_network_transmit_packets_total",
            Counter,
            "",
            "Packets sent since boot.",
            |i| i.tx_packets as f64,
        ),
        (
            "host_network_receive_errors_total",
            Counter,
            "",
            "Receive errors since boot.",
            |i| i.rx_errors as f64,
        ),
        (
            "host_network_transmit_errors_total",
            Counter,
            "",
            "Transmit errors since boot.",
            |i| i.tx_errors as f64,
        ),
        (
            "host_network_receive_drops_total",
            Counter,
            "",
            "Received packets dropped since boot.",
            |i| i.rx_dropped as f64,
        ),
        (
            "host_network_transmit_drops_total",
            Counter,
            "",
            "Transmitted packets dropped since boot.",
            |i| i.tx_dropped as f64,
        ),
        (
            "host_network_receive_bytes_per_second",
            Gauge,
            "bytes",
            "Bytes received per second since the previous sample.",
            |i| i.rx_bytes_per_sec,
        ),
        (
            "host_network_transmit_bytes_per_second",
            Gauge,
            "bytes",
            "Bytes sent per second since the previous sample.",
            |i| i.tx_bytes_per_sec,
        ),
    ];
    for (name, kind, unit, help, value) in list {
        f.add(
            name,
            kind,
            unit,
            help,
            ifaces
                .iter()
                .map(|i| labelled("interface", &*i.name, value(i)))
                .collect(),
        );
    }
    f.add(
        "host_network_info",
        Gauge,
        "",
        "Always 1: the interface's operational state (/sys/class/net/<if>/operstate).",
        ifaces
            .iter()
            .filter_map(|i| {
                i.oper_state.as_ref().map(|state| Sample {
                    labels: smallvec::smallvec![
                        ("interface", Cow::Borrowed(&*i.name)),
                        ("oper_state", Cow::Borrowed(&**state)),
                    ],
                    value: 1.0,
                })
            })
            .collect(),
    );
    f.add(
        "host_network_up",
        Gauge,
        "",
        "1 when the interface's operational state is up, else 0.",
        ifaces
            .iter()
            .filter_map(|i| {
                i.oper_state
                    .as_ref()
                    .map(|s| labelled("interface", &*i.name, if s == "up" { 1.0 } else { 0.0 }))
            })
            .collect(),
    );
}

fn tcp<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let t = &m.tcp;
    let count = |v: Option<u64>| v.map(|v| v as f64);
    f.one(
        "host_tcp_active_connections",
        Gauge,
        "",
        "TCP connections in ESTABLISHED or CLOSE-WAIT (CurrEstab), IPv4 and IPv6.",
        count(t.curr_estab),
    );
    f.one(
        "host_tcp_sockets_in_use",
        Gauge,
        "",
        "TCP sockets in use (sockstat inuse + sockstat6 inuse).",
        count(t.in_use),
    );
    f.one(
        "host_tcp_sockets_time_wait",
        Gauge,
        "",
        "TCP sockets in TIME-WAIT (sockstat tw).",
        count(t.time_wait),
    );
    f.one(
        "host_tcp_sockets_orphan",
        Gauge,
        "",
        "Orphaned TCP sockets (sockstat orphan).",
        count(t.orphan),
    );
    f.one(
        "host_tcp_retransmitted_segments_total",
        Counter,
        "",
        "TCP segments retransmitted since boot (snmp RetransSegs).",
        count(t.retrans_segs_total),
    );
    f.one(
        "host_tcp_retransmitted_segments_per_second",
        Gauge,
        "",
        "TCP segments retransmitted per second since the previous sample.",
        t.retrans_segs_per_sec,
    );
    f.one(
        "host_tcp_resets_sent_total",
        Counter,
        "",
        "TCP resets sent since boot (snmp OutRsts).",
        count(t.resets_sent_total),
    );
    f.one(
        "host_tcp_resets_sent_per_second",
        Gauge,
        "",
        "TCP resets sent per second since the previous sample.",
        t.resets_sent_per_sec,
    );
    f.one(
        "host_tcp_listen_overflows_total",
        Counter,
        "",
        "Times a listen queue overflowed since boot (netstat ListenOverflows).",
        count(t.listen_overflows_total),
    );
    f.one(
        "host_tcp_listen_overflows_per_second",
        Gauge,
        "",
        "Listen queue overflows per second since the previous sample.",
        t.listen_overflows_per_sec,
    );
    f.one(
        "host_tcp_listen_drops_total",
        Counter,
        "",
        "SYNs to listening sockets dropped since boot (netstat ListenDrops).",
        count(t.listen_drops_total),
    );
    f.one(
        "host_tcp_listen_drops_per_second",
        Gauge,
        "",
        "Listen drops per second since the previous sample.",
        t.listen_drops_per_sec,
    );
}

fn processes<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let p = m.processes.as_ref();
    f.one(
        "host_processes",
        Gauge,
        "",
        "Processes (not threads).",
        p.map(|p| p.count as f64),
    );
    f.one(
        "host_threads",
        Gauge,
        "",
        "Tasks of all processes.",
        p.and_then(|p| p.threads).map(|t| t as f64),
    );
    f.one(
        "host_processes_zombie",
        Gauge,
        "",
        "Processes in state Z.",
        p.and_then(|p| p.zombies).map(|z| z as f64),
    );
}

fn system<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let s = &m.system;
    f.one(
        "host_uptime_seconds",
        Gauge,
        "seconds",
        "Seconds since boot.",
        s.uptime_seconds.map(|v| v as f64),
    );
    f.add(
        "host_boot_info",
        Gauge,
        "",
        "Always 1: the kernel's id of this boot.",
        s.boot_id
            .iter()
            .map(|id| labelled("boot_id", &**id, 1.0))
            .collect(),
    );
    f.one(
        "host_file_descriptors_allocated",
        Gauge,
        "",
        "File handles allocated (/proc/sys/fs/file-nr, first field).",
        s.file_descriptors_allocated.map(|v| v as f64),
    );
    f.one(
        "host_file_descriptors_max",
        Gauge,
        "",
        "Most file handles the kernel will allocate (file-nr, third field).",
        s.file_descriptors_max.map(|v| v as f64),
    );
    f.one(
        "host_clock_synced",
        Gauge,
        "",
        "1 when adjtimex(2) reports the clock synchronised (STA_UNSYNC clear), else 0.",
        s.clock_synced.map(|v| if v { 1.0 } else { 0.0 }),
    );
    f.one(
        "host_clock_max_error_seconds",
        Gauge,
        "seconds",
        "The clock's maximum error as adjtimex(2) reports it.",
        s.clock_max_error_ms.map(|v| v * MS),
    );
    let mut os_labels = Labels::new();
    if let Some(kernel) = &s.kernel {
        os_labels.push(("kernel", Cow::Borrowed(&**kernel)));
    }
    if let Some(os) = &s.os {
        os_labels.push(("os", Cow::Borrowed(&**os)));
    }
    f.add(
        "host_os_info",
        Gauge,
        "",
        "Always 1: the kernel release (uname) and the OS (PRETTY_NAME of /etc/os-release).",
        if os_labels.is_empty() {
            Vec::new()
        } else {
            vec![Sample {
                labels: os_labels,
                value: 1.0,
            }]
        },
    );
}

fn units<'a>(f: &mut Families<'a>, m: &'a Metrics) {
    let units: Vec<(&String, &crate::collect::units::UnitMetrics)> =
        m.units.iter().flatten().collect();
    type Value = fn(&crate::collect::units::UnitMetrics) -> Option<f64>;
    let list: [(&'static str, Kind, &'static str, &'static str, Value); 7] = [
        (
            "host_unit_cpu_seconds_total",
            Counter,
            "seconds",
            "CPU time of the unit's cgroup (cpu.stat usage_usec) since it was created.",
            |u| u.cpu_usage_usec.map(|v| v as f64 * US),
        ),
        (
            "host_unit_cpu_percent",
            Gauge,
            "percent",
            "The unit's CPU use since the previous sample; 100 is one core.",
            |u| u.cpu_percent,
        ),
        (
            "host_unit_memory_bytes",
            Gauge,
            "bytes",
            "The unit's memory (memory.current).",
            |u| u.memory_bytes.map(|v| v as f64),
        ),
        (
            "host_unit_tasks",
            Gauge,
            "",
            "The unit's tasks (pids.current).",
            |u| u.tasks.map(|v| v as f64),
        ),
        (
            "host_unit_io_read_bytes_total",
            Counter,
            "bytes",
            "Bytes the unit read (io.stat rbytes over all devices).",
            |u| u.io_read_bytes.map(|v| v as f64),
        ),
        (
            "host_unit_io_written_bytes_total",
            Counter,
            "bytes",
            "Bytes the unit wrote (io.stat wbytes over all devices).",
            |u| u.io_write_bytes.map(|v| v as f64),
        ),
        (
            "host_unit_io_read_bytes_per_second",
            Gauge,
            "bytes",
            "Bytes the unit read per second since the previous sample.",
            |u| u.io_read_mb_per_sec.map(|v| v * 1024.0 * 1024.0),
        ),
    ];
    for (name, kind, unit, help, value) in list {
        f.add(
            name,
            kind,
            unit,
            help,
            units
                .iter()
                .filter_map(|(n, u)| value(u).map(|v| labelled("unit", &***n, v)))
                .collect(),
        );
    }
    f.add(
        "host_unit_io_write_bytes_per_second",
        Gauge,
        "bytes",
        "Bytes the unit wrote per second since the previous sample.",
        units
            .iter()
            .filter_map(|(n, u)| {
                u.io_write_mb_per_sec
                    .map(|v| labelled("unit", &***n, v * 1024.0 * 1024.0))
            })
            .collect(),
    );
    let pressure = |resource: &'static str, value: Option<f64>, name: &'a String| {
        value.map(|v| Sample {
            labels: smallvec::smallvec![
                ("unit", Cow::Borrowed(name.as_str())),
                ("resource", Cow::Borrowed(resource)),
            ],
            value: v,
        })
    };
    f.add(
        "host_unit_pressure_some_avg10_percent",
        Gauge,
        "percent",
        "Share of the last 10 s in which some of the unit's tasks stalled on the resource, 0-100.",
        units
            .iter()
            .flat_map(|(n, u)| {
                [
                    pressure("cpu", u.cpu_pressure_some_avg10, n),
                    pressure("memory", u.memory_pressure_some_avg10, n),
                    pressure("io", u.io_pressure_some_avg10, n),
                ]
            })
            .flatten()
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::units::UnitMetrics;
    use crate::snapshot::{
        CollectorRun, CpuMetrics, DiskIoMetrics, PressureMetrics, ProcessMetrics, TopProcess,
    };
    use std::collections::{BTreeMap, HashSet};
    use std::time::{Duration, SystemTime};

    fn snapshot(metrics: Metrics) -> Snapshot {
        Snapshot {
            timestamp: SystemTime::UNIX_EPOCH,
            node_id: "n".into(),
            machine_id: "m".into(),
            event_id: uuid::Uuid::nil(),
            seq: 1,
            interval_secs: 1,
            metrics,
            collectors: vec![CollectorRun {
                name: "units".into(),
                duration: Duration::from_micros(250),
                ok: false,
                failures_total: 3,
            }],
        }
    }

    fn find<'a, 's>(families: &'a [Family<'s>], name: &str) -> Option<&'a Family<'s>> {
        families.iter().find(|f| f.name == name)
    }

    fn full() -> Metrics {
        let mut units = BTreeMap::new();
        units.insert(
            "nginx.service".to_string(),
            UnitMetrics {
                cpu_percent: Some(25.0),
                cpu_usage_usec: Some(1_500_000),
                memory_bytes: None,
                io_write_mb_per_sec: Some(2.0),
                memory_pressure_some_avg10: Some(0.25),
                ..Default::default()
            },
        );
        Metrics {
            cpu: Some(CpuMetrics {
                seconds_total: CpuModes {
                    iowait: 12.5,
                    ..Default::default()
                },
                ..Default::default()
            }),
            pressure: Some(PressureMetrics {
                io_full: Some(PsiLine {
                    total_us: 2_500_000,
                    stall_ms_per_sec: Some(250.0),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            disk_io: Some(DiskIoMetrics {
                devices: vec![DeviceMetrics {
                    name: "sda".into(),
                    io_time_ms_total: 1500,
                    read_await_ms: 4.0,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            processes: Some(ProcessMetrics {
                zombies: Some(2),
                top_memory: vec![TopProcess {
                    pid: 42,
                    name: "big".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            units: Some(units),
            ..Default::default()
        }
    }

    #[test]
    fn base_units_and_raw_counters() {
        let s = snapshot(full());
        let f = host_families(&s);
        let one = |name: &str, label: Option<(&str, &str)>| {
            find(&f, name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .samples
                .iter()
                .find(|s| {
                    label.is_none_or(|(k, v)| s.labels.iter().any(|(lk, lv)| *lk == k && lv == v))
                })
                .unwrap_or_else(|| panic!("{name} {label:?}"))
                .value
        };
        assert_eq!(
            one("host_cpu_seconds_total", Some(("mode", "iowait"))),
            12.5
        );
        assert_eq!(
            one("host_pressure_stall_seconds_total", Some(("kind", "full"))),
            2.5
        );
        assert_eq!(one("host_pressure_stall_seconds_per_second", None), 0.25);
        assert_eq!(
            one("host_disk_io_time_seconds_total", Some(("device", "sda"))),
            1.5
        );
        assert_eq!(one("host_disk_read_await_seconds", None), 0.004);
        assert_eq!(one("host_processes_zombie", None), 2.0);
        assert_eq!(
            one(
                "host_unit_cpu_seconds_total",
                Some(("unit", "nginx.service"))
            ),
            1.5
        );
        assert_eq!(
            one("host_unit_io_write_bytes_per_second", None),
            2.0 * 1024.0 * 1024.0
        );
        assert_eq!(
            one(
                "host_unit_pressure_some_avg10_percent",
                Some(("resource", "memory"))
            ),
            0.25
        );
        // A unit without the memory controller has no memory series.
        assert!(find(&f, "host_unit_memory_bytes").is_none());
        // No per-process series.
        assert!(f.iter().all(|fam| fam
            .samples
            .iter()
            .all(|s| s.labels.iter().all(|(k, _)| *k != "pid"))));
    }

    #[test]
    fn per_core_series_are_labelled_by_cpu_number_not_position() {
        let s = snapshot(Metrics {
            cpu: Some(CpuMetrics {
                per_core_percent: Some(vec![10.0, 30.0]),
                core_numbers: Some(vec![0, 2]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let f = host_families(&s);
        let cores: Vec<(String, f64)> = find(&f, "host_cpu_core_usage_percent")
            .unwrap()
            .samples
            .iter()
            .map(|s| (s.labels[0].1.to_string(), s.value))
            .collect();
        assert_eq!(cores, [("0".to_string(), 10.0), ("2".to_string(), 30.0)]);
    }

    #[test]
    fn failed_groups_give_no_family() {
        let s = snapshot(Metrics::default());
        let f = host_families(&s);
        for missing in [
            "host_cpu_usage_percent",
            "host_memory_used_bytes",
            "host_pressure_avg10_percent",
            "host_uptime_seconds",
            "host_clock_synced",
            "host_unit_cpu_seconds_total",
        ] {
            assert!(find(&f, missing).is_none(), "{missing}");
        }
        assert!(f.iter().all(|fam| !fam.samples.is_empty()));
    }

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let s = snapshot(full());
        let f = host_families(&s);
        let mut seen = HashSet::new();
        for fam in &f {
            assert!(seen.insert(fam.name), "{} twice", fam.name);
            assert!(fam.name.starts_with("host_"));
            assert_eq!(
                fam.kind == Kind::Counter,
                fam.name.ends_with("_total"),
                "{}",
                fam.name
            );
        }
    }

    #[test]
    fn collectors_report_duration_success_and_failures() {
        let s = snapshot(Metrics::default());
        let f = collector_families(&s);
        let value = |name: &str| find(&f, name).unwrap().samples[0].clone();
        assert_eq!(value("metricsd_collector_duration_seconds").value, 0.00025);
        assert_eq!(value("metricsd_collector_success").value, 0.0);
        let failures = value("metricsd_collector_failures_total");
        assert_eq!(failures.value, 3.0);
        assert_eq!(failures.labels.as_slice(), [("collector", "units".into())]);
    }
}
