//! `aegis_upstream_healthy` and `aegis_upstream_idle_connections`, computed at each scrape from
//! the clusters in force, so ejections that expire and clusters a reload removes are always
//! shown as they are.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Cluster;
use crate::config::UpstreamProtocol;
use crate::metrics::EndpointRegionLabels;

/// The clusters in force, read at each scrape.
pub type ClustersInForce = Box<dyn Fn() -> Vec<Arc<Cluster>> + Send + Sync>;

/// Registers both gauges, computed from what `clusters` returns at each scrape.
pub fn register(registry: &mut Registry, clusters: ClustersInForce) {
    registry
        .sub_registry_with_prefix("aegis")
        .register_collector(Box::new(UpstreamGauges { clusters }));
}

struct UpstreamGauges {
    clusters: ClustersInForce,
}

impl std::fmt::Debug for UpstreamGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamGauges")
    }
}

impl Collector for UpstreamGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let healthy: Family<EndpointRegionLabels, Gauge> = Family::default();
        let idle: Family<EndpointRegionLabels, Gauge> = Family::default();
        for cluster in (self.clusters)() {
            for endpoint in &cluster.endpoints {
                let labels = EndpointRegionLabels {
                    cluster: cluster.name.clone(),
                    endpoint: endpoint.label.clone(),
                    region: endpoint.region.as_deref().unwrap_or("").to_owned(),
                };
                let value = i64::from(endpoint.health.is_available());
                healthy.get_or_create(&labels).set(value);
                // HTTP/2 endpoints multiplex over hyper's client and keep no idle pool.
                if cluster.protocol == UpstreamProtocol::Http1 {
                    let held = i64::try_from(endpoint.idle.len()).unwrap_or(i64::MAX);
                    idle.get_or_create(&labels).set(held);
                }
            }
        }
        let metric = encoder.encode_descriptor(
            "upstream_healthy",
            "1 while an endpoint passes its health checks and is not ejected",
            None,
            healthy.metric_type(),
        )?;
        healthy.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "upstream_idle_connections",
            "Idle keep-alive connections held to an HTTP/1.1 endpoint, ready for the next request",
            None,
            idle.metric_type(),
        )?;
        idle.encode(metric)
    }
}
