//! Per systemd unit usage from cgroup v2 (SPEC §3.3). Placeholder with the
//! model's types until the cgroup reader lands: it reports no units.

use super::{Collect, CollectError, Roots};
use crate::config::CollectConfig;
use crate::snapshot::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// One unit's figures; rates cover the time since the previous sample.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UnitMetrics {
    pub cpu_percent: Option<f64>,
    pub memory_mb: Option<f64>,
    pub tasks: Option<u64>,
    pub io_read_mb_per_sec: Option<f64>,
    pub io_write_mb_per_sec: Option<f64>,
    pub cpu_pressure_some_avg10: Option<f64>,
    pub memory_pressure_some_avg10: Option<f64>,
    pub io_pressure_some_avg10: Option<f64>,
    /// Raw cumulative counters, for /metrics and the protocol sinks.
    pub cpu_usage_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

pub struct UnitsCollector;

impl UnitsCollector {
    pub fn new(_roots: &Roots, _config: &CollectConfig) -> UnitsCollector {
        UnitsCollector
    }
}

impl Collect for UnitsCollector {
    fn name(&self) -> &'static str {
        "units"
    }

    fn collect(&mut self, _now: Instant, metrics: &mut Metrics) -> Result<(), CollectError> {
        metrics.units = Some(BTreeMap::new());
        Ok(())
    }
}
