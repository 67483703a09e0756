//! A cluster's regions: which endpoints run where, recent traffic shares, measured latency,
//! and the carbon decision over them (with the carbon-blind baseline decided beside it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aegis_carbon::latency::LatencyWindow;
use aegis_carbon::{
    decide, next_share, Decision, Policy, PolicyConfig, Reason, RegionState, RequestFacts, Snapshot,
};

use crate::carbon_feed::IntensityTable;
use crate::config::{Baseline, ClusterConfig, RegionConfig};

const NO_REGION: usize = usize::MAX;

/// The regions of one cluster and its carbon policy.
#[derive(Debug)]
pub struct ClusterCarbon {
    /// Policy settings.
    pub policy: PolicyConfig,
    /// What savings are counted against.
    pub baseline: Baseline,
    /// Index into [`crate::Config::regions`] of each local region.
    pub regions: Vec<usize>,
    /// Endpoint indices of each local region.
    pub endpoints: Vec<Vec<usize>>,
    /// Local region of each endpoint.
    endpoint_region: Vec<usize>,
    /// Recent traffic share per local region (f64 bits).
    shares: Vec<AtomicU64>,
    /// The shares the carbon-blind baseline would have had over the same requests.
    baseline_shares: Vec<AtomicU64>,
    /// Probe samples per local region; written by the prober only.
    windows: Vec<Mutex<LatencyWindow>>,
    /// The current latency estimate per local region in ms (f64 bits; NaN: none yet), read
    /// lock-free by every decision.
    latency: Vec<AtomicU64>,
    /// Local region chosen last, for hysteresis.
    current: AtomicUsize,
    /// Where the policy itself (not the cap) last sent traffic, for the change log.
    leader: AtomicUsize,
}

/// A decision and what the baseline would have done with the same request.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// The policy's decision.
    pub decision: Decision,
    /// Intensity of where the baseline would have sent it (gCO2eq/kWh).
    pub baseline_intensity: f64,
}

impl ClusterCarbon {
    /// Groups the cluster's endpoints by region; `None` when it has no regions.
    pub fn new(
        config: &ClusterConfig,
        all_regions: &[RegionConfig],
        baseline: Baseline,
    ) -> Option<Self> {
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
        let even = || {
            (0..n)
                .map(|_| AtomicU64::new((1.0 / n as f64).to_bits()))
                .collect()
        };
        let windows: Vec<Mutex<LatencyWindow>> = regions
            .iter()
            .map(|&r| {
                Mutex::new(LatencyWindow::new(
                    all_regions.get(r).and_then(|r| r.rtt_ms),
                ))
            })
            .collect();
        let latency = windows
            .iter()
            .map(|w| {
                let estimate = lock(w).estimate().unwrap_or(f64::NAN);
                AtomicU64::new(estimate.to_bits())
            })
            .collect();
        Some(Self {
            policy: config.carbon.clone(),
            baseline,
            shares: even(),
            baseline_shares: even(),
            windows,
            latency,
            current: AtomicUsize::new(NO_REGION),
            leader: AtomicUsize::new(NO_REGION),
            regions,
            endpoints,
            endpoint_region,
        })
    }

    /// Every local region's state as the policy sees it.
    pub fn snapshot(&self, table: &IntensityTable, endpoints: &[Arc<super::Endpoint>]) -> Snapshot {
        let regions = self
            .regions
            .iter()
            .enumerate()
            .map(|(local, &global)| {
                let value = table.regions.get(global);
                RegionState {
                    intensity: value.map_or(f64::INFINITY, |v| v.intensity),
                    freshness: value.map_or(aegis_carbon::Freshness::Missing, |v| v.freshness),
                    // A region is healthy while any of its endpoints passes checks and is not ejected.
                    healthy: self.endpoints[local]
                        .iter()
                        .any(|&e| endpoints[e].health.is_available()),
                    latency_ms: self.latency_ms(local),
                }
            })
            .collect();
        Snapshot { regions }
    }

    /// Decides with the current intensities (`random` is uniform in [0, 1)), and decides the
    /// baseline's region for the same request.
    pub fn decide(
        &self,
        table: &IntensityTable,
        endpoints: &[Arc<super::Endpoint>],
        random: f64,
    ) -> Choice {
        let snapshot = self.snapshot(table, endpoints);
        let shares = load(&self.shares);
        let current = self.current.load(Ordering::Relaxed);
        let facts = RequestFacts {
            shares: &shares,
            current: (current != NO_REGION).then_some(current),
            random,
        };
        let decision = decide(&snapshot, &facts, &self.policy);
        Choice {
            decision,
            baseline_intensity: self.baseline_intensity(&snapshot, table),
        }
    }

    /// Where the baseline would send this request, and its intensity; the baseline's own
    /// shares move as if it had.
    fn baseline_intensity(&self, snapshot: &Snapshot, table: &IntensityTable) -> f64 {
        match self.baseline {
            Baseline::RoundRobin => self.endpoint_weighted_intensity(table),
            Baseline::Nearest => {
                let shares = load(&self.baseline_shares);
                let facts = RequestFacts {
                    shares: &shares,
                    current: None,
                    random: 0.0,
                };
                let config = PolicyConfig {
                    policy: Policy::Nearest,
                    ..self.policy.clone()
                };
                match decide(snapshot, &facts, &config).region {
                    Some(local) => {
                        record(&self.baseline_shares, local);
                        snapshot.regions[local].intensity
                    }
                    // Nothing to compare with: count the request as neither saved nor lost.
                    None => f64::NAN,
                }
            }
        }
    }

    /// The local region of endpoint `endpoint`.
    pub fn region_of(&self, endpoint: usize) -> usize {
        self.endpoint_region.get(endpoint).copied().unwrap_or(0)
    }

    /// Notes that `local` served a request (shares and hysteresis).
    pub fn record_choice(&self, local: usize) {
        record(&self.shares, local);
        self.current.store(local, Ordering::Relaxed);
    }

    /// Notes where the policy sent a request; when that is a change of the region the policy
    /// leads with, returns the previous one (`Some(None)` for the first). Requests the cap
    /// diverted and weighted draws, which move by design, are not changes.
    pub fn note_leader(&self, local: usize, reason: Reason) -> Option<Option<usize>> {
        if matches!(reason, Reason::Capacity | Reason::Weighted) {
            return None;
        }
        let previous = self.leader.swap(local, Ordering::Relaxed);
        (previous != local).then_some((previous != NO_REGION).then_some(previous))
    }

    /// The current share of every local region.
    pub fn shares(&self) -> Vec<f64> {
        load(&self.shares)
    }

    /// Adds one successful probe's time (ms) for `local`.
    pub fn observe_probe(&self, local: usize, ms: f64) {
        let Some(window) = self.windows.get(local) else {
            return;
        };
        let mut window = lock(window);
        window.push(ms);
        let estimate = window.estimate().unwrap_or(f64::NAN);
        self.latency[local].store(estimate.to_bits(), Ordering::Relaxed);
    }

    /// The latency estimate of `local` in ms, if there is one.
    pub fn latency_ms(&self, local: usize) -> Option<f64> {
        let ms = f64::from_bits(self.latency.get(local)?.load(Ordering::Relaxed));
        (!ms.is_nan()).then_some(ms)
    }

    /// Whether `local`'s estimate comes from a probe (not only the configured prior).
    pub fn measured(&self, local: usize) -> bool {
        self.windows.get(local).is_some_and(|w| lock(w).measured())
    }

    /// Mean intensity a carbon-blind balancer would see: each region weighted by its share
    /// of the cluster's endpoints.
    fn endpoint_weighted_intensity(&self, table: &IntensityTable) -> f64 {
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

fn load(values: &[AtomicU64]) -> Vec<f64> {
    values
        .iter()
        .map(|s| f64::from_bits(s.load(Ordering::Relaxed)))
        .collect()
}

/// One request to `local`, in the shares (the rule of `aegis_carbon::next_share`).
fn record(shares: &[AtomicU64], local: usize) {
    for (i, share) in shares.iter().enumerate() {
        // Racy read-modify-write: concurrent updates may lose a sample, never corrupt.
        let old = f64::from_bits(share.load(Ordering::Relaxed));
        share.store(next_share(old, i == local).to_bits(), Ordering::Relaxed);
    }
}

/// A window's lock; a panic while holding it cannot leave a torn window (each push is whole).
fn lock(window: &Mutex<LatencyWindow>) -> std::sync::MutexGuard<'_, LatencyWindow> {
    window.lock().unwrap_or_else(PoisonError::into_inner)
}
