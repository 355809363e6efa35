//! WebSocket stream, /health and /metrics on one listener (SPEC §4).
//!
//! The sampler hands every snapshot to the [`Hub`](crate::hub::Hub) once,
//! pre-serialised; the server runs on its own thread with a current-thread
//! tokio runtime. `server` accepts, reads each request head (`http`), checks
//! access (`access`), and either answers plain HTTP (`health`, `prometheus`)
//! or completes the WebSocket handshake and hands the connection to a client
//! session (`client`). Clients follow the hub through a latest-only watch
//! channel, so a slow one skips to the newest snapshot and never holds up
//! the sampler or the others. Dependencies run one way: server → client.

mod access;
mod admission;
mod client;
mod commands;
mod health;
mod history;
mod http;
mod listener;
mod page;
mod progress;
pub mod prometheus;
mod server;

use crate::config::SharedConfig;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::status::Status;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Largest frame or message a client may send (SPEC §4.2); beyond it: close 1009.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Binds the listener (before READY, so an address in use fails start-up),
/// with the system's listen backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    listener::bind(addr)
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
