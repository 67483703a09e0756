//! A guard in front of hyper's HTTP/1 parser that rejects request smuggling attempts hyper
//! would tolerate.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding` (it drops the
//! length and closes afterwards, as RFC 9112 §6.3 allows). A proxy must not: a peer behind or in
//! front of it may frame the same bytes differently. The guard watches the bytes hyper reads,
//! follows message boundaries (heads, fixed-length and chunked bodies), and when a head carries
//! both framing headers it withholds the rest of that head and hands hyper an unparseable line
//! instead, so hyper answers 400 and closes. It never buffers: bytes are inspected as they pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads larger than this are left to hyper's own limit (it answers 431).
const MAX_HEAD: usize = 1024 * 1024;
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head; its bytes so far are in `head`.
    Head,
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Reading a chunk-size line; the size so far, and whether an extension started.
    ChunkSize { size: u64, extension: bool },
    /// Inside chunk data with this many bytes left.
    ChunkData(u64),
    /// After chunk data, up to and including its line ending.
    ChunkEnd,
    /// Reading trailer lines; the length of the current line (without CR).
    Trailers(usize),
    /// No longer HTTP/1 framing we follow (HTTP/2 preface, upgrade, or a parse error hyper
    /// will reject itself).
    Passthrough,
    /// A smuggling attempt was neutralised; report end of stream from now on.
    Rejected,
}

/// Wraps a client connection that will speak HTTP/1 (or h2c by prior knowledge).
#[derive(Debug)]
pub struct FramingGuard<IO> {
    inner: IO,
    state: State,
    head: Vec<u8>,
}

impl<IO> FramingGuard<IO> {
    /// Starts watching `inner` at the beginning of a request.
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            state: State::Head,
            head: Vec::new(),
        }
    }

    /// Follows framing through `bytes`; returns how many of them to hand on: all, unless a
    /// smuggling attempt was found, in which case the offending head's bytes are withheld and
    /// the state becomes [`State::Rejected`].
    fn inspect(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.state {
                State::Head => match self.head_bytes(&bytes[at..]) {
                    Ok(used) => used,
                    Err(()) => {
                        self.state = State::Rejected;
                        return at;
                    }
                },
                State::Length(left) => {
                    let used = left.min((bytes.len() - at) as u64);
                    self.state = if used == left {
                        State::Head
                    } else {
                        State::Length(left - used)
                    };
                    used as usize
                }
                State::ChunkData(left) => {
                    let used = left.min((bytes.len() - at) as u64);
                    self.state = if used == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - used)
                    };
                    used as usize
                }
                State::ChunkSize { .. } | State::ChunkEnd | State::Trailers(_) => {
                    self.chunk_byte(bytes[at]);
                    1
                }
                State::Passthrough | State::Rejected => return bytes.len(),
            };
        }
        bytes.len()
    }

    /// Consumes head bytes; returns how many belonged to the head, or `Err` on smuggling.
    fn head_bytes(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let before = self.head.len();
        let take = bytes.len().min(MAX_HEAD.saturating_sub(before));
        if take == 0 {
            self.state = State::Passthrough;
            return Ok(bytes.len());
        }
        self.head.extend_from_slice(&bytes[..take]);
        let mut slots = super::wire::header_slots::<MAX_HEADERS>();
        let mut request = httparse::Request::new(&mut []);
        let parsed = request.parse_with_uninit_headers(&self.head, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(take),
            Err(_) => {
                // hyper parses the same bytes and rejects them itself.
                self.state = State::Passthrough;
                return Ok(bytes.len());
            }
        };
        let next = body_state(&request);
        if next == State::Rejected {
            return Err(());
        }
        self.state = next;
        self.head.clear();
        Ok(len - before)
    }

    fn chunk_byte(&mut self, byte: u8) {
        self.state = match (self.state, byte) {
            (State::ChunkSize { size: 0, .. }, b'\n') => State::Trailers(0),
            (State::ChunkSize { size, .. }, b'\n') => State::ChunkData(size),
            (
                State::ChunkSize {
                    size,
                    extension: false,
                },
                b,
            ) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                    Some(size) => State::ChunkSize {
                        size,
                        extension: false,
                    },
                    None => State::Passthrough,
                }
            }
            (State::ChunkSize { size, .. }, b';') => State::ChunkSize {
                size,
                extension: true,
            },
            (state @ State::ChunkSize { .. }, _) => state,
            (State::ChunkEnd, b'\n') => State::ChunkSize {
                size: 0,
                extension: false,
            },
            (State::ChunkEnd, _) => State::ChunkEnd,
            (State::Trailers(0), b'\n') => State::Head,
            (State::Trailers(_), b'\n') => State::Trailers(0),
            (State::Trailers(n), b'\r') => State::Trailers(n),
            (State::Trailers(n), _) => State::Trailers(n + 1),
            (other, _) => other,
        };
    }
}

/// What follows a complete request head.
fn body_state(request: &httparse::Request<'_, '_>) -> State {
    if request.method == Some("PRI") || request.method == Some("CONNECT") {
        return State::Passthrough;
    }
    let mut length = None;
    let mut chunked = None;
    let mut upgrade = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if length.is_none() {
                return State::Passthrough;
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => State::Rejected,
        _ if upgrade => State::Passthrough,
        (_, Some(true)) => State::ChunkSize {
            size: 0,
            extension: false,
        },
        // Not chunked last: hyper rejects it.
        (_, Some(false)) => State::Passthrough,
        (Some(0) | None, None) => State::Head,
        (Some(n), None) => State::Length(n),
    }
}

/// Ends a withheld head so hyper fails to parse it: NUL is invalid anywhere in a request head,
/// and the blank line makes hyper parse at once rather than wait for more bytes.
const POISON: &[u8] = b"\0\r\n\r\n";

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state == State::Rejected {
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if this.state != State::Passthrough {
                let end = buf.filled().len();
                let keep = this.inspect(&buf.filled()[start..end]);
                buf.set_filled(start + keep);
                if this.state == State::Rejected {
                    let room = POISON.len().min(buf.remaining());
                    buf.put_slice(&POISON[..room]);
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
