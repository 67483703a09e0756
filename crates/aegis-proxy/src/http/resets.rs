//! Rapid reset (CVE-2023-44487) in every timing: a connection whose client cancels most of the
//! requests it starts is closed, however long it waits before each RST_STREAM.
//!
//! hyper already drops a request's future when its stream is reset, which cancels the upstream
//! exchange, and `max_concurrent_streams` bounds how many run at once; resets sent in the same
//! write are caught by h2's pending-accept limit. What remains is a client that opens and
//! cancels streams one after another, each reaching an upstream. Counting cancelled requests
//! against started ones catches it whatever the pacing: past [`MIN_CANCELLED`] cancellations,
//! a connection on which more than half of all requests were cancelled is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Cancellations any connection may make before the ratio is looked at: a browser that
/// navigates away cancels a few, never hundreds.
const MIN_CANCELLED: u64 = 100;

/// Requests started and cancelled on one connection.
#[derive(Debug, Default)]
pub(super) struct Resets {
    started: AtomicU64,
    cancelled: AtomicU64,
    abusive: Notify,
}

/// A started request; dropped before [`Started::answered`], it counts as cancelled.
#[derive(Debug)]
pub(super) struct Started {
    resets: Arc<Resets>,
    answered: bool,
}

impl Resets {
    /// Counts a request as started.
    pub(super) fn start(self: &Arc<Self>) -> Started {
        self.started.fetch_add(1, Ordering::Relaxed);
        Started {
            resets: self.clone(),
            answered: false,
        }
    }

    /// Resolves once the connection has cancelled too many of its requests.
    pub(super) async fn abusive(&self) {
        self.abusive.notified().await;
    }

    fn cancelled(&self) {
        let cancelled = self.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        let started = self.started.load(Ordering::Relaxed);
        if cancelled > MIN_CANCELLED && cancelled * 2 > started {
            self.abusive.notify_one();
        }
    }
}

impl Started {
    /// The request got its response (or the proxy's own answer): not a cancellation.
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.answered {
            self.resets.cancelled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn mostly_cancelled_connections_are_abusive_and_others_are_not() {
        let resets = Arc::new(Resets::default());
        for _ in 0..300 {
            resets.start().answered();
        }
        for _ in 0..=MIN_CANCELLED {
            drop(resets.start());
        }
        let fired = tokio::time::timeout(std::time::Duration::from_secs(1), resets.abusive());
        assert!(fired.await.is_err(), "101 of 401 cancelled is fine");

        let resets = Arc::new(Resets::default());
        for _ in 0..=MIN_CANCELLED {
            resets.start().answered();
            drop(resets.start());
        }
        assert!(
            resets.cancelled.load(Ordering::Relaxed) * 2 <= resets.started.load(Ordering::Relaxed)
        );
        drop(resets.start());
        let fired = tokio::time::timeout(std::time::Duration::from_secs(1), resets.abusive());
        assert!(
            fired.await.is_ok(),
            "102 of 203 cancelled closes the connection"
        );
    }
}
