//! Keeps the daemon's resident set to what it uses. Most of a small Rust
//! daemon's RSS is its own code: pages that start-up touched once (argument
//! parsing, configuration, opening the queue) and their fault-around
//! neighbours. Once running, those pages are handed back to the kernel; the
//! code the steady state needs faults back in, page by page.

/// Asks the kernel to reclaim the process's file-backed code pages (Linux 5.4+;
/// older kernels refuse the advice and nothing changes).
pub fn release_startup_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let mut released = 0usize;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        // Only read-only or executable mappings of files (our own and the
        // shared libraries): never data that has been written to. Pages other
        // processes also map are left alone by the kernel.
        if !path.starts_with('/') || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of this process taken from
        // /proc/self/maps; MADV_PAGEOUT only drops clean pages, which fault
        // back in from the file on their next use.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) }
            == 0
        {
            released += end - start;
        }
    }
    log::debug!("released {} KiB of start-up code pages", released / 1024);
}
