//! The forward path shared by every HTTP version: check, route, pick an endpoint, forward, record.
//!
//! ```text
//! request ─▶ check framing ─▶ route ─▶ admit ─▶ pick endpoint ─▶ rewrite headers ─▶ send ─▶ response
//!                 │              │        │      (carbon region,                     │
//!                 └── 400 ───────┴─ 404   └ 503  health, balancing)  ◀── retry ──────┤ connect failed, or
//!                                           shed                     (other endpoint, │ idempotent + reset
//!                                                                     within budget)  └─ 502 / 504
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};

use super::error::{ClientBodyError, ProxyError, RetrySafety};
use super::interim::Interim;
use super::path::PathRules;
use super::record::{CarbonRecord, Recorded, RequestRecord};
use super::{headers, host, path, replay};
use crate::carbon_feed::CarbonFeeds;
use crate::config::{Config, UpstreamProtocol};
use crate::dial::{UpstreamBody, UpstreamTlsGroup};
use crate::metrics::{ClusterLabels, EndpointLabels, Metrics, RetryLabels, UpstreamErrorLabels};
use crate::route::RouteTable;
use crate::upstream::h1 as upstream_h1;
use crate::upstream::{Choice, Cluster, InFlight};
use crate::{Body, BoxError};
use aegis_carbon::energy::EnergyModel;
use http::header::HeaderName;
use rand::Rng;

/// Routes and clusters: everything the forward path reads, built once from a [`Config`].
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    route_names: Vec<Arc<str>>,
    clusters: Vec<Arc<Cluster>>,
    metrics: Arc<Metrics>,
    access_log: bool,
    access_log_query: crate::config::QueryLog,
    carbon: Arc<CarbonFeeds>,
    region_names: Vec<Arc<str>>,
    region_header: Option<HeaderName>,
    energy: EnergyModel,
    probe: ProbeSettings,
}

/// How often and how patiently regions are probed for latency.
#[derive(Debug, Clone, Copy)]
struct ProbeSettings {
    interval: std::time::Duration,
    timeout: std::time::Duration,
}

impl Proxy {
    /// Builds routes, upstream pools and carbon feeds. Needs a tokio runtime (pools spawn
    /// tasks lazily).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let carbon = Arc::new(CarbonFeeds::new(
            config.carbon.clone(),
            config.regions.clone(),
            metrics.clone(),
        ));
        Self::with_feeds(config, metrics, carbon)
    }

    /// Like [`Proxy::new`], but reads intensities from existing `carbon` feeds (a reload that
    /// leaves `[carbon]` and `[regions]` unchanged keeps them).
    pub fn with_feeds(config: &Config, metrics: Arc<Metrics>, carbon: Arc<CarbonFeeds>) -> Self {
        let clusters: Vec<Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|c| Arc::new(Cluster::new(c, &config.regions, config.carbon.baseline)))
            .collect();
        Self {
            route_names: config
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            routes: RouteTable::new(config.routes.clone()),
            clusters,
            carbon,
            metrics,
            access_log: config.access_log,
            access_log_query: config.access_log_query,
            region_names: config
                .regions
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            region_header: config.carbon.region_header.clone(),
            energy: config.carbon.energy,
            probe: ProbeSettings {
                interval: config.carbon.probe_interval,
                timeout: config.carbon.probe_timeout,
            },
        }
    }

    /// The carbon feeds whose table the forward path reads.
    pub fn carbon_feeds(&self) -> &Arc<CarbonFeeds> {
        &self.carbon
    }

    /// The name of every configured region, indexed like [`Config::regions`].
    pub fn region_names(&self) -> &[Arc<str>] {
        &self.region_names
    }

    /// The upstream clusters, in configuration order.
    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    /// Starts the active health checks of every cluster that has them, and the latency probes
    /// of every carbon-aware cluster. They stop by themselves once this proxy (and so its
    /// clusters) is dropped.
    pub fn start_health_checks(&self) {
        for cluster in &self.clusters {
            crate::upstream::checker::spawn(cluster, &self.metrics);
            crate::upstream::latency::spawn(
                cluster,
                self.probe.interval,
                self.probe.timeout,
                &self.metrics,
            );
        }
    }

    /// Probes the latency of every region of every carbon-aware cluster once, now (at start
    /// and reload, so the first request already has estimates, and from tests).
    pub async fn probe_latency(&self) {
        let rounds = self.clusters.iter().map(|cluster| {
            crate::upstream::latency::probe_round(cluster, self.probe.timeout, &self.metrics)
        });
        futures_util::future::join_all(rounds).await;
    }

    /// The metrics this proxy records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The name of route `index` (shared with metric labels).
    pub fn route_name(&self, index: usize) -> Arc<str> {
        self.route_names[index].clone()
    }

    /// Whether requests are written to the access log.
    pub fn access_log(&self) -> bool {
        self.access_log
    }

    /// What the access log keeps of query strings.
    pub fn access_log_query(&self) -> crate::config::QueryLog {
        self.access_log_query
    }

    /// The response header that names the region served from, if configured.
    pub fn region_header(&self) -> Option<&HeaderName> {
        self.region_header.as_ref()
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
    /// The listener's rules, shared by all its connections (one pointer in each
    /// connection's task, which an idle connection keeps for its whole life).
    pub rules: Arc<RequestRules>,
    /// Requests of this connection admitted to clusters and not finished, on protocols that
    /// multiplex (HTTP/2, HTTP/3): one connection may hold only a share of a cluster.
    pub admitted: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// What a listener applies to every request, shared by its connections.
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Largest request body the listener accepts.
    pub max_request_body_bytes: Option<u64>,
    /// `alt-svc` advertisement added to responses (HTTP/3 on the same port).
    pub alt_svc: Option<HeaderValue>,
    /// How the listener normalises request paths.
    pub paths: PathRules,
    /// Proxies in front whose forwarding headers are kept.
    pub trusted_proxy_hops: u8,
    /// A response body that makes no progress for this long is cut off.
    pub stream_idle_timeout: std::time::Duration,
}

impl RequestRules {
    /// The rules of `config`, advertising `alt_svc` on responses.
    pub fn new(config: &crate::config::ListenerConfig, alt_svc: Option<HeaderValue>) -> Self {
        Self {
            max_request_body_bytes: config.max_request_body_bytes,
            alt_svc,
            paths: config.paths,
            trusted_proxy_hops: config.trusted_proxy_hops,
            stream_idle_timeout: config.stream_idle_timeout,
        }
    }
}

/// Forwards one request and returns the response to send, never an error: failures become
/// synthetic responses. Every HTTP version's server calls this.
pub async fn forward<B>(
    proxy: &Proxy,
    conn: &ConnInfo,
    request: Request<B>,
    interim: Option<Interim>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let version = request.version();
    // Host and path are copied only for the access log.
    let path = match proxy.access_log {
        true => request.uri().path().to_owned(),
        false => String::new(),
    };
    let mut record = new_record(proxy, conn, version, request.method().clone(), path);
    if proxy.access_log {
        let header = |name: &str| request.headers().get(name).map(HeaderValue::as_bytes);
        super::record::note_client_fields(
            &mut record,
            request.uri().query(),
            header("user-agent"),
            header("x-request-id"),
            proxy.access_log_query,
        );
    }
    let mut response = match send(proxy, conn, request, interim.as_ref(), &mut record).await {
        Ok(response) => response,
        Err(error) => {
            note_failure(&mut record, &error);
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
    if let Some(alt_svc) = &conn.rules.alt_svc {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    response.map(|body| Recorded::new(body, record).boxed_unsync())
}

/// A fresh record for a request that just arrived.
pub(super) fn new_record(
    proxy: &Proxy,
    conn: &ConnInfo,
    version: Version,
    method: Method,
    path: String,
) -> RequestRecord {
    RequestRecord {
        metrics: proxy.metrics.clone(),
        access_log: proxy.access_log,
        start: Instant::now(),
        listener: conn.listener.clone(),
        client: conn.peer,
        tls_group: conn.tls_group,
        protocol: protocol_name(version),
        method,
        host: String::new(),
        path,
        query: String::new(),
        user_agent: String::new(),
        request_id: String::new(),
        route: None,
        cluster: None,
        upstream_tls_group: None,
        upstream_ms: None,
        status: 0,
        error: None,
        in_flight: None,
        admitted: None,
        body_limit: conn.rules.max_request_body_bytes,
        received: Default::default(),
        carbon: None,
        written: false,
    }
}

/// Logs a request the proxy answers itself and notes why in its record.
pub(super) fn note_failure(record: &mut RequestRecord, error: &ProxyError) {
    if error.is_upstream() {
        tracing::warn!(cluster = record.cluster.as_deref(), %error, "upstream failure");
    } else {
        tracing::debug!(%error, "request rejected");
    }
    record.error = Some(error.reason());
}

/// The failure with what it most likely means for the cluster's protocol, if anything.
fn with_hint(error: ProxyError, protocol: UpstreamProtocol) -> ProxyError {
    match error {
        ProxyError::Upstream(e) => match super::error::hint_for(e.as_ref(), protocol) {
            Some(hint) => ProxyError::Upstream(Box::new(super::error::Hinted { error: e, hint })),
            None => ProxyError::Upstream(e),
        },
        other => other,
    }
}

/// Counts a request shed because its cluster is at `max_pending_requests`.
pub(super) fn note_shed(proxy: &Proxy, cluster: &Cluster) {
    let labels = ClusterLabels {
        cluster: cluster.name.clone(),
    };
    proxy.metrics.shed.get_or_create(&labels).inc();
}

/// Counts a failure on the upstream side of a request.
pub(super) fn note_upstream_error(proxy: &Proxy, cluster: &Cluster, error: &ProxyError) {
    if error.is_upstream() {
        debug_assert!(ProxyError::UPSTREAM_REASONS.contains(&error.reason()));
        let labels = UpstreamErrorLabels {
            cluster: cluster.name.clone(),
            reason: error.reason(),
        };
        proxy.metrics.upstream_errors.get_or_create(&labels).inc();
    }
}

async fn send<B>(
    proxy: &Proxy,
    conn: &ConnInfo,
    request: Request<B>,
    interim: Option<&Interim>,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let client_version = request.version();
    let (mut parts, body) = request.into_parts();
    check_framing(&parts)?;
    let authority = request_authority(&parts)?;
    normalize_target(&mut parts.uri, conn.rules.paths)?;
    let host = authority.as_ref().map_or("", Authority::as_str);
    if record.access_log {
        record.host = host.to_owned();
    }
    let (route_index, route) = proxy
        .routes
        .find(host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    record.route = Some(proxy.route_names[route_index].clone());
    record.cluster = Some(proxy.clusters[route.cluster].name.clone());
    let cluster = &proxy.clusters[route.cluster];
    let Some(admitted) = cluster.try_admit(conn.admitted.as_ref()) else {
        note_shed(proxy, cluster);
        return Err(ProxyError::Overloaded);
    };
    record.admitted = Some(admitted);
    let count = (!body.is_end_stream()).then(|| record.count_received());
    let body = limit_body(
        body,
        &parts.headers,
        conn.rules.max_request_body_bytes,
        count,
    )?;
    rewrite_request(&mut parts, conn, cluster, authority.as_ref())?;

    let response = if cluster.retry.attempts == 0 {
        let index = choose_endpoint(proxy, cluster, record, &[]).ok_or(ProxyError::NoEndpoint)?;
        attempt(proxy, cluster, index, parts, body, interim, record).await
    } else {
        send_with_retries(proxy, cluster, parts, body, interim, record).await
    };
    let response = response.inspect_err(|e| note_upstream_error(proxy, cluster, e))?;
    record.upstream_tls_group = response.extensions().get::<UpstreamTlsGroup>().map(|g| g.0);
    let (mut parts, body) = response.into_parts();
    response_head(&mut parts, client_version)
        .inspect_err(|e| note_upstream_error(proxy, cluster, e))?;
    Ok(Response::from_parts(parts, body))
}

/// Turns the upstream's response head into the client's, or refuses it (502): a status
/// outside 100..=599 (RFC 9110 §15), or a transfer coding other than `chunked` that an
/// HTTP/2 or HTTP/3 client cannot be sent (RFC 9113 §8.2.2). HTTP/1.1 clients get every
/// coding the upstream applied (`gzip, chunked` stays so; hyper redoes the chunking).
fn response_head(
    parts: &mut http::response::Parts,
    client_version: Version,
) -> Result<(), ProxyError> {
    if !super::is_valid_status(parts.status.as_u16()) {
        return Err(ProxyError::Upstream("status outside 100..=599".into()));
    }
    let codings = headers::transfer_codings(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(codings) = codings {
        if client_version >= Version::HTTP_2 {
            return Err(ProxyError::Upstream(
                "a transfer coding HTTP/2 and HTTP/3 cannot carry".into(),
            ));
        }
        parts.headers.insert(header::TRANSFER_ENCODING, codings);
    }
    parts.version = Version::default();
    Ok(())
}

/// Sends with up to `retry.attempts` retries, each on an endpoint not tried yet, within the
/// cluster's retry budget. A retry happens only when the request provably did not reach the
/// upstream application: the connection failed, or an idempotent request was reset before any
/// response byte and its body was never read.
async fn send_with_retries(
    proxy: &Proxy,
    cluster: &Cluster,
    parts: http::request::Parts,
    body: UpstreamBody,
    interim: Option<&Interim>,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ProxyError> {
    let idempotent = replay::is_idempotent(&parts.method);
    let (mut body, reclaim) = replay::replayable(body);
    let mut tried = [usize::MAX; MAX_ATTEMPTS];
    let mut attempts = 0;
    let mut _retry_permit = None;
    loop {
        let index = choose_endpoint(proxy, cluster, record, &tried[..attempts])
            .ok_or(ProxyError::NoEndpoint)?;
        tried[attempts] = index;
        attempts += 1;
        let head = clone_head(&parts);
        let attempt = attempt(
            proxy,
            cluster,
            index,
            head,
            body.boxed_unsync(),
            interim,
            record,
        );
        let result = attempt.await;
        let Err(error) = result else {
            return result;
        };
        let Some(reason) = retry_reason(&error, idempotent) else {
            return Err(error);
        };
        if !may_retry(cluster, attempts) {
            return Err(error);
        }
        let Some(next_body) = reclaim.take() else {
            return Err(error);
        };
        _retry_permit = Some(retry_permit(proxy, cluster).ok_or(error)?);
        note_retry(proxy, cluster, reason);
        (body, _) = replay::replayable(next_body);
    }
}

/// Why a failed attempt may be retried (`connect`, `reset`), if it may: the connection failed,
/// or an idempotent request was reset before any response byte.
/// Every reason [`retry_reason`] gives.
pub const RETRY_REASONS: &[&str] = &["connect", "reset"];

pub(super) fn retry_reason(error: &ProxyError, idempotent: bool) -> Option<&'static str> {
    match error.retry_safety() {
        RetrySafety::Unsent => Some("connect"),
        RetrySafety::IfIdempotent if idempotent => Some("reset"),
        _ => None,
    }
}

/// Whether the retry policy allows another attempt after `attempts`, with an endpoint left.
pub(super) fn may_retry(cluster: &Cluster, attempts: usize) -> bool {
    attempts <= cluster.retry.attempts as usize
        && attempts < MAX_ATTEMPTS
        && attempts < cluster.endpoints.len()
}

/// A place in the cluster's retry budget; when it is spent, counts the refusal.
pub(super) fn retry_permit(proxy: &Proxy, cluster: &Cluster) -> Option<crate::limit::Slot> {
    let permit = cluster.try_retry();
    if permit.is_none() {
        let labels = ClusterLabels {
            cluster: cluster.name.clone(),
        };
        proxy
            .metrics
            .retries_over_budget
            .get_or_create(&labels)
            .inc();
    }
    permit
}

/// Counts a retry.
pub(super) fn note_retry(proxy: &Proxy, cluster: &Cluster, reason: &'static str) {
    debug_assert!(RETRY_REASONS.contains(&reason));
    let labels = RetryLabels {
        cluster: cluster.name.clone(),
        reason,
    };
    proxy.metrics.retries.get_or_create(&labels).inc();
    tracing::debug!(cluster = %cluster.name, reason, "retrying on another endpoint");
}

/// Tries, per request, the first endpoint and at most this many minus one more.
pub(super) const MAX_ATTEMPTS: usize = 6;

/// A copy of the request head for another attempt (extensions are not carried over).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// One exchange with endpoint `index`: send, wait for the response head, record the outcome
/// for outlier ejection and latency. A request without a body to an HTTP/1.1 cluster is sent from
/// this task over the endpoint's idle pool (`upstream::h1`); any other goes through the
/// endpoint's hyper-util client.
async fn attempt(
    proxy: &Proxy,
    cluster: &Cluster,
    index: usize,
    parts: http::request::Parts,
    body: UpstreamBody,
    interim: Option<&Interim>,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ProxyError> {
    let endpoint = &cluster.endpoints[index];
    let in_flight = InFlight::new(endpoint.clone());
    let started = Instant::now();
    let body_limit = record.body_limit;
    let exchange = async {
        if upstream_h1::takes(cluster, &parts, &body) {
            return upstream_h1::send(endpoint, &parts, interim).await;
        }
        let mut request = Request::from_parts(parts, body);
        if let Some(interim) = interim.cloned() {
            hyper::ext::on_informational(&mut request, move |response| {
                interim.send(response.status(), response.headers());
            });
        }
        match endpoint.client.request(request).await {
            Ok(response) => Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync())),
            Err(error) => Err(with_hint(
                ProxyError::from_client(error, body_limit),
                cluster.protocol,
            )),
        }
    };
    let sent = tokio::time::timeout(cluster.request_timeout, exchange).await;
    let elapsed = started.elapsed();
    record.in_flight = Some(in_flight);
    let failed = match &sent {
        Ok(Ok(response)) => response.status().is_server_error(),
        // The client's own failures say nothing about the endpoint.
        Ok(Err(e)) => e.counts_against_endpoint(),
        Err(_) => true,
    };
    note_outcome(proxy, cluster, index, failed);
    let response = match sent {
        Err(_) => return Err(ProxyError::UpstreamTimeout(cluster.request_timeout)),
        Ok(result) => result?,
    };
    note_latency(proxy, cluster, record, elapsed);
    Ok(response)
}

/// Feeds one attempt's outcome to outlier ejection. (Region latency comes from probes, not
/// from traffic: a response's time includes the application's, and a failure's says nothing.)
pub(super) fn note_outcome(proxy: &Proxy, cluster: &Cluster, index: usize, failed: bool) {
    if let Some(time) = cluster.record_outcome(index, failed) {
        let endpoint = &cluster.endpoints[index];
        let labels = EndpointLabels {
            cluster: cluster.name.clone(),
            endpoint: endpoint.label.clone(),
        };
        proxy.metrics.ejections.get_or_create(&labels).inc();
        tracing::warn!(cluster = %cluster.name, endpoint = %endpoint.label, ejected_for = ?time, "endpoint ejected after consecutive failures");
    }
}

/// Records how long the upstream took to send the response head.
pub(super) fn note_latency(
    proxy: &Proxy,
    cluster: &Cluster,
    record: &mut RequestRecord,
    elapsed: std::time::Duration,
) {
    proxy
        .metrics
        .upstream_duration
        .get_or_create(&ClusterLabels {
            cluster: cluster.name.clone(),
        })
        .observe(elapsed.as_secs_f64());
    record.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
}

/// Picks the endpoint, never one in `tried`: within the region the carbon policy chooses (or,
/// for a retry with nothing left there, anywhere in the cluster), by the cluster's load
/// balancing.
pub(super) fn choose_endpoint(
    proxy: &Proxy,
    cluster: &Cluster,
    record: &mut RequestRecord,
    tried: &[usize],
) -> Option<usize> {
    let mut rng = rand::rng();
    let Some(carbon) = &cluster.carbon else {
        let index = cluster.pick_index(None, tried, &mut rng)?;
        note_attempt(cluster, record, index, tried.len());
        return Some(index);
    };
    let table = proxy.carbon.current();
    let Choice {
        decision,
        baseline_intensity,
    } = carbon.decide(&table, &cluster.endpoints, rng.random());
    let among = decision
        .region
        .map(|local| carbon.endpoints[local].as_slice());
    let index = cluster
        .pick_index(among, tried, &mut rng)
        .or_else(|| cluster.pick_index(None, tried, &mut rng))?;
    let local = carbon.region_of(index);
    carbon.record_choice(local);
    if let Some(previous) = carbon.note_leader(local, decision.reason) {
        let name = |local: usize| &*proxy.region_names[carbon.regions[local]];
        tracing::info!(
            cluster = %cluster.name,
            from = previous.map(name),
            to = name(local),
            reason = decision.reason.as_str(),
            intensity = decision.intensity,
            "carbon routing moved to another region"
        );
    }
    let global = carbon.regions[local];
    record.carbon = Some(CarbonRecord {
        region: proxy.region_names[global].clone(),
        intensity: table.regions.get(global).map_or(0.0, |v| v.intensity),
        baseline_intensity,
        policy: policy_name(carbon.policy.policy),
        reason: decision.reason.as_str(),
        energy: proxy.energy,
    });
    note_attempt(cluster, record, index, tried.len());
    Some(index)
}

/// `RUST_LOG=debug`: the route, the carbon decision and the endpoint of each attempt, on every
/// protocol (the one place every path chooses an endpoint).
fn note_attempt(cluster: &Cluster, record: &RequestRecord, index: usize, tried: usize) {
    let carbon = record.carbon.as_ref();
    tracing::debug!(
        route = record.route.as_deref(),
        cluster = %cluster.name,
        endpoint = %cluster.endpoints[index].label,
        attempt = tried + 1,
        region = carbon.map(|c| &*c.region),
        reason = carbon.map(|c| c.reason),
        protocol = record.protocol,
        "upstream attempt"
    );
}

fn policy_name(policy: aegis_carbon::Policy) -> &'static str {
    match policy {
        aegis_carbon::Policy::Greenest => "greenest",
        aegis_carbon::Policy::Weighted => "weighted",
        aegis_carbon::Policy::Nearest => "nearest",
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

/// The authority the client addressed, validated: the URI's (HTTP/2 and HTTP/3 `:authority`,
/// HTTP/1.1 absolute-form) or else the Host header.
fn request_authority(parts: &http::request::Parts) -> Result<Option<Authority>, ProxyError> {
    let host_header = parts.headers.get(header::HOST);
    if let Some(authority) = parts.uri.authority() {
        host::validate(authority.as_str().as_bytes())
            .map_err(|e| ProxyError::BadRequest(e.message()))?;
        // RFC 9113 §8.3.1, RFC 9114 §4.3.1: a Host naming another entity is malformed. (An
        // HTTP/1.1 absolute-form target replaces Host instead, RFC 9112 §3.2.2.)
        let differs = host_header
            .is_some_and(|h| !host::same_authority(h.as_bytes(), authority.as_str().as_bytes()));
        if differs && parts.version >= Version::HTTP_2 {
            return Err(ProxyError::BadRequest(
                "host header differs from :authority",
            ));
        }
        return Ok(Some(authority.clone()));
    }
    match host_header {
        Some(host) => {
            host::validate(host.as_bytes()).map_err(|e| ProxyError::BadRequest(e.message()))?;
            Authority::try_from(host.as_bytes())
                .map(Some)
                .map_err(|_| ProxyError::BadRequest("invalid host header"))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing host header"))
        }
        None => Ok(None),
    }
}

/// Replaces the URI's path with its normal form (RFC 3986 §6), or refuses it, as the
/// listener's [`PathRules`] say. The query is left as it is.
fn normalize_target(uri: &mut Uri, rules: PathRules) -> Result<(), ProxyError> {
    let normal = match path::normalize(uri.path(), rules) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(ProxyError::BadRequest(error.message())),
    };
    let target = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(target)
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?,
    );
    *uri = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    Ok(())
}

/// Enforces the listener's body limit: early from `content-length`, otherwise while streaming.
fn limit_body<B>(
    body: B,
    headers: &http::HeaderMap,
    limit: Option<u64>,
    count: Option<Arc<AtomicU64>>,
) -> Result<UpstreamBody, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Inside the length limit, so that a body over it stays a 413, not a client failure.
    let body = body
        .map_err(|e| BoxError::from(ClientBodyError(e.into())))
        .map_frame(move |frame| {
            if let (Some(count), Some(data)) = (&count, frame.data_ref()) {
                count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        });
    let Some(limit) = limit else {
        return Ok(body.boxed_unsync());
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Limited::new(body, limit).boxed_unsync())
}

/// Turns the client's request head into the upstream request head.
fn rewrite_request(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    cluster: &Cluster,
    authority: Option<&Authority>,
) -> Result<(), ProxyError> {
    headers::strip_hop_by_hop(&mut parts.headers);
    // hyper answered `100-continue` to the client when the body was first polled.
    parts.headers.remove(header::EXPECT);
    headers::add_forwarded(
        &mut parts.headers,
        conn.peer.ip(),
        conn.secure,
        conn.rules.trusted_proxy_hops,
    );
    headers::add_via(&mut parts.headers, parts.version);
    let authority = match authority {
        Some(a) => a.clone(),
        // HTTP/1.0 without Host: name the cluster's first endpoint, as a client would have.
        None => Authority::try_from(cluster.endpoints[0].label.as_str())
            .map_err(|_| ProxyError::BadRequest("no host"))?,
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
            // The authority that was routed on is the one the origin sees (RFC 9112 §3.2.2).
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
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
