//! Collectors: one file per area, each reading /proc and /sys under a
//! configurable root so parsers can be tested on fixture trees.
//!
//! Every area keeps the previous reading of its counters together with the
//! monotonic instant it was read at; rates are `counter_rate(prev, cur,
//! elapsed)`. A file that cannot be read or parsed is logged once (per file)
//! and the area's figures fall back to their documented defaults (0 / empty);
//! the sample itself is always produced.
//!
//! Fallbacks when a source fails:
//! - /proc/stat: cpu percentages 0 and per-core list empty, running/blocked 0
//! - /proc/loadavg: load averages 0
//! - /proc/meminfo: all memory and swap figures 0 (and top process memory_percent 0)
//! - /proc/self/mountinfo: no filesystems; one mount's statvfs: that mount left out
//! - /proc/diskstats: disk I/O rates 0
//! - /proc/net/dev: no interfaces (so network totals and rates 0)
//! - /proc/net/snmp: active_connections 0
//! - the /proc directory scan: process_count 0, no top processes
//! - /proc/uptime: uptime 0; boot_id: empty string

pub mod cpu;
pub mod disk;
pub mod load;
pub mod memory;
pub mod network;
pub mod processes;
pub mod system;
pub mod units;

use crate::config::CollectConfig;
use crate::procfs::{FileReader, ProcFile};
use crate::snapshot::Metrics;
use glob::{MatchOptions, Pattern};
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where /proc and /sys are (fixtures in tests, the real ones in the daemon).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
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
}

/// An error for a file that was read but not understood.
pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The /proc files read on every sample by this module itself.
#[derive(Debug)]
struct Files {
    meminfo: ProcFile,
    loadavg: ProcFile,
    snmp: ProcFile,
    uptime: ProcFile,
    boot_id: ProcFile,
}

impl Files {
    fn new(proc: &Path) -> Files {
        Files {
            meminfo: ProcFile::new(proc.join("meminfo")),
            loadavg: ProcFile::new(proc.join("loadavg")),
            snmp: ProcFile::new(proc.join("net/snmp")),
            uptime: ProcFile::new(proc.join("uptime")),
            boot_id: ProcFile::new(proc.join("sys/kernel/random/boot_id")),
        }
    }
}

/// Which areas failed in the current sample, and the once-per-kind log.
#[derive(Debug, Default)]
struct Health {
    warnings: Warnings,
    failed: Vec<&'static str>,
}

impl Health {
    fn fail(&mut self, area: &'static str, path: &Path, error: io::Error) {
        if !self.failed.contains(&area) {
            self.failed.push(area);
        }
        self.warnings.once(
            &format!("{area}:{}", path.display()),
            format_args!(
                "cannot read {} ({error}): {area} figures fall back to 0 until it can be read",
                path.display()
            ),
        );
    }
}

/// Reads `path` and parses it as text.
fn read_parsed<T>(
    reader: &mut FileReader,
    file: &mut ProcFile,
    parse: fn(&str) -> io::Result<T>,
) -> io::Result<T> {
    let bytes = file.read(reader)?;
    parse(&crate::procfs::text(bytes))
}

/// Owns every collector and the previous counters that rates are computed from.
pub struct Collector {
    roots: Roots,
    filters: Filters,
    top_processes: usize,
    files: Files,
    reader: FileReader,
    health: Health,
    cpu: cpu::CpuState,
    network: network::NetState,
    disk: disk::DiskState,
    processes: processes::ProcessScanner,
    boot_id: Option<String>,
    /// When the counters the next sample is measured against were read.
    last_reading: Instant,
}

impl Collector {
    /// Creates the collectors and takes the start-up baseline for rates
    /// (CPU times, interface and disk counters), so that the first sample
    /// covers the time since now. Sources that fail are logged here already.
    pub fn new(roots: Roots, config: &CollectConfig) -> Collector {
        let mut c = Collector {
            files: Files::new(&roots.proc),
            cpu: cpu::CpuState::new(&roots.proc),
            network: network::NetState::new(&roots.proc),
            disk: disk::DiskState::new(&roots.proc, &roots.sys),
            processes: processes::ProcessScanner::new(&roots.proc),
            roots,
            filters: Filters::new(config),
            top_processes: config.top_processes,
            reader: FileReader::new(),
            health: Health::default(),
            boot_id: None,
            last_reading: Instant::now(),
        };
        if let Err(e) = c.cpu.sample(&mut c.reader) {
            c.health.fail("cpu", c.cpu.path(), e);
        }
        if let Err(e) = c.network.sample(&mut c.reader, &c.filters) {
            c.health.fail("network", c.network.path(), e);
        }
        if let Err(e) = c.disk.io_rates(&mut c.reader) {
            c.health.fail("disk_io", c.disk.diskstats_path(), e);
        }
        c.read_boot_id();
        c.health.failed.clear();
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

    /// Applies a reloaded `[collect]` section.
    pub fn set_config(&mut self, config: &CollectConfig) {
        self.filters = Filters::new(config);
        self.top_processes = config.top_processes;
        self.disk.filters_changed();
    }

    /// The areas whose source failed in the last sample (e.g. `"memory"`),
    /// for self-monitoring; empty when everything was read.
    pub fn failed_areas(&self) -> &[&'static str] {
        &self.health.failed
    }

    /// Takes one sample. Never fails: a failing collector logs and falls back.
    pub fn collect(&mut self) -> Metrics {
        self.health.failed.clear();
        let (reader, health, files) = (&mut self.reader, &mut self.health, &mut self.files);
        let mut m = Metrics::default();

        match self.cpu.sample(reader) {
            Ok(r) => {
                m.cpu.usage_percent = r.usage_percent;
                m.cpu.per_core_percent = r.per_core_percent;
                m.processes.running = r.procs_running;
                m.processes.blocked = r.procs_blocked;
            }
            Err(e) => health.fail("cpu", self.cpu.path(), e),
        }

        match read_parsed(reader, &mut files.loadavg, load::parse_loadavg) {
            Ok((l1, l5, l15)) => (m.cpu.load1, m.cpu.load5, m.cpu.load15) = (l1, l5, l15),
            Err(e) => health.fail("load", files.loadavg.path(), e),
        }

        match read_parsed(reader, &mut files.meminfo, memory::parse_meminfo) {
            Ok(memory) => m.memory = memory,
            Err(e) => health.fail("memory", files.meminfo.path(), e),
        }

        match self
            .disk
            .mounts(reader, &self.filters, &mut health.warnings)
        {
            Ok(mounts) => m.disk.mounts = mounts,
            Err(e) => health.fail("disk", self.disk.mountinfo_path(), e),
        }
        match self.disk.io_rates(reader) {
            Ok((read, write)) => {
                m.disk.read_bytes_per_sec = read;
                m.disk.write_bytes_per_sec = write;
            }
            Err(e) => health.fail("disk_io", self.disk.diskstats_path(), e),
        }

        match self.network.sample(reader, &self.filters) {
            Ok(interfaces) => m.network.interfaces = interfaces,
            Err(e) => health.fail("network", self.network.path(), e),
        }
        match read_parsed(reader, &mut files.snmp, network::parse_curr_estab) {
            Ok(n) => m.network.active_connections = n,
            Err(e) => health.fail("connections", files.snmp.path(), e),
        }

        match self
            .processes
            .scan(self.top_processes, m.memory.total_bytes)
        {
            Ok(scan) => {
                m.processes.count = scan.count;
                m.processes.top_memory = scan.top_memory;
            }
            Err(e) => health.fail("processes", &self.roots.proc, e),
        }

        match read_parsed(reader, &mut files.uptime, system::parse_uptime) {
            Ok(secs) => m.system.uptime_seconds = secs,
            Err(e) => health.fail("uptime", files.uptime.path(), e),
        }
        if self.boot_id.is_none() {
            self.read_boot_id();
        }
        m.system.boot_id = self.boot_id.clone().unwrap_or_default();
        self.last_reading = Instant::now();
        m
    }

    /// The boot id cannot change while this process runs, so it is read once
    /// (and retried on each sample until it has been read).
    fn read_boot_id(&mut self) {
        match read_parsed(
            &mut self.reader,
            &mut self.files.boot_id,
            system::parse_boot_id,
        ) {
            Ok(id) => {
                self.boot_id = Some(id);
                self.files.boot_id.close();
            }
            Err(e) => self.health.fail("boot_id", self.files.boot_id.path(), e),
        }
    }
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
            top_processes: 0,
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
