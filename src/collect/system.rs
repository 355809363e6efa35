//! Collector `system`: uptime (/proc/uptime), the boot id, file
//! descriptors (/proc/sys/fs/file-nr), clock synchronisation (adjtimex(2)),
//! the kernel release (uname(2)) and the OS name (/etc/os-release). The boot
//! id, kernel and OS cannot change while the daemon runs: they are read once
//! (and retried on each sample until they have been).

use super::{invalid, read_parsed, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::Metrics;
use std::ffi::CStr;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

/// Whole seconds since boot (the first field, rounded down).
pub fn parse_uptime(text: &str) -> io::Result<u64> {
    let first = text.split_ascii_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs.floor() as u64),
        _ => Err(invalid(format!("bad uptime {text:?}"))),
    }
}

/// The boot id: a UUID the kernel makes at each boot.
pub fn parse_boot_id(text: &str) -> io::Result<String> {
    let id = text.trim();
    let looks_like_uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if looks_like_uuid {
        Ok(id.to_string())
    } else {
        Err(invalid(format!("bad boot id {id:?}")))
    }
}

/// (allocated, maximum) from /proc/sys/fs/file-nr: `allocated free max`.
pub fn parse_file_nr(text: &str) -> io::Result<(u64, u64)> {
    let mut fields = text
        .split_ascii_whitespace()
        .map(|f| procfs::parse_u64(f.as_bytes()));
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Some(allocated)), Some(Some(_free)), Some(Some(max))) => Ok((allocated, max)),
        _ => Err(invalid(format!("bad file-nr {text:?}"))),
    }
}

/// PRETTY_NAME from os-release(5) text, unquoted.
pub fn parse_os_release(text: &str) -> io::Result<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))
        .ok_or_else(|| invalid("no PRETTY_NAME"))?
        .trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    // Shell-style escapes: \" \\ \$ \`
    let mut out = String::with_capacity(unquoted.len());
    let mut chars = unquoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Whether the kernel considers the clock synchronised (STA_UNSYNC clear)
/// and its maximum error in ms, from a read-only adjtimex(2) (modes 0).
pub fn clock_state() -> io::Result<(bool, f64)> {
    // SAFETY: an all-zero timex is valid; modes 0 only reads.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    let synced = tx.status & libc::STA_UNSYNC == 0;
    Ok((synced, tx.maxerror as f64 / 1000.0))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: an all-zero utsname is valid; uname only writes into it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates the field.
    let release = unsafe { CStr::from_ptr(u.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

pub struct SystemCollector {
    uptime: ProcFile,
    boot_id_file: ProcFile,
    file_nr: ProcFile,
    os_release: [PathBuf; 2],
    reader: FileReader,
    boot_id: Option<String>,
    kernel: Option<String>,
    os: Option<String>,
}

impl SystemCollector {
    pub fn new(roots: &Roots) -> SystemCollector {
        SystemCollector {
            uptime: ProcFile::whole(roots.proc.join("uptime")),
            boot_id_file: ProcFile::whole(roots.proc.join("sys/kernel/random/boot_id")),
            file_nr: ProcFile::whole(roots.proc.join("sys/fs/file-nr")),
            // os-release(5): /etc first, then the vendor's copy.
            os_release: [
                roots.etc.join("os-release"),
                roots.etc.join("../usr/lib/os-release"),
            ],
            reader: FileReader::with_capacity(1024),
            boot_id: None,
            kernel: None,
            os: None,
        }
    }

    fn read_os(&mut self) -> Result<String, CollectError> {
        let mut first_error = None;
        for path in &self.os_release {
            match std::fs::read_to_string(path).and_then(|t| parse_os_release(&t)) {
                Ok(os) => return Ok(os),
                Err(e) => {
                    first_error.get_or_insert(CollectError::new(path, e));
                }
            }
        }
        Err(first_error.unwrap_or_else(|| CollectError::new("os-release", invalid("none"))))
    }
}

impl Collect for SystemCollector {
    fn name(&self) -> &'static str {
        "system"
    }

    /// Every source is tried; a failing one leaves its field null and the
    /// first failure is returned.
    fn collect(&mut self, _now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let mut first: Option<CollectError> = None;
        let mut note = |r: Result<(), CollectError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        let reader = &mut self.reader;
        note(
            read_parsed(reader, &mut self.uptime, parse_uptime).map(|u| {
                m.system.uptime_seconds = Some(u);
            }),
        );
        if self.boot_id.is_none() {
            let read = read_parsed(reader, &mut self.boot_id_file, parse_boot_id);
            note(read.map(|id| {
                self.boot_id = Some(id);
                self.boot_id_file.close();
            }));
        }
        note(
            read_parsed(reader, &mut self.file_nr, parse_file_nr).map(|(allocated, max)| {
                m.system.file_descriptors_allocated = Some(allocated);
                m.system.file_descriptors_max = Some(max);
            }),
        );
        note(
            clock_state()
                .map(|(synced, max_error_ms)| {
                    m.system.clock_synced = Some(synced);
                    m.system.clock_max_error_ms = Some(max_error_ms);
                })
                .map_err(|e| CollectError::new("adjtimex(2)", e)),
        );
        if self.kernel.is_none() {
            note(
                kernel_release()
                    .map(|k| self.kernel = Some(k))
                    .map_err(|e| CollectError::new("uname(2)", e)),
            );
        }
        if self.os.is_none() {
            let os = self.read_os();
            note(os.map(|os| self.os = Some(os)));
        }
        m.system.boot_id = self.boot_id.clone();
        m.system.kernel = self.kernel.clone();
        m.system.os = self.os.clone();
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_rounds_down() {
        assert_eq!(parse_uptime("3785.97 6850.77\n").unwrap(), 3785);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 0").is_err());
    }

    #[test]
    fn boot_id() {
        assert_eq!(
            parse_boot_id("f99c11d0-58bc-4b3e-b5a7-f874daa5d90a\n").unwrap(),
            "f99c11d0-58bc-4b3e-b5a7-f874daa5d90a"
        );
        assert!(parse_boot_id("not a uuid\n").is_err());
    }

    #[test]
    fn file_nr_and_os_release() {
        assert_eq!(parse_file_nr("680\t0\t2466170\n").unwrap(), (680, 2466170));
        assert!(parse_file_nr("680 0\n").is_err());
        assert_eq!(
            parse_os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n").unwrap(),
            "Debian GNU/Linux 13 (trixie)"
        );
        assert_eq!(parse_os_release("PRETTY_NAME=Plain\n").unwrap(), "Plain");
        assert_eq!(
            parse_os_release("PRETTY_NAME='a \\\"b\\\"'\n").unwrap(),
            "a \"b\""
        );
        assert!(parse_os_release("NAME=x\n").is_err());
    }
}
