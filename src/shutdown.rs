//! One shutdown signal that every blocking wait in the daemon also listens to,
//! and the moment it came (the one deadline of the whole stop is taken from it).
//! Every wait here counts as a healthy wait for the watchdog (`liveness`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// A wake-up flag a thread can sleep on; `Shutdown::trigger` wakes it too.
#[derive(Default)]
pub struct Wake {
    pending: Mutex<bool>,
    cv: Condvar,
    /// Rung along with this one (one insert wakes every sink's poster).
    followers: Mutex<Vec<Weak<Wake>>>,
}

impl Wake {
    pub fn new() -> Arc<Wake> {
        Arc::new(Wake::default())
    }

    /// Wakes the waiter (or makes its next wait return at once).
    pub fn notify(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_all();
        let mut followers = self.followers.lock().unwrap();
        followers.retain(|f| match f.upgrade() {
            Some(f) => {
                f.notify();
                true
            }
            None => false,
        });
    }

    /// Makes every `notify` of this `Wake` also notify `follower` (for as
    /// long as the follower exists).
    pub fn chain(&self, follower: &Arc<Wake>) {
        self.followers
            .lock()
            .unwrap()
            .push(Arc::downgrade(follower));
    }

    /// Sleeps until notified, until `timeout` passes, or until shutdown.
    /// Returns true when woken by a notification or shutdown, false on timeout.
    pub fn wait_timeout(&self, timeout: Duration, shutdown: &Shutdown) -> bool {
        crate::liveness::waiting(|| self.wait_timeout_inner(timeout, shutdown))
    }

    fn wait_timeout_inner(&self, timeout: Duration, shutdown: &Shutdown) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending = self.pending.lock().unwrap();
        loop {
            if *pending || shutdown.is_triggered() {
                *pending = false;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            pending = self.cv.wait_timeout(pending, deadline - now).unwrap().0;
        }
    }
}

struct Inner {
    flag: AtomicBool,
    triggered_at: Mutex<Option<Instant>>,
    wakes: Mutex<Vec<Weak<Wake>>>,
    async_notify: tokio::sync::Notify,
    own_wake: Arc<Wake>,
}

/// Cloneable handle to the daemon-wide shutdown request.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                flag: AtomicBool::new(false),
                triggered_at: Mutex::new(None),
                wakes: Mutex::new(Vec::new()),
                async_notify: tokio::sync::Notify::new(),
                own_wake: Wake::new(),
            }),
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Requests shutdown and wakes every registered waiter.
    pub fn trigger(&self) {
        self.inner
            .triggered_at
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.async_notify.notify_waiters();
        self.inner.own_wake.notify();
        for wake in self.inner.wakes.lock().unwrap().iter() {
            if let Some(wake) = wake.upgrade() {
                wake.notify();
            }
        }
    }

    /// When shutdown was first requested.
    pub fn triggered_at(&self) -> Option<Instant> {
        *self.inner.triggered_at.lock().unwrap()
    }

    /// Makes `trigger` also wake this `Wake`.
    pub fn register(&self, wake: &Arc<Wake>) {
        self.inner.wakes.lock().unwrap().push(Arc::downgrade(wake));
        if self.is_triggered() {
            wake.notify();
        }
    }

    /// Sleeps for `timeout` unless shutdown comes first. Returns true on shutdown.
    pub fn sleep(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        crate::liveness::waiting(|| {
            while !self.is_triggered() {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                self.inner.own_wake.wait_timeout(deadline - now, self);
            }
            true
        })
    }

    /// Resolves once shutdown has been requested (for the async stream server).
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.async_notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}
