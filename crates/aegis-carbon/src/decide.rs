//! The decision: filter regions by health, measured latency, freshness and capacity, then
//! rank by carbon.
//!
//! Allocation-free: candidate sets are bitmasks, so a cluster has at most [`MAX_REGIONS`].

use crate::snapshot::{Freshness, Policy, PolicyConfig, RegionState, RequestFacts, Snapshot};

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
    /// The lowest-latency eligible region: the carbon-blind baseline.
    Nearest,
    /// `max_share` kept the request off a greener (or, for nearest, nearer) region: it went to
    /// the next one in the policy's order.
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
    /// No healthy region has a latency estimate yet: none is chosen on a guess.
    NoLatency,
    /// No healthy region is within the latency budget: only a budget that is not a
    /// non-negative number (NaN, negative) can cause it, as the fastest region always fits.
    OverBudget,
    /// The chosen region's intensity is older than `stale_after` (no eligible region had
    /// fresh data).
    Stale,
    /// The chosen region never had usable data; `unknown_intensity` stood in.
    NoData,
}

impl Reason {
    /// A stable label for logs and metrics: `greenest`, `weighted`, `fallback:stale`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Greenest => "greenest",
            Self::Weighted => "weighted",
            Self::Nearest => "nearest",
            Self::Capacity => "capacity",
            Self::Fallback(FallbackReason::Empty) => "fallback:empty",
            Self::Fallback(FallbackReason::Unhealthy) => "fallback:unhealthy",
            Self::Fallback(FallbackReason::NoLatency) => "fallback:no_latency",
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

/// Chooses the region for one request. Pure and total: same inputs, same decision, whatever
/// the inputs (NaN, negative or infinite values included).
///
/// The rules, in order: only healthy regions with a latency estimate within the budget of the
/// fastest healthy one; among those, only the best freshness class (fresh before stale before
/// missing); among those, only regions under `max_share` (all of them when every one is at
/// the cap); then the policy picks. Greenest never picks a region dirtier than the nearest one
/// it could have taken instead, so it is never worse than carbon-blind routing; weighted
/// spreads load on purpose and makes no such promise.
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
    let candidates = match candidates(regions, facts.shares, config) {
        Ok(candidates) => candidates,
        Err(fallback) => return none(Reason::Fallback(fallback)),
    };
    let (region, reason) = match config.policy {
        Policy::Off => return none(Reason::Off),
        Policy::Weighted => (
            weighted(regions, &candidates, config.weight_exponent, facts.random),
            Reason::Weighted,
        ),
        Policy::Nearest => (nearest(regions, candidates.open), Reason::Nearest),
        Policy::Greenest => (
            greenest(regions, &candidates, facts, config.hysteresis),
            Reason::Greenest,
        ),
    };
    let chosen = &regions[region];
    let reason = match class(chosen) {
        Class::Fresh if candidates.displaced(regions, region, config.policy) => Reason::Capacity,
        Class::Fresh => reason,
        Class::Stale => Reason::Fallback(FallbackReason::Stale),
        Class::Missing | Class::Unusable => Reason::Fallback(FallbackReason::NoData),
    };
    Decision {
        region: Some(region),
        reason,
        intensity: Some(chosen.intensity),
    }
}

/// Whether a region could take the next request, and if not why: what an operator reads to
/// understand a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eligibility {
    /// The policy may choose it.
    Eligible,
    /// No endpoint of the region is available.
    Unhealthy,
    /// No latency estimate yet.
    NoLatency,
    /// Farther than the budget allows from the fastest healthy region.
    OverBudget,
    /// Another eligible region has better data (fresh before stale before missing).
    WorseData,
    /// At `max_share` while another eligible region is not.
    AtCapacity,
}

impl Eligibility {
    /// A stable label: `eligible`, `unhealthy`, `no_latency`, `over_budget`, `worse_data`,
    /// `at_capacity`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Eligible => "eligible",
            Self::Unhealthy => "unhealthy",
            Self::NoLatency => "no_latency",
            Self::OverBudget => "over_budget",
            Self::WorseData => "worse_data",
            Self::AtCapacity => "at_capacity",
        }
    }
}

/// The [`Eligibility`] of every region, by the same rules as [`decide`].
pub fn eligibility(
    snapshot: &Snapshot,
    facts: &RequestFacts<'_>,
    config: &PolicyConfig,
) -> Vec<Eligibility> {
    let regions = &snapshot.regions[..snapshot.regions.len().min(MAX_REGIONS)];
    let limit =
        fastest_healthy_latency(regions).unwrap_or(f64::INFINITY) + config.latency_budget_ms;
    let sets = candidates(regions, facts.shares, config).ok();
    let mut out: Vec<Eligibility> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let bit = 1u128 << i;
            match (&sets, latency(r)) {
                _ if !r.healthy => Eligibility::Unhealthy,
                (_, None) => Eligibility::NoLatency,
                (_, Some(l)) if l > limit || limit.is_nan() => Eligibility::OverBudget,
                (Some(c), _) if c.open & bit != 0 => Eligibility::Eligible,
                (Some(c), _) if c.eligible & bit != 0 => Eligibility::AtCapacity,
                _ => Eligibility::WorseData,
            }
        })
        .collect();
    out.resize(snapshot.regions.len(), Eligibility::OverBudget);
    out
}

/// How far a region's intensity can be trusted, best first: ranking never lets a worse class
/// beat a better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Fresh,
    Stale,
    Missing,
    /// Not a non-negative finite number: never ranked on its value.
    Unusable,
}

fn class(region: &RegionState) -> Class {
    if !(region.intensity.is_finite() && region.intensity >= 0.0) {
        return Class::Unusable;
    }
    match region.freshness {
        Freshness::Fresh => Class::Fresh,
        Freshness::Stale => Class::Stale,
        Freshness::Missing => Class::Missing,
    }
}

/// The intensity a region is ranked on: unusable values rank last.
fn rank(region: &RegionState) -> f64 {
    match class(region) {
        Class::Unusable => f64::MAX,
        _ => region.intensity,
    }
}

/// A latency estimate that can be compared: finite and non-negative.
fn latency(region: &RegionState) -> Option<f64> {
    region.latency_ms.filter(|l| l.is_finite() && *l >= 0.0)
}

/// The regions a policy may choose from.
struct Candidates {
    /// Healthy, within the budget, of the best freshness class.
    eligible: u128,
    /// `eligible` minus the regions at `max_share`; all of `eligible` when every one is.
    open: u128,
    /// Every eligible region is at `max_share`.
    full: bool,
}

impl Candidates {
    /// Whether `max_share` took the request away from where the policy would have sent it:
    /// every eligible region is at the cap, or one the cap excluded was ahead of `chosen` in
    /// the policy's order.
    fn displaced(&self, regions: &[RegionState], chosen: usize, policy: Policy) -> bool {
        let excluded = self.eligible & !self.open;
        self.full
            || match policy {
                Policy::Nearest => members(excluded).any(|i| ahead_in_latency(regions, i, chosen)),
                Policy::Weighted => excluded != 0,
                _ => members(excluded).any(|i| rank(&regions[i]) < rank(&regions[chosen])),
            }
    }
}

/// The lowest usable latency estimate of a healthy region: what the budget counts from.
pub fn fastest_healthy_latency(regions: &[RegionState]) -> Option<f64> {
    let mut fastest = None;
    for l in regions.iter().filter(|r| r.healthy).filter_map(latency) {
        // `latency` is finite: a plain comparison, not `f64::min`'s NaN handling.
        if fastest.is_none_or(|f| l < f) {
            fastest = Some(l);
        }
    }
    fastest
}

/// Healthy regions with a latency estimate within the budget of the fastest healthy one, of
/// the best freshness class among those, split by `max_share`. Never an empty set: no
/// healthy region, no estimate or none within the budget is a fallback, so the policies
/// below always have a region to pick.
fn candidates(
    regions: &[RegionState],
    shares: &[f64],
    config: &PolicyConfig,
) -> Result<Candidates, FallbackReason> {
    if !regions.iter().any(|r| r.healthy) {
        return Err(FallbackReason::Unhealthy);
    }
    let Some(fastest) = fastest_healthy_latency(regions) else {
        return Err(FallbackReason::NoLatency);
    };
    let limit = fastest + config.latency_budget_ms;
    let capping = config.max_share < 1.0 && !shares.is_empty();
    // One pass: the regions within the budget, by freshness class, and those under the cap
    // (locals rather than an array indexed by class, so they stay in registers).
    let (mut fresh, mut stale, mut missing, mut unusable, mut under_cap) = (0u128, 0, 0, 0, 0);
    for (i, r) in regions.iter().enumerate() {
        if r.healthy && latency(r).is_some_and(|l| l <= limit) {
            let bit = 1u128 << i;
            match class(r) {
                Class::Fresh => fresh |= bit,
                Class::Stale => stale |= bit,
                Class::Missing => missing |= bit,
                Class::Unusable => unusable |= bit,
            }
            if !capping || share(shares, i) < config.max_share {
                under_cap |= bit;
            }
        }
    }
    let Some(eligible) = [fresh, stale, missing, unusable]
        .into_iter()
        .find(|&set| set != 0)
    else {
        return Err(FallbackReason::OverBudget);
    };
    let open = eligible & under_cap;
    Ok(match open {
        0 => Candidates {
            eligible,
            open: eligible,
            full: true,
        },
        open => Candidates {
            eligible,
            open,
            full: false,
        },
    })
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

/// Whether region `a` is nearer than `b` (lower latency; on a tie, the lower index).
fn ahead_in_latency(regions: &[RegionState], a: usize, b: usize) -> bool {
    let (la, lb) = (latency_or_max(&regions[a]), latency_or_max(&regions[b]));
    la < lb || (la == lb && a < b)
}

/// The lowest-latency region of a non-empty set: what carbon-blind routing picks.
fn nearest(regions: &[RegionState], set: u128) -> usize {
    members(set)
        .reduce(|best, i| {
            if ahead_in_latency(regions, i, best) {
                i
            } else {
                best
            }
        })
        .unwrap_or(0)
}

/// The lowest-ranked intensity of a non-empty set, ties broken by lower share (load).
fn lowest(regions: &[RegionState], set: u128, shares: &[f64]) -> usize {
    let mut best = set.trailing_zeros() as usize;
    let mut best_rank = rank(&regions[best]);
    for i in members(set & (set - 1)) {
        let r = rank(&regions[i]);
        if r < best_rank || (r == best_rank && share(shares, i) < share(shares, best)) {
            (best, best_rank) = (i, r);
        }
    }
    best
}

fn latency_or_max(region: &RegionState) -> f64 {
    latency(region).unwrap_or(f64::INFINITY)
}

/// The lowest intensity among the open regions; the current region is kept unless the best
/// is greener by more than `hysteresis`, and never when it is dirtier than the nearest open
/// region (so hysteresis cannot make greenest worse than carbon-blind routing).
fn greenest(
    regions: &[RegionState],
    candidates: &Candidates,
    facts: &RequestFacts<'_>,
    hysteresis: f64,
) -> usize {
    let open = candidates.open;
    let best = lowest(regions, open, facts.shares);
    match facts.current {
        // The common case: still the greenest. Nothing is greener, so nothing nearer is.
        Some(current) if current == best => best,
        Some(current)
            if current < MAX_REGIONS
                && open & (1 << current) != 0
                && rank(&regions[current]) <= rank(&regions[best]) * (1.0 + hysteresis)
                && rank(&regions[current]) <= rank(&regions[nearest(regions, open)]) =>
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
    let w = if exponent == 2.0 {
        ratio * ratio
    } else {
        ratio.powf(exponent)
    };
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

/// The weights of a set of regions: computed on demand (no per-region array to fill), uniform
/// when no weight is positive (every region of the set unusable).
struct Weights {
    min: f64,
    exponent: f64,
    uniform: bool,
    total: f64,
}

impl Weights {
    fn new(regions: &[RegionState], set: u128, exponent: f64) -> Self {
        let min = members(set)
            .map(|i| rank(&regions[i]).max(1.0))
            .fold(f64::INFINITY, f64::min);
        let mut weights = Self {
            min,
            exponent,
            uniform: false,
            total: 0.0,
        };
        let total: f64 = members(set).map(|i| weights.of(&regions[i])).sum();
        if total > 0.0 && total.is_finite() {
            weights.total = total;
        } else {
            weights.uniform = true;
            weights.total = f64::from(set.count_ones());
        }
        weights
    }

    fn of(&self, region: &RegionState) -> f64 {
        if self.uniform {
            1.0
        } else {
            weight(self.min, rank(region), self.exponent)
        }
    }
}

/// Draws a region with probability proportional to its [`weight`].
fn weighted(regions: &[RegionState], candidates: &Candidates, exponent: f64, random: f64) -> usize {
    let set = candidates.open;
    let weights = Weights::new(regions, set, exponent);
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut target = random * weights.total;
    let mut last = set.trailing_zeros() as usize;
    for i in members(set) {
        last = i;
        target -= weights.of(&regions[i]);
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
    let regions = &snapshot.regions[..snapshot.regions.len().min(MAX_REGIONS)];
    let Ok(candidates) = candidates(regions, facts.shares, config) else {
        return probabilities;
    };
    let set = candidates.open;
    let weights = Weights::new(regions, set, config.weight_exponent);
    for i in members(set) {
        probabilities[i] = weights.of(&regions[i]) / weights.total;
    }
    probabilities
}

#[cfg(test)]
mod tests;
