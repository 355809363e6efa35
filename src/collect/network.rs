//! Collector `network`: per-interface counters and rates from
//! /proc/net/dev, and each interface's state from /sys/class/net/<if>/operstate.

use super::{counter_rate, invalid, previous, reused_entry, Collect, CollectError, Filters, Roots};
use crate::config::CollectConfig;
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{InterfaceMetrics, Metrics, NetworkMetrics};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `operstate` files kept open at most, and at most a sixteenth of the
/// open-files limit; past it (hosts with thousands of container
/// interfaces), they are opened for each read.
const MAX_KEPT_OPEN: usize = 1024;
const LIMIT_SHARE: u64 = 16;

/// The cumulative counters of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses /proc/net/dev into `out`, reusing its entries (and their names'
/// storage). Lines: `  eth0: rx bytes packets errs drop fifo frame compressed
/// multicast, tx bytes packets errs drop fifo colls carrier compressed`.
pub fn parse_net_dev(text: &str, out: &mut Vec<IfCounters>) -> io::Result<()> {
    let mut used = 0;
    let mut saw_header = false;
    for (i, line) in text.lines().enumerate() {
        if i < 2 && line.contains('|') {
            saw_header = true;
            continue;
        }
        // Interface names cannot contain ':' (the kernel refuses them).
        let Some((name, values)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let mut v = [0u64; 16];
        let mut n = 0;
        for (slot, token) in v.iter_mut().zip(values.split_ascii_whitespace()) {
            match procfs::parse_u64(token.as_bytes()) {
                Some(x) => *slot = x,
                None => break,
            }
            n += 1;
        }
        if n < 16 || name.is_empty() {
            return Err(invalid(format!("bad /proc/net/dev line {line:?}")));
        }
        let entry = reused_entry(out, used);
        entry.name.clear();
        entry.name.push_str(name);
        entry.rx_bytes = v[0];
        entry.rx_packets = v[1];
        entry.rx_errors = v[2];
        entry.rx_dropped = v[3];
        entry.tx_bytes = v[8];
        entry.tx_packets = v[9];
        entry.tx_errors = v[10];
        entry.tx_dropped = v[11];
        used += 1;
    }
    out.truncate(used);
    // The header is the only thing every real file has (even with no interfaces).
    if saw_header || used > 0 {
        Ok(())
    } else {
        Err(invalid("no /proc/net/dev header"))
    }
}

/// Metrics for every interface in `cur` that is not excluded, with rates over
/// `elapsed` since `prev`. An interface missing from `prev` (it just appeared)
/// or whose counters went backwards (reset) has rate 0 for this interval.
pub fn interface_metrics(
    prev: &[IfCounters],
    cur: &[IfCounters],
    elapsed: Duration,
    filters: &Filters,
) -> Vec<InterfaceMetrics> {
    cur.iter()
        .enumerate()
        .filter(|(_, c)| !filters.interface_excluded(&c.name))
        .map(|(i, c)| {
            let before = previous(prev, i, |p| p.name == c.name);
            let (rx_rate, tx_rate) = match before {
                Some(p) => (
                    counter_rate(p.rx_bytes, c.rx_bytes, elapsed),
                    counter_rate(p.tx_bytes, c.tx_bytes, elapsed),
                ),
                None => (0.0, 0.0),
            };
            InterfaceMetrics {
                name: c.name.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_bytes_per_sec: rx_rate,
                tx_bytes_per_sec: tx_rate,
                rx_errors: c.rx_errors,
                tx_errors: c.tx_errors,
                rx_dropped: c.rx_dropped,
                tx_dropped: c.tx_dropped,
                oper_state: None,
            }
        })
        .collect()
}

/// The contents of an operstate file ("up", "down", "unknown", ...).
pub fn parse_operstate(text: &str) -> io::Result<String> {
    let state = text.trim();
    if state.is_empty() || !state.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(invalid(format!("bad operstate {text:?}")));
    }
    Ok(state.to_string())
}

/// The previous /proc/net/dev reading, when it was taken, and the buffers
/// for the next one. Excluded interfaces are tracked too, so a reload that
/// includes one gives it a proper rate at once.
#[derive(Debug)]
pub struct NetState {
    file: ProcFile,
    prev: Vec<IfCounters>,
    prev_at: Option<Instant>,
    cur: Vec<IfCounters>,
}

impl NetState {
    pub fn new(proc: &Path) -> NetState {
        NetState {
            file: ProcFile::new(proc.join("net/dev")),
            prev: Vec::new(),
            prev_at: None,
            cur: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads /proc/net/dev; rates cover the time since the last successful
    /// reading, measured on the monotonic clock right after each read.
    pub fn sample(
        &mut self,
        reader: &mut FileReader,
        filters: &Filters,
    ) -> io::Result<Vec<InterfaceMetrics>> {
        let bytes = self.file.read(reader)?;
        let now = Instant::now();
        parse_net_dev(&procfs::text(bytes), &mut self.cur)?;
        let metrics = match self.prev_at {
            Some(then) => interface_metrics(&self.prev, &self.cur, now - then, filters),
            // No baseline: rates 0 (only when the start-up read failed).
            None => interface_metrics(&[], &self.cur, Duration::ZERO, filters),
        };
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.prev_at = Some(now);
        Ok(metrics)
    }
}

pub struct NetworkCollector {
    state: NetState,
    filters: Filters,
    class_net: PathBuf,
    /// The operstate files of the reported interfaces, kept open.
    operstate: HashMap<String, ProcFile>,
    reader: FileReader,
}

impl NetworkCollector {
    pub fn new(roots: &Roots, config: &CollectConfig) -> NetworkCollector {
        NetworkCollector {
            state: NetState::new(&roots.proc),
            filters: Filters::new(config),
            class_net: roots.sys.join("class/net"),
            operstate: HashMap::new(),
            reader: FileReader::with_capacity(4096),
        }
    }
}

impl Collect for NetworkCollector {
    fn name(&self) -> &'static str {
        "network"
    }

    /// A missing operstate (an interface that just went away) leaves that
    /// interface's `oper_state` null without failing the collector.
    fn collect(&mut self, _now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let mut interfaces = self
            .state
            .sample(&mut self.reader, &self.filters)
            .map_err(|e| CollectError::new(self.state.path(), e))?;
        // Forget interfaces that are gone; only then is a set of names built.
        if self.operstate.len() > interfaces.len()
            || interfaces
                .iter()
                .any(|i| !self.operstate.contains_key(&i.name))
        {
            let present: HashSet<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
            self.operstate
                .retain(|name, _| present.contains(name.as_str()));
        }
        // The budget follows the open-files limit in force (raised after the
        // first sample): files past it are opened for each read, and become
        // kept-open ones as soon as the budget allows.
        let budget = crate::os::fdlimit::share(LIMIT_SHARE, MAX_KEPT_OPEN);
        let mut kept = self
            .operstate
            .values()
            .filter(|f| f.may_keep_open())
            .count();
        for i in &mut interfaces {
            let file = self.operstate.entry(i.name.clone()).or_insert_with(|| {
                ProcFile::whole(self.class_net.join(&i.name).join("operstate")).opened_each_read()
            });
            if !file.may_keep_open() && kept < budget {
                *file = ProcFile::whole(file.path().to_path_buf());
                kept += 1;
            }
            i.oper_state = file
                .read(&mut self.reader)
                .ok()
                .and_then(|b| parse_operstate(&procfs::text(b)).ok());
        }
        m.network = Some(NetworkMetrics { interfaces });
        Ok(())
    }

    fn reconfigure(&mut self, config: &CollectConfig) {
        self.filters = Filters::new(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_format_without_space_after_colon() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n  eth0:4294967296 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\n";
        let mut out = Vec::new();
        parse_net_dev(text, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "eth0");
        assert_eq!(out[0].rx_bytes, 4294967296);
        assert_eq!(out[0].tx_dropped, 8);
    }

    #[test]
    fn short_line_is_an_error() {
        let mut out = Vec::new();
        assert!(parse_net_dev("  eth0: 1 2 3\n", &mut out).is_err());
        assert!(parse_net_dev("", &mut out).is_err());
    }

    #[test]
    fn operstate() {
        assert_eq!(parse_operstate("up\n").unwrap(), "up");
        assert_eq!(
            parse_operstate("lowerlayerdown\n").unwrap(),
            "lowerlayerdown"
        );
        assert!(parse_operstate("\n").is_err());
    }
}
