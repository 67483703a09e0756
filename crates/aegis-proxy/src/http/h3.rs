//! Serves HTTP/3 on an established QUIC connection, handing every request to
//! [`forward`](super::forward) like HTTP/1.1 and HTTP/2 do.
//!
//! h3 (patched: `patches/README.md`) validates frames and field sections; a malformed stream is
//! reset with the HTTP/3 error code h3 chose (RFC 9114 §8) and does not disturb the other
//! streams of the connection. The one rule h3 cannot see, a request body that disagrees with
//! its `content-length` (RFC 9114 §4.1.2), is checked here as the DATA frames arrive.

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::ext::{InformationalReceiver, InformationalSender};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::interim::Interim;
use super::{forward, ConnInfo, Proxy};
use crate::{Body, BoxError};

//= https://www.rfc-editor.org/rfc/rfc9114#section-4.1.2
//# Malformed requests or responses that are detected MUST be treated as a stream error of type
//# H3_MESSAGE_ERROR.
const MALFORMED: h3::error::Code = h3::error::Code::H3_MESSAGE_ERROR;

//= https://www.rfc-editor.org/rfc/rfc9114#section-8.1
//# H3_NO_ERROR (0x0100): No error. This is used when the connection or stream needs to be
//# closed, but there is no error to signal.
const H3_NO_ERROR: u32 = 0x100;

/// How long a request that should carry no body may take to end its stream.
const END_OF_BODYLESS_REQUEST: Duration = Duration::from_secs(1);

/// GET, HEAD, OPTIONS, DELETE and TRACE without `content-length`, or anything with
/// `content-length: 0`, is not expected to carry a body.
fn expects_no_body(parts: &http::request::Parts) -> bool {
    use http::Method;
    match parts.headers.get(http::header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::DELETE,
            Method::TRACE,
        ]
        .contains(&parts.method),
    }
}

/// Serves requests until the client closes, or drains once `shutdown` turns true: GOAWAY, then
/// the requests in flight finish and their responses are acknowledged, then the connection
/// closes with `H3_NO_ERROR`.
pub async fn serve_connection(
    connection: quinn::Connection,
    proxy: Arc<ArcSwap<Proxy>>,
    info: ConnInfo,
    max_header_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let built = h3::server::builder()
        .max_field_section_size(max_header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(error) => {
            tracing::debug!(%error, "http/3 connection setup failed");
            return;
        }
    };
    let mut info = info;
    info.admitted = Some(Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    let info = Arc::new(info);
    let mut requests = JoinSet::new();
    let (mut draining, mut goaway_sent) = (false, false);
    loop {
        if draining && requests.is_empty() {
            // Every response has been acknowledged (see `relay_body`): nothing is lost.
            connection.close(H3_NO_ERROR.into(), b"shutdown");
            break;
        }
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let (proxy, info) = (proxy.load_full(), info.clone());
                    requests.spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((request, stream)) => handle(&proxy, &info, request, stream).await,
                            Err(error) => tracing::debug!(%error, "http/3 request rejected"),
                        }
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "http/3 connection ended");
                    break;
                }
            },
            stop = shutdown.wait_for(|stop| *stop), if !draining => {
                drop(stop);
                draining = true;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        }
        if draining && !goaway_sent {
            goaway_sent = true;
            if let Err(error) = h3.shutdown(0).await {
                tracing::debug!(%error, "http/3 goaway failed");
            }
        }
    }
    while requests.join_next().await.is_some() {}
}

/// The next interim response already queued, without waiting.
fn queued(interims: &InformationalReceiver) -> Option<Response<()>> {
    match interims.poll_next(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(informational) => Some(informational),
        Poll::Pending => None,
    }
}

/// What a request's stream waits for.
enum Next {
    Final(Response<Body>),
    Interim(Response<()>),
    Stopped(Option<h3::error::Code>),
}

async fn handle(
    proxy: &Proxy,
    info: &ConnInfo,
    request: Request<()>,
    stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) {
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = request.into_parts();
    parts.version = Version::HTTP_3;
    let Ok(declared) = declared_length(&parts.headers) else {
        tracing::debug!("malformed http/3 request: invalid content-length");
        return send.stop_stream(MALFORMED);
    };
    let malformed = Arc::new(AtomicBool::new(false));
    let mut body = RecvBody::new(recv, declared, malformed.clone());
    if expects_no_body(&parts) {
        // Clients often send the stream's end just after the HEADERS frame: wait for it, so
        // the request is forwarded without a body rather than as an empty chunked one.
        let _ = tokio::time::timeout(END_OF_BODYLESS_REQUEST, body.peek(true)).await;
    } else {
        body.peek(false).await;
    }
    let (interim, interims) = InformationalSender::channel();
    let request = Request::from_parts(parts, body);
    let mut forwarding = pin!(forward(proxy, info, request, Some(Interim(interim))));
    let response = loop {
        // A client that abandons the request (STOP_SENDING on the response, RFC 9114 §4.1.1)
        // cancels it: dropping `forward` drops the upstream exchange, as a reset does on
        // HTTP/2. Interim responses go out as they come (RFC 9114 §4.1).
        let next = tokio::select! {
            biased;
            response = &mut forwarding => Next::Final(response),
            informational = std::future::poll_fn(|cx| interims.poll_next(cx)) => {
                Next::Interim(informational)
            }
            stopped = std::future::poll_fn(|cx| send.poll_stopped(cx)) => Next::Stopped(stopped),
        };
        match next {
            Next::Final(response) => break response,
            Next::Interim(informational) => {
                if send.send_response(informational).await.is_err() {
                    return;
                }
            }
            Next::Stopped(stopped) => {
                // STOP_SENDING, or the connection is gone.
                tracing::debug!(code = ?stopped, "http/3 request cancelled by the client");
                return send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            }
        }
    };
    // Those sent just before the final response still go first; none after it.
    while let Some(informational) = queued(&interims) {
        if send.send_response(informational).await.is_err() {
            return;
        }
    }
    interims.close();
    if malformed.load(Ordering::Acquire) {
        // The upstream request was cut off with the body; the client gets the stream error.
        return send.stop_stream(MALFORMED);
    }
    let (parts, body) = response.into_parts();
    if let Err(error) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%error, "http/3 response head not sent");
        return;
    }
    relay_body(&mut send, body, info.rules.stream_idle_timeout, &malformed).await;
}

/// Sends the response body and trailers, then ends the stream. No progress in either
/// direction for `idle` (the upstream sends nothing, or the client's flow-control window stays
/// shut) cuts the response off; the body, its cluster slot and upstream connection are
/// dropped with the request's task.
async fn relay_body(
    send: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    mut body: Body,
    idle: Duration,
    malformed: &AtomicBool,
) {
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return stream_idle(send);
        };
        let Some(frame) = frame else { break };
        let sending = async {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => send.send_data(data).await.map(Some),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => send.send_trailers(trailers).await.map(Some),
                        Err(_) => Ok(Some(())),
                    },
                },
                Err(error) => {
                    tracing::debug!(%error, "response body failed; resetting http/3 stream");
                    Ok(None)
                }
            }
        };
        match tokio::time::timeout(idle, sending).await {
            Ok(Ok(Some(()))) => {}
            Ok(Ok(None)) if malformed.load(Ordering::Acquire) => {
                return send.stop_stream(MALFORMED)
            }
            Ok(Ok(None)) => return send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR),
            Ok(Err(error)) => {
                tracing::debug!(%error, "http/3 client went away");
                return;
            }
            Err(_) => return stream_idle(send),
        }
    }
    if let Err(error) = send.finish().await {
        tracing::debug!(%error, "http/3 stream not finished");
        return;
    }
    // `finish` only queues the last bytes, and closing the connection discards what is
    // unsent: the request is done once the client has acknowledged all of its response (or
    // stopped it, or the connection is gone), so a draining connection can close at once.
    let acknowledged = std::future::poll_fn(|cx| send.poll_stopped(cx));
    if tokio::time::timeout(idle, acknowledged).await.is_err() {
        tracing::debug!("http/3 response never acknowledged within the stream idle timeout");
    }
}

/// Resets a stream that made no progress for the stream idle timeout.
fn stream_idle(send: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>) {
    tracing::debug!("stream idle timeout: http/3 response cut off");
    send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
}

/// The request's `content-length`, if it has one; an error if it is not one number.
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, ()> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let length = std::str::from_utf8(first.as_bytes())
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or(())?;
    match values.all(|other| other == first) {
        true => Ok(Some(length)),
        false => Err(()),
    }
}

/// The request body of an HTTP/3 stream as an [`http_body::Body`].
struct RecvBody {
    stream: RequestStream<h3_quinn::RecvStream, Bytes>,
    state: RecvState,
    /// The first frame or error, read ahead by [`RecvBody::peek`].
    peeked: Option<Result<Frame<Bytes>, BoxError>>,
    /// The `content-length` the DATA frames must add up to.
    declared: Option<u64>,
    received: u64,
    /// The last bytes of the declared length, held until the DATA frames end.
    held: Option<Bytes>,
    /// Set when the body broke a rule of RFC 9114 §4.1.2: the stream gets H3_MESSAGE_ERROR.
    malformed: Arc<AtomicBool>,
    /// A read is in flight inside h3-quinn, which then does not hold the stream: calling
    /// `stop_sending` now would panic there (h3-quinn 0.0.10, `RecvStream::stop_sending`).
    reading: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    Data,
    Trailers,
    Done,
}

impl RecvBody {
    fn new(
        stream: RequestStream<h3_quinn::RecvStream, Bytes>,
        declared: Option<u64>,
        malformed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            stream,
            state: RecvState::Data,
            peeked: None,
            declared,
            received: 0,
            held: None,
            malformed,
            reading: false,
        }
    }

    /// Ends the body with an error and marks the stream malformed.
    fn refuse(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::debug!(why, "malformed http/3 request body");
        self.malformed.store(true, Ordering::Release);
        self.state = RecvState::Done;
        self.stream.stop_sending(MALFORMED);
        Poll::Ready(Some(Err(why.into())))
    }

    /// Counts a DATA frame against the declared length.
    fn count(&mut self, len: usize) -> Result<(), &'static str> {
        self.received += len as u64;
        match self.declared {
            //= https://www.rfc-editor.org/rfc/rfc9114#section-4.1.2
            //# A request or response that is defined as having content when it contains a
            //# Content-Length header field [...] is malformed if the value of the
            //# Content-Length header field does not equal the sum of the DATA frame lengths
            //# received.
            Some(declared) if self.received > declared => Err("more data than content-length"),
            _ => Ok(()),
        }
    }

    /// Checks the declared length once the DATA frames have ended.
    fn complete(&self) -> Result<(), &'static str> {
        match self.declared {
            Some(declared) if self.received != declared => Err("less data than content-length"),
            _ => Ok(()),
        }
    }

    /// Reads the first frame ahead (waiting for it when `wait`), so that a stream that has
    /// already ended is known to carry no body.
    async fn peek(&mut self, wait: bool) {
        let frame = std::future::poll_fn(|cx| match Pin::new(&mut *self).poll_frame(cx) {
            Poll::Pending if !wait => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(frame),
        })
        .await;
        self.peeked = frame;
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        if self.state != RecvState::Done && !self.reading {
            //= https://www.rfc-editor.org/rfc/rfc9114#section-4.1
            //# A server can send a complete response prior to the client sending an entire
            //# request [...] the server MAY abort reading the request stream [...] with
            //# error code H3_NO_ERROR.
            self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.peeked.take() {
            return Poll::Ready(Some(frame));
        }
        while self.state == RecvState::Data {
            let polled = self.stream.poll_recv_data(cx);
            self.reading = polled.is_pending();
            match polled {
                Poll::Ready(Ok(Some(mut data))) => {
                    if let Err(why) = self.count(data.remaining()) {
                        return self.refuse(why);
                    }
                    let bytes = data.copy_to_bytes(data.remaining());
                    if self.declared != Some(self.received) {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    // The declared length is complete: its last bytes wait for the end of the
                    // DATA frames, so a body that runs longer is never forwarded whole.
                    if !bytes.is_empty() {
                        self.held = Some(bytes);
                    }
                }
                Poll::Ready(Ok(None)) => match self.complete() {
                    Ok(()) => self.state = RecvState::Trailers,
                    Err(why) => return self.refuse(why),
                },
                Poll::Ready(Err(error)) => {
                    self.state = RecvState::Done;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if let Some(bytes) = self.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if self.state == RecvState::Trailers {
            let polled = self.stream.poll_recv_trailers(cx);
            if polled.is_ready() {
                self.state = RecvState::Done;
            }
            return match polled {
                Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Poll::Ready(Ok(None)) => Poll::Ready(None),
                Poll::Ready(Err(h3::error::StreamError::StreamError { code, .. }))
                    if code == MALFORMED =>
                {
                    self.refuse("malformed trailer section")
                }
                Poll::Ready(Err(error)) => Poll::Ready(Some(Err(Box::new(error)))),
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.is_none() && self.held.is_none() && self.state == RecvState::Done
    }
}
