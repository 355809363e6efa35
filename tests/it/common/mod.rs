//! Helpers shared by every test module: waiting on conditions with a
//! deadline, free loopback ports, and the real peers in the submodules.

pub mod backend;
pub mod browser;
pub mod cgroup;
pub mod daemon;
pub mod logs;
pub mod nspawn;
pub mod receivers;
pub mod rows;
pub mod stream_client;

use std::time::{Duration, Instant};

/// For a test whose tool or precondition is missing: on CI (`CI` set) the
/// test fails with `reason`, since CI must check everything; elsewhere it
/// prints "SKIP: reason" and the caller returns without checking.
pub fn skip_or_fail(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot be checked on CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_until`], but a timeout fails the test naming `what`.
pub fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// A loopback port that was free a moment ago (bound to :0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
