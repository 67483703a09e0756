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
    /// No healthy region is within the latency budget: only a budget that is not a
    /// non-negative number (NaN, negative) can cause it, as the fastest region always fits.
    OverBudget,
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
            Self::Fallback(FallbackReason::OverBudget) => "fallback:over_budget",
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
    let none = |reason| Decision {
        region: None,
        reason,
        intensity: None,
    };
    let regions = &snapshot.regions[..snapshot.regions.len().min(MAX_REGIONS)];
    if regions.is_empty() {
        return none(Reason::Fallback(FallbackReason::Empty));
    }
    let Candidates { set, capped } = match candidates(snapshot, facts.shares, config) {
        Ok(candidates) => candidates,
        Err(fallback) => return none(Reason::Fallback(fallback)),
    };
    if config.policy == Policy::Off {
        return none(Reason::Off);
    }
    let (region, reason) = if capped {
        (least_shared(set, facts.shares), Reason::Capacity)
    } else if config.policy == Policy::Weighted {
        (
            weighted(snapshot, set, config.weight_exponent, facts.random),
            Reason::Weighted,
        )
    } else {
        (
            greenest(snapshot, set, facts, config.hysteresis),
            Reason::Greenest,
        )
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

/// The regions a policy may choose from.
struct Candidates {
    set: u128,
    /// Every eligible region had reached `max_share`; `set` holds them all.
    capped: bool,
}

/// Healthy regions within the latency budget of the fastest healthy region (regions never
/// measured stay eligible, so that they get measured), minus those at `max_share` unless that
/// would leave none. Never an empty set: no healthy region, or none within the budget, is a
/// fallback, so the policies below always have a region to pick.
fn candidates(
    snapshot: &Snapshot,
    shares: &[f64],
    config: &PolicyConfig,
) -> Result<Candidates, FallbackReason> {
    let regions = &snapshot.regions[..snapshot.regions.len().min(MAX_REGIONS)];
    let mut fastest = f64::INFINITY;
    let mut any_healthy = false;
    for r in regions.iter().filter(|r| r.healthy) {
        any_healthy = true;
        if let Some(latency) = r.latency_ms {
            fastest = fastest.min(latency);
        }
    }
    if !any_healthy {
        return Err(FallbackReason::Unhealthy);
    }
    let limit = fastest + config.latency_budget_ms;
    let capping = config.max_share < 1.0 && !shares.is_empty();
    let (mut eligible, mut open) = (0u128, 0u128);
    for (i, r) in regions.iter().enumerate() {
        if r.healthy && r.latency_ms.is_none_or(|l| l <= limit) {
            eligible |= 1 << i;
            if !capping || share(shares, i) < config.max_share {
                open |= 1 << i;
            }
        }
    }
    match (eligible, open) {
        (0, _) => Err(FallbackReason::OverBudget),
        (set, 0) => Ok(Candidates { set, capped: true }),
        (_, set) => Ok(Candidates { set, capped: false }),
    }
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

fn share(shares: &[f64], i: usize) -> f64 {
    shares.get(i).copied().unwrap_or(0.0)
}

fn least_shared(candidates: u128, shares: &[f64]) -> usize {
    let mut best = (candidates.trailing_zeros() as usize, f64::INFINITY);
    for i in members(candidates) {
        if share(shares, i) < best.1 {
            best = (i, share(shares, i));
        }
    }
    best.0
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
    let mut best = candidates.trailing_zeros() as usize;
    for i in members(candidates & (candidates - 1)) {
        let (a, b) = (intensity(i), intensity(best));
        if a < b || (a == b && share(facts.shares, i) < share(facts.shares, best)) {
            best = i;
        }
    }
    match facts.current {
        Some(current)
            if current < MAX_REGIONS
                && candidates & (1 << current) != 0
                && intensity(current) <= intensity(best) * (1.0 + hysteresis) =>
        {
            current
        }
        _ => best,
    }
}

/// Weight of a region: `(min intensity / intensity) ^ exponent`, intensities floored at
/// 1 g/kWh so a zero-carbon grid gets a large finite weight.
fn weight(min: f64, intensity: f64, exponent: f64) -> f64 {
    let ratio = min / intensity.max(1.0);
    if exponent == 2.0 {
        ratio * ratio
    } else {
        ratio.powf(exponent)
    }
}

fn min_intensity(snapshot: &Snapshot, candidates: u128) -> f64 {
    members(candidates)
        .map(|i| snapshot.regions[i].intensity.max(1.0))
        .fold(f64::INFINITY, f64::min)
}

/// Draws a region with probability proportional to its [`weight`].
fn weighted(snapshot: &Snapshot, candidates: u128, exponent: f64, random: f64) -> usize {
    let min = min_intensity(snapshot, candidates);
    let mut weights = [0.0f64; MAX_REGIONS];
    let mut total = 0.0;
    for i in members(candidates) {
        weights[i] = weight(min, snapshot.regions[i].intensity, exponent);
        total += weights[i];
    }
    let mut target = random.clamp(0.0, 1.0) * total;
    let mut last = 0;
    for i in members(candidates) {
        last = i;
        target -= weights[i];
        if target < 0.0 {
            return i;
        }
    }
    last
}

/// The probability each region has under the weighted policy (0 for ineligible regions).
pub fn weighted_probabilities(
    snapshot: &Snapshot,
    facts: &RequestFacts<'_>,
    config: &PolicyConfig,
) -> Vec<f64> {
    let mut probabilities = vec![0.0; snapshot.regions.len()];
    let Ok(Candidates { set, .. }) = candidates(snapshot, facts.shares, config) else {
        return probabilities;
    };
    let min = min_intensity(snapshot, set);
    let total: f64 = members(set)
        .map(|i| weight(min, snapshot.regions[i].intensity, config.weight_exponent))
        .sum();
    for i in members(set) {
        probabilities[i] =
            weight(min, snapshot.regions[i].intensity, config.weight_exponent) / total;
    }
    probabilities
}

#[cfg(test)]
mod tests;
