//! HTTP/1.1 exchanges with an endpoint from the request's own task: every request to an
//! HTTP/1.1 cluster on the general path (HTTP/2 and HTTP/3 clients, and HTTP/1.1 requests the
//! fast path hands over), and the active health checks and latency probes of HTTP/1.1
//! clusters, so that a passing check has used the client and idle pool that carry the traffic.
//! The fast path connects through [`pooled_or_new`] as well.
//!
//! It shares the fast path's idle pool and response parser. The task that serves the request
//! writes the request head and body (`request_body`), reads the response head and then, as
//! the client's connection asks for it, the response body: no connection task and no channel
//! between tasks, as hyper-util's pooled client needs. Once the body is complete, the
//! connection goes back to the endpoint's idle pool.

use std::future::{poll_fn, Future};
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
use tokio::io::{AsyncWriteExt, ReadHalf};

mod request_body;

use request_body::{RequestBody, Upload};

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

/// Whether this exchange is for [`send`]: an HTTP/1.1 cluster (`CONNECT` is not forwarded).
pub(crate) fn takes(cluster: &Cluster, parts: &http::request::Parts) -> bool {
    cluster.protocol == UpstreamProtocol::Http1 && parts.method != Method::CONNECT
}

/// Sends the request `parts` with `body` to `endpoint` and returns the response once its head
/// has arrived; the response body streams from the connection as it is polled. A pooled
/// connection that the endpoint closed just as it was reused is replaced by a new one when the
/// method is idempotent and no byte of the body was read yet, as the endpoint cannot have
/// processed the request. Interim 1xx responses go to `interim` as they arrive. A body over
/// `body_limit` is a 413.
pub(crate) async fn send(
    endpoint: &Arc<Endpoint>,
    parts: &http::request::Parts,
    body: UpstreamBody,
    interim: Option<&Interim>,
    body_limit: Option<u64>,
) -> Result<Response<Body>, ProxyError> {
    let body = (!body.is_end_stream()).then(|| {
        let framing = request_body::Framing::of(&parts.headers);
        RequestBody::new(body, framing, body_limit)
    });
    let chunked = body
        .as_ref()
        .is_some_and(|b| b.framing() == request_body::Framing::Chunked);
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, parts, chunked);
    let mut exchange = HttpExchange {
        head: &head,
        head_request: parts.method == Method::HEAD,
        interim,
        body,
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
    // Boxed: dialing (resolve, connect, an upstream TLS handshake) is a large future that most
    // requests, served from the pool, never run; inline, every request's future would carry
    // its size and copy it as the request's future is built and moved.
    let stream = Box::pin(endpoint.connector.open())
        .await
        .map_err(|e| ProxyError::UpstreamConnect(Box::new(e)))?;
    exchange.on(stream).await.map_err(Failure::into_error)
}

/// [`send`]'s exchange: a request head and its body, if it has one.
struct HttpExchange<'a> {
    head: &'a [u8],
    head_request: bool,
    interim: Option<&'a Interim>,
    body: Option<RequestBody>,
}

impl Exchange for HttpExchange<'_> {
    type Done = Got;

    async fn on(&mut self, stream: UpstreamStream) -> Result<Got, Failure> {
        let reader = HeadReader::new(self.head_request, self.interim);
        let got = exchange(stream, self.head, reader, &mut self.body).await;
        match got {
            Err(failure) if self.body.as_ref().is_some_and(|b| b.consumed) => {
                Err(request_body::after_body(failure))
            }
            other => other,
        }
    }
}

/// The request line and headers, in origin form (the connector already dials the endpoint).
fn write_request_head(out: &mut Vec<u8>, parts: &http::request::Parts, chunked: bool) {
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
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
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
    /// The rest of a request body the response came before: it goes out as the response body
    /// is read.
    upload: Option<RequestBody>,
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
        let conn = match self.upload {
            None => Conn::Whole(self.stream),
            Some(upload) => Conn::uploading(self.stream, upload),
        };
        let mut body = ResponseBody {
            stream: Some(conn),
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

/// Writes the request head on `stream`, then the body while it reads the final response head.
/// A body still going out when the head arrives moves into the [`Got`].
async fn exchange(
    mut stream: UpstreamStream,
    head: &[u8],
    mut reader: HeadReader<'_>,
    body: &mut Option<RequestBody>,
) -> Result<Got, Failure> {
    match body.as_mut() {
        Some(upload) => upload.start(head),
        None => {
            stream.write_all(head).await.map_err(Failure::Stale)?;
            stream.flush().await.map_err(Failure::Stale)?;
        }
    }
    let mut uploading = body.is_some();
    let mut reusable = true;
    let (mut head, parts) = poll_fn(|cx| loop {
        if let Some(upload) = body.as_mut().filter(|_| uploading) {
            match upload.poll_send(cx, &mut stream) {
                Poll::Ready(Ok(done)) => {
                    reusable &= done == Upload::Complete;
                    uploading = false;
                }
                Poll::Ready(Err(failure)) => return Poll::Ready(Err(failure)),
                Poll::Pending => {}
            }
        }
        if let Some(found) = reader.final_head()? {
            return Poll::Ready(Ok(found));
        }
        ready!(reader.poll_read(cx, &mut stream))?;
    })
    .await?;
    head.reusable &= reusable;
    Ok(Got {
        stream,
        head,
        parts,
        buf: reader.buf,
        upload: body.take().filter(|_| uploading),
    })
}

/// What one read from an upstream connection waiting for a response head means: before any
/// byte arrived (`received`), a close or failure is [`Failure::Stale`] (the endpoint may have
/// closed the pooled connection as it was reused); after, a reset. The fast path reads its
/// response heads by this rule too.
pub(crate) fn read_outcome(read: io::Result<usize>, received: &mut bool) -> Result<(), Failure> {
    match read {
        Ok(0) if !*received => {
            let closed = io::ErrorKind::UnexpectedEof;
            Err(Failure::Stale(io::Error::new(
                closed,
                "closed before a response",
            )))
        }
        Err(error) if !*received => Err(Failure::Stale(error)),
        Ok(0) => Err(reset(io::ErrorKind::UnexpectedEof.into()).into()),
        Err(error) => Err(reset(error).into()),
        Ok(_) => {
            *received = true;
            Ok(())
        }
    }
}

/// Reads a response head from an upstream connection: 1xx interim heads go to `interim` (or
/// nowhere), the final one is returned.
struct HeadReader<'a> {
    buf: BytesMut,
    /// Any byte arrived: a failure from now on is not a stale connection.
    received: bool,
    head_request: bool,
    interim: Option<&'a Interim>,
}

impl<'a> HeadReader<'a> {
    fn new(head_request: bool, interim: Option<&'a Interim>) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_SIZE),
            received: false,
            head_request,
            interim,
        }
    }

    /// Reads more from `stream`. The connection closing or failing before any byte is
    /// [`Failure::Stale`].
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut UpstreamStream,
    ) -> Poll<Result<(), Failure>> {
        if self.buf.len() >= MAX_RESPONSE_HEAD {
            return Poll::Ready(Err(
                reset(io::Error::other("response head too large")).into()
            ));
        }
        self.buf.reserve(READ_SIZE / 4);
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(stream),
            cx,
            &mut self.buf
        ));
        Poll::Ready(read_outcome(read, &mut self.received))
    }

    /// The final head, once what was read holds it; interim heads before it are passed on.
    fn final_head(&mut self) -> Result<Option<(response::Head, http::response::Parts)>, Failure> {
        loop {
            let parsed = response::parse_parts(&mut self.buf, self.head_request)
                .map_err(|e| Failure::Proxy(ProxyError::Upstream(Box::new(e))))?;
            let Some((head, parts)) = parsed else {
                return Ok(None);
            };
            if !head.status.is_informational() {
                return Ok(Some((head, parts)));
            }
            if let Some(interim) = self.interim {
                interim.send(head.status, &parts.headers);
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
    stream: Option<Conn>,
    endpoint: Arc<Endpoint>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    state: State,
    reusable: bool,
    /// The trailer section of a chunked body, as it arrived.
    trailers: Vec<u8>,
}

/// The upstream connection a response body reads from.
#[derive(Debug)]
enum Conn {
    /// All of it: it can go back to the pool.
    Whole(UpstreamStream),
    /// Its read half, while a task sends the rest of the request body on the write half (the
    /// response came first: a 413, or an origin that answers as it reads). The task stops when
    /// the body is dropped; the connection then closes.
    Reading {
        read: ReadHalf<UpstreamStream>,
        _upload: AbortOnDrop,
    },
}

impl Conn {
    /// Splits `stream`: the rest of `upload` goes out from its own task, so that it progresses
    /// however fast the client reads the response (an echo would otherwise stall both ways).
    fn uploading(stream: UpstreamStream, mut upload: RequestBody) -> Self {
        let (read, mut write) = tokio::io::split(stream);
        let task = tokio::spawn(async move {
            let _ = poll_fn(|cx| upload.poll_send(cx, &mut write)).await;
        });
        Self::Reading {
            read,
            _upload: AbortOnDrop(task.abort_handle()),
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Whole(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Reading { read, .. } => Pin::new(read).poll_read(cx, buf),
        }
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ResponseBody {
    /// Marks the body complete and pools the connection if it can carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        // A connection split for an upload the response outran is mid-request: it closes.
        if let Some(Conn::Whole(stream)) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                self.endpoint.idle.put(stream, Instant::now());
            }
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
