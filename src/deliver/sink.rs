//! What a sink contributes to delivery (DESIGN "A sink is an encoder"): how
//! a batch of rows becomes one request, and how a success body is read.
//! Everything else (order, retries, dead list, breaker, splay, expiry,
//! counters, logging) is the one loop in `super::poster`.

use crate::config::{SinkConfig, SinkKind};
use crate::queue::Row;

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
