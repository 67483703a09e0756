//! HTTP/1.1 exchanges with an endpoint from the request's own task, for the general path
//! (HTTP/2 and HTTP/3 clients, and HTTP/1.1 requests the fast path hands over) and for the
//! active health checks and latency probes of HTTP/1.1 clusters, so that a passing check has
//! used the client and idle pool that carry the traffic.
//!
//! It shares the fast path's idle pool and response parser. The task that serves the request
//! writes the request head, reads the response head and then, as the client's connection asks
//! for it, the body: no connection task and no channel between tasks, as hyper-util's pooled
//! client needs. Once the body is complete, the connection goes back to the endpoint's idle
//! pool.
//!
//! It takes requests without a body (GET, HEAD, DELETE, ...: most of them). A request with a
//! body goes through the endpoint's hyper-util client, which streams the body while it reads
//! the response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Cluster, Endpoint};
use crate::config::UpstreamProtocol;
use crate::dial::{UpstreamBody, UpstreamStream, UpstreamTlsGroup};
use crate::http::error::ProxyError;
use crate::http::interim::Interim;
use crate::http::wire::chunked::Chunked;
use crate::http::wire::response::{self, Framing};
use crate::http::wire::{reset, MAX_RESPONSE_HEAD, READ_SIZE};
use crate::http::{headers, replay};
use crate::{Body, BoxError};

/// Most fields parsed from a trailer section (the chunked decoder already caps it at 8 KiB).
const MAX_TRAILER_FIELDS: usize = 64;

/// Whether this exchange is for [`send`]: an HTTP/1.1 cluster and a request without a body.
pub(crate) fn takes(cluster: &Cluster, parts: &http::request::Parts, body: &UpstreamBody) -> bool {
    cluster.protocol == UpstreamProtocol::Http1
        && body.is_end_stream()
        && parts.method != Method::CONNECT
}

/// Sends the body-less request `parts` to `endpoint` and returns the response once its head has
/// arrived; the body streams from the connection as it is polled. A pooled connection that the
/// endpoint closed just as it was reused is replaced by a new one when the method is
/// idempotent, as the endpoint cannot have processed the request. Interim 1xx responses go to
/// `interim` as they arrive.
pub(crate) async fn send(
    endpoint: &Arc<Endpoint>,
    parts: &http::request::Parts,
    interim: Option<&Interim>,
) -> Result<Response<Body>, ProxyError> {
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, parts);
    let head_request = parts.method == Method::HEAD;
    let mut exchange = BodylessExchange {
        head: &head,
        head_request,
        interim,
    };
    let idempotent = replay::is_idempotent(&parts.method);
    let got = pooled_or_new(endpoint, Instant::now(), idempotent, &mut exchange).await?;
    Ok(got.into_response(endpoint))
}

/// One request's exchange on whichever connection [`pooled_or_new`] gives it.
pub(crate) trait Exchange {
    /// What a successful exchange yields (a response head and the connection).
    type Done;

    /// Sends the request on `stream` and reads the response head.
    fn on(
        &mut self,
        stream: UpstreamStream,
    ) -> impl Future<Output = Result<Self::Done, Failure>> + Send;
}

/// Runs `exchange` on a pooled connection to `endpoint`, else on a new one. A pooled
/// connection the endpoint closed just as it was reused ([`Failure::Stale`]) is replaced by a
/// new one when the request may be repeated (`replayable`: idempotent, and nothing of it
/// consumed), as the endpoint cannot have processed it. The HTTP/1.1 fast path and [`send`]
/// both connect this way.
pub(crate) async fn pooled_or_new<E: Exchange>(
    endpoint: &Endpoint,
    now: Instant,
    replayable: bool,
    exchange: &mut E,
) -> Result<E::Done, ProxyError> {
    if let Some(stream) = endpoint.idle.take(now) {
        match exchange.on(stream).await {
            Err(Failure::Stale(_)) if replayable => {}
            other => return other.map_err(Failure::into_error),
        }
    }
    let stream = endpoint
        .connector
        .open()
        .await
        .map_err(|e| ProxyError::UpstreamConnect(Box::new(e)))?;
    exchange.on(stream).await.map_err(Failure::into_error)
}

/// [`send`]'s exchange: a request head, no body.
struct BodylessExchange<'a> {
    head: &'a [u8],
    head_request: bool,
    interim: Option<&'a Interim>,
}

impl Exchange for BodylessExchange<'_> {
    type Done = Got;

    async fn on(&mut self, stream: UpstreamStream) -> Result<Got, Failure> {
        exchange(stream, self.head, self.head_request, self.interim).await
    }
}

/// The request line and headers, in origin form (the connector already dials the endpoint).
fn write_request_head(out: &mut Vec<u8>, parts: &http::request::Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How an exchange on one upstream connection failed.
pub(crate) enum Failure {
    /// The connection failed before any response byte arrived.
    Stale(io::Error),
    /// Anything else.
    Proxy(ProxyError),
}

impl Failure {
    /// On a new connection, or for a request that may not be repeated, a failure before the
    /// response is an ordinary reset.
    pub(crate) fn into_error(self) -> ProxyError {
        match self {
            Self::Stale(error) => reset(error),
            Self::Proxy(error) => error,
        }
    }
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Self::Proxy(error)
    }
}

/// A response head and what was read after it.
struct Got {
    stream: UpstreamStream,
    head: response::Head,
    parts: http::response::Parts,
    /// The start of the body.
    buf: BytesMut,
}

impl Got {
    fn into_response(self, endpoint: &Arc<Endpoint>) -> Response<Body> {
        let mut parts = self.parts;
        if let Some(group) = self.stream.tls_group() {
            parts.extensions.insert(UpstreamTlsGroup(group));
        }
        let state = match self.head.framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose,
            // `Framing::Empty`: HEAD, 204, 304.
            _ => State::Length(0),
        };
        let mut body = ResponseBody {
            stream: Some(self.stream),
            endpoint: endpoint.clone(),
            buf: self.buf,
            state,
            reusable: self.head.reusable,
            trailers: Vec::new(),
        };
        if matches!(body.state, State::Length(0)) {
            body.finish();
        }
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// Writes the request head on `stream` and reads the final response head.
async fn exchange(
    mut stream: UpstreamStream,
    head: &[u8],
    head_request: bool,
    interim: Option<&Interim>,
) -> Result<Got, Failure> {
    stream.write_all(head).await.map_err(Failure::Stale)?;
    stream.flush().await.map_err(Failure::Stale)?;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut received = false;
    loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(reset(io::Error::other("response head too large")).into());
        }
        buf.reserve(READ_SIZE / 4);
        match stream.read_buf(&mut buf).await {
            Ok(0) if !received => {
                let closed = io::ErrorKind::UnexpectedEof;
                return Err(Failure::Stale(io::Error::new(
                    closed,
                    "closed before a response",
                )));
            }
            Err(error) if !received => return Err(Failure::Stale(error)),
            Ok(0) => return Err(reset(io::ErrorKind::UnexpectedEof.into()).into()),
            Err(error) => return Err(reset(error).into()),
            Ok(_) => received = true,
        }
        while let Some((head, parts)) = response::parse_parts(&buf, head_request)
            .map_err(|e| Failure::Proxy(ProxyError::Upstream(Box::new(e))))?
        {
            buf.advance(head.len);
            if head.status.is_informational() {
                if let Some(interim) = interim {
                    interim.send(head.status, &parts.headers);
                }
            } else {
                return Ok(Got {
                    stream,
                    head,
                    parts,
                    buf,
                });
            }
        }
    }
}

/// Where the response body is.
#[derive(Debug, Clone)]
enum State {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, decoded into data frames and trailers.
    Chunked(Chunked),
    /// Until the endpoint closes the connection.
    UntilClose,
    /// Complete.
    Done,
}

/// The body of a response from [`send`], read from the upstream connection as it is polled.
/// When it is complete and nothing followed it, the connection goes back to the idle pool;
/// dropped early, it closes the connection.
#[derive(Debug)]
struct ResponseBody {
    stream: Option<UpstreamStream>,
    endpoint: Arc<Endpoint>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    state: State,
    reusable: bool,
    /// The trailer section of a chunked body, as it arrived.
    trailers: Vec<u8>,
}

impl ResponseBody {
    /// Marks the body complete and pools the connection if it can carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        let stream = self.stream.take();
        if let Some(stream) = stream.filter(|_| self.reusable && self.buf.is_empty()) {
            self.endpoint.idle.put(stream, Instant::now());
        }
    }

    /// Fails the body: the connection closes.
    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.stream = None;
        Poll::Ready(Some(Err(error.into())))
    }

    /// The next frame from bytes already read, if they hold one.
    fn buffered_frame(&mut self) -> Result<Option<Frame<Bytes>>, BoxError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.state {
            State::Length(left) => {
                let here = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let data = self.buf.split_to(here).freeze();
                *left -= here as u64;
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(Frame::data(data)))
            }
            State::Chunked(chunked) => {
                let (framing, len) = chunked.decode(&self.buf, &mut self.trailers)?;
                self.buf.advance(framing);
                if len > 0 {
                    return Ok(Some(Frame::data(self.buf.split_to(len).freeze())));
                }
                if !chunked.is_done() {
                    return Ok(None); // the buffer held framing only
                }
                self.finish();
                Ok(parse_trailers(&self.trailers)?.map(Frame::trailers))
            }
            State::UntilClose => Ok(Some(Frame::data(self.buf.split().freeze()))),
            State::Done => Ok(None),
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.buffered_frame() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            let Some(stream) = this
                .stream
                .as_mut()
                .filter(|_| !matches!(this.state, State::Done))
            else {
                return Poll::Ready(None);
            };
            this.buf.reserve(READ_SIZE);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(stream),
                cx,
                &mut this.buf
            )) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.state = State::Done;
                    this.stream = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let eof =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed mid-body");
                    return this.fail(eof);
                }
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The fields of a chunked body's trailer section, hop-by-hop ones removed; `None` when empty.
fn parse_trailers(section: &[u8]) -> Result<Option<HeaderMap>, BoxError> {
    if section.len() <= 2 {
        return Ok(None); // only the final CRLF
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let httparse::Status::Complete((_, fields)) = httparse::parse_headers(section, &mut fields)?
    else {
        return Err("incomplete trailer section".into());
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        trailers.append(
            HeaderName::from_bytes(field.name.as_bytes())?,
            HeaderValue::from_bytes(field.value)?,
        );
    }
    headers::strip_hop_by_hop(&mut trailers);
    Ok(Some(trailers))
}
