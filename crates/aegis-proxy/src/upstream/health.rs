//! Passive health: an endpoint whose connections keep failing is ejected for a while, so that
//! neither load balancing nor the carbon policy sends it new requests.
//!
//! A first step towards the resilience issue's active checks and outlier ejection: one rule
//! (consecutive connect failures), a fixed ejection time, and never ejecting the last endpoint
//! of a candidate set (the pickers fall back to all endpoints when every one is ejected).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive connect failures that eject an endpoint.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// How long an ejected endpoint gets no new requests.
pub const EJECTION_TIME: Duration = Duration::from_secs(10);

/// The health of one endpoint, lock-free.
#[derive(Debug)]
pub struct PassiveHealth {
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds after `epoch` until which the endpoint is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
}

impl PassiveHealth {
    /// A healthy endpoint.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the endpoint may take new requests now.
    pub fn is_available(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) <= self.now_ms()
    }

    /// A connection was opened or a response received.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A connection could not be opened; returns true when this ejects the endpoint.
    pub fn record_connect_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < EJECT_AFTER_FAILURES {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = self.now_ms() + EJECTION_TIME.as_millis() as u64;
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        true
    }
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_and_comes_back() {
        let health = PassiveHealth::new();
        assert!(!health.record_connect_failure());
        health.record_success();
        assert!(!health.record_connect_failure());
        assert!(!health.record_connect_failure());
        assert!(health.is_available());
        assert!(health.record_connect_failure());
        assert!(!health.is_available());
        tokio::time::advance(EJECTION_TIME).await;
        assert!(health.is_available());
    }
}
