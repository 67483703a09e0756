#![allow(missing_docs)] // criterion_group! generates undocumented functions.

//! The carbon policy on the request path: one decision must stay well under 100 ns for 16
//! regions. No runtime, no I/O: `decide()` over 4, 16 and 128 regions.
//!
//! `cargo bench -p aegis-proxy --bench carbon_router`

use std::hint::black_box;

use aegis_carbon::energy::EnergyModel;
use aegis_carbon::{
    decide, weighted_probabilities, Freshness, Policy, PolicyConfig, RegionState, RequestFacts,
    Snapshot,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 3] = [4, 16, 128];

/// A deterministic spread of intensities (30..800 g/kWh) and latencies (1..120 ms).
fn snapshot(n: usize) -> Snapshot {
    Snapshot {
        regions: (0..n)
            .map(|i| RegionState {
                intensity: 30.0 + ((i * 7919) % 771) as f64,
                freshness: Freshness::Fresh,
                healthy: i % 11 != 5,
                latency_ms: Some(1.0 + ((i * 104_729) % 120) as f64),
            })
            .collect(),
    }
}

fn shares(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((i % 5) as f64 + 1.0) / (3.0 * n as f64))
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("carbon");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::new("config_creation", n), &n, |b, &n| {
            b.iter(|| (PolicyConfig::default(), snapshot(black_box(n))))
        });
        let snap = snapshot(n);
        let shares = shares(n);
        let model = EnergyModel::default();
        group.bench_with_input(BenchmarkId::new("region_score", n), &n, |b, _| {
            b.iter(|| model.grams(black_box(snap.regions[n / 2].intensity), black_box(20_000)))
        });
        let greenest = PolicyConfig::default();
        let facts = RequestFacts {
            shares: &shares,
            current: Some(1),
            random: 0.42,
        };
        group.bench_with_input(BenchmarkId::new("routing_decision", n), &n, |b, _| {
            b.iter(|| decide(black_box(&snap), black_box(&facts), &greenest))
        });
        let arbitrage = PolicyConfig {
            policy: Policy::Weighted,
            max_share: 0.3,
            ..PolicyConfig::default()
        };
        group.bench_with_input(BenchmarkId::new("spatial_arbitrage", n), &n, |b, _| {
            b.iter(|| decide(black_box(&snap), black_box(&facts), &arbitrage))
        });
        group.bench_with_input(BenchmarkId::new("score_normalization", n), &n, |b, _| {
            b.iter(|| weighted_probabilities(black_box(&snap), black_box(&facts), &arbitrage))
        });
    }
    group.finish();
}

criterion_group!(carbon, benches);
criterion_main!(carbon);
