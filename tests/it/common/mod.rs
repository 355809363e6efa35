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
mod wait;

pub use wait::{free_port, wait_for, wait_until};

/// For a test whose tool or precondition is missing: on CI (`CI` set) the
/// test fails with `reason`, since CI must check everything; elsewhere it
/// prints "SKIP: reason" and the caller returns without checking.
pub fn skip_or_fail(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot be checked on CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// All that an exited child wrote to its piped stderr.
pub fn stderr_of(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut err).unwrap();
    }
    err
}
