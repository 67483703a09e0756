//! Raw HTTP/2 frames, written by hand, so a test can send what a real client never would
//! (frames of the wrong length, DATA after END_STREAM, pseudo-headers in trailers) and see the
//! exact error code the proxy answers with. Field blocks are HPACK literals without indexing
//! and without Huffman coding (RFC 7541 §6.2.2).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const COMPRESSION_ERROR: u32 = 0x9;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM frame.
    pub fn error_code(&self) -> Option<u32> {
        let code = match self.kind {
            GOAWAY => self.payload.get(4..8)?,
            RST_STREAM => self.payload.get(..4)?,
            _ => return None,
        };
        Some(u32::from_be_bytes(code.try_into().ok()?))
    }
}

/// A frame's bytes: the 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS frame with `fields` in this order.
pub fn headers(stream: u32, flags: u8, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        // Literal without indexing, new name (RFC 7541 §6.2.2): 0x00, then name and value,
        // each a length (7-bit prefix, H=0) and the octets; the tests stay under 127.
        block.push(0);
        for part in [name, value] {
            assert!(part.len() < 127, "field too long for this encoder");
            block.push(part.len() as u8);
            block.extend_from_slice(part.as_bytes());
        }
    }
    frame(HEADERS, flags | END_HEADERS, stream, &block)
}

/// How a field block represents one field (RFC 7541 §6): whether it is added to the dynamic
/// table, and the static or dynamic index of its name (0: a literal name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// §6.1: the whole field from the table.
    Indexed(usize),
    /// §6.2.1: literal, added to the dynamic table.
    Incremental(usize),
    /// §6.2.2 and §6.2.3: literal, left out of the dynamic table.
    WithoutIndexing(usize),
}

/// The representations of a field block, in order (dynamic table size updates skipped).
pub fn representations(mut block: &[u8]) -> Vec<Representation> {
    let mut out = Vec::new();
    while let Some(&first) = block.first() {
        let (kind, prefix): (fn(usize) -> Representation, u8) = match first {
            0x80.. => (Representation::Indexed, 7),
            0x40.. => (Representation::Incremental, 6),
            0x20.. => {
                block = integer(block, 5).1;
                continue;
            }
            _ => (Representation::WithoutIndexing, 4),
        };
        let (index, rest) = integer(block, prefix);
        block = rest;
        if !matches!(kind(index), Representation::Indexed(_)) {
            if index == 0 {
                block = string(block);
            }
            block = string(block);
        }
        out.push(kind(index));
    }
    out
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1), and what follows it.
fn integer(bytes: &[u8], prefix: u8) -> (usize, &[u8]) {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(bytes[0]) & mask;
    let mut rest = &bytes[1..];
    if value == mask {
        let mut shift = 0;
        while let Some((&b, tail)) = rest.split_first() {
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            rest = tail;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    (value, rest)
}

/// Skips a string literal (RFC 7541 §5.2): a length with a 7-bit prefix, then the octets.
fn string(bytes: &[u8]) -> &[u8] {
    let (len, rest) = integer(bytes, 7);
    &rest[len..]
}

/// Opens the connection as a client does (preface, empty SETTINGS), writes `bytes`, then
/// reads frames until the proxy sends GOAWAY or RST_STREAM, ends a response (END_STREAM), or
/// closes the connection.
pub async fn exchange<S>(io: &mut S, bytes: &[u8]) -> Vec<Frame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend_from_slice(bytes);
    // The proxy may close before it has read everything.
    let _ = io.write_all(&out).await;
    read_until_end(io).await
}

/// Opens the connection as a client does: the preface and an empty SETTINGS frame.
pub async fn open<S: AsyncWrite + Unpin>(io: &mut S) {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    io.write_all(&out).await.unwrap();
}

/// Reads frames until GOAWAY, RST_STREAM, a response's END_STREAM or the connection's end.
pub async fn read_until_end<S: AsyncRead + Unpin>(io: &mut S) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = read_frame(io).await {
        let ended = matches!(frame.kind, HEADERS | DATA) && frame.flags & END_STREAM != 0;
        let last = ended || matches!(frame.kind, GOAWAY | RST_STREAM);
        frames.push(frame);
        if last {
            break;
        }
    }
    frames
}

/// The last frame's error code, if it is GOAWAY or RST_STREAM, with its kind.
pub fn ending(frames: &[Frame]) -> Option<(u8, u32)> {
    let last = frames.last()?;
    Some((last.kind, last.error_code()?))
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}
