//! metricsd: a Linux host-metrics daemon.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that
//! integration tests and benchmarks use exactly the code the daemon runs.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod collect;
pub mod config;
pub mod deliver;
pub mod error;
pub mod export;
pub mod fault;
pub mod hub;
pub mod identity;
pub mod liveness;
pub mod logging;
pub mod os;
pub mod procfs;
pub mod queue;
pub mod queue_cmd;
pub mod sampler;
pub mod shutdown;
pub mod snapshot;
pub mod status;
pub mod stream;
pub mod throttle;

/// `metricsd/<version>`, used as the HTTP User-Agent and in start-up logs.
pub const USER_AGENT: &str = concat!("metricsd/", env!("CARGO_PKG_VERSION"));
