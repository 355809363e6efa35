//! Collector `filesystem`: usage and inodes of every mounted filesystem
//! (statvfs over the mount table).
//!
//! The mount table is read from /proc/self/mountinfo rather than
//! /proc/self/mounts: it carries each mount's device number, which is what
//! tells a bind mount from a separate filesystem without a stat per mount.

use super::{invalid, Collect, CollectError, Filters, Roots, Warnings};
use crate::config::CollectConfig;
use crate::procfs::{FileReader, ProcFile};
use crate::snapshot::{Metrics, MountUsage};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long one sample waits, in all, for statvfs on the filesystems that
/// may block: their calls run side by side under this one budget, so thirty
/// hung mounts cost a sample 200 ms, not thirty times that.
pub const SLOW_FS_TIMEOUT: Duration = Duration::from_millis(200);

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// major:minor of the filesystem (bind mounts share it).
    pub device: (u32, u32),
    /// The mount point, escapes decoded, for display.
    pub mount_point: String,
    /// The mount point as the kernel's bytes, for statvfs.
    pub path: CString,
    pub fs_type: String,
    /// The mount source (`/dev/vda1`, `server:/export`, `tmpfs`), escapes decoded.
    pub source: String,
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash) in a mountinfo field.
pub fn decode_octal_escapes(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 4 <= raw.len() {
            let digits = &raw[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Parses /proc/self/mountinfo. Lines it cannot understand are skipped.
/// Format: `id parent major:minor root mount_point options [optional...] - fstype source super_options`.
pub fn parse_mountinfo(bytes: &[u8]) -> Vec<MountEntry> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect()
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let device = fields.next()?;
    let _root = fields.next()?;
    let mount_point = fields.next()?;
    let _options = fields.next()?;
    // Optional fields (shared:N, master:N, ...) until the lone "-".
    fields.by_ref().find(|f| *f == b"-")?;
    let fs_type = fields.next()?;
    let source = fields.next().unwrap_or(b"none");

    let text = std::str::from_utf8(device).ok()?;
    let (major, minor) = text.split_once(':')?;
    let device = (major.parse().ok()?, minor.parse().ok()?);
    let raw_path = decode_octal_escapes(mount_point);
    let mount_point = String::from_utf8_lossy(&raw_path).into_owned();
    Some(MountEntry {
        device,
        mount_point,
        path: CString::new(raw_path).ok()?,
        fs_type: String::from_utf8_lossy(fs_type).into_owned(),
        source: String::from_utf8_lossy(&decode_octal_escapes(source)).into_owned(),
    })
}

/// The mounts to report, in mount-table order: a mount hidden by a later
/// mount on the same point is dropped (statvfs would see the later one),
/// excluded types and paths are dropped, so are the mounts beneath an
/// excluded one that may block (the path walk to them crosses it: excluding
/// a hung FUSE or NFS mount must keep the sampler away from it), and of
/// several mounts of the same device (bind mounts) only the one with the
/// shortest path is kept.
pub fn select_mounts(entries: &[MountEntry], filters: &Filters) -> Vec<MountEntry> {
    let excluded_blocking: Vec<&str> = entries
        .iter()
        .filter(|e| may_block(&e.fs_type) && filters.mount_excluded(&e.mount_point, &e.fs_type))
        .map(|e| e.mount_point.as_str())
        .collect();
    let mut last_on_point: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        last_on_point.insert(&e.mount_point, i);
    }
    let mut best_for_device: HashMap<(u32, u32), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if last_on_point.get(e.mount_point.as_str()) != Some(&i)
            || filters.mount_excluded(&e.mount_point, &e.fs_type)
            || excluded_blocking
                .iter()
                .any(|point| beneath(&e.mount_point, point))
        {
            continue;
        }
        best_for_device
            .entry(e.device)
            .and_modify(|best| {
                if e.mount_point.len() < entries[*best].mount_point.len() {
                    *best = i;
                }
            })
            .or_insert(i);
    }
    let mut keep = vec![false; entries.len()];
    for i in best_for_device.into_values() {
        keep[i] = true;
    }
    entries
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(e, _)| e.clone())
        .collect()
}

/// The figures statvfs gives for one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    /// f_blocks * f_frsize
    pub total_bytes: u64,
    /// (f_blocks - f_bfree) * f_frsize
    pub used_bytes: u64,
    /// f_bavail * f_frsize
    pub avail_bytes: u64,
    /// f_files
    pub inodes_total: u64,
    /// f_ffree
    pub inodes_free: u64,
}

pub fn statvfs(path: &CStr) -> io::Result<FsStats> {
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `s` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = if s.f_frsize > 0 {
        s.f_frsize as u64
    } else {
        s.f_bsize as u64
    };
    let blocks = s.f_blocks as u64;
    let bytes = |n: u64| n.saturating_mul(unit);
    Ok(FsStats {
        total_bytes: bytes(blocks),
        used_bytes: bytes(blocks.saturating_sub(s.f_bfree as u64)),
        avail_bytes: bytes(s.f_bavail as u64),
        inodes_total: s.f_files as u64,
        inodes_free: (s.f_ffree as u64).min(s.f_files as u64),
    })
}

/// Filesystems whose statvfs can block for as long as a server or a FUSE
/// daemon does not answer.
pub fn may_block(fs_type: &str) -> bool {
    const REMOTE: [&str; 20] = [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "virtiofs",
        "ocfs2",
        "gfs2",
        "orangefs",
        "coda",
        "vboxsf",
    ];
    REMOTE.contains(&fs_type) || fs_type.starts_with("fuse")
}

/// Whether `path` lies beneath the mount point `ancestor` (component-wise:
/// `/mnt/nfs` is beneath `/mnt`, `/mntx` is not).
fn beneath(path: &str, ancestor: &str) -> bool {
    path != ancestor && Path::new(path).starts_with(ancestor)
}

/// For each selected mount, whether its statvfs must be guarded: its own
/// type may block, or the path walk to it crosses a mount that may (a local
/// disk mounted beneath a hung NFS directory blocks as long as the server
/// does). Every mount of the table counts, excluded or hidden ones too,
/// since the walk crosses them all the same.
pub fn guarded_mounts(table: &[MountEntry], selected: &[MountEntry]) -> Vec<bool> {
    let blocking: Vec<&str> = table
        .iter()
        .filter(|e| may_block(&e.fs_type))
        .map(|e| e.mount_point.as_str())
        .collect();
    selected
        .iter()
        .map(|m| {
            may_block(&m.fs_type)
                || blocking
                    .iter()
                    .any(|ancestor| beneath(&m.mount_point, ancestor))
        })
        .collect()
}

/// What a guarded call gave.
#[derive(Debug)]
pub enum Guarded<T> {
    Done(io::Result<T>),
    /// The call (this one or an earlier one) has not returned in time.
    Stuck,
}

#[derive(Debug)]
struct CallState<T> {
    running: bool,
    result: Option<io::Result<T>>,
}

#[derive(Debug)]
struct Call<T> {
    state: Mutex<CallState<T>>,
    done: Condvar,
}

/// A call started (with the late result of the one before, if any), or
/// the answer at once.
type Started<T> = Result<(Arc<Call<T>>, Option<io::Result<T>>), Guarded<T>>;

/// Runs calls that may block (statvfs on network or FUSE filesystems) on
/// their own thread and waits for them at most `timeout`. A call that has not
/// returned makes later samples skip that path at once, until it returns:
/// at most one thread per path is ever stuck, and the sampler never is.
#[derive(Debug)]
pub struct BlockingCalls<T> {
    timeout: Duration,
    calls: HashMap<CString, Arc<Call<T>>>,
}

impl<T: Send + 'static> BlockingCalls<T> {
    pub fn new(timeout: Duration) -> BlockingCalls<T> {
        BlockingCalls {
            timeout,
            calls: HashMap::new(),
        }
    }

    /// Runs `f(path)` on a helper thread and waits for it up to the timeout.
    #[cfg(test)]
    fn call(&mut self, path: &CStr, f: fn(&CStr) -> io::Result<T>) -> Guarded<T> {
        self.call_all(&[path], f).pop().unwrap_or(Guarded::Stuck)
    }

    /// Runs `f` on every path, each on its own helper thread, and waits for
    /// them all up to one shared deadline, the timeout from now. The results
    /// come in the order of `paths`. A call that misses the deadline but
    /// returns before the next one stands in for a call that misses that
    /// one too: a filesystem that answers in 300 ms is reported a sample
    /// late rather than never.
    pub fn call_all(&mut self, paths: &[&CStr], f: fn(&CStr) -> io::Result<T>) -> Vec<Guarded<T>> {
        let deadline = Instant::now() + self.timeout;
        let started: Vec<Started<T>> = paths.iter().map(|path| self.start(path, f)).collect();
        started
            .into_iter()
            .map(|call| match call {
                Ok((call, late)) => match (Self::wait(&call, deadline), late) {
                    (Guarded::Stuck, Some(late)) => Guarded::Done(late),
                    (answer, _) => answer,
                },
                Err(done) => done,
            })
            .collect()
    }

    /// Starts `f(path)` on a helper thread, unless an earlier call on the
    /// same path is still running (then `Err(Stuck)`); with the result of
    /// the previous call if it came after its deadline.
    fn start(&mut self, path: &CStr, f: fn(&CStr) -> io::Result<T>) -> Started<T> {
        let call = self
            .calls
            .entry(path.to_owned())
            .or_insert_with(|| {
                Arc::new(Call {
                    state: Mutex::new(CallState {
                        running: false,
                        result: None,
                    }),
                    done: Condvar::new(),
                })
            })
            .clone();
        let mut state = call.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.running {
            return Err(Guarded::Stuck);
        }
        state.running = true;
        let late = state.result.take();
        let worker = call.clone();
        let owned = path.to_owned();
        let spawned = std::thread::Builder::new()
            .name("metricsd-statvfs".into())
            .spawn(move || {
                let result = f(&owned);
                let mut state = worker.state.lock().unwrap_or_else(|e| e.into_inner());
                state.result = Some(result);
                state.running = false;
                worker.done.notify_all();
            });
        if let Err(e) = spawned {
            state.running = false;
            return Err(Guarded::Done(Err(e)));
        }
        drop(state);
        Ok((call, late))
    }

    fn wait(call: &Call<T>, deadline: Instant) -> Guarded<T> {
        let state = call.state.lock().unwrap_or_else(|e| e.into_inner());
        let left = deadline.saturating_duration_since(Instant::now());
        let (mut state, _) = call
            .done
            .wait_timeout_while(state, left, |s| s.running)
            .unwrap_or_else(|e| e.into_inner());
        match state.result.take() {
            Some(result) if !state.running => Guarded::Done(result),
            _ => Guarded::Stuck,
        }
    }

    /// Forgets paths that are no longer asked for (a stuck call's entry
    /// stays, so it is not started a second time).
    pub fn retain(&mut self, wanted: impl Fn(&CStr) -> bool) {
        self.calls.retain(|path, call| {
            wanted(path) || call.state.lock().map(|s| s.running).unwrap_or(true)
        });
    }

    /// How many calls have not returned yet.
    pub fn stuck(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state.lock().map(|s| s.running).unwrap_or(true))
            .count()
    }
}

/// The mount selection, recomputed only when the mount table or the filters change.
#[derive(Debug)]
pub struct MountState {
    mountinfo: ProcFile,
    /// The mountinfo bytes `selected` was computed from.
    mountinfo_seen: Vec<u8>,
    selection_stale: bool,
    selected: Vec<MountEntry>,
    /// Parallel to `selected`: whose statvfs runs under the time budget.
    guarded: Vec<bool>,
    slow_calls: BlockingCalls<FsStats>,
    /// `statvfs`, or a stand-in in tests.
    stat: fn(&CStr) -> io::Result<FsStats>,
}

impl MountState {
    pub fn new(proc: &Path) -> MountState {
        MountState {
            mountinfo: ProcFile::new(proc.join("self/mountinfo")),
            mountinfo_seen: Vec::new(),
            selection_stale: true,
            selected: Vec::new(),
            guarded: Vec::new(),
            slow_calls: BlockingCalls::new(SLOW_FS_TIMEOUT),
            stat: statvfs,
        }
    }

    /// Uses `stat` in place of statvfs (tests stand in a filesystem that hangs).
    pub fn with_stat(mut self, stat: fn(&CStr) -> io::Result<FsStats>) -> MountState {
        self.stat = stat;
        self
    }

    pub fn mountinfo_path(&self) -> &Path {
        self.mountinfo.path()
    }

    /// The exclude lists changed: select the mounts again on the next sample.
    pub fn filters_changed(&mut self) {
        self.selection_stale = true;
    }

    /// The mounts selected by the last `mounts` call.
    pub fn selected(&self) -> &[MountEntry] {
        &self.selected
    }

    /// Usage of every selected filesystem. A mount whose statvfs fails is
    /// left out (and logged once); so are filesystems of size 0 (pseudo
    /// filesystems, as `df` hides them).
    pub fn mounts(
        &mut self,
        reader: &mut FileReader,
        filters: &Filters,
        warnings: &mut Warnings,
    ) -> io::Result<Vec<MountUsage>> {
        // The kept-open /proc mount table tells through poll whether it
        // changed; a fixture file is read and compared instead.
        if self.selection_stale || self.mountinfo.mounts_changed() {
            let bytes = self.mountinfo.read(reader)?;
            if self.selection_stale || bytes != self.mountinfo_seen.as_slice() {
                let entries = parse_mountinfo(bytes);
                if entries.is_empty() {
                    return Err(invalid("no mounts"));
                }
                self.selected = select_mounts(&entries, filters);
                self.guarded = guarded_mounts(&entries, &self.selected);
                self.mountinfo_seen.clear();
                self.mountinfo_seen.extend_from_slice(bytes);
                self.selection_stale = false;
                let selected: HashSet<&CStr> =
                    self.selected.iter().map(|m| m.path.as_c_str()).collect();
                self.slow_calls.retain(|path| selected.contains(path));
            }
        }
        // The guarded calls first, all at once under one budget; then the
        // rest in table order, taking the guarded results as they come.
        let guarded_paths: Vec<&CStr> = self
            .selected
            .iter()
            .zip(&self.guarded)
            .filter(|(_, g)| **g)
            .map(|(m, _)| m.path.as_c_str())
            .collect();
        let mut guarded_results = if guarded_paths.is_empty() {
            Vec::new()
        } else {
            self.slow_calls.call_all(&guarded_paths, self.stat)
        }
        .into_iter();
        let mut out = Vec::with_capacity(self.selected.len());
        for (m, guarded) in self.selected.iter().zip(&self.guarded) {
            let result = if *guarded {
                match guarded_results.next() {
                    Some(Guarded::Done(result)) => result,
                    Some(Guarded::Stuck) | None => {
                        warnings.once(
                            &format!("statvfs-stuck:{}", m.mount_point),
                            format_args!(
                                "statvfs on {} ({}{}) has not answered within {:?}; the mount is left out until it does",
                                m.mount_point,
                                m.fs_type,
                                if may_block(&m.fs_type) { "" } else { ", beneath a network or FUSE mount" },
                                SLOW_FS_TIMEOUT
                            ),
                        );
                        continue;
                    }
                }
            } else {
                (self.stat)(&m.path)
            };
            match result {
                Ok(s) if s.total_bytes > 0 => out.push(MountUsage {
                    mount: m.mount_point.clone(),
                    fs_type: m.fs_type.clone(),
                    device: m.source.clone(),
                    total_bytes: s.total_bytes,
                    used_bytes: s.used_bytes,
                    avail_bytes: s.avail_bytes,
                    inodes_total: s.inodes_total,
                    inodes_free: s.inodes_free,
                }),
                Ok(_) => {}
                Err(e) => warnings.once(
                    &format!("statvfs:{}", m.mount_point),
                    format_args!(
                        "statvfs on {} failed ({e}); the mount is left out",
                        m.mount_point
                    ),
                ),
            }
        }
        Ok(out)
    }
}

pub struct FilesystemCollector {
    state: MountState,
    filters: Filters,
    reader: FileReader,
    warnings: Warnings,
}

impl FilesystemCollector {
    pub fn new(roots: &Roots, config: &CollectConfig) -> FilesystemCollector {
        FilesystemCollector {
            state: MountState::new(&roots.proc),
            filters: Filters::new(config),
            reader: FileReader::new(),
            warnings: Warnings::default(),
        }
    }
}

impl Collect for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, _now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let mounts = self
            .state
            .mounts(&mut self.reader, &self.filters, &mut self.warnings)
            .map_err(|e| CollectError::new(self.state.mountinfo_path(), e))?;
        m.filesystems = Some(mounts);
        Ok(())
    }

    fn reconfigure(&mut self, config: &CollectConfig) {
        self.filters = Filters::new(config);
        self.state.filters_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(decode_octal_escapes(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(decode_octal_escapes(br"/x\011\012\134y"), b"/x\t\n\\y");
        // Not an escape: left as it is.
        assert_eq!(decode_octal_escapes(br"/x\09"), br"/x\09");
        assert_eq!(decode_octal_escapes(br"/x\"), br"/x\");
        assert_eq!(decode_octal_escapes(br"\777"), br"\777");
    }

    #[test]
    fn a_stuck_call_is_skipped_until_it_returns() {
        fn slow(_: &CStr) -> io::Result<u32> {
            // Far beyond SLOW_FS_TIMEOUT, so waiting for it would show.
            std::thread::sleep(Duration::from_secs(3));
            Ok(7)
        }
        fn fast(_: &CStr) -> io::Result<u32> {
            Ok(3)
        }
        // A timeout well above a thread's start-up on a busy machine (the
        // fresh answer must beat it), well below the slow call's 3 s.
        let mut calls = BlockingCalls::new(Duration::from_millis(1000));
        let path = c"/net/share";
        let started = Instant::now();
        assert!(matches!(calls.call(path, slow), Guarded::Stuck));
        // Given up after SLOW_FS_TIMEOUT, well before the call returns
        // (generous bounds: the machine may be busy).
        assert!(started.elapsed() < Duration::from_secs(2));
        // Still running: skipped without waiting.
        let again = Instant::now();
        assert!(matches!(calls.call(path, fast), Guarded::Stuck));
        assert!(again.elapsed() < Duration::from_secs(1));
        assert_eq!(calls.stuck(), 1);
        // Once the slow call returns, the path is asked again; what it gave
        // late stands in for a new call that is late too.
        let wait_returned = |calls: &BlockingCalls<u32>| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while calls.stuck() > 0 {
                assert!(Instant::now() < deadline, "the slow call never returned");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_returned(&calls);
        assert!(matches!(calls.call(path, slow), Guarded::Done(Ok(7))));
        wait_returned(&calls);
        // A fresh answer in time is preferred to a late one.
        assert!(matches!(calls.call(path, fast), Guarded::Done(Ok(3))));
        assert!(matches!(calls.call(c"/other", fast), Guarded::Done(Ok(3))));
    }
}
