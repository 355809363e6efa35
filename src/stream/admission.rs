//! Connections that are not WebSocket clients yet (sending their request
//! head, or being answered over plain HTTP) are admitted here. At most
//! `capacity` are held at once; a new connection beyond that sheds the oldest
//! one, so idle or slow connections cannot keep a normal client out: the
//! newcomer sends its head at once and is served, the squatter is closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct Admission {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    /// In admission order: the first entry is the oldest connection.
    held: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One admitted connection; leaves the admission when dropped.
pub struct Admitted {
    id: u64,
    admission: Arc<Admission>,
    shed: oneshot::Receiver<()>,
}

impl Admission {
    pub fn new(capacity: usize) -> Arc<Admission> {
        Arc::new(Admission {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                held: BTreeMap::new(),
            }),
        })
    }

    /// Admits a connection; returns it and whether an older one was shed for it.
    pub fn admit(self: &Arc<Admission>) -> (Admitted, bool) {
        let (tx, shed) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap();
        // Dropping the oldest one's sender wakes its `shed()`.
        let shed_one = inner.held.len() >= self.capacity && inner.held.pop_first().is_some();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.held.insert(id, tx);
        let admitted = Admitted {
            id,
            admission: self.clone(),
            shed,
        };
        (admitted, shed_one)
    }

    /// How many connections are held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().held.len()
    }
}

impl Admitted {
    /// Resolves once this connection has been shed for a newer one.
    pub async fn shed(&mut self) {
        let _ = (&mut self.shed).await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.inner.lock().unwrap().held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_is_shed_when_full_and_leaving_frees_a_place() {
        let admission = Admission::new(2);
        let (mut first, shed) = admission.admit();
        assert!(!shed);
        let (second, shed) = admission.admit();
        assert!(!shed);
        let (mut third, shed) = admission.admit();
        assert!(shed);
        assert_eq!(admission.len(), 2);
        // The first was shed; the third was not.
        tokio::time::timeout(std::time::Duration::from_secs(1), first.shed())
            .await
            .expect("the oldest connection is told to go");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), third.shed());
        assert!(waiting.await.is_err(), "the newest connection stays");
        drop(first);
        drop(second);
        assert_eq!(admission.len(), 1);
        let (_fourth, shed) = admission.admit();
        assert!(!shed, "a place was free");
    }
}
