//! The phases every request goes through after its transport has parsed and rewritten it, the
//! same for every protocol: admit it to its cluster, choose region and endpoint, send it with
//! retries, record each attempt's outcome. This module holds the only retry loop.
//!
//! A transport decides nothing: the HTTP/1.1 fast path (`h1`) and `forward` (hyper's HTTP/1.1
//! and HTTP/2 servers, and HTTP/3) each hand [`send`] an [`Upstream`], which carries one
//! attempt to one endpoint and says whether the request can be sent again.
//!
//! ```text
//! admit ─▶ choose endpoint ─▶ Upstream::send ─▶ response head ─▶ outcome + latency
//!  │ 503      (carbon region,        │
//!  shed        health, balancing)     └─ failed: outcome; retry on another endpoint when the
//!                  ▲                    request provably did not reach the application and
//!                  └──────────────────  the policy, the budget and the body allow; else 502/504
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::Rng;

use super::error::{ProxyError, RetrySafety};
use super::proxy::Proxy;
use super::record::{CarbonRecord, RequestRecord};
use super::replay;
use crate::metrics::{ClusterLabels, EndpointLabels, RetryLabels, UpstreamErrorLabels};
use crate::upstream::{Admission, Choice, Cluster, Endpoint, InFlight};

/// How one attempt reaches an endpoint: pooled raw HTTP/1.1 on the client's task (the fast
/// path), or an `http::Request` through `upstream::h1` or hyper's client.
pub(super) trait Upstream {
    /// A response head and whatever carries the rest of the response.
    type Sent;

    /// The status of the response head in `sent`.
    fn status(sent: &Self::Sent) -> StatusCode;

    /// Sends the request to `endpoint` and waits at most `timeout` for the response head.
    /// `record` already names the region chosen.
    fn send(
        &mut self,
        endpoint: &Arc<Endpoint>,
        timeout: Duration,
        record: &RequestRecord,
    ) -> impl Future<Output = Result<Self::Sent, ProxyError>> + Send;

    /// Whether another attempt can send the whole request again (no part of its body was
    /// consumed by the failed one).
    fn can_resend(&mut self) -> bool;
}

/// Admits the request to `cluster`, within the share of it the client's connection may hold
/// (`connection`, on protocols that multiplex), or sheds it (503).
pub(super) fn admit(
    proxy: &Proxy,
    cluster: &Cluster,
    connection: Option<&Arc<std::sync::atomic::AtomicUsize>>,
) -> Result<Admission, ProxyError> {
    cluster.try_admit(connection).ok_or_else(|| {
        let labels = ClusterLabels {
            cluster: cluster.name.clone(),
        };
        proxy.metrics().shed.get_or_create(&labels).inc();
        ProxyError::Overloaded
    })
}

/// Sends the request through `upstream` with up to `retry.attempts` retries, each on an
/// endpoint not tried yet, within the cluster's retry budget. A retry happens only when the
/// request provably did not reach the upstream application: the connection failed, or an
/// idempotent request was reset before any response byte and its body was never read.
pub(super) async fn send<U: Upstream>(
    proxy: &Proxy,
    cluster: &Cluster,
    record: &mut RequestRecord,
    method: &http::Method,
    upstream: &mut U,
) -> Result<U::Sent, ProxyError> {
    let idempotent = replay::is_idempotent(method);
    let mut tried = [usize::MAX; MAX_ATTEMPTS];
    let mut attempts = 0;
    let mut _retry_permit = None;
    let error = loop {
        let Some(index) = choose_endpoint(proxy, cluster, record, &tried[..attempts]) else {
            break ProxyError::NoEndpoint;
        };
        tried[attempts] = index;
        attempts += 1;
        let error = match attempt(proxy, cluster, index, record, upstream).await {
            Ok(sent) => return Ok(sent),
            Err(error) => error,
        };
        let retry = retry_reason(&error, idempotent)
            .filter(|_| may_retry(cluster, attempts) && upstream.can_resend());
        let Some(reason) = retry else {
            break error;
        };
        let Some(permit) = retry_permit(proxy, cluster) else {
            break error;
        };
        _retry_permit = Some(permit);
        note_retry(proxy, cluster, reason);
    };
    note_upstream_error(proxy, cluster, &error);
    Err(error)
}

/// One attempt on endpoint `index`, and its outcome: for outlier ejection (a 5xx or an
/// upstream failure counts; the client's own failures never do) and for latency.
async fn attempt<U: Upstream>(
    proxy: &Proxy,
    cluster: &Cluster,
    index: usize,
    record: &mut RequestRecord,
    upstream: &mut U,
) -> Result<U::Sent, ProxyError> {
    let endpoint = &cluster.endpoints[index];
    let in_flight = InFlight::new(endpoint.clone());
    let started = Instant::now();
    let sent = upstream
        .send(endpoint, cluster.request_timeout, record)
        .await;
    let elapsed = started.elapsed();
    // Until the response is complete, the endpoint counts it in flight.
    record.in_flight = Some(in_flight);
    let failed = match &sent {
        Ok(sent) => U::status(sent).is_server_error(),
        Err(error) => error.counts_against_endpoint(),
    };
    note_outcome(proxy, cluster, index, failed);
    if sent.is_ok() {
        note_latency(proxy, cluster, record, elapsed);
    }
    sent
}

/// Every reason [`retry_reason`] gives.
pub const RETRY_REASONS: &[&str] = &["connect", "reset"];

/// Why a failed attempt may be retried (`connect`, `reset`), if it may: the connection failed,
/// or an idempotent request was reset before any response byte.
fn retry_reason(error: &ProxyError, idempotent: bool) -> Option<&'static str> {
    match error.retry_safety() {
        RetrySafety::Unsent => Some("connect"),
        RetrySafety::IfIdempotent if idempotent => Some("reset"),
        _ => None,
    }
}

/// Whether the retry policy allows another attempt after `attempts`, with an endpoint left.
fn may_retry(cluster: &Cluster, attempts: usize) -> bool {
    attempts <= cluster.retry.attempts as usize
        && attempts < MAX_ATTEMPTS
        && attempts < cluster.endpoints.len()
}

/// A place in the cluster's retry budget; when it is spent, counts the refusal.
fn retry_permit(proxy: &Proxy, cluster: &Cluster) -> Option<crate::limit::Slot> {
    let permit = cluster.try_retry();
    if permit.is_none() {
        let labels = ClusterLabels {
            cluster: cluster.name.clone(),
        };
        proxy
            .metrics()
            .retries_over_budget
            .get_or_create(&labels)
            .inc();
    }
    permit
}

/// Counts a retry.
fn note_retry(proxy: &Proxy, cluster: &Cluster, reason: &'static str) {
    debug_assert!(RETRY_REASONS.contains(&reason));
    let labels = RetryLabels {
        cluster: cluster.name.clone(),
        reason,
    };
    proxy.metrics().retries.get_or_create(&labels).inc();
    tracing::debug!(cluster = %cluster.name, reason, "retrying on another endpoint");
}

/// Tries, per request, the first endpoint and at most this many minus one more.
const MAX_ATTEMPTS: usize = 6;

/// Counts a failure on the upstream side of a request (an endpoint's or the proxy's, never the
/// client's).
pub(super) fn note_upstream_error(proxy: &Proxy, cluster: &Cluster, error: &ProxyError) {
    if error.is_upstream() {
        debug_assert!(ProxyError::UPSTREAM_REASONS.contains(&error.reason()));
        let labels = UpstreamErrorLabels {
            cluster: cluster.name.clone(),
            reason: error.reason(),
        };
        proxy.metrics().upstream_errors.get_or_create(&labels).inc();
    }
}

/// Logs a request the proxy answers itself and notes why in its record.
pub(super) fn note_failure(record: &mut RequestRecord, error: &ProxyError) {
    if error.is_upstream() {
        tracing::warn!(cluster = record.cluster.as_deref(), %error, "upstream failure");
    } else {
        tracing::debug!(%error, "request rejected");
    }
    record.error = Some(error.reason());
}

/// Feeds one attempt's outcome to outlier ejection. (Region latency comes from probes, not
/// from traffic: a response's time includes the application's, and a failure's says nothing.)
fn note_outcome(proxy: &Proxy, cluster: &Cluster, index: usize, failed: bool) {
    if let Some(time) = cluster.record_outcome(index, failed) {
        let endpoint = &cluster.endpoints[index];
        let labels = EndpointLabels {
            cluster: cluster.name.clone(),
            endpoint: endpoint.label.clone(),
        };
        proxy.metrics().ejections.get_or_create(&labels).inc();
        tracing::warn!(cluster = %cluster.name, endpoint = %endpoint.label, ejected_for = ?time, "endpoint ejected after consecutive failures");
    }
}

/// Records how long the upstream took to send the response head.
fn note_latency(proxy: &Proxy, cluster: &Cluster, record: &mut RequestRecord, elapsed: Duration) {
    proxy
        .metrics()
        .upstream_duration
        .get_or_create(&ClusterLabels {
            cluster: cluster.name.clone(),
        })
        .observe(elapsed.as_secs_f64());
    record.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
}

/// Picks the endpoint, never one in `tried`: within the region the carbon policy chooses (or,
/// for a retry with nothing left there, anywhere in the cluster), by the cluster's load
/// balancing.
fn choose_endpoint(
    proxy: &Proxy,
    cluster: &Cluster,
    record: &mut RequestRecord,
    tried: &[usize],
) -> Option<usize> {
    let mut rng = rand::rng();
    let Some(carbon) = &cluster.carbon else {
        let index = cluster.pick_index(None, tried, &mut rng)?;
        note_attempt(cluster, record, index, tried.len());
        return Some(index);
    };
    let table = proxy.carbon_feeds().current();
    let Choice {
        decision,
        baseline_intensity,
    } = carbon.decide(&table, &cluster.endpoints, rng.random());
    let among = decision
        .region
        .map(|local| carbon.endpoints[local].as_slice());
    let index = cluster
        .pick_index(among, tried, &mut rng)
        .or_else(|| cluster.pick_index(None, tried, &mut rng))?;
    let local = carbon.region_of(index);
    carbon.record_choice(local);
    let region_names = proxy.region_names();
    if let Some(previous) = carbon.note_leader(local, decision.reason) {
        let name = |local: usize| &*region_names[carbon.regions[local]];
        tracing::info!(
            cluster = %cluster.name,
            from = previous.map(name),
            to = name(local),
            reason = decision.reason.as_str(),
            intensity = decision.intensity,
            "carbon routing moved to another region"
        );
    }
    let global = carbon.regions[local];
    record.carbon = Some(CarbonRecord {
        region: region_names[global].clone(),
        intensity: table.regions.get(global).map_or(0.0, |v| v.intensity),
        baseline_intensity,
        policy: policy_name(carbon.policy.policy),
        reason: decision.reason.as_str(),
        energy: proxy.energy(),
    });
    note_attempt(cluster, record, index, tried.len());
    Some(index)
}

/// `RUST_LOG=debug`: the route, the carbon decision and the endpoint of each attempt, on every
/// protocol (the one place every path chooses an endpoint).
fn note_attempt(cluster: &Cluster, record: &RequestRecord, index: usize, tried: usize) {
    let carbon = record.carbon.as_ref();
    tracing::debug!(
        route = record.route.as_deref(),
        cluster = %cluster.name,
        endpoint = %cluster.endpoints[index].label,
        attempt = tried + 1,
        region = carbon.map(|c| &*c.region),
        reason = carbon.map(|c| c.reason),
        protocol = record.protocol,
        "upstream attempt"
    );
}

fn policy_name(policy: aegis_carbon::Policy) -> &'static str {
    match policy {
        aegis_carbon::Policy::Greenest => "greenest",
        aegis_carbon::Policy::Weighted => "weighted",
        aegis_carbon::Policy::Nearest => "nearest",
        _ => "off",
    }
}
