//! Request coalescing: concurrent misses for one key share a single
//! upstream fetch. The first caller becomes the leader; the others wait for
//! what it publishes (or give up after a timeout and fetch for themselves).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// Receivers of the in-flight fetches' results, by cache key.
type FlightMap<T> = Arc<Mutex<HashMap<Arc<str>, watch::Receiver<Option<T>>>>>;

/// What a fetch leaves for concurrent waiters: a stored entry they may be
/// served from (after their own `Vary`/authorization check).
#[derive(Clone)]
pub struct Shared {
    /// The stored entry.
    pub entry: Arc<crate::entry::Entry>,
}

/// The in-flight fetches, by cache key.
pub struct Flights<T> {
    map: FlightMap<T>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// The caller's role in a flight.
pub enum Join<T> {
    /// Fetch, then [`Leader::complete`] with the shareable result.
    Leader(Leader<T>),
    /// Wait for the leader's result; `None` inside or a closed channel
    /// means nothing shareable came and the waiter must fetch itself.
    Waiter(watch::Receiver<Option<T>>),
}

impl<T: Clone> Flights<T> {
    /// Joins the flight for `key`, starting one if there is none.
    pub fn join(&self, key: &str) -> Join<T> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(key) {
            return Join::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let key: Arc<str> = Arc::from(key);
        map.insert(key.clone(), rx);
        Join::Leader(Leader {
            key,
            tx,
            map: self.map.clone(),
            done: false,
        })
    }

    /// True when nothing is in flight.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// The leader's handle: publishing or dropping it ends the flight.
pub struct Leader<T> {
    key: Arc<str>,
    tx: watch::Sender<Option<T>>,
    map: FlightMap<T>,
    done: bool,
}

impl<T> Leader<T> {
    /// Publishes the result to every waiter and ends the flight.
    pub fn complete(mut self, value: T) {
        self.tx.send_replace(Some(value));
        self.end();
    }

    fn end(&mut self) {
        if !self.done {
            self.done = true;
            self.map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        // A leader that never completed (cancelled, panicked) closes the
        // channel: its waiters see that and fetch for themselves.
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_result() {
        let f: Flights<u32> = Flights::default();
        let Join::Leader(leader) = f.join("k") else {
            panic!("first caller leads")
        };
        let Join::Waiter(mut rx) = f.join("k") else {
            panic!("second caller waits")
        };
        leader.complete(7);
        let v = *rx.wait_for(Option::is_some).await.unwrap();
        assert_eq!(v, Some(7));
        assert!(f.is_empty());
    }

    #[tokio::test]
    async fn dropped_leader_releases_waiters() {
        let f: Flights<u32> = Flights::default();
        let leader = f.join("k");
        let Join::Waiter(mut rx) = f.join("k") else {
            panic!("second caller waits")
        };
        drop(leader);
        assert!(rx.wait_for(Option::is_some).await.is_err());
        assert!(matches!(f.join("k"), Join::Leader(_)));
    }
}
