//! Splay (SPEC §5.3): when a sink is caught up, a fresh row waits a delay
//! before its first send, so that a fleet whose samples are aligned to the
//! wall clock does not post in one burst. `"auto"` is fixed per host.

use crate::config::Splay;
use std::time::Duration;

/// The longest automatic delay, whatever the interval.
const AUTO_MAX: Duration = Duration::from_secs(30);

/// The delay for this host: `"auto"` is a point in
/// [0, min(interval/2, 30 s)) picked by a hash of machine_id and node_id
/// (cloned hosts share a machine-id but not a name, so they still spread).
pub fn delay(splay: Splay, interval: Duration, machine_id: &str, node_id: &str) -> Duration {
    match splay {
        Splay::Fixed(d) => d,
        Splay::Auto => {
            let window = (interval / 2).min(AUTO_MAX);
            let fraction = (host_hash(machine_id, node_id) >> 11) as f64 / (1u64 << 53) as f64;
            window.mul_f64(fraction)
        }
    }
}

/// FNV-1a over both names (with a separator), then a final mix so that
/// names differing in one character land far apart. Stable across builds
/// and versions: a host keeps its slot through upgrades.
fn host_hash(machine_id: &str, node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine_id.bytes().chain([0u8]).chain(node_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn fixed_is_itself() {
        let d = Duration::from_millis(1500);
        assert_eq!(delay(Splay::Fixed(d), MINUTE, "m", "n"), d);
        assert_eq!(
            delay(Splay::Fixed(Duration::ZERO), MINUTE, "m", "n"),
            Duration::ZERO
        );
    }

    #[test]
    fn auto_is_stable_and_within_the_window() {
        let a = delay(Splay::Auto, MINUTE, "abc", "web-1");
        assert_eq!(a, delay(Splay::Auto, MINUTE, "abc", "web-1"));
        for i in 0..1000 {
            let d = delay(Splay::Auto, MINUTE, "same-machine-id", &format!("web-{i}"));
            assert!(d < Duration::from_secs(30), "{d:?}");
            let d = delay(
                Splay::Auto,
                Duration::from_secs(10),
                "m",
                &format!("web-{i}"),
            );
            assert!(d < Duration::from_secs(5), "{d:?}");
        }
    }

    #[test]
    fn auto_spreads_clones_that_share_a_machine_id() {
        // 100 hosts over 10 buckets of the window: none empty, none crowded.
        let mut buckets = [0u32; 10];
        for i in 0..100 {
            let d = delay(Splay::Auto, MINUTE, "cloned-image-id", &format!("node-{i}"));
            buckets[(d.as_secs_f64() / 3.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (1..=25).contains(&n)),
            "{buckets:?}"
        );
        // And the machine id matters too.
        assert_ne!(
            delay(Splay::Auto, MINUTE, "m1", "web"),
            delay(Splay::Auto, MINUTE, "m2", "web")
        );
    }
}
