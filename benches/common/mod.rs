//! Helpers the benchmarks share: the integration tests' waits, free ports
//! and real-binary harness (tests/it/common), and this process's CPU time.
#![allow(dead_code)]

use std::time::Duration;

#[path = "../../tests/it/common/wait.rs"]
mod wait;

// Each benchmark uses some of these.
#[allow(unused_imports)]
pub use wait::{free_port, wait_for, wait_until};

#[path = "../../tests/it/common/daemon.rs"]
pub mod daemon;

/// User + system CPU time of this process so far (getrusage: the kernel's
/// work producing /proc and cgroup files counts).
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of the calling thread (clock_gettime, nanosecond resolution):
/// for one call timed alone, where getrusage's whole-process sum is too coarse.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; the thread CPU clock always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
