//! Configuration (SPEC §2): lookup order, defaults, `METRICSD_*` overrides,
//! validation with errors that name the file, the key and the reason, and
//! the effective configuration as TOML with secrets redacted.
//!
//! The file form is a set of serde structs (`file.rs`, unknown keys denied);
//! the environment is laid over the parsed file (`env.rs`); one validation
//! pass turns the file form into the typed [`Config`] (`validate.rs`).

mod env;
mod file;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use values::{format_duration, parse_duration};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/metricsd/metricsd.toml";
const ENV_CONFIG: &str = "METRICSD_CONFIG";

/// A configuration error: where it came from, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, `environment METRICSD_X`, or `command line`.
    pub origin: String,
    /// `interval` or `[backend] timeout`; empty when the whole file is at fault.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectConfig {
    pub top_processes: usize,
    pub exclude_fs_types: Vec<String>,
    pub exclude_mounts: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    /// Globs of systemd unit names reported per cgroup; empty disables.
    pub units: Vec<String>,
    pub top_units: usize,
}

/// Debug leaves the token out (it may end up in a log line).
#[derive(Clone, PartialEq)]
pub struct StreamConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_clients: usize,
    pub allowed_origins: Vec<String>,
    /// Host header names accepted besides IP literals and localhost.
    pub allowed_hosts: Vec<String>,
    /// Empty: no token required.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub max_pending: u64,
    pub max_dead: u64,
    /// How long flat rows are kept for the live page; zero keeps none.
    pub history: Duration,
}

/// The delay before posting a fresh row when a sink is caught up (SPEC §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Splay {
    /// A fixed per-host delay derived from machine_id and node_id.
    #[default]
    Auto,
    Fixed(Duration),
}

/// One delivery target: `[backend]`, `[remote_write]` or `[otlp]`. Keys a
/// section does not have stay at their empty defaults. Debug shows no secret.
#[derive(Clone, PartialEq)]
pub struct SinkConfig {
    /// Empty: the sink is off.
    pub url: String,
    /// `token`, or the trimmed contents of `token_file` when that is set.
    pub token: String,
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
    pub batch_size: usize,
    pub gzip: bool,
    pub retry_backoff: Vec<Duration>,
    pub max_retry_after: Duration,
    pub max_attempts: u32,
    pub ca_file: Option<PathBuf>,
    pub splay: Splay,
    /// Rows older than this are dropped unsent; zero: never.
    pub max_age: Duration,
    pub username: String,
    /// `password`, or the trimmed contents of `password_file` when that is set.
    pub password: String,
    pub password_file: Option<PathBuf>,
    pub headers: BTreeMap<String, String>,
    /// `[remote_write]` only: extra labels on every series.
    pub labels: BTreeMap<String, String>,
    /// `[otlp]` only: extra resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
}

/// `<redacted>` for a set secret, `""` for an unset one.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        values::REDACTED
    }
}

impl fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("max_clients", &self.max_clients)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("token", &redacted(&self.token))
            .finish()
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), redacted(v)))
            .collect();
        f.debug_struct("SinkConfig")
            .field("url", &values::url_for_display(&self.url))
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .field("timeout", &self.timeout)
            .field("batch_size", &self.batch_size)
            .field("gzip", &self.gzip)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("max_attempts", &self.max_attempts)
            .field("ca_file", &self.ca_file)
            .field("splay", &self.splay)
            .field("max_age", &self.max_age)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("password_file", &self.password_file)
            .field("headers", &headers)
            .field("labels", &self.labels)
            .field("resource_attributes", &self.resource_attributes)
            .finish()
    }
}

/// The name the rest of the crate knew the backend section by.
pub type BackendConfig = SinkConfig;

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            url: String::new(),
            token: String::new(),
            token_file: None,
            timeout: Duration::from_secs(10),
            batch_size: 1,
            gzip: false,
            retry_backoff: vec![
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(60),
            ],
            max_retry_after: Duration::from_secs(3600),
            max_attempts: 3,
            ca_file: None,
            splay: Splay::Auto,
            max_age: Duration::ZERO,
            username: String::new(),
            password: String::new(),
            password_file: None,
            headers: BTreeMap::new(),
            labels: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

impl SinkConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The bearer token: `token`, else the trimmed contents of `token_file`
    /// (read when the configuration was loaded). None when neither is set.
    pub fn bearer_token(&self) -> Option<&str> {
        if self.token.is_empty() {
            None
        } else {
            Some(&self.token)
        }
    }

    /// HTTP basic auth: `username` with `password` or `password_file`'s
    /// contents (read when the configuration was loaded). None without a username.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        if self.username.is_empty() {
            None
        } else {
            Some((self.username.clone(), self.password.clone()))
        }
    }
}

/// The delivery sections of SPEC §2 and §5.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum SinkKind {
    Backend,
    RemoteWrite,
    Otlp,
}

impl SinkKind {
    pub const ALL: [SinkKind; 3] = [SinkKind::Backend, SinkKind::RemoteWrite, SinkKind::Otlp];

    /// The section name, also the sink's name in `queue --sink`, /health and /metrics.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Backend => "backend",
            SinkKind::RemoteWrite => "remote_write",
            SinkKind::Otlp => "otlp",
        }
    }

    pub fn from_name(name: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from; None for the built-in defaults.
    pub path: Option<PathBuf>,
    /// Resolved: the host name when the file leaves it empty.
    pub node_id: String,
    pub interval: Duration,
    /// Resolved per SPEC §2.
    pub state_dir: PathBuf,
    pub log_level: log::LevelFilter,
    pub collect: CollectConfig,
    pub stream: StreamConfig,
    pub queue: QueueConfig,
    pub backend: SinkConfig,
    pub remote_write: SinkConfig,
    pub otlp: SinkConfig,
    /// Things worth a warning that did not stop loading (an unknown
    /// `METRICSD_*` variable); see [`Config::warnings`].
    warnings: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            top_processes: 5,
            exclude_fs_types: strings(&[
                "tmpfs",
                "devtmpfs",
                "overlay",
                "squashfs",
                "proc",
                "sysfs",
                "cgroup2",
                "nsfs",
                "autofs",
                "fuse.portal",
            ]),
            exclude_mounts: strings(&[
                "/proc/*",
                "/sys/*",
                "/dev/*",
                "/run/*",
                "/snap/*",
                "/boot/efi",
            ]),
            exclude_interfaces: strings(&["lo", "veth*", "docker*", "br-*", "virbr*"]),
            units: strings(&["*.service"]),
            top_units: 10,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8756)),
            max_clients: 64,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            token: String::new(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_pending: 10080,
            max_dead: 1000,
            history: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for Config {
    /// The built-in defaults, with node_id and state_dir resolved.
    fn default() -> Self {
        Config {
            path: None,
            node_id: host_name(),
            interval: Duration::from_secs(60),
            state_dir: default_state_dir(),
            log_level: log::LevelFilter::Info,
            collect: CollectConfig::default(),
            stream: StreamConfig::default(),
            queue: QueueConfig::default(),
            backend: SinkConfig::default(),
            remote_write: SinkConfig::default(),
            otlp: SinkConfig::default(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// What loading found worth a warning without refusing the configuration
    /// (an unknown `METRICSD_*` variable, one line each); the caller prints or logs them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn sink(&self, kind: SinkKind) -> &SinkConfig {
        match kind {
            SinkKind::Backend => &self.backend,
            SinkKind::RemoteWrite => &self.remote_write,
            SinkKind::Otlp => &self.otlp,
        }
    }

    /// The sinks with a URL, in [`SinkKind::ALL`] order.
    pub fn sinks(&self) -> Vec<(SinkKind, &SinkConfig)> {
        SinkKind::ALL
            .into_iter()
            .map(|kind| (kind, self.sink(kind)))
            .filter(|(_, sink)| sink.enabled())
            .collect()
    }

    /// The effective configuration as TOML, secrets shown as `<redacted>`.
    pub fn to_toml_redacted(&self) -> String {
        let origin = match &self.path {
            Some(p) => format!(
                "# metricsd effective configuration (from {})\n",
                p.display()
            ),
            None => "# metricsd effective configuration (built-in defaults)\n".to_string(),
        };
        origin + &file::FileConfig::from_config(self).to_toml()
    }

    /// Describes the keys that changed but only take effect after a restart.
    /// Everything else, every sink section included, applies on reload.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.stream.listen != new.stream.listen {
            keys.push("[stream] listen");
        }
        // The listener and its slots are made once, with the listen address.
        if self.stream.enabled != new.stream.enabled {
            keys.push("[stream] enabled");
        }
        if self.stream.max_clients != new.stream.max_clients {
            keys.push("[stream] max_clients");
        }
        if self.state_dir != new.state_dir {
            keys.push("state_dir");
        }
        keys
    }
}

/// The kernel's host name (gethostname), or "localhost" if it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `$STATE_DIRECTORY` (systemd), else /var/lib/metricsd for root, else the
/// user's XDG state directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several are configured.
        let dir = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !dir.is_empty() {
            return PathBuf::from(dir);
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/metricsd");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("metricsd");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/state/metricsd")
}

/// Which configuration file to read, per SPEC §2's lookup order.
pub fn locate(cli_path: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = cli_path {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_CONFIG).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    default.exists().then(|| default.to_path_buf())
}

/// Loads the configuration per SPEC §2, from the process environment.
pub fn load(cli_path: Option<&Path>) -> Result<Config, ConfigError> {
    let (env, unreadable) = environment();
    let warnings = env::check_unreadable(&unreadable, &file::FileConfig::schema())?;
    let mut config = load_from(locate(cli_path).as_deref(), &env)?;
    config.warnings.extend(warnings);
    Ok(config)
}

/// The process environment as text, and the names (as lossy text) of the
/// `METRICSD_*` variables that are not UTF-8. Other variables that are not
/// are no concern of ours (`std::env::vars` would panic on them).
fn environment() -> (Vec<(String, String)>, Vec<String>) {
    let (mut env, mut unreadable) = (Vec::new(), Vec::new());
    for (name, value) in std::env::vars_os() {
        match (name.to_str(), value.to_str()) {
            (Some(name), Some(value)) => env.push((name.to_string(), value.to_string())),
            _ if name.to_string_lossy().starts_with("METRICSD_") => {
                unreadable.push(name.to_string_lossy().into_owned());
            }
            _ => {}
        }
    }
    (env, unreadable)
}

/// Loads `path` (None: built-in defaults) with `env` overrides applied.
pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file_origin = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".to_string());
    let mut table = match path {
        Some(p) => read_table(p)?,
        None => toml::Table::new(),
    };
    let schema = file::FileConfig::schema();
    file::check_sections(&table, &schema, &file_origin)?;
    let overlay = env::apply(&mut table, &schema, env)?;
    let origin_of = |section: &str, key: &str| -> String {
        overlay
            .origin_of(section, key)
            .unwrap_or_else(|| file_origin.clone())
    };
    let parsed = file::FileConfig::parse(table, &origin_of, &file_origin)?;
    let mut config = validate::build(parsed, &origin_of)?;
    config.path = path.map(Path::to_path_buf);
    config.warnings = overlay.warnings;
    Ok(config)
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    // Only the parser's message and the position: its full text quotes the
    // line, which may hold a secret.
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        // A duplicate key is named: the span then covers the key (or the
        // table header) alone, never a value.
        let message = e.message().trim().replace('\n', " ");
        let named = match e.span() {
            Some(span) if message.starts_with("duplicate key") => {
                let key = text.get(span).unwrap_or("").trim();
                format!("{message} `{}`", key.chars().take(100).collect::<String>())
            }
            _ => message,
        };
        ConfigError {
            origin,
            key: String::new(),
            reason: format!("invalid TOML{}: {named}", at.unwrap_or_default()),
        }
    })
}

/// `interval` or `[backend] timeout`.
fn key_label(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("[{section}] {key}")
    }
}

/// The live configuration, swapped whole on SIGHUP; readers take a cheap Arc.
/// Async readers can also await a swap (`changed`) instead of polling it:
/// an idle daemon then wakes only for its samples.
#[derive(Clone)]
pub struct SharedConfig {
    current: Arc<RwLock<Arc<Config>>>,
    swaps: Arc<tokio::sync::watch::Sender<u64>>,
}

impl SharedConfig {
    pub fn new(config: Config) -> SharedConfig {
        SharedConfig {
            current: Arc::new(RwLock::new(Arc::new(config))),
            swaps: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub fn get(&self) -> Arc<Config> {
        self.current.read().unwrap().clone()
    }

    pub fn set(&self, config: Config) {
        *self.current.write().unwrap() = Arc::new(config);
        self.swaps.send_modify(|n| *n += 1);
    }

    /// A receiver whose `changed()` completes after each later `set`.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}
