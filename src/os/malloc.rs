//! glibc malloc settings for `run`: the daemon's threads (sampler, stream,
//! one poster per sink) allocate little, once per interval, and sleep in
//! between. glibc's defaults suit busy servers, and here each one keeps
//! memory resident that nothing uses. Settings only: no page of the
//! process is touched or given back behind the allocator's back.

use std::ffi::OsString;

/// The environment variable glibc reads its tunables from, at start-up only.
const TUNABLES: &str = "GLIBC_TUNABLES";
/// No per-thread cache of freed blocks. glibc keeps up to 7 freed blocks
/// of each small size (up to 1 KiB) per thread for that thread alone to
/// reuse; a poster that has decoded and encoded one batch holds 70-80 KiB
/// so, the sampler as much, for the daemon's life (measured with gdb on
/// the running daemon, `p *tcache` per thread). Without the cache those
/// blocks go back to the shared arena, where any thread reuses them. The
/// cost is a lock per malloc, taken by threads that rarely run at once.
const NO_THREAD_CACHE: &str = "glibc.malloc.tcache_count=0";

/// Re-executes the binary with `NO_THREAD_CACHE` when `GLIBC_TUNABLES` is
/// not set at all (glibc has no call to change it once running). A value
/// set by the user is kept as it is. Returns when nothing is to be done or
/// the exec fails (then the daemon runs with glibc's defaults).
pub fn reexec_without_thread_caches() {
    if std::env::var_os(TUNABLES).is_some() || secure_exec() {
        // A setuid/setcap start drops GLIBC_TUNABLES: asking again would loop.
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("metricsd"));
    use std::os::unix::process::CommandExt as _;
    // Same process (pid, descriptors, the rest of the environment): only
    // the allocator's configuration differs.
    let _err = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(TUNABLES, NO_THREAD_CACHE)
        .exec();
}

fn secure_exec() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The settings glibc takes while running. Must be called before any
/// thread exists.
pub fn tune() {
    // One arena: a few threads with little to allocate need one malloc
    // arena, not one per thread.
    // SAFETY: mallopt only tunes the allocator; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // Blocks of 32 KiB and more get a mapping of their own, which goes
    // back to the kernel when they are freed. These are short-lived
    // buffers: the inflate state of each queued row a poster decodes
    // (~47 KiB), the deflate state of each snapshot's model (~380 KiB),
    // JSON buffers. Carved from the heap instead (glibc's default
    // threshold is 128 KiB, and it rises to the largest block freed so
    // far), they leave holes between the threads' long-lived blocks that
    // stay resident. Setting it also stops that rise.
    // SAFETY: as above.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024) };
}
