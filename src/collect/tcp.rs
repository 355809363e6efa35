//! Collector `tcp`: connections, retransmits and resets from
//! /proc/net/snmp, listen queue overflows and drops from /proc/net/netstat,
//! and sockets by state from /proc/net/sockstat (+ sockstat6).
//!
//! The kernel keeps one set of TCP MIB counters for IPv4 and IPv6
//! (/proc/net/snmp6 has no Tcp section), so snmp and netstat cover both;
//! sockstat counts IPv4 sockets and sockstat6 adds the IPv6 ones (it is
//! absent when IPv6 is disabled, which is not a failure).

use super::{counter_rate, invalid, read_parsed, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{Metrics, TcpMetrics};
use std::io;
use std::time::Instant;

/// CurrEstab, RetransSegs and OutRsts from the `Tcp:` lines of /proc/net/snmp.
pub fn parse_snmp(text: &str) -> io::Result<(u64, u64, u64)> {
    let table = procfs::keyed_table(text, "Tcp").ok_or_else(|| invalid("no Tcp lines"))?;
    let get = |name: &str| {
        procfs::table_value(table, name).ok_or_else(|| invalid(format!("no Tcp {name} value")))
    };
    Ok((get("CurrEstab")?, get("RetransSegs")?, get("OutRsts")?))
}

/// `CurrEstab` alone: TCP connections in ESTABLISHED or CLOSE-WAIT.
pub fn parse_curr_estab(text: &str) -> io::Result<u64> {
    let table = procfs::keyed_table(text, "Tcp").ok_or_else(|| invalid("no Tcp lines"))?;
    procfs::table_value(table, "CurrEstab").ok_or_else(|| invalid("no CurrEstab value"))
}

/// ListenOverflows and ListenDrops from the `TcpExt:` lines of /proc/net/netstat.
pub fn parse_netstat(text: &str) -> io::Result<(u64, u64)> {
    let table = procfs::keyed_table(text, "TcpExt").ok_or_else(|| invalid("no TcpExt lines"))?;
    let get = |name: &str| {
        procfs::table_value(table, name).ok_or_else(|| invalid(format!("no TcpExt {name} value")))
    };
    Ok((get("ListenOverflows")?, get("ListenDrops")?))
}

/// The `key value key value ...` pairs after `label:` in a sockstat file.
fn sockstat_line<'t>(text: &'t str, label: &str) -> Option<Vec<(&'t str, &'t str)>> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(':')))?;
    let tokens: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(tokens.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// (inuse, orphan, tw) of the `TCP:` line of /proc/net/sockstat.
pub fn parse_sockstat(text: &str) -> io::Result<(u64, u64, u64)> {
    let pairs = sockstat_line(text, "TCP").ok_or_else(|| invalid("no TCP line"))?;
    let (mut inuse, mut orphan, mut tw) = (None, None, None);
    for (key, value) in pairs {
        let slot = match key {
            "inuse" => &mut inuse,
            "orphan" => &mut orphan,
            "tw" => &mut tw,
            _ => continue,
        };
        *slot = procfs::parse_u64(value.as_bytes());
    }
    match (inuse, orphan, tw) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
        _ => Err(invalid("bad TCP line")),
    }
}

/// `inuse` of the `TCP6:` line of /proc/net/sockstat6.
pub fn parse_sockstat6(text: &str) -> io::Result<u64> {
    sockstat_line(text, "TCP6")
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| *k == "inuse"))
        .and_then(|(_, v)| procfs::parse_u64(v.as_bytes()))
        .ok_or_else(|| invalid("bad TCP6 line"))
}

/// The last good reading of each source with its time: a source that
/// failed in between gives, once it reads again, its rate since then (not a
/// made-up 0), and one never read yet gives null.
#[derive(Default)]
struct Previous {
    snmp: Option<(Instant, (u64, u64))>,
    netstat: Option<(Instant, (u64, u64))>,
}

pub struct TcpCollector {
    snmp: ProcFile,
    netstat: ProcFile,
    sockstat: ProcFile,
    sockstat6: ProcFile,
    reader: FileReader,
    prev: Previous,
}

impl TcpCollector {
    pub fn new(roots: &Roots) -> TcpCollector {
        let net = roots.proc.join("net");
        TcpCollector {
            snmp: ProcFile::whole(net.join("snmp")),
            netstat: ProcFile::whole(net.join("netstat")),
            sockstat: ProcFile::whole(net.join("sockstat")),
            sockstat6: ProcFile::whole(net.join("sockstat6")),
            reader: FileReader::new(),
            prev: Previous::default(),
        }
    }
}

impl Collect for TcpCollector {
    fn name(&self) -> &'static str {
        "tcp"
    }

    /// Every source is read; the figures of one that fails are null and
    /// the first failure is returned.
    fn collect(&mut self, now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let reader = &mut self.reader;
        let snmp = read_parsed(reader, &mut self.snmp, parse_snmp);
        let netstat = read_parsed(reader, &mut self.netstat, parse_netstat);
        let sockstat = read_parsed(reader, &mut self.sockstat, parse_sockstat);
        let sockstat6 = match read_parsed(reader, &mut self.sockstat6, parse_sockstat6) {
            Err(e) if e.source.kind() == io::ErrorKind::NotFound => Ok(0),
            other => other,
        };
        let rate = |before: Option<(Instant, u64)>, cur: u64| {
            before.map(|(at, p)| counter_rate(p, cur, now.saturating_duration_since(at)))
        };
        let prev = &mut self.prev;
        let mut tcp = TcpMetrics::default();
        if let Ok((estab, retrans, resets)) = snmp {
            let before = prev.snmp.replace((now, (retrans, resets)));
            tcp.curr_estab = Some(estab);
            tcp.retrans_segs_total = Some(retrans);
            tcp.resets_sent_total = Some(resets);
            tcp.retrans_segs_per_sec = rate(before.map(|(at, b)| (at, b.0)), retrans);
            tcp.resets_sent_per_sec = rate(before.map(|(at, b)| (at, b.1)), resets);
        }
        if let Ok((overflows, drops)) = netstat {
            let before = prev.netstat.replace((now, (overflows, drops)));
            tcp.listen_overflows_total = Some(overflows);
            tcp.listen_drops_total = Some(drops);
            tcp.listen_overflows_per_sec = rate(before.map(|(at, b)| (at, b.0)), overflows);
            tcp.listen_drops_per_sec = rate(before.map(|(at, b)| (at, b.1)), drops);
        }
        if let (Ok((inuse, orphan, tw)), Ok(inuse6)) = (&sockstat, &sockstat6) {
            tcp.in_use = Some(inuse + inuse6);
            tcp.orphan = Some(*orphan);
            tcp.time_wait = Some(*tw);
        }
        m.tcp = tcp;
        snmp?;
        netstat?;
        sockstat?;
        sockstat6?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_by_column_name() {
        let text = "Tcp: A CurrEstab RetransSegs OutRsts\nTcp: 1 7 9 -1\n";
        assert_eq!(parse_snmp(text).unwrap(), (7, 9, 0));
        assert_eq!(parse_curr_estab(text).unwrap(), 7);
        assert!(parse_snmp("Tcp: A B\nTcp: 1 2\n").is_err());
        assert!(parse_curr_estab("Udp: A\nUdp: 1\n").is_err());
    }

    #[test]
    fn sockstat() {
        let text =
            "sockets: used 23\nTCP: inuse 3 orphan 1 tw 2 alloc 3 mem 128\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(text).unwrap(), (3, 1, 2));
        assert_eq!(
            parse_sockstat6("TCP6: inuse 4\nUDP6: inuse 0\n").unwrap(),
            4
        );
        assert!(parse_sockstat("UDP: inuse 0\n").is_err());
    }
}
