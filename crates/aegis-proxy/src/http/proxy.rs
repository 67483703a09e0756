//! What the request path reads: the [`Proxy`] built from a config (routes, clusters, carbon
//! feeds, metrics), and what each listener and connection adds ([`RequestRules`],
//! [`ConnInfo`]). Built once per config and per connection, read by every request.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::path::PathRules;
use crate::carbon_feed::CarbonFeeds;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::upstream::Cluster;
use aegis_carbon::energy::EnergyModel;

/// Routes and clusters: everything the forward path reads, built once from a [`Config`].
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    route_names: Vec<Arc<str>>,
    clusters: Vec<Arc<Cluster>>,
    metrics: Arc<Metrics>,
    access_log: bool,
    access_log_query: crate::config::QueryLog,
    carbon: Arc<CarbonFeeds>,
    region_names: Vec<Arc<str>>,
    region_header: Option<HeaderName>,
    energy: EnergyModel,
    probe: ProbeSettings,
}

/// How often and how patiently regions are probed for latency.
#[derive(Debug, Clone, Copy)]
struct ProbeSettings {
    interval: std::time::Duration,
    timeout: std::time::Duration,
}

impl Proxy {
    /// Builds routes, upstream pools and carbon feeds. Needs a tokio runtime (pools spawn
    /// tasks lazily).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let carbon = Arc::new(CarbonFeeds::new(
            config.carbon.clone(),
            config.regions.clone(),
            metrics.clone(),
        ));
        Self::with_feeds(config, metrics, carbon)
    }

    /// Like [`Proxy::new`], but reads intensities from existing `carbon` feeds (a reload that
    /// leaves `[carbon]` and `[regions]` unchanged keeps them).
    pub fn with_feeds(config: &Config, metrics: Arc<Metrics>, carbon: Arc<CarbonFeeds>) -> Self {
        let clusters: Vec<Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|c| Arc::new(Cluster::new(c, &config.regions, config.carbon.baseline)))
            .collect();
        Self {
            route_names: config
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            routes: RouteTable::new(config.routes.clone()),
            clusters,
            carbon,
            metrics,
            access_log: config.access_log,
            access_log_query: config.access_log_query,
            region_names: config
                .regions
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            region_header: config.carbon.region_header.clone(),
            energy: config.carbon.energy,
            probe: ProbeSettings {
                interval: config.carbon.probe_interval,
                timeout: config.carbon.probe_timeout,
            },
        }
    }

    /// The carbon feeds whose table the forward path reads.
    pub fn carbon_feeds(&self) -> &Arc<CarbonFeeds> {
        &self.carbon
    }

    /// The name of every configured region, indexed like [`Config::regions`].
    pub fn region_names(&self) -> &[Arc<str>] {
        &self.region_names
    }

    /// The upstream clusters, in configuration order.
    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    /// Starts the active health checks of every cluster that has them, and the latency probes
    /// of every carbon-aware cluster. They stop by themselves once this proxy (and so its
    /// clusters) is dropped.
    pub fn start_health_checks(&self) {
        for cluster in &self.clusters {
            crate::upstream::checker::spawn(cluster, &self.metrics);
            crate::upstream::latency::spawn(
                cluster,
                self.probe.interval,
                self.probe.timeout,
                &self.metrics,
            );
        }
    }

    /// Probes the latency of every region of every carbon-aware cluster once, now (at start
    /// and reload, so the first request already has estimates, and from tests).
    pub async fn probe_latency(&self) {
        let rounds = self.clusters.iter().map(|cluster| {
            crate::upstream::latency::probe_round(cluster, self.probe.timeout, &self.metrics)
        });
        futures_util::future::join_all(rounds).await;
    }

    /// The metrics this proxy records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The name of route `index` (shared with metric labels).
    pub fn route_name(&self, index: usize) -> Arc<str> {
        self.route_names[index].clone()
    }

    /// Whether requests are written to the access log.
    pub fn access_log(&self) -> bool {
        self.access_log
    }

    /// What the access log keeps of query strings.
    pub fn access_log_query(&self) -> crate::config::QueryLog {
        self.access_log_query
    }

    /// The response header that names the region served from, if configured.
    pub fn region_header(&self) -> Option<&HeaderName> {
        self.region_header.as_ref()
    }

    /// How request energy is estimated for carbon accounting.
    pub fn energy(&self) -> EnergyModel {
        self.energy
    }
}

/// What the forward path needs to know about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// The client's IP address as a header value ([`super::headers::address_value`]).
    pub peer_value: HeaderValue,
    /// Whether the client connection is TLS.
    pub secure: bool,
    /// Key-exchange group of the client connection.
    pub tls_group: Option<&'static str>,
    /// The listener's rules, shared by all its connections (one pointer in each
    /// connection's task, which an idle connection keeps for its whole life).
    pub rules: Arc<RequestRules>,
    /// Requests of this connection admitted to clusters and not finished, on protocols that
    /// multiplex (HTTP/2, HTTP/3): one connection may hold only a share of a cluster.
    pub admitted: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// What a listener applies to every request, shared by its connections.
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Largest request body the listener accepts.
    pub max_request_body_bytes: Option<u64>,
    /// `alt-svc` advertisement added to responses (HTTP/3 on the same port).
    pub alt_svc: Option<HeaderValue>,
    /// How the listener normalises request paths.
    pub paths: PathRules,
    /// Proxies in front whose forwarding headers are kept.
    pub trusted_proxy_hops: u8,
    /// A response body that makes no progress for this long is cut off.
    pub stream_idle_timeout: std::time::Duration,
}

impl RequestRules {
    /// The rules of `config`, advertising `alt_svc` on responses.
    pub fn new(config: &crate::config::ListenerConfig, alt_svc: Option<HeaderValue>) -> Self {
        Self {
            max_request_body_bytes: config.max_request_body_bytes,
            alt_svc,
            paths: config.paths,
            trusted_proxy_hops: config.trusted_proxy_hops,
            stream_idle_timeout: config.stream_idle_timeout,
        }
    }
}
