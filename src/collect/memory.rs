//! Memory and swap from /proc/meminfo.

use super::invalid;
use crate::procfs;
use crate::snapshot::MemoryMetrics;
use std::io;

/// MemTotal, MemAvailable, SwapTotal and SwapFree, in bytes. Kernels before
/// 3.14 have no MemAvailable: it is then estimated as MemFree + Buffers +
/// Cached, as `free` did on those kernels.
pub fn parse_meminfo(text: &str) -> io::Result<MemoryMetrics> {
    const KEYS: [&str; 7] = [
        "MemTotal",
        "MemAvailable",
        "SwapTotal",
        "SwapFree",
        "MemFree",
        "Buffers",
        "Cached",
    ];
    let mut values: [Option<u64>; 7] = [None; 7];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(i) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let bytes =
            kib_to_bytes(rest).ok_or_else(|| invalid(format!("bad meminfo line {line:?}")))?;
        values[i] = Some(bytes);
    }
    let [total, available, swap_total, swap_free, free, buffers, cached] = values;
    let total = total.ok_or_else(|| invalid("no MemTotal line"))?;
    let available = available.unwrap_or_else(|| {
        let (free, buffers, cached) =
            (free.unwrap_or(0), buffers.unwrap_or(0), cached.unwrap_or(0));
        free.saturating_add(buffers).saturating_add(cached)
    });
    let swap_total = swap_total.unwrap_or(0);
    Ok(MemoryMetrics {
        total_bytes: total,
        available_bytes: available.min(total),
        swap_total_bytes: swap_total,
        swap_free_bytes: swap_free.unwrap_or(0).min(swap_total),
    })
}

/// `   16318928 kB` → bytes.
fn kib_to_bytes(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let n = procfs::parse_u64(parts.next()?.as_bytes())?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_available_on_old_kernels() {
        let m = parse_meminfo(
            "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        assert_eq!(m.total_bytes, 1000 * 1024);
        assert_eq!(m.available_bytes, 400 * 1024);
    }

    #[test]
    fn rejects_missing_total_and_garbage() {
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
    }
}
