//! The accept loop and per-connection routing: plain HTTP answers, access
//! checks, the WebSocket handshake, and the orderly stop on shutdown.

use super::http::{self, HeadError, Request, Response};
use super::{access, client, health, history, page, prometheus, Hub};
use crate::config::SharedConfig;
use crate::shutdown::Shutdown;
use crate::status::Status;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections still sending their head or being answered over plain HTTP;
/// beyond this, new connections are closed at once (bounds slow-head abuse).
const MAX_PENDING_REQUESTS: usize = 512;
/// On shutdown, how long clients get to receive their close frame.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Tight WebSocket buffers: clients send only small commands, and the server
/// sends one message at a time (flushing each), so the write buffer never
/// holds more than one snapshot. The defaults would allow 64 MiB messages
/// and unbounded buffering per client, and tungstenite zero-fills its whole
/// read buffer on every read attempt (each wake-up), so a small one is also faster.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(16 * 1024 * 1024)
        .max_message_size(Some(super::MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(super::MAX_CLIENT_MESSAGE))
}

/// What every connection task shares.
pub struct Server {
    pub hub: Arc<Hub>,
    pub config: SharedConfig,
    pub status: Arc<Status>,
    /// Becomes true when shutdown starts: clients send their close frames.
    pub closing: watch::Receiver<bool>,
    closing_tx: watch::Sender<bool>,
    pending: Arc<Semaphore>,
}

impl Server {
    pub fn new(hub: Arc<Hub>, config: SharedConfig, status: Arc<Status>) -> Arc<Server> {
        let (closing_tx, closing) = watch::channel(false);
        Arc::new(Server {
            hub,
            config,
            status,
            closing,
            closing_tx,
            pending: Arc::new(Semaphore::new(MAX_PENDING_REQUESTS)),
        })
    }

    /// Accepts connections until shutdown, then lets the clients close.
    pub async fn serve(
        self: Arc<Server>,
        listener: std::net::TcpListener,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let listener = TcpListener::from_std(listener)?;
        // Every connection task holds a clone; recv() ends when all are gone.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut last_accept_warning: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                            log::debug!("stream: too many pending requests; closing {peer}");
                            continue;
                        };
                        let server = self.clone();
                        let alive = alive_tx.clone();
                        tokio::spawn(async move {
                            server.connection(stream, peer, permit).await;
                            drop(alive);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors repeats every pause: warn once a minute.
                        if last_accept_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                            log::warn!("stream: accept failed: {e}");
                            last_accept_warning = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
        drop(listener);
        self.closing_tx.send_replace(true);
        drop(alive_tx);
        // Clients bound their own close by SHUTDOWN_GRACE; the margin covers scheduling.
        let _ = timeout(SHUTDOWN_GRACE + Duration::from_millis(200), alive_rx.recv()).await;
        Ok(())
    }

    async fn connection(
        self: Arc<Server>,
        mut stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let mut closing = self.closing.clone();
        let head = tokio::select! {
            head = timeout(HEAD_TIMEOUT, http::read_head(&mut stream)) => head,
            _ = until_closing(&mut closing) => return,
        };
        let (request, leftover) = match head {
            Ok(Ok(read)) => read,
            Ok(Err(HeadError::Closed)) => return,
            Ok(Err(HeadError::Io(e))) => {
                log::debug!("stream: reading a request from {peer} failed: {e}");
                return;
            }
            Ok(Err(HeadError::TooLarge)) => {
                let response = Response::text(431, "request head too large (limit 8 KiB)");
                return http::respond(&mut stream, &response).await;
            }
            Ok(Err(HeadError::Malformed(why))) => {
                let response = Response::text(400, &format!("bad request: {why}"));
                return http::respond(&mut stream, &response).await;
            }
            Err(_) => {
                let response = Response::text(408, "request head not received within 10 s");
                return http::respond(&mut stream, &response).await;
            }
        };
        if request.is_upgrade() {
            self.upgrade(stream, peer, request, leftover, permit).await;
        } else {
            let response = match request.path.as_str() {
                "/" => page::respond(&request),
                "/api/history" => history::respond(&self, &request).await,
                _ => self.plain(&request),
            };
            http::respond(&mut stream, &response).await;
        }
    }

    /// Answers a plain HTTP request: /health, /metrics, or an error.
    fn plain(&self, request: &Request) -> Response {
        let path = request.path.as_str();
        if path != "/health" && path != "/metrics" {
            return Response::text(
                404,
                "not found (try /health, /metrics or a WebSocket upgrade)",
            );
        }
        if request.method != "GET" {
            return Response::text(405, "method not allowed").with_header("Allow", "GET");
        }
        let config = self.config.get();
        if !access::origin_allowed(request, &config.stream) {
            return Response::text(403, "origin not allowed");
        }
        if path == "/health" {
            let (code, body) = health::report(&self.status, config.interval, SystemTime::now());
            return Response::new(code, "application/json", body);
        }
        if !access::token_accepted(request, &config.stream) {
            return unauthorized();
        }
        let snapshot = self.hub.latest();
        let body = prometheus::render(snapshot.as_deref(), &self.status);
        Response::new(200, prometheus::CONTENT_TYPE, body)
    }

    /// Checks a WebSocket upgrade, answers it, and runs the client session.
    async fn upgrade(
        self: Arc<Server>,
        mut stream: TcpStream,
        peer: SocketAddr,
        request: Request,
        leftover: Vec<u8>,
        permit: OwnedSemaphorePermit,
    ) {
        let config = self.config.get();
        let refusal = if request.method != "GET" {
            Some(Response::text(405, "WebSocket upgrades use GET").with_header("Allow", "GET"))
        } else if !request.header_has_token("connection", "upgrade") {
            Some(Response::text(400, "Connection: Upgrade is missing"))
        } else if request.header("sec-websocket-version") != Some("13") {
            Some(
                Response::text(426, "WebSocket version 13 is required")
                    .with_header("Sec-WebSocket-Version", "13"),
            )
        } else if request
            .header("sec-websocket-key")
            .is_none_or(str::is_empty)
        {
            Some(Response::text(400, "Sec-WebSocket-Key is missing"))
        } else if !access::origin_allowed(&request, &config.stream) {
            Some(Response::text(403, "origin not allowed"))
        } else if !access::token_accepted(&request, &config.stream) {
            Some(unauthorized())
        } else {
            None
        };
        if let Some(response) = refusal {
            log::debug!("stream: refused {peer}: {}", response.status);
            return http::respond(&mut stream, &response).await;
        }
        let Some(slot) = ClientSlot::take(&self.status, config.stream.max_clients) else {
            log::info!(
                "stream: refused {peer}: {} clients connected (max_clients)",
                config.stream.max_clients
            );
            let response =
                Response::text(503, "too many stream clients").with_header("Retry-After", "10");
            return http::respond(&mut stream, &response).await;
        };
        let key = request.header("sec-websocket-key").unwrap_or_default();
        let accept = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        use tokio::io::AsyncWriteExt;
        if !matches!(
            timeout(client::WRITE_STALL, stream.write_all(accept.as_bytes())).await,
            Ok(Ok(()))
        ) {
            return;
        }
        drop(permit);
        drop(request);
        let ws = if leftover.is_empty() {
            WebSocketStream::from_raw_socket(stream, Role::Server, Some(websocket_config())).await
        } else {
            WebSocketStream::from_partially_read(
                stream,
                leftover,
                Role::Server,
                Some(websocket_config()),
            )
            .await
        };
        log::debug!("stream: client {peer} connected");
        client::run(ws, peer, &self, &config).await;
        drop(slot);
        log::debug!("stream: client {peer} gone");
    }
}

/// Resolves once shutdown has started (the watch guard is dropped at once,
/// so the caller's future stays `Send`).
pub async fn until_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

pub(super) fn unauthorized() -> Response {
    Response::text(
        401,
        "a valid token is required (Authorization: Bearer <token> or ?token=)",
    )
    .with_header("WWW-Authenticate", "Bearer")
}

/// One of the `max_clients` places, counted in `status.stream_clients`;
/// released when dropped.
struct ClientSlot<'a> {
    status: &'a Status,
}

impl<'a> ClientSlot<'a> {
    fn take(status: &'a Status, max_clients: usize) -> Option<ClientSlot<'a>> {
        status
            .stream_clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max_clients as u64).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot { status })
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.status.stream_clients.fetch_sub(1, Ordering::SeqCst);
    }
}
