//! Small readers over /proc and /sys: whole files read into a reused buffer,
//! and a /proc directory scan that allocates nothing per entry.
//!
//! Files under /proc report a size of 0, so the std `read_to_end` size probe
//! (an extra statx and lseek per file) buys nothing; `FileReader` just reads
//! until end of file into a buffer that keeps its capacity between samples.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::io::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Files larger than this are refused rather than read (a bound on one
/// sample's work and memory; /proc/self/mountinfo with 100k mounts is ~15 MiB).
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

const INITIAL_CAPACITY: usize = 8 * 1024;

/// Where reading a kept-open /proc or /sys file from offset 0 may stop: the
/// read that only reports the end costs a system call (0.3 us here, 1.5 us
/// for a sysctl), and a sample reads some twenty such files.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// At a read that returns nothing (any file).
    Eof,
    /// At the first read that leaves room in the buffer: files the kernel
    /// writes whole into its buffer before the first byte is copied
    /// (single_open seq files such as /proc/stat, meminfo, loadavg,
    /// pressure/*, net/snmp, net/netstat, net/sockstat; sysctls; sysfs and
    /// cgroup attributes; /proc/<pid>/stat). Not for files of one record
    /// per line (vmstat, diskstats, net/dev, mountinfo), which come a
    /// kernel page at a time.
    WholeInOneRead,
}

/// Reads whole files into one buffer that is reused from sample to sample.
#[derive(Debug, Default)]
pub struct FileReader {
    buf: Vec<u8>,
    len: usize,
}

impl FileReader {
    pub fn new() -> FileReader {
        FileReader::with_capacity(INITIAL_CAPACITY)
    }

    /// A reader for files of about `capacity` bytes (it grows as needed).
    pub fn with_capacity(capacity: usize) -> FileReader {
        FileReader {
            buf: vec![0; capacity.max(64)],
            len: 0,
        }
    }

    /// Reads all of `path`; the bytes stay valid until the next read.
    pub fn read(&mut self, path: &Path) -> io::Result<&[u8]> {
        let file = File::open(path)?;
        self.read_from(file)
    }

    /// Reads `path` relative to an open directory (no walk from `/`).
    pub fn read_at(&mut self, dir: RawFd, path: &CStr) -> io::Result<&[u8]> {
        let file = open_at(dir, path)?;
        self.read_from(file)
    }

    /// Reads `source` to its end.
    pub fn read_from(&mut self, mut source: impl Read) -> io::Result<&[u8]> {
        self.fill(|buf, _| source.read(buf), End::Eof)
    }

    /// Reads `file` from offset 0 with pread, which makes the kernel produce
    /// a /proc file afresh without reopening it, to where `end` says.
    pub fn read_from_start(&mut self, file: &File, end: End) -> io::Result<&[u8]> {
        self.fill(|buf, offset| file.read_at(buf, offset as u64), end)
    }

    /// Calls `read(free space, bytes so far)` until it returns 0 or `end`
    /// is met, growing the buffer as needed.
    fn fill(
        &mut self,
        mut read: impl FnMut(&mut [u8], usize) -> io::Result<usize>,
        end: End,
    ) -> io::Result<&[u8]> {
        if self.buf.is_empty() {
            self.buf.resize(INITIAL_CAPACITY, 0);
        }
        self.len = 0;
        loop {
            if self.len == self.buf.len() {
                if self.buf.len() >= MAX_FILE_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("larger than {MAX_FILE_BYTES} bytes"),
                    ));
                }
                let grown = (self.buf.len() * 2).min(MAX_FILE_BYTES);
                self.buf.resize(grown, 0);
            }
            let room = self.buf.len() - self.len;
            match read(&mut self.buf[self.len..], self.len) {
                Ok(0) => return Ok(&self.buf[..self.len]),
                Ok(n) => {
                    self.len += n;
                    let done = match end {
                        End::Eof => false,
                        End::WholeInOneRead => n < room,
                    };
                    if done {
                        return Ok(&self.buf[..self.len]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The bytes of the last successful read.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// procfs's `f_type` (statfs), to tell the real /proc from a fixture tree.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// sysfs's `f_type`: its attribute files are also produced afresh by a
/// read from offset 0.
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// A /proc (or /sys) file kept open between samples and re-read from
/// offset 0 each time (saving the open and close, ~3 us each on /proc).
/// Only files on procfs and sysfs are kept open: a file elsewhere (a
/// fixture tree) is opened afresh on every read, so that replacing or
/// removing it takes effect.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: Option<File>,
    /// Where a read of the kept-open file stops (a file read the plain way
    /// is always read to its end).
    end: End,
    /// Cleared when re-reading the open file failed: from then on the file
    /// is opened afresh on every read.
    keep_open: bool,
}

impl ProcFile {
    /// A file read to its end every time.
    pub fn new(path: PathBuf) -> ProcFile {
        ProcFile::until(path, End::Eof)
    }

    /// A file whose kept-open reads stop where `end` says.
    fn until(path: PathBuf, end: End) -> ProcFile {
        ProcFile {
            path,
            file: None,
            end,
            keep_open: true,
        }
    }

    /// A file the kernel hands over whole in one read (see `End`).
    pub fn whole(path: PathBuf) -> ProcFile {
        ProcFile::until(path, End::WholeInOneRead)
    }

    /// Never kept open: opened, read and closed on every read (for files
    /// past a collector's descriptor budget).
    pub fn opened_each_read(mut self) -> ProcFile {
        self.keep_open = false;
        self
    }

    /// Whether the file may be kept open between reads.
    pub fn may_keep_open(&self) -> bool {
        self.keep_open
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file into `reader`'s buffer.
    pub fn read<'r>(&mut self, reader: &'r mut FileReader) -> io::Result<&'r [u8]> {
        if let Some(file) = &self.file {
            if reader.read_from_start(file, self.end).is_ok() {
                return Ok(reader.bytes());
            }
            // Not re-readable after all (or it failed): read it the plain
            // way now, and from now on.
            self.file = None;
            self.keep_open = false;
        }
        let file = File::open(&self.path)?;
        if !self.keep_open || !regenerated_by_pread(&file) {
            return reader.read_from(file);
        }
        let file = self.file.insert(file);
        reader.read_from_start(file, self.end)?;
        Ok(reader.bytes())
    }

    /// Closes the file if it is kept open (for files read only once).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// For a kept-open mount table (/proc/self/mountinfo): whether the
    /// kernel reported a mount or unmount since the file was opened or last
    /// polled (POLLPRI). True when unknown (not open, not procfs), so the
    /// caller reads the file.
    pub fn mounts_changed(&self) -> bool {
        let Some(file) = &self.file else {
            return true;
        };
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n < 0 || pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0
    }
}

/// Files whose contents the kernel produces afresh on each read from
/// offset 0: procfs and sysfs.
fn regenerated_by_pread(file: &File) -> bool {
    // SAFETY: an all-zero statfs is valid; fstatfs only writes into it.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` is open and `s` a valid out-pointer.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) };
    rc == 0 && matches!(s.f_type as i64, PROC_SUPER_MAGIC | SYSFS_MAGIC)
}

fn fd_is_procfs(fd: RawFd) -> bool {
    // SAFETY: an all-zero statfs is valid; fstatfs only writes into it.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `s` a valid out-pointer.
    let rc = unsafe { libc::fstatfs(fd, &mut s) };
    rc == 0 && s.f_type as i64 == PROC_SUPER_MAGIC
}

/// The bytes as text; borrowed (no copy) when they are valid UTF-8, as /proc
/// files other than names chosen by users always are.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    // The strict check is several times faster than the lossy one's scan.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Opens `path` relative to the directory `dir`, read-only and close-on-exec.
pub fn open_at(dir: RawFd, path: &CStr) -> io::Result<File> {
    // SAFETY: `path` is a valid NUL-terminated string; openat does not keep it.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// One `read` of at most `buf.len()` bytes from `path` under `dir`: enough for
/// one-line files such as /proc/<pid>/statm and comm, which the kernel hands
/// over whole in the first read, so the end-of-file read can be skipped.
pub fn read_small_at<'b>(dir: RawFd, path: &CStr, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    let mut file = open_at(dir, path)?;
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// An open directory (kept open between samples and rewound for each scan).
pub struct DirScan {
    dir: *mut libc::DIR,
}

// SAFETY: the DIR stream is only used through &mut self, from one thread at a time.
unsafe impl Send for DirScan {}

impl DirScan {
    pub fn open(path: &Path) -> io::Result<DirScan> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: `c` is a valid C string; a null result is handled below.
        let dir = unsafe { libc::opendir(c.as_ptr()) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(DirScan { dir })
    }

    /// The directory's file descriptor, for `open_at`.
    pub fn fd(&self) -> RawFd {
        // SAFETY: `self.dir` is an open DIR stream until drop.
        unsafe { libc::dirfd(self.dir) }
    }

    /// Whether the directory is on procfs (the real /proc, not a fixture).
    pub fn is_procfs(&self) -> bool {
        fd_is_procfs(self.fd())
    }

    /// Calls `each` with every entry's name (without "." and "..") and
    /// inode number, from the start, and the directory's descriptor.
    pub fn for_each(&mut self, mut each: impl FnMut(&[u8], u64, RawFd)) -> io::Result<()> {
        let fd = self.fd();
        // SAFETY: `self.dir` is an open DIR stream.
        unsafe { libc::rewinddir(self.dir) };
        loop {
            // readdir reports errors only through errno, so clear it first.
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `self.dir` is an open DIR stream; the entry stays valid
            // until the next readdir on this stream, and is not kept past it.
            let entry = unsafe { libc::readdir(self.dir) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => Ok(()),
                    Some(_) => Err(err),
                };
            }
            // SAFETY: d_name is NUL-terminated within the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // SAFETY: as above.
            let ino = unsafe { (*entry).d_ino };
            each(name, ino, fd);
        }
    }
}

impl Drop for DirScan {
    fn drop(&mut self) {
        // SAFETY: `self.dir` is open and is closed exactly once here.
        unsafe { libc::closedir(self.dir) };
    }
}

/// Parses a whole ASCII decimal number; None for anything else (or overflow).
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Parses a number that the kernel prints as a decimal (unsigned, or signed
/// such as `-1`); negative values become 0.
pub fn parse_count(token: &str) -> Option<u64> {
    if let Some(rest) = token.strip_prefix('-') {
        parse_u64(rest.as_bytes()).map(|_| 0)
    } else {
        parse_u64(token.as_bytes())
    }
}

/// USER_HZ: the unit of the CPU times in /proc/stat and /proc/<pid>/stat.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Values of the `Prefix: name name ...` / `Prefix: value value ...` line
/// pairs of /proc/net/snmp and /proc/net/netstat, looked up by name.
pub fn keyed_table<'t>(text: &'t str, prefix: &str) -> Option<(&'t str, &'t str)> {
    let mut lines = text.lines().filter_map(|l| {
        l.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
    });
    Some((lines.next()?, lines.next()?))
}

/// The value under `name` in a `keyed_table` pair (negative values become 0).
pub fn table_value(table: (&str, &str), name: &str) -> Option<u64> {
    let (names, values) = table;
    let index = names.split_ascii_whitespace().position(|h| h == name)?;
    values
        .split_ascii_whitespace()
        .nth(index)
        .and_then(parse_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_several_chunks_and_grows() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = FileReader::new();
        // A reader that hands out at most 1000 bytes per call, like seq_file pages.
        struct Chunky<'a>(&'a [u8]);
        impl Read for Chunky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(reader.read_from(Chunky(&data)).unwrap(), &data[..]);
        assert_eq!(reader.read_from(Chunky(b"short")).unwrap(), b"short");
        assert_eq!(reader.bytes(), b"short");
    }

    /// Hands out `chunks` one per read and counts the reads; a read past
    /// the last chunk fails the test (the reader should have stopped).
    struct Pages<'a> {
        chunks: &'a [&'a [u8]],
        reads: usize,
    }

    impl Pages<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let chunk = self
                .chunks
                .get(self.reads - 1)
                .expect("no read past the end");
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    fn pages<'a>(chunks: &'a [&'a [u8]]) -> Pages<'a> {
        Pages { chunks, reads: 0 }
    }

    #[test]
    fn a_whole_in_one_read_file_stops_at_the_first_short_read() {
        let mut reader = FileReader::with_capacity(64);
        let mut file = pages(&[b"cpu 1 2 3\n"]);
        let bytes = reader
            .fill(|b, _| file.read(b), End::WholeInOneRead)
            .unwrap();
        assert_eq!(bytes, b"cpu 1 2 3\n");
        assert_eq!(file.reads, 1);

        // Larger than the buffer: it grows and reads on until a read leaves room.
        let big = vec![b'x'; 64];
        let chunks: [&[u8]; 2] = [&big, b"tail\n"];
        let mut file = pages(&chunks);
        let bytes = reader
            .fill(|b, _| file.read(b), End::WholeInOneRead)
            .unwrap();
        assert_eq!(bytes.len(), 69);
        assert_eq!(file.reads, 2);
    }

    #[test]
    fn whole_in_one_read_files_of_this_kernel_come_whole() {
        // Counters move between two reads; the lines and their names do not.
        let shape = |bytes: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(|l| {
                    l.split(|c: char| c.is_ascii_digit())
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        };
        // A buffer smaller than netstat (about 4 KiB) proves reading on too.
        let mut reader = FileReader::with_capacity(1024);
        for name in [
            "stat",
            "meminfo",
            "loadavg",
            "net/snmp",
            "net/netstat",
            "net/sockstat",
        ] {
            let path = Path::new("/proc").join(name);
            let mut file = ProcFile::whole(path.clone());
            for _ in 0..2 {
                let ours = shape(file.read(&mut reader).unwrap());
                let full = shape(&std::fs::read(&path).unwrap());
                assert_eq!(ours, full, "{name}");
            }
            assert!(file.file.is_some(), "{name} stays open");
        }
    }

    #[test]
    fn a_kept_open_proc_file_is_read_afresh() {
        let mut reader = FileReader::new();
        let mut uptime = ProcFile::new(PathBuf::from("/proc/uptime"));
        let first = uptime.read(&mut reader).unwrap().to_vec();
        assert!(uptime.file.is_some(), "procfs files stay open");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let now = uptime.read(&mut reader).unwrap().to_vec();
            if now != first {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never changed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn other_files_are_reopened_each_time() {
        let dir = std::env::temp_dir().join(format!("procfs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, "one").unwrap();
        let mut reader = FileReader::new();
        let mut file = ProcFile::new(path.clone());
        assert_eq!(file.read(&mut reader).unwrap(), b"one");
        // Replaced by a new file (a new inode): the new content is read.
        std::fs::write(dir.join("g"), "two").unwrap();
        std::fs::rename(dir.join("g"), &path).unwrap();
        assert_eq!(file.read(&mut reader).unwrap(), b"two");
        std::fs::remove_file(&path).unwrap();
        assert!(file.read(&mut reader).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_count("-1"), Some(0));
        assert_eq!(parse_count("42"), Some(42));
        assert_eq!(parse_count("x"), None);
    }
}
