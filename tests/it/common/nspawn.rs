//! A minimal Debian booted with systemd-nspawn, for the test of the packaged
//! service under a real systemd: the root is made once with debootstrap and
//! cached under target/, each run boots its own overlay of it, and the
//! container is a child process torn down by PID (also when a test fails).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The suite of the cached root; the host's apt sources name its mirror.
const SUITE: &str = "bookworm";
/// Bump when the way the root is made changes, so a stale cache is not reused.
const ROOT_NAME: &str = "bookworm-minbase-1";
/// systemd and dbus to boot; procps only so that its .deb stays in the root's
/// apt cache: it is removed again, because a minimal Debian has no /bin/kill
/// and the package must be what pulls it in.
const INCLUDE: &str = "systemd,dbus,procps";
const PATH_INSIDE: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn cache_dir() -> PathBuf {
    target_dir().join("systemd-boot")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Why a container cannot be booted here, or None when it can.
pub fn unusable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (systemd-nspawn, mount and nsenter need it)".into());
    }
    for program in ["systemd-nspawn", "debootstrap", "nsenter", "dpkg", "mount"] {
        if find_program(program).is_none() {
            return Some(format!("{program} is not installed"));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        return Some("the kernel has no overlay filesystem".into());
    }
    if !cache_dir().join(ROOT_NAME).is_dir() {
        if let Err(e) = debian_mirror() {
            return Some(e);
        }
    }
    None
}

/// True when the boot test can run. When it cannot: on CI (`CI` set) the
/// test fails with the reason, elsewhere it prints the reason and skips.
pub fn usable_or_skip() -> bool {
    let Some(reason) = unusable_reason() else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("the systemd boot test cannot run on CI: {reason}");
    }
    eprintln!("SKIP systemd boot test: {reason}");
    false
}

/// The Debian mirror this machine's apt uses for the suite (one-line and
/// deb822 sources), or `$METRICSD_DEBIAN_MIRROR`.
pub fn debian_mirror() -> Result<String, String> {
    if let Some(url) = std::env::var_os("METRICSD_DEBIAN_MIRROR") {
        return Ok(url.to_string_lossy().into_owned());
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_in_deb822(&text),
            _ if file.ends_with("sources.list") || file.extension() == Some("list".as_ref()) => {
                mirror_in_one_line(&text)
            }
            _ => None,
        };
        if let Some(url) = found {
            return Ok(url);
        }
    }
    Err(format!(
        "no apt source for Debian {SUITE} in /etc/apt/sources.list(.d) (set METRICSD_DEBIAN_MIRROR)"
    ))
}

fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace().peekable();
        if words.next()? != "deb" {
            return None;
        }
        if words.peek()?.starts_with('[') {
            // Options: "[arch=amd64 signed-by=...]", possibly several words.
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let uri = words.next()?;
        (words.next()? == SUITE).then(|| uri.to_string())
    })
}

fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let suite = field("Suites")?.split_whitespace().any(|s| s == SUITE);
        let uri = field("URIs")?.split_whitespace().next()?.to_string();
        (enabled && deb && suite).then_some(uri)
    })
}

fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An exclusive lock on a file, held until dropped.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn take(path: &Path) -> FileLock {
        let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: the descriptor is open for the whole call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock { _file: file }
    }
}

/// The cached minimal Debian root, made on first use. It is built under a
/// temporary name and renamed when complete, so a half-made root (an
/// interrupted run) is never used; a lock keeps parallel runs from building
/// it twice. Runs never write to it: they boot an [`Overlay`] of it.
pub fn base_root() -> PathBuf {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    let root = cache.join(ROOT_NAME);
    let _lock = FileLock::take(&cache.join(".lock"));
    if root.is_dir() {
        return root;
    }
    // Left by an interrupted build (no one else builds while we hold the lock).
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".partial") {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }
    let partial = cache.join(format!("{ROOT_NAME}.partial"));
    let mirror = debian_mirror().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    eprintln!("making the Debian root {} from {mirror}", root.display());
    run(
        "debootstrap",
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&partial)
            .arg(&mirror),
    );
    run(
        "dpkg --purge procps",
        Command::new("dpkg")
            .arg(format!("--root={}", partial.display()))
            .args(["--purge", "procps"]),
    );
    std::fs::rename(&partial, &root).unwrap();
    eprintln!("Debian root made in {:.0?}", started.elapsed());
    root
}

/// The .deb to install: `$METRICSD_DEB` (CI builds it first), else built now
/// with packaging/build-deb.sh.
pub fn package() -> PathBuf {
    if let Some(deb) = std::env::var_os("METRICSD_DEB") {
        let deb = PathBuf::from(deb);
        assert!(
            deb.is_file(),
            "METRICSD_DEB={} is not a file",
            deb.display()
        );
        return deb;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(
        "packaging/build-deb.sh",
        Command::new("sh")
            .arg(repo.join("packaging/build-deb.sh"))
            .current_dir(repo)
            .stderr(Stdio::inherit()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-deb.sh printed the path")
            .trim(),
    )
}

/// A writable overlay of the cached root (upper and work dirs in a temp
/// dir), unmounted and deleted on drop.
pub struct Overlay {
    dir: tempfile::TempDir,
    merged: PathBuf,
}

impl Overlay {
    pub fn mount(lower: &Path) -> Overlay {
        let runs = cache_dir().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&runs)
            .unwrap();
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        run(
            "mount overlay",
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    upper.display(),
                    work.display()
                ))
                .arg(&merged),
        );
        Overlay { dir, merged }
    }

    /// The container's root as the host sees it.
    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// A directory of this run beside the root (for binds and logs).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The path of `inside` (absolute, in the container) as the host sees it.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.merged.join(inside.trim_start_matches('/'))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.merged).status();
        if !status.is_ok_and(|s| s.success()) {
            // Still busy (a process of a killed container): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        }
    }
}

/// `dpkg --root=<root>` with the arguments; maintainer scripts run chrooted.
pub fn dpkg(root: &Path, args: &[&Path]) -> Output {
    Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Its messages are read by the test.
        .env("LC_ALL", "C")
        .output()
        .expect("run dpkg")
}

/// A booted container: `systemd-nspawn -b` as a child of the test.
pub struct Container {
    nspawn: Child,
    leader: i32,
    console: PathBuf,
    // Dropped after the container is down.
    overlay: Overlay,
}

impl Container {
    /// Boots the overlay's root (sharing the host's network, with `binds` of
    /// host directories) and waits until systemd has finished starting up.
    pub fn boot(overlay: Overlay, binds: &[(&Path, &str)]) -> Container {
        let console = overlay.scratch("log").join("console.log");
        let log = File::create(&console).unwrap();
        let machine = format!("metricsd-test-{}", std::process::id());
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["--boot", "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--machine={machine}"))
            .arg("--console=read-only")
            // nspawn's own seccomp filter refuses @clock to a container
            // without CAP_SYS_TIME, even a read-only adjtimex(2); a host
            // allows that read (clock_synced), so the container does too.
            // CAP_SYS_TIME stays withheld: nothing inside can set the clock.
            .arg("--system-call-filter=adjtimex clock_adjtime")
            .arg("-D")
            .arg(overlay.root());
        for (host, inside) in binds {
            command.arg(format!("--bind={}:{inside}", host.display()));
        }
        let nspawn = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let mut container = Container {
            nspawn,
            leader: 0,
            console,
            overlay,
        };
        container.leader = container.find_leader(Duration::from_secs(60));
        container.wait_booted(Duration::from_secs(180));
        container
    }

    /// The container's PID 1 is the child of nspawn whose NSpid ends in 1.
    fn find_leader(&mut self, timeout: Duration) -> i32 {
        let parent = self.nspawn.id() as i32;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = child_in_new_pid_namespace(parent) {
                return pid;
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({status}):\n{}", self.console_tail());
            }
            assert!(
                Instant::now() < deadline,
                "no container leader after {timeout:?}:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_booted(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({status}):\n{}", self.console_tail());
            }
            let out = self.exec(&["systemctl", "is-system-running"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" => return,
                "degraded" => {
                    let failed = self.exec(&["systemctl", "--failed", "--no-pager"]);
                    eprintln!(
                        "container booted degraded:\n{}",
                        String::from_utf8_lossy(&failed.stdout)
                    );
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!(
            "container not booted after {timeout:?} (state {state:?}):\n{}",
            self.console_tail()
        );
    }

    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// A command run inside every namespace of the container, with a clean
    /// environment (the test's own variables stay outside).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--", "/usr/bin/env", "-i", PATH_INSIDE])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run nsenter")
    }

    /// Runs a command inside and returns its stdout; fails the test naming
    /// the command when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` failed in the container ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show UNIT -p P1,P2...` as (property, value) pairs.
    pub fn unit_properties(&self, unit: &str, properties: &[&str]) -> Vec<(String, String)> {
        let list = properties.join(",");
        self.ok(&["systemctl", "show", unit, "-p", &list])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.unit_properties(unit, &[property])
            .into_iter()
            .find(|(k, _)| k == property)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("systemctl show {unit} has no {property}"))
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Asks the container to power off (SIGTERM to nspawn); kills it by its
    /// leader's PID when it does not go within the deadline.
    fn tear_down(&mut self) {
        if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            return;
        }
        let nspawn = self.nspawn.id() as i32;
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(nspawn, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("container did not power off in 20 s: killing it");
        if self.leader > 0 {
            // SAFETY: the leader is PID 1 of the container's namespace; its
            // death ends every process in it.
            unsafe { libc::kill(self.leader, libc::SIGKILL) };
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader > 0 {
            let journal = self.exec(&["journalctl", "-u", "metricsd", "--no-pager", "-n", "60"]);
            eprintln!(
                "--- journal of metricsd in the container ---\n{}\n--- console ---\n{}",
                String::from_utf8_lossy(&journal.stdout),
                self.console_tail()
            );
        }
        self.tear_down();
    }
}

/// The child of `parent` that is PID 1 of its own PID namespace.
fn child_in_new_pid_namespace(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
            };
            let ppid: i32 = field("PPid:")?.parse().ok()?;
            let nspid = field("NSpid:")?;
            let levels: Vec<&str> = nspid.split_whitespace().collect();
            (ppid == parent && levels.len() > 1 && levels.last() == Some(&"1")).then_some(pid)
        })
}
