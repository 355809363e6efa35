//! The units collector's cost per sample: 1,000 reads back to back, CPU
//! time (user + system from getrusage: the kernel's work producing the
//! cgroup files counts).
//!
//! 1. This host's own cgroup v2 tree as it is.
//! 2. The same tree with UNITS empty cgroups added under system.slice
//!    (needs root and a writable v2 tree; removed afterwards), all matching
//!    and all reported (top_units = UNITS), then with top_units = 10.
//!
//! Run: cargo bench --bench units  (METRICSD_BENCH_UNITS=N to change N; default 40)

#[path = "common/mod.rs"]
mod common;

use common::cpu_time;
use metricsd::collect::units::{find_v2_root, UnitsCollector};
use metricsd::collect::Roots;
use std::path::{Path, PathBuf};
use std::time::Instant;

const SAMPLES: u32 = 1000;

fn measure(label: &str, collector: &mut UnitsCollector) {
    let mut reported = 0;
    for _ in 0..20 {
        reported = collector.read(Instant::now()).unwrap().len();
    }
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..SAMPLES {
        collector.read(Instant::now()).unwrap();
    }
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    println!(
        "{label:<52} {reported:>3} reported, {:>3} fds kept   cpu {:>7.1} us/sample   wall {:>7.1} us/sample",
        collector.kept_open(),
        (cpu / SAMPLES).as_secs_f64() * 1e6,
        (wall / SAMPLES).as_secs_f64() * 1e6,
    );
}

/// Empty cgroups made for the benchmark, removed on drop.
struct Made {
    dirs: Vec<PathBuf>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn make_units(v2: &Path, n: usize) -> std::io::Result<Made> {
    let mut made = Made { dirs: Vec::new() };
    let slice = v2.join("system.slice");
    if !slice.exists() {
        std::fs::create_dir(&slice)?;
        made.dirs.push(slice.clone());
    }
    for i in 0..n {
        let dir = slice.join(format!("metricsd-bench-{}-{i}.service", std::process::id()));
        std::fs::create_dir(&dir)?;
        made.dirs.push(dir);
    }
    Ok(made)
}

fn main() {
    let n: usize = std::env::var("METRICSD_BENCH_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let roots = Roots::default();
    let Some(v2) = find_v2_root(&roots.sys) else {
        println!("no cgroup v2 hierarchy on this host: nothing to measure");
        return;
    };
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    println!(
        "cgroup v2 at {} (controllers: {})",
        v2.display(),
        controllers.trim()
    );
    let all = ["*.service".to_string()];
    measure(
        "this host as it is, *.service, top 10",
        &mut UnitsCollector::with_selection(&roots, &all, 10),
    );
    let _made = match make_units(&v2, n) {
        Ok(made) => made,
        Err(e) => {
            println!(
                "cannot add {n} cgroups under {} ({e}): stopping here",
                v2.display()
            );
            return;
        }
    };
    measure(
        &format!("+{n} empty unit cgroups, top {n}"),
        &mut UnitsCollector::with_selection(&roots, &all, n),
    );
    measure(
        &format!("+{n} empty unit cgroups, top 10"),
        &mut UnitsCollector::with_selection(&roots, &all, 10),
    );
}
