//! The open-files limit: raised once by the stream server, and shared out
//! among the collectors that keep descriptors open between samples.

/// The soft limit on open files now (`u64::MAX` when unlimited), or `None`
/// when it cannot be read.
fn soft_limit() -> Option<u64> {
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes into it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid resource and out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return Some(u64::MAX);
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Some(limit.rlim_cur as u64)
}

/// How many descriptors a collector may keep open: `1/divisor` of the soft
/// limit in force now, at most `max`. Read on every sample, since the limit
/// is raised after the collectors are made (and may be changed from outside
/// with prlimit). An unreadable limit counts as 1024, systemd's default.
pub fn share(divisor: u64, max: usize) -> usize {
    let soft = soft_limit().unwrap_or(1024);
    usize::try_from(soft / divisor.max(1))
        .unwrap_or(max)
        .min(max)
}

/// Raises the soft limit on open files to the hard one (systemd's default
/// soft limit of 1024 is meant to be raised by services that need more) and
/// returns the soft limit now in force.
pub fn raise_to_hard() -> u64 {
    // SAFETY: an all-zero rlimit is valid; getrlimit and setrlimit only read
    // and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    soft_limit().unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` in a forked child (so that changing the limit touches
    /// no other test) and says whether it held. The child only makes
    /// system calls and arithmetic before `_exit`.
    fn in_child(check: fn() -> bool) -> bool {
        // SAFETY: fork in a test; the child calls only async-signal-safe
        // functions (getrlimit, setrlimit, _exit) and allocates nothing.
        unsafe {
            match libc::fork() {
                0 => libc::_exit(if check() { 0 } else { 1 }),
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                child => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(child, &mut status, 0), child);
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
                }
            }
        }
    }

    fn set_soft(soft: u64) -> bool {
        // SAFETY: an all-zero rlimit is valid; valid resource and pointers.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
                limit.rlim_cur = soft as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            }
        }
    }

    #[test]
    fn a_share_follows_the_limit_in_force_when_it_is_changed() {
        // A quarter of 400 is 100; capped at 60; and after the limit is
        // raised to the hard one, a quarter of that.
        assert!(in_child(|| set_soft(400)
            && share(4, 1000) == 100
            && share(4, 60) == 60));
        assert!(in_child(|| {
            let hard = {
                // SAFETY: an all-zero rlimit is valid.
                let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
                // SAFETY: valid resource and pointer.
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
                limit.rlim_max
            };
            set_soft(64)
                && share(4, usize::MAX) == 16
                && raise_to_hard() == hard as u64
                && (hard == libc::RLIM_INFINITY || share(4, usize::MAX) as u64 == hard as u64 / 4)
        }));
    }
}
