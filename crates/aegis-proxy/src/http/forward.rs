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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};

use super::error::{ClientBodyError, ProxyError};
use super::interim::Interim;
use super::path::PathRules;
use super::proxy::{ConnInfo, Proxy};
use super::record::{Recorded, RequestRecord};
use super::{driver, headers, host, path, replay};
use crate::config::UpstreamProtocol;
use crate::dial::{UpstreamBody, UpstreamTlsGroup};
use crate::upstream::h1 as upstream_h1;
use crate::upstream::{Cluster, Endpoint};
use crate::{Body, BoxError};

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
    let path = match proxy.access_log() {
        true => request.uri().path().to_owned(),
        false => String::new(),
    };
    let mut record = new_record(proxy, conn, version, request.method().clone(), path);
    if proxy.access_log() {
        let header = |name: &str| request.headers().get(name).map(HeaderValue::as_bytes);
        super::record::note_client_fields(
            &mut record,
            request.uri().query(),
            header("user-agent"),
            header("x-request-id"),
            proxy.access_log_query(),
        );
    }
    let mut response = match send(proxy, conn, request, interim.as_ref(), &mut record).await {
        Ok(response) => response,
        Err(error) => {
            driver::note_failure(&mut record, &error);
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
    if let (Some(header), Some(carbon)) = (proxy.region_header(), &record.carbon) {
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
        metrics: proxy.metrics().clone(),
        access_log: proxy.access_log(),
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
        .routes()
        .find(host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    record.route = Some(proxy.route_name(route_index));
    let cluster = &proxy.clusters()[route.cluster];
    record.cluster = Some(cluster.name.clone());
    record.admitted = Some(driver::admit(proxy, cluster, conn.admitted.as_ref())?);
    // A request that came without a body (a GET, most often) gets one that costs nothing to
    // poll or to send again.
    let body = match body.is_end_stream() {
        true => None,
        false => {
            let count = Some(record.count_received());
            let limit = conn.rules.max_request_body_bytes;
            Some(limit_body(body, &parts.headers, limit, count)?)
        }
    };
    rewrite_request(&mut parts, conn, cluster, authority.as_ref())?;

    let method = parts.method.clone();
    let mut upstream = HyperUpstream::new(cluster, parts, body, interim);
    let response = driver::send(proxy, cluster, record, &method, &mut upstream).await?;
    record.upstream_tls_group = response.extensions().get::<UpstreamTlsGroup>().map(|g| g.0);
    let (mut parts, body) = response.into_parts();
    response_head(&mut parts, client_version)
        .inspect_err(|e| driver::note_upstream_error(proxy, cluster, e))?;
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

/// The upstream adapter of requests that arrive as `http::Request`: a request to an HTTP/1.1
/// cluster goes from this task over the endpoint's idle pool (`upstream::h1`, which writes the
/// head from a reference), one to an HTTP/2 cluster through the endpoint's hyper-util client.
/// With retries on, a body is [`replay::replayable`], so an attempt that never read it leaves
/// it for the next.
struct HyperUpstream<'a> {
    cluster: &'a Cluster,
    /// The head, kept for another attempt when the cluster retries.
    parts: Option<http::request::Parts>,
    /// The body for the next attempt.
    body: Option<UpstreamBody>,
    /// How another attempt gets the body.
    again: Again,
    interim: Option<&'a Interim>,
}

/// How a request's body can be sent again.
enum Again {
    /// It cannot: the cluster never retries.
    Never,
    /// There is none: every attempt sends an empty one.
    Empty,
    /// From what the failed attempt left unread.
    Reclaim(replay::Reclaim),
}

impl<'a> HyperUpstream<'a> {
    /// `body` is `None` for a request without one.
    fn new(
        cluster: &'a Cluster,
        parts: http::request::Parts,
        body: Option<UpstreamBody>,
        interim: Option<&'a Interim>,
    ) -> Self {
        let (body, again) = match (body, cluster.retry.attempts) {
            (None, 0) => (empty_body(), Again::Never),
            (None, _) => (empty_body(), Again::Empty),
            (Some(body), 0) => (body, Again::Never),
            (Some(body), _) => {
                let (body, reclaim) = replay::replayable(body);
                (body.boxed_unsync(), Again::Reclaim(reclaim))
            }
        };
        Self {
            cluster,
            parts: Some(parts),
            body: Some(body),
            again,
            interim,
        }
    }

    /// The head for an attempt through hyper's client, which takes it: a copy while another
    /// attempt may follow.
    fn owned_head(&mut self) -> Option<http::request::Parts> {
        match &self.again {
            Again::Never => self.parts.take(),
            _ => self.parts.as_ref().map(clone_head),
        }
    }
}

/// A body with nothing in it (a zero-sized type: boxing it allocates nothing).
fn empty_body() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl driver::Upstream for HyperUpstream<'_> {
    type Sent = Response<Body>;

    fn status(sent: &Response<Body>) -> http::StatusCode {
        sent.status()
    }

    async fn send(
        &mut self,
        endpoint: &Arc<Endpoint>,
        timeout: std::time::Duration,
        record: &RequestRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let cluster = self.cluster;
        let interim = self.interim;
        let body_limit = record.body_limit;
        let h1 = self
            .parts
            .as_ref()
            .is_some_and(|p| upstream_h1::takes(cluster, p));
        let head = match h1 {
            true => None,
            false => self.owned_head(),
        };
        let (Some(body), Some(borrowed)) = (self.body.take(), self.parts.as_ref()) else {
            return Err(ProxyError::NoEndpoint); // not reached: `can_resend` said no
        };
        let exchange = async {
            let Some(parts) = head else {
                return upstream_h1::send(endpoint, borrowed, body, interim, body_limit).await;
            };
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
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ProxyError::UpstreamTimeout(timeout)))
    }

    fn can_resend(&mut self) -> bool {
        let next = match &self.again {
            Again::Never => return false,
            Again::Empty => {
                self.body = Some(empty_body());
                return true;
            }
            Again::Reclaim(reclaim) => reclaim.take(),
        };
        match next {
            Some(next) => {
                let (body, reclaim) = replay::replayable(next);
                self.body = Some(body.boxed_unsync());
                self.again = Again::Reclaim(reclaim);
                true
            }
            None => false,
        }
    }
}

/// A copy of the request head for another attempt (extensions are not carried over).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
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
        &conn.peer_value,
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
    // The connector dials the endpoint; the URI carries what the client asked for. (Requests
    // `upstream::h1` takes need only its path: it writes the origin form and `Host`.)
    if !upstream_h1::takes(cluster, parts) {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    match cluster.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            // The authority that was routed on is the one the origin sees (RFC 9112 §3.2.2).
            let host = parts.headers.get(header::HOST);
            if host.is_none_or(|h| h.as_bytes() != authority.as_str().as_bytes()) {
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
