//! Configuration (SPEC §2): lookup order, defaults, `METRICSD_*` overrides,
//! validation with errors that name the file, the key and the reason, and
//! the effective configuration as TOML with secrets redacted.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use toml::{Table, Value};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/metricsd/metricsd.toml";
const ENV_PREFIX: &str = "METRICSD_";
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_clients: usize,
    pub allowed_origins: Vec<String>,
    /// Empty: no token required.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub max_pending: u64,
    pub max_dead: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Empty: no posting.
    pub url: String,
    pub token: String,
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
    pub batch_size: usize,
    pub gzip: bool,
    pub retry_backoff: Vec<Duration>,
    pub max_retry_after: Duration,
    pub max_attempts: u32,
    pub ca_file: Option<PathBuf>,
}

impl BackendConfig {
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
    pub backend: BackendConfig,
    /// `token` as configured (the file's `token`, not `token_file`'s contents),
    /// kept apart so check-config can tell which was used.
    backend_token_from_file: bool,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
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
            collect: CollectConfig {
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
            },
            stream: StreamConfig {
                enabled: true,
                listen: "127.0.0.1:8756".parse().unwrap(),
                max_clients: 64,
                allowed_origins: Vec::new(),
                token: String::new(),
            },
            queue: QueueConfig {
                max_pending: 10080,
                max_dead: 1000,
            },
            backend: BackendConfig {
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
            },
            backend_token_from_file: false,
        }
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

/// The kinds of value a key holds; drives env parsing and validation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    Dur,
    StrList,
    DurList,
}

const TOP_KEYS: &[(&str, Kind)] = &[
    ("node_id", Kind::Str),
    ("interval", Kind::Dur),
    ("state_dir", Kind::Str),
    ("log_level", Kind::Str),
];

const SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    (
        "collect",
        &[
            ("top_processes", Kind::Int),
            ("exclude_fs_types", Kind::StrList),
            ("exclude_mounts", Kind::StrList),
            ("exclude_interfaces", Kind::StrList),
        ],
    ),
    (
        "stream",
        &[
            ("enabled", Kind::Bool),
            ("listen", Kind::Str),
            ("max_clients", Kind::Int),
            ("allowed_origins", Kind::StrList),
            ("token", Kind::Str),
        ],
    ),
    (
        "queue",
        &[("max_pending", Kind::Int), ("max_dead", Kind::Int)],
    ),
    (
        "backend",
        &[
            ("url", Kind::Str),
            ("token", Kind::Str),
            ("token_file", Kind::Str),
            ("timeout", Kind::Dur),
            ("batch_size", Kind::Int),
            ("gzip", Kind::Bool),
            ("retry_backoff", Kind::DurList),
            ("max_retry_after", Kind::Dur),
            ("max_attempts", Kind::Int),
            ("ca_file", Kind::Str),
        ],
    ),
];

fn section_keys(section: &str) -> Option<&'static [(&'static str, Kind)]> {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, k)| *k)
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
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(locate(cli_path).as_deref(), &env)
}

/// Loads `path` (None: built-in defaults) with `env` overrides applied.
pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file_origin = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".to_string());
    let mut table = match path {
        Some(p) => read_table(p)?,
        None => Table::new(),
    };
    // Records which keys came from the environment, to name them in errors.
    let mut env_origin: Vec<((String, String), String)> = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG {
            continue;
        }
        let (section, key, kind) = env_target(rest).ok_or_else(|| ConfigError {
            origin: format!("environment {name}"),
            key: String::new(),
            reason: "unknown configuration key".to_string(),
        })?;
        let parsed = env_value(kind, value).map_err(|reason| ConfigError {
            origin: format!("environment {name}"),
            key: key_label(&section, &key),
            reason,
        })?;
        if section.is_empty() {
            table.insert(key.clone(), parsed);
        } else {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            match entry {
                Value::Table(t) => {
                    t.insert(key.clone(), parsed);
                }
                _ => {
                    return Err(ConfigError {
                        origin: file_origin,
                        key: format!("[{section}]"),
                        reason: "must be a table".to_string(),
                    })
                }
            }
        }
        env_origin.push(((section, key), format!("environment {name}")));
    }
    let origin_of = |section: &str, key: &str| -> String {
        env_origin
            .iter()
            .find(|((s, k), _)| s == section && k == key)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| file_origin.clone())
    };
    build(path, &table, &origin_of, &file_origin)
}

fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    text.parse::<Table>().map_err(|e| ConfigError {
        origin,
        key: String::new(),
        reason: format!("invalid TOML: {}", e.to_string().trim().replace('\n', " ")),
    })
}

/// Maps the part of an env var after `METRICSD_` to (section, key, kind).
fn env_target(rest: &str) -> Option<(String, String, Kind)> {
    let lower = rest.to_ascii_lowercase();
    for (section, keys) in SECTIONS {
        if let Some(key) = lower.strip_prefix(&format!("{section}_")) {
            if let Some((k, kind)) = keys.iter().find(|(k, _)| *k == key) {
                return Some((section.to_string(), k.to_string(), *kind));
            }
        }
    }
    TOP_KEYS
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(k, kind)| (String::new(), k.to_string(), *kind))
}

/// Turns an environment string into the TOML value the key expects. Lists
/// take TOML array syntax (`["a","b"]`) or a comma-separated list.
fn env_value(kind: Kind, raw: &str) -> Result<Value, String> {
    let raw_trim = raw.trim();
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Int => match raw_trim.parse::<i64>() {
            Ok(n) => Value::Integer(n),
            Err(_) => return Err(format!("expected an integer, got {raw:?}")),
        },
        Kind::Bool => match raw_trim.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => return Err(format!("expected true or false, got {raw:?}")),
        },
        Kind::Dur => match raw_trim.parse::<i64>() {
            Ok(n) => Value::Integer(n),
            Err(_) => Value::String(raw_trim.to_string()),
        },
        Kind::StrList | Kind::DurList => {
            if raw_trim.starts_with('[') {
                let doc: Table = format!("v = {raw_trim}")
                    .parse()
                    .map_err(|_| format!("invalid list {raw:?}"))?;
                doc["v"].clone()
            } else {
                Value::Array(
                    raw_trim
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
    })
}

fn key_label(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("[{section}] {key}")
    }
}

/// Parses `"500ms"`, `"60s"`, `"5m"`, `"1h"` or integer seconds.
pub fn parse_duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        Value::Integer(n) => Err(format!("invalid duration {n}: must not be negative")),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(n) = t.parse::<u64>() {
                return Ok(Duration::from_secs(n));
            }
            humantime::parse_duration(t).map_err(|_| format!("invalid duration {s:?}"))
        }
        other => Err(format!(
            "invalid duration {other}: expected a string such as \"60s\" or integer seconds"
        )),
    }
}

/// Prints a duration in the string form the file takes: `500ms`, `60s`, `1h`
/// (the forms SPEC §2's defaults use).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Reads typed values out of one table, naming the key in every error.
struct Reader<'a> {
    table: Option<&'a Table>,
    section: &'a str,
    origin_of: &'a dyn Fn(&str, &str) -> String,
}

impl<'a> Reader<'a> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: (self.origin_of)(self.section, key),
            key: key_label(self.section, key),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.and_then(|t| t.get(key))
    }

    fn string(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(key, format!("expected a string, got {v}"))),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn int(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Integer(n)) if *n >= min as i64 && (*n as u64) <= max => Ok(*n as u64),
            Some(Value::Integer(n)) => {
                Err(self.err(key, format!("{n} is out of range ({min}..={max})")))
            }
            Some(v) => Err(self.err(key, format!("expected an integer, got {v}"))),
        }
    }

    fn duration(
        &self,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = match self.get(key) {
            None => return Ok(default),
            Some(v) => parse_duration(v).map_err(|r| self.err(key, r))?,
        };
        if d < min || d > max {
            return Err(self.err(
                key,
                format!(
                    "{} is out of range ({}..{})",
                    format_duration(d),
                    format_duration(min),
                    format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    fn string_list(&self, key: &str, default: &[String]) -> Result<Vec<String>, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_vec()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.err(key, format!("expected a list of strings, found {other}")))
                    }
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a list of strings, got {v}"))),
        }
    }

    fn glob_list(&self, key: &str, default: &[String]) -> Result<Vec<String>, ConfigError> {
        let list = self.string_list(key, default)?;
        for pattern in &list {
            glob::Pattern::new(pattern)
                .map_err(|e| self.err(key, format!("invalid pattern {pattern:?}: {e}")))?;
        }
        Ok(list)
    }

    fn unknown_keys(&self, known: &[(&str, Kind)]) -> Result<(), ConfigError> {
        if let Some(table) = self.table {
            for key in table.keys() {
                if !known.iter().any(|(k, _)| k == key) {
                    return Err(self.err(key, "unknown key"));
                }
            }
        }
        Ok(())
    }
}

fn build(
    path: Option<&Path>,
    table: &Table,
    origin_of: &dyn Fn(&str, &str) -> String,
    file_origin: &str,
) -> Result<Config, ConfigError> {
    let defaults = Config::default();
    let top = Reader {
        table: Some(table),
        section: "",
        origin_of,
    };
    for (key, value) in table {
        let is_section = section_keys(key).is_some();
        let is_top = TOP_KEYS.iter().any(|(k, _)| k == key);
        if is_section && !value.is_table() {
            return Err(top.err(key, "must be a table ([section])"));
        }
        if !is_section && !is_top {
            return Err(ConfigError {
                origin: file_origin.to_string(),
                key: if value.is_table() {
                    format!("[{key}]")
                } else {
                    key.clone()
                },
                reason: "unknown key".to_string(),
            });
        }
    }
    let section = |name: &'static str| Reader {
        table: table.get(name).and_then(Value::as_table),
        section: name,
        origin_of,
    };

    let node_id = top.string("node_id", "")?;
    let node_id = if node_id.trim().is_empty() {
        defaults.node_id.clone()
    } else {
        node_id
    };
    let interval = top.duration(
        "interval",
        defaults.interval,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    let state_dir = top.string("state_dir", "")?;
    let state_dir = if state_dir.is_empty() {
        defaults.state_dir.clone()
    } else {
        PathBuf::from(state_dir)
    };
    let log_level_raw = top.string("log_level", "info")?;
    let log_level = match log_level_raw.to_ascii_lowercase().as_str() {
        "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            return Err(top.err(
                "log_level",
                format!("invalid level {log_level_raw:?} (error|warn|info|debug|trace)"),
            ))
        }
    };

    let c = section("collect");
    c.unknown_keys(section_keys("collect").unwrap())?;
    let dc = &defaults.collect;
    let collect = CollectConfig {
        top_processes: c.int("top_processes", dc.top_processes as u64, 0, 1000)? as usize,
        exclude_fs_types: c.string_list("exclude_fs_types", &dc.exclude_fs_types)?,
        exclude_mounts: c.glob_list("exclude_mounts", &dc.exclude_mounts)?,
        exclude_interfaces: c.glob_list("exclude_interfaces", &dc.exclude_interfaces)?,
    };

    let s = section("stream");
    s.unknown_keys(section_keys("stream").unwrap())?;
    let ds = &defaults.stream;
    let listen_raw = s.string("listen", &ds.listen.to_string())?;
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        s.err(
            "listen",
            format!("invalid address {listen_raw:?}: expected IP:PORT such as \"127.0.0.1:8756\""),
        )
    })?;
    let allowed_origins = s.string_list("allowed_origins", &ds.allowed_origins)?;
    let stream = StreamConfig {
        enabled: s.boolean("enabled", ds.enabled)?,
        listen,
        max_clients: s.int("max_clients", ds.max_clients as u64, 1, 100_000)? as usize,
        allowed_origins,
        token: s.string("token", "")?,
    };

    let q = section("queue");
    q.unknown_keys(section_keys("queue").unwrap())?;
    let queue = QueueConfig {
        max_pending: q.int("max_pending", defaults.queue.max_pending, 1, 100_000_000)?,
        max_dead: q.int("max_dead", defaults.queue.max_dead, 0, 100_000_000)?,
    };

    let b = section("backend");
    b.unknown_keys(section_keys("backend").unwrap())?;
    let db = &defaults.backend;
    let url = b.string("url", "")?.trim().to_string();
    if !url.is_empty() {
        validate_url(&url).map_err(|r| b.err("url", r))?;
    }
    let token = b.string("token", "")?;
    let token_file = b.string("token_file", "")?;
    if !token.is_empty() && !token_file.is_empty() {
        return Err(b.err("token_file", "set either token or token_file, not both"));
    }
    let (token, token_file, backend_token_from_file) = if token_file.is_empty() {
        (token, None, false)
    } else {
        let contents = std::fs::read_to_string(&token_file)
            .map_err(|e| b.err("token_file", format!("cannot read {token_file}: {e}")))?;
        let t = contents.trim().to_string();
        if t.is_empty() {
            return Err(b.err("token_file", format!("{token_file} is empty")));
        }
        (t, Some(PathBuf::from(token_file)), true)
    };
    let ca_file = b.string("ca_file", "")?;
    let ca_file = if ca_file.is_empty() {
        None
    } else {
        std::fs::metadata(&ca_file)
            .map_err(|e| b.err("ca_file", format!("cannot read {ca_file}: {e}")))?;
        Some(PathBuf::from(ca_file))
    };
    let retry_backoff = match b.get("retry_backoff") {
        None => db.retry_backoff.clone(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for item in items {
                let d = parse_duration(item).map_err(|r| b.err("retry_backoff", r))?;
                if d.is_zero() || d > Duration::from_secs(24 * 3600) {
                    return Err(b.err(
                        "retry_backoff",
                        format!("{} is out of range (1ms..24h)", format_duration(d)),
                    ));
                }
                out.push(d);
            }
            out
        }
        Some(_) => return Err(b.err("retry_backoff", "expected a non-empty list of durations")),
    };
    let backend = BackendConfig {
        url,
        token,
        token_file,
        timeout: b.duration(
            "timeout",
            db.timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?,
        batch_size: b.int("batch_size", db.batch_size as u64, 1, 10_000)? as usize,
        gzip: b.boolean("gzip", db.gzip)?,
        retry_backoff,
        max_retry_after: b.duration(
            "max_retry_after",
            db.max_retry_after,
            Duration::ZERO,
            Duration::from_secs(7 * 24 * 3600),
        )?,
        max_attempts: b.int("max_attempts", db.max_attempts as u64, 1, 1000)? as u32,
        ca_file,
    };

    Ok(Config {
        path: path.map(Path::to_path_buf),
        node_id,
        interval,
        state_dir,
        log_level,
        collect,
        stream,
        queue,
        backend,
        backend_token_from_file,
    })
}

fn validate_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "invalid URL {url:?}: the scheme must be http or https"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    Ok(())
}

fn str_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

fn redact(secret: &str) -> Value {
    Value::String(if secret.is_empty() {
        String::new()
    } else {
        "<redacted>".to_string()
    })
}

impl Config {
    /// The effective configuration as TOML, secrets shown as `<redacted>`.
    pub fn to_toml_redacted(&self) -> String {
        let mut top = Table::new();
        top.insert("node_id".into(), Value::String(self.node_id.clone()));
        top.insert(
            "interval".into(),
            Value::String(format_duration(self.interval)),
        );
        top.insert(
            "state_dir".into(),
            Value::String(self.state_dir.display().to_string()),
        );
        top.insert(
            "log_level".into(),
            Value::String(self.log_level.to_string().to_ascii_lowercase()),
        );

        let mut c = Table::new();
        c.insert(
            "top_processes".into(),
            Value::Integer(self.collect.top_processes as i64),
        );
        c.insert(
            "exclude_fs_types".into(),
            str_array(&self.collect.exclude_fs_types),
        );
        c.insert(
            "exclude_mounts".into(),
            str_array(&self.collect.exclude_mounts),
        );
        c.insert(
            "exclude_interfaces".into(),
            str_array(&self.collect.exclude_interfaces),
        );
        top.insert("collect".into(), Value::Table(c));

        let mut s = Table::new();
        s.insert("enabled".into(), Value::Boolean(self.stream.enabled));
        s.insert(
            "listen".into(),
            Value::String(self.stream.listen.to_string()),
        );
        s.insert(
            "max_clients".into(),
            Value::Integer(self.stream.max_clients as i64),
        );
        s.insert(
            "allowed_origins".into(),
            str_array(&self.stream.allowed_origins),
        );
        s.insert("token".into(), redact(&self.stream.token));
        top.insert("stream".into(), Value::Table(s));

        let mut q = Table::new();
        q.insert(
            "max_pending".into(),
            Value::Integer(self.queue.max_pending as i64),
        );
        q.insert(
            "max_dead".into(),
            Value::Integer(self.queue.max_dead as i64),
        );
        top.insert("queue".into(), Value::Table(q));

        let be = &self.backend;
        let mut b = Table::new();
        b.insert("url".into(), Value::String(be.url.clone()));
        let inline_token = if self.backend_token_from_file {
            ""
        } else {
            &be.token
        };
        b.insert("token".into(), redact(inline_token));
        let token_file = be
            .token_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        b.insert("token_file".into(), Value::String(token_file));
        b.insert("timeout".into(), Value::String(format_duration(be.timeout)));
        b.insert("batch_size".into(), Value::Integer(be.batch_size as i64));
        b.insert("gzip".into(), Value::Boolean(be.gzip));
        b.insert(
            "retry_backoff".into(),
            Value::Array(
                be.retry_backoff
                    .iter()
                    .map(|d| Value::String(format_duration(*d)))
                    .collect(),
            ),
        );
        b.insert(
            "max_retry_after".into(),
            Value::String(format_duration(be.max_retry_after)),
        );
        b.insert(
            "max_attempts".into(),
            Value::Integer(be.max_attempts as i64),
        );
        let ca = be
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        b.insert("ca_file".into(), Value::String(ca));
        top.insert("backend".into(), Value::Table(b));

        let origin = match &self.path {
            Some(p) => format!(
                "# metricsd effective configuration (from {})\n",
                p.display()
            ),
            None => "# metricsd effective configuration (built-in defaults)\n".to_string(),
        };
        origin + &toml::to_string_pretty(&top).unwrap_or_default()
    }

    /// Describes the keys that changed but only take effect after a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.stream.listen != new.stream.listen {
            keys.push("[stream] listen");
        }
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

/// The live configuration, swapped whole on SIGHUP; readers take a cheap Arc.
#[derive(Clone)]
pub struct SharedConfig(Arc<RwLock<Arc<Config>>>);

impl SharedConfig {
    pub fn new(config: Config) -> SharedConfig {
        SharedConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    pub fn get(&self) -> Arc<Config> {
        self.0.read().unwrap().clone()
    }

    pub fn set(&self, config: Config) {
        *self.0.write().unwrap() = Arc::new(config);
    }
}
