use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

use super::*;
use crate::snapshot::RegionState;

fn region(intensity: f64, latency_ms: f64) -> RegionState {
    RegionState {
        intensity,
        freshness: Freshness::Fresh,
        healthy: true,
        latency_ms: Some(latency_ms),
    }
}

fn facts() -> RequestFacts<'static> {
    RequestFacts {
        shares: &[],
        current: None,
        random: 0.5,
    }
}

fn greenest() -> PolicyConfig {
    PolicyConfig::default()
}

#[test]
fn picks_the_lowest_intensity_within_the_latency_budget() {
    let snapshot = Snapshot {
        regions: vec![region(400.0, 1.0), region(70.0, 21.0), region(30.0, 103.0)],
    };
    let d = decide(&snapshot, &facts(), &greenest());
    assert_eq!(
        (d.region, d.reason, d.intensity),
        (Some(1), Reason::Greenest, Some(70.0))
    );
}

#[test]
fn empty_snapshot_falls_back() {
    let d = decide(&Snapshot::default(), &facts(), &greenest());
    assert_eq!(
        (d.region, d.reason),
        (None, Reason::Fallback(FallbackReason::Empty))
    );
}

#[test]
fn all_unhealthy_falls_back() {
    let mut r = region(10.0, 1.0);
    r.healthy = false;
    let d = decide(&Snapshot { regions: vec![r] }, &facts(), &greenest());
    assert_eq!(d.reason.as_str(), "fallback:unhealthy");
    assert_eq!(d.region, None);
}

#[test]
fn fresh_data_beats_stale_and_stale_beats_missing() {
    let with = |intensity, freshness| RegionState {
        freshness,
        ..region(intensity, 1.0)
    };
    // A week-old 10 g loses to a fresh 300 g; a missing 500 g stand-in loses to a stale 600 g.
    let snapshot = Snapshot {
        regions: vec![with(10.0, Freshness::Stale), with(300.0, Freshness::Fresh)],
    };
    let d = decide(&snapshot, &facts(), &greenest());
    assert_eq!((d.region, d.reason.as_str()), (Some(1), "greenest"));
    let snapshot = Snapshot {
        regions: vec![
            with(500.0, Freshness::Missing),
            with(600.0, Freshness::Stale),
        ],
    };
    let d = decide(&snapshot, &facts(), &greenest());
    assert_eq!((d.region, d.reason.as_str()), (Some(1), "fallback:stale"));
    let snapshot = Snapshot {
        regions: vec![with(500.0, Freshness::Missing)],
    };
    let d = decide(&snapshot, &facts(), &greenest());
    assert_eq!((d.region, d.reason.as_str()), (Some(0), "fallback:no_data"));
}

#[test]
fn unusable_values_never_win() {
    for bad in [f64::NAN, -5.0, f64::INFINITY, f64::NEG_INFINITY] {
        let snapshot = Snapshot {
            regions: vec![region(bad, 1.0), region(700.0, 1.0)],
        };
        for policy in [Policy::Greenest, Policy::Weighted] {
            let config = PolicyConfig {
                policy,
                ..greenest()
            };
            for random in [0.0, 0.5, 0.999] {
                let facts = RequestFacts { random, ..facts() };
                assert_eq!(decide(&snapshot, &facts, &config).region, Some(1), "{bad}");
            }
            let p = weighted_probabilities(&snapshot, &facts(), &config);
            assert_eq!(p, vec![0.0, 1.0], "{bad}");
        }
    }
}

/// A region with no latency estimate never takes traffic on a guess: the old rule kept it
/// eligible "so that it gets measured", and a far green region took every cold-start request.
#[test]
fn no_latency_estimate_no_traffic() {
    let unmeasured = RegionState {
        latency_ms: None,
        ..region(30.0, 0.0)
    };
    let snapshot = Snapshot {
        regions: vec![region(400.0, 1.0), unmeasured.clone()],
    };
    let d = decide(&snapshot, &facts(), &greenest());
    assert_eq!((d.region, d.reason.as_str()), (Some(0), "greenest"));
    let d = decide(
        &Snapshot {
            regions: vec![unmeasured],
        },
        &facts(),
        &greenest(),
    );
    assert_eq!((d.region, d.reason.as_str()), (None, "fallback:no_latency"));
    // The budget counts from the fastest *healthy* region.
    let mut down = region(500.0, 1.0);
    down.healthy = false;
    let snapshot = Snapshot {
        regions: vec![down, region(400.0, 100.0), region(30.0, 140.0)],
    };
    assert_eq!(decide(&snapshot, &facts(), &greenest()).region, Some(2));
}

#[test]
fn hysteresis_keeps_the_current_region_when_close() {
    let snapshot = Snapshot {
        regions: vec![region(100.0, 1.0), region(95.0, 1.0)],
    };
    let sticky = RequestFacts {
        current: Some(0),
        ..facts()
    };
    assert_eq!(decide(&snapshot, &sticky, &greenest()).region, Some(0));
    let snapshot = Snapshot {
        regions: vec![region(100.0, 1.0), region(80.0, 1.0)],
    };
    assert_eq!(decide(&snapshot, &sticky, &greenest()).region, Some(1));
}

#[test]
fn max_share_moves_traffic_to_the_next_greenest() {
    let snapshot = Snapshot {
        regions: vec![region(50.0, 1.0), region(100.0, 1.0), region(300.0, 1.0)],
    };
    let config = PolicyConfig {
        max_share: 0.4,
        ..greenest()
    };
    let decide_with = |shares: &[f64]| {
        let d = decide(&snapshot, &RequestFacts { shares, ..facts() }, &config);
        (d.region, d.reason.as_str())
    };
    assert_eq!(decide_with(&[0.3, 0.3, 0.4]), (Some(0), "greenest"));
    // The cap diverts the request, and says so.
    assert_eq!(decide_with(&[0.6, 0.3, 0.1]), (Some(1), "capacity"));
    assert_eq!(decide_with(&[0.4, 0.4, 0.2]), (Some(2), "capacity"));
    // Every region at the cap: the greenest, not the least loaded (which was the dirtiest).
    assert_eq!(decide_with(&[0.45, 0.45, 0.45]), (Some(0), "capacity"));
}

#[test]
fn hysteresis_never_keeps_a_region_dirtier_than_the_nearest() {
    // Current 105 g is within 10 % of the best (100 g) but dirtier than the nearest (102 g).
    let snapshot = Snapshot {
        regions: vec![region(102.0, 1.0), region(105.0, 5.0), region(100.0, 9.0)],
    };
    let facts = RequestFacts {
        current: Some(1),
        ..facts()
    };
    assert_eq!(decide(&snapshot, &facts, &greenest()).region, Some(2));
}

#[test]
fn nearest_is_carbon_blind_and_overflows_by_latency() {
    let snapshot = Snapshot {
        regions: vec![region(50.0, 9.0), region(400.0, 1.0), region(300.0, 5.0)],
    };
    let config = PolicyConfig {
        policy: Policy::Nearest,
        max_share: 0.5,
        ..greenest()
    };
    let with = |shares: &[f64]| {
        let d = decide(&snapshot, &RequestFacts { shares, ..facts() }, &config);
        (d.region, d.reason.as_str())
    };
    assert_eq!(with(&[0.2, 0.3, 0.5]), (Some(1), "nearest"));
    assert_eq!(with(&[0.0, 0.6, 0.4]), (Some(2), "capacity"));
}

#[test]
fn weighted_splits_by_inverse_square_intensity() {
    let snapshot = Snapshot {
        regions: vec![region(100.0, 1.0), region(200.0, 1.0)],
    };
    let config = PolicyConfig {
        policy: Policy::Weighted,
        ..greenest()
    };
    let p = weighted_probabilities(&snapshot, &facts(), &config);
    assert!(
        (p[0] - 0.8).abs() < 1e-9 && (p[1] - 0.2).abs() < 1e-9,
        "{p:?}"
    );
    let low = RequestFacts {
        random: 0.79,
        ..facts()
    };
    let high = RequestFacts {
        random: 0.81,
        ..facts()
    };
    assert_eq!(decide(&snapshot, &low, &config).region, Some(0));
    assert_eq!(decide(&snapshot, &high, &config).region, Some(1));
}

#[test]
fn off_leaves_the_choice_to_load_balancing() {
    let snapshot = Snapshot {
        regions: vec![region(1.0, 1.0)],
    };
    let config = PolicyConfig {
        policy: Policy::Off,
        ..greenest()
    };
    assert_eq!(decide(&snapshot, &facts(), &config).reason, Reason::Off);
}

/// A budget that is not a non-negative number leaves no measured region eligible: a fallback,
/// not an index past the end (`simulate --latency-budget-ms NaN` used to panic here).
#[test]
fn a_budget_nothing_fits_falls_back() {
    let snapshot = Snapshot {
        regions: vec![region(400.0, 1.0), region(30.0, 150.0)],
    };
    for budget in [f64::NAN, -1.0, f64::NEG_INFINITY] {
        let config = PolicyConfig {
            latency_budget_ms: budget,
            ..greenest()
        };
        let d = decide(&snapshot, &facts(), &config);
        assert_eq!(
            (d.region, d.reason.as_str()),
            (None, "fallback:over_budget"),
            "{budget}"
        );
    }
}

#[test]
fn every_region_says_why_it_is_or_is_not_eligible() {
    let mut down = region(10.0, 1.0);
    down.healthy = false;
    let unmeasured = RegionState {
        latency_ms: None,
        ..region(20.0, 0.0)
    };
    let stale = RegionState {
        freshness: Freshness::Stale,
        ..region(30.0, 1.0)
    };
    let snapshot = Snapshot {
        regions: vec![
            down,
            unmeasured,
            region(40.0, 500.0),
            stale,
            region(50.0, 1.0),
            region(60.0, 2.0),
        ],
    };
    let shares = [0.0, 0.0, 0.0, 0.0, 0.6, 0.1];
    let facts = RequestFacts {
        shares: &shares,
        ..facts()
    };
    let config = PolicyConfig {
        max_share: 0.5,
        ..greenest()
    };
    let labels: Vec<&str> = eligibility(&snapshot, &facts, &config)
        .iter()
        .map(Eligibility::as_str)
        .collect();
    assert_eq!(
        labels,
        [
            "unhealthy",
            "no_latency",
            "over_budget",
            "worse_data",
            "at_capacity",
            "eligible"
        ]
    );
    let d = decide(&snapshot, &facts, &config);
    assert_eq!((d.region, d.reason.as_str()), (Some(5), "capacity"));
}

/// A random snapshot of 1..=16 regions with random facts.
#[derive(Debug, Clone)]
struct Case {
    regions: Vec<RegionState>,
    shares: Vec<f64>,
    current: Option<usize>,
    random: f64,
    config: PolicyConfig,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = usize::arbitrary(g) % 16 + 1;
        let unit = |g: &mut Gen| f64::from(u16::arbitrary(g)) / f64::from(u16::MAX);
        let regions = (0..n)
            .map(|_| RegionState {
                intensity: unit(g) * 800.0,
                freshness: *g
                    .choose(&[Freshness::Fresh, Freshness::Stale, Freshness::Missing])
                    .unwrap(),
                healthy: u8::arbitrary(g) % 4 != 0,
                latency_ms: bool::arbitrary(g).then(|| unit(g) * 200.0),
            })
            .collect();
        let shares = (0..n).map(|_| unit(g)).collect();
        Self {
            regions,
            shares,
            current: bool::arbitrary(g).then(|| usize::arbitrary(g) % n),
            random: unit(g) * 0.999,
            config: PolicyConfig {
                policy: *g
                    .choose(&[Policy::Greenest, Policy::Weighted, Policy::Nearest])
                    .unwrap(),
                latency_budget_ms: unit(g) * 100.0,
                max_share: 0.2 + unit(g) * 0.8,
                hysteresis: unit(g) * 0.3,
                weight_exponent: 1.0 + unit(g) * 2.0,
            },
        }
    }
}

impl Case {
    /// The fastest healthy region's latency.
    fn fastest(&self) -> f64 {
        self.regions
            .iter()
            .filter(|r| r.healthy)
            .filter_map(|r| r.latency_ms.filter(|l| l.is_finite() && *l >= 0.0))
            .fold(f64::INFINITY, f64::min)
    }

    /// Healthy regions within the budget.
    fn within(&self) -> impl Iterator<Item = usize> + '_ {
        let limit = self.fastest() + self.config.latency_budget_ms;
        (0..self.regions.len()).filter(move |&j| {
            self.regions[j].healthy
                && self.regions[j]
                    .latency_ms
                    .is_some_and(|l| l.is_finite() && l >= 0.0 && l <= limit)
        })
    }

    fn decide(&self) -> Decision {
        let snapshot = Snapshot {
            regions: self.regions.clone(),
        };
        let facts = RequestFacts {
            shares: &self.shares,
            current: self.current,
            random: self.random,
        };
        decide(&snapshot, &facts, &self.config)
    }
}

quickcheck! {
    fn total_whatever_the_budget_and_cap(case: Case, budget: u8, cap: u8) -> bool {
        let mut case = case;
        let budgets = [f64::NAN, -1.0, f64::NEG_INFINITY, 0.0, f64::INFINITY];
        let caps = [f64::NAN, 0.0, -1.0, 2.0, 0.5];
        case.config.latency_budget_ms = budgets[usize::from(budget) % budgets.len()];
        case.config.max_share = caps[usize::from(cap) % caps.len()];
        // Never a panic, and never a region that does not exist or is unhealthy.
        let d = case.decide();
        d.region.is_none_or(|i| i < case.regions.len() && case.regions[i].healthy)
    }

    fn the_decision_picks_an_eligible_region(case: Case) -> bool {
        let Some(i) = case.decide().region else { return true };
        let snapshot = Snapshot { regions: case.regions.clone() };
        let facts = RequestFacts { shares: &case.shares, current: case.current, random: case.random };
        let why = eligibility(&snapshot, &facts, &case.config);
        // Every region at the cap: the chosen one is "at capacity", never worse.
        matches!(why[i], Eligibility::Eligible | Eligibility::AtCapacity)
    }

    fn never_picks_an_unhealthy_region(case: Case) -> bool {
        case.decide().region.is_none_or(|i| case.regions[i].healthy)
    }

    fn never_picks_a_region_over_the_latency_budget_or_unmeasured(case: Case) -> bool {
        let limit = case.fastest() + case.config.latency_budget_ms;
        case.decide().region.is_none_or(|i| case.regions[i].latency_ms.is_some_and(|l| l <= limit))
    }

    fn falls_back_only_without_a_measured_healthy_region(case: Case) -> bool {
        let any = case.regions.iter().any(|r| r.healthy && r.latency_ms.is_some());
        case.decide().region.is_some() == any
    }

    fn freshness_ranks_first(case: Case) -> bool {
        let Some(i) = case.decide().region else { return true };
        case.within().all(|j| class(&case.regions[i]) <= class(&case.regions[j]))
    }

    fn respects_max_share_unless_every_region_is_full(case: Case) -> bool {
        let d = case.decide();
        let Some(i) = d.region else { return true };
        let max = case.config.max_share;
        let chosen = class(&case.regions[i]);
        let mut peers = case.within().filter(|&j| class(&case.regions[j]) == chosen);
        max >= 1.0 || case.shares[i] < max || peers.all(|j| case.shares[j] >= max)
    }

    fn greenest_is_never_dirtier_than_the_nearest_open_region(case: Case) -> TestResult {
        let mut case = case;
        case.config.policy = Policy::Greenest;
        let Some(i) = case.decide().region else { return TestResult::discard() };
        let chosen = class(&case.regions[i]);
        let max = case.config.max_share;
        let open: Vec<usize> = case.within()
            .filter(|&j| class(&case.regions[j]) == chosen && case.shares[j] < max)
            .collect();
        let Some(&near) = open.iter().min_by(|&&a, &&b| {
            case.regions[a].latency_ms.unwrap().total_cmp(&case.regions[b].latency_ms.unwrap()).then(a.cmp(&b))
        }) else { return TestResult::discard() };
        TestResult::from_bool(rank(&case.regions[i]) <= rank(&case.regions[near]))
    }

    fn hostile_values_never_panic_nor_win(case: Case, bad: Vec<(u8, u8)>) -> bool {
        let mut case = case;
        let hostile = [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e308];
        for (who, what) in bad {
            let n = case.regions.len();
            let value = hostile[usize::from(what) % hostile.len()];
            match what % 3 {
                0 => case.regions[usize::from(who) % n].intensity = value,
                1 => case.regions[usize::from(who) % n].latency_ms = Some(value),
                _ => case.shares[usize::from(who) % n] = value,
            }
        }
        let d = case.decide();
        let usable = |r: &RegionState| r.intensity.is_finite() && r.intensity >= 0.0;
        d.region.is_none_or(|i| {
            i < case.regions.len()
                && case.regions[i].healthy
                && (usable(&case.regions[i]) || !case.within().any(|j| usable(&case.regions[j])))
        })
    }

    fn lower_intensity_never_loses_weighted_share(case: Case, who: usize, cut: u16) -> TestResult {
        let mut config = case.config.clone();
        config.policy = Policy::Weighted;
        let who = who % case.regions.len();
        let facts = RequestFacts { shares: &case.shares, current: None, random: 0.0 };
        let before = Snapshot { regions: case.regions.clone() };
        let mut after = before.clone();
        after.regions[who].intensity *= f64::from(cut) / f64::from(u16::MAX);
        if !before.regions.iter().any(|r| r.healthy) {
            return TestResult::discard();
        }
        let p0 = weighted_probabilities(&before, &facts, &config)[who];
        let p1 = weighted_probabilities(&after, &facts, &config)[who];
        TestResult::from_bool(p1 + 1e-12 >= p0)
    }

    fn greenest_without_history_picks_a_minimum(case: Case) -> TestResult {
        let mut case = case;
        case.config.policy = Policy::Greenest;
        case.config.max_share = 1.0;
        case.current = None;
        let d = case.decide();
        let Some(i) = d.region else { return TestResult::discard() };
        let chosen = class(&case.regions[i]);
        let min = case.within()
            .filter(|&j| class(&case.regions[j]) == chosen)
            .map(|j| case.regions[j].intensity)
            .fold(f64::INFINITY, f64::min);
        TestResult::from_bool(case.regions[i].intensity == min)
    }
}
