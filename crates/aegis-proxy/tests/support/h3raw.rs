//! Raw HTTP/3 request streams: frames written by hand, so a test can send the field sections
//! and bodies that h3's own client refuses to produce (duplicate or late pseudo-headers,
//! connection-specific fields, a body that disagrees with its `content-length`).
//!
//! The QPACK encoder writes every field as a literal with a literal name (RFC 9204 §4.5.6),
//! without Huffman coding or the dynamic table; the decoder reads only the `:status` a static
//! table entry carries (RFC 9204 Appendix A), which is how h3 encodes common statuses.

/// What the proxy did with a raw request stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawOutcome {
    /// A response whose `:status` is a static-table entry.
    Status(u16),
    /// The stream was reset with this HTTP/3 error code.
    Reset(u64),
    /// Anything else: the bytes the stream carried.
    Other(Vec<u8>),
}

//= https://www.rfc-editor.org/rfc/rfc9114#section-8.1
//# H3_MESSAGE_ERROR (0x010e): An HTTP message was malformed and cannot be processed.
pub const H3_MESSAGE_ERROR: u64 = 0x10e;

/// A HEADERS frame carrying `fields` in this order, names and values as given.
pub fn headers(fields: &[(&str, &str)]) -> Vec<u8> {
    // Required Insert Count 0, Base 0: no dynamic table (RFC 9204 §4.5.1).
    let mut block = vec![0, 0];
    for (name, value) in fields {
        // 001 N=0 H=0, then the name length as a 3-bit prefix integer.
        prefix_integer(&mut block, 0b0010_0000, 3, name.len());
        block.extend_from_slice(name.as_bytes());
        // H=0, then the value length as a 7-bit prefix integer.
        prefix_integer(&mut block, 0, 7, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    frame(0x01, &block)
}

/// A DATA frame.
pub fn data(bytes: &[u8]) -> Vec<u8> {
    frame(0x00, bytes)
}

/// Sends `frames` on a new request stream, ends it, and reads what comes back.
pub async fn exchange(connection: &quinn::Connection, frames: &[u8]) -> RawOutcome {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The proxy may stop reading a malformed stream before all of it is written.
    let _ = send.write_all(frames).await;
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Ok(bytes) => status_of(&bytes).map_or(RawOutcome::Other(bytes), RawOutcome::Status),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            RawOutcome::Reset(code.into_inner())
        }
        Err(error) => panic!("request stream failed: {error}"),
    }
}

/// Opens the client's control stream (RFC 9114 §6.2.1) with an empty SETTINGS frame, as a
/// client must, for a session that has no h3 client to do it.
pub async fn open_control_stream(connection: &quinn::Connection) -> quinn::SendStream {
    let mut control = connection.open_uni().await.unwrap();
    let mut bytes = vec![0x00];
    bytes.extend(frame(0x04, &[]));
    control.write_all(&bytes).await.unwrap();
    control
}

/// Reads the server's control stream up to its GOAWAY frame and returns the frame's ID.
pub async fn goaway_id(connection: &quinn::Connection) -> u64 {
    loop {
        let mut stream = connection.accept_uni().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // The first varint is the stream type: 0x00 is the control stream; others (QPACK,
        // grease) are skipped.
        let kind = loop {
            if let Some((kind, _)) = read_varint(&buf) {
                break kind;
            }
            let n = stream.read(&mut chunk).await.unwrap().expect("stream type");
            buf.extend_from_slice(&chunk[..n]);
        };
        if kind != 0x00 {
            continue;
        }
        let mut at = read_varint(&buf).unwrap().1;
        loop {
            if let Some((kind, n)) = read_varint(&buf[at..]) {
                if let Some((len, m)) = read_varint(&buf[at + n..]) {
                    let start = at + n + m;
                    if buf.len() >= start + len as usize {
                        if kind == 0x07 {
                            return read_varint(&buf[start..]).unwrap().0;
                        }
                        at = start + len as usize;
                        continue;
                    }
                }
            }
            let n = stream.read(&mut chunk).await.unwrap().expect("GOAWAY");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn frame(kind: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    varint(&mut out, kind);
    varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// A QUIC variable-length integer (RFC 9000 §16).
fn varint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=63 => out.push(value as u8),
        64..=16_383 => out.extend_from_slice(&(value as u16 | 0x4000).to_be_bytes()),
        16_384..=1_073_741_823 => {
            out.extend_from_slice(&(value as u32 | 0x8000_0000).to_be_bytes())
        }
        _ => out.extend_from_slice(&(value | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let mut value = u64::from(first & 0x3f);
    for byte in bytes.get(1..len)? {
        value = value << 8 | u64::from(*byte);
    }
    Some((value, len))
}

/// An HPACK/QPACK prefix integer (RFC 7541 §5.1) after the `flags` bits of the first byte.
fn prefix_integer(out: &mut Vec<u8>, flags: u8, bits: u8, value: usize) {
    let max = (1usize << bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// The `:status` of a response whose first frame is HEADERS starting with an indexed static
/// field line (`11` T=1, RFC 9204 §4.5.2).
fn status_of(bytes: &[u8]) -> Option<u16> {
    let (kind, n) = read_varint(bytes)?;
    let (_, m) = read_varint(&bytes[n..])?;
    let block = bytes.get(n + m..)?;
    if kind != 0x01 || block.get(..2)? != [0, 0] || block.get(2)? & 0xc0 != 0xc0 {
        return None;
    }
    let mut index = usize::from(block[2] & 0x3f);
    if index == 0x3f {
        index += usize::from(*block.get(3)?);
    }
    // RFC 9204 Appendix A: the `:status` entries of the static table.
    let status = match index {
        24 => 103,
        25 => 200,
        26 => 304,
        27 => 404,
        28 => 503,
        63 => 100,
        64 => 204,
        65 => 206,
        66 => 302,
        67 => 400,
        68 => 403,
        69 => 421,
        70 => 425,
        71 => 500,
        _ => return None,
    };
    Some(status)
}
