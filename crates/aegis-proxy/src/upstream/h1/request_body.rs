//! A request body on its way to an HTTP/1.1 endpoint (`upstream::h1`): as it is, when the head
//! declares `Content-Length`, else chunked, with the client's trailers as the trailer section
//! (RFC 9112 §7.1.2), whichever protocol the client spoke.
//!
//! The exchange is full duplex, as hyper's client is: the response head may arrive before the
//! body is complete (a 413, or an origin that echoes as it reads), and the rest of the body
//! then goes out as the response body is polled. An upload cut short (the endpoint answered and
//! stopped reading, or the response ended first) closes the connection instead of pooling it.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::Body as HttpBody;
use tokio::io::AsyncWrite;

use super::Failure;
use crate::dial::UpstreamBody;
use crate::http::error::ProxyError;
use crate::http::wire::reset;

/// How the body is framed on the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Exactly this many bytes, as the head's `Content-Length` says.
    Length(u64),
    /// `Transfer-Encoding: chunked` (the head must say so).
    Chunked,
}

impl Framing {
    /// The framing for a body under `headers` (already rewritten for the upstream).
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        declared.map_or(Self::Chunked, Self::Length)
    }
}

/// The body of one request, sent at most once.
#[derive(Debug)]
pub(super) struct RequestBody {
    body: UpstreamBody,
    framing: Framing,
    /// The listener's body limit, for the 413 a body over it gets.
    limit: Option<u64>,
    /// Bytes still expected under `Content-Length`.
    left: u64,
    /// The framed bytes of the current frame, and how many of them are written.
    out: Vec<u8>,
    written: usize,
    /// The last frame is framed: once `out` is written, flush and stop.
    ended: bool,
    /// `out` holds the request head, which waits for the first frame: both go out in one
    /// write, and a body that fails at once (over the limit) leaves the endpoint untouched.
    holding_head: bool,
    /// Some of the body was read from the client: no other attempt can send it.
    pub(super) consumed: bool,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upload {
    /// All of it went out.
    Complete,
    /// The endpoint stopped taking it (a write failed): the connection cannot be reused, but
    /// the response it may have sent is still worth reading.
    Cut,
}

impl RequestBody {
    /// A body to send with `framing`.
    pub(super) fn new(body: UpstreamBody, framing: Framing, limit: Option<u64>) -> Self {
        Self {
            body,
            framing,
            limit,
            left: match framing {
                Framing::Length(n) => n,
                Framing::Chunked => 0,
            },
            out: Vec::new(),
            written: 0,
            ended: false,
            holding_head: false,
            consumed: false,
        }
    }

    /// Starts the upload on a connection: `head` goes out with the first frame of the body.
    pub(super) fn start(&mut self, head: &[u8]) {
        debug_assert!(!self.consumed, "a consumed body is never sent again");
        self.out.clear();
        self.out.extend_from_slice(head);
        self.written = 0;
        self.holding_head = true;
    }

    /// How the body is framed.
    pub(super) fn framing(&self) -> Framing {
        self.framing
    }

    /// Writes the body on `stream` as far as it can without waiting: `Ready` once it is all
    /// out (or the endpoint stopped taking it), `Pending` while the client has not sent more or
    /// the connection is full.
    pub(super) fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut W,
    ) -> Poll<Result<Upload, Failure>> {
        loop {
            while !self.holding_head && self.written < self.out.len() {
                match ready!(Pin::new(&mut *stream).poll_write(cx, &self.out[self.written..])) {
                    Ok(0) | Err(_) => return Poll::Ready(Ok(Upload::Cut)),
                    Ok(n) => self.written += n,
                }
            }
            if self.ended && !self.holding_head {
                return match ready!(Pin::new(&mut *stream).poll_flush(cx)) {
                    Ok(()) => Poll::Ready(Ok(Upload::Complete)),
                    Err(_) => Poll::Ready(Ok(Upload::Cut)),
                };
            }
            let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
            self.consumed = true;
            if !self.holding_head {
                self.out.clear();
                self.written = 0;
            }
            self.holding_head = false;
            match frame {
                None => self.end(None)?,
                Some(Err(error)) => {
                    let error = ProxyError::from_request_body(error, self.limit);
                    return Poll::Ready(Err(Failure::Proxy(error)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.data(data)?,
                    Err(frame) => self.end(frame.into_trailers().ok())?,
                },
            }
        }
    }

    /// Frames one data frame into `out`.
    fn data(&mut self, data: Bytes) -> Result<(), Failure> {
        let len = data.len() as u64;
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Length(_) if len > self.left => return Err(length_differs()),
            Framing::Length(_) => self.left -= len,
            // Writing to a `Vec` cannot fail.
            Framing::Chunked => {
                let _ = write!(self.out, "{len:x}\r\n");
            }
        }
        self.out.extend_from_slice(&data);
        if self.framing == Framing::Chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// Frames the end of the body, with the client's `trailers` when it is chunked (a body
    /// framed by `Content-Length` has nowhere to put them).
    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), Failure> {
        self.ended = true;
        match self.framing {
            Framing::Length(_) if self.left > 0 => Err(length_differs()),
            Framing::Length(_) => Ok(()),
            Framing::Chunked => {
                self.out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.iter().flatten() {
                    self.out.extend_from_slice(name.as_str().as_bytes());
                    self.out.extend_from_slice(b": ");
                    self.out.extend_from_slice(value.as_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
                self.out.extend_from_slice(b"\r\n");
                Ok(())
            }
        }
    }
}

/// A body whose length differs from its `Content-Length` (the client's framing error; the
/// servers in front already refuse most such bodies).
fn length_differs() -> Failure {
    let error = io::Error::new(
        io::ErrorKind::InvalidData,
        "body length differs from content-length",
    );
    Failure::Proxy(ProxyError::ClientBody(Box::new(error)))
}

/// The request could not be completed on this connection after its body was consumed: an
/// ordinary reset, never a stale connection (the body cannot go again).
pub(super) fn after_body(failure: Failure) -> Failure {
    match failure {
        Failure::Stale(error) => Failure::Proxy(reset(error)),
        other => other,
    }
}
