//! Creates, at zero, the series of every failure a configuration can have, so that a rate or
//! an alert over them reads 0 before the first failure instead of nothing.

use std::sync::Arc;

use crate::config::Config;

use super::{
    ClusterLabels, EndpointLabels, FeedErrorLabels, HandshakeFailureLabels, HealthCheckLabels,
    ListenerLabels, Metrics, ReloadLabels, RetryLabels, UpstreamErrorLabels,
};

/// Every reason each failure counter can carry. The lists live beside the code that produces
/// the reasons (which checks them in debug builds); the caller gathers them, so that metrics
/// depends on none of those modules.
#[derive(Debug, Clone, Copy)]
pub struct FailureReasons {
    /// `aegis_upstream_errors_total{reason}`.
    pub upstream: &'static [&'static str],
    /// `aegis_retries_total{reason}`.
    pub retry: &'static [&'static str],
    /// `aegis_tls_handshake_failures_total{reason}`.
    pub handshake: &'static [&'static str],
    /// `aegis_carbon_feed_errors_total{reason}`.
    pub feed: &'static [&'static str],
}

// `get_or_create` returns a read guard on the family; it is dropped at once.
impl Metrics {
    /// Creates the zero series of `config`'s listeners, clusters and feeds, one per reason of
    /// `reasons`. Series of a reload's removed clusters keep their last values, as counters
    /// should.
    pub fn declare(&self, config: &Config, reasons: &FailureReasons) {
        for result in ["ok", "error"] {
            drop(self.reloads.get_or_create(&ReloadLabels { result }));
        }
        for l in &config.listeners {
            self.declare_listener(&l.name, l.tls.is_some() || l.quic.is_some(), reasons);
        }
        for c in &config.clusters {
            let cluster: Arc<str> = Arc::from(c.name.as_str());
            self.declare_cluster(&cluster, c.health_check.is_some(), reasons);
            for endpoint in &c.endpoints {
                let labels = EndpointLabels {
                    cluster: cluster.clone(),
                    endpoint: endpoint.to_string(),
                };
                drop(self.ejections.get_or_create(&labels));
            }
        }
        for feed in &config.carbon.feeds {
            for &reason in reasons.feed {
                let feed = feed.name();
                drop(
                    self.carbon_feed_errors
                        .get_or_create(&FeedErrorLabels { feed, reason }),
                );
            }
        }
    }

    fn declare_listener(&self, name: &str, tls: bool, reasons: &FailureReasons) {
        let listener = ListenerLabels {
            listener: name.to_owned(),
        };
        drop(self.connections_active.get_or_create(&listener));
        drop(self.connections_total.get_or_create(&listener));
        drop(self.connections_refused.get_or_create(&listener));
        if tls {
            for &reason in reasons.handshake {
                drop(
                    self.handshake_failures
                        .get_or_create(&HandshakeFailureLabels {
                            listener: name.to_owned(),
                            reason,
                        }),
                );
            }
        }
    }

    fn declare_cluster(&self, cluster: &Arc<str>, health_checked: bool, reasons: &FailureReasons) {
        let labels = ClusterLabels {
            cluster: cluster.clone(),
        };
        drop(self.shed.get_or_create(&labels));
        drop(self.retries_over_budget.get_or_create(&labels));
        for &reason in reasons.upstream {
            drop(self.upstream_errors.get_or_create(&UpstreamErrorLabels {
                cluster: cluster.clone(),
                reason,
            }));
        }
        for &reason in reasons.retry {
            drop(self.retries.get_or_create(&RetryLabels {
                cluster: cluster.clone(),
                reason,
            }));
        }
        if health_checked {
            for result in ["pass", "fail"] {
                drop(self.health_checks.get_or_create(&HealthCheckLabels {
                    cluster: cluster.clone(),
                    result,
                }));
            }
        }
    }
}
