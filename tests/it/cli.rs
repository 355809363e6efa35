//! The command line of the real binary (SPEC §1, §2, §3): exit codes,
//! configuration errors, environment overrides, redaction, and the JSON that
//! `once` prints.

use crate::common::daemon::{config_toml, free_port, run_cli, write_file};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const EX_USAGE: i32 = 2;
const EX_CONFIG: i32 = 78;
const EX_CANTCREAT: i32 = 73;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

/// A config file in `dir` with a state dir and a free stream port, plus `extra`
/// (sections or top-level keys placed before any section).
fn config_in(dir: &Path, extra_top: &str, sections: &str) -> String {
    let text = config_toml(&dir.join("state"), free_port(), "5s", extra_top, sections);
    write_file(dir, "metricsd.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs `check-config` and parses the printed TOML.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> (Output, toml::Table) {
    let out = run_cli(args, env);
    assert_code(&out, 0);
    let table: toml::Table = text(&out.stdout)
        .parse()
        .unwrap_or_else(|e| panic!("check-config output is not TOML: {e}\n{}", describe(&out)));
    (out, table)
}

fn get<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    let t = if section.is_empty() {
        table
    } else {
        table[section].as_table().unwrap()
    };
    t.get(key)
        .unwrap_or_else(|| panic!("check-config output has no {section}.{key}"))
}

// --- exit codes 0 and 2 ------------------------------------------------------

#[test]
fn version_prints_name_and_version() {
    let out = run_cli(&["--version"], &[]);
    assert_code(&out, 0);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("metricsd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_commands() {
    let out = run_cli(&["--help"], &[]);
    assert_code(&out, 0);
    let help = text(&out.stdout);
    for command in ["run", "once", "check-config", "queue", "--config"] {
        assert!(
            help.contains(command),
            "--help does not mention {command}:\n{help}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["frobnicate"],
        &["queue", "frobnicate"],
        &["once", "--no-such-flag"],
        &["run", "--pidfile", "/tmp/x.pid"], // --pidfile needs --daemon
        &["queue", "peek", "-n", "many"],
    ] {
        let out = run_cli(args, &[]);
        assert_code(&out, EX_USAGE);
        assert!(!out.stderr.is_empty(), "{args:?}: no usage message");
    }
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "",
        "[backend]\nurl = \"http://127.0.0.1:9/ingest\"\n",
    );
    let (_, table) = check_config(&["--config", &config, "check-config"], &[]);
    assert_eq!(get(&table, "", "interval").as_str(), Some("5s"));
    assert_eq!(
        get(&table, "backend", "url").as_str(),
        Some("http://127.0.0.1:9/ingest")
    );
}

// --- exit code 78 --------------------------------------------------------------

#[test]
fn bad_value_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "[backend]\ntimeout = \"ten\"\n");
    let out = run_cli(&["--config", &config, "check-config"], &[]);
    assert_code(&out, EX_CONFIG);
    let expected = format!("metricsd: {config}: [backend] timeout: invalid duration \"ten\"");
    assert!(
        text(&out.stderr).lines().any(|l| l == expected),
        "expected the line {expected:?}\n{}",
        describe(&out)
    );
    // The same error stops `run` before it starts anything.
    let out = run_cli(&["--config", &config, "run"], &[]);
    assert_code(&out, EX_CONFIG);
    assert!(text(&out.stderr).contains(&expected), "{}", describe(&out));
}

#[test]
fn a_ca_file_without_certificates_or_a_bad_port_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write_file(dir.path(), "notes.txt", "not a certificate\n");
    for (section, key) in [
        (
            format!("[backend]\nurl = \"https://example.com/x\"\nca_file = {not_pem:?}\n"),
            "ca_file",
        ),
        (
            format!(
                "[otlp]\nurl = \"https://example.com/x\"\nca_file = {:?}\n",
                dir.path()
            ),
            "ca_file",
        ),
        (
            "[backend]\nurl = \"http://example.com:99999/x\"\n".to_string(),
            "url",
        ),
    ] {
        let config = config_in(dir.path(), "", &section);
        let out = run_cli(&["--config", &config, "check-config"], &[]);
        assert_code(&out, EX_CONFIG);
        let err = text(&out.stderr);
        assert!(
            err.contains(&config) && err.contains(key),
            "{section}: {err}"
        );
    }
}

#[test]
fn out_of_range_interval_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "m.toml", "interval = \"2h\"\n");
    let out = run_cli(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_code(&out, EX_CONFIG);
    let err = text(&out.stderr);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("interval"),
        "{err}"
    );
}

#[test]
fn unknown_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "[backend]\ntimeot = \"5s\"\n");
    let out = run_cli(&["--config", &config, "check-config"], &[]);
    assert_code(&out, EX_CONFIG);
    let err = text(&out.stderr);
    assert!(
        err.contains(&config) && err.contains("timeot") && err.contains("unknown key"),
        "{}",
        describe(&out)
    );

    let config = config_in(dir.path(), "", "[colect]\ntop_processes = 1\n");
    let out = run_cli(&["--config", &config, "check-config"], &[]);
    assert_code(&out, EX_CONFIG);
    assert!(text(&out.stderr).contains("colect"), "{}", describe(&out));
}

#[test]
fn invalid_toml_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "m.toml", "interval = \"5s\n[stream\n");
    let out = run_cli(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_code(&out, EX_CONFIG);
    assert!(
        text(&out.stderr).contains(path.to_str().unwrap()),
        "{}",
        describe(&out)
    );
}

#[test]
fn missing_config_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let missing = missing.to_str().unwrap();
    for command in ["check-config", "run", "once"] {
        let out = run_cli(&["--config", missing, command], &[]);
        assert_code(&out, EX_CONFIG);
        assert!(text(&out.stderr).contains(missing), "{}", describe(&out));
    }
    // $METRICSD_CONFIG naming a missing file is the same error.
    let out = run_cli(&["check-config"], &[("METRICSD_CONFIG", missing)]);
    assert_code(&out, EX_CONFIG);
    assert!(text(&out.stderr).contains(missing), "{}", describe(&out));
}

#[test]
fn bad_environment_override_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    for (var, value) in [
        ("METRICSD_INTERVAL", "ten"),
        ("METRICSD_BACKEND_BATCH_SIZE", "lots"),
        ("METRICSD_STREAM_ENABLED", "maybe"),
    ] {
        let out = run_cli(&["--config", &config, "check-config"], &[(var, value)]);
        assert_code(&out, EX_CONFIG);
        assert!(text(&out.stderr).contains(var), "{var}: {}", describe(&out));
    }
}

#[test]
fn unknown_environment_variable_is_one_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let (out, table) = check_config(
        &["--config", &config, "check-config"],
        &[("METRICSD_NO_SUCH_KEY", "1"), ("METRICSD_INTERVAL", "9s")],
    );
    assert_eq!(get(&table, "", "interval").as_str(), Some("9s"));
    let warnings: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("METRICSD_NO_SUCH_KEY"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        warnings,
        ["metricsd: warning: environment METRICSD_NO_SUCH_KEY: unknown configuration key, ignored"],
        "{}",
        describe(&out)
    );
}

#[test]
fn an_environment_that_is_not_utf8_is_ignored_unless_it_is_ours() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let not_utf8 = OsStr::from_bytes(b"caf\xe9");
    let run = |name: &str| {
        std::process::Command::new(crate::common::daemon::BIN)
            .args(["--config", &config, "check-config"])
            .env(name, not_utf8)
            .output()
            .unwrap()
    };
    // Someone else's variable: no concern of ours.
    let out = run("LC_SOMETHING_ELSE");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // Ours by its prefix but naming no key: ignored with a warning, as any
    // other such variable (SPEC §2).
    let out = run("METRICSD_SOMEONE_ELSES");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(
            "warning: environment METRICSD_SOMEONE_ELSES: unknown configuration key, ignored"
        ),
        "{}",
        describe(&out)
    );
    // One of ours: a configuration error naming it.
    let out = run("METRICSD_INTERVAL");
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("METRICSD_INTERVAL") && err.contains("not valid UTF-8"),
        "{err}"
    );
}

// --- exit code 73 ----------------------------------------------------------------

/// `metricsd run` with a configuration in `dir` naming `state_dir`.
fn run_with_state_dir(dir: &tempfile::TempDir, state_dir: &Path) -> std::process::Output {
    let text_cfg = config_toml(state_dir, free_port(), "1s", "", "");
    let config = write_file(dir.path(), "m.toml", &text_cfg);
    run_cli(&["--config", config.to_str().unwrap(), "run"], &[])
}

#[test]
fn uncreatable_state_dir_exits_73_naming_path_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = write_file(dir.path(), "not-a-dir", "a regular file\n");
    let state_dir = blocker.join("sub");
    let out = run_with_state_dir(&dir, &state_dir);
    assert_code(&out, EX_CANTCREAT);
    let err = text(&out.stderr);
    assert!(
        err.contains(state_dir.to_str().unwrap()),
        "does not name {}: {}",
        state_dir.display(),
        describe(&out)
    );
    assert!(
        err.contains("Not a directory"),
        "does not give the OS error: {}",
        describe(&out)
    );
}

#[test]
fn a_lock_file_that_cannot_be_opened_exits_73_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let lock = state_dir.join("metricsd.lock");
    std::fs::create_dir_all(&lock).unwrap();
    let out = run_with_state_dir(&dir, &state_dir);
    assert_code(&out, EX_CANTCREAT);
    let err = text(&out.stderr);
    assert!(
        err.contains(lock.to_str().unwrap()) && err.contains("Is a directory"),
        "does not name {} and the OS error: {}",
        lock.display(),
        describe(&out)
    );
}

// --- environment overrides, state_dir, redaction ------------------------------------

#[test]
fn environment_overrides_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "log_level = \"warn\"", "");
    let (_, table) = check_config(
        &["--config", &config, "check-config"],
        &[
            ("METRICSD_INTERVAL", "7s"),
            ("METRICSD_BACKEND_URL", "https://collector.example.com/api"),
            ("METRICSD_BACKEND_BATCH_SIZE", "20"),
            ("METRICSD_COLLECT_TOP_PROCESSES", "0"),
            ("METRICSD_LOG_LEVEL", "debug"),
        ],
    );
    assert_eq!(get(&table, "", "interval").as_str(), Some("7s"));
    assert_eq!(get(&table, "", "log_level").as_str(), Some("debug"));
    assert_eq!(
        get(&table, "backend", "url").as_str(),
        Some("https://collector.example.com/api")
    );
    assert_eq!(get(&table, "backend", "batch_size").as_integer(), Some(20));
    assert_eq!(
        get(&table, "collect", "top_processes").as_integer(),
        Some(0)
    );

    // Without a file at all, the environment still applies to the defaults.
    let (_, table) = check_config(
        &["check-config"],
        &[
            ("METRICSD_CONFIG", ""),
            ("METRICSD_INTERVAL", "5s"),
            ("STATE_DIRECTORY", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(get(&table, "", "interval").as_str(), Some("5s"));
}

#[test]
fn check_config_prints_durations_in_string_form() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "",
        "[backend]\ntimeout = 90\nretry_backoff = [\"500ms\", 15, \"1m\"]\nmax_retry_after = \"2h\"\n",
    );
    let (_, table) = check_config(&["--config", &config, "check-config"], &[]);
    assert_eq!(get(&table, "backend", "timeout").as_str(), Some("90s"));
    let backoff: Vec<&str> = get(&table, "backend", "retry_backoff")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(backoff, ["500ms", "15s", "60s"]);
    assert_eq!(
        get(&table, "backend", "max_retry_after").as_str(),
        Some("2h")
    );
}

#[test]
fn check_config_prints_state_dir_resolved() {
    let dir = tempfile::tempdir().unwrap();
    // Not set in the file: systemd's $STATE_DIRECTORY wins.
    let path = write_file(dir.path(), "m.toml", "interval = \"5s\"\n");
    let from_systemd = dir.path().join("from-systemd");
    let (_, table) = check_config(
        &["--config", path.to_str().unwrap(), "check-config"],
        &[("STATE_DIRECTORY", from_systemd.to_str().unwrap())],
    );
    assert_eq!(
        get(&table, "", "state_dir").as_str(),
        Some(from_systemd.to_str().unwrap())
    );
    // Set in the file: printed as given.
    let config = config_in(dir.path(), "", "");
    let (_, table) = check_config(&["--config", &config, "check-config"], &[]);
    assert_eq!(
        get(&table, "", "state_dir").as_str(),
        Some(dir.path().join("state").to_str().unwrap())
    );
    // Neither: never printed empty.
    let (_, table) = check_config(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert!(!get(&table, "", "state_dir").as_str().unwrap().is_empty());
}

#[test]
fn check_config_redacts_tokens() {
    const BACKEND_SECRET: &str = "backend-s3cr3t-7f1e";
    const STREAM_SECRET: &str = "stream-s3cr3t-92ab";
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "state_dir = \"{}\"\n\
         [stream]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{STREAM_SECRET}\"\n\
         [backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken = \"{BACKEND_SECRET}\"\n",
        dir.path().join("state").display(),
        free_port()
    );
    let config = write_file(dir.path(), "m.toml", &config);
    let config = config.to_str().unwrap();

    let (out, table) = check_config(&["--config", config, "check-config"], &[]);
    assert_eq!(get(&table, "backend", "token").as_str(), Some("<redacted>"));
    assert_eq!(get(&table, "stream", "token").as_str(), Some("<redacted>"));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(
        !all.contains(BACKEND_SECRET) && !all.contains(STREAM_SECRET),
        "{all}"
    );

    // Tokens from the environment are redacted too.
    let (out, table) = check_config(
        &["--config", config, "check-config"],
        &[("METRICSD_BACKEND_TOKEN", "env-s3cr3t-55")],
    );
    assert_eq!(get(&table, "backend", "token").as_str(), Some("<redacted>"));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("env-s3cr3t-55"), "{all}");

    // A token read from token_file is never printed either.
    let token_file = write_file(dir.path(), "token", "file-s3cr3t-31\n");
    let path = write_file(
        dir.path(),
        "tf.toml",
        &format!(
            "[backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    );
    let (out, table) = check_config(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(
        get(&table, "backend", "token_file").as_str(),
        Some(token_file.to_str().unwrap())
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("file-s3cr3t-31"), "{all}");
}

#[test]
fn new_keys_print_their_defaults_and_bad_values_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let (_, table) = check_config(&["--config", &config, "check-config"], &[]);
    assert_eq!(
        get(&table, "collect", "units").as_array().unwrap(),
        &[toml::Value::from("*.service")]
    );
    assert_eq!(get(&table, "collect", "top_units").as_integer(), Some(10));
    assert!(get(&table, "stream", "allowed_hosts")
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(get(&table, "queue", "history").as_str(), Some("24h"));
    for sink in ["backend", "remote_write", "otlp"] {
        assert_eq!(get(&table, sink, "url").as_str(), Some(""), "{sink}");
        assert_eq!(get(&table, sink, "splay").as_str(), Some("auto"), "{sink}");
        assert_eq!(get(&table, sink, "max_age").as_str(), Some("0s"), "{sink}");
    }
    assert!(get(&table, "remote_write", "labels")
        .as_table()
        .unwrap()
        .is_empty());
    assert!(get(&table, "otlp", "resource_attributes")
        .as_table()
        .unwrap()
        .is_empty());

    for (sections, key, reason) in [
        (
            "[collect]\nunits = [\"[x\"]\n",
            "[collect] units",
            "invalid pattern",
        ),
        (
            "[collect]\ntop_units = 1001\n",
            "[collect] top_units",
            "out of range",
        ),
        (
            "[stream]\nallowed_hosts = [\"a b\"]\n",
            "[stream] allowed_hosts",
            "invalid host name",
        ),
        (
            "[queue]\nhistory = \"soon\"\n",
            "[queue] history",
            "invalid duration",
        ),
        (
            "[backend]\nsplay = \"never\"\n",
            "[backend] splay",
            "invalid splay",
        ),
        (
            "[backend]\nmax_age = true\n",
            "[backend] max_age",
            "invalid duration",
        ),
        (
            "[remote_write]\nlabels = { instance = \"a\" }\n",
            "[remote_write] labels",
            "set by metricsd itself",
        ),
        (
            "[remote_write]\nheaders = { \"a:b\" = \"x\" }\n",
            "[remote_write] headers",
            "invalid header name",
        ),
        (
            "[otlp]\nurl = \"gopher://x/\"\n",
            "[otlp] url",
            "the scheme must be http or https",
        ),
        (
            "[otlp]\nresource_attributes = 5\n",
            "[otlp] resource_attributes",
            "expected a table",
        ),
        ("[otlp]\nlabels = {}\n", "[otlp] labels", "unknown key"),
        (
            "[remote_write]\nresource_attributes = {}\n",
            "[remote_write] resource_attributes",
            "unknown key",
        ),
        (
            "[backend]\npassword = \"x\"\n",
            "[backend] password",
            "unknown key",
        ),
    ] {
        let path = write_file(dir.path(), "m.toml", sections);
        let config = path.to_str().unwrap();
        let out = run_cli(&["--config", config, "check-config"], &[]);
        assert_code(&out, EX_CONFIG);
        let prefix = format!("metricsd: {config}: {key}: ");
        assert!(
            text(&out.stderr)
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(reason)),
            "expected {prefix}...{reason}...\n{}",
            describe(&out)
        );
    }
}

#[test]
fn environment_overrides_the_sink_sections() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let (_, table) = check_config(
        &["--config", &config, "check-config"],
        &[
            (
                "METRICSD_REMOTE_WRITE_URL",
                "http://127.0.0.1:9/api/v1/write",
            ),
            (
                "METRICSD_REMOTE_WRITE_HEADERS",
                "{ \"X-Scope-OrgID\" = \"t1\" }",
            ),
            ("METRICSD_REMOTE_WRITE_LABELS", "{ env = \"prod\" }"),
            ("METRICSD_REMOTE_WRITE_SPLAY", "0s"),
            ("METRICSD_OTLP_SPLAY", "90"),
            ("METRICSD_OTLP_MAX_AGE", "1h"),
            ("METRICSD_COLLECT_UNITS", "ssh.service,cron.service"),
        ],
    );
    assert_eq!(
        get(&table, "remote_write", "url").as_str(),
        Some("http://127.0.0.1:9/api/v1/write")
    );
    let headers = get(&table, "remote_write", "headers").as_table().unwrap();
    assert_eq!(headers["X-Scope-OrgID"].as_str(), Some("<redacted>"));
    let labels = get(&table, "remote_write", "labels").as_table().unwrap();
    assert_eq!(labels["env"].as_str(), Some("prod"));
    assert_eq!(get(&table, "remote_write", "splay").as_str(), Some("0s"));
    assert_eq!(get(&table, "otlp", "splay").as_str(), Some("90s"));
    assert_eq!(get(&table, "otlp", "max_age").as_str(), Some("1h"));
    assert_eq!(get(&table, "collect", "units").as_array().unwrap().len(), 2);

    let out = run_cli(
        &["--config", &config, "check-config"],
        &[("METRICSD_BACKEND_SPLAY", "sometimes")],
    );
    assert_code(&out, EX_CONFIG);
    assert!(
        text(&out.stderr).contains(
            "metricsd: environment METRICSD_BACKEND_SPLAY: [backend] splay: invalid splay \"sometimes\""
        ),
        "{}",
        describe(&out)
    );
}

#[test]
fn check_config_redacts_every_sink_secret() {
    let secrets = [
        "s-backend-tok",
        "s-rw-pw",
        "s-rw-h1",
        "s-rw-h2",
        "s-otlp-tok",
        "s-otlp-h",
        "s-env-pw",
        "s-env-h",
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "",
        "[backend]\nurl = \"http://127.0.0.1:9/x\"\ntoken = \"s-backend-tok\"\n\
         [remote_write]\nurl = \"http://127.0.0.1:9/w\"\nusername = \"rw\"\npassword = \"s-rw-pw\"\n\
         headers = { \"X-Scope-OrgID\" = \"s-rw-h1\", \"X-Other\" = \"s-rw-h2\" }\n\
         [otlp]\nurl = \"http://127.0.0.1:9/o\"\ntoken = \"s-otlp-tok\"\nheaders = { api-key = \"s-otlp-h\" }\n",
    );
    let (out, table) = check_config(&["--config", &config, "check-config"], &[]);
    let all = text(&out.stdout) + &text(&out.stderr);
    for secret in secrets {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert_eq!(get(&table, "backend", "token").as_str(), Some("<redacted>"));
    assert_eq!(
        get(&table, "remote_write", "password").as_str(),
        Some("<redacted>")
    );
    assert_eq!(get(&table, "otlp", "token").as_str(), Some("<redacted>"));
    for (sink, count) in [("remote_write", 2), ("otlp", 1)] {
        let headers = get(&table, sink, "headers").as_table().unwrap();
        assert_eq!(headers.len(), count, "{sink}");
        assert!(
            headers.values().all(|v| v.as_str() == Some("<redacted>")),
            "{sink}: {headers:?}"
        );
    }
    // From the environment too.
    let (out, table) = check_config(
        &["--config", &config, "check-config"],
        &[
            ("METRICSD_OTLP_USERNAME", "o"),
            ("METRICSD_OTLP_TOKEN", ""),
            ("METRICSD_OTLP_PASSWORD", "s-env-pw"),
            ("METRICSD_OTLP_HEADERS", "{ X-Env = \"s-env-h\" }"),
        ],
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    for secret in secrets {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert_eq!(get(&table, "otlp", "password").as_str(), Some("<redacted>"));
}

#[test]
fn bad_secrets_and_url_passwords_are_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    for sections in [
        "[backend]\ntoken = 918273\n",
        "[remote_write]\nheaders = { a = 918273 }\n",
        "[otlp]\nusername = \"u\"\npassword = 918273\n",
        "[backend]\nurl = \"ftp://u:918273@host/x\"\n",
        "[remote_write]\nurl = \"http://u:918273@/x\"\n",
    ] {
        let config = config_in(dir.path(), "", sections);
        let out = run_cli(&["--config", &config, "check-config"], &[]);
        assert_code(&out, EX_CONFIG);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(all.contains(&config), "{}", describe(&out));
        assert!(!all.contains("918273"), "{sections:?} echoed: {all}");
    }
    let config = config_in(dir.path(), "", "");
    let out = run_cli(
        &["--config", &config, "check-config"],
        &[("METRICSD_OTLP_URL", "https://u:918273@host name/v1")],
    );
    assert_code(&out, EX_CONFIG);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("METRICSD_OTLP_URL"), "{}", describe(&out));
    assert!(!all.contains("918273"), "{all}");
}

#[test]
fn check_config_output_is_a_file_with_the_same_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "node_id = \"n1\"",
        "[collect]\nunits = [\"a.service\"]\ntop_units = 1\n\
         [queue]\nhistory = 600\n\
         [backend]\nurl = \"http://127.0.0.1:9/x\"\nretry_backoff = [1, \"90s\"]\nsplay = 0\n\
         [remote_write]\nurl = \"http://127.0.0.1:9/w\"\nlabels = { env = \"p\" }\nmax_age = \"1h\"\n\
         [otlp]\nurl = \"http://127.0.0.1:9/o\"\nresource_attributes = { \"k.v\" = \"x y\" }\n",
    );
    let first = run_cli(&["--config", &config, "check-config"], &[]);
    assert_code(&first, 0);
    let printed = write_file(dir.path(), "printed.toml", &text(&first.stdout));
    let second = run_cli(
        &["--config", printed.to_str().unwrap(), "check-config"],
        &[],
    );
    assert_code(&second, 0);
    // Everything but the first line, which names the file it came from.
    let body = |out: &Output| {
        text(&out.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&first), body(&second));
    assert!(
        body(&first).contains("history = \"600s\""),
        "{}",
        body(&first)
    );
}

// --- once ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    /// A non-negative integer.
    UInt,
    /// Any JSON number (integers allowed).
    Num,
    /// A number in 0..=100.
    Percent,
    /// A non-negative number.
    NonNeg,
    Array,
    Object,
}

fn check_kind(value: &Value, kind: Kind, at: &str) {
    let ok = match kind {
        Kind::Str => value.is_string(),
        Kind::UInt => value.is_u64(),
        Kind::Num => value.is_number(),
        Kind::NonNeg => value.as_f64().is_some_and(|v| v >= 0.0),
        Kind::Percent => value.as_f64().is_some_and(|v| (0.0..=100.0).contains(&v)),
        Kind::Array => value.is_array(),
        Kind::Object => value.is_object(),
    };
    assert!(ok, "{at} should be {kind:?}, is {value}");
}

fn check_fields(object: &Value, at: &str, fields: &[(&str, Kind)]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{at} is not an object: {object}"));
    for (name, kind) in fields {
        let value = map
            .get(*name)
            .unwrap_or_else(|| panic!("{at}.{name} is missing from {object}"));
        check_kind(value, *kind, &format!("{at}.{name}"));
    }
}

/// At most two decimals (SPEC §3 units).
fn check_two_decimals(value: &Value, at: &str) {
    let v = value.as_f64().unwrap();
    assert!(
        ((v * 100.0).round() - v * 100.0).abs() < 1e-6,
        "{at} = {v} has more than two decimals"
    );
}

/// `2026-11-23T10:00:00.000Z`: RFC 3339 UTC with milliseconds.
fn check_timestamp(ts: &str) {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    let shape = b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z';
    assert!(
        shape,
        "timestamp {ts:?} is not RFC 3339 UTC with milliseconds"
    );
    let at = humantime::parse_rfc3339(ts).unwrap();
    let skew = match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    assert!(skew.as_secs() < 120, "timestamp {ts} is not now");
}

fn check_uuid(s: &str, at: &str) -> uuid::Uuid {
    let b = s.as_bytes();
    let hyphens = [8, 13, 18, 23];
    let shape = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if hyphens.contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
            }
        });
    assert!(shape, "{at} {s:?} is not a lower-case 8-4-4-4-12 UUID");
    uuid::Uuid::parse_str(s).unwrap()
}

/// /etc/machine-id as a UUID, if the host has a well-formed one.
fn host_machine_id() -> Option<String> {
    let raw = std::fs::read_to_string("/etc/machine-id").ok()?;
    let raw = raw.trim().to_ascii_lowercase();
    if raw.len() != 32 || !raw.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &raw[0..8],
        &raw[8..12],
        &raw[12..16],
        &raw[16..20],
        &raw[20..32]
    ))
}

fn run_once(config: &str, flat: bool) -> Value {
    let mut args = vec!["--config", config, "once"];
    if flat {
        args.push("--flat");
    }
    let out = run_cli(&args, &[]);
    assert_code(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n  \""), "not pretty-printed:\n{stdout}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("once printed invalid JSON ({e}):\n{stdout}"))
}

/// The identity fields both forms share.
fn check_identity(v: &Value, node_id: &str) {
    check_timestamp(v["timestamp"].as_str().unwrap());
    assert_eq!(v["node_id"], node_id);
    let event_id = check_uuid(v["event_id"].as_str().unwrap(), "event_id");
    assert_eq!(event_id.get_version_num(), 7, "event_id is not a UUID v7");
    let machine_id = v["machine_id"].as_str().unwrap();
    check_uuid(machine_id, "machine_id");
    if let Some(expected) = host_machine_id() {
        assert_eq!(machine_id, expected, "machine_id is not /etc/machine-id");
    }
}

#[test]
fn once_prints_every_stream_field() {
    use Kind::*;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let v = run_once(&config, false);

    check_fields(
        &v,
        "",
        &[
            ("type", Str),
            ("timestamp", Str),
            ("node_id", Str),
            ("machine_id", Str),
            ("event_id", Str),
            ("seq", UInt),
            ("interval", Num),
            ("metrics", Object),
        ],
    );
    assert_eq!(v["type"], "snapshot");
    assert_eq!(v["interval"].as_f64(), Some(5.0));
    // node_id defaults to the host name, read here from the kernel.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    check_identity(&v, host.trim());

    let m = &v["metrics"];
    check_fields(
        m,
        "metrics",
        &[
            ("cpu", Object),
            ("memory", Object),
            ("disk", Object),
            ("network", Object),
            ("processes", Object),
            ("system", Object),
        ],
    );
    check_fields(
        &m["cpu"],
        "cpu",
        &[
            ("cpu_usage_percent", Percent),
            ("cpu_per_core_percent", Array),
            ("load_avg_1min", NonNeg),
            ("load_avg_5min", NonNeg),
            ("load_avg_15min", NonNeg),
        ],
    );
    let cores = m["cpu"]["cpu_per_core_percent"].as_array().unwrap();
    assert!(!cores.is_empty(), "no per-core figures");
    for (i, core) in cores.iter().enumerate() {
        check_kind(core, Percent, &format!("cpu_per_core_percent[{i}]"));
        check_two_decimals(core, "cpu_per_core_percent");
    }

    let memory_fields = [
        ("memory_total_gb", NonNeg),
        ("memory_used_gb", NonNeg),
        ("memory_available_gb", NonNeg),
        ("memory_usage_percent", Percent),
        ("swap_total_gb", NonNeg),
        ("swap_used_gb", NonNeg),
        ("swap_usage_percent", Percent),
    ];
    check_fields(&m["memory"], "memory", &memory_fields);
    for (name, _) in memory_fields {
        check_two_decimals(&m["memory"][name], name);
    }
    assert!(m["memory"]["memory_total_gb"].as_f64().unwrap() > 0.0);

    check_fields(
        &m["disk"],
        "disk",
        &[("disk_usage", Object), ("disk_io", Object)],
    );
    let mounts = m["disk"]["disk_usage"].as_object().unwrap();
    assert!(!mounts.is_empty(), "no filesystems in disk_usage");
    for (mount, usage) in mounts {
        assert!(mount.starts_with('/'), "mount {mount:?}");
        check_fields(
            usage,
            &format!("disk_usage[{mount}]"),
            &[
                ("total_gb", NonNeg),
                ("used_gb", NonNeg),
                ("free_gb", NonNeg),
                ("usage_percent", Percent),
            ],
        );
    }
    check_fields(
        &m["disk"]["disk_io"],
        "disk_io",
        &[("read_mb_per_sec", NonNeg), ("write_mb_per_sec", NonNeg)],
    );

    check_fields(
        &m["network"],
        "network",
        &[
            ("bytes_sent_mb_per_sec", NonNeg),
            ("bytes_recv_mb_per_sec", NonNeg),
            ("packets_sent", UInt),
            ("packets_recv", UInt),
            ("active_connections", UInt),
            ("interfaces", Object),
        ],
    );
    let interfaces = m["network"]["interfaces"].as_object().unwrap();
    assert!(!interfaces.contains_key("lo"), "lo is excluded by default");
    for (name, iface) in interfaces {
        check_fields(
            iface,
            &format!("interfaces[{name}]"),
            &[
                ("rx_bytes", UInt),
                ("tx_bytes", UInt),
                ("rx_bytes_per_sec", NonNeg),
                ("tx_bytes_per_sec", NonNeg),
                ("rx_errors", UInt),
                ("tx_errors", UInt),
                ("rx_dropped", UInt),
                ("tx_dropped", UInt),
            ],
        );
    }

    check_fields(
        &m["processes"],
        "processes",
        &[
            ("process_count", UInt),
            ("running", UInt),
            ("blocked", UInt),
            ("top_memory_processes", Array),
        ],
    );
    assert!(m["processes"]["process_count"].as_u64().unwrap() > 0);
    let top = m["processes"]["top_memory_processes"].as_array().unwrap();
    assert!(
        !top.is_empty() && top.len() <= 5,
        "top_processes = 5 gives 1..=5 entries, got {}",
        top.len()
    );
    for (i, p) in top.iter().enumerate() {
        check_fields(
            p,
            &format!("top_memory_processes[{i}]"),
            &[("pid", UInt), ("name", Str), ("memory_percent", Percent)],
        );
    }
    let percents: Vec<f64> = top
        .iter()
        .map(|p| p["memory_percent"].as_f64().unwrap())
        .collect();
    assert!(
        percents.windows(2).all(|w| w[0] >= w[1]),
        "top_memory_processes not in descending order: {percents:?}"
    );

    check_fields(
        &m["system"],
        "system",
        &[("uptime_seconds", UInt), ("boot_id", Str)],
    );
    if let Ok(boot_id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        assert_eq!(m["system"]["boot_id"], boot_id.trim());
    }
}

#[test]
fn once_flat_prints_every_backend_field() {
    use Kind::*;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "node_id = \"web-01\"", "");
    let v = run_once(&config, true);
    let fields = [
        ("event_id", Str),
        ("node_id", Str),
        ("machine_id", Str),
        ("timestamp", Str),
        ("cpu_percent", Percent),
        ("memory_percent", Percent),
        ("memory_used_mb", UInt),
        ("memory_total_mb", UInt),
        ("disk_percent", Percent),
        ("disk_used_gb", NonNeg),
        ("disk_total_gb", NonNeg),
        ("network_rx_bytes", UInt),
        ("network_tx_bytes", UInt),
        ("network_rx_rate_mbps", NonNeg),
        ("network_tx_rate_mbps", NonNeg),
        ("uptime_seconds", UInt),
        ("process_count", UInt),
        ("active_connections", UInt),
        ("load_avg_1m", NonNeg),
        ("load_avg_5m", NonNeg),
        ("load_avg_15m", NonNeg),
    ];
    check_fields(&v, "", &fields);
    check_identity(&v, "web-01");
    assert!(v["memory_total_mb"].as_u64().unwrap() > 0);
    assert!(v["memory_used_mb"].as_u64() <= v["memory_total_mb"].as_u64());
    assert!(v["disk_total_gb"].as_f64().unwrap() > 0.0);
    for (name, kind) in fields {
        if matches!(kind, Percent | NonNeg) {
            check_two_decimals(&v[name], name);
        }
    }
}

#[test]
fn once_identity_is_stable_and_events_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "", "");
    let a = run_once(&config, true);
    let b = run_once(&config, false);
    assert_eq!(a["machine_id"], b["machine_id"]);
    assert_ne!(a["event_id"], b["event_id"]);
}

#[test]
fn check_config_prints_a_relative_state_dir_resolved() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), "state_dir = \"rel/state\"\n").unwrap();
    let out = std::process::Command::new(crate::common::daemon::BIN)
        .args(["--config", "m.toml", "check-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let expected = format!(
        "state_dir = {:?}",
        dir.path().join("rel/state").display().to_string()
    );
    assert!(
        text(&out.stdout).lines().any(|l| l == expected),
        "no `{expected}` in:\n{}",
        describe(&out)
    );
}

#[test]
fn output_that_cannot_be_written_is_exit_1_with_a_reason_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "metricsd.toml",
        &format!("state_dir = {:?}\n", dir.path().join("state")),
    );
    for args in [&["check-config"][..], &["once"], &["once", "--flat"]] {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = crate::common::daemon::command(&all, &[])
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write output: No space left on device"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
