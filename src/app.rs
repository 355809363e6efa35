//! Wiring and life cycle (SPEC §6): start order, readiness, reload, stop.

use crate::cli::{QueueCommand, RunArgs};
use crate::collect::{Collector, Roots};
use crate::config::{self, Config, SharedConfig};
use crate::identity;
use crate::lock::InstanceLock;
use crate::logging;
use crate::notify;
use crate::poster;
use crate::queue::Queue;
use crate::queue_cmd;
use crate::residency;
use crate::sampler::{self, SamplerContext};
use crate::shutdown::{Shutdown, Wake};
use crate::signals::{self, Request};
use crate::statedir;
use crate::status::{BackendState, Status};
use crate::stream::{self, Hub};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_CANTCREAT: i32 = 73;
pub const EXIT_CONFIG: i32 = 78;

const ETC_MACHINE_ID: &str = "/etc/machine-id";
/// How long an in-flight POST may hold up shutdown (SPEC §6).
const POSTER_STOP_GRACE: Duration = Duration::from_secs(5);
const STREAM_STOP_GRACE: Duration = Duration::from_secs(2);
/// When start-up code pages are handed back: after the first sample.
const RELEASE_STARTUP_PAGES_AFTER: Duration = Duration::from_secs(2);
/// Time between the baseline and the sample in `once`, so rates mean something.
const ONCE_BASELINE: Duration = Duration::from_millis(500);

/// A failure that ends the process with `code`, `message` printed after "metricsd: ".
#[derive(Debug)]
pub struct AppError {
    pub code: i32,
    pub message: String,
}

impl AppError {
    fn new(code: i32, message: impl Into<String>) -> AppError {
        AppError {
            code,
            message: message.into(),
        }
    }
}

fn load_config(cli_config: Option<&Path>) -> Result<Config, AppError> {
    config::load(cli_config).map_err(|e| AppError::new(EXIT_CONFIG, e.to_string()))
}

/// `metricsd check-config`
pub fn check_config(cli_config: Option<&Path>) -> Result<(), AppError> {
    let config = load_config(cli_config)?;
    print!("{}", config.to_toml_redacted());
    Ok(())
}

/// `metricsd once [--flat]`
pub fn once(cli_config: Option<&Path>, flat: bool) -> Result<(), AppError> {
    let config = load_config(cli_config)?;
    logging::init(config.log_level);
    let mut collector = Collector::new(Roots::default(), &config.collect);
    std::thread::sleep(ONCE_BASELINE);
    let machine_id = identity::machine_id(Path::new(ETC_MACHINE_ID), &config.state_dir, false);
    let snapshot = sampler::take_snapshot(
        &mut collector,
        &config.node_id,
        &machine_id,
        1,
        config.interval,
    );
    let value = if flat {
        snapshot.flat_json()
    } else {
        snapshot.stream_json()
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(())
}

/// `metricsd queue ...`: returns the exit code.
pub fn queue(cli_config: Option<&Path>, command: &QueueCommand) -> Result<i32, AppError> {
    let config = load_config(cli_config)?;
    let sinks: &[&str] = if config.backend.enabled() {
        &[crate::queue::DEFAULT_SINK]
    } else {
        &[]
    };
    Ok(queue_cmd::run(command, &config.state_dir, sinks))
}

fn join_within<T>(handle: JoinHandle<T>, grace: Duration) -> Option<T> {
    let deadline = Instant::now() + grace;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.join().ok()
}

fn backend_host(url: &str) -> String {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Files `run --daemon` uses.
struct DaemonFiles {
    pidfile: PathBuf,
    log_file: PathBuf,
}

/// Detaches from the terminal. Must run before any thread or runtime exists.
fn daemonize(files: &DaemonFiles) -> Result<(), AppError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log_file)
        .map_err(|e| {
            AppError::new(
                EXIT_CANTCREAT,
                format!("log file {}: {e}", files.log_file.display()),
            )
        })?;
    daemonize::Daemonize::new()
        .pid_file(&files.pidfile)
        .chown_pid_file(false)
        .working_directory("/")
        .umask(0o027)
        .stdout(daemonize::Stdio::devnull())
        .stderr(log)
        .start()
        .map_err(|e| AppError::new(EXIT_FAILURE, format!("cannot detach: {e}")))
}

/// `metricsd run`: runs until SIGTERM/SIGINT.
pub fn run(cli_config: Option<&Path>, args: &RunArgs) -> Result<(), AppError> {
    let config = load_config(cli_config)?;
    logging::init(config.log_level);
    // The baseline for the first sample's rates is taken as early as possible,
    // but after detaching: a collector may run helper threads.
    let early_collector = (!args.daemon).then(|| Collector::new(Roots::default(), &config.collect));
    statedir::ensure(&config.state_dir)
        .map_err(|e| AppError::new(EXIT_CANTCREAT, e.to_string()))?;

    let daemon_files = args.daemon.then(|| DaemonFiles {
        pidfile: args
            .pidfile
            .clone()
            .unwrap_or_else(|| config.state_dir.join("metricsd.pid")),
        log_file: args
            .log_file
            .clone()
            .unwrap_or_else(|| config.state_dir.join("metricsd.log")),
    });
    if let Some(files) = &daemon_files {
        // Refuse a second instance while the terminal can still see why.
        drop(
            InstanceLock::acquire(&config.state_dir)
                .map_err(|e| AppError::new(EXIT_FAILURE, e.to_string()))?,
        );
        daemonize(files)?;
    }
    let collector =
        early_collector.unwrap_or_else(|| Collector::new(Roots::default(), &config.collect));
    let _lock = InstanceLock::acquire(&config.state_dir)
        .map_err(|e| AppError::new(EXIT_FAILURE, e.to_string()))?;

    let db_path = config.state_dir.join("queue.db");
    let queue =
        Queue::open(&db_path).map_err(|e| AppError::new(EXIT_CANTCREAT, format!("queue {e}")))?;
    let pending = queue
        .counts(crate::queue::DEFAULT_SINK)
        .map(|c| c.pending)
        .unwrap_or(0);

    let listener =
        if config.stream.enabled {
            let addr = config.stream.listen;
            Some(stream::bind(addr).map_err(|e| {
                AppError::new(EXIT_FAILURE, format!("cannot listen on {addr}: {e}"))
            })?)
        } else {
            None
        };

    let machine_id = identity::machine_id(Path::new(ETC_MACHINE_ID), &config.state_dir, true);
    let status = Arc::new(Status::default());
    status.set_backend_state(if config.backend.enabled() {
        BackendState::Ok
    } else {
        BackendState::Disabled
    });
    let shared = SharedConfig::new(config.clone());
    let shutdown = Shutdown::new();
    let hub = Hub::new();
    let poster_wake = Wake::new();
    let reload_wake = Wake::new();
    shutdown.register(&poster_wake);

    let (requests_tx, requests) = mpsc::channel();
    signals::spawn(shutdown.clone(), requests_tx)
        .map_err(|e| AppError::new(EXIT_FAILURE, format!("cannot install signal handlers: {e}")))?;
    let spawn_err = |what: &str, e: std::io::Error| {
        AppError::new(EXIT_FAILURE, format!("cannot start the {what} thread: {e}"))
    };

    let stream_thread = match listener {
        Some(l) => Some(
            stream::spawn(
                l,
                hub.clone(),
                shared.clone(),
                status.clone(),
                shutdown.clone(),
            )
            .map_err(|e| spawn_err("stream", e))?,
        ),
        None => None,
    };
    let poster_thread = poster::spawn(
        db_path.clone(),
        shared.clone(),
        status.clone(),
        shutdown.clone(),
        poster_wake.clone(),
    )
    .map_err(|e| spawn_err("poster", e))?;
    let sampler_ctx = SamplerContext {
        config: shared.clone(),
        collector,
        machine_id,
        hub,
        queue,
        status: status.clone(),
        shutdown: shutdown.clone(),
        poster_wake: poster_wake.clone(),
        reload_wake: reload_wake.clone(),
    };
    let sampler_thread = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sampler::run(sampler_ctx))
        .map_err(|e| spawn_err("sampler", e))?;

    let listen = if config.stream.enabled {
        config.stream.listen.to_string()
    } else {
        "disabled".to_string()
    };
    let backend = if config.backend.enabled() {
        backend_host(&config.backend.url)
    } else {
        "disabled".to_string()
    };
    log::info!(
        "metricsd {} starting: interval {}, listen {listen}, queue {} ({pending} pending), backend {backend}",
        env!("CARGO_PKG_VERSION"),
        config::format_duration(config.interval),
        db_path.display(),
    );
    notify::ready(&format!(
        "sampling every {}",
        config::format_duration(config.interval)
    ));

    let reload = |shared: &SharedConfig| {
        notify::reloading();
        if let Some(files) = &daemon_files {
            if let Err(e) = logging::redirect_stderr(&files.log_file) {
                log::error!("cannot reopen log file {}: {e}", files.log_file.display());
            }
        }
        match config::load(cli_config) {
            Err(e) => log::error!("reload rejected, keeping the running configuration: {e}"),
            Ok(mut new) => {
                let old = shared.get();
                for key in old.restart_only_changes(&new) {
                    log::warn!("reload: {key} changed; it takes effect after a restart");
                }
                new.stream.listen = old.stream.listen;
                new.stream.enabled = old.stream.enabled;
                new.stream.max_clients = old.stream.max_clients;
                new.state_dir = old.state_dir.clone();
                logging::set_level(new.log_level);
                log::info!(
                    "configuration reloaded: interval {}",
                    config::format_duration(new.interval)
                );
                shared.set(new);
                reload_wake.notify();
                poster_wake.notify();
            }
        }
        notify::ready(&format!(
            "sampling every {}",
            config::format_duration(shared.get().interval)
        ));
    };
    // Start-up code is not needed again: once the first sample is out, give
    // its pages back (see residency.rs).
    let mut startup_pages_pending = true;
    loop {
        let request = if startup_pages_pending {
            match requests.recv_timeout(RELEASE_STARTUP_PAGES_AFTER) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    residency::release_startup_pages();
                    startup_pages_pending = false;
                    continue;
                }
                other => other.ok(),
            }
        } else {
            requests.recv().ok()
        };
        match request {
            Some(Request::Reload) => reload(&shared),
            Some(Request::Shutdown) | None => break,
        }
    }

    notify::stopping();
    shutdown.trigger();
    let queue = sampler_thread.join().ok();
    if let Some(t) = stream_thread {
        if join_within(t, STREAM_STOP_GRACE).is_none() {
            log::warn!("stream server did not stop in time");
        }
    }
    if join_within(poster_thread, POSTER_STOP_GRACE).is_none() {
        log::warn!("abandoning an in-flight POST; its rows stay queued");
    }
    if let Some(queue) = queue {
        if let Err(e) = queue.checkpoint() {
            log::warn!("WAL checkpoint failed: {e}");
        }
    }
    if let Some(files) = &daemon_files {
        let _ = std::fs::remove_file(&files.pidfile);
    }
    log::info!("stopped");
    Ok(())
}
