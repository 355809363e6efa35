//! The nested stream form (SPEC §3.1 and §3.3), written straight into JSON
//! text. It is built once per sample for the clients, the page and the
//! history; building a `serde_json::Value` tree first (about 200 keyed maps)
//! cost three times as much as writing the text.

use super::{
    format_timestamp, gib, mib_per_sec, percent, round2, MemoryMetrics, Metrics, PsiLine, Snapshot,
};
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// The stream form of `s` as JSON text, keys in the contract's order.
pub(super) fn write(s: &Snapshot) -> String {
    let mut out = Vec::with_capacity(4096);
    let m = &s.metrics;
    object(&mut out, |f| {
        f.put("type", "snapshot");
        f.put("timestamp", &s.timestamp_string());
        f.put("node_id", &s.node_id);
        f.put("machine_id", &s.machine_id);
        f.put("event_id", &s.event_id.to_string());
        f.put("seq", &s.seq);
        f.put("interval", &s.interval_secs);
        f.object("metrics", |f| {
            f.object("cpu", |f| cpu(f, m));
            f.object("memory", |f| memory(f, m));
            f.object("pressure", |f| pressure(f, m));
            f.object("disk", |f| disk(f, m));
            f.object("network", |f| network(f, m));
            f.object("processes", |f| processes(f, m));
            f.object("system", |f| system(f, m));
            f.object_or_null("units", m.units.as_ref(), units);
        });
    });
    // Only valid UTF-8 was written: serde_json's strings and ASCII punctuation.
    String::from_utf8(out).expect("the stream form is UTF-8")
}

/// The members of one JSON object being written.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

fn object(out: &mut Vec<u8>, fill: impl FnOnce(&mut Fields)) {
    out.push(b'{');
    fill(&mut Fields { out, first: true });
    out.push(b'}');
}

fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Plain data into a Vec cannot fail; non-finite floats become null.
    serde_json::to_writer(out, value).expect("stream form serialises");
}

impl Fields<'_> {
    /// Starts the member `key` and gives the buffer its value goes into.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(b',');
        }
        put(self.out, key);
        self.out.push(b':');
        self.out
    }

    fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        put(self.key(key), value);
    }

    fn object(&mut self, key: &str, fill: impl FnOnce(&mut Fields)) {
        object(self.key(key), fill);
    }

    /// An object when the group is there, null when its collector failed.
    fn object_or_null<T>(
        &mut self,
        key: &str,
        group: Option<T>,
        fill: impl FnOnce(&mut Fields, T),
    ) {
        let out = self.key(key);
        match group {
            Some(group) => object(out, |f| fill(f, group)),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// An array of objects, one per item, or null without the group.
    fn objects_or_null<I: IntoIterator>(
        &mut self,
        key: &str,
        items: Option<I>,
        mut fill: impl FnMut(&mut Fields, I::Item),
    ) {
        let out = self.key(key);
        let Some(items) = items else {
            out.extend_from_slice(b"null");
            return;
        };
        out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            object(out, |f| fill(f, item));
        }
        out.push(b']');
    }
}

fn cpu(f: &mut Fields, m: &Metrics) {
    let cpu = m.cpu.as_ref();
    let load = m.load.as_ref();
    f.put(
        "cpu_usage_percent",
        &cpu.and_then(|c| c.usage_percent).map(round2),
    );
    let cores = cpu.and_then(|c| c.per_core_percent.as_ref());
    f.put(
        "cpu_per_core_percent",
        &cores.map(|c| c.iter().map(|v| round2(*v)).collect::<Vec<_>>()),
    );
    f.put("load_avg_1min", &load.map(|l| round2(l.load1)));
    f.put("load_avg_5min", &load.map(|l| round2(l.load5)));
    f.put("load_avg_15min", &load.map(|l| round2(l.load15)));
    let modes = cpu.and_then(|c| c.modes_percent.as_ref());
    f.object_or_null("cpu_modes_percent", modes, |f, modes| {
        for (name, value) in modes.named() {
            f.put(name, &round2(value));
        }
    });
}

fn memory(f: &mut Fields, m: &Metrics) {
    let mem = m.memory.as_ref();
    let vm = m.vmstat.as_ref();
    let g = |get: fn(&MemoryMetrics) -> u64| mem.map(|mem| gib(get(mem)));
    f.put("memory_total_gb", &g(|m| m.total_bytes));
    f.put("memory_used_gb", &g(|m| m.used_bytes()));
    f.put("memory_available_gb", &g(|m| m.available_bytes));
    f.put(
        "memory_usage_percent",
        &mem.map(|m| percent(m.used_bytes() as f64, m.total_bytes as f64)),
    );
    f.put("swap_total_gb", &g(|m| m.swap_total_bytes));
    f.put("swap_used_gb", &g(|m| m.swap_used_bytes()));
    f.put(
        "swap_usage_percent",
        &mem.map(|m| percent(m.swap_used_bytes() as f64, m.swap_total_bytes as f64)),
    );
    f.put("memory_free_gb", &g(|m| m.free_bytes));
    f.put("memory_buffers_gb", &g(|m| m.buffers_bytes));
    f.put("memory_cached_gb", &g(|m| m.cached_bytes));
    f.put("memory_shared_gb", &g(|m| m.shared_bytes));
    f.put("memory_slab_gb", &g(|m| m.slab_bytes));
    let rate = |get: fn(&super::VmstatMetrics) -> Option<f64>| vm.and_then(get).map(round2);
    f.put("swap_in_pages_per_sec", &rate(|v| v.swap_in_pages_per_sec));
    f.put(
        "swap_out_pages_per_sec",
        &rate(|v| v.swap_out_pages_per_sec),
    );
    f.put("major_faults_per_sec", &rate(|v| v.major_faults_per_sec));
}

fn pressure(f: &mut Fields, m: &Metrics) {
    let p = m.pressure.as_ref();
    let lines = [
        ("cpu_some", p.and_then(|p| p.cpu_some.as_ref())),
        ("memory_some", p.and_then(|p| p.memory_some.as_ref())),
        ("memory_full", p.and_then(|p| p.memory_full.as_ref())),
        ("io_some", p.and_then(|p| p.io_some.as_ref())),
        ("io_full", p.and_then(|p| p.io_full.as_ref())),
    ];
    type Field = fn(&PsiLine) -> Option<f64>;
    let fields: [(&str, Field); 4] = [
        ("avg10", |l| Some(l.avg10)),
        ("avg60", |l| Some(l.avg60)),
        ("avg300", |l| Some(l.avg300)),
        ("stall_ms_per_sec", |l| l.stall_ms_per_sec),
    ];
    for (prefix, line) in lines {
        for (name, get) in fields {
            f.put(&format!("{prefix}_{name}"), &line.and_then(get).map(round2));
        }
    }
}

fn disk(f: &mut Fields, m: &Metrics) {
    f.object_or_null("disk_usage", m.filesystems.as_ref(), |f, mounts| {
        for mount in mounts {
            f.object(&mount.mount, |f| {
                f.put("total_gb", &gib(mount.total_bytes));
                f.put("used_gb", &gib(mount.used_bytes));
                f.put("free_gb", &gib(mount.avail_bytes));
                f.put("usage_percent", &mount.usage_percent());
                f.put("fs_type", &mount.fs_type);
                f.put("device", &mount.device);
                f.put("inodes_total", &mount.inodes_total);
                f.put("inodes_used", &mount.inodes_used());
                f.put("inodes_usage_percent", &mount.inodes_usage_percent());
            });
        }
    });
    let io = m.disk_io.as_ref();
    f.object("disk_io", |f| {
        f.put(
            "read_mb_per_sec",
            &io.map(|io| mib_per_sec(io.read_bytes_per_sec)),
        );
        f.put(
            "write_mb_per_sec",
            &io.map(|io| mib_per_sec(io.write_bytes_per_sec)),
        );
        f.object_or_null("devices", io, |f, io| {
            for d in &io.devices {
                f.object(&d.name, |f| {
                    f.put("read_mb_per_sec", &mib_per_sec(d.read_bytes_per_sec));
                    f.put("write_mb_per_sec", &mib_per_sec(d.write_bytes_per_sec));
                    f.put("reads_per_sec", &round2(d.reads_per_sec));
                    f.put("writes_per_sec", &round2(d.writes_per_sec));
                    f.put("util_percent", &round2(d.util_percent));
                    f.put("read_await_ms", &round2(d.read_await_ms));
                    f.put("write_await_ms", &round2(d.write_await_ms));
                    f.put("in_flight", &d.in_flight);
                });
            }
        });
    });
}

fn network(f: &mut Fields, m: &Metrics) {
    let net = m.network.as_ref();
    f.put(
        "bytes_sent_mb_per_sec",
        &net.map(|n| mib_per_sec(n.tx_bytes_per_sec())),
    );
    f.put(
        "bytes_recv_mb_per_sec",
        &net.map(|n| mib_per_sec(n.rx_bytes_per_sec())),
    );
    f.put("packets_sent", &net.map(|n| n.tx_packets()));
    f.put("packets_recv", &net.map(|n| n.rx_packets()));
    let tcp = &m.tcp;
    f.put("active_connections", &tcp.curr_estab);
    f.object_or_null("interfaces", net, |f, net| {
        for i in &net.interfaces {
            f.object(&i.name, |f| {
                f.put("rx_bytes", &i.rx_bytes);
                f.put("tx_bytes", &i.tx_bytes);
                f.put("rx_bytes_per_sec", &round2(i.rx_bytes_per_sec));
                f.put("tx_bytes_per_sec", &round2(i.tx_bytes_per_sec));
                f.put("rx_errors", &i.rx_errors);
                f.put("tx_errors", &i.tx_errors);
                f.put("rx_dropped", &i.rx_dropped);
                f.put("tx_dropped", &i.tx_dropped);
                f.put("rx_packets", &i.rx_packets);
                f.put("tx_packets", &i.tx_packets);
                f.put("oper_state", &i.oper_state);
            });
        }
    });
    let r = |v: Option<f64>| v.map(round2);
    f.object("tcp", |f| {
        f.put("in_use", &tcp.in_use);
        f.put("time_wait", &tcp.time_wait);
        f.put("orphan", &tcp.orphan);
        f.put("retrans_segs_per_sec", &r(tcp.retrans_segs_per_sec));
        f.put("listen_overflows_per_sec", &r(tcp.listen_overflows_per_sec));
        f.put("listen_drops_per_sec", &r(tcp.listen_drops_per_sec));
        f.put("resets_sent_per_sec", &r(tcp.resets_sent_per_sec));
    });
}

fn processes(f: &mut Fields, m: &Metrics) {
    let p = m.processes.as_ref();
    let activity = m.activity.as_ref();
    f.put("process_count", &p.map(|p| p.count));
    f.put("running", &activity.map(|a| a.procs_running));
    f.put("blocked", &activity.map(|a| a.procs_blocked));
    f.objects_or_null("top_memory_processes", p.map(|p| &p.top_memory), |f, t| {
        f.put("pid", &t.pid);
        f.put("name", &t.name);
        f.put("memory_percent", &t.memory_percent.map(round2));
    });
    f.put("threads", &p.and_then(|p| p.threads));
    f.put("zombies", &p.and_then(|p| p.zombies));
    f.objects_or_null("top_cpu_processes", p.map(|p| &p.top_cpu), |f, t| {
        f.put("pid", &t.pid);
        f.put("name", &t.name);
        f.put("cpu_percent", &round2(t.cpu_percent));
    });
}

fn system(f: &mut Fields, m: &Metrics) {
    let s = &m.system;
    let a = m.activity.as_ref();
    let rate = |get: fn(&super::ActivityMetrics) -> Option<f64>| a.and_then(get).map(round2);
    f.put("uptime_seconds", &s.uptime_seconds);
    f.put("boot_id", &s.boot_id);
    f.put(
        "context_switches_per_sec",
        &rate(|a| a.context_switches_per_sec),
    );
    f.put("interrupts_per_sec", &rate(|a| a.interrupts_per_sec));
    f.put("forks_per_sec", &rate(|a| a.forks_per_sec));
    f.put("file_descriptors_allocated", &s.file_descriptors_allocated);
    f.put("file_descriptors_max", &s.file_descriptors_max);
    f.put("clock_synced", &s.clock_synced);
    f.put("clock_max_error_ms", &s.clock_max_error_ms.map(round2));
    f.put("kernel", &s.kernel);
    f.put("os", &s.os);
    f.put(
        "boot_time",
        &a.map(|a| format_timestamp(UNIX_EPOCH + Duration::from_secs(a.boot_time_unix))),
    );
}

/// The unit fields of SPEC §3.3, in the contract's order (the model also
/// keeps each unit's raw counters, which the stream form leaves out).
fn units(f: &mut Fields, units: &std::collections::BTreeMap<String, super::UnitMetrics>) {
    let r = |v: Option<f64>| v.map(round2);
    for (name, u) in units {
        f.object(name, |f| {
            f.put("cpu_percent", &r(u.cpu_percent));
            f.put("memory_mb", &r(u.memory_mb));
            f.put("tasks", &u.tasks);
            f.put("io_read_mb_per_sec", &r(u.io_read_mb_per_sec));
            f.put("io_write_mb_per_sec", &r(u.io_write_mb_per_sec));
            f.put("cpu_pressure_some_avg10", &r(u.cpu_pressure_some_avg10));
            f.put(
                "memory_pressure_some_avg10",
                &r(u.memory_pressure_some_avg10),
            );
            f.put("io_pressure_some_avg10", &r(u.io_pressure_some_avg10));
        });
    }
}
