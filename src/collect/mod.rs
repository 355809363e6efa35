//! Collectors: one type per area behind the `Collect` trait, one file
//! each, every one reading /proc, /sys, the cgroup tree and /etc under
//! configurable roots so that parsers can be tested on fixture trees.
//!
//! `Collector` runs them in order, times each, and keeps per collector the
//! latest result and the failures since start (`CollectorRun`, rendered as
//! `metricsd_collector_*`). A collector that fails leaves its part of
//! `Metrics` as `None` for that sample (never made-up zeros), is logged once
//! per kind of failure, and never stops the sample.
//!
//! Every collector keeps the previous reading of its counters together with
//! the monotonic instant it was read at; rates are `counter_rate(prev, cur,
//! elapsed)`, the first one measured from the start-up baseline that
//! `Collector::new` takes. Adding an area: one file and one line in `build`.

pub mod cpu;
pub mod disk;
pub mod filesystem;
pub mod load;
pub mod memory;
pub mod network;
pub mod pressure;
pub mod processes;
pub mod system;
pub mod tcp;
pub mod units;

use crate::config::CollectConfig;
use crate::procfs::{FileReader, ProcFile};
use crate::snapshot::{CollectorRun, Metrics};
use glob::{MatchOptions, Pattern};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where /proc, /sys (and the cgroup tree in it) and /etc are (fixtures in
/// tests, the real ones in the daemon).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    /// For /etc/os-release.
    pub etc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            etc: PathBuf::from("/etc"),
        }
    }
}

impl Roots {
    /// `base/proc`, `base/sys` and `base/etc`: the layout of the fixture trees.
    pub fn under(base: &Path) -> Roots {
        Roots {
            proc: base.join("proc"),
            sys: base.join("sys"),
            etc: base.join("etc"),
        }
    }
}

/// One area's collector: reads its sources, fills its part of `metrics`
/// (leaving it `None` when it fails), and reports success or the failure.
/// `now` is the monotonic instant of this reading, for rates.
pub trait Collect: Send {
    fn name(&self) -> &'static str;
    fn collect(&mut self, now: Instant, metrics: &mut Metrics) -> Result<(), CollectError>;

    /// Applies a reloaded `[collect]` section in place, keeping the previous
    /// reading: a collector made afresh would measure its next rates over
    /// the moment since its new baseline, and report zeros. The default is
    /// for collectors that read no key of the section.
    fn reconfigure(&mut self, _config: &CollectConfig) {}
}

/// A source a collector could not read or understand.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct CollectError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl CollectError {
    pub fn new(path: impl Into<PathBuf>, source: io::Error) -> CollectError {
        CollectError {
            path: path.into(),
            source,
        }
    }
}

/// The units collector's core is `read` (the map of units); this is its
/// side of the contract.
impl Collect for units::UnitsCollector {
    fn name(&self) -> &'static str {
        "units"
    }

    fn collect(&mut self, now: Instant, metrics: &mut Metrics) -> Result<(), CollectError> {
        metrics.units = Some(self.read(now)?);
        Ok(())
    }

    fn reconfigure(&mut self, config: &CollectConfig) {
        self.set_config(config);
    }
}

/// Every collector, in the order they run (memory before processes: the
/// scan's memory percentages use MemTotal).
pub fn build(roots: &Roots, config: &CollectConfig) -> Vec<Box<dyn Collect>> {
    vec![
        Box::new(cpu::CpuCollector::new(roots)),
        Box::new(load::LoadCollector::new(roots)),
        Box::new(memory::MemoryCollector::new(roots)),
        Box::new(pressure::PressureCollector::new(roots)),
        Box::new(filesystem::FilesystemCollector::new(roots, config)),
        Box::new(disk::DiskCollector::new(roots)),
        Box::new(network::NetworkCollector::new(roots, config)),
        Box::new(tcp::TcpCollector::new(roots)),
        Box::new(processes::ProcessCollector::new(roots, config)),
        Box::new(system::SystemCollector::new(roots)),
        Box::new(units::UnitsCollector::new(roots, config)),
    ]
}

/// The bytes (or packets, or sectors) per second between two readings of a
/// counter taken `elapsed` apart. A counter that went backwards (an interface
/// or a device was reset, a 32-bit counter wrapped) gives 0 for the interval,
/// and so does a zero interval: never a negative or made-up huge value.
pub fn counter_rate(prev: u64, cur: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if cur < prev || secs <= 0.0 {
        return 0.0;
    }
    (cur - prev) as f64 / secs
}

/// The previous reading of a device (`same` picks it out), looked for first
/// at `index`: devices and interfaces almost always keep their position.
pub(crate) fn previous<T>(prev: &[T], index: usize, same: impl Fn(&T) -> bool) -> Option<&T> {
    match prev.get(index) {
        Some(p) if same(p) => Some(p),
        _ => prev.iter().find(|p| same(p)),
    }
}

/// Entry `used` of a buffer of per-device counters kept between readings
/// (its strings' allocations reused), added when the buffer is that short.
pub(crate) fn reused_entry<T: Default>(out: &mut Vec<T>, used: usize) -> &mut T {
    if used == out.len() {
        out.push(T::default());
    }
    &mut out[used]
}

/// `*` in exclude globs also matches `/` (so `/run/*` covers `/run/user/1000`).
const GLOB_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// The `[collect]` exclude lists, compiled.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub fs_types: Vec<String>,
    pub mounts: Vec<Pattern>,
    pub interfaces: Vec<Pattern>,
}

impl Filters {
    /// Compiles the lists. The configuration loader has validated every glob;
    /// one that still fails to compile is logged and ignored.
    pub fn new(config: &CollectConfig) -> Filters {
        let compile = |list: &[String]| {
            list.iter()
                .filter_map(|p| match Pattern::new(p) {
                    Ok(pattern) => Some(pattern),
                    Err(e) => {
                        log::warn!("ignoring invalid exclude pattern {p:?}: {e}");
                        None
                    }
                })
                .collect()
        };
        Filters {
            fs_types: config.exclude_fs_types.clone(),
            mounts: compile(&config.exclude_mounts),
            interfaces: compile(&config.exclude_interfaces),
        }
    }

    pub fn mount_excluded(&self, mount_point: &str, fs_type: &str) -> bool {
        self.fs_types.iter().any(|t| t == fs_type)
            || self
                .mounts
                .iter()
                .any(|p| p.matches_with(mount_point, GLOB_OPTIONS))
    }

    pub fn interface_excluded(&self, name: &str) -> bool {
        self.interfaces
            .iter()
            .any(|p| p.matches_with(name, GLOB_OPTIONS))
    }
}

/// Logs each kind of failure once, not on every sample.
#[derive(Debug, Default)]
pub struct Warnings {
    seen: HashSet<String>,
}

/// Kinds remembered at most (mount paths come and go); past this, new
/// kinds are logged at debug level only.
const MAX_WARNING_KINDS: usize = 1024;

impl Warnings {
    /// Logs `message` at warn level the first time `kind` fails; later
    /// failures of the same kind only reach the debug level.
    pub fn once(&mut self, kind: &str, message: fmt::Arguments<'_>) {
        if self.seen.contains(kind) || self.seen.len() >= MAX_WARNING_KINDS {
            log::debug!("{message}");
        } else {
            self.seen.insert(kind.to_string());
            log::warn!("{message}");
        }
    }

    /// Forgets the kinds that start with `prefix`: the next failure of
    /// one of them is news again.
    pub fn forget(&mut self, prefix: &str) {
        self.seen.retain(|kind| !kind.starts_with(prefix));
    }
}

/// An error for a file that was read but not understood.
pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads `file` and parses it as text; errors carry the path.
pub(crate) fn read_parsed<T>(
    reader: &mut FileReader,
    file: &mut ProcFile,
    parse: impl FnOnce(&str) -> io::Result<T>,
) -> Result<T, CollectError> {
    let parsed = file
        .read(reader)
        .and_then(|bytes| parse(&crate::procfs::text(bytes)));
    parsed.map_err(|e| CollectError::new(file.path(), e))
}

/// The collectors' results in one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub metrics: Metrics,
    pub collectors: Vec<CollectorRun>,
}

/// Runs every collector, times each, and keeps their results.
pub struct Collector {
    roots: Roots,
    config: CollectConfig,
    collectors: Vec<Box<dyn Collect>>,
    runs: Vec<CollectorRun>,
    warnings: Warnings,
    /// Per collector, the source of its last failure while it is failing.
    failing: Vec<Option<PathBuf>>,
    /// When the counters the next sample is measured against were read.
    last_reading: Instant,
}

impl Collector {
    /// Creates the collectors and takes the start-up baseline for rates, so
    /// that the first sample covers the time since now. Sources that fail
    /// are logged here already.
    pub fn new(roots: Roots, config: &CollectConfig) -> Collector {
        let collectors = build(&roots, config);
        let collectors_len = collectors.len();
        let runs = collectors
            .iter()
            .map(|c| CollectorRun {
                name: Cow::Borrowed(c.name()),
                duration: Duration::ZERO,
                ok: true,
                failures_total: 0,
            })
            .collect();
        let mut c = Collector {
            roots,
            config: config.clone(),
            collectors,
            runs,
            warnings: Warnings::default(),
            failing: vec![None; collectors_len],
            last_reading: Instant::now(),
        };
        let mut scratch = Metrics::default();
        for (collector, failing) in c.collectors.iter_mut().zip(&mut c.failing) {
            if let Err(e) = collector.collect(Instant::now(), &mut scratch) {
                log_failure(&mut c.warnings, collector.name(), &e);
                *failing = Some(e.path);
            }
        }
        c.last_reading = Instant::now();
        c
    }

    /// Time since the counters the next sample will be measured against were
    /// read (the start-up baseline, then the previous sample). CPU times tick
    /// in 10 ms jiffies, so a sample taken within a few hundred ms of the
    /// baseline has coarse CPU percentages: callers that sample right after
    /// `new` (such as `once`) should let some time pass first.
    pub fn since_last_reading(&self) -> Duration {
        self.last_reading.elapsed()
    }

    /// The roots this collector reads.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// Applies a reloaded `[collect]` section; every collector keeps its
    /// previous reading, so the next sample's rates cover the whole interval.
    pub fn set_config(&mut self, config: &CollectConfig) {
        if *config == self.config {
            return;
        }
        self.config = config.clone();
        for collector in &mut self.collectors {
            collector.reconfigure(config);
        }
    }

    /// The collectors that failed in the last sample (e.g. `"memory"`);
    /// empty when everything was read.
    pub fn failed_collectors(&self) -> Vec<&str> {
        self.runs
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.as_ref())
            .collect()
    }

    /// Takes one sample. Never fails: a failing collector leaves its
    /// fields `None`, is counted, and is logged once per kind of failure.
    pub fn collect(&mut self) -> Sample {
        let mut metrics = Metrics::default();
        let each = self.collectors.iter_mut().zip(&mut self.runs);
        for ((collector, run), failing) in each.zip(&mut self.failing) {
            let started = Instant::now();
            let result = collector.collect(started, &mut metrics);
            run.duration = started.elapsed();
            run.ok = result.is_ok();
            match result {
                Err(e) => {
                    run.failures_total += 1;
                    log_failure(&mut self.warnings, collector.name(), &e);
                    *failing = Some(e.path);
                }
                Ok(()) => {
                    if let Some(path) = failing.take() {
                        log_recovery(&mut self.warnings, collector.name(), &path);
                    }
                }
            }
        }
        self.last_reading = Instant::now();
        Sample {
            metrics,
            collectors: self.runs.clone(),
        }
    }
}

/// The start of every failure kind of collector `name`.
fn failure_kinds(name: &str) -> String {
    format!("{name}:")
}

/// A collector that failed reads everything again: said once, and its next
/// failure is logged afresh.
fn log_recovery(warnings: &mut Warnings, name: &str, last_failed: &Path) {
    log::info!(
        "collector {name}: {} and every other source read again; its figures are back",
        last_failed.display()
    );
    warnings.forget(&failure_kinds(name));
}

fn log_failure(warnings: &mut Warnings, name: &str, e: &CollectError) {
    warnings.once(
        &format!(
            "{}{}:{:?}",
            failure_kinds(name),
            e.path.display(),
            e.source.kind()
        ),
        format_args!("collector {name}: cannot read {e}; its figures are null until it can"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_can_move_to_the_sampler_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Collector>();
    }

    #[test]
    fn rate_is_delta_over_elapsed() {
        assert_eq!(
            counter_rate(1_000, 1_000 + 31_457_280, Duration::from_secs(1)),
            31_457_280.0
        );
        assert_eq!(counter_rate(0, 3_000, Duration::from_millis(1500)), 2_000.0);
    }

    #[test]
    fn backwards_or_zero_interval_is_zero() {
        assert_eq!(counter_rate(5_000, 10, Duration::from_secs(1)), 0.0);
        assert_eq!(counter_rate(10, 5_000, Duration::ZERO), 0.0);
    }

    #[test]
    fn globs_match_across_slashes() {
        let filters = Filters::new(&CollectConfig {
            exclude_fs_types: vec!["tmpfs".into()],
            exclude_mounts: vec!["/run/*".into(), "/boot/efi".into()],
            exclude_interfaces: vec!["veth*".into(), "lo".into()],
            ..CollectConfig::default()
        });
        assert!(filters.mount_excluded("/run/user/1000/doc", "ext4"));
        assert!(filters.mount_excluded("/boot/efi", "vfat"));
        assert!(filters.mount_excluded("/srv", "tmpfs"));
        assert!(!filters.mount_excluded("/run", "ext4"));
        assert!(!filters.mount_excluded("/boot", "ext4"));
        assert!(filters.interface_excluded("veth12ab"));
        assert!(filters.interface_excluded("lo"));
        assert!(!filters.interface_excluded("lo0"));
        assert!(!filters.interface_excluded("eth0"));
    }
}
