//! Collector `processes`: one scan of /proc per sample gives the process
//! count (numeric entries: processes, not threads), threads, zombies, and
//! the top processes by CPU and by resident memory.
//!
//! Each process costs one read of /proc/<pid>/stat, which has everything
//! the scan needs (state, utime + stime, threads, start time, resident
//! set). The stat files stay open from one sample to the next (up to a
//! budget of descriptors) and are re-read with pread: opening a /proc/<pid>
//! file costs about three times as much as reading it.
//!
//! Kernel threads (half the pids of a small server) are read once: they
//! have one thread, no memory, never become zombies, and their CPU time is
//! already in the host's system time, so later scans count them without a
//! read while /proc lists the same entry (same pid and inode: the kernel
//! makes a new /proc/<pid> inode when a pid is reused). They are therefore
//! never in the top lists.
//!
//! `top_processes = 0` turns the per-process reads off: the scan then only
//! counts the entries of /proc, `threads` comes from the kernel's task
//! count in /proc/loadavg (in the initial pid namespace only: the count is
//! the whole host's; null elsewhere), and `zombies` is null (not
//! measured). Processes hidden by hidepid=1 are counted, but make
//! `threads` and `zombies` the same as with top 0. Nothing is allocated
//! per process but the map entry that remembers its CPU time; only the N
//! winners get a `String` for their name. sysinfo is not used: its refresh
//! reads both stat and statm for every process and allocates per process
//! (`benches/sample.rs` measures both ways).

use super::{read_parsed, Collect, CollectError, Roots};
use crate::config::CollectConfig;
use crate::procfs::{self, DirScan, FileReader, ProcFile};
use crate::snapshot::{Metrics, ProcessMetrics, TopCpuProcess, TopProcess};
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// At most this many /proc/<pid>/stat files are kept open, and at most a
/// quarter of the process's descriptor limit.
const MAX_KEPT_OPEN: usize = 4096;
/// The share of the open-files limit the kept stat files may take.
const LIMIT_SHARE: u64 = 4;

/// Longest name kept for a candidate (kernel worker names can exceed comm's 15).
const NAME_BYTES: usize = 64;

/// What the scan takes from one /proc/<pid>/stat line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidStat {
    /// R, S, D, Z, T, ...
    pub state: u8,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Clock ticks after boot at which the process started.
    pub start_ticks: u64,
    pub rss_pages: u64,
    /// PF_KTHREAD in the flags (field 9).
    pub kernel_thread: bool,
}

/// PF_KTHREAD of include/linux/sched.h.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses `pid (comm) state ppid ...`: the name is everything between the
/// first `(` and the last `)`, since it may itself hold spaces and parens.
pub fn parse_pid_stat(bytes: &[u8]) -> Option<(&[u8], PidStat)> {
    let open = bytes.iter().position(|b| *b == b'(')?;
    let close = bytes.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let name = &bytes[open + 1..close];
    let mut fields = bytes[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // Field 3 (state) is index 0 here; field N is index N - 3.
    let state = *fields.next()?.first()?;
    let mut number = |skip: usize| procfs::parse_u64(fields.nth(skip)?);
    let flags = number(5)?; // field 9
    let utime = number(4)?; // field 14
    let stime = number(0)?; // 15
    let threads = number(4)?; // 20
    let start_ticks = number(1)?; // 22
    let rss = number(1)?; // 24 (23 is vsize)
    Some((
        name,
        PidStat {
            state,
            cpu_ticks: utime.saturating_add(stime),
            threads,
            start_ticks,
            rss_pages: rss,
            kernel_thread: flags & PF_KTHREAD != 0,
        },
    ))
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    key: u64,
    pid: u32,
    name: [u8; NAME_BYTES],
    name_len: u8,
}

impl Candidate {
    fn new(key: u64, pid: u32, name: &[u8]) -> Candidate {
        let len = name.len().min(NAME_BYTES);
        let mut c = Candidate {
            key,
            pid,
            name: [0; NAME_BYTES],
            name_len: len as u8,
        };
        c.name[..len].copy_from_slice(&name[..len]);
        c
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..self.name_len as usize]).into_owned()
    }
}

/// Inserts `c` into `list`, kept sorted by key (largest first, then lowest
/// pid) and at most `keep` long.
fn insert_candidate(list: &mut Vec<Candidate>, keep: usize, c: Candidate) {
    let at = list.partition_point(|x| x.key > c.key || (x.key == c.key && x.pid < c.pid));
    if at < keep {
        if list.len() == keep {
            list.pop();
        }
        list.insert(at, c);
    }
}

/// What one scan of /proc yields. Memory percentages are filled by the
/// caller, which knows MemTotal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessScan {
    pub count: u64,
    /// None when only counted (`top_n` = 0).
    pub threads: Option<u64>,
    pub zombies: Option<u64>,
    pub top_memory: Vec<TopProcess>,
    pub top_cpu: Vec<TopCpuProcess>,
}

/// What the scan remembers of one process between samples.
struct Tracked {
    /// The kept-open stat file (None past the budget, or on a fixture tree).
    file: Option<File>,
    cpu_ticks: u64,
    start_ticks: u64,
    seen: u64,
    /// The /proc/<pid> inode when it was found to be a kernel thread.
    kernel_thread_ino: Option<u64>,
}

/// Scans /proc; keeps the directory, the stat files and the previous CPU
/// times between samples.
pub struct ProcessScanner {
    proc: PathBuf,
    dir: Option<DirScan>,
    /// Only the real procfs: fixture files are opened afresh each time.
    keep_files_open: bool,
    pids: HashMap<u32, Tracked>,
    generation: u64,
    top_memory: Vec<Candidate>,
    top_cpu: Vec<Candidate>,
    page_size: u64,
    ticks_per_sec: f64,
    /// When the previous scan ran: monotonic, and in clock ticks since boot.
    prev_scan: Option<(Instant, u64)>,
}

impl ProcessScanner {
    pub fn new(proc: &Path) -> ProcessScanner {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        ProcessScanner {
            proc: proc.to_path_buf(),
            dir: None,
            keep_files_open: false,
            pids: HashMap::new(),
            generation: 0,
            top_memory: Vec::new(),
            top_cpu: Vec::new(),
            page_size: if page_size > 0 {
                page_size as u64
            } else {
                4096
            },
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            prev_scan: None,
        }
    }

    /// The pids whose stat file is kept open (for tests and diagnostics).
    pub fn kept_open(&self) -> Vec<u32> {
        self.pids
            .iter()
            .filter(|(_, t)| t.file.is_some())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// With `top_n` > 0: counts processes, threads and zombies, and finds
    /// the `top_n` with the largest resident set and the `top_n` that used
    /// the most CPU since the previous scan. Processes that exit during the
    /// scan are skipped; kernel threads (no resident memory) are never in
    /// the memory list, and processes idle since the last scan never in the
    /// CPU list. With `top_n` = 0: only counts the processes.
    pub fn scan(&mut self, top_n: usize) -> io::Result<ProcessScan> {
        if self.dir.is_none() {
            let dir = DirScan::open(&self.proc)?;
            self.keep_files_open = dir.is_procfs();
            self.dir = Some(dir);
        }
        let Some(dir) = self.dir.as_mut() else {
            return Err(io::Error::other("no /proc directory"));
        };
        if top_n == 0 {
            // Nothing per process: forget (and close) what was kept.
            self.pids.clear();
            self.prev_scan = None;
            let mut count = 0;
            let scanned = dir.for_each(|name, _, _| {
                count += u64::from(procfs::parse_u64(name).is_some());
            });
            if let Err(e) = scanned {
                self.dir = None;
                return Err(e);
            }
            return Ok(ProcessScan {
                count,
                ..ProcessScan::default()
            });
        }
        let now = Instant::now();
        let now_ticks = boot_ticks(self.ticks_per_sec);
        let elapsed = self
            .prev_scan
            .map(|(at, _)| now.saturating_duration_since(at).as_secs_f64());
        let prev_scan_ticks = self.prev_scan.map(|(_, t)| t);
        self.generation += 1;
        let open = self.pids.values().filter(|t| t.file.is_some()).count();
        let mut reader = StatReader {
            pids: &mut self.pids,
            budget: if self.keep_files_open {
                crate::os::fdlimit::share(LIMIT_SHARE, MAX_KEPT_OPEN)
            } else {
                0
            },
            open,
            generation: self.generation,
            path: [0; 40],
            buf: [0; 1024],
        };
        let (top_memory, top_cpu) = (&mut self.top_memory, &mut self.top_cpu);
        top_memory.clear();
        top_cpu.clear();
        let mut scan = ProcessScan::default();
        let (mut threads, mut zombies) = (0, 0);
        // A stat file that cannot be read for another reason than its
        // process having exited (EMFILE, ENOMEM, ...) ends the scan: the
        // counts would be short, so the sample gets none.
        let mut unreadable: Option<io::Error> = None;
        let mut hidden = 0;
        let scanned = dir.for_each(|name, ino, fd| {
            if unreadable.is_some() {
                return;
            }
            let Some(pid) = procfs::parse_u64(name).and_then(|p| u32::try_from(p).ok()) else {
                return;
            };
            if reader.known_kernel_thread(pid, ino) {
                scan.count += 1;
                threads += 1;
                return;
            }
            let (name, stat, before) = match reader.read(fd, pid, ino) {
                Ok(StatRead::Stat(name, stat, before)) => (name, stat, before),
                Ok(StatRead::Exited) => return, // since the directory was read
                Ok(StatRead::Hidden) => {
                    // Listed but not readable (hidepid=1): it exists, but
                    // its threads and state are unknown.
                    scan.count += 1;
                    hidden += 1;
                    return;
                }
                Err(e) => {
                    unreadable = Some(e);
                    return;
                }
            };
            scan.count += 1;
            threads += stat.threads;
            zombies += u64::from(stat.state == b'Z');
            if stat.kernel_thread {
                return;
            }
            if stat.rss_pages > 0 {
                insert_candidate(top_memory, top_n, Candidate::new(stat.rss_pages, pid, name));
            }
            // CPU since the previous scan: from the previous reading, or from
            // 0 for a process that started since then.
            let used = match (before, prev_scan_ticks) {
                (Some(prev), _) => Some(stat.cpu_ticks.saturating_sub(prev)),
                (None, Some(t)) if stat.start_ticks >= t => Some(stat.cpu_ticks),
                _ => None,
            };
            if let Some(ticks) = used.filter(|t| *t > 0) {
                insert_candidate(top_cpu, top_n, Candidate::new(ticks, pid, name));
            }
        });
        // Forget processes that are gone (closing their files).
        let generation = self.generation;
        self.pids.retain(|_, t| t.seen == generation);
        if let Some(e) = unreadable {
            self.prev_scan = None;
            return Err(io::Error::new(
                e.kind(),
                format!("reading a process's stat file: {e}"),
            ));
        }
        if let Err(e) = scanned {
            // Open the directory afresh next time.
            self.dir = None;
            self.prev_scan = None;
            return Err(e);
        }
        self.prev_scan = Some((now, now_ticks));
        // With hidden processes, counts over the visible ones would be
        // short: threads and zombies are then as with top 0.
        if hidden == 0 {
            scan.threads = Some(threads);
            scan.zombies = Some(zombies);
        }
        let page_size = self.page_size;
        scan.top_memory = self
            .top_memory
            .iter()
            .map(|c| TopProcess {
                pid: c.pid,
                name: c.name(),
                memory_bytes: c.key.saturating_mul(page_size),
                memory_percent: None,
            })
            .collect();
        let per_sec = self.ticks_per_sec;
        scan.top_cpu = match elapsed.filter(|e| *e > 0.0) {
            Some(secs) => self
                .top_cpu
                .iter()
                .map(|c| TopCpuProcess {
                    pid: c.pid,
                    name: c.name(),
                    cpu_percent: c.key as f64 / per_sec / secs * 100.0,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(scan)
    }
}

/// Clock ticks since boot now (CLOCK_BOOTTIME, the clock of `start_ticks`).
fn boot_ticks(ticks_per_sec: f64) -> u64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime only writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return u64::MAX; // unknown: no process counts as "started since"
    }
    (ts.tv_sec as f64 * ticks_per_sec + ts.tv_nsec as f64 * ticks_per_sec / 1e9) as u64
}

/// Reads /proc/<pid>/stat through the kept-open files.
struct StatReader<'a> {
    pids: &'a mut HashMap<u32, Tracked>,
    budget: usize,
    /// How many files are kept open now.
    open: usize,
    generation: u64,
    path: [u8; 40],
    buf: [u8; 1024],
}

impl StatReader<'_> {
    /// Whether `pid` is the kernel thread read in an earlier scan (same
    /// /proc inode); marks it seen.
    fn known_kernel_thread(&mut self, pid: u32, ino: u64) -> bool {
        match self.pids.get_mut(&pid) {
            Some(t) if t.kernel_thread_ino == Some(ino) => {
                t.seen = self.generation;
                true
            }
            _ => false,
        }
    }

    /// The process's name and figures, and its CPU ticks at the previous
    /// scan when it was seen then (the same process: same start time).
    /// Only ENOENT and ESRCH mean the process has exited; other errors
    /// are the caller's.
    fn read(&mut self, dir: RawFd, pid: u32, ino: u64) -> io::Result<StatRead<'_>> {
        let mut n = None;
        if let Some(file) = self.pids.get(&pid).and_then(|t| t.file.as_ref()) {
            n = file.read_at(&mut self.buf, 0).ok();
            if n.is_none() {
                // The process exited, and its pid may have a new owner: the
                // old file keeps failing (ESRCH), so open the pid's file afresh.
                if let Some(t) = self.pids.get_mut(&pid) {
                    t.file = None;
                    self.open -= 1;
                }
            }
        }
        let mut opened = None;
        if n.is_none() {
            let Some(path) = pid_path(&mut self.path, pid, "stat") else {
                return Ok(StatRead::Exited);
            };
            let first_read = procfs::open_at(dir, path).and_then(|mut file| {
                // stat is one line, handed over whole by the first read.
                let n = file.read(&mut self.buf)?;
                Ok((file, n))
            });
            match first_read {
                Ok((file, read)) => {
                    n = Some(read);
                    opened = Some(file);
                }
                Err(e) => return exited_or(e),
            }
        }
        let Some((name, stat)) = n.and_then(|n| parse_pid_stat(&self.buf[..n])) else {
            // An empty read: the process went between open and read.
            return Ok(StatRead::Exited);
        };
        let generation = self.generation;
        let tracked = self.pids.entry(pid).or_insert(Tracked {
            file: None,
            cpu_ticks: stat.cpu_ticks,
            start_ticks: stat.start_ticks,
            seen: 0,
            kernel_thread_ino: None,
        });
        let before = (tracked.seen + 1 == generation && tracked.start_ticks == stat.start_ticks)
            .then_some(tracked.cpu_ticks);
        tracked.cpu_ticks = stat.cpu_ticks;
        tracked.start_ticks = stat.start_ticks;
        tracked.seen = generation;
        if stat.kernel_thread {
            // Not read again (see the module comment): no file to keep.
            tracked.kernel_thread_ino = Some(ino);
            if tracked.file.take().is_some() {
                self.open -= 1;
            }
        } else if let Some(file) = opened {
            if self.open < self.budget {
                tracked.file = Some(file);
                self.open += 1;
            }
        }
        Ok(StatRead::Stat(name, stat, before))
    }
}

/// What reading one process's stat file gave.
enum StatRead<'a> {
    /// Its name, figures and CPU ticks at the previous scan.
    Stat(&'a [u8], PidStat, Option<u64>),
    /// It exited since the directory was read.
    Exited,
    /// It is there but its files may not be read (hidepid=1).
    Hidden,
}

/// ENOENT and ESRCH: the process has gone; EACCES and EPERM: it is hidden;
/// anything else (EMFILE, ENFILE, ENOMEM) is an error of the scan.
fn exited_or(e: io::Error) -> io::Result<StatRead<'static>> {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => Ok(StatRead::Exited),
        Some(libc::EACCES | libc::EPERM) => Ok(StatRead::Hidden),
        _ => Err(e),
    }
}

/// `<pid>/<file>` as a C string in `buf`, without allocating.
fn pid_path<'b>(buf: &'b mut [u8; 40], pid: u32, file: &str) -> Option<&'b CStr> {
    let len = buf.len();
    let mut cursor: &mut [u8] = &mut buf[..];
    write!(cursor, "{pid}/{file}\0").ok()?;
    let written = len - cursor.len();
    CStr::from_bytes_with_nul(&buf[..written]).ok()
}

/// The kernel's count of tasks: the second figure of `running/total` in
/// /proc/loadavg.
pub fn parse_loadavg_tasks(text: &str) -> io::Result<u64> {
    text.split_ascii_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| procfs::parse_u64(total.as_bytes()))
        .ok_or_else(|| super::invalid(format!("no task count in {text:?}")))
}

pub struct ProcessCollector {
    scanner: ProcessScanner,
    top_n: usize,
    loadavg: ProcFile,
    reader: FileReader,
    initial_pid_namespace: bool,
}

/// Whether this process is in the initial pid namespace, whose inode the
/// kernel fixes (PROC_PID_INIT_INO). NSpid in /proc/self/status would not
/// tell: a /proc mounted inside the namespace shows only its own level. A
/// /proc without the link (a fixture tree) counts as initial.
fn in_initial_pid_namespace(proc: &Path) -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(proc.join("self/ns/pid"))
        .map(|m| m.ino() == PROC_PID_INIT_INO)
        .unwrap_or(true)
}

impl ProcessCollector {
    pub fn new(roots: &Roots, config: &CollectConfig) -> ProcessCollector {
        ProcessCollector {
            scanner: ProcessScanner::new(&roots.proc),
            top_n: config.top_processes,
            loadavg: ProcFile::whole(roots.proc.join("loadavg")),
            reader: FileReader::with_capacity(256),
            initial_pid_namespace: in_initial_pid_namespace(&roots.proc),
        }
    }
}

impl Collect for ProcessCollector {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn collect(&mut self, _now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let scan = self
            .scanner
            .scan(self.top_n)
            .map_err(|e| CollectError::new(&self.scanner.proc, e))?;
        let total = m
            .memory
            .as_ref()
            .map(|mem| mem.total_bytes)
            .filter(|t| *t > 0);
        let mut top_memory = scan.top_memory;
        for p in &mut top_memory {
            p.memory_percent = total.map(|t| p.memory_bytes as f64 / t as f64 * 100.0);
        }
        // The kernel's task count covers every pid namespace: it stands in
        // for the scan's count only in the initial one.
        let threads = match scan.threads {
            Some(threads) => Some(threads),
            None if self.initial_pid_namespace => Some(read_parsed(
                &mut self.reader,
                &mut self.loadavg,
                parse_loadavg_tasks,
            )?),
            None => None,
        };
        m.processes = Some(ProcessMetrics {
            count: scan.count,
            threads,
            zombies: scan.zombies,
            top_memory,
            top_cpu: scan.top_cpu,
        });
        Ok(())
    }

    fn reconfigure(&mut self, config: &CollectConfig) {
        self.top_n = config.top_processes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let line = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0 12345 1000000 250 18446744073709551615\n";
        let (name, stat) = parse_pid_stat(line).unwrap();
        assert_eq!(name, b"a) b (c)");
        assert_eq!(
            stat,
            PidStat {
                state: b'S',
                cpu_ticks: 100,
                threads: 3,
                start_ticks: 12345,
                rss_pages: 250,
                kernel_thread: false,
            }
        );
        assert!(parse_pid_stat(b"1 (x) S 1 2 3\n").is_none());
        assert!(parse_pid_stat(b"garbage").is_none());
    }

    #[test]
    fn keeps_the_largest_in_order() {
        let mut list = Vec::new();
        for (pid, key) in [(1, 10), (2, 50), (3, 30), (4, 50), (5, 5), (6, 40)] {
            insert_candidate(&mut list, 3, Candidate::new(key, pid, b"x"));
        }
        let pids: Vec<u32> = list.iter().map(|c| c.pid).collect();
        assert_eq!(pids, vec![2, 4, 6]);
    }

    #[test]
    fn pid_paths() {
        let mut buf = [0u8; 40];
        assert_eq!(
            pid_path(&mut buf, 4294967295, "stat").unwrap().to_bytes(),
            b"4294967295/stat"
        );
    }
}
