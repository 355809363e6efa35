//! The state directory: created when missing, checked for writing (exit 73).

use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct StateDirError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl fmt::Display for StateDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state directory {}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for StateDirError {}

/// Creates `dir` (mode 0750) if needed and proves it is writable. A
/// filesystem that is only full is no failure (SPEC §5.1: sampling and
/// streaming go on; inserts fail until there is space): that is logged.
pub fn ensure(dir: &Path) -> Result<(), StateDirError> {
    let fail = |error| StateDirError {
        path: dir.to_path_buf(),
        error,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(fail)?;
    let probe = dir.join(format!(".metricsd-write-test-{}", std::process::id()));
    let written = std::fs::write(&probe, b"ok");
    let _ = std::fs::remove_file(&probe);
    match written {
        Err(e) if is_out_of_space(&e) => {
            log::warn!("state directory {}: {e}", dir.display());
            Ok(())
        }
        other => other.map_err(fail),
    }
}

/// ENOSPC or EDQUOT: the filesystem (or the user's quota) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Whether the filesystem of `dir` has (nearly) no space left for this
/// process: what makes SQLite fail to open or write the queue with "disk
/// full" or a plain "disk I/O error" (its -shm file cannot grow).
pub fn is_full(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    crate::collect::filesystem::statvfs(&path)
        .is_ok_and(|fs| fs.avail_bytes < NEARLY_FULL || fs.inodes_total > 0 && fs.inodes_free == 0)
}

/// Less than this is full for the queue: a transaction of one sample, its
/// WAL frames and the 32 KiB -shm need more.
const NEARLY_FULL: u64 = 256 * 1024;
