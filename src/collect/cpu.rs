//! CPU usage, total and per core, from the jiffy counters in /proc/stat;
//! the same file gives procs_running and procs_blocked.

use super::invalid;
use crate::procfs::{self, FileReader, ProcFile};
use std::io;
use std::path::Path;

/// user nice system idle iowait irq softirq steal. guest and guest_nice are
/// left out: the kernel already counts them in user and nice.
const FIELDS: usize = 8;
const IDLE: usize = 3;
const IOWAIT: usize = 4;

/// One `cpu` or `cpuN` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes(pub [u64; FIELDS]);

/// The busy share of the time between two readings, 0..=100. Each field's
/// delta saturates at 0 (iowait is known to go backwards on idle CPUs), so a
/// reset never yields a negative or huge figure.
pub fn busy_percent(prev: &CpuTimes, cur: &CpuTimes) -> f64 {
    let (mut busy, mut idle) = (0u64, 0u64);
    for i in 0..FIELDS {
        let delta = cur.0[i].saturating_sub(prev.0[i]);
        if i == IDLE || i == IOWAIT {
            idle = idle.saturating_add(delta);
        } else {
            busy = busy.saturating_add(delta);
        }
    }
    let total = busy.saturating_add(idle);
    if total == 0 {
        0.0
    } else {
        (busy as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
    }
}

/// What one read of /proc/stat yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatSample {
    pub total: CpuTimes,
    /// (N, times) for every `cpuN` line, in file order (offline CPUs have none).
    pub cores: Vec<(u32, CpuTimes)>,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

/// Parses /proc/stat into `out`, reusing its core list.
pub fn parse_stat(text: &str, out: &mut StatSample) -> io::Result<()> {
    out.cores.clear();
    out.procs_running = 0;
    out.procs_blocked = 0;
    let mut saw_total = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu") {
            let (label, values) = rest.split_once(' ').unwrap_or((rest, ""));
            let times =
                parse_times(values).ok_or_else(|| invalid(format!("bad cpu line {line:?}")))?;
            if label.is_empty() {
                out.total = times;
                saw_total = true;
            } else if let Some(n) = procfs::parse_u64(label.as_bytes()) {
                out.cores.push((n as u32, times));
            }
        } else if let Some(v) = line.strip_prefix("procs_running ") {
            out.procs_running = procfs::parse_u64(v.trim().as_bytes()).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("procs_blocked ") {
            out.procs_blocked = procfs::parse_u64(v.trim().as_bytes()).unwrap_or(0);
        }
    }
    if saw_total {
        Ok(())
    } else {
        Err(invalid("no \"cpu\" line"))
    }
}

/// Parses the counters after the label; kernels older than the last fields
/// print fewer of them, which count as 0.
fn parse_times(values: &str) -> Option<CpuTimes> {
    let mut times = CpuTimes::default();
    let mut parsed = 0;
    for (slot, token) in times.0.iter_mut().zip(values.split_ascii_whitespace()) {
        *slot = procfs::parse_u64(token.as_bytes())?;
        parsed += 1;
    }
    (parsed >= 4).then_some(times)
}

/// Total and per-core busy percentages between two readings. A core with no
/// previous reading (it just came online) reports 0 for this interval.
pub fn usage(prev: &StatSample, cur: &StatSample) -> (f64, Vec<f64>) {
    let total = busy_percent(&prev.total, &cur.total);
    let per_core = cur
        .cores
        .iter()
        .enumerate()
        .map(|(i, (n, times))| {
            // Cores are almost always at the same position as last time.
            let before = match prev.cores.get(i) {
                Some((m, t)) if m == n => Some(t),
                _ => prev.cores.iter().find(|(m, _)| m == n).map(|(_, t)| t),
            };
            before.map_or(0.0, |b| busy_percent(b, times))
        })
        .collect();
    (total, per_core)
}

/// The figures the collector needs from one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuReading {
    pub usage_percent: f64,
    pub per_core_percent: Vec<f64>,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

/// The previous /proc/stat reading and the buffers for the next one.
#[derive(Debug)]
pub struct CpuState {
    file: ProcFile,
    prev: Option<StatSample>,
    cur: StatSample,
}

impl CpuState {
    pub fn new(proc: &Path) -> CpuState {
        CpuState {
            file: ProcFile::new(proc.join("stat")),
            prev: None,
            cur: StatSample::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads /proc/stat; percentages cover the time since the last successful
    /// reading (0 when there is none yet).
    pub fn sample(&mut self, reader: &mut FileReader) -> io::Result<CpuReading> {
        let bytes = self.file.read(reader)?;
        parse_stat(&procfs::text(bytes), &mut self.cur)?;
        let (usage_percent, per_core_percent) = match &self.prev {
            Some(prev) => usage(prev, &self.cur),
            None => (0.0, vec![0.0; self.cur.cores.len()]),
        };
        let reading = CpuReading {
            usage_percent,
            per_core_percent,
            procs_running: self.cur.procs_running,
            procs_blocked: self.cur.procs_blocked,
        };
        // Keep this reading as the next baseline and reuse the old one's buffers.
        let prev = self.prev.get_or_insert_with(StatSample::default);
        std::mem::swap(prev, &mut self.cur);
        Ok(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share() {
        let a = CpuTimes([100, 0, 50, 800, 50, 0, 0, 0]);
        let b = CpuTimes([160, 0, 70, 900, 70, 0, 0, 0]);
        // busy +80, idle +120 → 40 %
        assert_eq!(busy_percent(&a, &b), 40.0);
        assert_eq!(busy_percent(&b, &b), 0.0);
    }

    #[test]
    fn iowait_going_backwards_is_not_negative() {
        let a = CpuTimes([100, 0, 0, 800, 50, 0, 0, 0]);
        let b = CpuTimes([150, 0, 0, 850, 10, 0, 0, 0]);
        assert_eq!(busy_percent(&a, &b), 50.0);
    }

    #[test]
    fn old_kernel_with_four_fields() {
        let mut s = StatSample::default();
        parse_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n", &mut s).unwrap();
        assert_eq!(s.total, CpuTimes([1, 2, 3, 4, 0, 0, 0, 0]));
        assert_eq!(s.cores.len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = StatSample::default();
        assert!(parse_stat("", &mut s).is_err());
        assert!(parse_stat("cpu x y z w\n", &mut s).is_err());
    }
}
