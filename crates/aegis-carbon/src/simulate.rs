//! Trace-driven simulation: replay an hourly intensity trace through [`decide`] and compare
//! with carbon-blind policies.
//!
//! Users sit in one place; each region has a round-trip time from them. Every hour the trace
//! gives each region's intensity and `requests_per_hour` requests are routed. Round robin and
//! nearest are the carbon-blind baselines; the oracle sends every request to the greenest
//! region of the hour regardless of latency and capacity, a lower bound no policy can beat.

use crate::decide;
use crate::energy::EnergyModel;
use crate::snapshot::{Freshness, Policy, PolicyConfig, RegionState, RequestFacts, Snapshot};
use crate::trace::Trace;

/// A policy the simulator can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimPolicy {
    /// Every region in turn.
    RoundRobin,
    /// The region with the lowest RTT.
    Nearest,
    /// [`Policy::Greenest`] through [`decide`].
    Greenest,
    /// [`Policy::Weighted`] through [`decide`].
    Weighted,
    /// The greenest region of each hour, ignoring latency and capacity.
    Oracle,
}

impl SimPolicy {
    /// Every policy, in report order.
    pub const ALL: [Self; 5] = [
        Self::RoundRobin,
        Self::Nearest,
        Self::Greenest,
        Self::Weighted,
        Self::Oracle,
    ];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round robin",
            Self::Nearest => "nearest",
            Self::Greenest => "greenest",
            Self::Weighted => "weighted",
            Self::Oracle => "oracle (lower bound)",
        }
    }
}

/// Where the regions are, seen from the users.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Trace column of each region.
    pub columns: Vec<usize>,
    /// Round-trip time from the users to each region, ms.
    pub rtt_ms: Vec<f64>,
}

/// Simulation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Policy settings for greenest and weighted (its `policy` field is ignored).
    pub policy: PolicyConfig,
    /// Requests routed per hour of trace.
    pub requests_per_hour: usize,
    /// Energy per request.
    pub energy: EnergyModel,
    /// Window, in requests, over which traffic shares are smoothed for `max_share`.
    pub share_window: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            requests_per_hour: 100,
            energy: EnergyModel::default(),
            share_window: 20.0,
        }
    }
}

/// What one policy did over the whole trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// The policy.
    pub policy: SimPolicy,
    /// Mean grams CO2eq per request.
    pub grams_per_request: f64,
    /// Fraction of requests whose RTT exceeded the nearest region's by more than the budget.
    pub over_budget: f64,
    /// Largest fraction of one hour's requests any region received.
    pub peak_share: f64,
}

/// Replays `trace` under `policy`.
pub fn simulate(
    trace: &Trace,
    deployment: &Deployment,
    policy: SimPolicy,
    config: &SimConfig,
) -> SimResult {
    let n = deployment.columns.len();
    let nearest_rtt = deployment
        .rtt_ms
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let nearest = deployment
        .rtt_ms
        .iter()
        .position(|&r| r == nearest_rtt)
        .unwrap_or(0);
    let mut state = State {
        shares: vec![1.0 / n as f64; n],
        current: None,
        rng: 0x9E37_79B9_7F4A_7C15,
        counter: 0,
    };
    let (mut grams, mut over, mut total, mut peak) = (0.0, 0usize, 0usize, 0.0f64);
    for row in &trace.values {
        let intensities: Vec<f64> = deployment.columns.iter().map(|&c| row[c]).collect();
        let mut hour = vec![0usize; n];
        for _ in 0..config.requests_per_hour {
            let region = match policy {
                SimPolicy::RoundRobin => state.next_counter() % n,
                SimPolicy::Nearest => nearest,
                SimPolicy::Oracle => argmin(&intensities),
                SimPolicy::Greenest | SimPolicy::Weighted => {
                    state.decide(&intensities, deployment, policy, config)
                }
            };
            state.record(region, config.share_window);
            hour[region] += 1;
            grams += config.energy.grams(intensities[region], 0);
            if deployment.rtt_ms[region] > nearest_rtt + config.policy.latency_budget_ms {
                over += 1;
            }
            total += 1;
        }
        let busiest = hour.iter().copied().max().unwrap_or(0);
        peak = peak.max(busiest as f64 / config.requests_per_hour.max(1) as f64);
    }
    let total_f = total.max(1) as f64;
    SimResult {
        policy,
        grams_per_request: grams / total_f,
        over_budget: over as f64 / total_f,
        peak_share: peak,
    }
}

struct State {
    shares: Vec<f64>,
    current: Option<usize>,
    rng: u64,
    counter: usize,
}

impl State {
    fn next_counter(&mut self) -> usize {
        self.counter += 1;
        self.counter - 1
    }

    /// xorshift64*: deterministic, seeded, good enough to draw weighted choices.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(
        &mut self,
        intensities: &[f64],
        deployment: &Deployment,
        policy: SimPolicy,
        config: &SimConfig,
    ) -> usize {
        let snapshot = Snapshot {
            regions: intensities
                .iter()
                .zip(&deployment.rtt_ms)
                .map(|(&intensity, &rtt)| RegionState {
                    intensity,
                    freshness: Freshness::Fresh,
                    healthy: true,
                    latency_ms: Some(rtt),
                })
                .collect(),
        };
        let policy_config = PolicyConfig {
            policy: if policy == SimPolicy::Weighted {
                Policy::Weighted
            } else {
                Policy::Greenest
            },
            ..config.policy.clone()
        };
        let random = self.random();
        let facts = RequestFacts {
            shares: &self.shares,
            current: self.current,
            random,
        };
        decide(&snapshot, &facts, &policy_config)
            .region
            .unwrap_or(0)
    }

    fn record(&mut self, region: usize, window: f64) {
        let alpha = 1.0 / window.max(1.0);
        for (i, share) in self.shares.iter_mut().enumerate() {
            let hit = if i == region { 1.0 } else { 0.0 };
            *share += alpha * (hit - *share);
        }
        self.current = Some(region);
    }
}

fn argmin(values: &[f64]) -> usize {
    (0..values.len())
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace() -> Trace {
        Trace::parse(
            "datetime_utc,DIRTY,CLEAN,FAR\n\
             2023-01-01T00:00:00Z,400,100,10\n\
             2023-01-01T01:00:00Z,400,300,10\n",
        )
        .unwrap()
    }

    fn deployment() -> Deployment {
        Deployment {
            columns: vec![0, 1, 2],
            rtt_ms: vec![1.0, 20.0, 150.0],
        }
    }

    #[test]
    fn policies_rank_as_expected() {
        let config = SimConfig {
            requests_per_hour: 10,
            ..SimConfig::default()
        };
        let run = |p| simulate(&trace(), &deployment(), p, &config);
        let (rr, nearest, green, oracle) = (
            run(SimPolicy::RoundRobin),
            run(SimPolicy::Nearest),
            run(SimPolicy::Greenest),
            run(SimPolicy::Oracle),
        );
        assert!(oracle.grams_per_request < green.grams_per_request);
        assert!(green.grams_per_request < nearest.grams_per_request);
        assert!(green.grams_per_request < rr.grams_per_request);
        assert_eq!(nearest.over_budget, 0.0);
        assert_eq!(green.over_budget, 0.0);
        assert!(rr.over_budget >= 0.3, "{rr:?}");
        assert_eq!(nearest.peak_share, 1.0);
    }

    #[test]
    fn max_share_caps_the_peak() {
        let mut config = SimConfig {
            requests_per_hour: 100,
            share_window: 20.0,
            ..SimConfig::default()
        };
        config.policy.max_share = 0.6;
        let green = simulate(&trace(), &deployment(), SimPolicy::Greenest, &config);
        assert!(green.peak_share <= 0.7, "{green:?}");
    }
}
