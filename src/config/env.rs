//! `METRICSD_<SECTION>_<KEY>` overrides (SPEC §2), laid over the file's
//! table before it is parsed. Which keys exist, and what kind of value each
//! takes, comes from the file form's defaults, so a new key needs no entry here.

use toml::{Table, Value};

use super::{key_label, ConfigError, ENV_CONFIG};

const ENV_PREFIX: &str = "METRICSD_";

/// What the environment changed: which keys (to name them in errors), and
/// the variables that named no key.
#[derive(Debug, Default)]
pub struct Overlay {
    origins: Vec<((String, String), String)>,
    pub warnings: Vec<String>,
}

impl Overlay {
    pub fn origin_of(&self, section: &str, key: &str) -> Option<String> {
        self.origins
            .iter()
            .find(|((s, k), _)| s == section && k == key)
            .map(|(_, o)| o.clone())
    }
}

/// Applies every `METRICSD_*` variable of `env` to `table`.
pub fn apply(
    table: &mut Table,
    schema: &Table,
    env: &[(String, String)],
) -> Result<Overlay, ConfigError> {
    let mut overlay = Overlay::default();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG {
            continue;
        }
        let origin = format!("environment {name}");
        let Some((section, key, default)) = target(rest, schema) else {
            // The environment is shared with other programs (SPEC §2).
            overlay
                .warnings
                .push(format!("{origin}: unknown configuration key, ignored"));
            continue;
        };
        let value = value_like(default, raw).map_err(|reason| ConfigError {
            origin: origin.clone(),
            key: key_label(&section, &key),
            reason,
        })?;
        let slot = if section.is_empty() {
            &mut *table
        } else {
            // check_sections has made sure a present section is a table.
            match table
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()))
            {
                Value::Table(t) => t,
                _ => unreachable!("sections are tables"),
            }
        };
        slot.insert(key.clone(), value);
        overlay.origins.push(((section, key), origin));
    }
    Ok(overlay)
}

/// For the `METRICSD_*` variables whose value is not UTF-8 (named here as
/// lossy text): one that names a key is an error, as a bad value is; one
/// that names none is ignored with a warning, like any other (SPEC §2).
pub fn check_unreadable(names: &[String], schema: &Table) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG {
            continue;
        }
        let origin = format!("environment {name}");
        match target(rest, schema) {
            Some((section, key, _)) => {
                return Err(ConfigError {
                    origin,
                    key: key_label(&section, &key),
                    reason: "not valid UTF-8".to_string(),
                })
            }
            None => warnings.push(format!("{origin}: unknown configuration key, ignored")),
        }
    }
    Ok(warnings)
}

/// Maps the part after `METRICSD_` to (section, key, the key's default).
fn target<'a>(rest: &str, schema: &'a Table) -> Option<(String, String, &'a Value)> {
    let lower = rest.to_ascii_lowercase();
    for (section, keys) in schema {
        let Value::Table(keys) = keys else { continue };
        if let Some(key) = lower.strip_prefix(&format!("{section}_")) {
            if let Some(default) = keys.get(key) {
                return Some((section.clone(), key.to_string(), default));
            }
        }
    }
    schema
        .get(&lower)
        .filter(|v| !v.is_table())
        .map(|v| (String::new(), lower.clone(), v))
}

/// Turns an environment string into a value of the default's kind. Lists
/// take TOML array syntax (`["a","b"]`) or a comma-separated list; tables
/// take TOML inline-table syntax (`{ env = "prod" }`). Durations are
/// strings here and parsed with the file's rules.
fn value_like(default: &Value, raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim();
    Ok(match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Integer(_) => match trimmed.parse::<i64>() {
            Ok(n) => Value::Integer(n),
            Err(_) => return Err(format!("expected an integer, got {raw:?}")),
        },
        Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => return Err(format!("expected true or false, got {raw:?}")),
        },
        Value::Array(_) if trimmed.starts_with('[') => {
            toml_value(trimmed).ok_or_else(|| format!("invalid list {raw:?}"))?
        }
        Value::Array(_) => Value::Array(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        // Tables hold header values, which are secrets: never quote the input.
        Value::Table(_) => toml_value(trimmed).filter(Value::is_table).ok_or_else(|| {
            "expected a TOML inline table such as { name = \"value\" } (value not shown)"
                .to_string()
        })?,
        other => unreachable!("no key defaults to {}", other.type_str()),
    })
}

fn toml_value(text: &str) -> Option<Value> {
    let mut doc: Table = format!("v = {text}").parse().ok()?;
    doc.remove("v")
}
