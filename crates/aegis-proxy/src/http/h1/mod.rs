//! The HTTP/1.1 fast path: one task per client connection parses each request head, forwards it
//! over a pooled upstream connection that the same task reads and writes, and streams the
//! response back, without building `http::Request`/`Response` values or handing work to other
//! tasks.
//!
//! ```text
//! client ─▶ read head ─▶ plain request? ─no─▶ general path (hyper) for the rest of the connection
//!                            │yes
//!                            ▼
//!           route ─▶ admit ─▶ pick endpoint ─▶ pooled or new connection ─▶ write head + body
//!                                   ▲                                              │
//!                                   └── retry (connect failed, or idempotent reset)┤
//!                                                                                  ▼
//!           pool ◀── reusable? ◀── stream body ◀── write head ◀──────── read response head
//! ```
//!
//! It forwards exactly what the general path would (same routing, balancing, carbon decisions,
//! retries, outlier ejection, header rewriting, metrics and access log), and hands anything
//! unusual to the general path, so behaviour on odd or malformed input is unchanged. Between
//! requests an idle plain-TCP connection holds no buffer.

mod buffers;
mod deadline;
mod request;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::forward;
use super::framing::FramingGuard;
use super::proxy::{ConnInfo, Proxy};
use super::record::{Received, RequestRecord};
use super::rewind::Rewind;
use super::wire::chunked::Chunked;
use super::wire::response::{self, Framing};
use super::wire::{reset, MAX_RESPONSE_HEAD, READ_SIZE};
use super::{driver, interim, preface, replay, server, ProxyError};
use crate::dial::UpstreamStream;
use crate::upstream::h1::{self as upstream_h1, Failure};
use crate::upstream::Endpoint;
use deadline::Deadline;

/// Most bytes of pipelined requests read from a client while its request is at the upstream;
/// past it the client is not watched for closing until the response comes.
const MAX_PIPELINED: usize = 64 * 1024;

/// A client connection the fast path can serve.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once the connection has something to read, so an idle connection can wait
    /// without a buffer. Connections that cannot tell are always ready.
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientIo for TcpStream {
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, session) = self.get_ref();
        // rustls processes every complete record it has read; with no plaintext left waiting
        // (`wants_read`), only new bytes on the socket can make progress.
        match session.wants_read() {
            true => tcp.poll_read_ready(cx),
            false => Poll::Ready(Ok(())),
        }
    }
}

/// Listener settings the fast path reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for each request head, idle keep-alive time included (as hyper does).
    pub header_read_timeout: Duration,
    /// Largest request head; a larger one goes to the general path, which answers 431.
    pub max_header_bytes: usize,
    /// The listener also serves h2c by prior knowledge: an invalid HTTP/2 preface, or a first
    /// line that is not HTTP/1 at all, gets GOAWAY(PROTOCOL_ERROR) rather than an HTTP/1 400.
    pub h2c: bool,
}

/// Serves one client connection until it closes, handing it to the general path (`builder`)
/// at the first request the fast path does not take. Once `shutdown` turns true, the request in
/// flight finishes and the connection closes.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment on the async block
pub fn serve<'a, I: ClientIo>(
    mut io: I,
    builder: &'a server::Hyper,
    limits: Limits,
    proxy: Arc<ArcSwap<Proxy>>,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + 'a {
    // An async block, not an `async fn`: an async fn's future holds a second copy of its
    // arguments (rust-lang/rust#62958), and this future is part of every connection's task.
    async move {
        let mut buf = Vec::new();
        // One timer for the connection: head reads and upstream attempts never overlap.
        let mut deadline = Deadline::new();
        let client_ip = conn.peer.ip().to_string();
        let mut bad_preface = false;
        loop {
            let until = tokio::time::Instant::now() + limits.header_read_timeout;
            // In a block: the pinned read and its result take no room while a request is
            // forwarded or the connection moves to the general path.
            let (current, head, upstream_head) = {
                let reading = pin!(read_head(
                    &mut io, &mut buf, &limits, &proxy, &conn, &client_ip
                ));
                let read = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    read = deadline.run(until, reading) => read,
                };
                match read {
                    Ok(Ok(Read::Fast(current, head, upstream_head))) => {
                        (current, head, upstream_head)
                    }
                    Ok(Ok(Read::General)) => break,
                    Ok(Ok(Read::BadPreface)) => {
                        bad_preface = true;
                        break;
                    }
                    Ok(Ok(Read::Closed) | Err(_)) | Err(_) => return,
                }
            };
            let exchange = Exchange {
                proxy: &current,
                conn: &conn,
                client: Client {
                    io: &mut io,
                    buf: &mut buf,
                },
                closing: *shutdown.borrow(),
                deadline: &mut deadline,
            };
            // Boxed: the connection's future stays small while it waits for the next request.
            let keep_alive = Box::pin(exchange.run(head, upstream_head)).await;
            if !keep_alive || *shutdown.borrow() {
                let _ = io.shutdown().await;
                return;
            }
            if buf.is_empty() {
                buffers::give(std::mem::take(&mut buf)); // hold no buffer while idle
            }
        }
        if bad_preface {
            // Boxed: the refusal's buffers take no room in every connection's task.
            return Box::pin(preface::refuse(&mut io)).await;
        }
        let io = FramingGuard::new(Rewind::new(buf, io));
        // Boxed: hyper's connection state is large and most connections never need it. Built
        // in the box: a named local future would keep its room in this one.
        Box::pin(server::serve_connection(builder, io, proxy, conn, shutdown)).await
    }
}

/// What the next request on a connection is.
enum Read {
    /// The client closed the connection between requests.
    Closed,
    /// Not for the fast path.
    General,
    /// An h2c client with an invalid connection preface.
    BadPreface,
    /// A request the fast path forwards, with the proxy it was routed on and its upstream head.
    Fast(Arc<Proxy>, request::Head, Vec<u8>),
}

async fn read_head<I: ClientIo>(
    io: &mut I,
    buf: &mut Vec<u8>,
    limits: &Limits,
    proxy: &ArcSwap<Proxy>,
    conn: &ConnInfo,
    client_ip: &str,
) -> io::Result<Read> {
    let max_header_bytes = limits.max_header_bytes;
    loop {
        if !buf.is_empty() {
            let current = proxy.load_full();
            let mut upstream_head = buffers::take();
            let within = &buf[..buf.len().min(max_header_bytes)];
            let parsed = request::parse(within, &current, conn, client_ip, &mut upstream_head);
            match parsed {
                request::Parsed::Fast(head) => return Ok(Read::Fast(current, head, upstream_head)),
                request::Parsed::General | request::Parsed::NotHttp1 => {
                    buffers::give(upstream_head);
                    return Ok(match (parsed, limits.h2c) {
                        (request::Parsed::NotHttp1, true) => Read::BadPreface,
                        _ => Read::General,
                    });
                }
                request::Parsed::Partial if buf.len() >= max_header_bytes => {
                    return Ok(Read::General)
                }
                request::Parsed::Partial => {}
            }
            buffers::give(upstream_head);
        } else {
            poll_fn(|cx| io.poll_idle(cx)).await?;
        }
        if buf.capacity() == 0 {
            *buf = buffers::take();
        }
        buf.reserve(READ_SIZE / 4);
        if io.read_buf(buf).await? == 0 {
            return Ok(Read::Closed);
        }
    }
}

/// One request on the fast path, from its parsed head to the end of its response.
struct Exchange<'a, I> {
    proxy: &'a Proxy,
    conn: &'a ConnInfo,
    client: Client<'a, I>,
    /// Shutdown has begun: tell the client the connection closes.
    closing: bool,
    /// The connection's timer, for upstream response heads.
    deadline: &'a mut Deadline,
}

/// An upstream connection with the response head read from it.
struct Sent {
    stream: UpstreamStream,
    head: response::Head,
    /// Bytes read from the upstream: the head, then the start of the body.
    buf: Vec<u8>,
    /// The client's response head, all but its end ([`response::end_head`]).
    out: Vec<u8>,
}

/// The fast path's upstream adapter: one attempt writes the head the client's request was
/// rewritten to, and whatever of the body has arrived, on a pooled or new connection, from the
/// client's own task.
struct FastUpstream<'e, 'a, I> {
    client: &'e mut Client<'a, I>,
    head: &'e request::Head,
    upstream_head: &'e mut Vec<u8>,
    /// The connection's timer.
    deadline: &'e mut Deadline,
    region_header: Option<&'e http::HeaderName>,
    alt_svc: Option<&'e http::HeaderValue>,
    /// Part of the body was read from the client and sent: no other attempt can send it.
    streamed: bool,
}

impl<I: ClientIo> driver::Upstream for FastUpstream<'_, '_, I> {
    type Sent = Sent;

    fn status(sent: &Sent) -> http::StatusCode {
        sent.head.status
    }

    async fn send(
        &mut self,
        endpoint: &Arc<Endpoint>,
        timeout: Duration,
        record: &RequestRecord,
    ) -> Result<Sent, ProxyError> {
        let region = record.carbon.as_ref().map(|c| c.region.clone());
        let extra = response::Extra {
            region: self.region_header.zip(region.as_deref()),
            alt_svc: self.alt_svc,
        };
        let started = tokio::time::Instant::now();
        let attempt = self.client.attempt(
            endpoint,
            started.into_std(),
            self.head,
            self.upstream_head,
            extra,
            &mut self.streamed,
        );
        let sent = self.deadline.run(started + timeout, pin!(attempt)).await;
        sent.unwrap_or(Err(ProxyError::UpstreamTimeout(timeout)))
    }

    fn can_resend(&mut self) -> bool {
        !self.streamed
    }
}

/// The fast path's exchange on one upstream connection, for [`upstream_h1::pooled_or_new`].
struct FastExchange<'e, 'a, 'x, I> {
    client: &'e mut Client<'a, I>,
    head: &'e request::Head,
    upstream_head: &'e mut Vec<u8>,
    extra: response::Extra<'x>,
    streamed: &'e mut bool,
}

impl<I: ClientIo> upstream_h1::Exchange for FastExchange<'_, '_, '_, I> {
    type Done = Sent;

    async fn on(&mut self, stream: UpstreamStream) -> Result<Sent, Failure> {
        let sent = self
            .client
            .request(
                stream,
                self.head,
                self.upstream_head,
                self.extra,
                self.streamed,
            )
            .await;
        match sent {
            // Once the body is consumed, no failure leaves the request unsent.
            Err(Failure::Stale(error)) if *self.streamed => Err(Failure::Proxy(reset(error))),
            other => other,
        }
    }
}

/// The client closed its connection while sending its body or waiting for the response.
fn client_gone() -> Failure {
    let gone = io::Error::new(io::ErrorKind::ConnectionAborted, "client closed");
    Failure::Proxy(ProxyError::ClientBody(Box::new(gone)))
}

impl<I: ClientIo> Exchange<'_, I> {
    /// Forwards the request and answers it; returns whether the connection stays open.
    async fn run(mut self, mut head: request::Head, mut upstream_head: Vec<u8>) -> bool {
        let proxy = self.proxy;
        self.client.buf.drain(..head.len);
        if head.body_len == 0 && self.client.buf.is_empty() {
            // Nothing to read until the next request: no client buffer while the upstream works.
            buffers::give(std::mem::take(self.client.buf));
        }
        // The upstream head is already written: host and path are needed only for the log.
        let log = head.log.take().map(|log| *log).unwrap_or_default();
        let mut record = forward::new_record(
            proxy,
            self.conn,
            http::Version::HTTP_11,
            head.method.clone(),
            log.path,
        );
        record.host = log.host;
        record.query = log.query;
        record.user_agent = log.user_agent;
        record.request_id = log.request_id;
        let cluster = &proxy.clusters()[head.cluster];
        record.route = Some(proxy.route_name(head.route));
        record.cluster = Some(cluster.name.clone());
        let mut keep_alive = head.keep_alive && !self.closing;
        // One request at a time per HTTP/1.1 connection: no per-connection share to keep.
        match driver::admit(proxy, cluster, None) {
            Ok(admitted) => record.admitted = Some(admitted),
            Err(error) => {
                keep_alive &= self.client.skip_body(head.body_len);
                return self.answer_error(record, error, keep_alive).await;
            }
        }
        let mut upstream = FastUpstream {
            client: &mut self.client,
            head: &head,
            upstream_head: &mut upstream_head,
            deadline: &mut *self.deadline,
            region_header: proxy.region_header(),
            alt_svc: self.conn.rules.alt_svc.as_ref(),
            streamed: false,
        };
        let sent = driver::send(proxy, cluster, &mut record, &head.method, &mut upstream).await;
        if !upstream.streamed {
            keep_alive &= self.client.skip_body(head.body_len);
        }
        buffers::give(upstream_head);
        match sent {
            Ok(sent) => {
                // The whole body (exactly Content-Length) went upstream with the request.
                record.received = Received::Bytes(head.body_len);
                let relay = Relay {
                    endpoint: record.in_flight.as_ref().map(|f| f.endpoint().clone()),
                    stream: sent.stream,
                    head: sent.head,
                    buf: sent.buf,
                    deadline: self.deadline,
                    idle: self.conn.rules.stream_idle_timeout,
                };
                let close = !keep_alive || relay.head.framing == Framing::UntilClose;
                let (bytes, completed) = relay
                    .run(self.client.io, &mut record, sent.out, close)
                    .await;
                record.finish(bytes, completed);
                completed && !close
            }
            // The client went away: nobody reads an answer.
            Err(ProxyError::ClientBody(_)) => {
                record.client_closed();
                false
            }
            Err(error) => self.answer_error(record, error, keep_alive).await,
        }
    }

    /// Answers with the proxy's own error response; returns whether the connection stays open.
    async fn answer_error(
        self,
        mut record: RequestRecord,
        error: ProxyError,
        keep_alive: bool,
    ) -> bool {
        driver::note_failure(&mut record, &error);
        let answer = error.answer();
        record.status = answer.status.as_u16();
        let mut out = Vec::with_capacity(256 + answer.body.len());
        let region = record.carbon.as_ref().map(|c| c.region.clone());
        let extra = response::Extra {
            region: self.proxy.region_header().zip(region.as_deref()),
            alt_svc: self.conn.rules.alt_svc.as_ref(),
        };
        response::write_local(&mut out, &answer, extra, !keep_alive);
        let sent = write_flush(self.client.io, &out).await.is_ok();
        record.finish(answer.body.len() as u64, sent);
        sent && keep_alive
    }
}

/// The client side of an exchange: its connection and the bytes read from it.
struct Client<'a, I> {
    io: &'a mut I,
    /// Bytes read and not yet used: the body (or part of it), then pipelined requests.
    buf: &'a mut Vec<u8>,
}

impl<I: ClientIo> Client<'_, I> {
    /// Drops a body the upstream never received from the client buffer; `false` when part of it
    /// is still unread on the connection, which then cannot carry another request.
    fn skip_body(&mut self, body_len: u64) -> bool {
        let here = usize::try_from(body_len)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        self.buf.drain(..here);
        here as u64 == body_len
    }

    /// One exchange with `endpoint`: connection, request, response head, on a pooled
    /// connection or a new one ([`upstream_h1::pooled_or_new`]).
    async fn attempt(
        &mut self,
        endpoint: &Endpoint,
        now: Instant,
        head: &request::Head,
        upstream_head: &mut Vec<u8>,
        extra: response::Extra<'_>,
        streamed: &mut bool,
    ) -> Result<Sent, ProxyError> {
        let idempotent = replay::is_idempotent(&head.method);
        let mut exchange = FastExchange {
            client: self,
            head,
            upstream_head,
            extra,
            streamed,
        };
        upstream_h1::pooled_or_new(endpoint, now, idempotent, &mut exchange).await
    }

    /// Sends the request on `stream` and reads the response head.
    async fn request(
        &mut self,
        mut stream: UpstreamStream,
        head: &request::Head,
        upstream_head: &mut Vec<u8>,
        extra: response::Extra<'_>,
        streamed: &mut bool,
    ) -> Result<Sent, Failure> {
        // The head and whatever of the body has arrived, in one write.
        let here = usize::try_from(head.body_len)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        let head_len = upstream_head.len();
        upstream_head.extend_from_slice(&self.buf[..here]);
        let written = stream.write_all(upstream_head).await;
        upstream_head.truncate(head_len);
        written.map_err(Failure::Stale)?;
        if (here as u64) < head.body_len {
            // From here on the body is consumed: this attempt is the only one.
            self.buf.drain(..here);
            *streamed = true;
            self.stream_body(&mut stream, head.body_len - here as u64)
                .await?;
        }
        stream.flush().await.map_err(reset)?;
        let head_request = head.method == http::Method::HEAD;
        self.response_head(stream, head_request, extra).await
    }

    /// Reads the final response head from `stream`, forwarding interim ones. While the upstream
    /// works, bytes the client sends are its next (pipelined) requests, kept for later; its
    /// close abandons this request, which drops the upstream connection: the upstream stops
    /// work no one will read, as an HTTP/2 reset or an HTTP/3 STOP_SENDING does.
    async fn response_head(
        &mut self,
        mut stream: UpstreamStream,
        head_request: bool,
        extra: response::Extra<'_>,
    ) -> Result<Sent, Failure> {
        let mut buf = buffers::take();
        let mut out = buffers::take();
        let mut received = false;
        loop {
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(reset(io::Error::other("response head too large")).into());
            }
            buf.reserve(READ_SIZE / 4);
            let read = tokio::select! {
                read = stream.read_buf(&mut buf) => read,
                more = self.io.read_buf(self.buf), if self.buf.len() < MAX_PIPELINED => {
                    match more {
                        Ok(0) | Err(_) => return Err(client_gone()),
                        Ok(_) => continue,
                    }
                }
            };
            upstream_h1::read_outcome(read, &mut received)?;
            while let Some(response) = response::parse(&buf, head_request, &mut out, extra)
                .map_err(|e| ProxyError::Upstream(Box::new(e)))?
            {
                if !response.status.is_informational() {
                    return Ok(Sent {
                        stream,
                        head: response,
                        buf,
                        out,
                    });
                }
                if interim::is_forwarded(response.status) {
                    self.forward_interim(&buf, head_request, &mut out).await?;
                }
                buf.drain(..response.len); // then wait for the final response
            }
        }
    }

    /// Writes the interim (1xx) head at the start of `buf` to the client (RFC 9110 §15.2),
    /// without hop-by-hop fields or the headers the proxy adds to final responses.
    async fn forward_interim(
        &mut self,
        buf: &[u8],
        head_request: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let plain = response::Extra {
            region: None,
            alt_svc: None,
        };
        response::parse(buf, head_request, out, plain)
            .map_err(|e| ProxyError::Upstream(Box::new(e)))?;
        response::end_head(out, false);
        write_flush(self.io, out).await.map_err(|_| client_gone())
    }

    /// Copies `left` body bytes from the client to the upstream, a buffer at a time.
    async fn stream_body(
        &mut self,
        stream: &mut UpstreamStream,
        mut left: u64,
    ) -> Result<(), Failure> {
        self.buf.clear();
        while left > 0 {
            self.buf.reserve(READ_SIZE);
            let n = self
                .io
                .read_buf(self.buf)
                .await
                .map_err(|_| client_gone())?;
            if n == 0 {
                return Err(client_gone());
            }
            let take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            stream.write_all(&self.buf[..take]).await.map_err(reset)?;
            self.buf.drain(..take); // what is left belongs to the next request
            left -= take as u64;
        }
        Ok(())
    }
}

/// The upstream's response on its way to the client.
struct Relay<'a> {
    endpoint: Option<Arc<Endpoint>>,
    stream: UpstreamStream,
    head: response::Head,
    /// Upstream bytes read: the head, then the start of the body.
    buf: Vec<u8>,
    /// The connection's timer: every read and write must progress within `idle`.
    deadline: &'a mut Deadline,
    /// The listener's stream idle timeout.
    idle: Duration,
}

/// Runs one read or write of a response relay within the stream idle timeout: a client that
/// stops reading, or an upstream that stops sending, is cut off, freeing the cluster slot. An
/// operation that completes at its first poll (most writes, every flush of plain TCP) costs no
/// clock read and no timer.
async fn progress<T>(
    deadline: &mut Deadline,
    idle: Duration,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let mut io = pin!(io);
    if let Poll::Ready(done) = poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return done;
    }
    let until = tokio::time::Instant::now() + idle;
    match deadline.run(until, io).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "stream idle timeout",
        )),
    }
}

impl Relay<'_> {
    /// Writes the response head and streams the body; returns the body bytes sent and whether
    /// the response went out complete. A clean upstream connection goes back to its pool.
    async fn run<I: ClientIo>(
        mut self,
        io: &mut I,
        record: &mut RequestRecord,
        mut out: Vec<u8>,
        close: bool,
    ) -> (u64, bool) {
        record.status = self.head.status.as_u16();
        record.upstream_tls_group = self.stream.tls_group();
        response::end_head(&mut out, close);
        let start = self.head.len;
        let relayed = match self.head.framing {
            Framing::Empty => self.fixed(io, &mut out, start, 0).await,
            Framing::Length(n) => self.fixed(io, &mut out, start, n).await,
            Framing::Chunked => self.chunked(io, &mut out, start).await,
            Framing::UntilClose => self.until_close(io, &mut out, start).await,
        };
        buffers::give(out);
        let completed = relayed.is_ok();
        let (bytes, clean) = relayed.unwrap_or((0, false));
        buffers::give(std::mem::take(&mut self.buf));
        if clean && self.head.reusable {
            if let Some(endpoint) = &self.endpoint {
                endpoint.idle.put(self.stream, Instant::now());
            }
        }
        (bytes, completed)
    }

    /// A body of exactly `len` bytes. Returns the bytes sent and whether the upstream connection
    /// ended exactly at the end of the response.
    async fn fixed<I: ClientIo>(
        &mut self,
        io: &mut I,
        out: &mut Vec<u8>,
        start: usize,
        len: u64,
    ) -> io::Result<(u64, bool)> {
        let here = (self.buf.len() - start).min(usize::try_from(len).unwrap_or(usize::MAX));
        out.extend_from_slice(&self.buf[start..start + here]);
        let mut clean = start + here == self.buf.len();
        progress(self.deadline, self.idle, io.write_all(out)).await?;
        let mut left = len - here as u64;
        while left > 0 {
            let n = self.read().await?;
            let take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            clean = take == n;
            progress(self.deadline, self.idle, io.write_all(&self.buf[..take])).await?;
            left -= take as u64;
        }
        progress(self.deadline, self.idle, io.flush()).await?;
        Ok((len, clean))
    }

    /// A chunked body, passed through as it is.
    async fn chunked<I: ClientIo>(
        &mut self,
        io: &mut I,
        out: &mut Vec<u8>,
        start: usize,
    ) -> io::Result<(u64, bool)> {
        let mut body = Chunked::default();
        let used = body.advance(&self.buf[start..]).map_err(io::Error::other)?;
        out.extend_from_slice(&self.buf[start..start + used]);
        let mut clean = start + used == self.buf.len();
        progress(self.deadline, self.idle, io.write_all(out)).await?;
        while !body.is_done() {
            let n = self.read().await?;
            let used = body.advance(&self.buf[..n]).map_err(io::Error::other)?;
            clean = used == n;
            progress(self.deadline, self.idle, io.write_all(&self.buf[..used])).await?;
        }
        progress(self.deadline, self.idle, io.flush()).await?;
        Ok((body.data_bytes(), clean))
    }

    /// A body that ends when the upstream closes; the client connection closes after it.
    async fn until_close<I: ClientIo>(
        &mut self,
        io: &mut I,
        out: &mut Vec<u8>,
        start: usize,
    ) -> io::Result<(u64, bool)> {
        let mut bytes = (self.buf.len() - start) as u64;
        out.extend_from_slice(&self.buf[start..]);
        progress(self.deadline, self.idle, io.write_all(out)).await?;
        loop {
            self.buf.clear();
            self.buf.reserve(READ_SIZE);
            let read = self.stream.read_buf(&mut self.buf);
            let n = progress(self.deadline, self.idle, read).await?;
            if n == 0 {
                break;
            }
            progress(self.deadline, self.idle, io.write_all(&self.buf[..n])).await?;
            bytes += n as u64;
        }
        progress(self.deadline, self.idle, io.flush()).await?;
        Ok((bytes, false))
    }

    /// Replaces the buffer's contents with the next bytes from the upstream; EOF is an error
    /// (the body is not complete yet).
    async fn read(&mut self) -> io::Result<usize> {
        self.buf.clear();
        self.buf.reserve(READ_SIZE);
        let read = self.stream.read_buf(&mut self.buf);
        match progress(self.deadline, self.idle, read).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed mid-body",
            )),
            n => Ok(n),
        }
    }
}

async fn write_flush<I: ClientIo>(io: &mut I, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
