//! One `run` per state directory: an exclusive flock on `metricsd.lock`
//! holding the owner's pid, so a second instance can name it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub struct InstanceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another metricsd (pid {pid}) is running with state directory {dir}")]
    Held { pid: String, dir: PathBuf },
    #[error("cannot lock {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl InstanceLock {
    /// Takes the lock for the lifetime of the returned value.
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock, LockError> {
        let path = state_dir.join("metricsd.lock");
        let io = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: the descriptor is valid for the life of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                    dir: state_dir.to_path_buf(),
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        // The pid only names the holder for a second instance; the lock is
        // the flock. A full disk must not keep the daemon from starting.
        match writeln!(file, "{}", std::process::id()) {
            Err(e) if !super::statedir::is_out_of_space(&e) => return Err(io(e)),
            _ => {}
        }
        Ok(InstanceLock { _file: file })
    }
}
