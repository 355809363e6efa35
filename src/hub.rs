//! The hub: the latest snapshot, handed over once by the sampler and read by
//! every stream client, `/metrics` and `get_metrics`. It is the sampler's only
//! way out to readers, and it knows nothing of sockets or the server.

use crate::snapshot::Snapshot;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One published snapshot: the value for /metrics, the text for clients.
/// `Utf8Bytes` is a reference-counted UTF-8 buffer, so handing the same text
/// to every client copies nothing.
#[derive(Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub text: Utf8Bytes,
}

/// The latest snapshot, pre-serialised, behind a latest-only channel: a slow
/// reader skips to the newest value and never holds up the sampler.
pub struct Hub {
    latest: watch::Sender<Option<Published>>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            latest: watch::Sender::new(None),
        })
    }

    /// Publishes a snapshot with its stream-form JSON; never waits for readers
    /// (it only swaps the latest value and wakes them).
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

    /// A receiver that wakes on every publish (and sees only the newest).
    pub fn subscribe(&self) -> watch::Receiver<Option<Published>> {
        self.latest.subscribe()
    }
}
