//! The integration tests: one binary (one link), one module per capability,
//! shared helpers in `common/`.

mod common;

mod cli;
mod collect_parsers;
mod collect_truth;
mod config;
mod crash;
mod delivery_e2e;
mod history_api;
mod lifecycle;
mod metrics;
mod once_truth;
mod otlp;
mod packaging;
mod page;
mod poster;
mod queue;
mod queue_cli;
mod remote_write;
mod sinks;
mod snapshot_forms;
mod stream;
mod systemd_boot;
mod units;
