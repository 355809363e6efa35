//! WebSocket stream, /health and /metrics on one listener (SPEC §4).
//!
//! The sampler hands every snapshot to the [`Hub`] once, pre-serialised; the
//! server runs on its own thread with a current-thread tokio runtime. Each
//! connection reads its request head itself, then either answers plain HTTP
//! (`http`, `health`, `prometheus`) or completes the WebSocket handshake and
//! runs a client session (`client`). Clients follow the hub through a
//! latest-only watch channel, so a slow one skips to the newest snapshot and
//! never holds up the sampler or the others.

mod access;
mod client;
mod commands;
mod health;
mod history;
mod http;
mod page;
pub mod prometheus;
mod server;

use crate::config::SharedConfig;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::status::Status;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Largest frame or message a client may send (SPEC §4.2); beyond it: close 1009.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// One published snapshot: the value for /metrics, the text for clients.
/// `Utf8Bytes` is reference-counted, so handing it to every client copies nothing.
#[derive(Clone)]
pub(crate) struct Published {
    pub snapshot: Arc<Snapshot>,
    pub text: Utf8Bytes,
}

/// The latest snapshot, handed over by the sampler pre-serialised.
pub struct Hub {
    latest: watch::Sender<Option<Published>>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            latest: watch::Sender::new(None),
        })
    }

    /// Publishes a snapshot with its stream-form JSON; never waits for clients
    /// (it only swaps the latest value and wakes the client tasks).
    pub fn publish(&self, snapshot: Arc<Snapshot>, stream_json: String) {
        self.latest.send_replace(Some(Published {
            snapshot,
            text: Utf8Bytes::from(stream_json),
        }));
    }

    /// The latest snapshot, if one has been published.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.borrow().as_ref().map(|p| p.snapshot.clone())
    }

    /// The latest snapshot's stream-form JSON, if one has been published.
    pub fn latest_json(&self) -> Option<String> {
        self.latest.borrow().as_ref().map(|p| p.text.to_string())
    }

    fn subscribe(&self) -> watch::Receiver<Option<Published>> {
        self.latest.subscribe()
    }
}

/// Binds the listener (before READY, so an address in use fails start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves the listener on its own thread until shutdown. On shutdown every
/// client gets a close frame 1001; the thread returns once they have flushed
/// or after a bounded grace period (about 1 s).
pub fn spawn(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: SharedConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("stream".into())
        .spawn(move || {
            let _alive = crate::liveness::register("stream");
            let server = server::Server::new(hub, config, status);
            let served = runtime.block_on(async {
                if let Some(period) = crate::os::notify::liveness_tick() {
                    tokio::spawn(crate::liveness::keep_ticking(period));
                }
                server.serve(listener, shutdown).await
            });
            if let Err(e) = served {
                log::error!("stream server stopped: {e}");
            }
        })
}
