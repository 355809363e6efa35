//! Collector `memory`: the memory breakdown from /proc/meminfo, and the
//! swap and major fault counters from /proc/vmstat.

use super::{counter_rate, invalid, read_parsed, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{MemoryMetrics, Metrics, VmstatMetrics};
use std::io;
use std::time::Instant;

/// The /proc/meminfo figures of the model, in bytes. Kernels before 3.14
/// have no MemAvailable: it is then estimated as MemFree + Buffers +
/// Cached, as `free` did on those kernels.
pub fn parse_meminfo(text: &str) -> io::Result<MemoryMetrics> {
    const KEYS: [&str; 9] = [
        "MemTotal",
        "MemAvailable",
        "SwapTotal",
        "SwapFree",
        "MemFree",
        "Buffers",
        "Cached",
        "Shmem",
        "Slab",
    ];
    let mut values: [Option<u64>; 9] = [None; 9];
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
    let [total, available, swap_total, swap_free, free, buffers, cached, shared, slab] = values;
    let total = total.ok_or_else(|| invalid("no MemTotal line"))?;
    let (free, buffers, cached) = (free.unwrap_or(0), buffers.unwrap_or(0), cached.unwrap_or(0));
    let available =
        available.unwrap_or_else(|| free.saturating_add(buffers).saturating_add(cached));
    let swap_total = swap_total.unwrap_or(0);
    Ok(MemoryMetrics {
        total_bytes: total,
        available_bytes: available.min(total),
        free_bytes: free,
        buffers_bytes: buffers,
        cached_bytes: cached,
        shared_bytes: shared.unwrap_or(0),
        slab_bytes: slab.unwrap_or(0),
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

/// pswpin, pswpout and pgmajfault from /proc/vmstat (all three required).
pub fn parse_vmstat(text: &str) -> io::Result<(u64, u64, u64)> {
    let mut found: [Option<u64>; 3] = [None; 3];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "pswpin" => 0,
            "pswpout" => 1,
            "pgmajfault" => 2,
            _ => continue,
        };
        found[slot] = Some(
            procfs::parse_u64(value.trim().as_bytes())
                .ok_or_else(|| invalid(format!("bad vmstat line {line:?}")))?,
        );
    }
    match found {
        [Some(a), Some(b), Some(c)] => Ok((a, b, c)),
        _ => Err(invalid("no pswpin, pswpout or pgmajfault line")),
    }
}

pub struct MemoryCollector {
    meminfo: ProcFile,
    vmstat: ProcFile,
    reader: FileReader,
    prev_vmstat: Option<((u64, u64, u64), Instant)>,
}

impl MemoryCollector {
    pub fn new(roots: &Roots) -> MemoryCollector {
        MemoryCollector {
            meminfo: ProcFile::whole(roots.proc.join("meminfo")),
            vmstat: ProcFile::new(roots.proc.join("vmstat")),
            reader: FileReader::new(),
            prev_vmstat: None,
        }
    }
}

impl Collect for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Both files are read; either failing fails the collector, and only
    /// the figures of the one that failed are null.
    fn collect(&mut self, now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let memory = read_parsed(&mut self.reader, &mut self.meminfo, parse_meminfo);
        let vmstat = read_parsed(&mut self.reader, &mut self.vmstat, parse_vmstat);
        m.memory = memory.as_ref().ok().cloned();
        if let Ok(cur) = &vmstat {
            // Without a previous reading there is no rate yet: null, not 0.
            let rate = |pick: fn(&(u64, u64, u64)) -> u64| {
                self.prev_vmstat.map(|(prev, at)| {
                    counter_rate(pick(&prev), pick(cur), now.saturating_duration_since(at))
                })
            };
            m.vmstat = Some(VmstatMetrics {
                swap_in_pages_total: cur.0,
                swap_out_pages_total: cur.1,
                major_faults_total: cur.2,
                swap_in_pages_per_sec: rate(|v| v.0),
                swap_out_pages_per_sec: rate(|v| v.1),
                major_faults_per_sec: rate(|v| v.2),
            });
            self.prev_vmstat = Some((*cur, now));
        }
        memory?;
        vmstat?;
        Ok(())
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

    #[test]
    fn vmstat() {
        assert_eq!(
            parse_vmstat("nr_free_pages 1\npswpin 2\npswpout 3\npgmajfault 4\n").unwrap(),
            (2, 3, 4)
        );
        assert!(parse_vmstat("pswpin 2\n").is_err());
    }
}
