//! Collector `pressure`: pressure stall information from /proc/pressure
//! (cpu, memory, io). A kernel without PSI (no directory, or PSI disabled at
//! boot, which makes reads fail with EOPNOTSUPP) is not a failure: the
//! figures are null and the collector succeeds.

use super::{counter_rate, invalid, Collect, CollectError, Roots};
use crate::procfs::{self, FileReader, ProcFile};
use crate::snapshot::{Metrics, PressureMetrics, PsiLine};
use std::io;
use std::time::{Duration, Instant};

/// The `some` and `full` lines of one /proc/pressure file. `some` is
/// required; `full` is absent for cpu on kernels before 5.13.
pub fn parse_pressure(text: &str) -> io::Result<(PsiLine, Option<PsiLine>)> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let Some((kind, rest)) = line.split_once(' ') else {
            continue;
        };
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => continue,
        };
        *slot = Some(parse_line(rest).ok_or_else(|| invalid(format!("bad line {line:?}")))?);
    }
    Ok((some.ok_or_else(|| invalid("no \"some\" line"))?, full))
}

/// `avg10=0.00 avg60=0.00 avg300=0.00 total=0`
fn parse_line(rest: &str) -> Option<PsiLine> {
    let mut line = PsiLine::default();
    let mut seen = 0;
    for pair in rest.split_ascii_whitespace() {
        let (key, value) = pair.split_once('=')?;
        match key {
            "avg10" => line.avg10 = value.parse().ok()?,
            "avg60" => line.avg60 = value.parse().ok()?,
            "avg300" => line.avg300 = value.parse().ok()?,
            "total" => line.total_us = procfs::parse_u64(value.as_bytes())?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(line)
}

/// Fills `stall_ms_per_sec` from the previous reading (null without one:
/// the start-up reading failed, or the line is new).
fn with_rate(mut cur: PsiLine, prev: Option<&PsiLine>, elapsed: Duration) -> PsiLine {
    cur.stall_ms_per_sec = prev.map(|p| {
        let us_per_sec = counter_rate(p.total_us, cur.total_us, elapsed);
        (us_per_sec / 1000.0).clamp(0.0, 1000.0)
    });
    cur
}

/// Whether an error means "this kernel has no PSI" rather than a failure.
fn psi_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

pub struct PressureCollector {
    files: [ProcFile; 3],
    reader: FileReader,
    prev: Option<(PressureMetrics, Instant)>,
    absent_logged: bool,
}

impl PressureCollector {
    pub fn new(roots: &Roots) -> PressureCollector {
        let dir = roots.proc.join("pressure");
        PressureCollector {
            files: ["cpu", "memory", "io"].map(|r| ProcFile::whole(dir.join(r))),
            reader: FileReader::with_capacity(512),
            prev: None,
            absent_logged: false,
        }
    }
}

impl Collect for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&mut self, now: Instant, m: &mut Metrics) -> Result<(), CollectError> {
        let mut lines = [(PsiLine::default(), None); 3];
        for (i, file) in self.files.iter_mut().enumerate() {
            let read = file
                .read(&mut self.reader)
                .map(|b| procfs::text(b).into_owned());
            match read {
                Ok(text) => {
                    lines[i] =
                        parse_pressure(&text).map_err(|e| CollectError::new(file.path(), e))?;
                }
                Err(e) if i == 0 && psi_absent(&e) => {
                    if !self.absent_logged {
                        log::info!(
                            "no pressure stall information ({}: {e}); pressure figures are null",
                            file.path().display()
                        );
                        self.absent_logged = true;
                    }
                    self.prev = None;
                    return Ok(());
                }
                Err(e) => return Err(CollectError::new(file.path(), e)),
            }
        }
        let (prev, elapsed) = match &self.prev {
            Some((p, at)) => (Some(p), now.saturating_duration_since(*at)),
            None => (None, Duration::ZERO),
        };
        let [(cpu_some, cpu_full), (memory_some, memory_full), (io_some, io_full)] = lines;
        let rate = |cur: PsiLine, prev: Option<&PsiLine>| with_rate(cur, prev, elapsed);
        let metrics = PressureMetrics {
            cpu_some: Some(rate(cpu_some, prev.and_then(|p| p.cpu_some.as_ref()))),
            cpu_full: cpu_full.map(|l| rate(l, prev.and_then(|p| p.cpu_full.as_ref()))),
            memory_some: Some(rate(memory_some, prev.and_then(|p| p.memory_some.as_ref()))),
            memory_full: memory_full.map(|l| rate(l, prev.and_then(|p| p.memory_full.as_ref()))),
            io_some: Some(rate(io_some, prev.and_then(|p| p.io_some.as_ref()))),
            io_full: io_full.map(|l| rate(l, prev.and_then(|p| p.io_full.as_ref()))),
        };
        m.pressure = Some(metrics.clone());
        self.prev = Some((metrics, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let (some, full) = parse_pressure(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!((some.avg10, some.avg60, some.total_us), (1.5, 0.25, 12345));
        assert_eq!(full.unwrap().total_us, 7);
        let (_, full) = parse_pressure("some avg10=0 avg60=0 avg300=0 total=1\n").unwrap();
        assert!(full.is_none());
        assert!(parse_pressure("full avg10=0 avg60=0 avg300=0 total=1\n").is_err());
        assert!(parse_pressure("some avg10=x avg60=0 avg300=0 total=1\n").is_err());
    }

    #[test]
    fn stall_rate_is_bounded() {
        let prev = PsiLine {
            total_us: 1_000_000,
            ..Default::default()
        };
        let cur = PsiLine {
            total_us: 1_250_000,
            ..Default::default()
        };
        let r = with_rate(cur, Some(&prev), Duration::from_secs(1));
        assert_eq!(r.stall_ms_per_sec, Some(250.0));
        let back = with_rate(prev, Some(&cur), Duration::from_secs(1));
        assert_eq!(back.stall_ms_per_sec, Some(0.0));
        assert_eq!(
            with_rate(cur, None, Duration::from_secs(1)).stall_ms_per_sec,
            None
        );
    }
}
