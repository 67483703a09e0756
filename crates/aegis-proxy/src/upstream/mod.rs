//! Upstream clusters: endpoints, their pooled HTTP clients, and load balancing.
//!
//! Each endpoint owns a hyper-util client (a keep-alive pool) whose connector always dials that
//! endpoint. Choosing an endpoint is a pure function of the cluster's counters and an RNG, so a
//! routing policy (carbon, health) can narrow the candidates before the balancer picks.

pub mod connector;
pub mod health;
mod regions;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use rustls::pki_types::ServerName;

use crate::config::{ClusterConfig, EndpointAddr, LbPolicy, UpstreamProtocol};
use crate::BoxError;
pub use connector::{ConnectError, Connector, EndpointTls, UpstreamTlsGroup};
pub use regions::ClusterCarbon;

/// The body type sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// One endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    /// Address as configured.
    pub addr: EndpointAddr,
    /// Label for metrics and logs (`host:port`).
    pub label: String,
    /// Pooled client that always connects to this endpoint.
    pub client: Client<Connector, UpstreamBody>,
    /// Passive health (consecutive connect failures).
    pub health: health::PassiveHealth,
    active: AtomicUsize,
}

impl Endpoint {
    /// Requests in flight to this endpoint.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// Marks one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// Counts a request against `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        Self { endpoint }
    }

    /// The endpoint this request went to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named set of endpoints behind one load-balancing policy.
#[derive(Debug)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// Deadline for the response head.
    pub request_timeout: Duration,
    /// HTTP version spoken to endpoints.
    pub protocol: UpstreamProtocol,
    /// Endpoints, never empty.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Regions and carbon policy, when the cluster's endpoints are grouped by region.
    pub carbon: Option<ClusterCarbon>,
    lb: LbPolicy,
    next: AtomicUsize,
}

impl Cluster {
    /// Builds the cluster and one pooled client per endpoint.
    pub fn new(config: &ClusterConfig) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|addr| Arc::new(endpoint(config, addr.clone())))
            .collect();
        Self {
            name: config.name.clone(),
            request_timeout: config.request_timeout,
            protocol: config.protocol,
            endpoints,
            carbon: ClusterCarbon::new(config),
            lb: config.lb,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks an endpoint by the cluster's policy; `rng` feeds power-of-two choices.
    pub fn pick(&self, rng: &mut impl Rng) -> &Arc<Endpoint> {
        &self.endpoints[self.pick_index(None, rng)]
    }

    /// Index of the endpoint the cluster's policy picks, among `among` (indices into
    /// [`Cluster::endpoints`], never empty) or among all endpoints.
    /// Ejected endpoints are skipped unless every candidate is ejected. Allocation-free while
    /// no candidate is ejected.
    pub fn pick_index(&self, among: Option<&[usize]>, rng: &mut impl Rng) -> usize {
        let available = |i: &usize| self.endpoints[*i].health.is_available();
        let all: Vec<usize>;
        let filtered: Vec<usize>;
        let among: Option<&[usize]> = match among {
            None if self.endpoints.iter().all(|e| e.health.is_available()) => None,
            None => {
                all = (0..self.endpoints.len()).collect();
                filtered = all.iter().copied().filter(available).collect();
                Some(if filtered.is_empty() { &all } else { &filtered })
            }
            Some(list) if list.iter().all(available) => Some(list),
            Some(list) => {
                filtered = list.iter().copied().filter(available).collect();
                Some(if filtered.is_empty() { list } else { &filtered })
            }
        };
        let n = among.map_or(self.endpoints.len(), <[usize]>::len);
        let at = |k: usize| among.map_or(k, |a| a[k]);
        let k = match self.lb {
            _ if n <= 1 => 0,
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::LeastRequest => {
                let a = rng.random_range(0..n);
                // Second draw from the other n-1 endpoints so the two choices differ.
                let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                if self.endpoints[at(b)].active() < self.endpoints[at(a)].active() {
                    b
                } else {
                    a
                }
            }
        };
        at(k)
    }
}

fn endpoint(config: &ClusterConfig, addr: EndpointAddr) -> Endpoint {
    let tls = config.tls.as_ref().map(|t| EndpointTls {
        config: t.client_config.clone(),
        server_name: server_name(t.server_name.as_deref().unwrap_or(&addr.host)),
    });
    let connector = Connector::new(addr.clone(), config.connect_timeout, tls);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .http2_only(config.protocol == UpstreamProtocol::Http2);
    Endpoint {
        label: addr.to_string(),
        addr,
        client: builder.build(connector),
        health: health::PassiveHealth::new(),
        active: AtomicUsize::new(0),
    }
}

fn server_name(name: &str) -> ServerName<'static> {
    // Validation checked configured names; an endpoint host is a DNS name or an IP address.
    ServerName::try_from(name.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("static name is valid"))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn cluster(lb: LbPolicy, n: u16) -> Cluster {
        let config = ClusterConfig {
            name: "c".into(),
            lb,
            protocol: UpstreamProtocol::Http1,
            endpoints: (0..n)
                .map(|i| EndpointAddr {
                    host: "127.0.0.1".into(),
                    port: 9000 + i,
                })
                .collect(),
            endpoint_regions: vec![None; usize::from(n)],
            carbon: aegis_carbon::PolicyConfig::default(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            tls: None,
        };
        Cluster::new(&config)
    }

    #[tokio::test]
    async fn round_robin_visits_each_endpoint_in_turn() {
        let c = cluster(LbPolicy::RoundRobin, 3);
        let mut rng = StdRng::seed_from_u64(1);
        let ports: Vec<u16> = (0..6).map(|_| c.pick(&mut rng).addr.port).collect();
        assert_eq!(ports, [9000, 9001, 9002, 9000, 9001, 9002]);
    }

    #[tokio::test]
    async fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(LbPolicy::LeastRequest, 2);
        let _busy: Vec<_> = (0..5)
            .map(|_| InFlight::new(c.endpoints[0].clone()))
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(c.pick(&mut rng).addr.port, 9001);
        }
    }

    #[tokio::test]
    async fn least_request_spreads_idle_load() {
        let c = cluster(LbPolicy::LeastRequest, 4);
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[usize::from(c.pick(&mut rng).addr.port - 9000)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[tokio::test]
    async fn in_flight_counts_until_dropped() {
        let c = cluster(LbPolicy::LeastRequest, 1);
        let guard = InFlight::new(c.endpoints[0].clone());
        assert_eq!(c.endpoints[0].active(), 1);
        drop(guard);
        assert_eq!(c.endpoints[0].active(), 0);
    }
}
