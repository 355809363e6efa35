//! Waiting on conditions with a deadline, and free loopback ports: shared by
//! the integration tests and the benchmarks (benches/common/mod.rs).

use std::time::{Duration, Instant};

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

/// A loopback port that is free now, for a daemon or receiver to bind a
/// moment later. It is taken below the kernel's ephemeral range, so the
/// client sockets of tests running in parallel (which get ephemeral ports)
/// cannot hold it meanwhile, and no two calls of this run are given the
/// same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const WINDOW: u32 = 12_000;
    if ephemeral_low > WINDOW + 1024 {
        let base = ephemeral_low - WINDOW;
        // Each run starts elsewhere in the window (two suites side by side).
        let start = std::process::id().wrapping_mul(7919) % WINDOW;
        for _ in 0..WINDOW {
            let n = CALLS.fetch_add(1, Ordering::Relaxed);
            let port = (base + (start + n) % WINDOW) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
