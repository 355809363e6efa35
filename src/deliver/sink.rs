//! What a sink contributes to delivery (DESIGN "A sink is an encoder"): how
//! a batch of rows becomes one request, and how a success body is read.
//! Everything else (order, retries, dead list, breaker, splay, expiry,
//! counters, logging) is the one loop in `super::poster`.

use crate::config::{SinkConfig, SinkKind};
use crate::queue::Row;
use crate::snapshot::Snapshot;

/// One encoded batch: the body and its content headers. Credentials and
/// the configured extra headers are added by the client for every sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// A row that cannot be encoded at all (its stored model does not decode):
/// no receiver will ever take it, so it goes to the dead list at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// Its place in the batch.
    pub index: usize,
    pub reason: String,
}

/// A 2xx that says part of the data was not taken (OTLP partial success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected_points: u64,
    pub message: String,
}

pub trait Sink: Send {
    /// Encodes `rows` (oldest first, at least one) as one request.
    fn encode(&mut self, rows: &[Row], config: &SinkConfig) -> Result<Request, BadRow>;

    /// Reads the body of a 2xx answer; only OTLP has anything to say.
    fn read_success(&mut self, _body: &[u8]) -> Option<PartialSuccess> {
        None
    }
}

/// The encoder of each kind of sink.
pub fn for_kind(kind: SinkKind) -> Box<dyn Sink> {
    match kind {
        SinkKind::Backend => Box::new(super::json::Json),
        SinkKind::RemoteWrite => Box::new(super::remote_write::RemoteWrite),
        SinkKind::Otlp => Box::new(super::otlp::Otlp),
    }
}

/// The snapshot a protocol sink encodes from the `index`th row of its batch:
/// the stored model, read for export; a model that does not decode makes
/// the row a `BadRow`.
pub fn export_read(index: usize, row: &Row) -> Result<Snapshot, BadRow> {
    Snapshot::from_model_bytes_for_export(&row.model).map_err(|e| BadRow {
        index,
        reason: e.to_string(),
    })
}

/// Real snapshots and rows for the sinks' encoder tests.
#[cfg(test)]
pub mod testing {
    use crate::snapshot::Snapshot;

    /// Two readings of this host, so that rates and shares are there too:
    /// the second once the kernel's CPU counters have moved (a tick).
    pub fn this_host() -> Snapshot {
        use std::time::{Duration, Instant};
        let config = crate::config::Config::default();
        let mut collector = crate::collect::Collector::new(Default::default(), &config.collect);
        let interval = Duration::from_secs(1);
        let cpu_line = || {
            let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            stat.lines().next().unwrap_or_default().to_string()
        };
        let first = cpu_line();
        crate::sampler::take_snapshot(&mut collector, "n", "m", 1, interval);
        let deadline = Instant::now() + Duration::from_secs(2);
        while cpu_line() == first && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        crate::sampler::take_snapshot(&mut collector, "web-1", "abc", 2, interval)
    }
}
