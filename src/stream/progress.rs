//! A client's socket that notes when it last took bytes, so that a send is
//! given up after `WRITE_STALL` without progress (SPEC §4.3: "one whose
//! socket accepts nothing for 10 s"), not after `WRITE_STALL` in all: a
//! client on a slow link that keeps reading gets every snapshot, however
//! long one takes to cross.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub struct Tracked {
    inner: TcpStream,
    progress: Progress,
}

/// When the socket last took bytes; shared with the session's send loop.
#[derive(Clone)]
pub struct Progress {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    /// Counts from now (the start of a send).
    pub fn restart(&self) {
        self.last_ms
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.since + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl Tracked {
    pub fn new(inner: TcpStream) -> Tracked {
        Tracked {
            inner,
            progress: Progress {
                since: Instant::now(),
                last_ms: Arc::new(AtomicU64::new(0)),
            },
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.inner
    }

    /// Passes a write's result on, noting the time when it took bytes.
    fn noted(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.restart();
        }
        written
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.noted(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.noted(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
