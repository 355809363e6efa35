//! The accept loop and per-connection routing: the request head, access
//! checks, plain HTTP answers, the WebSocket handshake, and the orderly stop
//! on shutdown. Sessions themselves are `client`'s.

use super::access::{self, Credentials};
use super::admission::Admission;
use super::client::{self, until_closing, Session, Ws, SHUTDOWN_GRACE, WRITE_STALL};
use super::http::{self, HeadError, Request, Response};
use super::progress::Tracked;
use super::{health, history, listener, page, prometheus};
use crate::config::{Config, SharedConfig};
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::status::Status;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, SemaphorePermit};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// How long a client may take to send its whole request head: a request is
/// one small write, so this only bounds how long a slow or endless head holds
/// a place.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections held before they are WebSocket clients (sending their head or
/// being answered); beyond this the oldest is shed for each newcomer. The
/// larger it is, the longer a flood takes to push a normal client's fresh
/// connection out before its head is read; it is lowered to fit the limit
/// on open files.
const MAX_WAITING: usize = 2048;
/// Descriptors kept for everything else (clients, the queue, logs).
const RESERVED_FILES: u64 = 256;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// `/api/history` answers being made or written at once; past this such a
/// request gets 503 at once. Each is a read of the queue on a blocking
/// thread and a body of up to several MiB, which may wait up to the write
/// timeout on a client that does not read. The other answers are small and
/// are not limited: a bound shared with them would let any local client
/// turn Prometheus's scrapes of /metrics into 503s.
const HISTORY_IN_FLIGHT: usize = 4;

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
    hub: Arc<Hub>,
    pub(super) config: SharedConfig,
    status: Arc<Status>,
    /// Becomes true when shutdown starts: clients send their close frames.
    closing: watch::Receiver<bool>,
    closing_tx: watch::Sender<bool>,
    /// The configured token, followed by every session.
    token_tx: watch::Sender<String>,
    waiting: Arc<Admission>,
    /// Upgrades refused for max_clients, logged at most once a minute;
    /// rung when a refusal is held back, so that its count follows.
    refused: std::sync::Mutex<crate::throttle::Throttled>,
    refused_held: tokio::sync::Notify,
    history_answers: tokio::sync::Semaphore,
}

impl Server {
    pub fn new(hub: Arc<Hub>, config: SharedConfig, status: Arc<Status>) -> Arc<Server> {
        let (closing_tx, closing) = watch::channel(false);
        let token = config.get().stream.token.clone();
        let max_clients = config.get().stream.max_clients;
        Arc::new(Server {
            hub,
            config,
            status,
            closing,
            closing_tx,
            token_tx: watch::Sender::new(token),
            waiting: Admission::new(waiting_capacity(max_clients)),
            refused: Default::default(),
            refused_held: tokio::sync::Notify::new(),
            history_answers: tokio::sync::Semaphore::new(HISTORY_IN_FLIGHT),
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
        let follow = tokio::spawn(self.clone().follow_token());
        let refusals = tokio::spawn(self.clone().report_held_refusals());
        let mut accept_warned: Option<Instant> = None;
        let mut shed_warned: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let (admitted, shed) = self.waiting.admit(has_sent_bytes(&stream));
                        if shed && due(&mut shed_warned) {
                            log::warn!("stream: too many connections sent no request yet; closing the oldest ones");
                        }
                        let server = self.clone();
                        let alive = alive_tx.clone();
                        tokio::spawn(async move {
                            server.connection(stream, peer, admitted).await;
                            drop(alive);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors repeats every pause: warn once a minute.
                        if due(&mut accept_warned) {
                            log::warn!("stream: accept failed: {e}");
                        }
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
        drop(listener);
        follow.abort();
        refusals.abort();
        self.closing_tx.send_replace(true);
        drop(alive_tx);
        // Clients bound their own close by SHUTDOWN_GRACE; the margin covers scheduling.
        let _ = timeout(SHUTDOWN_GRACE + Duration::from_millis(200), alive_rx.recv()).await;
        Ok(())
    }

    /// Publishes every change of `stream.token` to the sessions, which close
    /// (1008) when they do not hold the new one. Woken by reloads only.
    async fn follow_token(self: Arc<Server>) {
        let mut reloads = self.config.changes();
        while reloads.changed().await.is_ok() {
            let config = self.config.get();
            self.token_tx.send_if_modified(|token| {
                let changed = *token != config.stream.token;
                if changed {
                    token.clone_from(&config.stream.token);
                }
                changed
            });
        }
    }

    /// Logs the refusals held back by the throttle once their minute is up
    /// (the line for the first one went out at once). Sleeps only while
    /// some are held.
    async fn report_held_refusals(self: Arc<Server>) {
        loop {
            self.refused_held.notified().await;
            let period = self.refused.lock().unwrap().period();
            tokio::time::sleep(period).await;
            let held = self.refused.lock().unwrap().add(0);
            if let Some(n) = held {
                self.log_refused(n);
            }
        }
    }

    /// One upgrade refused for max_clients: logged now, or held back for
    /// `report_held_refusals`.
    fn note_refusal(&self) {
        let now = self.refused.lock().unwrap().add(1);
        match now {
            Some(n) => self.log_refused(n),
            None => self.refused_held.notify_one(),
        }
    }

    fn log_refused(&self, n: u64) {
        log::info!(
            "stream: refused {n} client(s) since the last such line: {} clients connected (max_clients)",
            self.config.get().stream.max_clients
        );
    }

    /// One connection: it is held in `waiting` (and may be shed) until its
    /// request head has come in.
    async fn connection(
        self: Arc<Server>,
        stream: TcpStream,
        peer: SocketAddr,
        admitted: super::admission::Admitted,
    ) {
        let _ = stream.set_nodelay(true);
        let mut closing = self.closing.clone();
        let accepted = tokio::select! {
            accepted = self.request(stream, peer, admitted) => accepted,
            _ = until_closing(&mut closing) => return,
        };
        if let Some((ws, session, slot)) = accepted {
            log::debug!("stream: client {peer} connected");
            client::run(ws, peer, session).await;
            drop(slot);
            log::debug!("stream: client {peer} gone");
        }
    }

    /// Reads the request head and answers it; returns the WebSocket session
    /// to run when it was an accepted upgrade.
    async fn request(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut admitted: super::admission::Admitted,
    ) -> Option<(Ws, Session, ClientSlot)> {
        let head = tokio::select! {
            head = timeout(HEAD_TIMEOUT, http::read_head(&mut stream)) => head,
            _ = admitted.shed() => return None,
        };
        // The head is in: what is left is bounded (a response under its write
        // timeout, or a place among max_clients), so a flood of connections
        // that send nothing can no longer push this one out.
        drop(admitted);
        let (request, leftover) = match head {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                let response = match error {
                    HeadError::Closed => return None,
                    HeadError::Io(e) => {
                        log::debug!("stream: reading a request from {peer} failed: {e}");
                        return None;
                    }
                    HeadError::TooLarge => {
                        Response::text(431, "request head too large (limit 8 KiB)")
                    }
                    HeadError::TargetTooLong => {
                        Response::text(414, "request target too long (limit 8 KiB)")
                    }
                    HeadError::Malformed(why) => {
                        Response::text(400, &format!("bad request: {why}"))
                    }
                };
                http::respond(&mut stream, &response).await;
                return None;
            }
            Err(_) => {
                let why = format!(
                    "request head not received within {} s",
                    HEAD_TIMEOUT.as_secs()
                );
                http::respond(&mut stream, &Response::text(408, &why)).await;
                return None;
            }
        };
        let config = self.config.get();
        // Held until the answer is written.
        let mut _in_flight = None;
        let response = if let Some(refusal) = access::refusal(&request, &config.stream) {
            refusal
        } else if request.is_upgrade() {
            match self.upgrade(&request, &config) {
                Ok(slot) => {
                    return self
                        .handshake(stream, peer, request, leftover, slot, &config)
                        .await
                }
                Err(refusal) => refusal,
            }
        } else {
            match self.answer_slot(&request) {
                Ok(slot) => {
                    _in_flight = slot;
                    self.route(&request, &config).await
                }
                Err(busy) => busy,
            }
        };
        let response = if request.method == "HEAD" {
            response.for_head()
        } else {
            response
        };
        if response.status >= 400 {
            log::debug!(
                "stream: {} {} from {peer}: {}",
                request.method,
                request.path,
                response.status
            );
        }
        http::respond(&mut stream, &response).await;
        None
    }

    /// A place for one more history answer for `/api/history` (none is
    /// needed for the others), or the 503 that says to come back.
    fn answer_slot(&self, request: &Request) -> Result<Option<SemaphorePermit<'_>>, Response> {
        if request.path != "/api/history" {
            return Ok(None);
        }
        match self.history_answers.try_acquire() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(
                Response::text(503, "too many history answers in progress; retry")
                    .with_header("Retry-After", "1"),
            ),
        }
    }

    /// The plain HTTP routes (SPEC §4), one arm each; Host and Origin were
    /// checked before.
    async fn route(&self, request: &Request, config: &Config) -> Response {
        let method = request.method.as_str();
        match (method, request.path.as_str()) {
            ("GET", "/") => page::respond(request),
            // A start on a full disk: nothing may connect to the queue
            // before the sampler has opened it.
            ("GET", "/api/history") if !self.status.queue_opened() => Response::text(
                503,
                "history unavailable: the queue is not open yet (the disk was full at the start)",
            ),
            ("GET", "/api/history") => history::respond(config, request).await,
            ("GET", "/health") => self.health(config),
            ("GET", "/metrics") => {
                access::token_refusal(request, &config.stream).unwrap_or_else(|| self.metrics())
            }
            (_, "/" | "/api/history" | "/health" | "/metrics") => {
                Response::text(405, "method not allowed").with_header("Allow", "GET")
            }
            _ => Response::text(
                404,
                "not found (try /, /health, /metrics or a WebSocket upgrade)",
            ),
        }
    }

    fn health(&self, config: &Config) -> Response {
        let (code, body) = health::report(&self.status, config.interval);
        Response::new(code, "application/json", body)
    }

    fn metrics(&self) -> Response {
        let snapshot = self.hub.latest();
        let body = prometheus::render(snapshot.as_deref(), &self.status);
        Response::new(200, prometheus::CONTENT_TYPE, body)
    }

    /// Checks a WebSocket upgrade; a place among `max_clients` if it may proceed.
    fn upgrade(&self, request: &Request, config: &Config) -> Result<ClientSlot, Response> {
        if request.method != "GET" {
            return Err(
                Response::text(405, "WebSocket upgrades use GET").with_header("Allow", "GET")
            );
        }
        // RFC 6455 §4.2.1: an HTTP/1.1 GET (which the Host check has
        // already made name its host).
        if request.version < 1 {
            return Err(Response::text(400, "a WebSocket upgrade needs HTTP/1.1"));
        }
        if !request.header_has_token("connection", "upgrade") {
            return Err(Response::text(400, "Connection: Upgrade is missing"));
        }
        if request.header("sec-websocket-version") != Some("13") {
            return Err(Response::text(426, "WebSocket version 13 is required")
                .with_header("Sec-WebSocket-Version", "13"));
        }
        if !request.header("sec-websocket-key").is_some_and(valid_key) {
            return Err(Response::text(
                400,
                "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)",
            ));
        }
        if let Some(refusal) = access::token_refusal(request, &config.stream) {
            return Err(refusal);
        }
        ClientSlot::take(&self.status, config.stream.max_clients).ok_or_else(|| {
            self.note_refusal();
            Response::text(503, "too many stream clients").with_header("Retry-After", "10")
        })
    }

    /// Completes an accepted upgrade: 101, then the session's parts.
    async fn handshake(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        request: Request,
        leftover: Vec<u8>,
        slot: ClientSlot,
        config: &Config,
    ) -> Option<(Ws, Session, ClientSlot)> {
        let key = request.header("sec-websocket-key").unwrap_or_default();
        let accept = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        listener::limit_send_buffer(&stream);
        if !matches!(
            timeout(WRITE_STALL, stream.write_all(accept.as_bytes())).await,
            Ok(Ok(()))
        ) {
            log::debug!("stream: handshake with {peer} failed");
            return None;
        }
        let stream = Tracked::new(stream);
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
        let mut token = self.token_tx.subscribe();
        if *token.borrow() != config.stream.token {
            // The request was checked against another token than the one
            // sessions follow now: let the session check it at once.
            token.mark_changed();
        }
        let session = Session {
            updates: self.hub.subscribe(),
            closing: self.closing.clone(),
            token,
            credentials: Credentials::of(&request),
            welcome: super::commands::welcome(&config.node_id, config.interval, SystemTime::now()),
        };
        Some((ws, session, slot))
    }
}

/// How many connections may wait for their request at once: [`MAX_WAITING`],
/// or fewer when the open-files limit (raised as far as allowed) is lower.
/// Whether the peer has sent anything yet (a peek that does not wait):
/// a normal client's request is usually there by the time it is accepted.
fn has_sent_bytes(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    matches!(socket2::SockRef::from(stream).peek(&mut byte), Ok(n) if n > 0)
}

fn waiting_capacity(max_clients: usize) -> usize {
    let files = crate::os::fdlimit::raise_to_hard();
    let spare = files.saturating_sub(RESERVED_FILES + max_clients as u64);
    (spare as usize).clamp(64, MAX_WAITING)
}

/// Whether a `Sec-WebSocket-Key` is base64 of 16 bytes: 22 characters of the
/// base64 alphabet and `==`.
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Whether a once-a-minute warning is due now (and marks it given).
fn due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|at| at.elapsed() >= crate::throttle::EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// One of the `max_clients` places, counted in `status.stream_clients`;
/// released when dropped.
struct ClientSlot {
    status: Arc<Status>,
}

impl ClientSlot {
    fn take(status: &Arc<Status>, max_clients: usize) -> Option<ClientSlot> {
        status
            .stream_clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max_clients as u64).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot {
                status: status.clone(),
            })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.status.stream_clients.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_held_back_are_reported_once_their_period_is_up() {
        let server = Server::new(
            Hub::new(),
            SharedConfig::new(Config::default()),
            Arc::new(Status::default()),
        );
        *server.refused.lock().unwrap() =
            crate::throttle::Throttled::with_period(Duration::from_millis(50));
        let reporter = tokio::spawn(server.clone().report_held_refusals());
        // The first is reported at once, the next three are held...
        for _ in 0..4 {
            server.note_refusal();
        }
        assert_eq!(server.refused.lock().unwrap().held(), 3);
        // ...until their period is up, with no further refusal to carry them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.refused.lock().unwrap().held() > 0 {
            assert!(
                Instant::now() < deadline,
                "the held refusals were never reported"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reporter.abort();
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key("x3JJHMbDL1EzLkh9GBhXDw=="));
        assert!(!valid_key(""));
        assert!(!valid_key("abc"));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ=!"));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25j*Q=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZSBtb3Jl"));
    }
}
