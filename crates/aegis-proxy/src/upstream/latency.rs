//! Latency probes: every region of a carbon-aware cluster is measured at an interval, whether
//! or not traffic goes there, so that the latency budget compares network distances instead
//! of whatever the last requests happened to cost.
//!
//! A probe is a `HEAD` on the cluster's health-check path (or `/`) to each endpoint of the
//! region, over the endpoint's own pooled client, timed to the response head; the region's
//! sample is the fastest endpoint that answered. Failures (no answer in time, a refused
//! connection, a 5xx) are not samples: a region that fails fast must not look near. The
//! samples feed [`aegis_carbon::latency::LatencyWindow`]; the configured `rtt_ms` stands in
//! until the first one.
//!
//! Probers hold a weak reference to their cluster, as health checkers do, and stop once a
//! reload has replaced it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::Method;
use tokio::time::MissedTickBehavior;

use super::checker::exchange;
use super::Cluster;
use crate::metrics::{Metrics, RegionClusterLabels};

/// Starts the periodic prober of a carbon-aware cluster; its first round is at `interval`
/// (the caller runs one at once with [`probe_round`]).
pub fn spawn(
    cluster: &Arc<Cluster>,
    interval: Duration,
    timeout: Duration,
    metrics: &Arc<Metrics>,
) {
    if cluster.carbon.is_none() {
        return;
    }
    tokio::spawn(run(
        Arc::downgrade(cluster),
        interval,
        timeout,
        metrics.clone(),
    ));
}

async fn run(cluster: Weak<Cluster>, interval: Duration, timeout: Duration, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        probe_round(&cluster, timeout, &metrics).await;
    }
}

/// Probes every region of `cluster` once, concurrently, and records the samples.
pub async fn probe_round(cluster: &Cluster, timeout: Duration, metrics: &Metrics) {
    let Some(carbon) = &cluster.carbon else {
        return;
    };
    let path = cluster
        .health_check
        .as_ref()
        .map_or("/", |check| check.path.as_str());
    let host = cluster
        .health_check
        .as_ref()
        .and_then(|check| check.host.as_deref());
    let probes = (0..cluster.endpoints.len()).map(|index| async move {
        let started = Instant::now();
        let answer =
            tokio::time::timeout(timeout, exchange(cluster, index, Method::HEAD, path, host)).await;
        let elapsed = started.elapsed();
        match answer {
            Ok(Ok(status)) if !status.is_server_error() => Some((index, elapsed)),
            _ => None,
        }
    });
    let answers = futures_util::future::join_all(probes).await;
    let mut fastest: Vec<Option<Duration>> = vec![None; carbon.regions.len()];
    for (index, elapsed) in answers.into_iter().flatten() {
        let slot = &mut fastest[carbon.region_of(index)];
        *slot = Some(slot.map_or(elapsed, |d| d.min(elapsed)));
    }
    for (local, sample) in fastest.into_iter().enumerate() {
        if let Some(sample) = sample {
            carbon.observe_probe(local, sample.as_secs_f64() * 1000.0);
        }
        if let Some(ms) = carbon.latency_ms(local) {
            let endpoint = carbon.endpoints[local]
                .first()
                .map(|&e| &cluster.endpoints[e]);
            if let Some(region) = endpoint.and_then(|e| e.region.clone()) {
                metrics
                    .carbon_region_latency
                    .get_or_create(&RegionClusterLabels {
                        cluster: cluster.name.clone(),
                        region,
                    })
                    .set(ms / 1000.0);
            }
        }
    }
}
