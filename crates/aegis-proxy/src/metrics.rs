//! Prometheus metrics, registered into a registry the caller owns (never a global one).
//!
//! Every family is registered at start, and the series of every failure a configuration can
//! have are created at zero ([`Metrics::declare`]), so that alerts and dashboards work before
//! the first failure.

mod declare;
pub mod process;
mod request;
pub mod text;

pub use declare::FailureReasons;
pub use request::count_request;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Labels of `aegis_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name, or empty when no route matched.
    pub route: Arc<str>,
    /// Cluster name, or empty when no route matched.
    pub cluster: Arc<str>,
    /// Response status code.
    pub status: u16,
    /// Client HTTP version: `http/1.0`, `http/1.1`, `h2`, `h3`.
    pub protocol: &'static str,
}

/// Labels of `aegis_request_duration_seconds`: the client-facing time of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name, or empty when no route matched.
    pub route: Arc<str>,
    /// Cluster name, or empty when no route matched.
    pub cluster: Arc<str>,
    /// Client HTTP version.
    pub protocol: &'static str,
    /// `1xx` .. `5xx`.
    pub status_class: &'static str,
}

/// Labels of the body byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name, or empty when no route matched.
    pub route: Arc<str>,
    /// Cluster name, or empty when no route matched.
    pub cluster: Arc<str>,
    /// Client HTTP version.
    pub protocol: &'static str,
}

/// Labels of `aegis_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
    /// Git commit the binary was built from (`unknown` outside a checkout).
    pub commit: &'static str,
}

/// The version and commit of this build, as `aegis_build_info` and `--version` show them.
pub const BUILD: BuildLabels = BuildLabels {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("AEGIS_COMMIT"),
};

/// `2xx` for 204, and so on; `other` outside 100..=599.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Labels of `aegis_upstream_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
}

/// Labels of `aegis_downstream_connections_active`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// Labels of `aegis_tls_handshakes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// Listener name.
    pub listener: String,
    /// Negotiated key-exchange group (`X25519MLKEM768`, `X25519`, ...).
    pub group: &'static str,
    /// Negotiated ALPN protocol (`h2`, `http/1.1`, `h3`), `none` without ALPN.
    pub protocol: &'static str,
}

/// Labels of `aegis_tls_handshake_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeFailureLabels {
    /// Listener name.
    pub listener: String,
    /// Short reason (`no_shared_group`, `timeout`, `eof`, ...).
    pub reason: &'static str,
}

/// Labels of `aegis_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Short reason (`connect`, `connect_timeout`, `timeout`, `reset`, ...).
    pub reason: &'static str,
}

/// Labels of `aegis_upstream_health_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// `pass` or `fail`.
    pub result: &'static str,
}

/// Labels of `aegis_upstream_ejections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Endpoint `host:port`.
    pub endpoint: String,
}

/// Labels of `aegis_upstream_retries_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// What failed first: `connect` or `reset`.
    pub reason: &'static str,
}

/// Labels of `aegis_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels with a region.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    /// Region name.
    pub region: Arc<str>,
}

/// Labels of `aegis_carbon_intensity_gco2_per_kwh`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionSourceLabels {
    /// Region name.
    pub region: String,
    /// Feed the value came from (`file`, `static`, `unknown`).
    pub source: &'static str,
}

/// Labels of `aegis_carbon_feed_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedErrorLabels {
    /// Feed name.
    pub feed: &'static str,
    /// Short reason (`unreadable`, `malformed_json`, ...).
    pub reason: &'static str,
}

/// Labels of `aegis_carbon_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CarbonRequestLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Region chosen, empty when none.
    pub region: Arc<str>,
    /// Decision reason (`greenest`, `weighted`, `fallback:stale`, ...).
    pub reason: &'static str,
}

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// A counter of a float quantity.
pub type FloatCounter = Counter<f64, AtomicU64>;

/// All proxy metrics.
#[derive(Debug)]
pub struct Metrics {
    /// The empty label value, shared so that recording a request allocates no label.
    pub no_label: Arc<str>,
    /// Requests answered, by listener, route, cluster, status and protocol.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from a request's arrival to the end of its response, as the client sees it.
    pub request_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// Request body bytes received from clients.
    pub request_body_bytes: Family<TrafficLabels, Counter>,
    /// Response body bytes sent to clients.
    pub response_body_bytes: Family<TrafficLabels, Counter>,
    /// Time from sending a request upstream to receiving its response head.
    pub upstream_duration: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    /// Upstream failures by reason.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Open client connections.
    pub connections_active: Family<ListenerLabels, Gauge>,
    /// Client connections accepted.
    pub connections_total: Family<ListenerLabels, Counter>,
    /// Completed TLS handshakes by group and protocol.
    pub handshakes: Family<HandshakeLabels, Counter>,
    /// Failed TLS handshakes by reason.
    pub handshake_failures: Family<HandshakeFailureLabels, Counter>,
    /// Current grid intensity per region and source.
    pub carbon_intensity: Family<RegionSourceLabels, FloatGauge>,
    /// Age of each region's intensity value.
    pub carbon_data_age: Family<RegionLabels, FloatGauge>,
    /// Feed failures by reason.
    pub carbon_feed_errors: Family<FeedErrorLabels, Counter>,
    /// Carbon decisions by cluster, region and reason.
    pub carbon_requests: Family<CarbonRequestLabels, Counter>,
    /// Estimated grams CO2eq emitted per region.
    pub carbon_emitted: Family<RegionLabels, FloatCounter>,
    /// Estimated grams the cluster's carbon-blind balancing would have emitted.
    pub carbon_baseline: Family<ClusterLabels, FloatCounter>,
    /// Estimated grams saved against that baseline, signed: a request that emitted more than
    /// the baseline would have lowers it.
    pub carbon_saved: Family<ClusterLabels, FloatGauge>,
    /// Each region's latency estimate (probe minimum, or the configured prior).
    pub carbon_region_latency: Family<RegionClusterLabels, FloatGauge>,
    /// Active health checks by result.
    pub health_checks: Family<HealthCheckLabels, Counter>,
    /// Outlier ejections per endpoint.
    pub ejections: Family<EndpointLabels, Counter>,
    /// Retries sent, by what failed first.
    pub retries: Family<RetryLabels, Counter>,
    /// Retries not sent because the budget was used up.
    pub retries_over_budget: Family<ClusterLabels, Counter>,
    /// Requests shed with 503 because the cluster had too many pending.
    pub shed: Family<ClusterLabels, Counter>,
    /// Client connections refused by a connection limit.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// Configuration reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Metrics {
    /// Creates the metrics and registers them under the `aegis` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            no_label: Arc::from(""),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            request_body_bytes: Family::default(),
            response_body_bytes: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            connections_active: Family::default(),
            connections_total: Family::default(),
            handshakes: Family::default(),
            handshake_failures: Family::default(),
            carbon_intensity: Family::default(),
            carbon_data_age: Family::default(),
            carbon_feed_errors: Family::default(),
            carbon_requests: Family::default(),
            carbon_emitted: Family::default(),
            carbon_baseline: Family::default(),
            carbon_saved: Family::default(),
            carbon_region_latency: Family::default(),
            health_checks: Family::default(),
            ejections: Family::default(),
            retries: Family::default(),
            retries_over_budget: Family::default(),
            shed: Family::default(),
            connections_refused: Family::default(),
            reloads: Family::default(),
        };
        process::register(registry);
        let aegis = registry.sub_registry_with_prefix("aegis");
        aegis.register(
            "build",
            "Version and git commit of the running binary",
            prometheus_client::metrics::info::Info::new(BUILD),
        );
        metrics.register_traffic(aegis);
        metrics.register_upstream(aegis);
        metrics.register_connections(aegis);
        metrics.register_carbon(aegis.sub_registry_with_prefix("carbon"));
        metrics
    }
}

impl Metrics {
    /// The upstream families: exchange time, errors, checks, ejections, retries, shedding.
    fn register_upstream(&self, registry: &mut Registry) {
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request upstream to its response head",
            self.upstream_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, by reason",
            self.upstream_errors.clone(),
        );
        registry.register(
            "upstream_health_checks",
            "Active health checks by cluster and result",
            self.health_checks.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Outlier ejections per endpoint",
            self.ejections.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream requests retried on another endpoint, by what failed first",
            self.retries.clone(),
        );
        registry.register(
            "upstream_retries_over_budget",
            "Retries not sent because the cluster's retry budget was used up",
            self.retries_over_budget.clone(),
        );
        registry.register(
            "upstream_requests_shed",
            "Requests answered 503 because the cluster had max_pending_requests in flight",
            self.shed.clone(),
        );
    }

    /// The client-side families: connections, TLS handshakes, refusals, and reloads.
    fn register_connections(&self, registry: &mut Registry) {
        registry.register(
            "downstream_connections_active",
            "Open client connections",
            self.connections_active.clone(),
        );
        registry.register(
            "downstream_connections",
            "Client connections accepted",
            self.connections_total.clone(),
        );
        registry.register(
            "tls_handshakes",
            "Completed TLS handshakes by negotiated key-exchange group and protocol",
            self.handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes by reason",
            self.handshake_failures.clone(),
        );
        registry.register(
            "downstream_connections_refused",
            "Client connections refused by a connection limit",
            self.connections_refused.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            self.reloads.clone(),
        );
    }

    fn register_traffic(&self, aegis: &mut Registry) {
        aegis.register(
            "http_requests",
            "Requests answered, by listener, route, cluster, status and client protocol",
            self.requests.clone(),
        );
        aegis.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response, as the client sees it",
            self.request_duration.clone(),
        );
        aegis.register(
            "request_body_bytes",
            "Request body bytes received from clients",
            self.request_body_bytes.clone(),
        );
        aegis.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            self.response_body_bytes.clone(),
        );
    }

    fn register_carbon(&self, carbon: &mut Registry) {
        carbon.register(
            "intensity_gco2_per_kwh",
            "Grid carbon intensity per region, by the feed it came from",
            self.carbon_intensity.clone(),
        );
        carbon.register(
            "data_age_seconds",
            "Age of each region's carbon-intensity value",
            self.carbon_data_age.clone(),
        );
        carbon.register(
            "feed_errors",
            "Carbon feed failures by reason",
            self.carbon_feed_errors.clone(),
        );
        carbon.register(
            "requests",
            "Carbon routing decisions by cluster, region and reason",
            self.carbon_requests.clone(),
        );
        carbon.register(
            "emitted_grams",
            "Estimated grams CO2eq of proxied requests, by region",
            self.carbon_emitted.clone(),
        );
        carbon.register(
            "baseline_grams",
            "Estimated grams CO2eq the carbon-blind baseline ([carbon] baseline) would have emitted",
            self.carbon_baseline.clone(),
        );
        carbon.register(
            "saved_grams",
            "Estimated grams CO2eq saved against the baseline, signed (negative: emitted more)",
            self.carbon_saved.clone(),
        );
        carbon.register(
            "region_latency_seconds",
            "Latency estimate of each region of a carbon-aware cluster (minimum of recent probes, or rtt_ms before the first)",
            self.carbon_region_latency.clone(),
        );
    }
}

/// Labels with a cluster and one of its regions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionClusterLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Region name.
    pub region: Arc<str>,
}

/// Labels of `aegis_upstream_healthy`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointRegionLabels {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Endpoint `host:port`.
    pub endpoint: String,
    /// Region name, empty without regions.
    pub region: String,
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn handshakes_are_exposed_with_group_and_protocol() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics
            .handshakes
            .get_or_create(&HandshakeLabels {
                listener: "public".into(),
                group: "X25519MLKEM768",
                protocol: "h2",
            })
            .inc();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"h2\"} 1"
            ),
            "{text}"
        );
    }
}
