//! Active health checks: each endpoint of a cluster with a `health_check` gets a GET on its
//! configured path every interval, over the client traffic uses (HTTP/1.1: `super::h1` and
//! the endpoint's idle pool; HTTP/2: the endpoint's hyper client), so a passing check has
//! exercised that code, and TLS upstreams are checked over the same PQ TLS as traffic.
//! Results feed [`super::health::EndpointHealth`].
//!
//! Checkers hold only a weak reference to their cluster: when a reload replaces the cluster and
//! its last request finishes, they stop at their next tick.

use std::sync::{Arc, Weak};

use bytes::{Buf, Bytes};
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use tokio::time::MissedTickBehavior;

use super::Cluster;
use crate::config::{HealthCheckConfig, UpstreamProtocol};
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
    if cluster.protocol == UpstreamProtocol::Http1 {
        request = request.header(header::HOST, host);
    }
    let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
    let request = request
        .body(body)
        .map_err(|e| format!("bad check request: {e}"))?;
    // HTTP/1.1: the client and idle pool that traffic uses (a passing check has used them);
    // HTTP/2: the endpoint's hyper client, which traffic shares too.
    let status = if cluster.protocol == UpstreamProtocol::Http1 {
        let (parts, _) = request.into_parts();
        http1_check(endpoint, parts).await?
    } else {
        let response = endpoint
            .client
            .request(request)
            .await
            .map_err(|e| failure(&e, cluster.protocol))?;
        let status = response.status();
        read_bounded(response.into_body()).await;
        status
    };
    Ok(status)
}

/// Why a check's request failed, with the configuration hint when there is one.
fn failure(error: &(dyn std::error::Error + 'static), protocol: UpstreamProtocol) -> String {
    let hint = crate::http::error::hint_for(error, protocol).unwrap_or("");
    format!(
        "request failed: {}{hint}",
        crate::http::error::describe(error)
    )
}

/// The HTTP/1.1 exchange of a check.
async fn http1_check(
    endpoint: &Arc<super::Endpoint>,
    parts: http::request::Parts,
) -> Result<StatusCode, String> {
    let empty = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
    let response = super::h1::send(endpoint, &parts, empty, None, None)
        .await
        .map_err(|e| failure(&e, UpstreamProtocol::Http1))?;
    let status = response.status();
    read_bounded(response.into_body()).await;
    Ok(status)
}

/// Reads and drops a check's response body, up to `MAX_CHECK_BODY`: a body read to its end
/// puts a keep-alive connection back in its pool. Frame by frame rather than through
/// `Limited`, with which rustc cannot prove the checker's task `Send` (a higher-ranked
/// lifetime check on the boxed body's error type fails).
async fn read_bounded<B: http_body::Body + Unpin>(mut body: B) {
    let mut read = 0;
    while read <= MAX_CHECK_BODY {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.remaining()),
            _ => break,
        }
    }
}
