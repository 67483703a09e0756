//! Validated resilience settings of a cluster: active health checks, outlier ejection, retries
//! and the pending-request limit.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Path and query requested with GET, starting with `/`.
    pub path: String,
    /// Host header sent; default: the endpoint's `host:port`.
    pub host: Option<String>,
    /// Time between two checks of one endpoint.
    pub interval: Duration,
    /// Deadline for a check's response head.
    pub timeout: Duration,
    /// Consecutive passed checks that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Status codes that pass.
    pub expected_status: RangeInclusive<u16>,
}

/// Passive outlier ejection: endpoints that keep failing real requests are taken out for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive connect failures or 5xx responses that eject; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th consecutive ejection lasts n times as long.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Largest share of the cluster's endpoints ejected at once, in percent.
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Retries of failed upstream requests, bounded by a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries per request, each on an endpoint not tried yet; 0 turns retries off.
    pub attempts: u32,
    /// Retries in flight may be at most this fraction of the cluster's active requests...
    pub budget_ratio: f64,
    /// ...or this many, whichever is larger.
    pub min_concurrent: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 1,
            budget_ratio: 0.2,
            min_concurrent: 3,
        }
    }
}
