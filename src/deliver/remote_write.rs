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
        /// Sorted by name in byte order (`__name__` first unless a name
        /// starts with a capital letter).
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

/// A `labels` field (a `Label` message) of a `TimeSeries`.
fn put_label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(LEN_1);
    encode_varint(label_len(name, value) as u64, out);
    put_bytes(out, LEN_1, name.as_bytes());
    put_bytes(out, LEN_2, value.as_bytes());
}

/// Field 1 (length-delimited) and field 2 (length-delimited) tags.
const LEN_1: u8 = 0x0a;
const LEN_2: u8 = 0x12;
/// `Sample.value` (field 1, fixed64) and `Sample.timestamp` (field 2, varint).
const VALUE: u8 = 0x09;
const TIMESTAMP: u8 = 0x10;

/// A label every series of the snapshot carries, encoded once.
struct CommonLabel<'a> {
    name: &'a str,
    /// Its `labels` field in `SeriesOf::common_bytes`.
    start: usize,
    end: usize,
}

/// A stretch of a series' labels, in the order they are written.
#[derive(Clone, Copy)]
enum Segment {
    /// `Plan::bytes[start..end]`, the same for every series of the family
    /// (its `__name__` label).
    Fixed { start: usize, end: usize },
    /// The family's label `index` of the sample; `Plan::bytes[start..end]`
    /// holds the part of its `Label` from the name's tag to the value's tag.
    Own {
        index: usize,
        start: usize,
        end: usize,
    },
    /// Common labels `from..to` of the snapshot (adjacent in its bytes).
    Common { from: usize, to: usize },
}

/// How the series of one family are written: the labels sorted and merged
/// once, not for every sample (and not for every snapshot: a plan only
/// depends on the names).
#[derive(Default)]
struct Plan {
    /// The family and label names it was made for, compared by address
    /// (they are the families' static names): another family or another
    /// set of names makes a new plan.
    family: Option<&'static str>,
    names: Vec<&'static str>,
    segments: Vec<Segment>,
    bytes: Vec<u8>,
    /// Bytes of a series that depend on neither the label values nor the
    /// common labels: `bytes`, each own label's tag, the `samples` field.
    fixed_len: usize,
}

impl Plan {
    fn is_for(&self, family: &'static str, labels: &[(&'static str, impl AsRef<str>)]) -> bool {
        self.family.is_some_and(|f| std::ptr::eq(f, family))
            && self.names.len() == labels.len()
            && self
                .names
                .iter()
                .zip(labels)
                .all(|(a, (b, _))| std::ptr::eq(*a, *b))
    }
}

/// The plans of a batch's families, in the order the snapshots give them:
/// made at the first snapshot, reused by the next ones.
#[derive(Default)]
pub struct Plans {
    /// The common label names the plans were made with.
    common: Vec<String>,
    list: Vec<Plan>,
}

/// The series of one snapshot, added one sample at a time and written
/// straight into the protobuf form of a `WriteRequest` (the messages in
/// `proto` describe it; building them first would cost an allocation per
/// label, several times the encoding itself).
pub struct SeriesOf<'a> {
    /// The encoded `WriteRequest` so far: one `timeseries` field per sample.
    out: &'a mut Vec<u8>,
    /// `instance`, `machine_id` and the configured `labels`, on every
    /// series: sorted by name, each already encoded as a `labels` field.
    common: Vec<CommonLabel<'a>>,
    common_bytes: Vec<u8>,
    plans: &'a mut Plans,
    /// The plan of the latest sample's family, in `plans.list`.
    current: Option<usize>,
    /// The `samples` field, the same for every series but for the value
    /// at `VALUE_AT`: tag, length, value tag, value, timestamp tag and
    /// varint; `sample_field_len` bytes of it.
    sample_field: [u8; 23],
    sample_field_len: usize,
}

/// Where the value's 8 bytes are in `SeriesOf::sample_field`.
const VALUE_AT: usize = 3;

impl<'a> SeriesOf<'a> {
    pub fn new(
        out: &'a mut Vec<u8>,
        plans: &'a mut Plans,
        node_id: &'a str,
        machine_id: &'a str,
        extra: &'a BTreeMap<String, String>,
        timestamp_ms: i64,
    ) -> SeriesOf<'a> {
        // `instance` and `machine_id` win over configured labels of those
        // names; a BTreeMap is sorted and unique already.
        let mut pairs: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| !matches!(*k, "instance" | "machine_id" | "__name__"))
            .collect();
        for own in [("instance", node_id), ("machine_id", machine_id)] {
            let at = pairs.partition_point(|(k, _)| *k < own.0);
            pairs.insert(at, own);
        }
        let mut common_bytes = Vec::new();
        let common: Vec<CommonLabel> = pairs
            .iter()
            .map(|&(name, value)| {
                let start = common_bytes.len();
                put_label(&mut common_bytes, name, value);
                CommonLabel {
                    name,
                    start,
                    end: common_bytes.len(),
                }
            })
            .collect();
        if !plans.common.iter().eq(common.iter().map(|c| c.name)) {
            plans.common = common.iter().map(|c| c.name.to_string()).collect();
            plans.list.clear();
        }
        let timestamp = timestamp_ms as u64;
        let mut sample = vec![LEN_2, 0, VALUE];
        sample.extend_from_slice(&[0; 8]);
        sample.push(TIMESTAMP);
        encode_varint(timestamp, &mut sample);
        // A sample is at most 1 + 8 + 1 + 10 bytes: a one-byte length.
        sample[1] = (sample.len() - 2) as u8;
        let mut sample_field = [0; 23];
        sample_field[..sample.len()].copy_from_slice(&sample);
        SeriesOf {
            out,
            common,
            common_bytes,
            plans,
            current: None,
            sample_field,
            sample_field_len: sample.len(),
        }
    }

    /// Makes `plan` the one for `family` with these label names sorted in
    /// byte order: `__name__`, the family's own labels (`__name__` and repeated
    /// names dropped, the first staying) merged by name with the common
    /// ones, a family's label winning over a common one of its name.
    fn make_plan(
        plan: &mut Plan,
        common: &[CommonLabel],
        family: &'static str,
        labels: &[(&'static str, impl AsRef<str>)],
        sample_len: usize,
    ) {
        let mut own: Vec<(usize, &'static str)> = labels
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (i, *k))
            .collect();
        // Stable: for equal names the first comes first and stays.
        own.sort_by(|a, b| a.1.cmp(b.1));
        own.dedup_by(|later, first| later.1 == first.1);
        own.retain(|(_, k)| *k != "__name__");

        plan.family = Some(family);
        plan.names.clear();
        plan.names.extend(labels.iter().map(|(k, _)| *k));
        plan.segments.clear();
        plan.bytes.clear();
        // `__name__` takes its place in byte order: first unless a label
        // name starts with a capital letter (remote write 1.0 wants the
        // names sorted; receivers may refuse or re-sort unsorted ones).
        let mut named = false;
        let name_label = |plan: &mut Plan| {
            let start = plan.bytes.len();
            put_label(&mut plan.bytes, "__name__", family);
            let end = plan.bytes.len();
            plan.segments.push(Segment::Fixed { start, end });
        };
        let (mut i, mut j) = (0, 0);
        while i < own.len() || j < common.len() {
            let next = common.get(j);
            let lowest = match (own.get(i), next) {
                (Some(o), Some(c)) => o.1.min(c.name),
                (Some(o), None) => o.1,
                (None, Some(c)) => c.name,
                (None, None) => unreachable!(),
            };
            if !named && lowest > "__name__" {
                name_label(plan);
                named = true;
            }
            match own.get(i) {
                Some(&(index, k)) if next.is_none_or(|c| k <= c.name) => {
                    let start = plan.bytes.len();
                    put_bytes(&mut plan.bytes, LEN_1, k.as_bytes());
                    plan.bytes.push(LEN_2);
                    let end = plan.bytes.len();
                    plan.segments.push(Segment::Own { index, start, end });
                    i += 1;
                    j += usize::from(next.is_some_and(|c| c.name == k));
                }
                _ => {
                    match plan.segments.last_mut() {
                        Some(Segment::Common { to, .. }) if *to == j => *to = j + 1,
                        _ => plan.segments.push(Segment::Common { from: j, to: j + 1 }),
                    }
                    j += 1;
                }
            }
        }
        if !named {
            name_label(plan);
        }
        let own_tags = plan
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Own { .. }))
            .count();
        plan.fixed_len = plan.bytes.len() + own_tags + field_len(sample_len);
    }

    /// The plan for this family and these label names: the current one,
    /// the next one in the list, or a new one there.
    fn plan_for(
        &mut self,
        family: &'static str,
        labels: &[(&'static str, impl AsRef<str>)],
    ) -> usize {
        let list = &mut self.plans.list;
        if let Some(at) = self.current.filter(|&at| list[at].is_for(family, labels)) {
            return at;
        }
        let at = self.current.map_or(0, |at| at + 1);
        if at == list.len() {
            list.push(Plan::default());
        }
        if !list[at].is_for(family, labels) {
            let sample_len = self.sample_field[1] as usize;
            Self::make_plan(&mut list[at], &self.common, family, labels, sample_len);
        }
        self.current = Some(at);
        at
    }

    /// One sample of family `name`. A label the family sets itself wins
    /// over `instance`/`machine_id`, and those over the configured labels.
    pub fn push<L: AsRef<str>>(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, L)],
        value: f64,
    ) {
        let at = self.plan_for(name, labels);
        let plan = &self.plans.list[at];
        let common = &self.common;
        let runs = |from: usize, to: usize| common[from].start..common[to - 1].end;
        // The label's message: the name part, the value's length, the value.
        let inner = |start: usize, end: usize, value: &str| {
            end - start + encoded_len_varint(value.len() as u64) + value.len()
        };
        let mut series_len = plan.fixed_len;
        for segment in &plan.segments {
            match *segment {
                Segment::Fixed { .. } => {}
                Segment::Own { index, start, end } => {
                    // The name part and the tag are in `fixed_len` already.
                    let n = inner(start, end, labels[index].1.as_ref());
                    series_len += encoded_len_varint(n as u64) + n - (end - start);
                }
                Segment::Common { from, to } => series_len += runs(from, to).len(),
            }
        }
        let out = &mut *self.out;
        out.reserve(field_len(series_len));
        out.push(LEN_1);
        encode_varint(series_len as u64, out);
        for segment in &plan.segments {
            match *segment {
                Segment::Fixed { start, end } => out.extend_from_slice(&plan.bytes[start..end]),
                Segment::Own { index, start, end } => {
                    let value = labels[index].1.as_ref();
                    out.push(LEN_1);
                    encode_varint(inner(start, end, value) as u64, out);
                    out.extend_from_slice(&plan.bytes[start..end]);
                    encode_varint(value.len() as u64, out);
                    out.extend_from_slice(value.as_bytes());
                }
                Segment::Common { from, to } => {
                    out.extend_from_slice(&self.common_bytes[runs(from, to)])
                }
            }
        }
        let mut sample = self.sample_field;
        sample[VALUE_AT..VALUE_AT + 8].copy_from_slice(&value.to_le_bytes());
        out.extend_from_slice(&sample[..self.sample_field_len]);
    }
}

/// Snappy's block format is a varint of the uncompressed length followed
/// by elements: literals, and copies of bytes earlier in the output. A
/// piece compressed on its own only copies from itself, so the elements of
/// several pieces, after one varint of their total length, are one valid
/// block. The batch is packed a piece at a time that way: it is never held
/// uncompressed in one large buffer, and each piece is compressed while it
/// is still in the cache.
struct Packer {
    encoder: snap::raw::Encoder,
    /// Where a piece is compressed (with its own varint) before its
    /// elements are appended to `elements`.
    scratch: Vec<u8>,
    elements: Vec<u8>,
    total: usize,
}

impl Packer {
    fn new() -> Packer {
        Packer {
            encoder: snap::raw::Encoder::new(),
            scratch: Vec::new(),
            elements: Vec::new(),
            total: 0,
        }
    }

    fn add(&mut self, piece: &[u8]) {
        let most = snap::raw::max_compress_len(piece.len());
        if self.scratch.len() < most {
            self.scratch.resize(most, 0);
        }
        // Compressing into a buffer of max_compress_len cannot fail for
        // inputs below snappy's 4 GiB limit.
        let n = self
            .encoder
            .compress(piece, &mut self.scratch)
            .expect("snappy block compression");
        let preamble = encoded_len_varint(piece.len() as u64);
        self.elements.extend_from_slice(&self.scratch[preamble..n]);
        self.total += piece.len();
    }

    fn finish(self) -> Vec<u8> {
        let mut body = Vec::with_capacity(10 + self.elements.len());
        encode_varint(self.total as u64, &mut body);
        body.extend_from_slice(&self.elements);
        body
    }
}

/// Snappy compresses in blocks of 64 KiB: a piece of about that size
/// loses nothing against compressing the whole batch at once.
const PIECE: usize = 64 * 1024;

/// The request body: the protobuf bytes in snappy's block format (not its
/// framed one).
pub fn body(raw: &[u8]) -> Vec<u8> {
    let mut packer = Packer::new();
    for piece in raw.chunks(PIECE) {
        packer.add(piece);
    }
    packer.finish()
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
    plans: &mut Plans,
    snapshot: &Snapshot,
    extra: &BTreeMap<String, String>,
) {
    let ms = snapshot
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut series = SeriesOf::new(
        request,
        plans,
        &snapshot.node_id,
        &snapshot.machine_id,
        extra,
        ms,
    );
    for family in host_families(snapshot) {
        for sample in &family.samples {
            series.push(family.name, &sample.labels, sample.value);
        }
    }
}

pub struct RemoteWrite;

impl Sink for RemoteWrite {
    fn encode(&mut self, rows: &[Row], config: &SinkConfig) -> Result<Request, BadRow> {
        let mut raw = Vec::with_capacity(PIECE + PIECE / 2);
        let mut packer = Packer::new();
        let mut plans = Plans::default();
        for (index, row) in rows.iter().enumerate() {
            let snapshot = super::sink::export_read(index, row)?;
            let start = raw.len();
            append_snapshot(&mut raw, &mut plans, &snapshot, &config.labels);
            // Pack before the next snapshot (about as large as this one)
            // would take the piece past a snappy block.
            if raw.len() + (raw.len() - start) > PIECE {
                packer.add(&raw);
                raw.clear();
            }
        }
        packer.add(&raw);
        Ok(Request {
            body: packer.finish(),
            headers: headers(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::sink::testing::this_host;
    use crate::queue::Row;
    use prost::Message;
    use proto::{Sample, TimeSeries, WriteRequest};

    fn names(series: &TimeSeries) -> Vec<&str> {
        series.labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn labels_are_sorted_in_byte_order_and_the_family_wins() {
        let mut raw = Vec::new();
        let extra: BTreeMap<String, String> = [
            ("env".to_string(), "prod".to_string()),
            ("Zone".to_string(), "b".to_string()),
            ("mode".to_string(), "from-config".to_string()),
            ("instance".to_string(), "from-config".to_string()),
        ]
        .into();
        let mut plans = Plans::default();
        let mut s = SeriesOf::new(
            &mut raw,
            &mut plans,
            "web-1",
            "abc",
            &extra,
            1_700_000_000_123,
        );
        s.push(
            "host_cpu_seconds_total",
            &[("mode", "idle".to_string())],
            12.5,
        );
        s.push::<&str>("host_load1", &[], 0.25);
        let request = WriteRequest::decode(&raw[..]).unwrap();
        let series = &request.timeseries;
        assert_eq!(
            names(&series[0]),
            ["Zone", "__name__", "env", "instance", "machine_id", "mode"]
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

    /// The same request built the plain way: a message struct per label,
    /// labels sorted and de-duplicated with the family's first, then
    /// `instance`/`machine_id`, then the configured ones, `__name__` sorted
    /// in among them.
    fn struct_built(snapshots: &[Snapshot], extra: &BTreeMap<String, String>) -> WriteRequest {
        let mut timeseries = Vec::new();
        for s in snapshots {
            let ms = s.timestamp.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
            for family in host_families(s) {
                for sample in &family.samples {
                    let mut all: Vec<(&str, &str)> = sample
                        .labels
                        .iter()
                        .map(|(k, v)| (*k, v.as_ref()))
                        .collect();
                    all.push(("instance", &s.node_id));
                    all.push(("machine_id", &s.machine_id));
                    all.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    all.sort_by(|a, b| a.0.cmp(b.0));
                    all.dedup_by(|later, first| later.0 == first.0);
                    all.retain(|(k, _)| *k != "__name__");
                    let at = all.partition_point(|(k, _)| *k < "__name__");
                    all.insert(at, ("__name__", family.name));
                    timeseries.push(TimeSeries {
                        labels: all
                            .iter()
                            .map(|(k, v)| proto::Label {
                                name: k.to_string(),
                                value: v.to_string(),
                            })
                            .collect(),
                        samples: vec![Sample {
                            value: sample.value,
                            timestamp: ms,
                        }],
                    });
                }
            }
        }
        WriteRequest { timeseries }
    }

    #[test]
    fn a_batch_of_real_snapshots_encodes_as_the_struct_built_request() {
        let base = this_host();
        assert!(base.metrics.cpu.is_some() && base.metrics.memory.is_some());
        let snapshots: Vec<Snapshot> = (0..12u64)
            .map(|i| {
                let mut s = base.clone();
                s.timestamp =
                    UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000 + i * 60_123);
                s.node_id = format!("web-{}", i % 3);
                // Groups missing in some: the families' order shifts.
                if i % 4 == 1 {
                    s.metrics.cpu = None;
                }
                if i % 5 == 2 {
                    s.metrics.network = None;
                    s.metrics.system.os = None;
                }
                s
            })
            .collect();
        let rows: Vec<Row> = snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| Row::of_snapshot(i as i64, s))
            .collect();
        // Configured labels sorting before, between and after the own
        // ones, and some the family or instance/machine_id override.
        let mut config = crate::config::Config::default()
            .sink(crate::config::SinkKind::RemoteWrite)
            .clone();
        config.labels = [
            ("Zone", "b"),
            ("device", "from-config"),
            ("env", "prod"),
            ("instance", "from-config"),
            ("mode", "from-config"),
            ("zz", "last"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let request = RemoteWrite.encode(&rows, &config).unwrap();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&request.body)
            .unwrap();
        assert!(raw.len() > 2 * PIECE, "packed from several pieces");
        // From the snapshots as the queue gives them back (a float may
        // come back from the model's JSON an ulp off).
        let stored: Vec<Snapshot> = rows
            .iter()
            .map(|r| Snapshot::from_model_bytes(&r.model).unwrap())
            .collect();
        let expected = struct_built(&stored, &config.labels);
        // Equal as messages (not byte for byte: prost leaves out a value of
        // 0.0, which the direct writer spells out, as proto3 allows).
        let got = WriteRequest::decode(&raw[..]).unwrap();
        assert_eq!(got.timeseries.len(), expected.timeseries.len());
        for (i, (got, expected)) in got.timeseries.iter().zip(&expected.timeseries).enumerate() {
            assert_eq!(got, expected, "series {i}");
        }
    }

    #[test]
    fn pieces_packed_apart_decode_as_one_block() {
        // Repetitive within and across pieces, so that copies are used.
        let raw: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("series {} of {};", i % 977, i / 5000).into_bytes())
            .collect();
        let packed = body(&raw);
        assert!(packed.len() < raw.len() / 3, "compressed: {}", packed.len());
        let back = snap::raw::Decoder::new().decompress_vec(&packed).unwrap();
        assert!(back == raw, "round trip");
        assert_eq!(body(&[]), [0], "an empty request is the varint 0");
    }

    #[test]
    fn the_body_is_snappy_block_compressed_protobuf() {
        let mut raw = Vec::new();
        let extra = BTreeMap::new();
        let mut plans = Plans::default();
        let mut s = SeriesOf::new(&mut raw, &mut plans, "n", "m", &extra, 5);
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
