//! The value types of the file form. Each reads a TOML value and says what
//! was wrong with today's wording; secret ones never repeat what they were given.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Value;

use super::Splay;

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
            let d = humantime::parse_duration(t).map_err(|_| format!("invalid duration {s:?}"))?;
            // Durations are kept and printed in whole milliseconds: a finer
            // one would print as another value (500us as 0s).
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(format!("invalid duration {s:?}: the smallest unit is 1ms"));
            }
            Ok(d)
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

fn custom<'de, D: Deserializer<'de>>(reason: String) -> D::Error {
    D::Error::custom(reason)
}

/// A string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            v => Err(custom::<D>(format!("expected a string, got {v}"))),
        }
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A string that is never printed: errors leave it out and the effective
/// configuration shows `<redacted>` for it.
#[derive(Clone, Default, PartialEq)]
pub struct Secret(pub String);

pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Secret(s)),
            v => Err(custom::<D>(format!(
                "expected a string, got {} (value not shown)",
                v.type_str()
            ))),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

/// true or false.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Boolean(b) => Ok(Flag(b)),
            v => Err(custom::<D>(format!("expected true or false, got {v}"))),
        }
    }
}

impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(self.0)
    }
}

/// An integer; its range is checked by the validation pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Integer(n) => Ok(Int(n)),
            v => Err(custom::<D>(format!("expected an integer, got {v}"))),
        }
    }
}

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// A duration: a string such as `"60s"` or integer seconds; printed as a string.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_duration(&Value::deserialize(d)?)
            .map(Dur)
            .map_err(custom::<D>)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

/// A list of strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct TextList(pub Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(custom::<D>(format!(
                        "expected a list of strings, found {other}"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(TextList),
            v => Err(custom::<D>(format!("expected a list of strings, got {v}"))),
        }
    }
}

/// A non-empty list of durations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurList(pub Vec<Duration>);

impl<'de> Deserialize<'de> for DurList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(parse_duration)
                .collect::<Result<_, _>>()
                .map(DurList)
                .map_err(custom::<D>),
            _ => Err(custom::<D>(
                "expected a non-empty list of durations".to_string(),
            )),
        }
    }
}

impl Serialize for DurList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|d| format_duration(*d)))
    }
}

/// `"auto"` or a duration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SplayValue(pub Splay);

impl<'de> Deserialize<'de> for SplayValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s.trim() == "auto" => Ok(SplayValue(Splay::Auto)),
            v => parse_duration(&v)
                .map(|d| SplayValue(Splay::Fixed(d)))
                .map_err(|_| custom::<D>(format!("invalid splay {v}: expected \"auto\" or a duration such as \"0s\" or \"5s\""))),
        }
    }
}

impl Serialize for SplayValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Splay::Auto => s.serialize_str("auto"),
            Splay::Fixed(d) => s.serialize_str(&format_duration(d)),
        }
    }
}

/// A table of strings, such as `labels = { env = "prod" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct TextMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for TextMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_table::<D>(Value::deserialize(d)?, |name, v| {
            format!("the value of {name:?} must be a string, got {v}")
        })
        .map(TextMap)
    }
}

/// A table of secret strings (`headers`): values are never printed.
#[derive(Clone, Default, PartialEq)]
pub struct SecretMap(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

impl<'de> Deserialize<'de> for SecretMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_table::<D>(Value::deserialize(d)?, |name, v| {
            format!(
                "the value of {name:?} must be a string, got {} (value not shown)",
                v.type_str()
            )
        })
        .map(SecretMap)
    }
}

impl Serialize for SecretMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.keys().map(|k| (k, REDACTED)))
    }
}

fn string_table<'de, D: Deserializer<'de>>(
    value: Value,
    bad_value: impl Fn(&str, &Value) -> String,
) -> Result<BTreeMap<String, String>, D::Error> {
    let Value::Table(table) = value else {
        return Err(custom::<D>(format!(
            "expected a table such as {{ name = \"value\" }}, got {}",
            value.type_str()
        )));
    };
    table
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(custom::<D>(bad_value(&k, &other))),
        })
        .collect()
}

/// The URL with any password in its userinfo replaced, for messages.
pub fn url_for_display(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            // No scheme but something like userinfo: show none of it.
            Some((_, host)) => format!("{REDACTED}@{host}"),
            None => url.to_string(),
        };
    };
    let mut authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // A password holding '/', '?' or '#' (invalid, and refused, but never
    // to be echoed): the authority then seems to end inside it, with a
    // "port" that is no number. Take everything up to the '@' as userinfo.
    let authority = &rest[..authority_end];
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, r)| r);
    let seems_cut = after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.bytes().all(|b| b.is_ascii_digit()));
    if seems_cut && !rest[..authority_end].contains('@') {
        if let Some(at) = rest.find('@') {
            authority_end = rest[at..]
                .find(['/', '?', '#'])
                .map_or(rest.len(), |i| at + i);
        }
    }
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:{REDACTED}")
            } else {
                REDACTED.to_string()
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// An http or https URL with a host. Messages show the URL without its password.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = url_for_display(url);
    let uri: ureq::http::Uri = url.parse().map_err(|e| {
        // The parser's own message can quote the input: keep it only when
        // there is no userinfo in the input to leak.
        if shown == url {
            format!("invalid URL {shown:?}: {e}")
        } else {
            format!("invalid URL {shown:?}")
        }
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "invalid URL {shown:?}: the scheme must be http or https"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {shown:?}: no host"));
    }
    // The parser takes any run of digits (and more) as a port; past 65535
    // it would wrap. The port is not quoted: with a password holding a
    // '/', what looks like the port is part of the password.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = host_port
        .rsplit_once(']')
        .map_or(host_port, |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if !port.is_empty() && port.parse::<u16>().is_err() {
            return Err(format!(
                "invalid URL {shown:?}: the port is not a number from 0 to 65535"
            ));
        }
    }
    Ok(())
}

/// Prometheus label-name syntax, minus the names metricsd sets or reserves.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid label name {name:?}: expected [a-zA-Z_][a-zA-Z0-9_]*"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "invalid label name {name:?}: names starting with __ are reserved"
        ));
    }
    if name == "instance" || name == "machine_id" {
        return Err(format!(
            "label {name:?} is set by metricsd itself and cannot be overridden"
        ));
    }
    Ok(())
}

/// An HTTP header name: a token of RFC 9110 §5.6.2.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok(())
}

/// A header value that can be sent: visible ASCII, spaces and tabs (no CR/LF).
pub fn check_header_value(name: &str, value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "the value of {name:?} holds control characters (value not shown)"
        ));
    }
    Ok(())
}

/// A name for the Host header: letters, digits, `-`, `.` (no port, no scheme).
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "invalid host name {name:?}: expected a DNS name such as \"metrics.example.com\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_finer_than_a_millisecond_are_refused() {
        let d = |s: &str| parse_duration(&Value::String(s.to_string()));
        assert_eq!(d("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(d("500us").unwrap_err().contains("1ms"));
        assert!(d("1ms 5us").is_err());
    }

    #[test]
    fn ports_past_65535_and_passwords_with_slashes_are_refused_unechoed() {
        assert!(check_url("http://example.com:65535/x").is_ok());
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("http://[::1]/users/@me").is_ok());
        let err = check_url("http://example.com:99999/x").unwrap_err();
        assert!(err.contains("port"), "{err}");
        for url in [
            "https://user:hunter/2@host/x",
            "https://user:hun?ter2@host/x",
        ] {
            let err = check_url(url).unwrap_err();
            assert!(!err.contains("hunter") && !err.contains("hun?ter"), "{err}");
            assert!(
                !url_for_display(url).contains("hun"),
                "{}",
                url_for_display(url)
            );
        }
        assert_eq!(
            url_for_display("http://[::1]/users/@me"),
            "http://[::1]/users/@me"
        );
    }

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            url_for_display("https://user:pw@host/x"),
            "https://user:<redacted>@host/x"
        );
        assert_eq!(
            url_for_display("https://tok@host"),
            "https://<redacted>@host"
        );
        assert_eq!(url_for_display("https://host/a@b"), "https://host/a@b");
        assert_eq!(url_for_display("user:pw@host"), "<redacted>@host");
    }

    #[test]
    fn label_and_header_names() {
        assert!(check_label_name("env").is_ok());
        assert!(check_label_name("_x1").is_ok());
        for bad in ["", "1a", "a-b", "__x", "instance", "machine_id"] {
            assert!(check_label_name(bad).is_err(), "{bad}");
        }
        assert!(check_header_name("X-Scope-OrgID").is_ok());
        for bad in ["", "a b", "a:b", "é"] {
            assert!(check_header_name(bad).is_err(), "{bad}");
        }
        assert!(check_header_value("a", "x\r\ny").is_err());
        assert!(check_header_value("a", "x\ty z").is_ok());
    }
}
