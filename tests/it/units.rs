//! The units collector (SPEC §3.3, Units) on the cgroup fixture trees
//! (tests/fixtures/cgroup-unified, cgroup-hybrid: see the README there),
//! and on this host's own cgroup v2 tree with a real busy process.

use crate::common::cgroup::{LiveUnit, BUSY};
use metricsd::collect::units::{self, UnitMetrics, UnitsCollector};
use metricsd::collect::Roots;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writable copy of a fixture tree, used as the sys root.
struct Tree {
    dir: tempfile::TempDir,
    /// The cgroup v2 root inside it.
    v2: PathBuf,
}

impl Tree {
    fn new(fixture: &str) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(fixture),
            dir.path(),
        );
        let v2 = units::find_v2_root(dir.path()).expect("fixture has a v2 root");
        Tree { dir, v2 }
    }

    fn roots(&self) -> Roots {
        Roots {
            proc: self.dir.path().join("proc"),
            sys: self.dir.path().to_path_buf(),
            ..Roots::default()
        }
    }

    fn unit(&self, rel: &str) -> PathBuf {
        self.v2.join("system.slice").join(rel)
    }

    fn set_usage(&self, rel: &str, usec: u64) {
        fs::write(
            self.unit(rel).join("cpu.stat"),
            format!("usage_usec {usec}\nuser_usec 0\nsystem_usec 0\n"),
        )
        .unwrap();
    }

    fn usage(&self, rel: &str) -> u64 {
        let text = fs::read_to_string(self.unit(rel).join("cpu.stat")).unwrap();
        crate::common::cgroup::usage_usec(&text)
    }

    fn add_usage(&self, rel: &str, usec: u64) {
        self.set_usage(rel, self.usage(rel) + usec);
    }

    fn collector(&self, globs: &[&str], top: usize) -> UnitsCollector {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        UnitsCollector::with_selection(&self.roots(), &globs, top)
    }
}

fn names(map: &BTreeMap<String, UnitMetrics>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

/// A baseline read at `t0`, then a read 2 s later (on the collector's clock).
fn two_reads(c: &mut UnitsCollector, between: impl FnOnce()) -> BTreeMap<String, UnitMetrics> {
    let t0 = Instant::now();
    c.read(t0).unwrap();
    between();
    c.read(t0 + Duration::from_secs(2)).unwrap()
}

#[test]
fn a_small_io_rate_is_kept_exact_for_the_byte_rates_of_metrics() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["nginx.service"], 10);
    let m = two_reads(&mut c, || {
        // 8 KiB more written in 2 s: 4 KiB/s, which is 0.00 in MiB/s.
        let io = "8:0 rbytes=1048576 wbytes=2105344 rios=10 wios=21 dbytes=0 dios=0\n\
                  253:0 rbytes=1048576 wbytes=0 rios=5 wios=0 dbytes=0 dios=0\n";
        fs::write(tree.unit("nginx.service/io.stat"), io).unwrap();
    });
    let write = m["nginx.service"].io_write_mb_per_sec.unwrap();
    assert_eq!(write * MIB as f64, 4096.0);
}

#[test]
fn unified_tree_gives_every_field_of_matching_units() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["*.service"], 10);
    assert_eq!(
        c.v2_root(),
        Some(tree.dir.path().join("fs/cgroup").as_path())
    );
    let m = two_reads(&mut c, || {
        tree.add_usage("nginx.service", 500_000);
        let io = "8:0 rbytes=2097152 wbytes=6291456 rios=10 wios=20 dbytes=0 dios=0\n\
                  253:0 rbytes=1048576 wbytes=0 rios=5 wios=0 dbytes=0 dios=0\n";
        fs::write(tree.unit("nginx.service/io.stat"), io).unwrap();
    });
    // Services in system.slice and nested slices; not sockets, not the
    // slices themselves, not a service's own sub-cgroups, nothing outside
    // system.slice.
    assert_eq!(
        names(&m),
        [
            "cron.service",
            "docker.service",
            "getty@tty1.service",
            "nginx.service",
            "postgresql.service"
        ]
    );
    let nginx = &m["nginx.service"];
    assert_eq!(
        nginx,
        &UnitMetrics {
            cpu_percent: Some(25.0),
            memory_mb: Some(50.0),
            tasks: Some(3),
            io_read_mb_per_sec: Some(0.5),
            io_write_mb_per_sec: Some(2.0),
            cpu_pressure_some_avg10: Some(1.5),
            memory_pressure_some_avg10: Some(0.25),
            io_pressure_some_avg10: Some(2.0),
            cpu_usage_usec: Some(1_500_000),
            memory_bytes: Some(50 * MIB),
            io_read_bytes: Some(3 * MIB),
            io_write_bytes: Some(6 * MIB),
        }
    );
    // Idle units: rates 0 (measured, not missing); an empty io.stat is no I/O.
    let cron = &m["cron.service"];
    assert_eq!(cron.cpu_percent, Some(0.0));
    assert_eq!(cron.io_read_bytes, Some(0));
    assert_eq!(cron.io_read_mb_per_sec, Some(0.0));
    assert_eq!(cron.tasks, Some(1));
}

#[test]
fn hybrid_tree_has_no_memory_or_tasks() {
    let tree = Tree::new("cgroup-hybrid");
    let mut c = tree.collector(&["*.service"], 10);
    assert_eq!(
        c.v2_root(),
        Some(tree.dir.path().join("fs/cgroup/unified").as_path())
    );
    let m = two_reads(&mut c, || tree.add_usage("nginx.service", 1_000_000));
    assert_eq!(
        names(&m),
        ["cron.service", "getty@tty1.service", "nginx.service"]
    );
    let nginx = &m["nginx.service"];
    assert_eq!(nginx.cpu_percent, Some(50.0));
    assert_eq!(nginx.cpu_usage_usec, Some(2_000_000));
    // The v2 tree of a hybrid host has no memory, pids or io controller:
    // null, not 0 (the v1 memory hierarchy is not read).
    assert_eq!(nginx.memory_mb, None);
    assert_eq!(nginx.memory_bytes, None);
    assert_eq!(nginx.tasks, None);
    assert_eq!(nginx.io_read_mb_per_sec, None);
    assert_eq!(nginx.io_write_bytes, None);
    // Pressure is part of the core and is there.
    assert_eq!(nginx.cpu_pressure_some_avg10, Some(1.5));
    assert_eq!(nginx.io_pressure_some_avg10, Some(2.0));
}

#[test]
fn globs_select_the_units() {
    let tree = Tree::new("cgroup-unified");
    let read = |globs: &[&str]| {
        let mut c = tree.collector(globs, 100);
        names(&c.read(Instant::now()).unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        read(&["nginx.*", "getty@*"]),
        ["getty@tty1.service", "nginx.service"]
    );
    assert_eq!(read(&["*.socket"]), ["ssh.socket"]);
    assert_eq!(read(&["postgres*.service"]), ["postgresql.service"]);
    assert!(read(&[]).is_empty(), "units = [] disables");
    assert_eq!(
        read(&["*"]),
        [
            "cron.service",
            "docker.service",
            "getty@tty1.service",
            "nginx.service",
            "postgresql.service",
            "ssh.socket",
            "system-getty.slice",
        ]
    );
    // From the configuration's `collect.units` and `collect.top_units`.
    let mut config = metricsd::config::Config::default().collect;
    assert_eq!(config.units, ["*.service"]);
    let mut c = UnitsCollector::new(&tree.roots(), &config);
    assert_eq!(c.read(Instant::now()).unwrap().len(), 5);
    config.units = vec!["*.socket".into(), "cron.*".into()];
    c.set_config(&config);
    assert_eq!(
        names(&c.read(Instant::now()).unwrap()),
        ["cron.service", "ssh.socket"]
    );
    config.top_units = 1;
    c.set_config(&config);
    assert_eq!(c.read(Instant::now()).unwrap().len(), 1);

    // A reload that changes the globs drops the units that no longer match.
    let mut c = tree.collector(&["*.service"], 100);
    assert_eq!(c.read(Instant::now()).unwrap().len(), 5);
    c.set_selection(&["cron.service".to_string()], 100);
    assert_eq!(names(&c.read(Instant::now()).unwrap()), ["cron.service"]);
}

#[test]
fn top_units_are_chosen_by_cpu_then_memory() {
    let tree = Tree::new("cgroup-unified");
    // Idle since the previous sample: the biggest by memory (postgresql
    // 200 MiB, docker 80 MiB) win.
    let mut c = tree.collector(&["*.service"], 2);
    let m = two_reads(&mut c, || {});
    assert_eq!(names(&m), ["docker.service", "postgresql.service"]);

    // CPU first: the two busiest win over the biggest.
    let mut c = tree.collector(&["*.service"], 2);
    let m = two_reads(&mut c, || {
        tree.add_usage("cron.service", 300_000);
        tree.add_usage("system-getty.slice/getty@tty1.service", 200_000);
    });
    assert_eq!(names(&m), ["cron.service", "getty@tty1.service"]);
    assert_eq!(m["cron.service"].cpu_percent, Some(15.0));
    assert_eq!(m["getty@tty1.service"].cpu_percent, Some(10.0));

    // Equal CPU: memory decides (nginx 50 MiB > getty 2 MiB > cron 1 MiB).
    let mut c = tree.collector(&["*.service"], 2);
    let m = two_reads(&mut c, || {
        for unit in [
            "cron.service",
            "nginx.service",
            "system-getty.slice/getty@tty1.service",
        ] {
            tree.add_usage(unit, 1_000_000);
        }
    });
    assert_eq!(names(&m), ["getty@tty1.service", "nginx.service"]);
}

/// Replaces a unit's cgroup by a new directory (a new inode, as systemd
/// makes on a restart) with the given usage.
fn restart(tree: &Tree, rel: &str, usec: u64) {
    let old = tree.unit(rel);
    let fresh = old.with_extension("restarting");
    copy_tree(&old, &fresh);
    fs::remove_dir_all(&old).unwrap();
    fs::rename(&fresh, &old).unwrap();
    tree.set_usage(rel, usec);
}

#[test]
fn a_restarted_unit_gives_no_huge_or_negative_rate() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["nginx.service"], 10);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    c.read(at(0)).unwrap();

    // A new cgroup whose usage is already above the old one: without the
    // inode check this would read as 2.5 s of CPU in 1 s.
    restart(&tree, "nginx.service", 3_500_000);
    let m = c.read(at(1)).unwrap();
    assert_eq!(m["nginx.service"].cpu_percent, Some(0.0));
    assert_eq!(m["nginx.service"].io_read_mb_per_sec, Some(0.0));
    assert_eq!(m["nginx.service"].cpu_usage_usec, Some(3_500_000));

    // Measured from the new cgroup from then on.
    tree.add_usage("nginx.service", 250_000);
    let m = c.read(at(2)).unwrap();
    assert_eq!(m["nginx.service"].cpu_percent, Some(25.0));

    // Usage going down in the same cgroup (a reset): 0, not negative.
    tree.set_usage("nginx.service", 10);
    let m = c.read(at(3)).unwrap();
    assert_eq!(m["nginx.service"].cpu_percent, Some(0.0));
    tree.add_usage("nginx.service", 100_000);
    let m = c.read(at(4)).unwrap();
    assert_eq!(m["nginx.service"].cpu_percent, Some(10.0));
}

#[test]
fn units_that_vanish_are_dropped_and_new_ones_measured_from_their_first_reading() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["*.service"], 10);
    let t0 = Instant::now();
    c.read(t0).unwrap();

    fs::remove_dir_all(tree.unit("cron.service")).unwrap();
    copy_tree(
        &tree.unit("nginx.service"),
        &tree.unit("system-getty.slice/getty@tty2.service"),
    );
    tree.set_usage("system-getty.slice/getty@tty2.service", 7_000_000);
    let m = c.read(t0 + Duration::from_secs(1)).unwrap();
    assert!(!m.contains_key("cron.service"), "{:?}", names(&m));
    // First reading of a new unit: counters, and rates 0 (not made up from
    // its whole lifetime's usage).
    let tty2 = &m["getty@tty2.service"];
    assert_eq!(tty2.cpu_usage_usec, Some(7_000_000));
    assert_eq!(tty2.cpu_percent, Some(0.0));
    assert_eq!(tty2.memory_mb, Some(50.0));

    tree.add_usage("system-getty.slice/getty@tty2.service", 400_000);
    let m = c.read(t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(m["getty@tty2.service"].cpu_percent, Some(20.0));

    // A whole nested slice vanishing takes its units with it.
    fs::remove_dir_all(tree.unit("system-getty.slice")).unwrap();
    let m = c.read(t0 + Duration::from_secs(4)).unwrap();
    assert_eq!(
        names(&m),
        ["docker.service", "nginx.service", "postgresql.service"]
    );

    // And one that comes back is measured afresh.
    copy_tree(
        &tree.v2.join("system.slice/nginx.service"),
        &tree.unit("cron.service"),
    );
    let m = c.read(t0 + Duration::from_secs(5)).unwrap();
    assert_eq!(m["cron.service"].cpu_percent, Some(0.0));
}

/// Removes the directory at `path` and makes it again from a copy of its
/// old contents, as systemd does with a slice it stops and starts. The new
/// one is made before the old one goes, so that it cannot get the old
/// inode number back.
fn remake(path: &Path) {
    let old = path.with_extension("old");
    fs::rename(path, &old).unwrap();
    copy_tree(&old, path);
    fs::remove_dir_all(&old).unwrap();
}

#[test]
fn a_slice_made_again_keeps_its_units_measured() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["*.service"], 10);
    let t0 = Instant::now();
    let first = c.read(t0).unwrap();
    let all: Vec<String> = names(&first).iter().map(|n| n.to_string()).collect();
    assert!(all.iter().any(|n| n == "getty@tty1.service"), "{all:?}");

    // A nested slice, then system.slice itself: each time every unit is
    // still found (through the new directory, not the deleted one).
    remake(&tree.unit("system-getty.slice"));
    let m = c.read(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(names(&m), all);
    remake(&tree.v2.join("system.slice"));
    let m = c.read(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(names(&m), all);
    // And they are measured: a new cgroup starts from its first reading.
    tree.add_usage("nginx.service", 100_000);
    let m = c.read(t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(m["nginx.service"].cpu_percent, Some(10.0));
}

#[test]
fn without_cgroup_v2_or_system_slice_there_are_no_units() {
    // cgroup v1 only: no cgroup.controllers anywhere.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(
        dir.path()
            .join("fs/cgroup/memory/system.slice/nginx.service"),
    )
    .unwrap();
    let roots = Roots {
        proc: dir.path().join("proc"),
        sys: dir.path().to_path_buf(),
        ..Roots::default()
    };
    let mut c = UnitsCollector::with_selection(&roots, &["*".to_string()], 10);
    assert_eq!(c.v2_root(), None);
    assert_eq!(c.read(Instant::now()).unwrap(), BTreeMap::new());

    // v2 without systemd: no system.slice.
    let tree = Tree::new("cgroup-unified");
    fs::remove_dir_all(tree.v2.join("system.slice")).unwrap();
    let mut c = tree.collector(&["*"], 10);
    assert_eq!(c.read(Instant::now()).unwrap(), BTreeMap::new());
}

#[test]
fn malformed_files_give_null_fields_not_zeros() {
    let tree = Tree::new("cgroup-unified");
    let mut c = tree.collector(&["nginx.service", "cron.service"], 10);
    let m = two_reads(&mut c, || {
        fs::write(tree.unit("nginx.service/memory.current"), "lots\n").unwrap();
        fs::write(tree.unit("nginx.service/cpu.pressure"), "garbage\n").unwrap();
        fs::write(tree.unit("cron.service/cpu.stat"), "nothing here\n").unwrap();
    });
    let nginx = &m["nginx.service"];
    assert_eq!(nginx.memory_mb, None);
    assert_eq!(nginx.memory_bytes, None);
    assert_eq!(nginx.cpu_pressure_some_avg10, None);
    assert_eq!(nginx.tasks, Some(3));
    // Without its CPU usage a unit cannot be ranked: left out this sample.
    assert!(!m.contains_key("cron.service"));
}

// ------------------------------------------------------------- live host

#[test]
fn live_unit_matches_an_independent_reading_of_its_cgroup() {
    let Some(v2) = units::find_v2_root(Path::new("/sys")) else {
        crate::common::skip_or_fail("this host has no cgroup v2 hierarchy (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)");
        return;
    };
    let mut unit = match LiveUnit::start(&v2, BUSY) {
        Ok(unit) => unit,
        Err(why) => {
            crate::common::skip_or_fail(&format!(
                "no unit cgroup with a busy process can be made here: {why}"
            ));
            return;
        }
    };
    let mut c = UnitsCollector::with_selection(&Roots::default(), &[unit.name.clone()], 10);
    assert_eq!(c.v2_root(), Some(v2.as_path()));

    let r0 = unit.usage();
    let t_a = Instant::now();
    let first = c.read(t_a).unwrap();
    let r1 = unit.usage();
    let task_a = unit.task_cpu_secs();
    crate::common::wait_for(
        "half a second of CPU in the unit",
        Duration::from_secs(20),
        || unit.usage() >= r1 + 500_000,
    );
    let task_b = unit.task_cpu_secs();
    let psi_before = unit
        .file("cpu.pressure")
        .map(|t| crate::common::cgroup::some_avg10(&t));
    let memory_before = unit.file("memory.current");
    let r2 = unit.usage();
    let t_b = Instant::now();
    let second = c.read(t_b).unwrap();
    let r3 = unit.usage();
    let psi_after = unit
        .file("cpu.pressure")
        .map(|t| crate::common::cgroup::some_avg10(&t));
    let memory_after = unit.file("memory.current");
    let tasks_now = unit.file("pids.current");

    // The raw counter is the cgroup's own, read within each window.
    let raw_a = first[&unit.name].cpu_usage_usec.unwrap();
    let m = &second[&unit.name];
    let raw_b = m.cpu_usage_usec.unwrap();
    assert!((r0..=r1).contains(&raw_a), "{r0} <= {raw_a} <= {r1}");
    assert!((r2..=r3).contains(&raw_b), "{r2} <= {raw_b} <= {r3}");

    // cpu_percent is that counter's rate over the collector's interval,
    // and agrees with the busy task's own CPU time over the same window.
    let secs = (t_b - t_a).as_secs_f64();
    let expected = (raw_b - raw_a) as f64 / secs / 1e4;
    let cpu = m.cpu_percent.unwrap();
    assert!((cpu - expected).abs() <= 0.01, "{cpu} vs {expected}");
    let task_share = (task_b - task_a) / secs * 100.0;
    assert!(
        (cpu - task_share).abs() <= 15.0,
        "unit {cpu}% vs task {task_share}%"
    );
    // It ran (we waited for half a second of its CPU) and, being one
    // single-threaded process, used at most one core (the share it got
    // depends on what else this busy machine runs).
    assert!(raw_b - raw_a >= 500_000, "{raw_a} -> {raw_b}");
    assert!(cpu > 0.0 && cpu <= 105.0, "one busy process: {cpu}%");

    // Pressure as the kernel gave it just before or just after.
    let psi = m.cpu_pressure_some_avg10;
    assert!(
        psi_before.is_none() && psi.is_none()
            || psi == psi_before.flatten()
            || psi == psi_after.flatten(),
        "{psi:?} vs {psi_before:?} / {psi_after:?}"
    );

    // Memory and tasks exactly where this tree has the controllers (a
    // hybrid host's v2 tree has neither: null, not 0).
    match (memory_before, memory_after) {
        (Some(a), Some(b)) => {
            let (a, b) = (
                crate::common::cgroup::number(&a),
                crate::common::cgroup::number(&b),
            );
            let got = m.memory_bytes.expect("memory.current exists");
            // Read between the two (a page or so may come and go around them).
            const SLACK: u64 = 1024 * 1024;
            assert!(
                got + SLACK >= a.min(b) && got <= a.max(b) + SLACK,
                "{got} vs {a}..{b}"
            );
        }
        _ => {
            assert_eq!(m.memory_mb, None);
            assert_eq!(m.memory_bytes, None);
        }
    }
    match tasks_now {
        Some(t) => assert_eq!(m.tasks, Some(crate::common::cgroup::number(&t))),
        None => assert_eq!(m.tasks, None),
    }
    if unit.file("io.stat").is_none() {
        assert_eq!(m.io_read_mb_per_sec, None);
    }
    eprintln!("live unit {} under {}: {m:?}", unit.name, v2.display());

    // Its files stay open between samples (cgroupfs re-reads them afresh)...
    let kept_running = c.kept_open();
    assert!(
        kept_running >= 2,
        "system.slice and cpu.stat at least: {kept_running}"
    );

    // ...and are closed once it is gone.
    unit.stop();
    let m = c.read(Instant::now()).unwrap();
    assert!(m.is_empty(), "{m:?}");
    assert!(c.kept_open() < kept_running, "{} open", c.kept_open());
}

#[test]
fn once_reports_a_live_unit_with_nulls_where_the_tree_has_no_controller() {
    let Some(v2) = units::find_v2_root(Path::new("/sys")) else {
        crate::common::skip_or_fail("this host has no cgroup v2 hierarchy");
        return;
    };
    let unit = match LiveUnit::start(&v2, crate::common::cgroup::IDLE) {
        Ok(unit) => unit,
        Err(why) => {
            crate::common::skip_or_fail(&format!("no unit cgroup can be made here: {why}"));
            return;
        }
    };
    // Settled: the shell has become `sleep` and sleeps (its start-up CPU
    // is behind it).
    crate::common::wait_for(
        "the unit's process to sleep",
        Duration::from_secs(10),
        || {
            let stat = fs::read_to_string(format!("/proc/{}/stat", unit.pid)).unwrap_or_default();
            stat.contains("(sleep) S ")
        },
    );
    let setup = crate::common::daemon::Setup::new(
        "1s",
        "",
        &format!("[collect]\nunits = [\"{}\"]\n", unit.name),
    );
    let out = setup.cli(&["once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units = json["metrics"]["units"].as_object().expect("units object");
    assert_eq!(units.keys().collect::<Vec<_>>(), [&unit.name]);
    let u = &units[&unit.name];
    // An idle process: a measured 0-ish rate, not null.
    let cpu = u["cpu_percent"].as_f64().expect("cpu_percent is a number");
    assert!((0.0..5.0).contains(&cpu), "{cpu}");
    for (field, file) in [("memory_mb", "memory.current"), ("tasks", "pids.current")] {
        match unit.file(file) {
            Some(_) => assert!(u[field].is_number(), "{field}: {u}"),
            None => assert!(u[field].is_null(), "{field} without {file}: {u}"),
        }
    }
    if let Some(text) = unit.file("pids.current") {
        assert_eq!(
            u["tasks"].as_u64(),
            Some(crate::common::cgroup::number(&text))
        );
    }
    assert!(u["cpu_pressure_some_avg10"].is_number(), "{u}");
}
