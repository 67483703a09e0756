//! The forward path shared by every HTTP version: check, route, pick an endpoint, forward, record.
//!
//! ```text
//! request ─▶ check framing ─▶ route ─▶ pick endpoint ─▶ rewrite headers ─▶ send ─▶ response
//!                 │              │                                           │
//!                 └── 400 ───────┴── 404                          502 / 504 ─┘   (all recorded)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};

use super::error::ProxyError;
use super::headers;
use super::record::{CarbonRecord, Recorded, RequestRecord};
use crate::carbon_feed::CarbonFeeds;
use crate::config::{Config, UpstreamProtocol};
use crate::metrics::{ClusterLabels, Metrics, UpstreamErrorLabels};
use crate::route::RouteTable;
use crate::upstream::{Cluster, Endpoint, InFlight, UpstreamBody, UpstreamTlsGroup};
use crate::{Body, BoxError};
use aegis_carbon::energy::EnergyModel;
use http::header::HeaderName;
use rand::Rng;

/// Routes and clusters: everything the forward path reads, built once from a [`Config`].
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    route_names: Vec<Arc<str>>,
    clusters: Vec<Cluster>,
    cluster_names: Vec<Arc<str>>,
    metrics: Arc<Metrics>,
    access_log: bool,
    carbon: Arc<CarbonFeeds>,
    region_names: Vec<Arc<str>>,
    region_header: Option<HeaderName>,
    energy: EnergyModel,
}

impl Proxy {
    /// Builds routes and upstream pools. Needs a tokio runtime (pools spawn tasks lazily).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let clusters: Vec<Cluster> = config.clusters.iter().map(Cluster::new).collect();
        Self {
            route_names: config
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            routes: RouteTable::new(config.routes.clone()),
            cluster_names: clusters
                .iter()
                .map(|c| Arc::from(c.name.as_str()))
                .collect(),
            clusters,
            carbon: Arc::new(CarbonFeeds::new(
                config.carbon.clone(),
                config.regions.clone(),
                metrics.clone(),
            )),
            metrics,
            access_log: config.access_log,
            region_names: config
                .regions
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            region_header: config.carbon.region_header.clone(),
            energy: config.carbon.energy,
        }
    }

    /// The carbon feeds whose table the forward path reads.
    pub fn carbon_feeds(&self) -> &Arc<CarbonFeeds> {
        &self.carbon
    }

    /// The metrics this proxy records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// What the forward path needs to know about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// Whether the client connection is TLS.
    pub secure: bool,
    /// Key-exchange group of the client connection.
    pub tls_group: Option<&'static str>,
    /// Largest request body the listener accepts.
    pub max_request_body_bytes: Option<u64>,
    /// `alt-svc` advertisement added to responses (HTTP/3 on the same port).
    pub alt_svc: Option<HeaderValue>,
}

/// Forwards one request and returns the response to send, never an error: failures become
/// synthetic responses. Every HTTP version's server calls this.
pub async fn forward<B>(proxy: &Proxy, conn: &ConnInfo, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let version = request.version();
    let mut record = RequestRecord {
        metrics: proxy.metrics.clone(),
        access_log: proxy.access_log,
        start: Instant::now(),
        listener: conn.listener.clone(),
        client: conn.peer,
        tls_group: conn.tls_group,
        protocol: protocol_name(version),
        method: request.method().clone(),
        host: String::new(),
        path: request.uri().path().to_owned(),
        route: None,
        cluster: None,
        upstream_tls_group: None,
        upstream_ms: None,
        status: 0,
        error: None,
        in_flight: None,
        carbon: None,
    };
    let mut response = match send(proxy, conn, request, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            if error.is_upstream() {
                tracing::warn!(cluster = record.cluster.as_deref(), %error, "upstream failure");
            } else {
                tracing::debug!(%error, "request rejected");
            }
            record.error = Some(error.reason());
            let mut response = error.to_response();
            let status = error.status();
            let unread_body = status == http::StatusCode::PAYLOAD_TOO_LARGE;
            if (status == http::StatusCode::BAD_REQUEST || unread_body) && version < Version::HTTP_2
            {
                // After a framing error the byte stream cannot be trusted, and an unread body
                // would be taken for the next request: close instead of keeping alive.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    record.status = response.status().as_u16();
    headers::add_via(response.headers_mut(), version);
    if let (Some(header), Some(carbon)) = (&proxy.region_header, &record.carbon) {
        if let Ok(value) = HeaderValue::from_str(&carbon.region) {
            response.headers_mut().insert(header.clone(), value);
        }
    }
    if let Some(alt_svc) = &conn.alt_svc {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    response.map(|body| Recorded::new(body, record).boxed_unsync())
}

async fn send<B>(
    proxy: &Proxy,
    conn: &ConnInfo,
    request: Request<B>,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    check_framing(&parts)?;
    let authority = request_authority(&parts)?;
    record.host = authority
        .as_ref()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let (route_index, route) = proxy
        .routes
        .find(&record.host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    record.route = Some(proxy.route_names[route_index].clone());
    record.cluster = Some(proxy.cluster_names[route.cluster].clone());
    let cluster = &proxy.clusters[route.cluster];
    let body = limit_body(body, &parts.headers, conn.max_request_body_bytes)?;

    let (endpoint, region) = choose_endpoint(proxy, cluster, record);
    let in_flight = InFlight::new(endpoint.clone());
    rewrite_request(
        &mut parts,
        conn,
        cluster,
        authority.as_ref(),
        &endpoint.label,
    )?;

    let started = Instant::now();
    let sent = tokio::time::timeout(
        cluster.request_timeout,
        endpoint.client.request(Request::from_parts(parts, body)),
    )
    .await;
    let elapsed = started.elapsed();
    if let (Some(carbon), Some(local)) = (&cluster.carbon, region) {
        carbon.observe_latency(local, elapsed.as_secs_f64() * 1000.0);
    }
    record.in_flight = Some(in_flight);
    let connect_failed = matches!(&sent, Ok(Err(e)) if e.is_connect());
    if connect_failed && endpoint.health.record_connect_failure() {
        tracing::warn!(cluster = %cluster.name, endpoint = %endpoint.label, "endpoint ejected after consecutive connect failures");
    } else if matches!(&sent, Ok(Ok(_))) {
        endpoint.health.record_success();
    }
    let response = match sent {
        Err(_) => Err(ProxyError::UpstreamTimeout(cluster.request_timeout)),
        Ok(Err(e)) => Err(ProxyError::from_client(e, conn.max_request_body_bytes)),
        Ok(Ok(response)) => Ok(response),
    };
    let response = response.inspect_err(|e| {
        if e.is_upstream() {
            let labels = UpstreamErrorLabels {
                cluster: cluster.name.clone(),
                reason: e.reason(),
            };
            proxy.metrics.upstream_errors.get_or_create(&labels).inc();
        }
    })?;
    proxy
        .metrics
        .upstream_duration
        .get_or_create(&ClusterLabels {
            cluster: cluster.name.clone(),
        })
        .observe(elapsed.as_secs_f64());
    record.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
    record.upstream_tls_group = response.extensions().get::<UpstreamTlsGroup>().map(|g| g.0);

    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::default();
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed_unsync(),
    ))
}

/// Picks the endpoint: within the region the carbon policy chooses, by the cluster's load
/// balancing; returns it with its local region index when the cluster has regions.
fn choose_endpoint(
    proxy: &Proxy,
    cluster: &Cluster,
    record: &mut RequestRecord,
) -> (Arc<Endpoint>, Option<usize>) {
    let mut rng = rand::rng();
    let Some(carbon) = &cluster.carbon else {
        return (cluster.pick(&mut rng).clone(), None);
    };
    let table = proxy.carbon.current();
    let decision = carbon.decide(&table, &cluster.endpoints, rng.random());
    let among = decision
        .region
        .map(|local| carbon.endpoints[local].as_slice());
    let index = cluster.pick_index(among, &mut rng);
    let local = carbon.region_of(index);
    carbon.record_choice(local);
    let global = carbon.regions[local];
    record.carbon = Some(CarbonRecord {
        region: proxy.region_names[global].clone(),
        intensity: table.regions.get(global).map_or(0.0, |v| v.intensity),
        baseline_intensity: carbon.baseline_intensity(&table),
        policy: policy_name(carbon.policy.policy),
        reason: decision.reason.as_str(),
        energy: proxy.energy,
    });
    (cluster.endpoints[index].clone(), Some(local))
}

fn policy_name(policy: aegis_carbon::Policy) -> &'static str {
    match policy {
        aegis_carbon::Policy::Greenest => "greenest",
        aegis_carbon::Policy::Weighted => "weighted",
        _ => "off",
    }
}

/// Rejects requests whose framing or host is ambiguous (RFC 9112 §6.3, §3.2).
fn check_framing(parts: &http::request::Parts) -> Result<(), ProxyError> {
    let headers = &parts.headers;
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::BadRequest(
            "both content-length and transfer-encoding",
        ));
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|other| other != first) || first.to_str().map_or(true, |v| v.contains(',')) {
            return Err(ProxyError::BadRequest("conflicting content-length"));
        }
    }
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Err(ProxyError::BadRequest("more than one host header"));
    }
    Ok(())
}

/// The authority the client addressed: URI authority (HTTP/2, absolute-form) or the Host header.
fn request_authority(parts: &http::request::Parts) -> Result<Option<Authority>, ProxyError> {
    if let Some(authority) = parts.uri.authority() {
        return Ok(Some(authority.clone()));
    }
    match parts.headers.get(header::HOST) {
        Some(host) => Authority::try_from(host.as_bytes())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("invalid host header")),
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing host header"))
        }
        None => Ok(None),
    }
}

/// Enforces the listener's body limit: early from `content-length`, otherwise while streaming.
fn limit_body<B>(
    body: B,
    headers: &http::HeaderMap,
    limit: Option<u64>,
) -> Result<UpstreamBody, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Some(limit) = limit else {
        return Ok(body.map_err(Into::into).boxed_unsync());
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Limited::new(body.map_err(Into::into), limit).boxed_unsync())
}

/// Turns the client's request head into the upstream request head.
fn rewrite_request(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    cluster: &Cluster,
    authority: Option<&Authority>,
    endpoint: &str,
) -> Result<(), ProxyError> {
    headers::strip_hop_by_hop(&mut parts.headers);
    // hyper answered `100-continue` to the client when the body was first polled.
    parts.headers.remove(header::EXPECT);
    headers::add_forwarded(&mut parts.headers, conn.peer.ip(), conn.secure);
    headers::add_via(&mut parts.headers, parts.version);
    let authority = match authority {
        Some(a) => a.clone(),
        None => Authority::try_from(endpoint).map_err(|_| ProxyError::BadRequest("no host"))?,
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // The connector dials the endpoint; the URI carries what the client asked for.
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    match cluster.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            if !parts.headers.contains_key(header::HOST) {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    parts.headers.insert(header::HOST, host);
                }
            }
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
    Ok(())
}

/// The label for a client HTTP version.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "http/0.9",
        Version::HTTP_10 => "http/1.0",
        Version::HTTP_2 => "h2",
        Version::HTTP_3 => "h3",
        _ => "http/1.1",
    }
}
