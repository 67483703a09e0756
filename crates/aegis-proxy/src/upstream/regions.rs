//! A cluster's regions: which endpoints run where, recent traffic shares and latency, and the
//! carbon decision over them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aegis_carbon::{decide, Decision, PolicyConfig, RegionState, RequestFacts, Snapshot};

use crate::carbon_feed::IntensityTable;
use crate::config::ClusterConfig;

/// Requests over which traffic shares are smoothed (for `max_share`).
const SHARE_WINDOW: f64 = 100.0;
/// Weight of a new latency sample in the per-region EWMA.
const LATENCY_WEIGHT: f64 = 0.2;
const NO_REGION: usize = usize::MAX;

/// The regions of one cluster and its carbon policy.
#[derive(Debug)]
pub struct ClusterCarbon {
    /// Policy settings.
    pub policy: PolicyConfig,
    /// Index into [`crate::Config::regions`] of each local region.
    pub regions: Vec<usize>,
    /// Endpoint indices of each local region.
    pub endpoints: Vec<Vec<usize>>,
    /// Local region of each endpoint.
    endpoint_region: Vec<usize>,
    /// Recent traffic share per local region (f64 bits).
    shares: Vec<AtomicU64>,
    /// Latency EWMA per local region in ms (f64 bits; NaN until measured).
    latency: Vec<AtomicU64>,
    /// Local region chosen last, for hysteresis.
    current: AtomicUsize,
}

impl ClusterCarbon {
    /// Groups the cluster's endpoints by region; `None` when it has no regions.
    pub fn new(config: &ClusterConfig) -> Option<Self> {
        let mut regions: Vec<usize> = Vec::new();
        let mut endpoints: Vec<Vec<usize>> = Vec::new();
        let mut endpoint_region = Vec::with_capacity(config.endpoints.len());
        for (e, region) in config.endpoint_regions.iter().enumerate() {
            let region = (*region)?;
            let local = match regions.iter().position(|&r| r == region) {
                Some(local) => local,
                None => {
                    regions.push(region);
                    endpoints.push(Vec::new());
                    regions.len() - 1
                }
            };
            endpoints[local].push(e);
            endpoint_region.push(local);
        }
        let n = regions.len();
        Some(Self {
            policy: config.carbon.clone(),
            shares: (0..n)
                .map(|_| AtomicU64::new((1.0 / n as f64).to_bits()))
                .collect(),
            latency: (0..n).map(|_| AtomicU64::new(f64::NAN.to_bits())).collect(),
            current: AtomicUsize::new(NO_REGION),
            regions,
            endpoints,
            endpoint_region,
        })
    }

    /// Decides with the current intensities; `random` is uniform in [0, 1).
    pub fn decide(
        &self,
        table: &IntensityTable,
        endpoints: &[std::sync::Arc<super::Endpoint>],
        random: f64,
    ) -> Decision {
        let regions = self
            .regions
            .iter()
            .enumerate()
            .map(|(local, &global)| {
                let value = table.regions.get(global);
                let latency = f64::from_bits(self.latency[local].load(Ordering::Relaxed));
                RegionState {
                    intensity: value.map_or(f64::INFINITY, |v| v.intensity),
                    freshness: value.map_or(aegis_carbon::Freshness::Missing, |v| v.freshness),
                    // A region is healthy while any of its endpoints passes checks and is not ejected.
                    healthy: self.endpoints[local]
                        .iter()
                        .any(|&e| endpoints[e].health.is_available()),
                    latency_ms: (!latency.is_nan()).then_some(latency),
                }
            })
            .collect();
        let shares: Vec<f64> = self
            .shares
            .iter()
            .map(|s| f64::from_bits(s.load(Ordering::Relaxed)))
            .collect();
        let current = self.current.load(Ordering::Relaxed);
        let facts = RequestFacts {
            shares: &shares,
            current: (current != NO_REGION).then_some(current),
            random,
        };
        decide(&Snapshot { regions }, &facts, &self.policy)
    }

    /// The local region of endpoint `endpoint`.
    pub fn region_of(&self, endpoint: usize) -> usize {
        self.endpoint_region.get(endpoint).copied().unwrap_or(0)
    }

    /// Notes that `local` served a request (shares and hysteresis).
    pub fn record_choice(&self, local: usize) {
        let alpha = 1.0 / SHARE_WINDOW;
        for (i, share) in self.shares.iter().enumerate() {
            let hit = if i == local { 1.0 } else { 0.0 };
            // Racy read-modify-write: concurrent updates may lose a sample, never corrupt.
            let old = f64::from_bits(share.load(Ordering::Relaxed));
            share.store((old + alpha * (hit - old)).to_bits(), Ordering::Relaxed);
        }
        self.current.store(local, Ordering::Relaxed);
    }

    /// Adds a latency sample (ms) for `local`.
    pub fn observe_latency(&self, local: usize, ms: f64) {
        let slot = &self.latency[local];
        let old = f64::from_bits(slot.load(Ordering::Relaxed));
        let new = if old.is_nan() {
            ms
        } else {
            old + LATENCY_WEIGHT * (ms - old)
        };
        slot.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Mean intensity a carbon-blind balancer would see: each region weighted by its share
    /// of the cluster's endpoints.
    pub fn baseline_intensity(&self, table: &IntensityTable) -> f64 {
        let total: usize = self.endpoints.iter().map(Vec::len).sum();
        self.regions
            .iter()
            .zip(&self.endpoints)
            .map(|(&global, eps)| {
                let intensity = table.regions.get(global).map_or(0.0, |v| v.intensity);
                intensity * eps.len() as f64 / total.max(1) as f64
            })
            .sum()
    }
}
