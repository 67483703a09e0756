//! Every way a proxied request can fail, and the one place that turns a failure into a response.
//!
//! Each failure knows which side it came from ([`Side`]: a client's mistakes are 4xx and never
//! count against an endpoint; upstream failures are 502/504) and whether the request may be
//! sent again ([`RetrySafety`]); [`ProxyError::answer`] is what every protocol sends back.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::dial::ConnectError;
use crate::{Body, BoxError};

/// Why a request was answered by the proxy itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The request is malformed or ambiguous; it is never forwarded.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No route matches the host and path.
    #[error("no route matches")]
    NoRoute,
    /// The body is larger than the listener allows.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// No connection to the endpoint could be opened.
    #[error("upstream connect failed: {}", describe(.0.as_ref()))]
    UpstreamConnect(#[source] BoxError),
    /// The endpoint did not answer within the request timeout.
    #[error("upstream sent no response within {0:?}")]
    UpstreamTimeout(Duration),
    /// The endpoint closed or reset the exchange.
    #[error("upstream request failed: {}", describe(.0.as_ref()))]
    Upstream(#[source] BoxError),
    /// The cluster already has `max_pending_requests` in flight: shed, to be retried later.
    #[error("cluster overloaded")]
    Overloaded,
    /// No endpoint is left to try.
    #[error("no upstream endpoint available")]
    NoEndpoint,
    /// The client's request body failed while it was being sent (the client reset the stream,
    /// closed the connection, or broke the body's framing): the client's fault, so it never
    /// counts against the endpoint, and nobody reads the answer.
    #[error("client request body failed: {0}")]
    ClientBody(#[source] BoxError),
}

/// Which side of the proxy a failure came from (pingora's `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Side {
    /// The client: a malformed or unroutable request, a body too large or abandoned.
    Client,
    /// The endpoint: it could not be reached, reset the exchange or did not answer in time.
    Upstream,
    /// The proxy as configured: the cluster is full, or no endpoint is left.
    Proxy,
}

/// Whether a failed attempt may be sent to another endpoint (RFC 9110 §9.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetrySafety {
    /// The request never reached an endpoint (the connection failed): any request may go again.
    Unsent,
    /// It may have reached the application before the reset: only an idempotent request.
    IfIdempotent,
    /// Not again.
    Never,
}

/// What the proxy answers for a failure, the same on every protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// `Retry-After` (RFC 9110 §10.2.3), when the client should come back later.
    pub retry_after: Option<&'static str>,
    /// A one-line `text/plain` body.
    pub body: String,
}

/// A failure of the client's request body, as the upstream client sees it: the marker that
/// tells [`ProxyError::from_client`] which side failed.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

impl ProxyError {
    /// Classifies an error from the upstream client, walking its source chain.
    pub fn from_client(error: hyper_util::client::legacy::Error, body_limit: Option<u64>) -> Self {
        if is_caused_by::<ClientBodyError>(&error) {
            return Self::ClientBody(Box::new(error));
        }
        if let Some(limit) = body_limit {
            if is_caused_by::<http_body_util::LengthLimitError>(&error) {
                return Self::BodyTooLarge { limit };
            }
        }
        if error.is_connect() {
            return Self::UpstreamConnect(Box::new(error));
        }
        Self::Upstream(Box::new(error))
    }

    /// What a request body that failed while it was read from the client means: over the
    /// listener's limit (413, when `body_limit` is set), else the client's fault, which never
    /// counts against the endpoint.
    pub fn from_request_body(error: BoxError, body_limit: Option<u64>) -> Self {
        match body_limit {
            Some(limit) if is_caused_by::<http_body_util::LengthLimitError>(error.as_ref()) => {
                Self::BodyTooLarge { limit }
            }
            _ => Self::ClientBody(error),
        }
    }

    /// The status code sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamConnect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded | Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClientBody(_) => StatusCode::from_u16(super::record::CLIENT_CLOSED)
                .unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// A short stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NoRoute => "no_route",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UpstreamConnect(e) => match find_cause::<ConnectError>(e.as_ref()) {
                Some(ConnectError::Timeout { .. }) => "connect_timeout",
                Some(ConnectError::Tls { .. }) => "upstream_tls",
                Some(ConnectError::Resolve { .. }) => "resolve",
                _ => "connect",
            },
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::Upstream(_) => "upstream_reset",
            Self::Overloaded => "overloaded",
            Self::NoEndpoint => "no_endpoint",
            Self::ClientBody(_) => super::record::CLIENT_CLOSED_REASON,
        }
    }

    /// Every [`ProxyError::reason`] of an error for which [`ProxyError::is_upstream`] holds:
    /// the series of `aegis_upstream_errors_total` created at start.
    pub const UPSTREAM_REASONS: &'static [&'static str] = &[
        "connect",
        "connect_timeout",
        "upstream_tls",
        "resolve",
        "upstream_timeout",
        "upstream_reset",
        "no_endpoint",
    ];

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Self::BadRequest(_)
            | Self::NoRoute
            | Self::BodyTooLarge { .. }
            | Self::ClientBody(_) => Side::Client,
            Self::UpstreamConnect(_) | Self::UpstreamTimeout(_) | Self::Upstream(_) => {
                Side::Upstream
            }
            Self::Overloaded | Self::NoEndpoint => Side::Proxy,
        }
    }

    /// Whether the attempt that failed may be sent to another endpoint.
    pub fn retry_safety(&self) -> RetrySafety {
        match self {
            Self::UpstreamConnect(_) => RetrySafety::Unsent,
            Self::Upstream(_) => RetrySafety::IfIdempotent,
            _ => RetrySafety::Never,
        }
    }

    /// Whether the failure counts against the endpoint for outlier ejection: only the
    /// endpoint's own, never the client's.
    pub fn counts_against_endpoint(&self) -> bool {
        self.side() == Side::Upstream
    }

    /// Whether the proxy, not the client, is at fault (logged as a warning).
    pub fn is_upstream(&self) -> bool {
        // Shedding is the proxy working as configured, not an upstream failure to warn about.
        self.side() != Side::Client && !matches!(self, Self::Overloaded)
    }

    /// What the client is answered, on every protocol.
    pub fn answer(&self) -> Answer {
        let status = self.status();
        let body = match self {
            Self::BadRequest(what) => format!("bad request: {what}\n"),
            _ => format!("{}\n", status.canonical_reason().unwrap_or("error")),
        };
        Answer {
            status,
            retry_after: matches!(self, Self::Overloaded).then_some("1"),
            body,
        }
    }

    /// [`ProxyError::answer`] as a response for hyper and h3.
    pub fn to_response(&self) -> Response<Body> {
        let answer = self.answer();
        let mut response = Response::new(
            Full::new(Bytes::from(answer.body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *response.status_mut() = answer.status;
        if let Some(after) = answer.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// Whether `error` or anything in its source chain is a `T`.
pub fn is_caused_by<T: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    find_cause::<T>(error).is_some()
}

/// What happened, from the whole source chain of `error`: each cause that adds something, and
/// what a failure that hides a configuration mistake most likely means. hyper-util's
/// `client error (SendRequest)` and `client error (Connect)` say nothing their causes do not,
/// so they are left out.
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let part = e.to_string();
        let noise = part.starts_with("client error (") && e.source().is_some();
        if !noise && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

/// What an upstream failure most likely means for a cluster that speaks `protocol`, when it
/// hides a configuration mistake.
pub fn hint_for(
    error: &(dyn StdError + 'static),
    protocol: crate::config::UpstreamProtocol,
) -> Option<&'static str> {
    if protocol != crate::config::UpstreamProtocol::Http2 {
        return None;
    }
    let garbled = find_cause::<h2::Error>(error).is_some_and(|e| {
        e.is_go_away()
            && e.is_library()
            && matches!(
                e.reason(),
                Some(h2::Reason::FRAME_SIZE_ERROR | h2::Reason::PROTOCOL_ERROR)
            )
    });
    if garbled {
        return Some(
            " (HTTP/2 to an HTTP/1.1 upstream? the cluster has protocol = \"http2\" and the \
             upstream did not answer the HTTP/2 preface with HTTP/2)",
        );
    }
    // The same mistake when the upstream closed before HTTP/2 noticed the garbage: hyper-util's
    // words for a connection that ended before or while it was used, or a write into it.
    let text = describe(error);
    let closed = [
        "connection was not ready",
        "connection closed",
        "broken pipe",
    ];
    closed.iter().any(|c| text.contains(c)).then_some(
        " (the upstream closed the HTTP/2 connection; if it speaks only HTTP/1.1, the \
         cluster's protocol = \"http2\" is wrong)",
    )
}

/// An upstream failure with what it most likely means ([`hint_for`]).
#[derive(Debug)]
pub struct Hinted {
    /// The failure.
    pub error: BoxError,
    /// What it most likely means.
    pub hint: &'static str,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", describe(self.error.as_ref()), self.hint)
    }
}

impl StdError for Hinted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.error.as_ref())
    }
}

/// The first `T` in `error`'s source chain, `error` included.
pub fn find_cause<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> BoxError {
        Box::new(std::io::Error::from(kind))
    }

    /// One row per variant: who failed, whether it may go again, what the client gets.
    #[test]
    fn each_failure_knows_its_side_its_retry_and_its_answer() {
        let rows = [
            (
                ProxyError::BadRequest("two hosts"),
                Side::Client,
                RetrySafety::Never,
                400,
            ),
            (ProxyError::NoRoute, Side::Client, RetrySafety::Never, 404),
            (
                ProxyError::BodyTooLarge { limit: 1 },
                Side::Client,
                RetrySafety::Never,
                413,
            ),
            (
                ProxyError::ClientBody(io(std::io::ErrorKind::ConnectionReset)),
                Side::Client,
                RetrySafety::Never,
                499,
            ),
            (
                ProxyError::UpstreamConnect(io(std::io::ErrorKind::ConnectionRefused)),
                Side::Upstream,
                RetrySafety::Unsent,
                502,
            ),
            (
                ProxyError::Upstream(io(std::io::ErrorKind::ConnectionReset)),
                Side::Upstream,
                RetrySafety::IfIdempotent,
                502,
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                Side::Upstream,
                RetrySafety::Never,
                504,
            ),
            (ProxyError::Overloaded, Side::Proxy, RetrySafety::Never, 503),
            (ProxyError::NoEndpoint, Side::Proxy, RetrySafety::Never, 503),
        ];
        for (error, side, retry, status) in rows {
            assert_eq!(error.side(), side, "{error}");
            assert_eq!(error.retry_safety(), retry, "{error}");
            assert_eq!(
                error.counts_against_endpoint(),
                side == Side::Upstream,
                "{error}"
            );
            let answer = error.answer();
            assert_eq!(answer.status.as_u16(), status, "{error}");
            assert_eq!(
                answer.retry_after.is_some(),
                matches!(error, ProxyError::Overloaded)
            );
            let response = error.to_response();
            assert_eq!(response.status(), answer.status);
            assert_eq!(
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                answer.retry_after
            );
        }
        assert_eq!(
            ProxyError::BadRequest("two hosts").answer().body,
            "bad request: two hosts\n"
        );
    }
}
