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
