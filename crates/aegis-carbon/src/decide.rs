//! The decision: filter regions by health, latency budget and capacity, then rank by carbon.
//!
//! Allocation-free: candidate sets are bitmasks, so a cluster has at most [`MAX_REGIONS`].

use crate::snapshot::{Freshness, Policy, PolicyConfig, RequestFacts, Snapshot};

/// Most regions one cluster may have (candidate sets are `u128` bitmasks).
pub const MAX_REGIONS: usize = 128;

/// Which region serves a request, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Index into [`Snapshot::regions`]; `None` means "no carbon preference": the caller's
    /// plain load balancing picks among all endpoints.
    pub region: Option<usize>,
    /// Why this region (or none).
    pub reason: Reason,
    /// Intensity of the chosen region in gCO2eq/kWh.
    pub intensity: Option<f64>,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The policy is off for this cluster.
    Off,
    /// The lowest-intensity eligible region (or the current one, within hysteresis).
    Greenest,
    /// Drawn by intensity weights among eligible regions.
    Weighted,
    /// Every eligible region had reached `max_share`: the least loaded one was taken.
    Capacity,
    /// The decision could not use carbon data as intended.
    Fallback(FallbackReason),
}

/// Why carbon data could not drive the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The cluster has no regions.
    Empty,
    /// No region is healthy.
    Unhealthy,
    /// The chosen region's intensity is older than `stale_after`.
    Stale,
    /// The chosen region never had data; `unknown_intensity` stood in.
    NoData,
}

impl Reason {
    /// A stable label for logs and metrics: `greenest`, `weighted`, `fallback:stale`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Greenest => "greenest",
            Self::Weighted => "weighted",
            Self::Capacity => "capacity",
            Self::Fallback(FallbackReason::Empty) => "fallback:empty",
            Self::Fallback(FallbackReason::Unhealthy) => "fallback:unhealthy",
            Self::Fallback(FallbackReason::Stale) => "fallback:stale",
            Self::Fallback(FallbackReason::NoData) => "fallback:no_data",
        }
    }

    /// Whether the decision is a fallback.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback(_))
    }
}

/// Chooses the region for one request. Pure: same inputs, same decision.
pub fn decide(snapshot: &Snapshot, facts: &RequestFacts<'_>, config: &PolicyConfig) -> Decision {
    let regions = &snapshot.regions[..snapshot.regions.len().min(MAX_REGIONS)];
    let none = |reason| Decision {
        region: None,
        reason,
        intensity: None,
    };
    if regions.is_empty() {
        return none(Reason::Fallback(FallbackReason::Empty));
    }
    let healthy = mask(regions.iter().map(|r| r.healthy));
    if healthy == 0 {
        return none(Reason::Fallback(FallbackReason::Unhealthy));
    }
    if config.policy == Policy::Off {
        return none(Reason::Off);
    }
    let eligible = within_budget(snapshot, healthy, config.latency_budget_ms);
    let (candidates, capped) = under_capacity(eligible, facts.shares, config.max_share);
    let (region, reason) = if capped {
        (least_shared(candidates, facts.shares), Reason::Capacity)
    } else {
        match config.policy {
            Policy::Weighted => (
                weighted(snapshot, candidates, config.weight_exponent, facts.random),
                Reason::Weighted,
            ),
            _ => (
                greenest(snapshot, candidates, facts, config.hysteresis),
                Reason::Greenest,
            ),
        }
    };
    let chosen = &regions[region];
    let reason = match chosen.freshness {
        Freshness::Fresh => reason,
        Freshness::Stale => Reason::Fallback(FallbackReason::Stale),
        Freshness::Missing => Reason::Fallback(FallbackReason::NoData),
    };
    Decision {
        region: Some(region),
        reason,
        intensity: Some(chosen.intensity),
    }
}

fn mask(bits: impl Iterator<Item = bool>) -> u128 {
    bits.enumerate()
        .fold(0, |m, (i, on)| if on { m | (1 << i) } else { m })
}

/// Indices of the set bits, lowest first.
fn members(mut set: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if set == 0 {
            return None;
        }
        let i = set.trailing_zeros() as usize;
        set &= set - 1;
        Some(i)
    })
}

/// Healthy regions whose latency is within `budget` of the fastest healthy region. Regions
/// never measured stay eligible, so that they get measured.
fn within_budget(snapshot: &Snapshot, healthy: u128, budget: f64) -> u128 {
    let fastest = members(healthy)
        .filter_map(|i| snapshot.regions[i].latency_ms)
        .fold(f64::INFINITY, f64::min);
    let limit = fastest + budget;
    members(healthy)
        .filter(|&i| snapshot.regions[i].latency_ms.is_none_or(|l| l <= limit))
        .fold(0, |m, i| m | (1 << i))
}

/// Removes regions at or over `max_share`; if that removes all, keeps every eligible region
/// and reports it as capped.
fn under_capacity(eligible: u128, shares: &[f64], max_share: f64) -> (u128, bool) {
    if max_share >= 1.0 || shares.is_empty() {
        return (eligible, false);
    }
    let open = members(eligible)
        .filter(|&i| shares.get(i).copied().unwrap_or(0.0) < max_share)
        .fold(0, |m, i| m | (1 << i));
    if open == 0 {
        (eligible, true)
    } else {
        (open, false)
    }
}

fn share(shares: &[f64], i: usize) -> f64 {
    shares.get(i).copied().unwrap_or(0.0)
}

fn least_shared(candidates: u128, shares: &[f64]) -> usize {
    members(candidates)
        .min_by(|&a, &b| share(shares, a).total_cmp(&share(shares, b)))
        .unwrap_or(0)
}

/// Lowest intensity, ties broken by lower share (load); the current region is kept unless
/// the best is greener by more than `hysteresis`.
fn greenest(
    snapshot: &Snapshot,
    candidates: u128,
    facts: &RequestFacts<'_>,
    hysteresis: f64,
) -> usize {
    let intensity = |i: usize| snapshot.regions[i].intensity;
    let best = members(candidates)
        .min_by(|&a, &b| {
            intensity(a)
                .total_cmp(&intensity(b))
                .then(share(facts.shares, a).total_cmp(&share(facts.shares, b)))
        })
        .unwrap_or(0);
    match facts.current {
        Some(current)
            if candidates & (1 << current) != 0
                && intensity(current) <= intensity(best) * (1.0 + hysteresis) =>
        {
            current
        }
        _ => best,
    }
}

/// Draws a region with probability proportional to `(min intensity / intensity) ^ exponent`.
fn weighted(snapshot: &Snapshot, candidates: u128, exponent: f64, random: f64) -> usize {
    let weight = weight_fn(snapshot, candidates, exponent);
    let total: f64 = members(candidates).map(&weight).sum();
    let mut target = random.clamp(0.0, 1.0) * total;
    let mut last = 0;
    for i in members(candidates) {
        last = i;
        target -= weight(i);
        if target < 0.0 {
            return i;
        }
    }
    last
}

fn weight_fn(snapshot: &Snapshot, candidates: u128, exponent: f64) -> impl Fn(usize) -> f64 + '_ {
    // Intensities are clamped to 1 g/kWh so a zero-carbon grid gets a large finite weight.
    let floor = |i: usize| snapshot.regions[i].intensity.max(1.0);
    let min = members(candidates).map(floor).fold(f64::INFINITY, f64::min);
    move |i| (min / floor(i)).powf(exponent)
}

/// The probability each region has under the weighted policy (0 for ineligible regions).
pub fn weighted_probabilities(
    snapshot: &Snapshot,
    facts: &RequestFacts<'_>,
    config: &PolicyConfig,
) -> Vec<f64> {
    let healthy = mask(snapshot.regions.iter().map(|r| r.healthy));
    let eligible = within_budget(snapshot, healthy, config.latency_budget_ms);
    let (candidates, _) = under_capacity(eligible, facts.shares, config.max_share);
    let weight = weight_fn(snapshot, candidates, config.weight_exponent);
    let total: f64 = members(candidates).map(&weight).sum();
    (0..snapshot.regions.len())
        .map(|i| {
            if candidates & (1 << i) != 0 {
                weight(i) / total
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
