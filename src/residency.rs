//! Keeps the daemon's resident set to what it uses. Most of a small Rust
//! daemon's RSS is code: pages that start-up touched once (argument parsing,
//! configuration, opening the queue) and the neighbours the kernel maps
//! around every fault. Once running, those pages are let go; the code the
//! steady state needs faults back in, page by page.

/// One mapping line of /proc/self/maps that is backed by a file.
struct FileMapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
}

fn file_mappings(maps: &str) -> impl Iterator<Item = FileMapping<'_>> {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let path = fields.nth(3).unwrap_or("");
        path.starts_with('/').then_some(())?;
        Some(FileMapping {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            perms,
        })
    })
}

/// Lets go of code pages (Linux 5.4+; an older kernel refuses the advice and
/// nothing changes).
pub fn release_startup_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let mut released = 0usize;
    for m in file_mappings(&maps) {
        let addr = m.start as *mut libc::c_void;
        let len = m.end - m.start;
        // SAFETY (both branches): the range is a whole file mapping of this
        // process taken from /proc/self/maps.
        let rc = if m.perms == "r-xp" {
            // Executable text is never written, so dropping these page-table
            // entries loses nothing: the next use maps the file page again.
            // Random access: later faults map the page they need, not 16.
            // Pages only this process maps are reclaimed outright, so they do
            // not come back as fault-around neighbours; shared ones (libc) are
            // only unmapped.
            unsafe {
                libc::madvise(addr, len, libc::MADV_RANDOM);
                libc::madvise(addr, len, libc::MADV_PAGEOUT);
                libc::madvise(addr, len, libc::MADV_DONTNEED)
            }
        } else if !m.perms.contains('w') {
            // Read-only data may hold relocated (privately written) pages:
            // only ask for reclaim, which never discards a modified page.
            unsafe { libc::madvise(addr, len, libc::MADV_PAGEOUT) }
        } else {
            continue;
        };
        if rc == 0 {
            released += len;
        }
    }
    log::debug!("let go of up to {} KiB of code pages", released / 1024);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_mappings_are_considered() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/bin/metricsd
55d0c0100000-55d0c0400000 r-xp 00100000 fd:01 123 /usr/bin/metricsd
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
";
        let found: Vec<_> = file_mappings(maps).map(|m| (m.start, m.perms)).collect();
        assert_eq!(
            found,
            vec![(0x55d0c0000000, "r--p"), (0x55d0c0100000, "r-xp")]
        );
    }

    #[test]
    fn the_process_keeps_working_after_letting_go() {
        release_startup_pages();
        // Code and read-only data fault back in and still hold what they held.
        let text = format!("{:?}", vec![1, 2, 3]);
        assert_eq!(text, "[1, 2, 3]");
        assert_eq!(
            crate::config::format_duration(std::time::Duration::from_secs(60)),
            "60s"
        );
    }
}
