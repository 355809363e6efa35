//! Connections whose request head has not come in yet are admitted here. At
//! most `capacity` are held at once; a new connection beyond that sheds the
//! oldest one, so idle or slow connections cannot keep a normal client out:
//! the newcomer sends its head at once and is served, the squatter is closed.
//! Connections that had sent something by the time they were accepted go
//! after every silent one: a flood of connections that send nothing, faster
//! than the server reads heads, cannot push out a client whose request is
//! already waiting to be read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct Admission {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    /// In admission order (the first entry is the oldest): connections that
    /// had sent nothing when accepted, and those that had.
    silent: BTreeMap<u64, oneshot::Sender<()>>,
    talking: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Inner {
    fn len(&self) -> usize {
        self.silent.len() + self.talking.len()
    }
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
                silent: BTreeMap::new(),
                talking: BTreeMap::new(),
            }),
        })
    }

    /// Admits a connection (`talking`: it had sent bytes when accepted);
    /// returns it and whether an older one was shed for it.
    pub fn admit(self: &Arc<Admission>, talking: bool) -> (Admitted, bool) {
        let (tx, shed) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap();
        // Dropping the oldest one's sender wakes its `shed()`.
        let shed_one = inner.len() >= self.capacity
            && (inner.silent.pop_first().is_some() || inner.talking.pop_first().is_some());
        let id = inner.next_id;
        inner.next_id += 1;
        if talking {
            inner.talking.insert(id, tx);
        } else {
            inner.silent.insert(id, tx);
        }
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
        self.inner.lock().unwrap().len()
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
        let mut inner = self.admission.inner.lock().unwrap();
        if inner.silent.remove(&self.id).is_none() {
            inner.talking.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_is_shed_when_full_and_leaving_frees_a_place() {
        let admission = Admission::new(2);
        let (mut first, shed) = admission.admit(false);
        assert!(!shed);
        let (second, shed) = admission.admit(false);
        assert!(!shed);
        let (mut third, shed) = admission.admit(false);
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
        let (_fourth, shed) = admission.admit(false);
        assert!(!shed, "a place was free");
    }

    #[tokio::test]
    async fn silent_connections_are_shed_before_those_that_sent_their_request() {
        let second = std::time::Duration::from_secs(1);
        let stays = std::time::Duration::from_millis(50);
        let admission = Admission::new(2);
        let (mut talking, _) = admission.admit(true);
        let (mut silent, _) = admission.admit(false);
        let (mut newer_silent, shed) = admission.admit(false);
        assert!(shed);
        tokio::time::timeout(second, silent.shed())
            .await
            .expect("the silent one goes, though the talking one is older");
        // A talking newcomer also pushes out the silent one left.
        let (mut newer_talking, shed) = admission.admit(true);
        assert!(shed);
        tokio::time::timeout(second, newer_silent.shed())
            .await
            .expect("the remaining silent one goes");
        assert!(tokio::time::timeout(stays, talking.shed()).await.is_err());
        // None silent: the oldest talking one goes.
        let (_newest, shed) = admission.admit(true);
        assert!(shed);
        tokio::time::timeout(second, talking.shed())
            .await
            .expect("with no silent connection, the oldest goes");
        assert!(tokio::time::timeout(stays, newer_talking.shed())
            .await
            .is_err());
        assert_eq!(admission.len(), 2);
    }
}
