//! Upstream clusters: endpoints, their pooled HTTP clients, and load balancing.
//!
//! Each endpoint owns a pool of idle HTTP/1.1 connections, used from the request's own task
//! (`h1`), and a hyper-util client (its own keep-alive pool) for HTTP/2 upstreams; both dial
//! only that endpoint. Choosing an endpoint is a pure function of the cluster's counters and an RNG, so a
//! routing policy (carbon, health) can narrow the candidates before the balancer picks.

pub mod checker;
pub mod gauges;
pub mod h1;
pub mod health;
pub mod latency;
pub mod pool;
mod regions;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use rustls::pki_types::ServerName;

use crate::config::{
    Baseline, ClusterConfig, EndpointAddr, HealthCheckConfig, LbPolicy, OutlierConfig,
    RegionConfig, RetryConfig, UpstreamProtocol,
};
use crate::dial::{Connector, EndpointTls, UpstreamBody};
use crate::limit::Slot;
pub use regions::{Choice, ClusterCarbon};

/// One endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    /// Address as configured.
    pub addr: EndpointAddr,
    /// Label for metrics and logs (`host:port`).
    pub label: String,
    /// Region name, when the cluster groups endpoints by region.
    pub region: Option<Arc<str>>,
    /// Pooled client that always connects to this endpoint.
    pub client: Client<Connector, UpstreamBody>,
    /// Opens connections to this endpoint (the HTTP/1.1 fast path dials with it directly).
    pub connector: Connector,
    /// Idle HTTP/1.1 connections, used from the request's own task (`http::h1`,
    /// `upstream::h1`).
    pub idle: pool::IdlePool,
    /// Active check state and passive outlier ejection.
    pub health: health::EndpointHealth,
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
    /// Cluster name (shared with metric labels).
    pub name: Arc<str>,
    /// Deadline for the response head.
    pub request_timeout: Duration,
    /// HTTP version spoken to endpoints.
    pub protocol: UpstreamProtocol,
    /// Endpoints, never empty.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Regions and carbon policy, when the cluster's endpoints are grouped by region.
    pub carbon: Option<ClusterCarbon>,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Retry policy and budget.
    pub retry: RetryConfig,
    max_pending: usize,
    max_per_connection: usize,
    pending: Arc<AtomicUsize>,
    retries_active: Arc<AtomicUsize>,
    lb: LbPolicy,
    next: AtomicUsize,
}

/// A request's places in its cluster's pending count and its client connection's, held until
/// the response ends.
#[derive(Debug)]
pub struct Admission {
    _cluster: Slot,
    _connection: Option<Slot>,
}

impl Cluster {
    /// Builds the cluster and one pooled client per endpoint; `regions` names the regions that
    /// `config.endpoint_regions` points into.
    pub fn new(config: &ClusterConfig, regions: &[RegionConfig], baseline: Baseline) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .zip(&config.endpoint_regions)
            .map(|(addr, region)| {
                let region = region
                    .and_then(|r| regions.get(r))
                    .map(|r| Arc::from(r.name.as_str()));
                Arc::new(endpoint(config, addr.clone(), region))
            })
            .collect();
        Self {
            name: Arc::from(config.name.as_str()),
            request_timeout: config.request_timeout,
            protocol: config.protocol,
            endpoints,
            carbon: ClusterCarbon::new(config, regions, baseline),
            health_check: config.health_check.clone(),
            outlier: config.outlier.clone(),
            retry: config.retry.clone(),
            max_pending: config.max_pending_requests,
            max_per_connection: config.max_pending_per_connection,
            pending: Arc::new(AtomicUsize::new(0)),
            retries_active: Arc::new(AtomicUsize::new(0)),
            lb: config.lb,
            next: AtomicUsize::new(0),
        }
    }

    /// Admits one request unless `max_pending_requests` are already in flight, or its client
    /// connection (whose count of admitted requests is `connection`, for multiplexed
    /// protocols) already holds `max_pending_per_connection`: one client cannot take a
    /// cluster's every slot.
    pub fn try_admit(&self, connection: Option<&Arc<AtomicUsize>>) -> Option<Admission> {
        let connection = match connection {
            Some(count) => Some(Slot::try_take(count, self.max_per_connection)?),
            None => None,
        };
        let cluster = Slot::try_take(&self.pending, self.max_pending)?;
        Some(Admission {
            _cluster: cluster,
            _connection: connection,
        })
    }

    /// Requests admitted and not yet finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// A permit for one retry, unless retries in flight already use the budget: the larger of
    /// `min_concurrent` and `budget_ratio` × pending requests.
    pub fn try_retry(&self) -> Option<Slot> {
        let by_ratio = (self.retry.budget_ratio * self.pending() as f64) as usize;
        Slot::try_take(
            &self.retries_active,
            by_ratio.max(self.retry.min_concurrent),
        )
    }

    /// Records the outcome of a request to endpoint `index`; on the failure that ejects it,
    /// returns the ejection time. Ejection respects the cluster's cap on ejected endpoints.
    pub fn record_outcome(&self, index: usize, failed: bool) -> Option<Duration> {
        let health = &self.endpoints[index].health;
        if !failed {
            health.record_success();
            return None;
        }
        if !health.record_failure(&self.outlier) {
            return None;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.is_ejected())
            .count();
        let cap = health::max_ejectable(self.endpoints.len(), self.outlier.max_ejected_percent);
        (ejected < cap).then(|| health.eject(&self.outlier))
    }

    /// Picks an endpoint by the cluster's policy; `rng` feeds power-of-two choices.
    pub fn pick(&self, rng: &mut impl Rng) -> &Arc<Endpoint> {
        // `exclude` is empty, so some endpoint is always left.
        &self.endpoints[self.pick_index(None, &[], rng).unwrap_or(0)]
    }

    /// Index of the endpoint the cluster's policy picks among `among` (indices into
    /// [`Cluster::endpoints`]) or all endpoints, never one in `exclude` (already tried).
    /// Unavailable endpoints (failing checks, ejected) are skipped unless every candidate is
    /// unavailable. `None` only when `exclude` covers every candidate. Allocation-free while
    /// every candidate is available and nothing is excluded.
    pub fn pick_index(
        &self,
        among: Option<&[usize]>,
        exclude: &[usize],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        let available = |i: usize| self.endpoints[i].health.is_available();
        let fast = exclude.is_empty()
            && match among {
                None => (0..self.endpoints.len()).all(available),
                Some(list) => list.iter().copied().all(available),
            };
        if fast {
            return Some(self.balance(among, rng));
        }
        let candidates: Vec<usize> = match among {
            None => (0..self.endpoints.len()).collect(),
            Some(list) => list.to_vec(),
        };
        let untried: Vec<usize> = candidates
            .into_iter()
            .filter(|i| !exclude.contains(i))
            .collect();
        let available: Vec<usize> = untried
            .iter()
            .copied()
            .filter(|&i| self.endpoints[i].health.is_available())
            .collect();
        match (available.is_empty(), untried.is_empty()) {
            (false, _) => Some(self.balance(Some(&available), rng)),
            (true, false) => Some(self.balance(Some(&untried), rng)),
            (true, true) => None,
        }
    }

    /// The load balancer proper, over a non-empty candidate list (or all endpoints).
    fn balance(&self, among: Option<&[usize]>, rng: &mut impl Rng) -> usize {
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

fn endpoint(config: &ClusterConfig, addr: EndpointAddr, region: Option<Arc<str>>) -> Endpoint {
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
        region,
        client: builder.build(connector.clone()),
        connector,
        idle: pool::IdlePool::new(config.idle_timeout),
        health: health::EndpointHealth::new(),
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
            health_check: None,
            outlier: OutlierConfig::default(),
            retry: RetryConfig::default(),
            max_pending_requests: 2,
            max_pending_per_connection: 1,
        };
        Cluster::new(&config, &[], Baseline::Nearest)
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

    #[tokio::test(start_paused = true)]
    async fn picks_skip_tried_and_ejected_endpoints() {
        let c = cluster(LbPolicy::RoundRobin, 3);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..6 {
            assert_ne!(c.pick_index(None, &[1], &mut rng), Some(1));
        }
        assert_eq!(c.pick_index(Some(&[1]), &[1], &mut rng), None);
        c.endpoints[0].health.eject(&c.outlier);
        for _ in 0..6 {
            assert_eq!(c.pick_index(None, &[1], &mut rng), Some(2));
        }
        // Every untried candidate is ejected: still answer rather than fail.
        assert_eq!(c.pick_index(Some(&[0, 1]), &[1], &mut rng), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_stops_at_the_cap() {
        let c = cluster(LbPolicy::RoundRobin, 2);
        let failures = c.outlier.consecutive_failures as usize;
        let ejected = (0..failures)
            .filter_map(|_| c.record_outcome(0, true))
            .count();
        assert_eq!(ejected, 1);
        let more = (0..failures * 3)
            .filter_map(|_| c.record_outcome(1, true))
            .count();
        assert_eq!(more, 0, "the last available endpoint is never ejected");
        assert!(c.endpoints[1].health.is_available());
    }

    #[tokio::test]
    async fn pending_requests_and_retries_are_bounded() {
        let c = cluster(LbPolicy::RoundRobin, 1);
        let a = c.try_admit(None).unwrap();
        let _b = c.try_admit(None).unwrap();
        assert!(c.try_admit(None).is_none(), "max_pending_requests is 2");
        drop(a);
        assert!(c.try_admit(None).is_some());
        // 20 % of 2 pending rounds down to 0: the minimum of 3 concurrent retries applies.
        let permits: Vec<_> = (0..5).filter_map(|_| c.try_retry()).collect();
        assert_eq!(permits.len(), 3);
    }

    #[tokio::test]
    async fn one_connection_holds_at_most_its_share() {
        let c = cluster(LbPolicy::RoundRobin, 1);
        let (one, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let first = c.try_admit(Some(&one)).unwrap();
        assert!(
            c.try_admit(Some(&one)).is_none(),
            "max_pending_per_connection is 1"
        );
        assert_eq!(c.pending(), 1, "a refused request holds no cluster slot");
        let _second = c.try_admit(Some(&other)).unwrap();
        drop(first);
        assert_eq!(one.load(Ordering::Relaxed), 0);
        assert!(c.try_admit(Some(&one)).is_some());
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
