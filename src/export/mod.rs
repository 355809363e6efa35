//! The views of the snapshot model that other systems read. The Prometheus
//! families are one list (`families::host_families`) that both `/metrics`
//! (text) and remote write (protobuf) encode, so names, labels and values
//! cannot drift apart between the two.

pub mod families;
