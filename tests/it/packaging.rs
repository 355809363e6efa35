//! The shipped files: the systemd unit passes systemd's own checks and the
//! example configuration is exactly the built-in defaults (SPEC §8).

use metricsd::config::{self, Config};
use std::path::{Path, PathBuf};
use std::process::Command;
use toml::{Table, Value};

/// systemd's rating of the unit. It was 1.3 with ProtectClock=yes, but that
/// filter makes even the read-only adjtimex(2) behind `clock_synced` fail;
/// allowing that one call (the clock still cannot be set: no CAP_SYS_TIME)
/// costs 0.4 in the rating, and no other setting takes it back without
/// blinding a collector (ProtectProc, ProcSubset, ProtectHome=yes) or
/// cutting off remote backends (IPAddressDeny, PrivateNetwork).
const MAX_EXPOSURE: f64 = 1.7;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs systemd-analyze, or None (with the reason printed) when it is absent.
fn systemd_analyze(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::common::skip_or_fail("systemd-analyze not found");
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// The number on "→ Overall exposure level for metricsd.service: 1.3 OK 🙂".
fn overall_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_parser_reads_the_overall_line() {
    let sample = "✗ UMask=  Files created by service are group-readable by default  0.1\n\
                  \n→ Overall exposure level for metricsd.service: 1.3 OK 🙂\n";
    assert_eq!(overall_exposure(sample), Some(1.3));
    assert_eq!(overall_exposure("no such line"), None);
}

#[test]
fn unit_security_exposure_is_ok() {
    let unit = repo_file("systemd/metricsd.service");
    let Some(out) = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--no-pager",
        unit.to_str().unwrap(),
    ]) else {
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let exposure = overall_exposure(&text)
        .unwrap_or_else(|| panic!("no \"Overall exposure level\" line in:\n{text}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
    );
}

#[test]
fn unit_security_keeps_what_the_collectors_need() {
    // Hardening that would blind the collectors: the process table, the
    // non-process files of /proc, and statvfs() on hidden mounts.
    let text = std::fs::read_to_string(repo_file("systemd/metricsd.service")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for forbidden in [
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "ProtectHome=yes",
        "ProtectHome=tmpfs",
        "PrivateNetwork=yes",
        // A cgroup namespace of its own: the units collector would see only
        // the daemon's own cgroup, not its neighbours' units.
        "ProtectControlGroups=private",
        "ProtectControlGroups=strict",
        // Its seccomp filter refuses even the read-only adjtimex(2) of
        // clock_synced.
        "ProtectClock=yes",
    ] {
        assert!(
            !settings.contains(&forbidden),
            "{forbidden} would hide what metricsd reports"
        );
    }
    assert!(!settings.iter().any(|l| l.starts_with("InaccessiblePaths=")));
    for required in [
        "Type=notify",
        "ExecStart=/usr/bin/metricsd run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        // Back from ~@privileged, which holds @clock: clock_synced.
        "SystemCallFilter=adjtimex clock_adjtime",
        "StateDirectory=metricsd",
        "DynamicUser=yes",
        "WatchdogSec=180",
        "NotifyAccess=main",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(settings.contains(&required), "missing {required}");
    }
}

#[test]
fn packages_depend_on_what_exec_reload_runs() {
    // ExecReload=/bin/kill: a minimal Debian has no kill (procps ships it),
    // so the packages must pull it in.
    let unit = std::fs::read_to_string(repo_file("systemd/metricsd.service")).unwrap();
    let reload = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecReload="))
        .expect("the unit has an ExecReload=");
    if !reload.starts_with("/bin/kill ") {
        // Another external program would need its own dependency here.
        assert!(
            reload.starts_with("/usr/bin/metricsd "),
            "ExecReload={reload}: declare what it runs in deb and rpm"
        );
        return;
    }
    let manifest: Table = std::fs::read_to_string(repo_file("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let metadata = &manifest["package"]["metadata"];
    let depends = metadata["deb"]["depends"].as_str().unwrap();
    assert!(
        depends.split(',').any(|d| d.trim() == "procps"),
        "deb depends = {depends:?} lacks procps"
    );
    assert!(
        metadata["generate-rpm"]["requires"]
            .get("/usr/bin/kill")
            .is_some(),
        "generate-rpm requires lacks /usr/bin/kill"
    );
    let spec = std::fs::read_to_string(repo_file("packaging/rpm/metricsd.spec")).unwrap();
    assert!(
        spec.lines().any(|l| {
            l.strip_prefix("Requires:")
                .is_some_and(|r| r.split_whitespace().any(|w| w == "/usr/bin/kill"))
        }),
        "the RPM spec does not require /usr/bin/kill"
    );
}

#[test]
fn unit_verifies_apart_from_the_missing_binary() {
    let unit = repo_file("systemd/metricsd.service");
    let Some(out) = systemd_analyze(&["verify", unit.to_str().unwrap()]) else {
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let installed = Path::new("/usr/bin/metricsd").exists();
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| installed || !l.contains("/usr/bin/metricsd is not executable"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains:\n{}",
        complaints.join("\n")
    );
}

/// The example with every `# key = value` and `# [section]` line uncommented;
/// prose comments stay comments.
fn uncommented_example() -> String {
    let text = std::fs::read_to_string(repo_file("packaging/metricsd.toml")).unwrap();
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) || is_section_line(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key_line(s: &str) -> bool {
    match s.split_once(" = ") {
        Some((key, _)) => {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        }
        None => false,
    }
}

fn is_section_line(s: &str) -> bool {
    s.starts_with('[')
        && s.ends_with(']')
        && s[1..s.len() - 1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_')
}

#[test]
fn example_config_as_shipped_changes_nothing() {
    let path = repo_file("packaging/metricsd.toml");
    let table: Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    assert!(
        table.is_empty(),
        "active settings in the example: {table:?}"
    );
    let mut loaded = config::load_from(Some(&path), &[]).unwrap();
    loaded.path = None;
    assert_eq!(loaded, Config::default());
}

#[test]
fn example_config_uncommented_is_the_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricsd.toml");
    let text = uncommented_example();
    std::fs::write(&path, &text).unwrap();
    let mut loaded = config::load_from(Some(&path), &[])
        .unwrap_or_else(|e| panic!("uncommented example does not load: {e}\n{text}"));
    loaded.path = None;
    assert_eq!(loaded, Config::default());
}

/// Keys per section ("" for top level) of a TOML document.
fn key_sets(table: &Table) -> Vec<(String, Vec<String>)> {
    let mut top: Vec<String> = Vec::new();
    let mut sections = Vec::new();
    for (key, value) in table {
        match value {
            Value::Table(t) => {
                let mut keys: Vec<String> = t.keys().cloned().collect();
                keys.sort();
                sections.push((key.clone(), keys));
            }
            _ => top.push(key.clone()),
        }
    }
    top.sort();
    sections.push((String::new(), top));
    sections.sort();
    sections
}

#[test]
fn example_config_lists_every_key() {
    let example: Table = uncommented_example().parse().unwrap();
    let effective: Table = Config::default().to_toml_redacted().parse().unwrap();
    assert_eq!(key_sets(&example), key_sets(&effective));
}

#[test]
fn example_config_explains_every_key() {
    // Each `# key = value` line is preceded by a prose comment line.
    let text = std::fs::read_to_string(repo_file("packaging/metricsd.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# ") {
            if is_key_line(rest) {
                let prev = lines[i - 1].strip_prefix("# ").unwrap_or("");
                assert!(
                    !prev.is_empty() && !is_key_line(prev) && !is_section_line(prev),
                    "no explanation above {line:?}"
                );
            }
        }
    }
}

/// The shipped logrotate rule pointed at a scratch state directory, and a
/// process named `name` (a copy of sh) whose pid is in the pid file: it
/// exits 0 on SIGHUP, 2 on SIGUSR1 (sh runs pending traps in signal order,
/// so a SIGHUP sent before a SIGUSR1 wins), or 1 after 30 s.
struct Rotation {
    dir: tempfile::TempDir,
    logrotate: &'static str,
    stand_in: std::process::Child,
}

impl Rotation {
    fn new(name: &str) -> Option<Rotation> {
        let logrotate = [
            "/usr/sbin/logrotate",
            "/sbin/logrotate",
            "/usr/bin/logrotate",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let Some(logrotate) = logrotate else {
            crate::common::skip_or_fail("logrotate not found (.ci/run installs it)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let rule = std::fs::read_to_string(repo_file("packaging/logrotate/metricsd"))
            .unwrap()
            .replace("/var/lib/metricsd", root.to_str().unwrap());
        std::fs::write(root.join("rule"), rule).unwrap();
        std::fs::write(root.join("metricsd.log"), "a line\n").unwrap();
        // Named like the daemon, or not: /proc/<pid>/comm is the file name.
        let shell = root.join(name);
        std::fs::copy("/bin/sh", &shell).unwrap();
        let stand_in = Command::new(&shell)
            .arg("-c")
            .arg("trap 'exit 0' HUP; trap 'exit 2' USR1; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 1")
            .spawn()
            .unwrap();
        std::fs::write(root.join("metricsd.pid"), format!("{}\n", stand_in.id())).unwrap();
        // The shell must have installed its trap before logrotate signals it.
        let trapped = || {
            std::fs::read_to_string(format!("/proc/{}/status", stand_in.id())).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("SigCgt:"))
                    .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
                    .is_some_and(|mask| {
                        let both = (1 << (libc::SIGHUP - 1)) | (1 << (libc::SIGUSR1 - 1));
                        mask & both == both
                    })
            })
        };
        assert!(
            crate::common::wait_until(std::time::Duration::from_secs(5), trapped),
            "shell never trapped HUP and USR1"
        );
        Some(Rotation {
            dir,
            logrotate,
            stand_in,
        })
    }

    fn rotate(&self) {
        let root = self.dir.path();
        let out = Command::new(self.logrotate)
            .arg("--force")
            .arg("--state")
            .arg(root.join("state"))
            .arg(root.join("rule"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(root.join("metricsd.log.1").exists(), "not rotated");
    }

    /// Whether the stand-in got SIGHUP before this SIGUSR1.
    fn got_hup(mut self) -> bool {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.stand_in.id() as i32, libc::SIGUSR1) };
        match self.stand_in.wait().unwrap().code() {
            Some(0) => true,
            Some(2) => false,
            other => panic!("the stand-in ended with {other:?}"),
        }
    }
}

#[test]
fn logrotate_rule_rotates_and_signals_the_daemon() {
    let Some(rotation) = Rotation::new("metricsd") else {
        return;
    };
    rotation.rotate();
    assert!(rotation.got_hup(), "the daemon was not signalled");
}

#[test]
fn logrotate_rule_leaves_a_process_that_took_over_a_stale_pid_alone() {
    let Some(rotation) = Rotation::new("postgres") else {
        return;
    };
    rotation.rotate();
    assert!(!rotation.got_hup(), "another program's process got SIGHUP");
}
