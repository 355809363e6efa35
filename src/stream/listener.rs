//! The listening socket and the per-connection socket options that bound
//! what a connection may hold in the kernel.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::{SocketAddr, TcpListener};
use tokio::net::TcpStream;

/// `listen(2)` clamps a backlog above `net.core.somaxconn` to it, so the
/// largest value asks for the system's own backlog (4096 on current kernels,
/// instead of the 128 that std uses): a burst of connections waits in the
/// kernel instead of being refused before the daemon can accept it.
const SYSTEM_BACKLOG: i32 = i32::MAX;

/// Send buffer of a WebSocket client (the kernel doubles it for bookkeeping).
/// Without it the kernel grows a socket's buffer up to `tcp_wmem` (4 MiB), so
/// a client that never reads pins that much before its writes stall; with it
/// a stalled client holds at most ~64 KiB here and is dropped 10 s later.
pub const CLIENT_SEND_BUFFER: usize = 32 * 1024;

/// Binds the listener (address reuse as std does, the system's backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(SYSTEM_BACKLOG)?;
    Ok(socket.into())
}

/// Caps the kernel send buffer of a connection that became a WebSocket client.
pub fn limit_send_buffer(stream: &TcpStream) {
    if let Err(e) = SockRef::from(stream).set_send_buffer_size(CLIENT_SEND_BUFFER) {
        log::debug!("stream: cannot set SO_SNDBUF: {e}");
    }
}
