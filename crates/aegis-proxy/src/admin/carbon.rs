//! `GET /carbon`: why carbon-aware traffic goes where it goes. Per cluster, the decision the
//! next request would get, and per region its intensity (value, source, signal and basis, age,
//! freshness, estimated), measured latency (and whether from a probe or the configured prior),
//! health, current traffic share, and whether it is eligible, or why not.

use std::time::{Duration, SystemTime};

use aegis_carbon::{eligibility, Freshness, RequestFacts};
use serde_json::{json, Value};

use crate::carbon_feed::{IntensityTable, RegionIntensity};
use crate::http::Proxy;
use crate::upstream::{Cluster, ClusterCarbon};

/// The whole page, as pretty JSON.
pub(super) fn page(proxy: &Proxy) -> String {
    let feeds = proxy.carbon_feeds();
    let config = feeds.config();
    let (signal, basis) = config
        .feeds
        .first()
        .map(|&f| config.quantity(f))
        .unwrap_or(config.declared);
    let table = feeds.current();
    let clusters: serde_json::Map<String, Value> = proxy
        .clusters()
        .iter()
        .filter_map(|cluster| {
            let carbon = cluster.carbon.as_ref()?;
            let view = cluster_view(
                proxy,
                cluster,
                carbon,
                &table,
                (signal.name(), basis.name()),
            );
            Some((cluster.name.to_string(), view))
        })
        .collect();
    let page = json!({
        "signal": signal.name(),
        "basis": basis.name(),
        "baseline": config.baseline.name(),
        "feeds": config.feeds.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "clusters": clusters,
    });
    serde_json::to_string_pretty(&page).unwrap_or_default()
}

fn cluster_view(
    proxy: &Proxy,
    cluster: &Cluster,
    carbon: &ClusterCarbon,
    table: &IntensityTable,
    (signal, basis): (&str, &str),
) -> Value {
    let snapshot = carbon.snapshot(table, &cluster.endpoints);
    let shares = carbon.shares();
    let facts = RequestFacts {
        shares: &shares,
        current: None,
        random: 0.5,
    };
    let why = eligibility(&snapshot, &facts, &carbon.policy);
    let next = aegis_carbon::decide(&snapshot, &facts, &carbon.policy);
    let fastest = aegis_carbon::fastest_healthy_latency(&snapshot.regions);
    let names = proxy.region_names();
    let regions: Vec<Value> = carbon
        .regions
        .iter()
        .enumerate()
        .map(|(local, &global)| {
            let state = &snapshot.regions[local];
            let value = table.regions.get(global);
            json!({
                "name": &*names[global],
                "zone": proxy.carbon_feeds().regions().get(global).map(|r| r.zone.as_str()),
                "intensity": value.map(|v| v.intensity),
                "source": value.map(|v| v.source),
                // One chain, one kind of value (validate rejects a mixed chain).
                "signal": signal,
                "basis": basis,
                "age_seconds": value.and_then(age),
                "freshness": freshness(state.freshness),
                "estimated": value.is_some_and(|v| v.estimated),
                "latency_ms": state.latency_ms,
                "latency_from": match (state.latency_ms, carbon.measured(local)) {
                    (None, _) => None,
                    (Some(_), true) => Some("probe"),
                    (Some(_), false) => Some("rtt_ms"),
                },
                "healthy": state.healthy,
                "share": shares.get(local),
                "eligible": why[local] == aegis_carbon::Eligibility::Eligible,
                "why": why[local].as_str(),
            })
        })
        .collect();
    json!({
        "policy": format!("{:?}", carbon.policy.policy).to_lowercase(),
        "latency_budget_ms": carbon.policy.latency_budget_ms,
        "max_share": carbon.policy.max_share,
        "fastest_healthy_latency_ms": fastest,
        "next": {
            "region": next.region.map(|local| &*names[carbon.regions[local]]),
            "reason": next.reason.as_str(),
        },
        "regions": regions,
    })
}

fn age(value: &RegionIntensity) -> Option<u64> {
    let measured = value.measured?;
    Some(
        SystemTime::now()
            .duration_since(measured)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
    )
}

fn freshness(freshness: Freshness) -> &'static str {
    match freshness {
        Freshness::Fresh => "fresh",
        Freshness::Stale => "stale",
        _ => "missing",
    }
}
