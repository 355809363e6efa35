//! The package under a real systemd (issue 10, SPEC §6-§8): a minimal Debian
//! (debootstrap --variant=minbase) gets the .deb with `dpkg -i` and is booted
//! with systemd-nspawn; the checks then run in order against that one boot,
//! from the host (WebSocket, /health) and inside (systemctl, journalctl,
//! `metricsd` as root). Needs root; on CI it fails rather than skip.

use crate::common::nspawn::{self, Container, Overlay};
use crate::common::stream_client::{connect, expect_welcome, http, next, next_json, Next};
use crate::common::{free_port, wait_for};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const UNIT: &str = "metricsd.service";
const CONFIG: &str = "/etc/metricsd/metricsd.toml";
const STATE_DIR: &str = "/var/lib/private/metricsd";
/// SPEC §6: a stop completes within 6 s of the signal.
const STOP_BUDGET: Duration = Duration::from_secs(6);
const LONG: Duration = Duration::from_secs(60);

/// The run's configuration: its own port (parallel runs do not collide on
/// the shared host network) and a short interval.
fn config(port: u16, interval: &str) -> String {
    format!("interval = \"{interval}\"\n\n[stream]\nlisten = \"127.0.0.1:{port}\"\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn packaged_service_under_a_booted_debian() {
    if !nspawn::usable_or_skip() {
        return;
    }
    let started = Instant::now();
    let deb = nspawn::package();
    let base = nspawn::base_root();
    let overlay = Overlay::mount(&base);
    install_package(&overlay, &deb);
    let port = free_port();
    std::fs::write(overlay.path(CONFIG), config(port, "1s")).unwrap();
    std::fs::copy(&deb, overlay.path(DEB_IN_ROOT)).unwrap();
    // A real (ext4, not overlay) filesystem for the disk figures to report.
    let data = overlay.scratch("data");
    let booting = Instant::now();
    let container = Container::boot(overlay, &[(data.as_path(), "/srv/data")]);
    eprintln!(
        "booted in {:.1?} ({:.1?} since the test began)",
        booting.elapsed(),
        started.elapsed()
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = runtime();

    let uid = service_is_active_notify_dynamic_user(&container);
    state_dir_belongs_to_the_service(&container, uid);
    rt.block_on(stream_and_health_answer_from_the_host(addr));
    journal_has_the_start_up_line_at_info(&container);
    no_warnings_in_the_journal(&container);
    rt.block_on(sandbox_hides_nothing_that_once_fills(&container, addr));
    queue_stats_as_root_reads_the_service_queue(&container);
    rt.block_on(reload_changes_the_cadence(&container, addr, port));
    no_warnings_in_the_journal(&container);
    a_reload_without_the_file_keeps_the_running_configuration(&container);
    a_root_only_secret_reaches_the_backend_as_a_credential(&container, port);
    restart_loses_no_queued_row(&container, port);
    rt.block_on(watchdog_restarts_a_stopped_daemon(&container, addr, port));
    reinstalling_after_a_remove_starts_it_again(&container);
    a_configuration_error_fails_the_unit_without_restarts(&container, port);
    rt.block_on(stop_is_clean_and_within_budget(&container, addr));
    eprintln!("systemd boot test done in {:.1?}", started.elapsed());
}

/// Exit 78 needs an administrator: the unit fails at once instead of being
/// restarted every RestartSec; fixed and started, it runs again.
fn a_configuration_error_fails_the_unit_without_restarts(c: &Container, port: u16) {
    let file = c.overlay().path(CONFIG);
    std::fs::write(&file, "intervall = 5\n").unwrap();
    let _ = c.exec(&["systemctl", "restart", UNIT]);
    wait_for("the unit failed on exit 78", LONG, || {
        c.unit_property(UNIT, "ActiveState") == "failed"
    });
    assert_eq!(c.unit_property(UNIT, "ExecMainStatus"), "78");
    assert_eq!(c.unit_property(UNIT, "NRestarts"), "0");
    std::fs::write(&file, config(port, "1s")).unwrap();
    c.ok(&["systemctl", "start", UNIT]);
    wait_for("metricsd active again", LONG, || {
        c.unit_property(UNIT, "ActiveState") == "active"
    });
}

/// Where the package is put inside the root, for installs in the booted system.
const DEB_IN_ROOT: &str = "/root/metricsd.deb";

/// `dpkg -r` stops the daemon and keeps its state; installing the package
/// again must start it again (dpkg passes the removed version as the old
/// one, as on an upgrade: a try-restart would leave it stopped).
fn reinstalling_after_a_remove_starts_it_again(c: &Container) {
    c.ok(&["dpkg", "-r", "metricsd"]);
    assert_eq!(c.unit_property(UNIT, "ActiveState"), "inactive");
    c.ok(&["dpkg", "-i", DEB_IN_ROOT]);
    wait_for("metricsd active after the reinstall", LONG, || {
        c.unit_property(UNIT, "ActiveState") == "active"
    });
}

/// `dpkg -i` into the minimal root: refused without procps (the package
/// declares what ExecReload runs), installed with it, and enabled.
fn install_package(overlay: &Overlay, deb: &Path) {
    let root = overlay.root();
    assert!(
        !overlay.path("/bin/kill").exists() && !overlay.path("/usr/bin/kill").exists(),
        "the minimal root should have no kill"
    );
    let refused = nspawn::dpkg(root, &["-i".as_ref(), deb]);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("depends on procps"),
        "dpkg -i without procps should fail on the dependency ({}):\n{text}",
        refused.status
    );
    let procps = std::fs::read_dir(overlay.path("/var/cache/apt/archives"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("procps_"))
        })
        .expect("procps .deb in the root's apt cache");
    let installed = nspawn::dpkg(root, &["-i".as_ref(), procps.as_path(), deb]);
    assert!(
        installed.status.success(),
        "dpkg -i procps metricsd failed:\n{}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let wants = overlay.path("/etc/systemd/system/multi-user.target.wants/metricsd.service");
    assert!(
        wants.symlink_metadata().is_ok(),
        "postinst did not enable the unit ({} missing)",
        wants.display()
    );
}

/// Returns the daemon's uid.
fn service_is_active_notify_dynamic_user(c: &Container) -> u32 {
    // A Type=notify unit is "active" only after READY=1.
    wait_for("metricsd.service active", LONG, || {
        c.unit_property(UNIT, "ActiveState") == "active"
    });
    let props = c.unit_properties(
        UNIT,
        &[
            "Type",
            "DynamicUser",
            "SubState",
            "MainPID",
            "NRestarts",
            "StatusText",
        ],
    );
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {props:?}"))
    };
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("DynamicUser"), "yes");
    assert_eq!(get("SubState"), "running");
    assert_eq!(get("NRestarts"), "0");
    // READY=1 came from the daemon with its status line (NotifyAccess=main).
    assert_eq!(get("StatusText"), "sampling every 1s");
    let pid = get("MainPID");
    let status = c.ok(&["cat", &format!("/proc/{pid}/status")]);
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids.len(), 4, "{uids:?}");
    assert!(
        uids.iter().all(|&u| u != 0 && u == uids[0]),
        "the daemon runs as uids {uids:?}, expected one non-root dynamic uid"
    );
    // The stream raised its open-files limit to the hard one through the
    // system call filter (glibc's setrlimit is prlimit64, which it allows).
    let limits = c.ok(&["cat", &format!("/proc/{pid}/limits")]);
    let open_files: Vec<u64> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .expect("Max open files line")
        .split_whitespace()
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        open_files[0] == open_files[1] && open_files[0] > 1024,
        "open files soft/hard {open_files:?}: the soft limit was not raised"
    );
    uids[0]
}

fn state_dir_belongs_to_the_service(c: &Container, uid: u32) {
    let owner = c.ok(&["stat", "-c", "%u %F", STATE_DIR]);
    assert_eq!(owner.trim(), format!("{uid} directory"), "{STATE_DIR}");
    let link = c.ok(&["readlink", "/var/lib/metricsd"]);
    assert_eq!(link.trim(), "private/metricsd");
    let queue = c.ok(&["stat", "-c", "%u", &format!("{STATE_DIR}/queue.db")]);
    assert_eq!(queue.trim(), uid.to_string(), "owner of queue.db");
}

/// The next snapshot on `ws` (skipping anything else), within `limit`.
async fn next_snapshot(ws: &mut crate::common::stream_client::Ws, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_json(ws, left).await;
        if message["type"] == "snapshot" {
            return message;
        }
    }
}

async fn stream_and_health_answer_from_the_host(addr: SocketAddr) {
    let mut ws = connect(addr).await;
    let welcome = expect_welcome(&mut ws).await;
    assert_eq!(welcome["interval"], 1, "{welcome}");
    let snapshot = next_snapshot(&mut ws, Duration::from_secs(10)).await;
    assert!(
        snapshot["seq"].as_u64().is_some_and(|s| s >= 1),
        "{snapshot}"
    );
    assert!(snapshot["metrics"].is_object(), "{snapshot}");
    let health = http(addr, "GET", "/health", &[]).await;
    assert_eq!(health.status, 200, "{}", health.body);
}

/// Lines of `journalctl -u metricsd -o json`.
fn journal_json(c: &Container) -> Vec<Value> {
    c.ok(&["journalctl", "-u", "metricsd", "-o", "json", "--no-pager"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
        .collect()
}

fn journal_has_the_start_up_line_at_info(c: &Container) {
    let pid = c.unit_property(UNIT, "MainPID");
    let mut found = None;
    wait_for("the start-up line in the journal", LONG, || {
        found = journal_json(c).into_iter().find(|e| {
            e["_PID"] == pid.as_str()
                && e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("metricsd ") && m.contains(" starting: "))
        });
        found.is_some()
    });
    let line = found.unwrap();
    // "<6>" was parsed by journald into the priority, not left in the text.
    assert_eq!(line["PRIORITY"], "6", "{line}");
    let message = line["MESSAGE"].as_str().unwrap();
    for part in [
        "interval 1s",
        "listen 127.0.0.1:",
        "queue /var/lib/metricsd/queue.db",
    ] {
        assert!(
            message.contains(part),
            "start-up line lacks {part:?}: {message}"
        );
    }
}

fn no_warnings_in_the_journal(c: &Container) {
    let out = c.ok(&[
        "journalctl",
        "-p",
        "warning",
        "-u",
        "metricsd",
        "--no-pager",
        "-q",
    ]);
    assert!(
        out.trim().is_empty(),
        "warnings or worse on a healthy host:\n{out}"
    );
}

/// Paths (`a.b[].c`) of every non-null leaf. Array positions are merged, and
/// the unit names under `metrics.units` too: which units are the top ones
/// differs between two readings; mounts and interfaces must match by name.
fn filled_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, v) in map {
                let key = if path == "metrics.units" { "*" } else { key };
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                filled_paths(v, &child, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                filled_paths(v, &format!("{path}[]"), out);
            }
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

#[test]
fn filled_paths_merge_arrays_and_unit_names() {
    let v: Value = serde_json::json!({
        "a": {"b": null, "c": 1},
        "l": [{"x": 1, "y": null}, {"x": null, "y": 2}],
        "metrics": {"units": {"a.service": {"cpu": 1}, "b.service": {"cpu": null}}}
    });
    let mut got = BTreeSet::new();
    filled_paths(&v, "", &mut got);
    let want: BTreeSet<String> = ["a.c", "l[].x", "l[].y", "metrics.units.*.cpu"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

async fn sandbox_hides_nothing_that_once_fills(c: &Container, addr: SocketAddr) {
    // Root's reading from a unit without any sandbox, so that it runs under
    // the container's own limits (cgroup, seccomp) like an admin's shell.
    let root_view: Value = serde_json::from_str(&c.ok(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--collect",
        "/usr/bin/metricsd",
        "once",
    ]))
    .unwrap();
    let mut ws = connect(addr).await;
    expect_welcome(&mut ws).await;
    // A sample taken after `once`, with a baseline behind it.
    next_snapshot(&mut ws, Duration::from_secs(10)).await;
    let service_view = next_snapshot(&mut ws, Duration::from_secs(10)).await;
    let (mut by_root, mut by_service) = (BTreeSet::new(), BTreeSet::new());
    filled_paths(&root_view, "", &mut by_root);
    filled_paths(&service_view, "", &mut by_service);
    assert!(
        by_root
            .iter()
            .any(|p| p.starts_with("metrics.disk.disk_usage./srv/data.")),
        "the bound ext4 filesystem is not in `once`: {by_root:?}"
    );
    eprintln!(
        "`once` as root filled {} fields, the service {}",
        by_root.len(),
        by_service.len()
    );
    // Units by name: the service sees its own unit and its neighbours
    // through the sandbox wherever root's reading does.
    let unit_names = |v: &Value| -> BTreeSet<String> {
        v["metrics"]["units"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let (root_units, service_units) = (unit_names(&root_view), unit_names(&service_view));
    eprintln!("units seen by root: {root_units:?}; by the service: {service_units:?}");
    if root_units.contains("metricsd.service") {
        assert!(
            service_units.contains("metricsd.service"),
            "the service does not see its own unit: {service_units:?}"
        );
    }
    assert!(
        service_units.len() * 2 >= root_units.len().min(10),
        "the service sees far fewer units than root: {service_units:?} vs {root_units:?}"
    );
    // The top-CPU list names only processes that ran in the last interval,
    // so whether it has entries depends on activity, not on the sandbox;
    // the top-memory list shows the process table is visible.
    assert!(
        by_service
            .iter()
            .any(|p| p.starts_with("metrics.processes.top_memory_processes[].")),
        "the service sees no processes: {service_view}"
    );
    let hidden: Vec<&String> = by_root
        .difference(&by_service)
        .filter(|p| !p.starts_with("metrics.processes.top_cpu_processes[]."))
        .collect();
    assert!(
        hidden.is_empty(),
        "null (or absent) under the unit but filled by `metricsd once` as root: {hidden:?}\n\
         service snapshot: {service_view}"
    );
}

fn queue_stats(c: &Container) -> Value {
    serde_json::from_str(&c.ok(&["metricsd", "queue", "stats"])).unwrap()
}

fn queue_stats_as_root_reads_the_service_queue(c: &Container) {
    let first = queue_stats(c);
    assert_eq!(first["db_path"], "/var/lib/metricsd/queue.db", "{first}");
    let pending = first["pending"].as_u64().expect("pending");
    assert!(pending >= 1, "{first}");
    // The live file: the running service's inserts show in the next reading.
    wait_for("the service's inserts in queue stats", LONG, || {
        queue_stats(c)["pending"].as_u64() > Some(pending)
    });
    // Root's reading left the files usable by the service.
    let owners = c.ok(&[
        "sh",
        "-c",
        &format!("stat -c '%n %u' {STATE_DIR}/queue.db*"),
    ]);
    let uid = c.ok(&["stat", "-c", "%u", STATE_DIR]);
    for line in owners.lines() {
        assert!(line.ends_with(&format!(" {}", uid.trim())), "{line}");
    }
}

fn timestamp(snapshot: &Value) -> SystemTime {
    humantime::parse_rfc3339(snapshot["timestamp"].as_str().unwrap()).unwrap()
}

fn gaps(snapshots: &[Value]) -> Vec<Duration> {
    snapshots
        .windows(2)
        .map(|w| timestamp(&w[1]).duration_since(timestamp(&w[0])).unwrap())
        .collect()
}

async fn reload_changes_the_cadence(c: &Container, addr: SocketAddr, port: u16) {
    let pid = c.unit_property(UNIT, "MainPID");
    let mut ws = connect(addr).await;
    expect_welcome(&mut ws).await;
    let mut before = Vec::new();
    for _ in 0..4 {
        before.push(next_snapshot(&mut ws, Duration::from_secs(10)).await);
    }
    let before = gaps(&before);
    assert!(
        before.iter().any(|g| *g < Duration::from_millis(1500)),
        "at 1 s the gaps were {before:?}"
    );

    std::fs::write(c.overlay().path(CONFIG), config(port, "3s")).unwrap();
    c.ok(&["systemctl", "reload", UNIT]);
    wait_for("the reload in the journal", LONG, || {
        journal_json(c).iter().any(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("configuration reloaded: interval 3s"))
        })
    });
    assert_eq!(c.unit_property(UNIT, "MainPID"), pid, "reload restarted it");
    assert_eq!(c.unit_property(UNIT, "ActiveState"), "active");
    // RELOADING=1 was followed by READY=1 with the new status.
    wait_for("the status after the reload", LONG, || {
        c.unit_property(UNIT, "StatusText") == "sampling every 3s"
    });

    let mut ws = connect(addr).await;
    let welcome = expect_welcome(&mut ws).await;
    assert_eq!(welcome["interval"], 3, "{welcome}");
    // The first message is the latest snapshot, maybe taken before the
    // reload; the first sample after a reload may come sooner (half an
    // interval at least): the two gaps after those are the new cadence.
    next_snapshot(&mut ws, Duration::from_secs(10)).await;
    next_snapshot(&mut ws, Duration::from_secs(15)).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(next_snapshot(&mut ws, Duration::from_secs(15)).await);
    }
    let after = gaps(&after);
    assert!(
        after.iter().all(|g| *g >= Duration::from_millis(2500)),
        "at 3 s the gaps were {after:?}"
    );
}

/// The file the daemon started from is gone (a package purge, a config
/// tool that rewrites it in two steps): a reload is refused and the running
/// configuration kept, not replaced by the built-in defaults.
fn a_reload_without_the_file_keeps_the_running_configuration(c: &Container) {
    let file = c.overlay().path(CONFIG);
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();
    c.ok(&["systemctl", "reload", UNIT]);
    wait_for("the refused reload in the journal", LONG, || {
        journal_json(c).iter().any(|e| {
            e["MESSAGE"].as_str().is_some_and(|m| {
                m.contains("reload rejected, keeping the running configuration")
                    && m.contains(CONFIG)
            })
        })
    });
    std::fs::rename(&aside, &file).unwrap();
    assert_eq!(c.unit_property(UNIT, "ActiveState"), "active");
    wait_for("the status after the refused reload", LONG, || {
        c.unit_property(UNIT, "StatusText") == "sampling every 3s"
    });
}

/// README's way to give the transient user a secret only root may read:
/// `LoadCredential=` in a drop-in, and `token_file` naming the copy systemd
/// makes for the service.
fn a_root_only_secret_reaches_the_backend_as_a_credential(c: &Container, port: u16) {
    let backend = crate::common::backend::Backend::start();
    let secret = c.overlay().path("/etc/metricsd/token");
    std::fs::write(&secret, "s3cret-by-credential\n").unwrap();
    c.ok(&["chmod", "0600", "/etc/metricsd/token"]);
    let drop_in = c
        .overlay()
        .path("/etc/systemd/system/metricsd.service.d/credential.conf");
    std::fs::create_dir_all(drop_in.parent().unwrap()).unwrap();
    std::fs::write(
        &drop_in,
        "[Service]\nLoadCredential=token:/etc/metricsd/token\n",
    )
    .unwrap();
    let with_backend = format!(
        "{}\n[backend]\nurl = \"{}\"\ntoken_file = \"/run/credentials/metricsd.service/token\"\nsplay = \"0s\"\n",
        config(port, "1s"),
        backend.url()
    );
    std::fs::write(c.overlay().path(CONFIG), with_backend).unwrap();
    c.ok(&["systemctl", "daemon-reload"]);
    c.ok(&["systemctl", "restart", UNIT]);
    assert!(
        backend.wait_until(LONG, |b| b.requests().iter().any(|r| {
            r.header("authorization") == Some("Bearer s3cret-by-credential")
        })),
        "no POST with the credential's token; unit {}, journal: {:?}",
        c.unit_property(UNIT, "ActiveState"),
        journal_json(c)
            .iter()
            .rev()
            .take(10)
            .map(|e| e["MESSAGE"].to_string())
            .collect::<Vec<_>>()
    );
    std::fs::remove_file(&drop_in).unwrap();
    std::fs::remove_file(&secret).unwrap();
    std::fs::write(c.overlay().path(CONFIG), config(port, "1s")).unwrap();
    c.ok(&["systemctl", "daemon-reload"]);
    c.ok(&["systemctl", "restart", UNIT]);
}

fn queued_event_ids(c: &Container) -> Vec<String> {
    c.ok(&["metricsd", "queue", "peek", "-n", "100000"])
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            row["event_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// With a backend that refuses every connection, rows stay pending: a
/// restart must keep every one, in order.
fn restart_loses_no_queued_row(c: &Container, port: u16) {
    let down = free_port();
    let with_backend = format!(
        "{}\n[backend]\nurl = \"http://127.0.0.1:{down}/ingest\"\n",
        config(port, "1s")
    );
    std::fs::write(c.overlay().path(CONFIG), with_backend).unwrap();
    c.ok(&["systemctl", "reload", UNIT]);
    let mut before = Vec::new();
    wait_for("rows pending for the unreachable backend", LONG, || {
        before = queued_event_ids(c);
        before.len() >= 3
    });
    let pid = c.unit_property(UNIT, "MainPID");
    c.ok(&["systemctl", "restart", UNIT]);
    assert_eq!(c.unit_property(UNIT, "ActiveState"), "active");
    assert_ne!(c.unit_property(UNIT, "MainPID"), pid, "not restarted");
    let mut after = Vec::new();
    wait_for("a row queued after the restart", LONG, || {
        after = queued_event_ids(c);
        after.len() > before.len()
    });
    let kept: BTreeSet<&String> = after.iter().collect();
    let lost: Vec<&String> = before.iter().filter(|id| !kept.contains(id)).collect();
    assert!(lost.is_empty(), "rows lost across the restart: {lost:?}");
    // Oldest first, the old rows ahead of the new ones.
    assert_eq!(&after[..before.len()], &before[..]);
}

fn watchdog_timestamp(c: &Container) -> u64 {
    c.unit_property(UNIT, "WatchdogTimestampMonotonic")
        .parse()
        .unwrap()
}

async fn watchdog_restarts_a_stopped_daemon(c: &Container, addr: SocketAddr, port: u16) {
    std::fs::write(c.overlay().path(CONFIG), config(port, "1s")).unwrap();
    let dropin = c.overlay().path("/etc/systemd/system/metricsd.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("watchdog.conf"), "[Service]\nWatchdogSec=4s\n").unwrap();
    c.ok(&["systemctl", "daemon-reload"]);
    c.ok(&["systemctl", "restart", UNIT]);
    assert_eq!(c.unit_property(UNIT, "WatchdogUSec"), "4s");
    // The daemon pings: systemd records the time of each WATCHDOG=1.
    for _ in 0..2 {
        let last = watchdog_timestamp(c);
        wait_for("a watchdog ping", LONG, || watchdog_timestamp(c) > last);
    }
    let restarts: u32 = c.unit_property(UNIT, "NRestarts").parse().unwrap();
    let pid = c.unit_property(UNIT, "MainPID");
    c.ok(&["kill", "-STOP", &pid]);
    wait_for("systemd to restart the stopped daemon", LONG, || {
        let props = c.unit_properties(UNIT, &["NRestarts", "MainPID", "ActiveState"]);
        let get = |k: &str| props.iter().find(|(key, _)| key == k).unwrap().1.clone();
        get("NRestarts").parse::<u32>().unwrap() > restarts
            && get("MainPID") != pid
            && get("MainPID") != "0"
            && get("ActiveState") == "active"
    });
    let timed_out = journal_json(c).iter().any(|e| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("Watchdog timeout"))
    });
    assert!(timed_out, "no watchdog timeout in the journal");
    // And the new daemon serves again.
    let mut ws = connect(addr).await;
    expect_welcome(&mut ws).await;
    next_snapshot(&mut ws, Duration::from_secs(10)).await;
}

async fn stop_is_clean_and_within_budget(c: &Container, addr: SocketAddr) {
    let mut ws = connect(addr).await;
    expect_welcome(&mut ws).await;
    next_snapshot(&mut ws, Duration::from_secs(10)).await;
    let mut stop = c.command(&["systemctl", "stop", UNIT]);
    let began = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || {
        let out = stop.output().expect("run systemctl stop");
        (out, began.elapsed())
    });
    // The connected client is told the daemon is going away.
    loop {
        match next(&mut ws, Duration::from_secs(10)).await {
            Next::Json(_) => continue,
            Next::Close(code) => {
                assert_eq!(code, Some(CloseCode::Away));
                break;
            }
            Next::Ended(e) => panic!("stream ended without a close frame: {e}"),
        }
    }
    let (out, took) = stopping.await.unwrap();
    assert!(
        out.status.success(),
        "systemctl stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took <= STOP_BUDGET, "systemctl stop took {took:?}");
    let props = c.unit_properties(
        UNIT,
        &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"],
    );
    let get = |k: &str| props.iter().find(|(key, _)| key == k).unwrap().1.as_str();
    assert_eq!(get("ActiveState"), "inactive", "{props:?}");
    assert_eq!(get("Result"), "success", "{props:?}");
    // CLD_EXITED with status 0, not killed by a signal.
    assert_eq!(get("ExecMainCode"), "1", "{props:?}");
    assert_eq!(get("ExecMainStatus"), "0", "{props:?}");
    let wal = c.overlay().path(&format!("{STATE_DIR}/queue.db-wal"));
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_bytes, 0, "{} after a clean stop", wal.display());
    assert!(c.overlay().path(&format!("{STATE_DIR}/queue.db")).is_file());
}
