//! Delivery (SPEC §5): one poster per configured sink, each draining that
//! sink's rows of the shared queue file with the one loop of `poster`;
//! the sinks (`json`, `remote_write`, `otlp`) only encode.
//!
//! [`Posters`] keeps one thread per configured sink: a reload that adds a
//! sink starts its poster, one that removes a sink lets its poster end
//! (its rows stay in the file until purged or configured again).

pub mod breaker;
pub mod client;
pub mod json;
pub mod otlp;
pub mod poster;
pub mod remote_write;
mod resolver;
mod rows;
pub mod sink;
pub mod splay;

pub use poster::PosterContext;

use crate::config::SinkKind;
use crate::shutdown::Wake;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Running {
    handle: JoinHandle<()>,
    /// Kept alive here: `bell` rings it while it exists.
    wake: Arc<Wake>,
    tenure: Arc<poster::Tenure>,
}

/// The posters of the daemon.
pub struct Posters {
    ctx: PosterContext,
    /// Rung after every insert; rings every poster's own wake.
    bell: Arc<Wake>,
    running: BTreeMap<SinkKind, Running>,
    /// Posters of removed sinks that may still be finishing a request.
    ending: Vec<(SinkKind, Running)>,
}

impl Posters {
    /// Starts a poster for each sink configured now.
    pub fn start(ctx: PosterContext, bell: Arc<Wake>) -> std::io::Result<Posters> {
        let mut posters = Posters {
            ctx,
            bell,
            running: BTreeMap::new(),
            ending: Vec::new(),
        };
        posters.reconcile()?;
        Ok(posters)
    }

    /// After a reload: starts the posters of sinks that have none and asks
    /// those of removed sinks to end (rung here so they do at once, unless
    /// a request is in flight). A sink removed and configured again while
    /// its poster is still in a request keeps that poster: a second one
    /// would send the same rows twice.
    pub fn reconcile(&mut self) -> std::io::Result<()> {
        let config = self.ctx.config.get();
        // Every removed sink is asked to end before any poster is started:
        // a failed start must not leave one of them waiting (see `Look`).
        for kind in SinkKind::ALL {
            let configured = config.sink(kind).enabled();
            let finished = self
                .running
                .get(&kind)
                .is_some_and(|r| r.handle.is_finished());
            if finished || !configured {
                if let Some(old) = self.running.remove(&kind) {
                    old.tenure.ask_to_end();
                    old.wake.notify();
                    self.ending.push((kind, old));
                }
            }
        }
        for kind in SinkKind::ALL {
            let configured = config.sink(kind).enabled();
            if configured && !self.running.contains_key(&kind) {
                let poster = match self.take_back(kind) {
                    Some(poster) => poster,
                    None => self.spawn(kind)?,
                };
                self.running.insert(kind, poster);
            }
        }
        self.ending.retain(|(_, r)| !r.handle.is_finished());
        Ok(())
    }

    /// The ending poster of `kind`, if it can go on serving. One already
    /// ending is waited for: it has no request left, only its status to
    /// clear, and that must happen before a new poster sets its own.
    fn take_back(&mut self, kind: SinkKind) -> Option<Running> {
        let at = self.ending.iter().position(|(k, _)| *k == kind)?;
        let (_, poster) = self.ending.remove(at);
        if !poster.handle.is_finished() && poster.tenure.take_back() {
            log::debug!("{kind} configured again: its poster goes on");
            poster.wake.notify();
            return Some(poster);
        }
        let _ = poster.handle.join();
        None
    }

    fn spawn(&self, kind: SinkKind) -> std::io::Result<Running> {
        let wake = Wake::new();
        self.bell.chain(&wake);
        let tenure = Arc::new(poster::Tenure::default());
        let handle = poster::spawn(kind, self.ctx.clone(), wake.clone(), tenure.clone())?;
        Ok(Running {
            handle,
            wake,
            tenure,
        })
    }

    /// Which sinks have a poster now.
    pub fn sinks(&self) -> Vec<SinkKind> {
        self.running.keys().copied().collect()
    }

    /// Joins every poster until `deadline`; returns the sinks of those still
    /// running then (an in-flight request given up: its rows stay queued).
    pub fn join_by(self, deadline: Instant) -> Vec<String> {
        let mut late = Vec::new();
        let all = self
            .running
            .into_iter()
            .map(|(k, r)| (k.name().to_string(), r.handle))
            .chain(
                self.ending
                    .into_iter()
                    .map(|(_, r)| ("removed".to_string(), r.handle)),
            );
        for (name, handle) in all {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                late.push(name);
            }
        }
        late
    }
}
