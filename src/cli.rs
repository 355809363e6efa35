//! Command-line definitions (SPEC §1).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "metricsd",
    version,
    about = "Linux host-metrics daemon: samples, streams over WebSocket, delivers through a durable queue"
)]
pub struct Cli {
    /// Configuration file (default: $METRICSD_CONFIG, then /etc/metricsd/metricsd.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in the foreground until SIGTERM/SIGINT (the default)
    Run(RunArgs),
    /// Take one sample and print it as pretty JSON (no network, no queue)
    Once {
        /// Print the flat (backend) form instead of the stream form
        #[arg(long)]
        flat: bool,
    },
    /// Validate the configuration and print the effective configuration
    CheckConfig,
    /// Inspect or change the delivery queue (safe while the daemon runs)
    #[command(subcommand)]
    Queue(QueueCommand),
}

#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Detach (double fork, setsid) for hosts without systemd
    #[arg(long)]
    pub daemon: bool,
    /// With --daemon; default <state_dir>/metricsd.pid
    #[arg(long, value_name = "F", requires = "daemon")]
    pub pidfile: Option<PathBuf>,
    /// With --daemon; default <state_dir>/metricsd.log
    #[arg(long, value_name = "F", requires = "daemon")]
    pub log_file: Option<PathBuf>,
}

/// The sinks a queue command can name (SPEC §1, §5.2).
const SINK_NAMES: [&str; 3] = ["backend", "remote_write", "otlp"];

#[derive(Debug, Subcommand, Clone)]
pub enum QueueCommand {
    /// Counts and sizes as one JSON object
    Stats,
    /// Print the oldest rows, one JSON object a line
    Peek {
        /// How many rows
        #[arg(short = 'n', default_value_t = 10)]
        n: u64,
        /// Show the dead list instead of pending rows
        #[arg(long)]
        dead: bool,
        /// The sink whose rows to show (backend, remote_write, otlp); without
        /// it: backend, or the local history when no sink is configured
        #[arg(long, value_name = "NAME", value_parser = SINK_NAMES)]
        sink: Option<String>,
    },
    /// Move dead rows back to pending, in their original order
    RetryDead {
        /// The sink whose dead rows to move
        #[arg(long, value_name = "NAME", default_value = "backend", value_parser = SINK_NAMES)]
        sink: String,
    },
    /// Delete pending (or, with --dead, dead) rows
    Purge {
        #[arg(long)]
        dead: bool,
        /// The sink whose rows to delete
        #[arg(long, value_name = "NAME", default_value = "backend", value_parser = SINK_NAMES)]
        sink: String,
    },
}
