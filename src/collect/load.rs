//! Collector `load`: the load averages from /proc/loadavg.

use super::{invalid, read_parsed, Collect, CollectError, Roots};
use crate::procfs::{FileReader, ProcFile};
use crate::snapshot::{LoadMetrics, Metrics};
use std::io;
use std::time::Instant;

/// The 1, 5 and 15 minute load averages (the first three fields).
pub fn parse_loadavg(text: &str) -> io::Result<(f64, f64, f64)> {
    let mut fields = text
        .split_ascii_whitespace()
        .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Ok((a, b, c)),
        _ => Err(invalid(format!(
            "expected three load averages, got {text:?}"
        ))),
    }
}

pub struct LoadCollector {
    file: ProcFile,
    reader: FileReader,
}

impl LoadCollector {
    pub fn new(roots: &Roots) -> LoadCollector {
        LoadCollector {
            file: ProcFile::whole(roots.proc.join("loadavg")),
            reader: FileReader::with_capacity(256),
        }
    }
}

impl Collect for LoadCollector {
    fn name(&self) -> &'static str {
        "load"
    }

    fn collect(&mut self, _now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let (load1, load5, load15) = read_parsed(&mut self.reader, &mut self.file, parse_loadavg)?;
        m.load = Some(LoadMetrics {
            load1,
            load5,
            load15,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 3/1024 4242\n").unwrap(),
            (0.52, 1.25, 2.0)
        );
        assert!(parse_loadavg("0.52 1.25\n").is_err());
        assert!(parse_loadavg("a b c\n").is_err());
        assert!(parse_loadavg("NaN 1 1\n").is_err());
    }
}
