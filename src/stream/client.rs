//! One WebSocket client session: welcome, latest snapshot, every new
//! snapshot (newest wins), command replies, keep-alive pings, and the close
//! frames of RFC 6455 for what can end it: shutdown (1001), a protocol
//! violation (1002), invalid UTF-8 (1007), a token it no longer holds (1008),
//! an oversized message (1009).

use super::access::Credentials;
use super::commands::{self, Command};
use super::progress::Tracked;
use crate::hub::Published;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{error::ProtocolError, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A client whose socket accepts nothing for this long is dropped (SPEC §4.3).
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// On shutdown, how long clients get to receive their close frame.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The server pings this often ...
const PING_EVERY: Duration = Duration::from_secs(20);
/// ... and drops clients it has not heard from for this long ...
const SILENT_LIMIT: Duration = Duration::from_secs(30);
/// ... checking this often (so a silent client goes within 30-35 s).
const KEEPALIVE_CHECK: Duration = Duration::from_secs(5);
/// After closing for an error, how long and how much to read and discard so
/// the close frame is not lost to a connection reset.
const DISCARD_TIME: Duration = Duration::from_secs(1);
const DISCARD_BYTES: usize = 1024 * 1024;

pub type Ws = WebSocketStream<Tracked>;

/// What a session follows besides its socket.
pub struct Session {
    /// The hub's latest snapshot.
    pub updates: watch::Receiver<Option<Published>>,
    /// Becomes true when shutdown starts.
    pub closing: watch::Receiver<bool>,
    /// The configured `stream.token`, changed by a reload.
    pub token: watch::Receiver<String>,
    /// What the client presented when it connected.
    pub credentials: Credentials,
    pub welcome: String,
}

/// Why a session ended.
enum End {
    /// Closed in an orderly way (by either side, or with a close code).
    Closed,
    Stalled,
    Silent,
    Gone,
}

/// Resolves once shutdown has started (the watch guard is dropped at once,
/// so the caller's future stays `Send`).
pub async fn until_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Runs the session until the client leaves, misbehaves, stalls, or shutdown.
pub async fn run(mut ws: Ws, peer: SocketAddr, mut session: Session) {
    match run_session(&mut ws, &mut session).await {
        Ok(()) | Err(End::Closed | End::Gone) => {}
        Err(End::Stalled) => log::warn!(
            "stream: dropped client {peer}: its socket accepted nothing for {} s",
            WRITE_STALL.as_secs()
        ),
        Err(End::Silent) => log::info!(
            "stream: dropped client {peer}: silent for {} s",
            SILENT_LIMIT.as_secs()
        ),
    }
}

/// Sends one message, giving up when the socket accepts nothing for
/// [`WRITE_STALL`] (however long the whole message takes while it does),
/// and at once when shutdown starts.
async fn send(
    ws: &mut Ws,
    closing: &mut watch::Receiver<bool>,
    message: Message,
) -> Result<(), End> {
    push(ws, closing, Some(message)).await
}

/// Writes out what tungstenite has queued by itself (the pong that answers
/// a ping) under the same rule as `send`. Until it is out nothing more is
/// read, so a client that sends pings and never reads holds one pong, not
/// a write buffer that grows with every ping, and is dropped as stalled.
async fn flush(ws: &mut Ws, closing: &mut watch::Receiver<bool>) -> Result<(), End> {
    push(ws, closing, None).await
}

async fn push(
    ws: &mut Ws,
    closing: &mut watch::Receiver<bool>,
    message: Option<Message>,
) -> Result<(), End> {
    enum Outcome {
        Sent(Result<(), WsError>),
        Stalled,
        Closing,
    }
    let progress = ws.get_ref().progress();
    progress.restart();
    let outcome = {
        let sending = async {
            match message {
                Some(message) => ws.send(message).await,
                None => ws.flush().await,
            }
        };
        tokio::pin!(sending);
        loop {
            let stall_at = progress.last() + WRITE_STALL;
            tokio::select! {
                sent = &mut sending => break Outcome::Sent(sent),
                _ = tokio::time::sleep_until(stall_at) => {
                    if progress.last() + WRITE_STALL <= Instant::now() {
                        break Outcome::Stalled;
                    }
                }
                _ = until_closing(closing) => break Outcome::Closing,
            }
        }
    };
    match outcome {
        Outcome::Sent(Ok(())) => Ok(()),
        Outcome::Sent(Err(_)) => Err(End::Gone),
        Outcome::Stalled => Err(End::Stalled),
        Outcome::Closing => {
            close_going_away(ws).await;
            Err(End::Closed)
        }
    }
}

async fn run_session(ws: &mut Ws, s: &mut Session) -> Result<(), End> {
    send(
        ws,
        &mut s.closing,
        Message::text(std::mem::take(&mut s.welcome)),
    )
    .await?;
    if let Some(latest) = latest(&mut s.updates) {
        send(ws, &mut s.closing, Message::Text(latest.text)).await?;
    }

    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE_CHECK, KEEPALIVE_CHECK);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = until_closing(&mut s.closing) => {
                close_going_away(ws).await;
                return Ok(());
            }
            changed = s.token.changed() => {
                if changed.is_ok() && !s.credentials.accepts(&s.token.borrow_and_update()) {
                    return close_for(ws, CloseCode::Policy, "the stream token has changed").await;
                }
            }
            changed = s.updates.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Some(latest) = latest(&mut s.updates) {
                    send(ws, &mut s.closing, Message::Text(latest.text)).await?;
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                let reply = match incoming {
                    None => return Ok(()),
                    Some(Ok(Message::Text(text))) => match commands::parse(&text) {
                        Ok(Command::GetMetrics) => match latest(&mut s.updates) {
                            Some(latest) => Message::Text(latest.text),
                            None => Message::text(commands::error("no snapshot has been taken yet")),
                        },
                        Ok(Command::Ping) => Message::text(commands::pong(SystemTime::now())),
                        Err(why) => Message::text(commands::error(&why)),
                    },
                    Some(Ok(Message::Binary(_))) => {
                        let why = "binary frames are not supported; send JSON text";
                        Message::text(commands::error(why))
                    }
                    // tungstenite queued the answer to a ping: out with it
                    // before reading on. Pongs only prove liveness.
                    Some(Ok(Message::Ping(_))) => {
                        flush(ws, &mut s.closing).await?;
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the close reply; push it out.
                        let _ = timeout(Duration::from_secs(1), ws.flush()).await;
                        return Ok(());
                    }
                    Some(Err(e)) => return match close_code(&e) {
                        Some((code, reason)) => close_for(ws, code, reason).await,
                        None => Err(End::Gone),
                    },
                };
                send(ws, &mut s.closing, reply).await?;
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() >= SILENT_LIMIT {
                    return Err(End::Silent);
                }
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    send(ws, &mut s.closing, Message::Ping(Default::default())).await?;
                }
            }
        }
    }
}

/// The close code (RFC 6455 §7.4.1) for what the client did wrong, or `None`
/// when the connection is simply gone.
fn close_code(error: &WsError) -> Option<(CloseCode, &'static str)> {
    match error {
        WsError::Capacity(_) => Some((CloseCode::Size, "message too big (limit 64 KiB)")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "text message is not valid UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((CloseCode::Protocol, "WebSocket protocol violation")),
        _ => None,
    }
}

/// The newest snapshot, marking it seen so the next change is a newer one
/// (a reply to get_metrics is not followed by the same snapshot again).
fn latest(updates: &mut watch::Receiver<Option<Published>>) -> Option<Published> {
    updates.borrow_and_update().clone()
}

/// Shutdown: close 1001, then wait (bounded) for the client's close reply.
async fn close_going_away(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "server shutting down".into(),
    };
    let _ = timeout(SHUTDOWN_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Closes with `code`, then reads and discards (bounded) what the client
/// still sends (the rest of an oversized or broken frame, its close reply),
/// so closing the socket does not reset the connection before the client has
/// read the close frame.
async fn close_for(ws: &mut Ws, code: CloseCode, reason: &'static str) -> Result<(), End> {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if !matches!(
        timeout(Duration::from_secs(1), ws.close(Some(frame))).await,
        Ok(Ok(()))
    ) {
        return Err(End::Gone);
    }
    let socket = ws.get_mut().socket();
    let mut sink = vec![0u8; 4096];
    let mut discarded = 0;
    let _ = timeout(DISCARD_TIME, async {
        while discarded < DISCARD_BYTES {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
    Ok(())
}
