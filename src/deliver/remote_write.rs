//! `[remote_write]`: Prometheus remote write 1.0 (SPEC §5.5). A batch of
//! rows becomes one `WriteRequest` holding the `host_*` families of
//! `/metrics` for each snapshot, every sample stamped with its snapshot's
//! time (a re-sent row writes the same samples again: a duplicate to the
//! receiver), protobuf-encoded and snappy block-compressed.

use super::sink::{BadRow, Request, Sink};
use crate::config::SinkConfig;
use crate::export::families::host_families;
use crate::queue::Row;
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

/// The messages of remote write 1.0, from Prometheus' `prompb/remote.proto`
/// and `prompb/types.proto` (only the fields 1.0 senders fill).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name, `__name__` first.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

use prost::encoding::{encode_varint, encoded_len_varint};

/// The series of one snapshot, added one sample at a time and written
/// straight into the protobuf form of a `WriteRequest` (the messages in
/// `proto` describe it; building them first would cost an allocation per
/// label, several times the encoding itself).
pub struct SeriesOf<'a> {
    /// The encoded `WriteRequest` so far: one `timeseries` field per sample.
    out: &'a mut Vec<u8>,
    /// `instance`, `machine_id` and the configured `labels`, on every series.
    common: Vec<(&'a str, &'a str)>,
    timestamp_ms: i64,
}

/// Bytes of a length-delimited field of `len` bytes, with its one-byte tag.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn label_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Field 1 (length-delimited) and field 2 (length-delimited) tags.
const LEN_1: u8 = 0x0a;
const LEN_2: u8 = 0x12;

impl<'a> SeriesOf<'a> {
    pub fn new(
        out: &'a mut Vec<u8>,
        node_id: &'a str,
        machine_id: &'a str,
        extra: &'a BTreeMap<String, String>,
        timestamp_ms: i64,
    ) -> SeriesOf<'a> {
        let mut common = vec![("instance", node_id), ("machine_id", machine_id)];
        common.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        SeriesOf {
            out,
            common,
            timestamp_ms,
        }
    }

    /// One sample of family `name`. A label the family sets itself wins
    /// over `instance`/`machine_id`, and those over the configured labels.
    pub fn push(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + self.common.len() + 1);
        all.extend(labels.iter().map(|(k, v)| (*k, v.as_str())));
        all.extend(self.common.iter().copied());
        // Stable: for equal names the first (strongest) comes first and stays.
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.dedup_by(|later, first| later.0 == first.0);
        all.retain(|(k, _)| *k != "__name__");
        all.insert(0, ("__name__", name));

        let timestamp = self.timestamp_ms as u64;
        // Sample { value = 1 (fixed64), timestamp = 2 (varint) }
        let sample_len = 1 + 8 + 1 + encoded_len_varint(timestamp);
        let series_len = all
            .iter()
            .map(|(k, v)| field_len(label_len(k, v)))
            .sum::<usize>()
            + field_len(sample_len);
        let out = &mut *self.out;
        out.reserve(field_len(series_len));
        out.push(LEN_1);
        encode_varint(series_len as u64, out);
        for (k, v) in &all {
            out.push(LEN_1);
            encode_varint(label_len(k, v) as u64, out);
            put_bytes(out, LEN_1, k.as_bytes());
            put_bytes(out, LEN_2, v.as_bytes());
        }
        out.push(LEN_2);
        encode_varint(sample_len as u64, out);
        out.push(0x09);
        out.extend_from_slice(&value.to_le_bytes());
        out.push(0x10);
        encode_varint(timestamp, out);
    }
}

/// The request body: the protobuf bytes in snappy's block format (not its
/// framed one).
pub fn body(raw: &[u8]) -> Vec<u8> {
    // Compressing into memory cannot fail for inputs below snappy's 4 GiB limit.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("snappy block compression")
}

/// The headers of SPEC §5.5 (User-Agent comes from the agent).
pub fn headers() -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/x-protobuf".to_string()),
        ("Content-Encoding", "snappy".to_string()),
        ("X-Prometheus-Remote-Write-Version", "0.1.0".to_string()),
    ]
}

/// Appends the `host_*` series of one snapshot (exactly the families of
/// `/metrics`), stamped with the snapshot's time.
pub fn append_snapshot(
    request: &mut Vec<u8>,
    snapshot: &Snapshot,
    extra: &BTreeMap<String, String>,
) {
    let ms = snapshot
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut series = SeriesOf::new(request, &snapshot.node_id, &snapshot.machine_id, extra, ms);
    for family in host_families(snapshot) {
        for sample in &family.samples {
            series.push(family.name, &sample.labels, sample.value);
        }
    }
}

pub struct RemoteWrite;

impl Sink for RemoteWrite {
    fn encode(&mut self, rows: &[Row], config: &SinkConfig) -> Result<Request, BadRow> {
        let mut request = Vec::with_capacity(rows.len() * 24 * 1024);
        for (index, row) in rows.iter().enumerate() {
            let snapshot = Snapshot::from_model_bytes(&row.model).map_err(|e| BadRow {
                index,
                reason: e.to_string(),
            })?;
            append_snapshot(&mut request, &snapshot, &config.labels);
        }
        Ok(Request {
            body: body(&request),
            headers: headers(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use proto::{Sample, TimeSeries, WriteRequest};

    fn names(series: &TimeSeries) -> Vec<&str> {
        series.labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn labels_are_sorted_with_the_name_first_and_the_family_wins() {
        let mut raw = Vec::new();
        let extra: BTreeMap<String, String> = [
            ("env".to_string(), "prod".to_string()),
            ("Zone".to_string(), "b".to_string()),
            ("mode".to_string(), "from-config".to_string()),
            ("instance".to_string(), "from-config".to_string()),
        ]
        .into();
        let mut s = SeriesOf::new(&mut raw, "web-1", "abc", &extra, 1_700_000_000_123);
        s.push(
            "host_cpu_seconds_total",
            &[("mode", "idle".to_string())],
            12.5,
        );
        s.push("host_load1", &[], 0.25);
        let request = WriteRequest::decode(&raw[..]).unwrap();
        let series = &request.timeseries;
        assert_eq!(
            names(&series[0]),
            ["__name__", "Zone", "env", "instance", "machine_id", "mode"]
        );
        let value = |i: usize, name: &str| {
            series[i]
                .labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.clone())
        };
        assert_eq!(value(0, "__name__").unwrap(), "host_cpu_seconds_total");
        assert_eq!(value(0, "mode").unwrap(), "idle");
        assert_eq!(value(0, "instance").unwrap(), "web-1");
        assert_eq!(value(0, "machine_id").unwrap(), "abc");
        assert_eq!(value(1, "mode").unwrap(), "from-config");
        assert_eq!(
            series[0].samples,
            [Sample {
                value: 12.5,
                timestamp: 1_700_000_000_123
            }]
        );
    }

    #[test]
    fn the_body_is_snappy_block_compressed_protobuf() {
        let mut raw = Vec::new();
        let extra = BTreeMap::new();
        let mut s = SeriesOf::new(&mut raw, "n", "m", &extra, 5);
        for i in 0..100 {
            s.push("host_x", &[("i", i.to_string())], i as f64);
        }
        let body = body(&raw);
        let back = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(back.len() > body.len(), "compressed");
        let request = WriteRequest::decode(&back[..]).unwrap();
        assert_eq!(request.timeseries.len(), 100);
        let expected = TimeSeries {
            labels: ["__name__", "i", "instance", "machine_id"]
                .iter()
                .zip(["host_x", "42", "n", "m"])
                .map(|(k, v)| proto::Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: vec![Sample {
                value: 42.0,
                timestamp: 5,
            }],
        };
        assert_eq!(request.timeseries[42], expected);
    }
}
