//! The one validation pass: the parsed file form becomes the typed
//! [`Config`], every range, name, URL and file checked, each error naming
//! where the value came from, the key and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{FileConfig, SinkFile};
use super::values::{
    check_header_name, check_header_value, check_host_name, check_label_name, check_url,
    format_duration,
};
use super::{
    default_state_dir, host_name, key_label, CollectConfig, Config, ConfigError, QueueConfig,
    SinkConfig, SinkKind, Splay, StreamConfig,
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Names the origin, section and key of every error it makes.
struct Section<'a> {
    name: &'a str,
    origin_of: &'a dyn Fn(&str, &str) -> String,
}

impl Section<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: (self.origin_of)(self.name, key),
            key: key_label(self.name, key),
            reason: reason.into(),
        }
    }

    fn int(&self, key: &str, value: i64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if value >= 0 && (value as u64) >= min && (value as u64) <= max {
            Ok(value as u64)
        } else {
            Err(self.err(key, format!("{value} is out of range ({min}..={max})")))
        }
    }

    fn duration(
        &self,
        key: &str,
        d: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
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

    fn globs(&self, key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
        for pattern in &list {
            glob::Pattern::new(pattern)
                .map_err(|e| self.err(key, format!("invalid pattern {pattern:?}: {e}")))?;
        }
        Ok(list)
    }

    /// `inline` or the trimmed contents of `file`, never both.
    fn secret_or_file(
        &self,
        (key, inline): (&str, String),
        (file_key, file): (&str, String),
    ) -> Result<(String, Option<PathBuf>), ConfigError> {
        if file.is_empty() {
            return Ok((inline, None));
        }
        if !inline.is_empty() {
            return Err(self.err(
                file_key,
                format!("set either {key} or {file_key}, not both"),
            ));
        }
        let contents = std::fs::read_to_string(&file)
            .map_err(|e| self.err(file_key, format!("cannot read {file}: {e}")))?;
        let secret = contents.trim().to_string();
        if secret.is_empty() {
            return Err(self.err(file_key, format!("{file} is empty")));
        }
        Ok((secret, Some(PathBuf::from(file))))
    }
}

pub fn build(
    file: FileConfig,
    origin_of: &dyn Fn(&str, &str) -> String,
) -> Result<Config, ConfigError> {
    let section = |name| Section { name, origin_of };
    let top = section("");

    let node_id = match file.node_id.0.trim() {
        "" => host_name(),
        _ => file.node_id.0,
    };
    let interval = top.duration("interval", file.interval.0, Duration::from_secs(1), HOUR)?;
    let state_dir = match file.state_dir.0.as_str() {
        "" => default_state_dir(),
        dir => PathBuf::from(dir),
    };
    let log_level_raw = file.log_level.0;
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
    let fc = file.collect;
    let collect = CollectConfig {
        top_processes: c.int("top_processes", fc.top_processes.0, 0, 1000)? as usize,
        exclude_fs_types: fc.exclude_fs_types.0,
        exclude_mounts: c.globs("exclude_mounts", fc.exclude_mounts.0)?,
        exclude_interfaces: c.globs("exclude_interfaces", fc.exclude_interfaces.0)?,
        units: c.globs("units", fc.units.0)?,
        top_units: c.int("top_units", fc.top_units.0, 0, 1000)? as usize,
    };

    let s = section("stream");
    let fs = file.stream;
    let listen_raw = fs.listen.0;
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        s.err(
            "listen",
            format!("invalid address {listen_raw:?}: expected IP:PORT such as \"127.0.0.1:8756\""),
        )
    })?;
    for host in &fs.allowed_hosts.0 {
        check_host_name(host).map_err(|r| s.err("allowed_hosts", r))?;
    }
    // Sent in an Authorization header or a query string: no client could.
    check_header_value("token", &fs.token.0).map_err(|_| s.err("token", UNSENDABLE_TOKEN))?;
    let stream = StreamConfig {
        enabled: fs.enabled.0,
        listen,
        max_clients: s.int("max_clients", fs.max_clients.0, 1, 100_000)? as usize,
        allowed_origins: fs.allowed_origins.0,
        allowed_hosts: fs.allowed_hosts.0,
        token: fs.token.0,
    };

    let q = section("queue");
    let fq = file.queue;
    let queue = QueueConfig {
        max_pending: q.int("max_pending", fq.max_pending.0, 1, 100_000_000)?,
        max_dead: q.int("max_dead", fq.max_dead.0, 0, 100_000_000)?,
        history: q.duration("history", fq.history.0, Duration::ZERO, 31 * DAY)?,
    };

    let backend = sink(&section(SinkKind::Backend.name()), file.backend.into())?;
    let remote_write = sink(
        &section(SinkKind::RemoteWrite.name()),
        file.remote_write.into(),
    )?;
    let otlp = sink(&section(SinkKind::Otlp.name()), file.otlp.into())?;

    Ok(Config {
        path: None,
        node_id,
        interval,
        state_dir,
        log_level,
        collect,
        stream,
        queue,
        backend,
        remote_write,
        otlp,
        warnings: Vec::new(),
    })
}

/// Why a token with control characters is refused.
const UNSENDABLE_TOKEN: &str =
    "the token holds control characters (a line break?), which no HTTP header can carry (value not shown)";

/// One sink section; keys the section does not have arrive as defaults.
fn sink(s: &Section, f: SinkFile) -> Result<SinkConfig, ConfigError> {
    let url = f.url.0.trim().to_string();
    if !url.is_empty() {
        check_url(&url).map_err(|r| s.err("url", r))?;
    }
    let (token, token_file) =
        s.secret_or_file(("token", f.token.0), ("token_file", f.token_file.0))?;
    // It goes into the Authorization header of every POST: one that cannot
    // would make every row fail, for a reason nobody would look for there.
    let token_key = if token_file.is_some() {
        "token_file"
    } else {
        "token"
    };
    check_header_value("token", &token).map_err(|_| s.err(token_key, UNSENDABLE_TOKEN))?;
    let (password, password_file) = s.secret_or_file(
        ("password", f.password.0),
        ("password_file", f.password_file.0),
    )?;
    let username = f.username.0;
    if username.is_empty() && !password.is_empty() {
        let key = if password_file.is_some() {
            "password_file"
        } else {
            "password"
        };
        return Err(s.err(key, "set username too (HTTP basic auth)"));
    }
    if !username.is_empty() && password.is_empty() {
        return Err(s.err("username", "set password or password_file too"));
    }
    if !username.is_empty() && !token.is_empty() {
        return Err(s.err(
            "username",
            "set either token (bearer) or username and password (basic), not both",
        ));
    }
    let ca_file = match f.ca_file.0.as_str() {
        "" => None,
        path => {
            // Read as the poster will, so that a file without certificates
            // (or a directory) is a configuration error, not a sink that
            // fails forever.
            let certs = crate::deliver::client::read_pem_certs(std::path::Path::new(path))
                .map_err(|e| s.err("ca_file", format!("cannot read {path}: {e}")))?;
            if certs.is_empty() {
                return Err(s.err("ca_file", format!("{path} holds no PEM certificate")));
            }
            Some(PathBuf::from(path))
        }
    };
    for d in &f.retry_backoff.0 {
        if d.is_zero() || *d > DAY {
            return Err(s.err(
                "retry_backoff",
                format!("{} is out of range (1ms..24h)", format_duration(*d)),
            ));
        }
    }
    let splay = match f.splay.0 {
        Splay::Auto => Splay::Auto,
        Splay::Fixed(d) => Splay::Fixed(s.duration("splay", d, Duration::ZERO, HOUR)?),
    };
    for (name, value) in &f.headers.0 {
        check_header_name(name).map_err(|r| s.err("headers", r))?;
        check_header_value(name, value).map_err(|r| s.err("headers", r))?;
    }
    for name in f.labels.0.keys() {
        check_label_name(name).map_err(|r| s.err("labels", r))?;
    }
    for (name, value) in &f.labels.0 {
        if value.is_empty() {
            return Err(s.err(
                "labels",
                format!("the value of {name:?} is empty (a label with an empty value is no label)"),
            ));
        }
    }
    for name in f.resource_attributes.0.keys() {
        if name.trim().is_empty() {
            return Err(s.err("resource_attributes", "attribute names must not be empty"));
        }
    }
    Ok(SinkConfig {
        url,
        token,
        token_file,
        timeout: s.duration("timeout", f.timeout.0, Duration::from_millis(1), HOUR)?,
        batch_size: s.int("batch_size", f.batch_size.0, 1, 10_000)? as usize,
        gzip: f.gzip.0,
        retry_backoff: f.retry_backoff.0,
        max_retry_after: s.duration(
            "max_retry_after",
            f.max_retry_after.0,
            Duration::ZERO,
            7 * DAY,
        )?,
        max_attempts: s.int("max_attempts", f.max_attempts.0, 1, 1000)? as u32,
        ca_file,
        splay,
        max_age: s.duration("max_age", f.max_age.0, Duration::ZERO, 365 * DAY)?,
        username,
        password,
        password_file,
        headers: f.headers.0,
        labels: f.labels.0,
        resource_attributes: f.resource_attributes.0,
    })
}
