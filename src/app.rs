//! Wiring and life cycle (SPEC §6): start order, readiness, reload, stop.

use crate::cli::{QueueCommand, RunArgs};
use crate::collect::{Collector, Roots};
use crate::config::{self, Config, SharedConfig};
use crate::deliver::{PosterContext, Posters};
use crate::error::Error;
use crate::hub::Hub;
use crate::identity;
use crate::liveness;
use crate::logging;
use crate::os::detach::{self, Files};
use crate::os::lock::{InstanceLock, LockError};
use crate::os::notify;
use crate::os::signals::{self, Request};
use crate::os::statedir;
use crate::queue::Queue;
use crate::queue_cmd;
use crate::sampler::{self, SamplerContext};
use crate::shutdown::{Shutdown, Wake};
use crate::status::Status;
use crate::stream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const ETC_MACHINE_ID: &str = "/etc/machine-id";
/// The whole stop, from the signal to the exit (SPEC §6).
const STOP_BUDGET: Duration = Duration::from_secs(6);
/// Of the budget, what is kept for the WAL checkpoint and the exit after
/// the threads have been joined (or given up on).
const CHECKPOINT_RESERVE: Duration = Duration::from_millis(1200);
const EXIT_RESERVE: Duration = Duration::from_millis(300);
/// Time between the baseline and the sample in `once`, so rates mean something.
const ONCE_BASELINE: Duration = Duration::from_millis(500);

fn load_config(cli_config: Option<&Path>) -> Result<Config, Error> {
    let config = config::load(cli_config).map_err(|e| Error::Config(e.to_string()))?;
    // Before the logger exists: stderr is where every command reports,
    // with journald's warning priority when that is where it goes.
    let prefix = if logging::stderr_is_journal() {
        "<4>"
    } else {
        ""
    };
    for warning in config.warnings() {
        eprintln!("{prefix}metricsd: warning: {warning}");
    }
    Ok(config)
}

/// `metricsd check-config`
pub fn check_config(cli_config: Option<&Path>) -> Result<(), Error> {
    let config = load_config(cli_config)?;
    write_stdout(&config.to_toml_redacted())
}

/// Writes a command's output; a reader that went away early (`| head`) is
/// no failure, anything else (a full disk) is one, with exit code 1.
fn write_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Failure(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}

/// `metricsd once [--flat]`
pub fn once(cli_config: Option<&Path>, flat: bool) -> Result<(), Error> {
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
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    write_stdout(&text)
}

/// `metricsd queue ...`: returns the exit code.
pub fn queue(cli_config: Option<&Path>, command: &QueueCommand) -> Result<i32, Error> {
    let config = load_config(cli_config)?;
    let sinks = sampler::configured_sinks(&config);
    Ok(queue_cmd::run(command, &config.state_dir, &sinks))
}

/// Waits for `handle` until `deadline`; None if the thread is still running then.
fn join_by<T>(handle: JoinHandle<T>, deadline: Instant) -> Option<T> {
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

/// `metricsd run`: runs until SIGTERM/SIGINT.
pub fn run(cli_config: Option<&Path>, args: &RunArgs) -> Result<(), Error> {
    // Before anything else: from here on a signal is queued, never fatal,
    // and a panic anywhere ends the process instead of one thread.
    let signals = signals::install()
        .map_err(|e| Error::Failure(format!("cannot install signal handlers: {e}")))?;
    logging::exit_on_panic();
    let start_dir = std::env::current_dir()
        .map_err(|e| Error::Failure(format!("cannot read the working directory: {e}")))?;
    // The file found now is the file every reload reads: had the lookup
    // run again, a default file deleted meanwhile would turn a reload into
    // the built-in defaults (every sink gone) instead of an error.
    let cli_config = config::locate(cli_config).map(|p| start_dir.join(p));
    let config = load_config(cli_config.as_deref())?;
    logging::init(config.log_level);
    statedir::ensure(&config.state_dir).map_err(|e| Error::State(e.to_string()))?;

    let files = args.daemon.then(|| Files {
        pidfile: start_dir.join(
            args.pidfile
                .clone()
                .unwrap_or_else(|| config.state_dir.join("metricsd.pid")),
        ),
        log_file: start_dir.join(
            args.log_file
                .clone()
                .unwrap_or_else(|| config.state_dir.join("metricsd.log")),
        ),
    });
    // No thread or runtime may exist before this point (fork keeps only the caller).
    let report = match &files {
        Some(files) => Some(detach::detach(files, &start_dir)?),
        None => None,
    };
    let pidfile = files.as_ref().map(|f| f.pidfile.clone());
    match Daemon::start(config, cli_config, files, signals) {
        Ok(daemon) => {
            if let Some(report) = report {
                // Only the instance that holds the lock and serves names itself.
                if let Err(e) = pidfile.as_deref().map_or(Ok(()), detach::write_pidfile) {
                    report.failed(&e);
                    return Err(e);
                }
                report.serving();
            }
            daemon.run();
            Ok(())
        }
        Err(e) => {
            if let Some(report) = report {
                report.failed(&e);
            }
            Err(e)
        }
    }
}

/// The running daemon: its threads and what the main thread needs to
/// reload and to stop them.
struct Daemon {
    cli_config: Option<PathBuf>,
    files: Option<Files>,
    db_path: PathBuf,
    shared: SharedConfig,
    shutdown: Shutdown,
    requests: mpsc::Receiver<Request>,
    poster_wake: Arc<Wake>,
    reload_wake: Arc<Wake>,
    sampler: JoinHandle<Option<Queue>>,
    stream: Option<JoinHandle<()>>,
    posters: Posters,
    _lock: InstanceLock,
}

impl Daemon {
    /// Start order of SPEC §6: lock, queue, listener, threads, READY=1.
    fn start(
        config: Config,
        cli_config: Option<PathBuf>,
        files: Option<Files>,
        signals: signals::Installed,
    ) -> Result<Daemon, Error> {
        let shutdown = Shutdown::new();
        let (requests_tx, requests) = mpsc::channel();
        let spawn_err = |what: &str, e: std::io::Error| {
            Error::Failure(format!("cannot start the {what} thread: {e}"))
        };
        signals
            .spawn(shutdown.clone(), requests_tx)
            .map_err(|e| spawn_err("signal", e))?;
        // The baseline for the first sample's rates, as early as possible.
        let collector = Collector::new(Roots::default(), &config.collect);
        let lock = InstanceLock::acquire(&config.state_dir).map_err(|e| match e {
            // SPEC §1: a second `run` exits 1; a lock file that cannot
            // be made or opened is the state directory's fault (73).
            LockError::Held { .. } => Error::Failure(e.to_string()),
            LockError::Io { .. } => Error::State(e.to_string()),
        })?;

        let db_path = config.state_dir.join("queue.db");
        let queue = match Queue::open(&db_path) {
            Ok(queue) => Some(queue),
            // SPEC §5.1: a full disk fails inserts; sampling and streaming
            // go on, and the sampler opens the queue once there is space.
            Err(e) if e.may_be_for_want_of_space() && statedir::is_full(&config.state_dir) => {
                log::error!(
                    "queue {e}: no space left; starting without it: snapshots are streamed but not queued until there is space"
                );
                None
            }
            Err(e) => return Err(Error::State(format!("queue {e}"))),
        };
        // The figure `queue stats` calls pending: the backend's rows, or the
        // local history when no sink is configured.
        let sink_names = sampler::configured_sinks(&config);
        let pending = queue
            .as_ref()
            .and_then(|q| q.stats(&sink_names).ok())
            .map_or_else(|| "?".to_string(), |stats| stats.pending.to_string());

        let listener = if config.stream.enabled {
            let addr = config.stream.listen;
            Some(
                stream::bind(addr)
                    .map_err(|e| Error::Failure(format!("cannot listen on {addr}: {e}")))?,
            )
        } else {
            None
        };

        let machine_id = identity::machine_id(Path::new(ETC_MACHINE_ID), &config.state_dir, true);
        let status = Arc::new(Status::default());
        status.set_queue_unopened(queue.is_none());
        let shared = SharedConfig::new(config.clone());
        let hub = Hub::new();
        let poster_wake = Wake::new();
        let reload_wake = Wake::new();
        shutdown.register(&poster_wake);

        let stream = match listener {
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
        let posters = Posters::start(
            PosterContext {
                db_path: db_path.clone(),
                config: shared.clone(),
                status: status.clone(),
                shutdown: shutdown.clone(),
                machine_id: machine_id.clone(),
            },
            poster_wake.clone(),
        )
        .map_err(|e| spawn_err("poster", e))?;
        let sampler_ctx = SamplerContext {
            config: shared.clone(),
            collector,
            machine_id,
            hub,
            queue,
            db_path: db_path.clone(),
            status: status.clone(),
            shutdown: shutdown.clone(),
            poster_wake: poster_wake.clone(),
            reload_wake: reload_wake.clone(),
        };
        let sampler = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sampler::run(sampler_ctx))
            .map_err(|e| spawn_err("sampler", e))?;

        let listen = if config.stream.enabled {
            config.stream.listen.to_string()
        } else {
            "disabled".to_string()
        };
        let sinks: Vec<String> = config
            .sinks()
            .into_iter()
            .map(|(kind, sink)| format!("{kind} {}", backend_host(&sink.url)))
            .collect();
        let backend = if sinks.is_empty() {
            "backend disabled".to_string()
        } else {
            sinks.join(", ")
        };
        log::info!(
            "metricsd {} starting: interval {}, listen {listen}, queue {} ({pending} pending), {backend}",
            env!("CARGO_PKG_VERSION"),
            config::format_duration(config.interval),
            db_path.display(),
        );
        notify::ready(&format!(
            "sampling every {}",
            config::format_duration(config.interval)
        ));
        Ok(Daemon {
            cli_config,
            files,
            db_path,
            shared,
            shutdown,
            requests,
            poster_wake,
            reload_wake,
            sampler,
            stream,
            posters,
            _lock: lock,
        })
    }

    /// Serves reloads until a stop is requested, then stops.
    fn run(mut self) {
        let alive = liveness::register("main");
        // Reloads requested during start-up were queued and come first; a
        // stop request (or the signal thread's end) ends the loop.
        // Between requests it looks for a stuck sampler (see `report_stalls`):
        // this thread runs with or without the stream.
        let look_every = notify::stall_check_every();
        loop {
            let request = liveness::waiting(|| match look_every {
                Some(every) => self.requests.recv_timeout(every),
                None => self
                    .requests
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            });
            match request {
                Ok(Request::Reload) => self.reload(),
                Err(mpsc::RecvTimeoutError::Timeout) => notify::report_stalls(&self.shutdown),
                Ok(Request::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Stopping before leaving: a sample still feeding the watchdog must
        // see the stop, not a main thread that has ended.
        self.shutdown.trigger();
        drop(alive);
        self.stop();
    }

    fn reload(&mut self) {
        notify::reloading();
        if let Some(files) = &self.files {
            if let Err(e) = logging::redirect_stderr(&files.log_file) {
                log::error!("cannot reopen log file {}: {e}", files.log_file.display());
            }
        }
        match config::load(self.cli_config.as_deref()) {
            Err(e) => log::error!("reload rejected, keeping the running configuration: {e}"),
            Ok(mut new) => {
                for warning in new.warnings() {
                    log::warn!("reload: {warning}");
                }
                let old = self.shared.get();
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
                self.shared.set(new);
                self.reload_wake.notify();
                if let Err(e) = self.posters.reconcile() {
                    log::error!("reload: cannot start a poster thread: {e}");
                }
                self.poster_wake.notify();
            }
        }
        notify::ready(&format!(
            "sampling every {}",
            config::format_duration(self.shared.get().interval)
        ));
    }

    /// The stop of SPEC §6 against one deadline taken at the signal: every
    /// thread is joined or given up on by then, and the WAL checkpointed.
    fn stop(self) {
        notify::stopping();
        self.shutdown.trigger();
        let signalled = self.shutdown.triggered_at().unwrap_or_else(Instant::now);
        let exit_by = signalled + STOP_BUDGET - EXIT_RESERVE;
        let joins_by = exit_by - CHECKPOINT_RESERVE;

        let sampler = join_by(self.sampler, joins_by);
        if sampler.is_none() {
            log::warn!("the sampler did not stop in time");
        }
        let queue = sampler.flatten();
        if let Some(stream) = self.stream {
            if join_by(stream, joins_by).is_none() {
                log::warn!("the stream server did not stop in time");
            }
        }
        for sink in self.posters.join_by(joins_by) {
            log::warn!("abandoning an in-flight POST of {sink}; its rows stay queued");
        }
        checkpoint(queue, &self.db_path, exit_by);
        if let Some(files) = &self.files {
            let _ = std::fs::remove_file(&files.pidfile);
        }
        log::info!("stopped in {} ms", signalled.elapsed().as_millis());
    }
}

/// Folds the WAL into the queue file, so that after a clean stop
/// `queue.db-wal` is empty; says so when it could not.
fn checkpoint(queue: Option<Queue>, db_path: &Path, by: Instant) {
    // A sampler that did not return keeps its connection: use a new one.
    let queue = match queue {
        Some(q) => q,
        None => match Queue::connect(db_path) {
            Ok(q) => q,
            Err(e) => {
                log::warn!("WAL checkpoint skipped: cannot open the queue: {e}");
                return;
            }
        },
    };
    let wait = by
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    match queue.checkpoint_within(wait) {
        Ok(c) if c.complete() => {}
        Ok(c) if c.busy => log::warn!(
            "WAL checkpoint incomplete: the queue was busy ({} of {} frames written back)",
            c.checkpointed_frames,
            c.wal_frames
        ),
        Ok(c) => log::warn!(
            "WAL checkpoint incomplete: {} of {} frames written back",
            c.checkpointed_frames,
            c.wal_frames
        ),
        Err(e) => log::warn!("WAL checkpoint failed: {e}"),
    }
}
