//! Per-systemd-unit usage from cgroup v2 (SPEC §3.3, Units).
//!
//! The v2 hierarchy is `<sys>/fs/cgroup` (unified host) or
//! `<sys>/fs/cgroup/unified` (hybrid host). Every cgroup under
//! `system.slice` (nested slices included) whose unit name matches one of
//! `collect.units` is read on each sample; the `top_units` that used most
//! CPU since the previous sample (then most memory) are reported.
//!
//! Cost: each sample rewinds the kept-open slice directories and reads, for
//! every matching unit, `cpu.stat`, `memory.current` and `io.stat` (the
//! ranking and the baselines of the rates); only the winners have
//! `pids.current` and their three pressure files read. Files on cgroupfs
//! stay open between samples and are re-read with pread (the kernel
//! produces them afresh), up to a budget of descriptors.
//!
//! Restarts: a unit whose cgroup directory has a new inode (the cgroup id)
//! or whose `usage_usec` went down is measured afresh: its rates are 0 for
//! that sample, never negative or huge. A file the unit's cgroup does not
//! have (no memory or pids controller on a hybrid host) gives `None`.

use super::{CollectError, Roots, Warnings};
use crate::config::CollectConfig;
use crate::procfs::{self, End, FileReader};
use crate::snapshot::round2;
use glob::Pattern;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `statfs` magic of cgroup2 (only files there are kept open: a fixture
/// tree's files are opened afresh so that rewriting them takes effect).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Descriptors kept open at most (cgroup files and slice directories),
/// and at most an eighth of the open-files limit; past it, files are
/// opened for each read. (Slice directories are always kept: a walk holds
/// them open anyway, and a host has few.)
const MAX_KEPT_OPEN: usize = 512;
const LIMIT_SHARE: u64 = 8;

/// A file a cgroup lacks (its controller is not enabled) is looked for
/// again after this many samples (controllers can be enabled at run time).
const RETRY_ABSENT_EVERY: u64 = 64;

const MIB: f64 = 1024.0 * 1024.0;

/// One unit's figures in one sample (`metrics.units.<unit>`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UnitMetrics {
    /// Δ usage_usec / Δt; 100 = one core.
    pub cpu_percent: Option<f64>,
    /// memory.current in MiB (None without the memory controller).
    pub memory_mb: Option<f64>,
    /// pids.current (None without the pids controller).
    pub tasks: Option<u64>,
    pub io_read_mb_per_sec: Option<f64>,
    pub io_write_mb_per_sec: Option<f64>,
    pub cpu_pressure_some_avg10: Option<f64>,
    pub memory_pressure_some_avg10: Option<f64>,
    pub io_pressure_some_avg10: Option<f64>,
    /// Raw counters for the exports (cumulative since the cgroup was made).
    pub cpu_usage_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

// ---------------------------------------------------------------- parsers

/// `usage_usec` of a cgroup's cpu.stat.
pub fn parse_cpu_usage_usec(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("usage_usec ")?;
        procfs::parse_u64(value.trim().as_bytes())
    })
}

/// A one-number file such as memory.current or pids.current.
pub fn parse_single(text: &str) -> Option<u64> {
    procfs::parse_u64(text.trim().as_bytes())
}

/// `rbytes` and `wbytes` of io.stat summed over devices (an empty file:
/// no I/O yet, 0 and 0).
pub fn parse_io_stat(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        if fields.next().is_none() {
            continue;
        }
        for field in fields {
            let (key, value) = field.split_once('=')?;
            match key {
                "rbytes" => read = read.wrapping_add(procfs::parse_u64(value.as_bytes())?),
                "wbytes" => written = written.wrapping_add(procfs::parse_u64(value.as_bytes())?),
                _ => {}
            }
        }
    }
    Some((read, written))
}

/// `avg10` of the `some` line of a pressure file.
pub fn parse_pressure_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let value = line
        .split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?;
    value.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Whether a directory name under a slice is a unit with a cgroup of its own.
fn is_unit_name(name: &str) -> bool {
    [".service", ".scope", ".slice", ".socket", ".mount", ".swap"]
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
}

/// Where the cgroup v2 hierarchy is under `sys`: unified, else hybrid.
pub fn find_v2_root(sys: &Path) -> Option<PathBuf> {
    let unified = sys.join("fs/cgroup");
    [unified.clone(), unified.join("unified")]
        .into_iter()
        .find(|root| root.join("cgroup.controllers").is_file())
}

fn is_cgroupfs(file: &File) -> bool {
    // SAFETY: an all-zero statfs is valid; fstatfs only writes into it.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `s` a valid out-pointer.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) };
    rc == 0 && s.f_type as i64 == CGROUP2_SUPER_MAGIC
}

// ------------------------------------------------------- directory walking

/// An open directory rewound for each walk, yielding names with their
/// inode (the cgroup id on cgroupfs) and whether they are directories.
struct Dir {
    dir: *mut libc::DIR,
}

// SAFETY: the DIR stream is only used through &mut self, by one thread at a time.
unsafe impl Send for Dir {}

impl Dir {
    fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: `c` is a valid C string; a null result is handled below.
        let dir = unsafe { libc::opendir(c.as_ptr()) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir { dir })
    }

    /// Calls `each(name, inode)` for every subdirectory, from the start.
    fn subdirs(&mut self, mut each: impl FnMut(&[u8], u64)) -> io::Result<()> {
        // SAFETY: `self.dir` is an open DIR stream.
        let fd = unsafe { libc::dirfd(self.dir) };
        // SAFETY: as above.
        unsafe { libc::rewinddir(self.dir) };
        loop {
            // readdir reports errors only through errno, so clear it first.
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: an open DIR stream; the entry is not kept past the next call.
            let entry = unsafe { libc::readdir(self.dir) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => Ok(()),
                    Some(_) => Err(err),
                };
            }
            // SAFETY: `entry` is valid until the next readdir.
            let (name, ino, kind) = unsafe {
                let e = &*entry;
                (CStr::from_ptr(e.d_name.as_ptr()), e.d_ino, e.d_type)
            };
            let bytes = name.to_bytes();
            if bytes.starts_with(b".") {
                continue;
            }
            let is_dir = match kind {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => {
                    // SAFETY: an all-zero stat is valid; fstatat only writes it.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    // SAFETY: `fd` is this stream's descriptor, `name` NUL-terminated.
                    let rc = unsafe {
                        libc::fstatat(fd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
                    };
                    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
                }
                _ => false,
            };
            if is_dir {
                each(bytes, ino);
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.dir` is open and closed exactly once here.
        unsafe { libc::closedir(self.dir) };
    }
}

/// A slice directory kept open between walks.
struct Slice {
    path: PathBuf,
    /// The directory's inode when opened: a slice removed and made again
    /// under the same name is a new directory, and the kept descriptor of
    /// the old one lists nothing.
    ino: u64,
    dir: Dir,
    seen: u64,
}

// -------------------------------------------------------------- unit files

/// Why a cgroup file gave no value.
enum Miss {
    /// The cgroup does not have this file (controller not enabled).
    Absent,
    /// The cgroup is gone (removed between the walk and the read).
    Gone,
    /// Unreadable or malformed: logged.
    Failed(io::Error),
}

/// One file of a unit's cgroup, kept open on cgroupfs.
struct CgroupFile {
    name: &'static str,
    file: Option<File>,
    /// The sample number before which an absent file is not looked for.
    absent_until: u64,
}

impl CgroupFile {
    fn new(name: &'static str) -> CgroupFile {
        CgroupFile {
            name,
            file: None,
            absent_until: 0,
        }
    }
}

/// What reading cgroup files needs: the reused buffer, the once-per-kind
/// log, the sample number and the count of descriptors kept open.
struct Reads {
    reader: FileReader,
    warnings: Warnings,
    sample: u64,
    kept: usize,
    /// How many may be kept this sample (see `MAX_KEPT_OPEN`).
    budget: usize,
}

impl Reads {
    /// The bytes of `dir/file`, opening the file when it is not kept open.
    fn bytes(&mut self, file: &mut CgroupFile, dir: &Path) -> Result<&[u8], Miss> {
        if let Some(open) = &file.file {
            return match self.reader.read_from_start(open, End::WholeInOneRead) {
                Ok(_) => Ok(self.reader.bytes()),
                Err(e) => {
                    self.close(file);
                    Err(classify(e))
                }
            };
        }
        if self.sample < file.absent_until {
            return Err(Miss::Absent);
        }
        let opened = match File::open(dir.join(file.name)) {
            Ok(opened) => opened,
            Err(e) => {
                let miss = classify(e);
                if matches!(miss, Miss::Absent) {
                    file.absent_until = self.sample + RETRY_ABSENT_EVERY;
                }
                return Err(miss);
            }
        };
        if self.kept < self.budget && is_cgroupfs(&opened) {
            self.kept += 1;
            let kept = file.file.insert(opened);
            self.reader
                .read_from_start(kept, End::WholeInOneRead)
                .map_err(classify)
        } else {
            self.reader.read_from(opened).map_err(classify)
        }
    }

    /// Reads and parses `dir/file`; None when the cgroup lacks it, when it
    /// vanished, or (logged once) when it is unreadable or malformed.
    fn value<T>(
        &mut self,
        file: &mut CgroupFile,
        dir: &Path,
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        match self.bytes(file, dir) {
            Ok(bytes) => {
                let value = parse(&procfs::text(bytes));
                if value.is_none() {
                    self.malformed(dir, file.name);
                }
                value
            }
            Err(Miss::Failed(e)) => {
                self.failed(dir, file.name, &e);
                None
            }
            Err(Miss::Absent | Miss::Gone) => None,
        }
    }

    fn close(&mut self, file: &mut CgroupFile) {
        if file.file.take().is_some() {
            self.kept -= 1;
        }
    }

    fn failed(&mut self, dir: &Path, file: &str, e: &io::Error) {
        self.warnings.once(
            &format!("units:{file}:{}", e.kind()),
            format_args!(
                "cannot read {}/{file} ({e}): that figure is null",
                dir.display()
            ),
        );
    }

    fn malformed(&mut self, dir: &Path, file: &str) {
        self.warnings.once(
            &format!("units:{file}:malformed"),
            format_args!("cannot parse {}/{file}: that figure is null", dir.display()),
        );
    }
}

fn classify(e: io::Error) -> Miss {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Miss::Absent,
        // A removed cgroup's open files read ENODEV.
        Some(libc::ENODEV) => Miss::Gone,
        _ => Miss::Failed(e),
    }
}

/// The counters of one reading, the baseline of the next one's rates.
#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    usage_usec: u64,
    io: Option<(u64, u64)>,
}

/// One tracked unit: its cgroup, open files and previous reading.
struct Unit {
    path: PathBuf,
    /// Inode of the cgroup directory (the cgroup id): a new one is a restart.
    ino: u64,
    seen: u64,
    cpu_stat: CgroupFile,
    memory_current: CgroupFile,
    io_stat: CgroupFile,
    pids_current: CgroupFile,
    cpu_pressure: CgroupFile,
    memory_pressure: CgroupFile,
    io_pressure: CgroupFile,
    last: Option<Reading>,
}

impl Unit {
    fn new(path: PathBuf, ino: u64, seen: u64) -> Unit {
        Unit {
            path,
            ino,
            seen,
            cpu_stat: CgroupFile::new("cpu.stat"),
            memory_current: CgroupFile::new("memory.current"),
            io_stat: CgroupFile::new("io.stat"),
            pids_current: CgroupFile::new("pids.current"),
            cpu_pressure: CgroupFile::new("cpu.pressure"),
            memory_pressure: CgroupFile::new("memory.pressure"),
            io_pressure: CgroupFile::new("io.pressure"),
            last: None,
        }
    }

    fn files(&mut self) -> [&mut CgroupFile; 7] {
        [
            &mut self.cpu_stat,
            &mut self.memory_current,
            &mut self.io_stat,
            &mut self.pids_current,
            &mut self.cpu_pressure,
            &mut self.memory_pressure,
            &mut self.io_pressure,
        ]
    }

    fn close_all(&mut self, reads: &mut Reads) {
        for file in self.files() {
            reads.close(file);
        }
    }
}

/// One unit's ranking figures in the current sample.
struct Candidate {
    name: String,
    cpu_percent: f64,
    metrics: UnitMetrics,
}

// --------------------------------------------------------------- collector

/// Reads the units' cgroups; owns the previous readings that rates need.
pub struct UnitsCollector {
    sys: PathBuf,
    /// The v2 hierarchy, when found (looked for again now and then).
    root: Option<PathBuf>,
    patterns: Vec<Pattern>,
    top_units: usize,
    slices: Vec<Slice>,
    units: HashMap<String, Unit>,
    reads: Reads,
}

impl UnitsCollector {
    /// Finds the v2 hierarchy and takes the baseline of every matching unit,
    /// so that the first sample's rates cover the time since now.
    pub fn new(roots: &Roots, config: &CollectConfig) -> UnitsCollector {
        let (globs, top_units) = unit_settings(config);
        UnitsCollector::with_selection(roots, globs, top_units)
    }

    /// As `new`, with the unit globs and count given directly.
    pub fn with_selection(roots: &Roots, globs: &[String], top_units: usize) -> UnitsCollector {
        let mut c = UnitsCollector {
            sys: roots.sys.clone(),
            root: find_v2_root(&roots.sys),
            patterns: compile(globs),
            top_units,
            slices: Vec::new(),
            units: HashMap::new(),
            reads: Reads {
                reader: FileReader::new(),
                warnings: Warnings::default(),
                sample: 0,
                kept: 0,
                budget: 0,
            },
        };
        if let Err(e) = c.read(Instant::now()) {
            log::warn!("units: {e}");
        }
        c
    }

    /// Applies a reloaded `[collect]` section (units that no longer match
    /// are dropped at the next sample).
    pub fn set_config(&mut self, config: &CollectConfig) {
        let (globs, top_units) = unit_settings(config);
        self.set_selection(globs, top_units);
    }

    /// Changes the unit globs and count.
    pub fn set_selection(&mut self, globs: &[String], top_units: usize) {
        self.patterns = compile(globs);
        self.top_units = top_units;
    }

    /// The cgroup v2 hierarchy in use, if any.
    pub fn v2_root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Descriptors kept open between samples (cgroup files, slice directories).
    pub fn kept_open(&self) -> usize {
        self.reads.kept
    }

    /// One sample of the units: the `top_units` winners by name. Empty
    /// without cgroup v2, without `system.slice`, or with `units = []`.
    pub fn read(&mut self, now: Instant) -> Result<BTreeMap<String, UnitMetrics>, CollectError> {
        self.reads.sample += 1;
        self.reads.budget = crate::os::fdlimit::share(LIMIT_SHARE, MAX_KEPT_OPEN);
        if self.root.is_none() && self.reads.sample % RETRY_ABSENT_EVERY == 1 {
            self.root = find_v2_root(&self.sys);
        }
        let Some(root) = self.root.clone() else {
            return Ok(BTreeMap::new());
        };
        if self.patterns.is_empty() {
            self.forget_all();
            return Ok(BTreeMap::new());
        }
        let system_slice = root.join("system.slice");
        let mut found = Vec::with_capacity(self.units.len());
        // Its inode, looked up each time (the slices below it come with
        // theirs from the listing of their parent).
        let walked = std::fs::metadata(&system_slice)
            .and_then(|m| self.walk(&system_slice, m.ino(), &mut found));
        if let Err(e) = walked {
            if e.kind() == io::ErrorKind::NotFound {
                // A v2 host without systemd, or the hierarchy went away.
                self.forget_all();
                if !root.join("cgroup.controllers").exists() {
                    self.root = None;
                }
                return Ok(BTreeMap::new());
            }
            return Err(CollectError::new(system_slice, e));
        }
        let mut candidates = Vec::with_capacity(found.len());
        for entry in found {
            if let Some(c) = self.read_unit(entry, now) {
                candidates.push(c);
            }
        }
        self.drop_unseen();
        Ok(self.report(candidates))
    }

    /// Collects every matching unit under `dir` (recursing into slices).
    fn walk(&mut self, dir: &Path, ino: u64, found: &mut Vec<Found>) -> io::Result<()> {
        let sample = self.reads.sample;
        let index = match self.slices.iter().position(|s| s.path == dir) {
            Some(i) if self.slices[i].ino == ino => i,
            Some(i) => {
                // Made again since it was opened: open the new one.
                self.slices[i].dir = Dir::open(dir)?;
                self.slices[i].ino = ino;
                i
            }
            None => {
                let opened = Dir::open(dir)?;
                self.reads.kept += 1;
                self.slices.push(Slice {
                    path: dir.to_path_buf(),
                    ino,
                    dir: opened,
                    seen: sample,
                });
                self.slices.len() - 1
            }
        };
        let slice = &mut self.slices[index];
        slice.seen = sample;
        let mut nested = Vec::new();
        let patterns = &self.patterns;
        slice.dir.subdirs(|name, ino| {
            let Ok(name) = std::str::from_utf8(name) else {
                return;
            };
            if !is_unit_name(name) {
                return;
            }
            if patterns.iter().any(|p| p.matches(name)) {
                found.push(Found {
                    name: name.to_string(),
                    path: dir.join(name),
                    ino,
                });
            }
            if name.ends_with(".slice") {
                nested.push((dir.join(name), ino));
            }
        })?;
        for (sub, ino) in nested {
            match self.walk(&sub, ino, found) {
                Ok(()) => {}
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.reads.warnings.once(
                    &format!("units:{}", sub.display()),
                    format_args!("cannot read {}: {e}", sub.display()),
                ),
            }
        }
        Ok(())
    }

    /// Reads one unit's ranking figures and rates; None when it vanished
    /// or its cpu.stat cannot be read.
    fn read_unit(&mut self, found: Found, now: Instant) -> Option<Candidate> {
        let Found { name, path, ino } = found;
        let reads = &mut self.reads;
        let sample = reads.sample;
        let unit = match self.units.get_mut(&name) {
            Some(unit) if unit.ino == ino && unit.path == path => unit,
            Some(unit) => {
                // Restarted (a new cgroup) or moved to another slice.
                unit.close_all(reads);
                *unit = Unit::new(path, ino, sample);
                unit
            }
            None => self
                .units
                .entry(name.clone())
                .or_insert_with(|| Unit::new(path, ino, sample)),
        };
        unit.seen = sample;
        let dir = &unit.path;

        let Some(usage_usec) = reads.value(&mut unit.cpu_stat, dir, parse_cpu_usage_usec) else {
            // Gone, unreadable or malformed (logged): left out of this
            // sample, and measured afresh once it can be read.
            unit.close_all(reads);
            unit.last = None;
            return None;
        };
        let memory_bytes = reads.value(&mut unit.memory_current, dir, parse_single);
        let io = reads.value(&mut unit.io_stat, dir, parse_io_stat);

        let current = Reading {
            at: now,
            usage_usec,
            io,
        };
        let previous = unit.last.replace(current);
        // Rates against the previous reading of this same cgroup; a first
        // reading, or a counter that went down (a restart the inode did not
        // show), gives 0 for this interval.
        let elapsed = previous.map(|p| now.saturating_duration_since(p.at).as_secs_f64());
        let rate = |prev: Option<u64>, cur: u64| -> f64 {
            match (prev, elapsed) {
                (Some(prev), Some(secs)) if cur >= prev && secs > 0.0 => (cur - prev) as f64 / secs,
                _ => 0.0,
            }
        };
        let cpu_percent = rate(previous.map(|p| p.usage_usec), usage_usec) / 1e6 * 100.0;
        let io_rates = io.map(|(r, w)| {
            let prev = previous.and_then(|p| p.io);
            (rate(prev.map(|p| p.0), r), rate(prev.map(|p| p.1), w))
        });
        Some(Candidate {
            name,
            cpu_percent,
            metrics: UnitMetrics {
                cpu_percent: Some(round2(cpu_percent)),
                memory_mb: memory_bytes.map(|b| round2(b as f64 / MIB)),
                // Unrounded: the stream form rounds, and /metrics gives
                // bytes per second (a round2 of MiB/s would make 4 KiB/s 0).
                io_read_mb_per_sec: io_rates.map(|(r, _)| r / MIB),
                io_write_mb_per_sec: io_rates.map(|(_, w)| w / MIB),
                cpu_usage_usec: Some(usage_usec),
                memory_bytes,
                io_read_bytes: io.map(|(r, _)| r),
                io_write_bytes: io.map(|(_, w)| w),
                ..UnitMetrics::default()
            },
        })
    }

    /// Ranks the candidates (CPU, then memory, then name) and completes the
    /// winners with their task count and pressure.
    fn report(&mut self, mut candidates: Vec<Candidate>) -> BTreeMap<String, UnitMetrics> {
        candidates.sort_by(|a, b| {
            b.cpu_percent
                .total_cmp(&a.cpu_percent)
                .then(b.metrics.memory_bytes.cmp(&a.metrics.memory_bytes))
                .then_with(|| a.name.cmp(&b.name))
        });
        candidates.truncate(self.top_units);
        let reads = &mut self.reads;
        let mut out = BTreeMap::new();
        for mut c in candidates {
            if let Some(unit) = self.units.get_mut(&c.name) {
                let (dir, m) = (&unit.path, &mut c.metrics);
                m.tasks = reads.value(&mut unit.pids_current, dir, parse_single);
                m.cpu_pressure_some_avg10 =
                    reads.value(&mut unit.cpu_pressure, dir, parse_pressure_some_avg10);
                m.memory_pressure_some_avg10 =
                    reads.value(&mut unit.memory_pressure, dir, parse_pressure_some_avg10);
                m.io_pressure_some_avg10 =
                    reads.value(&mut unit.io_pressure, dir, parse_pressure_some_avg10);
            }
            out.insert(c.name, c.metrics);
        }
        out
    }

    /// Drops the units and slices not seen in this walk (vanished, or no
    /// longer matching).
    fn drop_unseen(&mut self) {
        let reads = &mut self.reads;
        let sample = reads.sample;
        self.units.retain(|_, unit| {
            let keep = unit.seen == sample;
            if !keep {
                unit.close_all(reads);
            }
            keep
        });
        let before = self.slices.len();
        self.slices.retain(|s| s.seen == sample);
        reads.kept -= before - self.slices.len();
    }

    fn forget_all(&mut self) {
        for unit in self.units.values_mut() {
            unit.close_all(&mut self.reads);
        }
        self.units.clear();
        self.reads.kept -= self.slices.len();
        self.slices.clear();
    }
}

/// A matching unit found by the walk.
struct Found {
    name: String,
    path: PathBuf,
    ino: u64,
}

fn compile(globs: &[String]) -> Vec<Pattern> {
    globs
        .iter()
        .filter_map(|g| match Pattern::new(g) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("ignoring invalid unit pattern {g:?}: {e}");
                None
            }
        })
        .collect()
}

fn unit_settings(config: &CollectConfig) -> (&[String], usize) {
    (&config.units, config.top_units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(
            parse_cpu_usage_usec("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"),
            Some(1234)
        );
        assert_eq!(parse_cpu_usage_usec("user_usec 1\n"), None);
        assert_eq!(parse_single("4096\n"), Some(4096));
        assert_eq!(parse_single("max\n"), None);
        assert_eq!(
            parse_io_stat("8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n"),
            Some((105, 207))
        );
        assert_eq!(parse_io_stat(""), Some((0, 0)));
        assert_eq!(parse_io_stat("8:0 rbytes=x\n"), None);
        assert_eq!(
            parse_pressure_some_avg10("some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=45\n"),
            Some(1.5)
        );
        assert_eq!(parse_pressure_some_avg10("full avg10=1.00\n"), None);
    }

    #[test]
    fn unit_names() {
        assert!(is_unit_name("ssh.service"));
        assert!(is_unit_name("system-getty.slice"));
        assert!(is_unit_name("session-1.scope"));
        assert!(!is_unit_name(".service"));
        assert!(!is_unit_name("cgroup.procs"));
        assert!(!is_unit_name("payload"));
    }

    #[test]
    fn collector_can_move_to_the_sampler_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<UnitsCollector>();
    }
}
