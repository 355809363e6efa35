//! A real cgroup of this host's v2 tree holding a real process, for the
//! live tests of the units collector and of its /metrics families.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Units of this test process under a system.slice it may have made.
static SLICE_USERS: Mutex<usize> = Mutex::new(0);
use std::time::Duration;

/// A real busy process in a cgroup of this host's v2 tree under
/// system.slice: a transient unit when systemd runs this host, else a
/// cgroup made by the test (root only) with the process moved into it.
pub struct LiveUnit {
    pub name: String,
    pub cgroup: PathBuf,
    child: Option<std::process::Child>,
    counted_in_slice: bool,
    pub pid: u32,
}

/// A shell loop that keeps one core busy.
pub const BUSY: &str = "while :; do :; done";
/// A process that stays in the unit without using CPU.
pub const IDLE: &str = "exec sleep 600";

impl LiveUnit {
    /// Runs `sh -c <script>` in the unit.
    pub fn start(v2: &Path, script: &str) -> Result<LiveUnit, String> {
        // Unique per test: tests of one binary run at once.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "metricsd-it-{}-{}.service",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup = v2.join("system.slice").join(&name);
        if Path::new("/run/systemd/system").exists() {
            let ok = std::process::Command::new("systemd-run")
                .args(["--quiet", "--collect", "--unit", &name])
                .args([
                    "-p",
                    "CPUAccounting=yes",
                    "-p",
                    "MemoryAccounting=yes",
                    "-p",
                    "TasksAccounting=yes",
                ])
                .args(["sh", "-c", script])
                .status()
                .map_err(|e| format!("systemd-run: {e}"))?;
            if !ok.success() {
                return Err(format!("systemd-run failed: {ok}"));
            }
            let mut pid = 0;
            super::wait_for(
                "the transient unit's main pid",
                Duration::from_secs(10),
                || {
                    let out = std::process::Command::new("systemctl")
                        .args(["show", "-p", "MainPID", "--value", &name])
                        .output()
                        .unwrap();
                    pid = String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    pid != 0 && cgroup.is_dir()
                },
            );
            return Ok(LiveUnit {
                name,
                cgroup,
                child: None,
                counted_in_slice: false,
                pid,
            });
        }
        let counted_in_slice = {
            let mut users = SLICE_USERS.lock().unwrap();
            std::fs::create_dir_all(&cgroup).map_err(|e| {
                format!(
                    "systemd is not running and {} cannot be made ({e})",
                    cgroup.display()
                )
            })?;
            *users += 1;
            true
        };
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let pid = child.id();
        let unit = LiveUnit {
            name,
            cgroup,
            child: Some(child),
            counted_in_slice,
            pid,
        };
        std::fs::write(unit.cgroup.join("cgroup.procs"), pid.to_string()).map_err(|e| {
            format!(
                "cannot move the busy child into {} ({e})",
                unit.cgroup.display()
            )
        })?;
        Ok(unit)
    }

    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.cgroup.join(name)).ok()
    }

    pub fn usage(&self) -> u64 {
        usage_usec(&self.file("cpu.stat").unwrap())
    }

    /// The busy process's own CPU time (utime + stime) in seconds, from
    /// /proc/<pid>/stat: the kernel's per-task accounting, not the cgroup's.
    pub fn task_cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of stat; after comm, state is index 0 (field 3).
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks as f64 / hz
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            super::wait_until(Duration::from_secs(5), || {
                self.file("cgroup.procs")
                    .is_none_or(|p| p.trim().is_empty())
            });
            let _ = std::fs::remove_dir(&self.cgroup);
            if self.counted_in_slice {
                // The last unit of this process removes system.slice if
                // it is empty (on a host without systemd nothing else uses it).
                let mut users = SLICE_USERS.lock().unwrap();
                *users -= 1;
                if *users == 0 {
                    let _ = std::fs::remove_dir(self.cgroup.parent().unwrap());
                }
            }
        } else if !self.name.is_empty() {
            let _ = std::process::Command::new("systemctl")
                .args(["stop", &self.name])
                .status();
            super::wait_until(Duration::from_secs(10), || !self.cgroup.exists());
        }
        self.name.clear();
    }
}

impl Drop for LiveUnit {
    fn drop(&mut self) {
        self.stop();
    }
}

// The test's own readings of cgroup files (not the collector's parsers).

/// `usage_usec` of a cpu.stat.
pub fn usage_usec(cpu_stat: &str) -> u64 {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap_or_else(|| panic!("no usage_usec in {cpu_stat:?}"))
        .trim()
        .parse()
        .unwrap()
}

/// avg10 of the `some` line of a pressure file.
pub fn some_avg10(pressure: &str) -> Option<f64> {
    pressure
        .lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// A one-number file such as memory.current or pids.current.
pub fn number(text: &str) -> u64 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}
