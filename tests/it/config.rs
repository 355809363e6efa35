//! Configuration loading: defaults, overrides, validation messages.

use metricsd::config::{format_duration, load_from, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("metricsd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn error_of(text: &str, vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    let err = load_from(Some(&path), &env(vars)).unwrap_err();
    err.to_string().replace(&path.display().to_string(), "FILE")
}

#[test]
fn no_file_gives_the_built_in_defaults() {
    let config = load_from(None, &[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.interval, Duration::from_secs(60));
    assert_eq!(config.stream.listen.to_string(), "127.0.0.1:8756");
    assert_eq!(config.stream.max_clients, 64);
    assert_eq!(config.queue.max_pending, 10080);
    assert_eq!(config.queue.max_dead, 1000);
    assert_eq!(config.backend.timeout, Duration::from_secs(10));
    assert_eq!(config.backend.batch_size, 1);
    assert_eq!(config.backend.max_attempts, 3);
    assert_eq!(config.backend.max_retry_after, Duration::from_secs(3600));
    assert_eq!(config.collect.top_processes, 5);
    assert!(config
        .collect
        .exclude_interfaces
        .contains(&"lo".to_string()));
    assert!(
        !config.node_id.is_empty(),
        "node_id defaults to the host name"
    );
}

#[test]
fn durations_take_strings_and_integer_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "interval = 5\n[backend]\ntimeout = \"500ms\"\nretry_backoff = [\"1s\", 2, \"5m\"]\n",
    );
    let config = load_from(Some(&path), &[]).unwrap();
    assert_eq!(config.interval, Duration::from_secs(5));
    assert_eq!(config.backend.timeout, Duration::from_millis(500));
    assert_eq!(
        config.backend.retry_backoff,
        vec![
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(300)
        ]
    );
    assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(format_duration(Duration::from_secs(60)), "60s");
    assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
}

#[test]
fn errors_name_the_file_the_key_and_the_reason() {
    assert_eq!(
        error_of("[backend]\ntimeout = \"ten\"\n", &[]),
        "FILE: [backend] timeout: invalid duration \"ten\""
    );
    assert_eq!(
        error_of("interval = \"0s\"\n", &[]),
        "FILE: interval: 0s is out of range (1s..1h)"
    );
    assert_eq!(
        error_of("interval = \"2h\"\n", &[]),
        "FILE: interval: 2h is out of range (1s..1h)"
    );
    assert_eq!(error_of("colour = 1\n", &[]), "FILE: colour: unknown key");
    assert_eq!(
        error_of("[stream]\nlisen = \"x\"\n", &[]),
        "FILE: [stream] lisen: unknown key"
    );
    assert_eq!(
        error_of("[extra]\na = 1\n", &[]),
        "FILE: [extra]: unknown key"
    );
    assert!(error_of("[stream]\nlisten = \"localhost\"\n", &[])
        .starts_with("FILE: [stream] listen: invalid address \"localhost\""));
    assert!(error_of("[backend]\nurl = \"ftp://x\"\n", &[])
        .starts_with("FILE: [backend] url: invalid URL \"ftp://x\""));
    assert!(error_of("[backend]\nurl = \"not a url\"\n", &[]).starts_with("FILE: [backend] url:"));
    assert_eq!(
        error_of("[backend]\nbatch_size = 0\n", &[]),
        "FILE: [backend] batch_size: 0 is out of range (1..=10000)"
    );
    assert_eq!(
        error_of("[stream]\nmax_clients = \"many\"\n", &[]),
        "FILE: [stream] max_clients: expected an integer, got \"many\""
    );
    assert!(error_of("log_level = \"loud\"\n", &[]).starts_with("FILE: log_level: invalid level"));
    assert!(error_of("interval = \n", &[]).starts_with("FILE: invalid TOML"));
    assert!(error_of("[collect]\nexclude_mounts = [\"[oops\"]\n", &[])
        .starts_with("FILE: [collect] exclude_mounts: invalid pattern"));
}

#[test]
fn environment_overrides_win_and_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "interval = \"30s\"\n[backend]\nurl = \"http://a.example/x\"\n",
    );
    let config = load_from(
        Some(&path),
        &env(&[
            ("METRICSD_INTERVAL", "5s"),
            ("METRICSD_BACKEND_URL", "https://b.example/api"),
            ("METRICSD_BACKEND_MAX_RETRY_AFTER", "120"),
            ("METRICSD_COLLECT_EXCLUDE_INTERFACES", "lo, eth9"),
            (
                "METRICSD_STREAM_ALLOWED_ORIGINS",
                "[\"http://a\", \"http://b\"]",
            ),
            ("METRICSD_STREAM_ENABLED", "false"),
            ("METRICSD_LOG_LEVEL", "debug"),
            ("METRICSD_CONFIG", "/ignored/here"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.interval, Duration::from_secs(5));
    assert_eq!(config.backend.url, "https://b.example/api");
    assert_eq!(config.backend.max_retry_after, Duration::from_secs(120));
    assert_eq!(config.collect.exclude_interfaces, vec!["lo", "eth9"]);
    assert_eq!(config.stream.allowed_origins, vec!["http://a", "http://b"]);
    assert!(!config.stream.enabled);
    assert_eq!(config.log_level, log::LevelFilter::Debug);

    assert_eq!(
        error_of("", &[("METRICSD_BACKEND_TIMEOUT", "ten")]),
        "environment METRICSD_BACKEND_TIMEOUT: [backend] timeout: invalid duration \"ten\""
    );
    assert_eq!(
        error_of("", &[("METRICSD_QUEUE_MAX_PENDING", "lots")]),
        "environment METRICSD_QUEUE_MAX_PENDING: [queue] max_pending: expected an integer, got \"lots\""
    );
}

#[test]
fn unknown_environment_variables_are_ignored_with_one_warning_each() {
    let config = load_from(
        None,
        &env(&[
            ("METRICSD_NOPE", "1"),
            ("METRICSD_BACKEND_COLOUR", "red"),
            ("METRICSD_INTERVAL", "5s"),
        ]),
    )
    .unwrap();
    assert_eq!(config.interval, Duration::from_secs(5));
    assert_eq!(
        config.warnings(),
        vec![
            "environment METRICSD_NOPE: unknown configuration key, ignored",
            "environment METRICSD_BACKEND_COLOUR: unknown configuration key, ignored",
        ]
    );
    assert!(load_from(None, &[]).unwrap().warnings().is_empty());
}

#[test]
fn a_duplicate_key_is_named_and_its_values_are_not() {
    assert_eq!(
        error_of("interval = 60\ninterval = 30\n", &[]),
        "FILE: invalid TOML at line 2, column 1: duplicate key `interval`"
    );
    let token = error_of("[backend]\ntoken = \"first\"\ntoken = \"s3cret\"\n", &[]);
    assert!(token.ends_with("duplicate key `token`"), "{token}");
    assert!(
        !token.contains("s3cret") && !token.contains("first"),
        "{token}"
    );
    let table = error_of("[backend]\n[backend]\n", &[]);
    assert!(table.ends_with("duplicate key `backend`"), "{table}");
}

#[test]
fn token_file_is_read_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let path = write(
        dir.path(),
        &format!(
            "[backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken_file = {:?}\n[stream]\ntoken = \"stream-secret\"\n",
            token_path.display().to_string()
        ),
    );
    let config = load_from(Some(&path), &[]).unwrap();
    assert_eq!(config.backend.bearer_token(), Some("s3cret-token"));
    let printed = config.to_toml_redacted();
    assert!(!printed.contains("s3cret-token"));
    assert!(!printed.contains("stream-secret"));
    assert!(printed.contains("token = \"<redacted>\""));
    // The printed configuration is itself a valid file with the same meaning.
    let again = write(dir.path(), &printed);
    let reparsed = load_from(Some(&again), &[]).unwrap();
    assert_eq!(reparsed.interval, config.interval);
    assert_eq!(reparsed.backend.token_file, config.backend.token_file);

    let both = error_of(
        &format!(
            "[backend]\ntoken = \"a\"\ntoken_file = {:?}\n",
            token_path.display().to_string()
        ),
        &[],
    );
    assert_eq!(
        both,
        "FILE: [backend] token_file: set either token or token_file, not both"
    );
    assert!(
        error_of("[backend]\ntoken_file = \"/nonexistent/t\"\n", &[])
            .starts_with("FILE: [backend] token_file: cannot read /nonexistent/t")
    );

    // A token no HTTP header can carry would fail every POST: refused at
    // load, naming the key it came from, never showing it.
    std::fs::write(&token_path, "two\nlines\n").unwrap();
    let from_file = error_of(
        &format!(
            "[backend]\ntoken_file = {:?}\n",
            token_path.display().to_string()
        ),
        &[],
    );
    assert!(
        from_file.starts_with("FILE: [backend] token_file: the token holds control characters")
            && !from_file.contains("lines"),
        "{from_file}"
    );
    let inline = error_of("[otlp]\ntoken = \"a\\rb\"\n", &[]);
    assert!(
        inline.starts_with("FILE: [otlp] token: the token holds control characters"),
        "{inline}"
    );
    let stream = error_of("[stream]\ntoken = \"a\\u0000b\"\n", &[]);
    assert!(
        stream.starts_with("FILE: [stream] token: the token holds control characters"),
        "{stream}"
    );
}

#[test]
fn state_dir_follows_the_file_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "state_dir = \"/srv/metricsd\"\n");
    let config = load_from(Some(&path), &[]).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/srv/metricsd"));
    assert!(config
        .to_toml_redacted()
        .contains("state_dir = \"/srv/metricsd\""));
}

// --- the keys SPEC §2 added: sinks, units, allowed_hosts, history -------------

use metricsd::config::{SinkConfig, SinkKind, Splay};
use std::collections::BTreeMap;

fn load_text(text: &str, vars: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    load_from(Some(&path), &env(vars)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn new_keys_have_their_spec_defaults() {
    let config = load_from(None, &[]).unwrap();
    assert_eq!(config.collect.units, vec!["*.service"]);
    assert_eq!(config.collect.top_units, 10);
    assert!(config.stream.allowed_hosts.is_empty());
    assert_eq!(config.queue.history, Duration::from_secs(24 * 3600));
    for kind in SinkKind::ALL {
        let sink = config.sink(kind);
        assert!(!sink.enabled(), "{kind:?} is off without a url");
        assert_eq!(sink.splay, Splay::Auto, "{kind:?}");
        assert_eq!(sink.max_age, Duration::ZERO, "{kind:?}");
        assert_eq!(sink.timeout, Duration::from_secs(10), "{kind:?}");
        assert_eq!(sink.batch_size, 1, "{kind:?}");
        assert_eq!(sink.max_attempts, 3, "{kind:?}");
        assert!(sink.username.is_empty() && sink.password.is_empty());
        assert!(sink.headers.is_empty() && sink.labels.is_empty());
        assert!(sink.resource_attributes.is_empty());
        assert_eq!(sink.basic_auth(), None);
        assert_eq!(sink.bearer_token(), None);
    }
    assert!(config.sinks().is_empty());
}

#[test]
fn sink_kinds_have_their_section_names() {
    let names: Vec<&str> = SinkKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["backend", "remote_write", "otlp"]);
    for kind in SinkKind::ALL {
        assert_eq!(SinkKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(SinkKind::from_name("stream"), None);
    assert_eq!(SinkKind::from_name("Backend"), None);
}

#[test]
fn sink_sections_read_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pw");
    std::fs::write(&password_file, "  file-pw\n").unwrap();
    let config = load_text(
        &format!(
            "[collect]\nunits = [\"nginx.service\", \"*.scope\"]\ntop_units = 3\n\
             [stream]\nallowed_hosts = [\"metrics.example.com\"]\n\
             [queue]\nhistory = \"0s\"\n\
             [backend]\nurl = \"http://127.0.0.1:9/x\"\nsplay = \"0s\"\nmax_age = \"2h\"\n\
             [remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nbatch_size = 50\n\
             username = \"u1\"\npassword = \"p1\"\nsplay = 7\n\
             headers = {{ \"X-Scope-OrgID\" = \"tenant-1\" }}\nlabels = {{ env = \"prod\", dc = \"eu1\" }}\n\
             [otlp]\nurl = \"https://collector.example.com:4318/v1/metrics\"\ngzip = true\n\
             username = \"u2\"\npassword_file = {:?}\n\
             resource_attributes = {{ \"deployment.environment\" = \"prod\" }}\n",
            password_file.display().to_string()
        ),
        &[],
    );
    assert_eq!(config.collect.units, vec!["nginx.service", "*.scope"]);
    assert_eq!(config.collect.top_units, 3);
    assert_eq!(config.stream.allowed_hosts, vec!["metrics.example.com"]);
    assert_eq!(config.queue.history, Duration::ZERO);
    assert_eq!(config.backend.splay, Splay::Fixed(Duration::ZERO));
    assert_eq!(config.backend.max_age, Duration::from_secs(7200));
    let rw = &config.remote_write;
    assert_eq!(rw.batch_size, 50);
    assert_eq!(rw.splay, Splay::Fixed(Duration::from_secs(7)));
    assert_eq!(rw.basic_auth(), Some(("u1".to_string(), "p1".to_string())));
    assert_eq!(rw.headers, map(&[("X-Scope-OrgID", "tenant-1")]));
    assert_eq!(rw.labels, map(&[("env", "prod"), ("dc", "eu1")]));
    let otlp = &config.otlp;
    assert!(otlp.gzip);
    assert_eq!(
        otlp.basic_auth(),
        Some(("u2".to_string(), "file-pw".to_string()))
    );
    assert_eq!(otlp.password_file.as_deref(), Some(password_file.as_path()));
    assert_eq!(
        otlp.resource_attributes,
        map(&[("deployment.environment", "prod")])
    );
    let enabled: Vec<SinkKind> = config.sinks().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        enabled,
        [SinkKind::Backend, SinkKind::RemoteWrite, SinkKind::Otlp]
    );
    let only_otlp = load_text("[otlp]\nurl = \"http://127.0.0.1:9/v1/metrics\"\n", &[]);
    let sinks = only_otlp.sinks();
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0].0, SinkKind::Otlp);
    assert!(std::ptr::eq(sinks[0].1, &only_otlp.otlp));
}

#[test]
fn bad_values_of_the_new_keys_name_file_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[collect]\nunits = \"*.service\"\n",
            "FILE: [collect] units: expected a list of strings, got \"*.service\"",
        ),
        (
            "[collect]\nunits = [\"[oops\"]\n",
            "FILE: [collect] units: invalid pattern \"[oops\"",
        ),
        (
            "[collect]\ntop_units = -1\n",
            "FILE: [collect] top_units: -1 is out of range (0..=1000)",
        ),
        (
            "[collect]\ntop_units = \"ten\"\n",
            "FILE: [collect] top_units: expected an integer, got \"ten\"",
        ),
        (
            "[stream]\nallowed_hosts = [\"http://x/\"]\n",
            "FILE: [stream] allowed_hosts: invalid host name \"http://x/\"",
        ),
        (
            "[stream]\nallowed_hosts = [1]\n",
            "FILE: [stream] allowed_hosts: expected a list of strings, found 1",
        ),
        (
            "[queue]\nhistory = \"forever\"\n",
            "FILE: [queue] history: invalid duration \"forever\"",
        ),
        (
            "[queue]\nhistory = \"1000h\"\n",
            "FILE: [queue] history: 1000h is out of range (0s..744h)",
        ),
        (
            "[backend]\nsplay = \"sometimes\"\n",
            "FILE: [backend] splay: invalid splay \"sometimes\": expected \"auto\" or a duration",
        ),
        (
            "[backend]\nsplay = \"2h\"\n",
            "FILE: [backend] splay: 2h is out of range (0s..1h)",
        ),
        (
            "[backend]\nmax_age = -5\n",
            "FILE: [backend] max_age: invalid duration -5: must not be negative",
        ),
        (
            "[remote_write]\nurl = \"ftp://x/write\"\n",
            "FILE: [remote_write] url: invalid URL \"ftp://x/write\": the scheme must be http or https",
        ),
        (
            "[otlp]\nurl = \"not a url\"\n",
            "FILE: [otlp] url: invalid URL \"not a url\"",
        ),
        (
            "[remote_write]\nbatch_size = 0\n",
            "FILE: [remote_write] batch_size: 0 is out of range (1..=10000)",
        ),
        (
            "[otlp]\ntimeout = \"ten\"\n",
            "FILE: [otlp] timeout: invalid duration \"ten\"",
        ),
        (
            "[remote_write]\nlabels = { instance = \"x\" }\n",
            "FILE: [remote_write] labels: label \"instance\" is set by metricsd itself",
        ),
        (
            "[remote_write]\nlabels = { machine_id = \"x\" }\n",
            "FILE: [remote_write] labels: label \"machine_id\" is set by metricsd itself",
        ),
        (
            "[remote_write]\nlabels = { __name__ = \"x\" }\n",
            "FILE: [remote_write] labels: invalid label name \"__name__\": names starting with __ are reserved",
        ),
        (
            "[remote_write]\nlabels = { \"a-b\" = \"x\" }\n",
            "FILE: [remote_write] labels: invalid label name \"a-b\"",
        ),
        (
            "[remote_write]\nlabels = { env = 1 }\n",
            "FILE: [remote_write] labels: the value of \"env\" must be a string, got 1",
        ),
        (
            "[remote_write]\nlabels = [\"env\"]\n",
            "FILE: [remote_write] labels: expected a table such as { name = \"value\" }, got array",
        ),
        (
            "[remote_write]\nheaders = { \"X Org\" = \"t\" }\n",
            "FILE: [remote_write] headers: invalid header name \"X Org\"",
        ),
        (
            "[otlp]\nresource_attributes = { \"\" = \"x\" }\n",
            "FILE: [otlp] resource_attributes: attribute names must not be empty",
        ),
        (
            "[otlp]\nusername = \"u\"\n",
            "FILE: [otlp] username: set password or password_file too",
        ),
        (
            "[otlp]\npassword = \"p\"\n",
            "FILE: [otlp] password: set username too",
        ),
        (
            "[remote_write]\ntoken = \"t\"\nusername = \"u\"\npassword = \"p\"\n",
            "FILE: [remote_write] username: set either token (bearer) or username and password (basic), not both",
        ),
        (
            "[remote_write]\npassword_file = \"/nonexistent/pw\"\nusername = \"u\"\n",
            "FILE: [remote_write] password_file: cannot read /nonexistent/pw",
        ),
    ];
    for (text, expected) in cases {
        let got = error_of(text, &[]);
        assert!(
            got.starts_with(expected),
            "for {text:?}\n  got      {got:?}\n  expected {expected:?}..."
        );
    }
}

#[test]
fn password_and_password_file_are_exclusive_like_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x\n").unwrap();
    for section in ["remote_write", "otlp"] {
        assert_eq!(
            error_of(
                &format!(
                    "[{section}]\nusername = \"u\"\npassword = \"a\"\npassword_file = {:?}\n",
                    pw.display().to_string()
                ),
                &[]
            ),
            format!(
                "FILE: [{section}] password_file: set either password or password_file, not both"
            )
        );
        assert_eq!(
            error_of(
                &format!(
                    "[{section}]\ntoken = \"a\"\ntoken_file = {:?}\n",
                    pw.display().to_string()
                ),
                &[]
            ),
            format!("FILE: [{section}] token_file: set either token or token_file, not both")
        );
    }
}

#[test]
fn keys_a_section_does_not_have_are_unknown() {
    for (text, expected) in [
        (
            "[backend]\nusername = \"u\"\n",
            "FILE: [backend] username: unknown key",
        ),
        (
            "[backend]\nheaders = {}\n",
            "FILE: [backend] headers: unknown key",
        ),
        (
            "[remote_write]\nresource_attributes = {}\n",
            "FILE: [remote_write] resource_attributes: unknown key",
        ),
        (
            "[remote_write]\nurll = \"x\"\n",
            "FILE: [remote_write] urll: unknown key",
        ),
        ("[otlp]\nlabels = {}\n", "FILE: [otlp] labels: unknown key"),
        (
            "[otlp]\ncompression = \"gzip\"\n",
            "FILE: [otlp] compression: unknown key",
        ),
        (
            "[queue]\nhistroy = \"1h\"\n",
            "FILE: [queue] histroy: unknown key",
        ),
        (
            "[collect]\nunit = []\n",
            "FILE: [collect] unit: unknown key",
        ),
        (
            "[stream]\nallowed_host = []\n",
            "FILE: [stream] allowed_host: unknown key",
        ),
        (
            "remote_write = 1\n",
            "FILE: remote_write: must be a table ([section])",
        ),
        (
            "[prometheus]\nurl = \"x\"\n",
            "FILE: [prometheus]: unknown key",
        ),
    ] {
        assert_eq!(error_of(text, &[]), expected, "for {text:?}");
    }
}

#[test]
fn environment_overrides_the_new_keys_including_tables() {
    let config = load_text(
        "[remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nlabels = { env = \"file\" }\n",
        &[
            ("METRICSD_COLLECT_UNITS", "ssh.service, cron.service"),
            ("METRICSD_COLLECT_TOP_UNITS", "4"),
            (
                "METRICSD_STREAM_ALLOWED_HOSTS",
                "[\"a.example\", \"b.example\"]",
            ),
            ("METRICSD_QUEUE_HISTORY", "3600"),
            ("METRICSD_BACKEND_SPLAY", "0s"),
            ("METRICSD_BACKEND_MAX_AGE", "1h"),
            (
                "METRICSD_REMOTE_WRITE_HEADERS",
                "{ \"X-Scope-OrgID\" = \"t1\" }",
            ),
            ("METRICSD_REMOTE_WRITE_LABELS", "{ env = \"prod\" }"),
            ("METRICSD_REMOTE_WRITE_SPLAY", "auto"),
            ("METRICSD_REMOTE_WRITE_USERNAME", "u"),
            ("METRICSD_REMOTE_WRITE_PASSWORD", "p"),
            ("METRICSD_OTLP_URL", "http://127.0.0.1:9/v1/metrics"),
            ("METRICSD_OTLP_SPLAY", "250ms"),
            (
                "METRICSD_OTLP_RESOURCE_ATTRIBUTES",
                "{ \"service.namespace\" = \"web\" }",
            ),
            ("METRICSD_OTLP_RETRY_BACKOFF", "1s,2s"),
        ],
    );
    assert_eq!(config.collect.units, vec!["ssh.service", "cron.service"]);
    assert_eq!(config.collect.top_units, 4);
    assert_eq!(config.stream.allowed_hosts, vec!["a.example", "b.example"]);
    assert_eq!(config.queue.history, Duration::from_secs(3600));
    assert_eq!(config.backend.splay, Splay::Fixed(Duration::ZERO));
    assert_eq!(config.backend.max_age, Duration::from_secs(3600));
    assert_eq!(config.remote_write.headers, map(&[("X-Scope-OrgID", "t1")]));
    assert_eq!(config.remote_write.labels, map(&[("env", "prod")]));
    assert_eq!(config.remote_write.splay, Splay::Auto);
    assert_eq!(
        config.remote_write.basic_auth(),
        Some(("u".to_string(), "p".to_string()))
    );
    assert!(config.otlp.enabled());
    assert_eq!(config.otlp.splay, Splay::Fixed(Duration::from_millis(250)));
    assert_eq!(
        config.otlp.resource_attributes,
        map(&[("service.namespace", "web")])
    );
    assert_eq!(
        config.otlp.retry_backoff,
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    assert_eq!(
        error_of("", &[("METRICSD_OTLP_SPLAY", "often")]),
        "environment METRICSD_OTLP_SPLAY: [otlp] splay: invalid splay \"often\": expected \"auto\" or a duration such as \"0s\" or \"5s\""
    );
    assert_eq!(
        error_of("", &[("METRICSD_REMOTE_WRITE_LABELS", "{ instance = \"x\" }")]),
        "environment METRICSD_REMOTE_WRITE_LABELS: [remote_write] labels: label \"instance\" is set by metricsd itself and cannot be overridden"
    );
    assert_eq!(
        error_of("", &[("METRICSD_QUEUE_HISTORY", "-1")]),
        "environment METRICSD_QUEUE_HISTORY: [queue] history: invalid duration \"-1\""
    );
}

#[test]
fn secret_values_are_never_echoed_in_errors() {
    const SECRET: &str = "hunter2-9f8e";
    let cases = [
        "[backend]\ntoken = 123987\n".to_string(),
        "[stream]\ntoken = 123987\n".to_string(),
        "[remote_write]\ntoken = [\"123987\"]\n".to_string(),
        "[otlp]\npassword = 123987\nusername = \"u\"\n".to_string(),
        "[remote_write]\nheaders = { \"X-A\" = \"ok\", \"X-B\" = 123987 }\n".to_string(),
        format!("[otlp]\nheaders = {{ \"X-A\" = \"{SECRET}\\r\\nX-Evil: 1\" }}\n"),
        format!("[backend]\ntoken = {SECRET}\n"), // not even valid TOML
    ];
    for text in &cases {
        let err = error_of(text, &[]);
        assert!(
            !err.contains("123987") && !err.contains(SECRET),
            "{text:?} echoed its secret: {err}"
        );
        assert!(err.starts_with("FILE: "), "{err}");
    }
    assert_eq!(
        error_of("[backend]\ntoken = 123987\n", &[]),
        "FILE: [backend] token: expected a string, got integer (value not shown)"
    );
    assert_eq!(
        error_of("[remote_write]\nheaders = { \"X-B\" = 123987 }\n", &[]),
        "FILE: [remote_write] headers: the value of \"X-B\" must be a string, got integer (value not shown)"
    );
    // A header value from the environment that is not an inline table.
    let err = error_of("", &[("METRICSD_OTLP_HEADERS", SECRET)]);
    assert!(!err.contains(SECRET), "{err}");
    assert!(
        err.starts_with(
            "environment METRICSD_OTLP_HEADERS: [otlp] headers: expected a TOML inline table"
        ),
        "{err}"
    );
    let err = error_of(
        "",
        &[("METRICSD_OTLP_HEADERS", &format!("{{ a = {SECRET} }}"))],
    );
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn url_passwords_are_never_echoed_in_errors() {
    for (section, url) in [
        ("backend", "ftp://user:pw-s3cret@host/x"),
        ("remote_write", "https://user:pw-s3cret@/write"),
        ("otlp", "https://user:pw-s3cret@host name/v1/metrics"),
    ] {
        let err = error_of(&format!("[{section}]\nurl = \"{url}\"\n"), &[]);
        assert!(!err.contains("pw-s3cret"), "{err}");
        assert!(
            err.starts_with(&format!("FILE: [{section}] url: invalid URL \""))
                && err.contains("user:<redacted>@"),
            "{err}"
        );
        let err = error_of(
            "",
            &[(&format!("METRICSD_{}_URL", section.to_uppercase()), url)],
        );
        assert!(!err.contains("pw-s3cret"), "{err}");
    }
    // A valid URL with a password loads, and neither check-config nor Debug shows it.
    let config = load_text(
        "[remote_write]\nurl = \"https://user:pw-s3cret@127.0.0.1:9/write\"\n",
        &[],
    );
    assert_eq!(
        config.remote_write.url,
        "https://user:pw-s3cret@127.0.0.1:9/write"
    );
    let printed = config.to_toml_redacted();
    assert!(!printed.contains("pw-s3cret"), "{printed}");
    assert!(printed.contains("url = \"https://user:<redacted>@127.0.0.1:9/write\""));
    assert!(!format!("{config:?}").contains("pw-s3cret"));
}

#[test]
fn check_config_output_loads_back_to_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let text = format!(
        "node_id = \"web-01\"\ninterval = 15\nlog_level = \"debug\"\nstate_dir = \"/srv/m\"\n\
         [collect]\ntop_processes = 0\nunits = []\ntop_units = 2\n\
         [stream]\nenabled = false\nlisten = \"127.0.0.1:9999\"\nallowed_hosts = [\"h.example\"]\n\
         [queue]\nmax_pending = 5\nhistory = \"90m\"\n\
         [backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken_file = {tok:?}\ntimeout = \"1500ms\"\n\
         retry_backoff = [1, \"2m\"]\nsplay = \"3s\"\nmax_age = \"2h\"\n\
         [remote_write]\nurl = \"http://127.0.0.1:9/w\"\nusername = \"u\"\npassword_file = {pw:?}\n\
         labels = {{ env = \"prod\", \"weird_Name1\" = \"a b\" }}\n\
         [otlp]\nurl = \"http://127.0.0.1:9/o\"\ngzip = true\nbatch_size = 10\n\
         resource_attributes = {{ \"deployment.environment\" = \"prod\", \"a\" = \"quote \\\" and = sign\" }}\n",
        tok = token.display().to_string(),
        pw = pw.display().to_string(),
    );
    let config = load_text(&text, &[]);
    let printed = config.to_toml_redacted();
    let again = write(dir.path(), &printed);
    let mut reloaded = load_from(Some(&again), &[]).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(reloaded.path.as_deref(), Some(again.as_path()));
    reloaded.path = config.path.clone();
    assert_eq!(reloaded, config, "printed:\n{printed}");
    // And the defaults, with every section and key present.
    let defaults = Config::default();
    let printed = defaults.to_toml_redacted();
    let mut reloaded = load_from(Some(&write(dir.path(), &printed)), &[]).unwrap();
    reloaded.path = None;
    assert_eq!(reloaded, defaults, "printed:\n{printed}");
}

#[test]
fn check_config_redacts_every_secret_of_every_sink() {
    let config = load_text(
        "[stream]\ntoken = \"S-stream\"\n\
         [backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken = \"S-backend\"\n\
         [remote_write]\nurl = \"http://127.0.0.1:9/w\"\nusername = \"rw-user\"\npassword = \"S-rw-pw\"\n\
         headers = { \"X-Scope-OrgID\" = \"S-rw-h1\", \"X-Other\" = \"S-rw-h2\" }\n\
         [otlp]\nurl = \"http://127.0.0.1:9/o\"\ntoken = \"S-otlp\"\nheaders = { api-key = \"S-otlp-h\" }\n",
        &[],
    );
    let printed = config.to_toml_redacted();
    assert!(!printed.contains("S-"), "{printed}");
    // Debug output (which can end up in a log line) shows none either.
    let debug = format!("{config:?}");
    assert!(!debug.contains("S-"), "{debug}");
    assert!(
        debug.contains("rw-user") && debug.contains("X-Scope-OrgID"),
        "{debug}"
    );
    let table: toml::Table = printed.parse().unwrap();
    let get = |s: &str, k: &str| table[s][k].clone();
    assert_eq!(get("stream", "token").as_str(), Some("<redacted>"));
    assert_eq!(get("backend", "token").as_str(), Some("<redacted>"));
    assert_eq!(get("remote_write", "password").as_str(), Some("<redacted>"));
    assert_eq!(get("remote_write", "username").as_str(), Some("rw-user"));
    assert_eq!(get("otlp", "token").as_str(), Some("<redacted>"));
    let headers = get("remote_write", "headers");
    let headers = headers.as_table().unwrap();
    assert_eq!(headers.len(), 2);
    assert!(headers.values().all(|v| v.as_str() == Some("<redacted>")));
    assert_eq!(
        get("otlp", "headers").as_table().unwrap()["api-key"].as_str(),
        Some("<redacted>")
    );
    // Unset secrets print empty, not redacted.
    assert_eq!(get("otlp", "password").as_str(), Some(""));
}

#[test]
fn only_listen_state_dir_and_the_listener_need_a_restart() {
    let old = load_text("[backend]\nurl = \"http://127.0.0.1:9/x\"\n", &[]);
    let new = load_text(
        "interval = 5\n[collect]\nunits = []\n[stream]\nallowed_hosts = [\"x.example\"]\ntoken = \"t\"\n\
         [queue]\nhistory = \"1h\"\nmax_pending = 9\n\
         [remote_write]\nurl = \"http://127.0.0.1:9/w\"\nlabels = { env = \"x\" }\n\
         [otlp]\nurl = \"http://127.0.0.1:9/o\"\n",
        &[],
    );
    assert_ne!(old, new);
    assert!(old.restart_only_changes(&new).is_empty());
    let moved = load_text(
        "state_dir = \"/srv/elsewhere\"\n[stream]\nlisten = \"127.0.0.1:1\"\n",
        &[],
    );
    assert_eq!(
        old.restart_only_changes(&moved),
        ["[stream] listen", "state_dir"]
    );
}

#[test]
fn every_sink_defaults_to_the_delivery_keys_of_spec_section_2() {
    let s = |secs| Duration::from_secs(secs);
    for sink in [
        Config::default().backend,
        Config::default().remote_write,
        Config::default().otlp,
    ] {
        assert_eq!(sink.url, "");
        assert_eq!(sink.token, "");
        assert_eq!(sink.token_file, None);
        assert_eq!(sink.timeout, s(10));
        assert_eq!(sink.batch_size, 1);
        assert!(!sink.gzip);
        assert_eq!(sink.retry_backoff, [s(5), s(15), s(60)]);
        assert_eq!(sink.max_retry_after, s(3600));
        assert_eq!(sink.max_attempts, 3);
        assert_eq!(sink.ca_file, None);
        assert_eq!(sink.splay, Splay::Auto);
        assert_eq!(sink.max_age, Duration::ZERO);
        assert!(sink.username.is_empty() && sink.password.is_empty());
        assert!(sink.headers.is_empty() && sink.labels.is_empty());
        assert!(sink.resource_attributes.is_empty());
        assert_eq!(sink, SinkConfig::default());
    }
}
