//! Collector `cpu`: /proc/stat gives CPU time by mode, total and per core,
//! and the kernel's activity counters (context switches, interrupts, forks,
//! running and blocked tasks, boot time), all in one read.

use super::{counter_rate, invalid, read_parsed, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{ActivityMetrics, CpuMetrics, CpuModes, Metrics};
use std::io;
use std::time::Instant;

/// user nice system idle iowait irq softirq steal guest guest_nice.
const FIELDS: usize = 10;
const USER: usize = 0;
const NICE: usize = 1;
const IDLE: usize = 3;
const IOWAIT: usize = 4;
const STEAL: usize = 7;
const GUEST: usize = 8;
const GUEST_NICE: usize = 9;

/// One `cpu` or `cpuN` line, in clock ticks (USER_HZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes(pub [u64; FIELDS]);

impl CpuTimes {
    /// All the time there is: the first eight fields (guest time is
    /// already counted in user and nice).
    fn total(&self) -> u64 {
        self.0[..=STEAL]
            .iter()
            .fold(0u64, |a, v| a.saturating_add(*v))
    }

    /// The nine modes of SPEC §3.3 as tick counts.
    fn modes(&self) -> [u64; 9] {
        let t = &self.0;
        [
            t[USER].saturating_sub(t[GUEST]),
            t[NICE].saturating_sub(t[GUEST_NICE]),
            t[2],
            t[IDLE],
            t[IOWAIT],
            t[5],
            t[6],
            t[STEAL],
            t[GUEST].saturating_add(t[GUEST_NICE]),
        ]
    }
}

fn modes_from(values: [f64; 9]) -> CpuModes {
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest] = values;
    CpuModes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
    }
}

/// Per-field deltas between two readings, each saturating at 0 (iowait is
/// known to go backwards on idle CPUs).
fn deltas(prev: &CpuTimes, cur: &CpuTimes) -> CpuTimes {
    let mut d = CpuTimes::default();
    for i in 0..FIELDS {
        d.0[i] = cur.0[i].saturating_sub(prev.0[i]);
    }
    d
}

/// The busy share of the time between two readings (everything but idle
/// and iowait), 0..=100.
pub fn busy_percent(prev: &CpuTimes, cur: &CpuTimes) -> f64 {
    let d = deltas(prev, cur);
    let total = d.total();
    if total == 0 {
        return 0.0;
    }
    let idle = d.0[IDLE].saturating_add(d.0[IOWAIT]);
    (total.saturating_sub(idle) as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
}

/// Each mode's share of the time between two readings; the nine sum to 100
/// (all 0 when no time passed).
pub fn mode_percentages(prev: &CpuTimes, cur: &CpuTimes) -> CpuModes {
    let d = deltas(prev, cur);
    let modes = d.modes();
    let sum: u64 = modes.iter().sum();
    if sum == 0 {
        return CpuModes::default();
    }
    modes_from(modes.map(|v| v as f64 / sum as f64 * 100.0))
}

/// Cumulative seconds per mode.
pub fn mode_seconds(times: &CpuTimes, ticks_per_sec: f64) -> CpuModes {
    seconds_from_ticks(times.modes(), ticks_per_sec)
}

fn seconds_from_ticks(ticks: [u64; 9], ticks_per_sec: f64) -> CpuModes {
    modes_from(ticks.map(|v| v as f64 / ticks_per_sec))
}

/// The per-mode tick counts exported as counters. iowait goes backwards by
/// a little on idle CPUs (the kernel says so in
/// Documentation/filesystems/proc.rst), and a counter that steps back is a
/// reset to Prometheus' `rate()` and to OTLP's cumulative sums: a step back
/// smaller than `HOLD_SECONDS` is held at the highest value until the
/// count passes it again. A larger one is real (a CPU going offline takes
/// its share of idle and iowait out of the sum) and passes as the kernel
/// gives it, as does anything after a restart of the daemon: the counters
/// stay the kernel's own, give or take a few seconds. The shares of the
/// interval use the readings as they are.
#[derive(Debug)]
pub struct MonotonicModes {
    high: [u64; 9],
    /// `HOLD_SECONDS` in ticks.
    hold: u64,
}

/// The largest step back that is held, in seconds of CPU time.
pub const HOLD_SECONDS: u64 = 5;

impl MonotonicModes {
    pub fn new(ticks_per_sec: u64) -> MonotonicModes {
        MonotonicModes {
            high: [0; 9],
            hold: HOLD_SECONDS.saturating_mul(ticks_per_sec),
        }
    }

    pub fn update(&mut self, times: &CpuTimes) -> [u64; 9] {
        for (high, now) in self.high.iter_mut().zip(times.modes()) {
            if now >= *high || *high - now > self.hold {
                *high = now;
            }
        }
        self.high
    }
}

/// What one read of /proc/stat yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatSample {
    pub total: CpuTimes,
    /// (N, times) for every `cpuN` line, in file order (offline CPUs have none).
    pub cores: Vec<(u32, CpuTimes)>,
    pub ctxt: u64,
    pub intr: u64,
    pub forks: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
    pub btime: u64,
}

/// Parses /proc/stat into `out`, reusing its core list. The `cpu` line,
/// ctxt, processes and btime are required (every kernel since 2.6 has them).
pub fn parse_stat(text: &str, out: &mut StatSample) -> io::Result<()> {
    out.cores.clear();
    out.procs_running = 0;
    out.procs_blocked = 0;
    let (mut saw_total, mut saw_ctxt, mut saw_forks, mut saw_btime) = (false, false, false, false);
    let number = |line: &str, v: &str| {
        let first = v.split_ascii_whitespace().next().unwrap_or("");
        procfs::parse_u64(first.as_bytes()).ok_or_else(|| invalid(format!("bad line {line:?}")))
    };
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
        } else if let Some((key, v)) = line.split_once(' ') {
            match key {
                "ctxt" => (out.ctxt, saw_ctxt) = (number(line, v)?, true),
                // The first figure is the total; the per-source ones follow.
                "intr" => out.intr = number(line, v)?,
                "processes" => (out.forks, saw_forks) = (number(line, v)?, true),
                "procs_running" => out.procs_running = number(line, v)?,
                "procs_blocked" => out.procs_blocked = number(line, v)?,
                "btime" => (out.btime, saw_btime) = (number(line, v)?, true),
                _ => {}
            }
        }
    }
    match (saw_total, saw_ctxt, saw_forks, saw_btime) {
        (false, ..) => Err(invalid("no \"cpu\" line")),
        (_, false, ..) => Err(invalid("no \"ctxt\" line")),
        (_, _, false, _) => Err(invalid("no \"processes\" line")),
        (.., false) => Err(invalid("no \"btime\" line")),
        _ => Ok(()),
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

/// Reads /proc/stat; keeps the previous reading for rates.
#[derive(Debug)]
pub struct CpuCollector {
    file: ProcFile,
    reader: FileReader,
    prev: Option<(StatSample, Instant)>,
    cur: StatSample,
    exported: MonotonicModes,
    ticks_per_sec: f64,
}

impl CpuCollector {
    pub fn new(roots: &Roots) -> CpuCollector {
        CpuCollector {
            file: ProcFile::whole(roots.proc.join("stat")),
            reader: FileReader::new(),
            prev: None,
            cur: StatSample::default(),
            exported: MonotonicModes::new(procfs::clock_ticks_per_sec() as u64),
            ticks_per_sec: procfs::clock_ticks_per_sec(),
        }
    }
}

impl Collect for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let cur = &mut self.cur;
        read_parsed(&mut self.reader, &mut self.file, |t| parse_stat(t, cur))?;
        let cur = &self.cur;
        // No previous reading (only when the start-up read failed): no time
        // has been measured, so no share or rate exists for this sample.
        let rates = self.prev.as_ref().map(|(prev, at)| {
            let (total, cores) = usage(prev, cur);
            let elapsed = now.saturating_duration_since(*at);
            let rate = |before: u64, after: u64| counter_rate(before, after, elapsed);
            (
                total,
                cores,
                mode_percentages(&prev.total, &cur.total),
                [
                    rate(prev.ctxt, cur.ctxt),
                    rate(prev.intr, cur.intr),
                    rate(prev.forks, cur.forks),
                ],
            )
        });
        let (usage_percent, per_core_percent, modes_percent, per_sec) = match rates {
            Some((total, cores, modes, per_sec)) => {
                (Some(total), Some(cores), Some(modes), Some(per_sec))
            }
            None => (None, None, None, None),
        };
        let core_numbers = per_core_percent
            .as_ref()
            .map(|_| cur.cores.iter().map(|(n, _)| *n).collect());
        m.cpu = Some(CpuMetrics {
            usage_percent,
            per_core_percent,
            core_numbers,
            modes_percent,
            seconds_total: seconds_from_ticks(self.exported.update(&cur.total), self.ticks_per_sec),
        });
        m.activity = Some(ActivityMetrics {
            context_switches_total: cur.ctxt,
            interrupts_total: cur.intr,
            forks_total: cur.forks,
            context_switches_per_sec: per_sec.map(|r| r[0]),
            interrupts_per_sec: per_sec.map(|r| r[1]),
            forks_per_sec: per_sec.map(|r| r[2]),
            procs_running: cur.procs_running,
            procs_blocked: cur.procs_blocked,
            boot_time_unix: cur.btime,
        });
        // Keep this reading as the next baseline and reuse the old one's buffers.
        let (prev, at) = self
            .prev
            .get_or_insert_with(|| (StatSample::default(), now));
        std::mem::swap(prev, &mut self.cur);
        *at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: [u64; 8]) -> CpuTimes {
        let mut times = CpuTimes::default();
        times.0[..8].copy_from_slice(&v);
        times
    }

    #[test]
    fn busy_share() {
        let a = t([100, 0, 50, 800, 50, 0, 0, 0]);
        let b = t([160, 0, 70, 900, 70, 0, 0, 0]);
        // busy +80, idle +120 → 40 %
        assert_eq!(busy_percent(&a, &b), 40.0);
        assert_eq!(busy_percent(&b, &b), 0.0);
    }

    #[test]
    fn exported_mode_counters_hold_small_steps_back_and_pass_large_ones() {
        let mut exported = MonotonicModes::new(100);
        let a = t([100, 0, 50, 800, 50, 0, 0, 0]);
        let b = t([110, 0, 55, 850, 48, 0, 0, 0]);
        let c = t([120, 0, 60, 900, 53, 0, 0, 0]);
        assert_eq!(exported.update(&a)[4], 50);
        // iowait 50 -> 48 ticks: held at 50, the others go on.
        assert_eq!(exported.update(&b), [110, 0, 55, 850, 50, 0, 0, 0, 0]);
        assert_eq!(exported.update(&c)[4], 53);
        // A CPU went offline: idle 900 -> 300 ticks, 6 s, more than is held.
        let d = t([130, 0, 65, 300, 54, 0, 0, 0]);
        assert_eq!(exported.update(&d)[3], 300);
        // 5 s exactly (500 ticks at 100 Hz) is still held.
        let mut exported = MonotonicModes::new(100);
        exported.update(&t([0, 0, 0, 0, 600, 0, 0, 0]));
        assert_eq!(exported.update(&t([0, 0, 0, 0, 100, 0, 0, 0]))[4], 600);
        assert_eq!(exported.update(&t([0, 0, 0, 0, 99, 0, 0, 0]))[4], 99);
    }

    #[test]
    fn iowait_going_backwards_is_not_negative() {
        let a = t([100, 0, 0, 800, 50, 0, 0, 0]);
        let b = t([150, 0, 0, 850, 10, 0, 0, 0]);
        assert_eq!(busy_percent(&a, &b), 50.0);
    }

    #[test]
    fn guest_time_is_taken_out_of_user_and_nice() {
        let a = CpuTimes([0; FIELDS]);
        // user 60 of which guest 20, nice 20 of which guest_nice 10, idle 20.
        let b = CpuTimes([60, 20, 0, 20, 0, 0, 0, 0, 20, 10]);
        let m = mode_percentages(&a, &b);
        assert_eq!((m.user, m.nice, m.guest, m.idle), (40.0, 10.0, 30.0, 20.0));
        let sum: f64 = m.named().iter().map(|(_, v)| v).sum();
        assert!((sum - 100.0).abs() < 1e-9);
    }

    #[test]
    fn old_kernel_with_four_fields() {
        let mut s = StatSample::default();
        parse_stat(
            "cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 5\nbtime 6\nprocesses 7\n",
            &mut s,
        )
        .unwrap();
        assert_eq!(s.total, t([1, 2, 3, 4, 0, 0, 0, 0]));
        assert_eq!(s.cores.len(), 1);
        assert_eq!((s.ctxt, s.btime, s.forks), (5, 6, 7));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = StatSample::default();
        assert!(parse_stat("", &mut s).is_err());
        assert!(parse_stat("cpu x y z w\n", &mut s).is_err());
        assert!(parse_stat("cpu 1 2 3 4\n", &mut s).is_err());
    }
}
