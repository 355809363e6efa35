//! Process count (numeric entries in /proc: processes, not threads) and the
//! top processes by resident memory.
//!
//! The scan reads /proc directly instead of through sysinfo: sysinfo's
//! process refresh reads both /proc/<pid>/stat and statm for every process,
//! allocates a path and a map entry per process, and keeps a table of every
//! process between refreshes. Here each process costs one small read of
//! /proc/<pid>/statm (whose second field is the resident set, the same
//! figure as in /proc/<pid>/stat, but far cheaper for the kernel to produce:
//! stat also sums CPU times over all threads). The statm files stay open
//! from one sample to the next (up to a budget of descriptors) and are
//! re-read with pread: opening a /proc/<pid> file costs about three times
//! as much as reading it. Only the N winners have their /proc/<pid>/comm
//! read. `benches/sample.rs` measures both ways.

use crate::procfs::{self, DirScan};
use crate::snapshot::TopProcess;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

/// Extra candidates kept beyond N, so a winner that exits before its name
/// is read does not leave the list one short.
const SLACK: usize = 4;

/// At most this many /proc/<pid>/statm files are kept open, and at most a
/// quarter of the process's descriptor limit.
const MAX_KEPT_OPEN: usize = 4096;

/// The second field of /proc/<pid>/statm: resident pages.
pub fn parse_statm_resident(bytes: &[u8]) -> Option<u64> {
    let mut fields = bytes
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    fields.next()?;
    procfs::parse_u64(fields.next()?)
}

/// The contents of /proc/<pid>/comm without its newline.
pub fn parse_comm(bytes: &[u8]) -> String {
    let name = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    String::from_utf8_lossy(name).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    resident_pages: u64,
    pid: u32,
}

/// Inserts `c` into `list`, kept sorted by resident memory (largest first,
/// then lowest pid) and at most `keep` long.
fn insert_candidate(list: &mut Vec<Candidate>, keep: usize, c: Candidate) {
    let at = list.partition_point(|x| {
        x.resident_pages > c.resident_pages
            || (x.resident_pages == c.resident_pages && x.pid < c.pid)
    });
    if at < keep {
        if list.len() == keep {
            list.pop();
        }
        list.insert(at, c);
    }
}

/// What one scan of /proc yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessScan {
    pub count: u64,
    pub top_memory: Vec<TopProcess>,
}

/// A /proc/<pid>/statm kept open, and the scan that last saw its process.
struct OpenStatm {
    file: File,
    seen: u64,
}

/// Scans /proc; keeps the directory, the statm files and the candidate
/// list between samples.
pub struct ProcessScanner {
    proc: PathBuf,
    dir: Option<DirScan>,
    /// Only the real procfs: fixture files are opened afresh each time.
    keep_files_open: bool,
    statm: HashMap<u32, OpenStatm>,
    open_budget: usize,
    generation: u64,
    candidates: Vec<Candidate>,
    page_size: u64,
}

impl ProcessScanner {
    pub fn new(proc: &Path) -> ProcessScanner {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        ProcessScanner {
            proc: proc.to_path_buf(),
            dir: None,
            keep_files_open: false,
            statm: HashMap::new(),
            open_budget: open_budget(),
            generation: 0,
            candidates: Vec::new(),
            page_size: if page_size > 0 {
                page_size as u64
            } else {
                4096
            },
        }
    }

    /// The pids whose statm file is kept open (for tests and diagnostics).
    pub fn kept_open(&self) -> Vec<u32> {
        self.statm.keys().copied().collect()
    }

    /// Counts processes and, when `top_n` > 0, finds the `top_n` with the
    /// largest resident set; `memory_percent` is relative to `mem_total_bytes`
    /// (0 when that is unknown). Processes that exit during the scan are
    /// skipped; kernel threads (no resident memory) are never in the top.
    pub fn scan(&mut self, top_n: usize, mem_total_bytes: u64) -> io::Result<ProcessScan> {
        if self.dir.is_none() {
            let dir = DirScan::open(&self.proc)?;
            self.keep_files_open = dir.is_procfs();
            self.dir = Some(dir);
        }
        let Some(dir) = self.dir.as_mut() else {
            return Err(io::Error::other("no /proc directory"));
        };
        if top_n == 0 {
            self.statm.clear();
        }
        self.generation += 1;
        let keep = if top_n == 0 { 0 } else { top_n + SLACK };
        let mut statm = StatmReader {
            files: &mut self.statm,
            budget: if self.keep_files_open {
                self.open_budget
            } else {
                0
            },
            generation: self.generation,
            path: [0; 40],
            buf: [0; 256],
        };
        let candidates = &mut self.candidates;
        candidates.clear();
        let mut count = 0u64;
        let scanned = dir.for_each(|name, fd| {
            let Some(pid) = procfs::parse_u64(name).and_then(|p| u32::try_from(p).ok()) else {
                return;
            };
            count += 1;
            if keep == 0 {
                return;
            }
            if let Some(pages) = statm.resident_pages(fd, pid) {
                if pages > 0 {
                    let c = Candidate {
                        resident_pages: pages,
                        pid,
                    };
                    insert_candidate(candidates, keep, c);
                }
            }
        });
        // Close the files of processes that are gone.
        let generation = self.generation;
        self.statm.retain(|_, open| open.seen == generation);
        if let Err(e) = scanned {
            // Open the directory afresh next time.
            self.dir = None;
            return Err(e);
        }
        let mut top_memory = Vec::with_capacity(top_n);
        if let Some(dir) = &self.dir {
            let mut path = [0u8; 40];
            let mut buf = [0u8; 64];
            for c in &self.candidates {
                if top_memory.len() == top_n {
                    break;
                }
                let Some(comm) = pid_path(&mut path, c.pid, "comm") else {
                    continue;
                };
                let Ok(bytes) = procfs::read_small_at(dir.fd(), comm, &mut buf) else {
                    continue; // exited since its statm was read
                };
                let bytes_resident = c.resident_pages.saturating_mul(self.page_size);
                top_memory.push(TopProcess {
                    pid: c.pid,
                    name: parse_comm(bytes),
                    memory_percent: if mem_total_bytes == 0 {
                        0.0
                    } else {
                        bytes_resident as f64 / mem_total_bytes as f64 * 100.0
                    },
                });
            }
        }
        Ok(ProcessScan { count, top_memory })
    }
}

/// A quarter of the soft descriptor limit, at most `MAX_KEPT_OPEN`.
fn open_budget() -> usize {
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes into it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid resource and out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return MAX_KEPT_OPEN;
    }
    usize::try_from(limit.rlim_cur / 4)
        .unwrap_or(MAX_KEPT_OPEN)
        .min(MAX_KEPT_OPEN)
}

/// Reads /proc/<pid>/statm through the kept-open files.
struct StatmReader<'a> {
    files: &'a mut HashMap<u32, OpenStatm>,
    budget: usize,
    generation: u64,
    path: [u8; 40],
    buf: [u8; 256],
}

impl StatmReader<'_> {
    fn resident_pages(&mut self, dir: RawFd, pid: u32) -> Option<u64> {
        if let Some(open) = self.files.get_mut(&pid) {
            open.seen = self.generation;
            if let Ok(n) = open.file.read_at(&mut self.buf, 0) {
                if let Some(pages) = parse_statm_resident(&self.buf[..n]) {
                    return Some(pages);
                }
            }
            // The process exited, and its pid may have a new owner: the old
            // file keeps failing (ESRCH), so open the pid's file afresh.
            self.files.remove(&pid);
        }
        let path = pid_path(&mut self.path, pid, "statm")?;
        let mut file = procfs::open_at(dir, path).ok()?;
        // statm is one short line, handed over whole by the first read.
        let n = file.read(&mut self.buf).ok()?;
        let pages = parse_statm_resident(&self.buf[..n])?;
        if self.files.len() < self.budget {
            self.files.insert(
                pid,
                OpenStatm {
                    file,
                    seen: self.generation,
                },
            );
        }
        Some(pages)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_and_comm() {
        assert_eq!(
            parse_statm_resident(b"8983 2529 1486 1350 0 7119 0\n"),
            Some(2529)
        );
        assert_eq!(parse_statm_resident(b"8983\n"), None);
        assert_eq!(parse_comm(b"systemd\n"), "systemd");
        assert_eq!(parse_comm(b"a b\xff\n"), "a b\u{fffd}");
    }

    #[test]
    fn keeps_the_largest_in_order() {
        let mut list = Vec::new();
        for (pid, pages) in [(1, 10), (2, 50), (3, 30), (4, 50), (5, 5), (6, 40)] {
            insert_candidate(
                &mut list,
                3,
                Candidate {
                    resident_pages: pages,
                    pid,
                },
            );
        }
        let pids: Vec<u32> = list.iter().map(|c| c.pid).collect();
        assert_eq!(pids, vec![2, 4, 6]);
    }

    #[test]
    fn pid_paths() {
        let mut buf = [0u8; 40];
        assert_eq!(
            pid_path(&mut buf, 4294967295, "statm").unwrap().to_bytes(),
            b"4294967295/statm"
        );
    }
}
