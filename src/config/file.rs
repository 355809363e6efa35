//! The file form of the configuration: one serde struct per section, unknown
//! keys denied, every key defaulted. The same structs print the effective
//! configuration (`check-config`), secrets redacted by their types.

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::values::{
    url_for_display, Dur, DurList, Flag, Int, Secret, SecretMap, SplayValue, Text, TextList,
    TextMap,
};
use super::{key_label, CollectConfig, Config, ConfigError, QueueConfig, SinkConfig, StreamConfig};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub node_id: Text,
    pub interval: Dur,
    pub state_dir: Text,
    pub log_level: Text,
    pub collect: CollectFile,
    pub stream: StreamFile,
    pub queue: QueueFile,
    pub backend: BackendFile,
    pub remote_write: RemoteWriteFile,
    pub otlp: OtlpFile,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectFile {
    pub top_processes: Int,
    pub exclude_fs_types: TextList,
    pub exclude_mounts: TextList,
    pub exclude_interfaces: TextList,
    pub units: TextList,
    pub top_units: Int,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamFile {
    pub enabled: Flag,
    pub listen: Text,
    pub max_clients: Int,
    pub allowed_origins: TextList,
    pub allowed_hosts: TextList,
    pub token: Secret,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueFile {
    pub max_pending: Int,
    pub max_dead: Int,
    pub history: Dur,
}

/// Every delivery key of `[backend]`, given once: `$then!` receives them
/// (as `[key: Type, ...]`) followed by `$args`.
macro_rules! with_sink_keys {
    ($then:ident! $($args:tt)*) => {
        $then! {
            [
                url: Text,
                token: Secret,
                token_file: Text,
                timeout: Dur,
                batch_size: Int,
                gzip: Flag,
                retry_backoff: DurList,
                max_retry_after: Dur,
                max_attempts: Int,
                ca_file: Text,
                splay: SplayValue,
                max_age: Dur,
            ]
            $($args)*
        }
    };
}

/// `SinkFile`: every delivery key plus every extra key of any sink section.
macro_rules! sink_file {
    ([$($key:ident : $kty:ty),* $(,)?] { $($extra:ident : $ety:ty),* $(,)? }) => {
        /// Every key a sink section may hold, whichever section it came from; the
        /// keys a section lacks keep their defaults.
        #[derive(Debug, Default)]
        pub struct SinkFile {
            $(pub $key: $kty,)*
            $(pub $extra: $ety,)*
        }
    };
}

with_sink_keys!(sink_file! {
    username: Text,
    password: Secret,
    password_file: Text,
    headers: SecretMap,
    labels: TextMap,
    resource_attributes: TextMap,
});

fn path_text(p: &Option<std::path::PathBuf>) -> Text {
    Text(
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    )
}

impl SinkFile {
    /// The file form of `s`; a secret read from a file is not shown at all.
    fn from_sink(s: &SinkConfig) -> SinkFile {
        let inline = |value: &str, file: &Option<std::path::PathBuf>| {
            Secret(if file.is_some() {
                String::new()
            } else {
                value.to_string()
            })
        };
        SinkFile {
            // A password in the URL's userinfo is a secret too.
            url: Text(url_for_display(&s.url)),
            token: inline(&s.token, &s.token_file),
            token_file: path_text(&s.token_file),
            timeout: Dur(s.timeout),
            batch_size: Int(s.batch_size as i64),
            gzip: Flag(s.gzip),
            retry_backoff: DurList(s.retry_backoff.clone()),
            max_retry_after: Dur(s.max_retry_after),
            max_attempts: Int(s.max_attempts as i64),
            ca_file: path_text(&s.ca_file),
            splay: SplayValue(s.splay),
            max_age: Dur(s.max_age),
            username: Text(s.username.clone()),
            password: inline(&s.password, &s.password_file),
            password_file: path_text(&s.password_file),
            headers: SecretMap(s.headers.clone()),
            labels: TextMap(s.labels.clone()),
            resource_attributes: TextMap(s.resource_attributes.clone()),
        }
    }
}

/// A sink section's struct: every delivery key of `[backend]` plus `extra`.
/// Adding a sink is one line here.
macro_rules! sink_section {
    ($name:ident { $($extra:ident : $ty:ty),* $(,)? }) => {
        with_sink_keys!(sink_section_with! $name { $($extra: $ty),* });
    };
}

macro_rules! sink_section_with {
    ([$($key:ident : $kty:ty),* $(,)?] $name:ident { $($extra:ident : $ty:ty),* }) => {
        #[derive(Debug, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(pub $key: $kty,)*
            $(pub $extra: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name::from(SinkFile::from_sink(&SinkConfig::default()))
            }
        }

        impl From<SinkFile> for $name {
            fn from(f: SinkFile) -> Self {
                $name {
                    $($key: f.$key,)*
                    $($extra: f.$extra,)*
                }
            }
        }

        impl From<$name> for SinkFile {
            fn from(s: $name) -> Self {
                SinkFile {
                    $($key: s.$key,)*
                    $($extra: s.$extra,)*
                    ..SinkFile::default()
                }
            }
        }
    };
}

sink_section!(BackendFile {});
sink_section!(RemoteWriteFile {
    username: Text,
    password: Secret,
    password_file: Text,
    headers: SecretMap,
    labels: TextMap,
});
sink_section!(OtlpFile {
    username: Text,
    password: Secret,
    password_file: Text,
    headers: SecretMap,
    resource_attributes: TextMap,
});

impl Default for CollectFile {
    fn default() -> Self {
        CollectFile::from_collect(&CollectConfig::default())
    }
}

impl CollectFile {
    fn from_collect(c: &CollectConfig) -> Self {
        CollectFile {
            top_processes: Int(c.top_processes as i64),
            exclude_fs_types: TextList(c.exclude_fs_types.clone()),
            exclude_mounts: TextList(c.exclude_mounts.clone()),
            exclude_interfaces: TextList(c.exclude_interfaces.clone()),
            units: TextList(c.units.clone()),
            top_units: Int(c.top_units as i64),
        }
    }
}

impl Default for StreamFile {
    fn default() -> Self {
        StreamFile::from_stream(&StreamConfig::default())
    }
}

impl StreamFile {
    fn from_stream(s: &StreamConfig) -> Self {
        StreamFile {
            enabled: Flag(s.enabled),
            listen: Text(s.listen.to_string()),
            max_clients: Int(s.max_clients as i64),
            allowed_origins: TextList(s.allowed_origins.clone()),
            allowed_hosts: TextList(s.allowed_hosts.clone()),
            token: Secret(s.token.clone()),
        }
    }
}

impl Default for QueueFile {
    fn default() -> Self {
        QueueFile::from_queue(&QueueConfig::default())
    }
}

impl QueueFile {
    fn from_queue(q: &QueueConfig) -> Self {
        QueueFile {
            max_pending: Int(q.max_pending as i64),
            max_dead: Int(q.max_dead as i64),
            history: Dur(q.history),
        }
    }
}

impl Default for FileConfig {
    /// The file's defaults: node_id and state_dir empty (resolved later).
    fn default() -> Self {
        FileConfig {
            node_id: Text::default(),
            interval: Dur(std::time::Duration::from_secs(60)),
            state_dir: Text::default(),
            log_level: Text("info".to_string()),
            collect: CollectFile::default(),
            stream: StreamFile::default(),
            queue: QueueFile::default(),
            backend: BackendFile::default(),
            remote_write: RemoteWriteFile::default(),
            otlp: OtlpFile::default(),
        }
    }
}

impl FileConfig {
    /// The file form of an effective configuration (resolved values).
    pub fn from_config(c: &Config) -> FileConfig {
        FileConfig {
            node_id: Text(c.node_id.clone()),
            interval: Dur(c.interval),
            // Resolved (SPEC §2): a relative one as the directory it names
            // from where this process started.
            state_dir: Text(
                std::path::absolute(&c.state_dir)
                    .unwrap_or_else(|_| c.state_dir.clone())
                    .display()
                    .to_string(),
            ),
            log_level: Text(c.log_level.to_string().to_ascii_lowercase()),
            collect: CollectFile::from_collect(&c.collect),
            stream: StreamFile::from_stream(&c.stream),
            queue: QueueFile::from_queue(&c.queue),
            backend: SinkFile::from_sink(&c.backend).into(),
            remote_write: SinkFile::from_sink(&c.remote_write).into(),
            otlp: SinkFile::from_sink(&c.otlp).into(),
        }
    }

    /// Every key with its default, as TOML values: what the environment may
    /// override and what kind of value each key takes.
    pub fn schema() -> Table {
        match Value::try_from(FileConfig::default()) {
            Ok(Value::Table(t)) => t,
            _ => unreachable!("the file form serializes to a table"),
        }
    }

    /// Reads the file form out of `table`; errors name the key (and its
    /// origin, through `origin_of`) as the hand-written schema did.
    pub fn parse(
        table: Table,
        origin_of: &dyn Fn(&str, &str) -> String,
        file_origin: &str,
    ) -> Result<FileConfig, ConfigError> {
        let sections: Vec<(String, bool)> = table
            .iter()
            .map(|(k, v)| (k.clone(), v.is_table()))
            .collect();
        serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let segments: Vec<String> = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                })
                .collect();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            let unknown = message.starts_with("unknown field");
            let reason = if unknown {
                "unknown key".to_string()
            } else {
                message
            };
            match segments.as_slice() {
                [] => ConfigError {
                    origin: file_origin.to_string(),
                    key: String::new(),
                    reason,
                },
                [top] => {
                    let is_table = sections.iter().any(|(k, t)| k == top && *t);
                    ConfigError {
                        origin: origin_of("", top),
                        key: if unknown && is_table {
                            format!("[{top}]")
                        } else {
                            top.clone()
                        },
                        reason,
                    }
                }
                [section, key, rest @ ..] => {
                    let mut label = key_label(section, key);
                    for part in rest {
                        label.push('.');
                        label.push_str(part);
                    }
                    ConfigError {
                        origin: origin_of(section, key),
                        key: label,
                        reason,
                    }
                }
            }
        })
    }

    /// The effective configuration as TOML text: top-level keys, then one
    /// `[section]` each, maps inline (`headers = { ... }`).
    pub fn to_toml(&self) -> String {
        let table = match Value::try_from(self) {
            Ok(Value::Table(t)) => t,
            _ => unreachable!("the file form serializes to a table"),
        };
        let mut out = String::new();
        for (key, value) in table.iter().filter(|(_, v)| !v.is_table()) {
            out.push_str(&format!("{key} = {value}\n"));
        }
        for (name, section) in table.iter() {
            let Value::Table(section) = section else {
                continue;
            };
            out.push_str(&format!("\n[{name}]\n"));
            for (key, value) in section {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }
}

/// A section of the schema given as anything but a table.
pub fn check_sections(table: &Table, schema: &Table, origin: &str) -> Result<(), ConfigError> {
    for (key, value) in table {
        if schema.get(key).is_some_and(Value::is_table) && !value.is_table() {
            return Err(ConfigError {
                origin: origin.to_string(),
                key: key.clone(),
                reason: "must be a table ([section])".to_string(),
            });
        }
    }
    Ok(())
}
