//! Counting limits: pending requests per cluster, retries in flight, open connections.
//!
//! A [`Slot`] holds one unit of a shared counter until dropped, so a limit is released on every
//! path out of a request or connection, including panics and client disconnects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One unit of a counter, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a unit of `counter` unless it already holds `limit`.
    pub fn try_take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::Relaxed);
        if before >= limit {
            counter.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A limit on open connections whose maximum a reload may change while connections stay open.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: Arc<AtomicUsize>,
    max: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` connections (`None`: unlimited).
    pub fn new(max: Option<usize>) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max: AtomicUsize::new(max.unwrap_or(usize::MAX)),
        }
    }

    /// Changes the maximum; connections already open stay open.
    pub fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// A slot for one more connection, unless the limit is reached.
    pub fn try_acquire(&self) -> Option<Slot> {
        Slot::try_take(&self.open, self.max.load(Ordering::Relaxed))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_and_the_maximum_can_change() {
        let limit = ConnectionLimit::new(Some(2));
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.open(), 1);
        limit.set_max(Some(1));
        assert!(limit.try_acquire().is_none());
        limit.set_max(None);
        assert!(limit.try_acquire().is_some());
    }
}
