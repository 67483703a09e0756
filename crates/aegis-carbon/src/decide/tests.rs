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
fn stale_data_is_labelled() {
    let mut r = region(10.0, 1.0);
    r.freshness = Freshness::Stale;
    let d = decide(
        &Snapshot {
            regions: vec![r, region(500.0, 1.0)],
        },
        &facts(),
        &greenest(),
    );
    assert_eq!((d.region, d.reason.as_str()), (Some(0), "fallback:stale"));
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
        max_share: 0.5,
        ..greenest()
    };
    let shares = [0.6, 0.3, 0.1];
    let d = decide(
        &snapshot,
        &RequestFacts {
            shares: &shares,
            ..facts()
        },
        &config,
    );
    assert_eq!((d.region, d.reason), (Some(1), Reason::Greenest));
    let shares = [0.5, 0.5, 0.5];
    let d = decide(
        &snapshot,
        &RequestFacts {
            shares: &shares,
            ..facts()
        },
        &config,
    );
    assert_eq!(d.reason, Reason::Capacity);
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
                policy: *g.choose(&[Policy::Greenest, Policy::Weighted]).unwrap(),
                latency_budget_ms: unit(g) * 100.0,
                max_share: 0.2 + unit(g) * 0.8,
                hysteresis: unit(g) * 0.3,
                weight_exponent: 1.0 + unit(g) * 2.0,
            },
        }
    }
}

impl Case {
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

    fn never_picks_an_unhealthy_region(case: Case) -> bool {
        case.decide().region.is_none_or(|i| case.regions[i].healthy)
    }

    fn never_picks_a_region_over_the_latency_budget(case: Case) -> bool {
        let fastest = case.regions.iter().filter(|r| r.healthy).filter_map(|r| r.latency_ms).fold(f64::INFINITY, f64::min);
        case.decide().region.is_none_or(|i| {
            case.regions[i].latency_ms.is_none_or(|l| l <= fastest + case.config.latency_budget_ms)
        })
    }

    fn falls_back_only_without_a_healthy_region(case: Case) -> bool {
        let any_healthy = case.regions.iter().any(|r| r.healthy);
        case.decide().region.is_some() == any_healthy
    }

    fn respects_max_share_unless_every_region_is_full(case: Case) -> bool {
        let Some(i) = case.decide().region else { return true };
        let max = case.config.max_share;
        let fastest = case.regions.iter().filter(|r| r.healthy).filter_map(|r| r.latency_ms).fold(f64::INFINITY, f64::min);
        let mut eligible = (0..case.regions.len()).filter(|&j| {
            case.regions[j].healthy
                && case.regions[j].latency_ms.is_none_or(|l| l <= fastest + case.config.latency_budget_ms)
        });
        max >= 1.0 || case.shares[i] < max || eligible.all(|j| case.shares[j] >= max)
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
        let fastest = case.regions.iter().filter(|r| r.healthy).filter_map(|r| r.latency_ms).fold(f64::INFINITY, f64::min);
        let min = case.regions.iter()
            .filter(|r| r.healthy && r.latency_ms.is_none_or(|l| l <= fastest + case.config.latency_budget_ms))
            .map(|r| r.intensity)
            .fold(f64::INFINITY, f64::min);
        TestResult::from_bool(case.regions[i].intensity == min)
    }
}
