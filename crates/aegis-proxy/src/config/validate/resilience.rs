//! Validation of each cluster's health checks, outlier ejection, retries and limits.

use toml::Spanned;

use super::Checker;
use crate::config::raw::{RawHealthCheck, RawOutlier, RawRetry};
use crate::config::{HealthCheckConfig, OutlierConfig, RetryConfig};

const DEFAULT_CHECK_INTERVAL_MS: u64 = 5_000;
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 1_000;
const DEFAULT_HEALTHY_THRESHOLD: u64 = 2;
const DEFAULT_UNHEALTHY_THRESHOLD: u64 = 3;
/// Envoy's default for `max_requests`.
pub(super) const DEFAULT_MAX_PENDING: u64 = 1024;
/// One client connection may hold at most this fraction (1/N) of a cluster's pending requests.
pub(super) const DEFAULT_CONNECTION_SHARE: u64 = 4;

impl Checker<'_> {
    pub(super) fn health_check(
        &mut self,
        key: &str,
        spanned: &Spanned<RawHealthCheck>,
    ) -> Option<HealthCheckConfig> {
        let h = spanned.get_ref();
        let path = h.path.get_ref();
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            self.error(
                format!("{key}.path"),
                &h.path,
                format!("\"{path}\" is not a path starting with /"),
            );
        }
        if let Some(host) = &h.host {
            if http::uri::Authority::try_from(host.get_ref().as_str()).is_err() {
                self.error(
                    format!("{key}.host"),
                    host,
                    format!("\"{}\" is not a valid host", host.get_ref()),
                );
            }
        }
        let interval = self.duration(
            &format!("{key}.interval_ms"),
            &h.interval_ms,
            DEFAULT_CHECK_INTERVAL_MS,
        );
        let timeout = self.duration(
            &format!("{key}.timeout_ms"),
            &h.timeout_ms,
            DEFAULT_CHECK_TIMEOUT_MS,
        );
        let healthy = self.bounded(
            &format!("{key}.healthy_threshold"),
            &h.healthy_threshold,
            DEFAULT_HEALTHY_THRESHOLD,
            1..=100,
        );
        let unhealthy = self.bounded(
            &format!("{key}.unhealthy_threshold"),
            &h.unhealthy_threshold,
            DEFAULT_UNHEALTHY_THRESHOLD,
            1..=100,
        );
        let expected = self.status_range(&format!("{key}.expected_status"), &h.expected_status);
        if let (Some(interval), Some(timeout)) = (interval, timeout) {
            if timeout > interval {
                let at = h
                    .timeout_ms
                    .as_ref()
                    .map_or_else(|| spanned.span(), Spanned::span);
                let message = format!(
                    "{} ms is longer than interval_ms ({} ms)",
                    timeout.as_millis(),
                    interval.as_millis()
                );
                self.error_at(format!("{key}.timeout_ms"), at, message);
            }
        }
        Some(HealthCheckConfig {
            path: path.clone(),
            host: h.host.as_ref().map(|h| h.get_ref().clone()),
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy? as u32,
            unhealthy_threshold: unhealthy? as u32,
            expected_status: expected?,
        })
    }

    fn status_range(
        &mut self,
        key: &str,
        v: &Option<Spanned<Vec<u16>>>,
    ) -> Option<std::ops::RangeInclusive<u16>> {
        let Some(spanned) = v else {
            return Some(200..=299);
        };
        match spanned.get_ref().as_slice() {
            &[low, high] if (100..=599).contains(&low) && (low..=599).contains(&high) => {
                Some(low..=high)
            }
            _ => {
                self.error(
                    key.to_owned(),
                    spanned,
                    "must be [low, high] with 100 <= low <= high <= 599",
                );
                None
            }
        }
    }

    pub(super) fn outlier(&mut self, key: &str, raw: Option<&RawOutlier>) -> Option<OutlierConfig> {
        let defaults = OutlierConfig::default();
        let Some(o) = raw else {
            return Some(defaults);
        };
        let failures = self.bounded(
            &format!("{key}.consecutive_failures"),
            &o.consecutive_failures,
            u64::from(defaults.consecutive_failures),
            0..=1000,
        );
        let base = self.duration(
            &format!("{key}.base_ejection_ms"),
            &o.base_ejection_ms,
            defaults.base_ejection.as_millis() as u64,
        );
        let max = self.duration(
            &format!("{key}.max_ejection_ms"),
            &o.max_ejection_ms,
            defaults.max_ejection.as_millis() as u64,
        );
        let percent = self.bounded(
            &format!("{key}.max_ejected_percent"),
            &o.max_ejected_percent,
            u64::from(defaults.max_ejected_percent),
            0..=100,
        );
        let (base, max) = (base?, max?);
        if max < base {
            if let Some(at) = &o.max_ejection_ms {
                self.error(
                    format!("{key}.max_ejection_ms"),
                    at,
                    format!(
                        "{} ms is shorter than base_ejection_ms ({} ms)",
                        max.as_millis(),
                        base.as_millis()
                    ),
                );
            } else {
                self.error_no_line(
                    &format!("{key}.base_ejection_ms"),
                    "is longer than max_ejection_ms (default 300000)",
                );
            }
            return None;
        }
        Some(OutlierConfig {
            consecutive_failures: failures? as u32,
            base_ejection: base,
            max_ejection: max,
            max_ejected_percent: percent? as u8,
        })
    }

    pub(super) fn retry(&mut self, key: &str, raw: Option<&RawRetry>) -> Option<RetryConfig> {
        let defaults = RetryConfig::default();
        let Some(r) = raw else {
            return Some(defaults);
        };
        let attempts = self.bounded(
            &format!("{key}.attempts"),
            &r.attempts,
            u64::from(defaults.attempts),
            0..=5,
        );
        let percent = self.float(
            &format!("{key}.budget_percent"),
            &r.budget_percent,
            defaults.budget_ratio * 100.0,
            0.0,
            100.0,
        );
        let min = self.bounded(
            &format!("{key}.min_concurrent"),
            &r.min_concurrent,
            defaults.min_concurrent as u64,
            0..=10_000,
        );
        Some(RetryConfig {
            attempts: attempts? as u32,
            budget_ratio: percent? / 100.0,
            min_concurrent: min? as usize,
        })
    }
}
