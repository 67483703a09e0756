//! Endpoint health: passive outlier ejection from real traffic, and the state of active checks.
//!
//! An endpoint takes new requests while it passes its active checks (or has none) and is not
//! ejected. Ejection follows consecutive failures of real requests (connect failures, resets,
//! timeouts, 5xx); the n-th ejection in a row lasts n × base, up to a maximum. The cap on the
//! ejected share of a cluster lives in [`super::Cluster`], which sees all endpoints. Everything is
//! lock-free; time is tokio's, so tests can pause it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HealthCheckConfig, OutlierConfig};

/// The health of one endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds after `epoch` until which the endpoint is ejected (0: never ejected).
    ejected_until_ms: AtomicU64,
    /// Ejections in a row: the multiplier of the next ejection time.
    ejection_streak: AtomicU32,
    ejections_total: AtomicU64,
    /// Result of active checks (true without checks).
    checks_healthy: AtomicBool,
    /// Consecutive check results that disagree with `checks_healthy`.
    check_streak: AtomicU32,
}

impl EndpointHealth {
    /// A healthy endpoint.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            checks_healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the endpoint may take new requests now.
    pub fn is_available(&self) -> bool {
        self.passes_checks() && !self.is_ejected()
    }

    /// Whether the last active checks passed (always true without active checks).
    pub fn passes_checks(&self) -> bool {
        self.checks_healthy.load(Ordering::Relaxed)
    }

    /// Whether outlier ejection currently keeps the endpoint out.
    pub fn is_ejected(&self) -> bool {
        self.ejected_for().is_some()
    }

    /// Time left in the current ejection.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Ejections since the endpoint was created.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// A request got a response that is not a server error.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed (connect, reset, timeout or 5xx). Returns true when the endpoint has
    /// now failed `consecutive_failures` times in a row and should be ejected.
    pub fn record_failure(&self, outlier: &OutlierConfig) -> bool {
        if outlier.consecutive_failures == 0 || self.is_ejected() {
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        failures >= outlier.consecutive_failures
    }

    /// Ejects the endpoint; returns how long for. An endpoint that stayed in for longer than
    /// `max_ejection` since its last ejection starts again at the base time.
    pub fn eject(&self, outlier: &OutlierConfig) -> Duration {
        let now = self.now_ms();
        let last_until = self.ejected_until_ms.load(Ordering::Relaxed);
        let max_ms = outlier.max_ejection.as_millis() as u64;
        if self.ejections_total() == 0 || now.saturating_sub(last_until) > max_ms {
            self.ejection_streak.store(0, Ordering::Relaxed);
        }
        let streak = self.ejection_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let time = (outlier.base_ejection * streak).min(outlier.max_ejection);
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms
            .store(now + time.as_millis() as u64, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        time
    }

    /// Records one active check; returns the new state when this check changed it. A passed
    /// check also ends an outlier ejection: the endpoint has shown it answers again.
    pub fn record_check(&self, passed: bool, check: &HealthCheckConfig) -> Option<bool> {
        if passed && self.is_ejected() {
            self.ejected_until_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
        let healthy = self.checks_healthy.load(Ordering::Relaxed);
        if passed == healthy {
            self.check_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if healthy {
            check.unhealthy_threshold
        } else {
            check.healthy_threshold
        };
        if streak < needed {
            return None;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.checks_healthy.store(passed, Ordering::Relaxed);
        Some(passed)
    }
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

/// How many of `endpoints` may be ejected at once: `max_percent` of them, at least one when
/// ejection is allowed at all, and never every endpoint.
pub fn max_ejectable(endpoints: usize, max_percent: u8) -> usize {
    if max_percent == 0 || endpoints < 2 {
        return 0;
    }
    (endpoints * usize::from(max_percent) / 100).clamp(1, endpoints - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(failures: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: failures,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    fn check() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/health".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: 200..=299,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_reach_the_threshold_and_success_resets() {
        let health = EndpointHealth::new();
        let o = outlier(3);
        assert!(!health.record_failure(&o));
        health.record_success();
        assert!(!health.record_failure(&o));
        assert!(!health.record_failure(&o));
        assert!(health.record_failure(&o));
        assert_eq!(health.eject(&o), Duration::from_secs(10));
        assert!(!health.is_available());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(health.is_available());
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_grow_up_to_the_cap_and_reset_after_a_quiet_spell() {
        let health = EndpointHealth::new();
        let o = outlier(1);
        let mut times = Vec::new();
        for _ in 0..4 {
            times.push(health.eject(&o).as_secs());
            tokio::time::advance(health.ejected_for().unwrap()).await;
        }
        assert_eq!(times, [10, 20, 25, 25]);
        tokio::time::advance(Duration::from_secs(26)).await;
        assert_eq!(health.eject(&o), Duration::from_secs(10));
        assert_eq!(health.ejections_total(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_consecutive_failures_never_ejects() {
        let health = EndpointHealth::new();
        assert!((0..100).all(|_| !health.record_failure(&outlier(0))));
    }

    #[tokio::test(start_paused = true)]
    async fn active_checks_flip_state_only_after_their_thresholds() {
        let health = EndpointHealth::new();
        let c = check();
        assert_eq!(health.record_check(false, &c), None);
        assert_eq!(
            health.record_check(true, &c),
            None,
            "a pass resets the streak"
        );
        assert_eq!(health.record_check(false, &c), None);
        assert_eq!(health.record_check(false, &c), None);
        assert_eq!(health.record_check(false, &c), Some(false));
        assert!(!health.is_available());
        assert_eq!(health.record_check(true, &c), None);
        assert_eq!(health.record_check(true, &c), Some(true));
        assert!(health.is_available());
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_check_ends_an_ejection() {
        let health = EndpointHealth::new();
        health.eject(&outlier(1));
        assert!(!health.is_available());
        assert_eq!(health.record_check(true, &check()), None);
        assert!(health.is_available());
        // The streak is kept: the next ejection is longer.
        assert_eq!(health.eject(&outlier(1)), Duration::from_secs(20));
    }

    #[test]
    fn ejection_cap_never_empties_a_cluster() {
        assert_eq!(max_ejectable(1, 100), 0);
        assert_eq!(max_ejectable(2, 10), 1);
        assert_eq!(max_ejectable(2, 100), 1);
        assert_eq!(max_ejectable(10, 50), 5);
        assert_eq!(max_ejectable(10, 100), 9);
        assert_eq!(max_ejectable(10, 0), 0);
    }
}
