//! Active health checks: each endpoint of a cluster with a `health_check` gets a GET on its
//! configured path every interval, over the endpoint's own client (so TLS upstreams are checked
//! over the same PQ TLS as traffic). Results feed [`super::health::EndpointHealth`].
//!
//! Checkers hold only a weak reference to their cluster: when a reload replaces the cluster and
//! its last request finishes, they stop at their next tick.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::time::MissedTickBehavior;

use super::Cluster;
use crate::config::HealthCheckConfig;
use crate::metrics::{HealthCheckLabels, Metrics};

/// Bytes of a check response read (and then discarded) so the connection can be reused.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Starts one checker task per endpoint when the cluster has active checks.
pub fn spawn(cluster: &Arc<Cluster>, metrics: &Arc<Metrics>) {
    if cluster.health_check.is_none() {
        return;
    }
    for index in 0..cluster.endpoints.len() {
        tokio::spawn(check_endpoint(
            Arc::downgrade(cluster),
            index,
            metrics.clone(),
        ));
    }
}

async fn check_endpoint(cluster: Weak<Cluster>, index: usize, metrics: Arc<Metrics>) {
    let Some(interval) = cluster
        .upgrade()
        .and_then(|c| c.health_check.as_ref().map(|h| h.interval))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(check) = &cluster.health_check else {
            return;
        };
        let endpoint = &cluster.endpoints[index];
        let result = probe(&cluster, index, check).await;
        let passed = result.is_ok();
        let labels = HealthCheckLabels {
            cluster: cluster.name.clone(),
            result: if passed { "pass" } else { "fail" },
        };
        metrics.health_checks.get_or_create(&labels).inc();
        match endpoint.health.record_check(passed, check) {
            Some(true) => {
                tracing::info!(cluster = %cluster.name, endpoint = %endpoint.label, "endpoint healthy again")
            }
            Some(false) => tracing::warn!(
                cluster = %cluster.name,
                endpoint = %endpoint.label,
                reason = result.err().unwrap_or_default(),
                "endpoint failed its health checks"
            ),
            None => {}
        }
    }
}

/// One check: `Err` says why it failed.
async fn probe(cluster: &Cluster, index: usize, check: &HealthCheckConfig) -> Result<(), String> {
    let host = check.host.as_deref();
    let status = tokio::time::timeout(
        check.timeout,
        exchange(cluster, index, Method::GET, &check.path, host),
    )
    .await
    .map_err(|_| format!("no response within {:?}", check.timeout))??;
    if check.expected_status.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

/// One body-less request to endpoint `index` over its own pooled client, as health checks and
/// latency probes send it: the status once the response head arrives, with the body read
/// (bounded) and dropped in the background so a keep-alive connection goes back to the pool.
pub(super) async fn exchange(
    cluster: &Cluster,
    index: usize,
    method: Method,
    path: &str,
    host: Option<&str>,
) -> Result<StatusCode, String> {
    let endpoint = &cluster.endpoints[index];
    let host = host.unwrap_or(&endpoint.label);
    let uri = Uri::builder()
        .scheme("http")
        .authority(host)
        .path_and_query(path)
        .build()
        .map_err(|e| format!("bad check request: {e}"))?;
    let mut request = Request::builder().method(method).uri(uri).header(
        header::USER_AGENT,
        HeaderValue::from_static("aegis-health-check"),
    );
    if cluster.protocol == crate::config::UpstreamProtocol::Http1 {
        request = request.header(header::HOST, host);
    }
    let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
    let request = request
        .body(body)
        .map_err(|e| format!("bad check request: {e}"))?;
    let response = endpoint.client.request(request).await.map_err(|e| {
        let hint = crate::http::error::hint_for(&e, cluster.protocol).unwrap_or("");
        format!("request failed: {}{hint}", crate::http::error::describe(&e))
    })?;
    let status = response.status();
    // Read the body so a keep-alive connection goes back to the pool.
    let _ = Limited::new(response.into_body(), MAX_CHECK_BODY)
        .collect()
        .await;
    Ok(status)
}
