//! One WebSocket client session: welcome, latest snapshot, every new
//! snapshot (newest wins), command replies, keep-alive pings, and the close
//! frames for oversized messages (1009) and shutdown (1001).

use super::commands::{self, Command};
use super::server::{until_closing, Server, SHUTDOWN_GRACE};
use super::Published;
use crate::config::Config;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A client whose socket accepts nothing for this long is dropped (SPEC §4.3).
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// The server pings this often ...
const PING_EVERY: Duration = Duration::from_secs(20);
/// ... and drops clients it has not heard from for this long ...
const SILENT_LIMIT: Duration = Duration::from_secs(30);
/// ... checking this often (so a silent client goes within 30-35 s).
const KEEPALIVE_CHECK: Duration = Duration::from_secs(5);
/// After a 1009 close, how long and how much to read and discard so the
/// close frame is not lost to a connection reset.
const DISCARD_TIME: Duration = Duration::from_secs(1);
const DISCARD_BYTES: usize = 1024 * 1024;

type Ws = WebSocketStream<TcpStream>;

/// Why a session ended early; logged at the matching level.
enum End {
    Stalled,
    Silent,
    Gone,
}

/// Sends one message, giving up when the socket accepts nothing for [`WRITE_STALL`].
async fn send(ws: &mut Ws, message: Message) -> Result<(), End> {
    match timeout(WRITE_STALL, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Stalled),
    }
}

/// Runs the session until the client leaves, misbehaves, stalls, or shutdown.
pub async fn run(mut ws: Ws, peer: SocketAddr, server: &Server, config: &Config) {
    match session(&mut ws, server, config).await {
        Ok(()) => {}
        Err(End::Stalled) => log::warn!(
            "stream: dropped client {peer}: its socket accepted nothing for {} s",
            WRITE_STALL.as_secs()
        ),
        Err(End::Silent) => log::info!(
            "stream: dropped client {peer}: silent for {} s",
            SILENT_LIMIT.as_secs()
        ),
        Err(End::Gone) => {}
    }
}

async fn session(ws: &mut Ws, server: &Server, config: &Config) -> Result<(), End> {
    let mut updates = server.hub.subscribe();
    let mut closing = server.closing.clone();

    let welcome = commands::welcome(&config.node_id, config.interval, SystemTime::now());
    send(ws, Message::text(welcome)).await?;
    if let Some(latest) = latest(&mut updates) {
        send(ws, Message::Text(latest.text)).await?;
    }

    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE_CHECK, KEEPALIVE_CHECK);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = until_closing(&mut closing) => {
                close_going_away(ws).await;
                return Ok(());
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Some(latest) = latest(&mut updates) {
                    send(ws, Message::Text(latest.text)).await?;
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                match incoming {
                    None => return Ok(()),
                    Some(Ok(Message::Text(text))) => {
                        let reply = match commands::parse(&text) {
                            Ok(Command::GetMetrics) => match latest(&mut updates) {
                                Some(latest) => Message::Text(latest.text),
                                None => Message::text(commands::error("no snapshot has been taken yet")),
                            },
                            Ok(Command::Ping) => Message::text(commands::pong(SystemTime::now())),
                            Err(why) => Message::text(commands::error(&why)),
                        };
                        send(ws, reply).await?;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let why = "binary frames are not supported; send JSON text";
                        send(ws, Message::text(commands::error(why))).await?;
                    }
                    // Pings are answered by tungstenite; pongs only prove liveness.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the close reply; push it out.
                        let _ = timeout(Duration::from_secs(1), ws.flush()).await;
                        return Ok(());
                    }
                    Some(Err(WsError::Capacity(_))) => {
                        close_too_big(ws).await;
                        return Ok(());
                    }
                    Some(Err(_)) => return Err(End::Gone),
                }
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() >= SILENT_LIMIT {
                    return Err(End::Silent);
                }
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    send(ws, Message::Ping(Default::default())).await?;
                }
            }
        }
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

/// A frame or message over the limit: close 1009, and read and discard the
/// rest of it so closing the socket does not reset the connection before the
/// client has read the close frame.
async fn close_too_big(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Size,
        reason: "message too big (limit 64 KiB)".into(),
    };
    if !matches!(
        timeout(Duration::from_secs(1), ws.close(Some(frame))).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let socket = ws.get_mut();
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
}
