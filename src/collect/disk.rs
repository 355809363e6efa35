//! Collector `disk`: I/O of whole block devices from /proc/diskstats, per
//! device (bytes, operations, utilisation, latency) and summed.

use super::{counter_rate, invalid, previous, reused_entry, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{DeviceMetrics, DiskIoMetrics, Metrics};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// /proc/diskstats counts sectors of 512 bytes, whatever the device's sector size.
pub const SECTOR_BYTES: u64 = 512;

/// Block devices that are not physical disks, or that sit on top of other
/// disks whose I/O is already counted (device mapper, md RAID).
const VIRTUAL_DEVICE_PREFIXES: [&str; 5] = ["loop", "ram", "zram", "dm-", "md"];

/// The cumulative counters of one whole disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub name: String,
    pub reads: u64,
    pub read_sectors: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    pub in_flight: u64,
    pub io_ms: u64,
}

/// True for names that are never counted, whatever /sys says.
pub fn is_virtual_device(name: &str) -> bool {
    VIRTUAL_DEVICE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// How often (in samples) which devices count is looked at again.
const RECHECK_EVERY: u64 = 64;

/// For a path of an NVMe multipath namespace (`nvme0c1n1`, a hidden disk
/// of its own in /proc/diskstats), its head (`nvme0n1`, the device that is
/// mounted).
pub fn nvme_path_head(name: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let rest = name.strip_prefix("nvme")?;
    let (subsystem, rest) = rest.split_once('c')?;
    let (controller, namespace) = rest.split_once('n')?;
    (digits(subsystem) && digits(controller) && digits(namespace))
        .then(|| format!("nvme{subsystem}n{namespace}"))
}

/// Whether `name` is a path (`nvme0c1n1`) of the multipath head `head`
/// (`nvme0n1`), compared in place.
fn is_path_of(name: &str, head: &str) -> bool {
    let (Some(path), Some(head)) = (name.strip_prefix("nvme"), head.strip_prefix("nvme")) else {
        return false;
    };
    let Some((subsystem, namespace)) = head.split_once('n') else {
        return false;
    };
    let Some(rest) = path
        .strip_prefix(subsystem)
        .and_then(|r| r.strip_prefix('c'))
    else {
        return false;
    };
    match rest.split_once('n') {
        Some((controller, ns)) => {
            ns == namespace
                && !controller.is_empty()
                && controller.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Whether a /proc/diskstats device is a whole disk that counts: in
/// /sys/block (not a partition) and not a virtual one stacked on others.
pub fn is_counted_disk(sys_block: &Path, name: &str) -> bool {
    !is_virtual_device(name) && sys_block.join(name.replace('/', "!")).exists()
}

/// Which NVMe multipath heads count their paths' I/O, so that it is counted
/// once: since Linux 6.2 the head (`nvme0n1`) accounts the I/O of its paths
/// (`nvme0c0n1`, `nvme0c1n1`), which keep their own counts too; before
/// that, or with the head's `queue/iostats` switched off (at any time), the
/// head's counters stand still and only the paths count. Judged on every
/// sample from what moved: a head that moved counts; one that stood still
/// while a path moved does not; with nothing moving, the last judgement
/// (at first: whether the head ever counted anything) stands, so that the
/// device list does not flap on an idle disk.
#[derive(Debug, Default)]
pub struct MultipathHeads {
    counting: HashMap<String, bool>,
}

impl MultipathHeads {
    /// Updates the judgement from two readings of the devices.
    pub fn update(&mut self, prev: &[DiskCounters], cur: &[DiskCounters]) {
        if !cur.iter().any(|d| nvme_path_head(&d.name).is_some()) {
            self.counting.clear();
            return; // no multipath: nothing to look at, nothing allocated
        }
        let ops = |d: &DiskCounters| d.reads.saturating_add(d.writes);
        let moved = |d: &DiskCounters| match prev.iter().find(|p| p.name == d.name) {
            Some(p) => ops(d) != ops(p),
            None => false,
        };
        for path in cur {
            let Some(head_name) = nvme_path_head(&path.name) else {
                continue;
            };
            let Some(head) = cur.iter().find(|d| d.name == head_name) else {
                continue;
            };
            let judged = if moved(head) {
                Some(true)
            } else if moved(path) {
                Some(false)
            } else {
                None
            };
            let entry = self
                .counting
                .entry(head_name)
                .or_insert_with(|| ops(head) > 0);
            if let Some(judged) = judged {
                *entry = judged;
            }
        }
        self.counting
            .retain(|head, _| cur.iter().any(|d| d.name == *head));
    }

    /// Whether a device's figures count: not a path whose head counts them.
    /// (No allocation: it is asked for every device on every sample.)
    pub fn counted(&self, name: &str) -> bool {
        !self
            .counting
            .iter()
            .any(|(head, counts)| *counts && is_path_of(name, head))
    }
}

/// Parses /proc/diskstats into `out` (reusing it), keeping only the devices
/// for which `is_whole_disk(name)` holds. Fields after the name: reads,
/// merged, sectors, ms reading, writes, merged, sectors, ms writing, in
/// flight, ms doing I/O, ...
pub fn parse_diskstats(
    text: &str,
    mut is_whole_disk: impl FnMut(&str) -> bool,
    out: &mut Vec<DiskCounters>,
) -> io::Result<()> {
    let mut used = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || invalid(format!("bad /proc/diskstats line {line:?}"));
        let mut t = line.split_ascii_whitespace();
        let number = |s: Option<&str>| s.and_then(|s| procfs::parse_u64(s.as_bytes()));
        let (Some(_), Some(_), Some(name)) = (number(t.next()), number(t.next()), t.next()) else {
            return Err(bad());
        };
        if !is_whole_disk(name) {
            continue;
        }
        let mut v = [0u64; 10];
        for slot in &mut v {
            *slot = t
                .next()
                .and_then(|s| procfs::parse_u64(s.as_bytes()))
                .ok_or_else(bad)?;
        }
        let entry = reused_entry(out, used);
        entry.name.clear();
        entry.name.push_str(name);
        entry.reads = v[0];
        entry.read_sectors = v[2];
        entry.read_ms = v[3];
        entry.writes = v[4];
        entry.write_sectors = v[6];
        entry.write_ms = v[7];
        entry.in_flight = v[8];
        entry.io_ms = v[9];
        used += 1;
    }
    out.truncate(used);
    Ok(())
}

/// Δ(ms spent) / Δ(operations completed); 0 when none completed.
fn await_ms(prev_ms: u64, cur_ms: u64, prev_ops: u64, cur_ops: u64) -> f64 {
    let ops = cur_ops.saturating_sub(prev_ops);
    if ops == 0 || cur_ms < prev_ms {
        0.0
    } else {
        (cur_ms - prev_ms) as f64 / ops as f64
    }
}

/// The figures of one device over `elapsed` since `prev` (None: the device
/// was not there at the previous reading, so its rates are 0 this time).
pub fn device_metrics(
    prev: Option<&DiskCounters>,
    c: &DiskCounters,
    elapsed: Duration,
) -> DeviceMetrics {
    let mut d = DeviceMetrics {
        name: c.name.clone(),
        reads_total: c.reads,
        writes_total: c.writes,
        read_bytes_total: c.read_sectors.saturating_mul(SECTOR_BYTES),
        written_bytes_total: c.write_sectors.saturating_mul(SECTOR_BYTES),
        read_time_ms_total: c.read_ms,
        write_time_ms_total: c.write_ms,
        io_time_ms_total: c.io_ms,
        in_flight: c.in_flight,
        ..DeviceMetrics::default()
    };
    if let Some(p) = prev {
        d.read_bytes_per_sec =
            counter_rate(p.read_sectors, c.read_sectors, elapsed) * SECTOR_BYTES as f64;
        d.write_bytes_per_sec =
            counter_rate(p.write_sectors, c.write_sectors, elapsed) * SECTOR_BYTES as f64;
        d.reads_per_sec = counter_rate(p.reads, c.reads, elapsed);
        d.writes_per_sec = counter_rate(p.writes, c.writes, elapsed);
        // ms of I/O per ms of wall time.
        d.util_percent = (counter_rate(p.io_ms, c.io_ms, elapsed) / 10.0).clamp(0.0, 100.0);
        d.read_await_ms = await_ms(p.read_ms, c.read_ms, p.reads, c.reads);
        d.write_await_ms = await_ms(p.write_ms, c.write_ms, p.writes, c.writes);
    }
    d
}

/// Per-device figures and their sums for every disk in `cur`.
pub fn io_metrics(prev: &[DiskCounters], cur: &[DiskCounters], elapsed: Duration) -> DiskIoMetrics {
    io_metrics_of(prev, cur, elapsed, |_| true)
}

/// The same, for the disks of `cur` that `counted` keeps.
fn io_metrics_of(
    prev: &[DiskCounters],
    cur: &[DiskCounters],
    elapsed: Duration,
    counted: impl Fn(&str) -> bool,
) -> DiskIoMetrics {
    let devices: Vec<DeviceMetrics> = cur
        .iter()
        .enumerate()
        .filter(|(_, c)| counted(&c.name))
        .map(|(i, c)| {
            let before = previous(prev, i, |p| p.name == c.name);
            device_metrics(before, c, elapsed)
        })
        .collect();
    DiskIoMetrics {
        read_bytes_per_sec: devices.iter().fold(0.0, |a, d| a + d.read_bytes_per_sec),
        write_bytes_per_sec: devices.iter().fold(0.0, |a, d| a + d.write_bytes_per_sec),
        devices,
    }
}

/// The whole-disk cache and the previous diskstats reading.
pub struct DiskCollector {
    diskstats: ProcFile,
    sys_block: PathBuf,
    reader: FileReader,
    whole_disk: HashMap<String, bool>,
    multipath: MultipathHeads,
    reads: u64,
    prev: Vec<DiskCounters>,
    prev_at: Option<Instant>,
    cur: Vec<DiskCounters>,
}

impl DiskCollector {
    pub fn new(roots: &Roots) -> DiskCollector {
        DiskCollector {
            diskstats: ProcFile::new(roots.proc.join("diskstats")),
            sys_block: roots.sys.join("block"),
            reader: FileReader::new(),
            whole_disk: HashMap::new(),
            multipath: MultipathHeads::default(),
            reads: 0,
            prev: Vec::new(),
            prev_at: None,
            cur: Vec::new(),
        }
    }

    fn read(&mut self) -> io::Result<()> {
        let bytes = self.diskstats.read(&mut self.reader)?;
        let (cache, sys_block) = (&mut self.whole_disk, &self.sys_block);
        let mut seen = 0;
        parse_diskstats(
            &procfs::text(bytes),
            |name| {
                seen += 1;
                if let Some(whole) = cache.get(name) {
                    return *whole;
                }
                let whole = is_counted_disk(sys_block, name);
                cache.insert(name.to_string(), whole);
                whole
            },
            &mut self.cur,
        )?;
        self.multipath.update(&self.prev, &self.cur);
        // Devices come and go (hot plug, loop devices): look again now and
        // then, and keep the cache bounded.
        self.reads += 1;
        if self.reads % RECHECK_EVERY == 0 || self.whole_disk.len() > 2 * seen + 64 {
            self.whole_disk.clear();
        }
        Ok(())
    }
}

impl Collect for DiskCollector {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn collect(&mut self, now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        self.read()
            .map_err(|e| CollectError::new(self.diskstats.path(), e))?;
        let counted = |name: &str| self.multipath.counted(name);
        let metrics = match self.prev_at {
            Some(then) => io_metrics_of(
                &self.prev,
                &self.cur,
                now.saturating_duration_since(then),
                counted,
            ),
            // No baseline (only when the start-up read failed): rates 0.
            None => io_metrics_of(&[], &self.cur, Duration::ZERO, counted),
        };
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.prev_at = Some(now);
        m.disk_io = Some(metrics);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_multipath_io_is_counted_once_on_the_head_or_on_the_paths() {
        assert_eq!(nvme_path_head("nvme0c1n1").as_deref(), Some("nvme0n1"));
        assert_eq!(nvme_path_head("nvme12c3n4").as_deref(), Some("nvme12n4"));
        for not_a_path in ["nvme0n1", "nvme0n1p1", "nvmec1n1", "nvme0c1n", "sda"] {
            assert_eq!(nvme_path_head(not_a_path), None, "{not_a_path}");
        }
        let disk = |name: &str, reads: u64, writes: u64| DiskCounters {
            name: name.into(),
            reads,
            writes,
            ..Default::default()
        };
        let reading = |head: u64, path0: u64, path1: u64| {
            vec![
                disk("nvme0c0n1", path0, 0),
                disk("nvme0c1n1", path1, 0),
                disk("nvme0n1", head, 0),
                disk("sda", 4, 0),
            ]
        };
        let counted = |heads: &MultipathHeads| -> Vec<&str> {
            ["nvme0c0n1", "nvme0c1n1", "nvme0n1", "sda"]
                .into_iter()
                .filter(|n| heads.counted(n))
                .collect()
        };
        // Before Linux 6.2: the head shows nothing, the paths carry the I/O.
        let mut heads = MultipathHeads::default();
        heads.update(&[], &reading(0, 50, 30));
        assert_eq!(
            counted(&heads),
            ["nvme0c0n1", "nvme0c1n1", "nvme0n1", "sda"]
        );
        heads.update(&reading(0, 50, 30), &reading(0, 60, 30));
        assert_eq!(
            counted(&heads),
            ["nvme0c0n1", "nvme0c1n1", "nvme0n1", "sda"]
        );
        // Since 6.2 the head counts its paths' I/O as well: only the head.
        let mut heads = MultipathHeads::default();
        heads.update(&[], &reading(80, 50, 30));
        assert_eq!(counted(&heads), ["nvme0n1", "sda"]);
        // Idle: the judgement stands (no flapping).
        heads.update(&reading(80, 50, 30), &reading(80, 50, 30));
        assert_eq!(counted(&heads), ["nvme0n1", "sda"]);
        // iostats switched off on the head: it stands still at 80 while a
        // path moves, so the paths count again.
        heads.update(&reading(80, 50, 30), &reading(80, 70, 30));
        assert_eq!(
            counted(&heads),
            ["nvme0c0n1", "nvme0c1n1", "nvme0n1", "sda"]
        );
        // And on again.
        heads.update(&reading(80, 70, 30), &reading(95, 85, 30));
        assert_eq!(counted(&heads), ["nvme0n1", "sda"]);
        // Another namespace's paths are not this head's.
        let mut heads = MultipathHeads::default();
        heads.update(
            &[],
            &[
                disk("nvme0n1", 9, 0),
                disk("nvme0c0n2", 5, 0),
                disk("nvme0n2", 0, 0),
            ],
        );
        assert!(heads.counted("nvme0c0n2"));
        let sys = tempfile::tempdir().unwrap();
        let block = sys.path().join("block");
        for dev in ["nvme0n1", "nvme0c0n1", "sda", "loop0"] {
            std::fs::create_dir_all(block.join(dev)).unwrap();
        }
        let whole: Vec<&str> = ["nvme0c0n1", "nvme0n1", "nvme0n1p1", "sda", "loop0"]
            .into_iter()
            .filter(|n| is_counted_disk(&block, n))
            .collect();
        assert_eq!(whole, ["nvme0c0n1", "nvme0n1", "sda"]);
    }

    #[test]
    fn util_and_await() {
        let a = DiskCounters {
            name: "sda".into(),
            reads: 100,
            read_ms: 1000,
            writes: 10,
            write_ms: 50,
            io_ms: 5_000,
            ..Default::default()
        };
        let b = DiskCounters {
            reads: 110,
            read_ms: 1040,
            writes: 10,
            write_ms: 50,
            io_ms: 5_250,
            in_flight: 3,
            ..a.clone()
        };
        let d = device_metrics(Some(&a), &b, Duration::from_secs(1));
        assert_eq!(d.util_percent, 25.0);
        assert_eq!(d.read_await_ms, 4.0);
        assert_eq!(d.write_await_ms, 0.0);
        assert_eq!(d.reads_per_sec, 10.0);
        assert_eq!(d.in_flight, 3);
        let fresh = device_metrics(None, &b, Duration::from_secs(1));
        assert_eq!((fresh.util_percent, fresh.reads_per_sec), (0.0, 0.0));
        assert_eq!(fresh.reads_total, 110);
    }
}
