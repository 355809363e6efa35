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

/// Creates `dir` (mode 0750) if needed and proves it is writable.
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
    std::fs::write(&probe, b"ok").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
