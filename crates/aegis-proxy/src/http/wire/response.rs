//! The fast path's response side: parse the upstream response head, find how its body is
//! framed (RFC 9112 §6.3), and write the head sent to the client.

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;

use super::super::error::Answer;
use super::super::headers;

/// Headers the fast path parses in a response.
const MAX_HEADERS: usize = 100;
/// Headers the proxy may add (`via`, region, `alt-svc`, `transfer-encoding`, `connection`):
/// an upstream head may use only the rest, so the client's head stays within `MAX_HEADERS`.
const ADDED_HEADERS: usize = 5;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked; passed through as it is.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed upstream response head.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// Length of the head in the upstream buffer.
    pub len: usize,
    /// Status code.
    pub status: StatusCode,
    /// Body framing.
    pub framing: Framing,
    /// Whether the upstream connection can carry another request afterwards.
    pub reusable: bool,
}

/// The upstream sent something that is not a usable HTTP/1.1 response.
#[derive(Debug, thiserror::Error)]
#[error("invalid response from upstream: {0}")]
pub struct Invalid(&'static str);

/// What the proxy adds to every response head it writes.
#[derive(Debug, Clone, Copy)]
pub struct Extra<'a> {
    /// `(name, value)` of the carbon region header.
    pub region: Option<(&'a HeaderName, &'a str)>,
    /// `alt-svc` advertisement.
    pub alt_svc: Option<&'a HeaderValue>,
}

/// Parses the head at the start of `bytes` (`None`: incomplete) and writes the client's head
/// into `out` (cleared first), all but its end: see [`end_head`]. An interim 1xx response comes
/// back as a head with status 1xx and [`Framing::Empty`], for the caller to skip.
pub fn parse(
    bytes: &[u8],
    head_request: bool,
    out: &mut Vec<u8>,
    extra: Extra<'_>,
) -> Result<Option<Head>, Invalid> {
    let mut slots = super::header_slots::<MAX_HEADERS>();
    let mut response = httparse::Response::new(&mut []);
    let Some(len) = parse_into(&mut response, bytes, &mut slots)? else {
        return Ok(None);
    };
    if response.headers.len() > MAX_HEADERS - ADDED_HEADERS {
        return Err(Invalid("too many headers"));
    }
    let head = framing_of(&response, len, head_request)?;
    out.clear();
    write_head(out, response.headers, &head, extra);
    Ok(Some(head))
}

/// Parses a head into `response`; returns its length, `None` while incomplete.
fn parse_into<'h, 'b>(
    response: &mut httparse::Response<'h, 'b>,
    bytes: &'b [u8],
    slots: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<usize>, Invalid> {
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(response, bytes, slots);
    match parsed {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Invalid(not_http1(bytes))),
    }
}

/// Why bytes that are not an HTTP/1.1 response head are not, when it is a configuration
/// mistake: an HTTP/2-only upstream (its first frame is SETTINGS on stream 0), or HTTPS.
fn not_http1(bytes: &[u8]) -> &'static str {
    match bytes {
        // RFC 9113 §6.5: a SETTINGS frame (type 4) on stream 0 opens every HTTP/2 connection.
        [_, _, _, 0x04, _, 0, 0, 0, 0, ..] => {
            "malformed head: the upstream answered with an HTTP/2 frame (HTTP/2 required? \
             set protocol = \"http2\" on the cluster)"
        }
        // A TLS record (alert or handshake) of TLS 1.0..1.3.
        [0x15 | 0x16, 0x03, 0x00..=0x04, ..] => {
            "malformed head: the upstream answered with TLS (HTTPS required? set tls on the \
             cluster)"
        }
        _ => "malformed head",
    }
}

/// The status, framing and reuse of a parsed response head `len` bytes long.
fn framing_of(
    response: &httparse::Response<'_, '_>,
    len: usize,
    head_request: bool,
) -> Result<Head, Invalid> {
    let code = response.code.ok_or(Invalid("no status"))?;
    if !super::super::is_valid_status(code) {
        return Err(Invalid("status outside 100..=599"));
    }
    let status = StatusCode::from_u16(code).map_err(|_| Invalid("bad status"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Invalid("unrequested upgrade"));
    }
    let mut length = None;
    let mut chunked = None;
    let mut reusable = response.version == Some(1);
    for header in response.headers.iter() {
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Invalid("bad content-length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(Invalid("conflicting content-length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            reusable &= !value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => return Err(Invalid("both content-length and transfer-encoding")),
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    reusable &= framing != Framing::UntilClose;
    Ok(Head {
        len,
        status,
        framing,
        reusable,
    })
}

/// Parses the head at the start of `buf` (`None`: incomplete) into the response parts for
/// the general path, with hop-by-hop headers still in place, and takes it off `buf`. The
/// field values share the head's bytes (no copy, no allocation per field). Interim 1xx
/// responses come back as for [`parse`].
pub fn parse_parts(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(Head, http::response::Parts)>, Invalid> {
    // Where each name and value is in the head: (start, end) of both; on the stack for a
    // head of up to `INLINE_FIELDS` fields.
    const INLINE_FIELDS: usize = 24;
    let mut inline = [[0u32; 4]; INLINE_FIELDS];
    let mut spilled = Vec::new();
    let (head, count) = {
        let mut slots = super::header_slots::<MAX_HEADERS>();
        let mut response = httparse::Response::new(&mut []);
        let Some(len) = parse_into(&mut response, buf, &mut slots)? else {
            return Ok(None);
        };
        let head = framing_of(&response, len, head_request)?;
        let count = response.headers.len();
        let fields = match count <= INLINE_FIELDS {
            true => &mut inline[..count],
            false => {
                spilled.resize(count, [0u32; 4]);
                &mut spilled[..]
            }
        };
        let start = buf.as_ptr() as usize;
        // Readers stop at `MAX_RESPONSE_HEAD` (64 KiB) bytes of head, so offsets fit.
        let at = |field: &[u8]| (field.as_ptr() as usize - start) as u32;
        for (slot, header) in fields.iter_mut().zip(response.headers.iter()) {
            let (name, value) = (header.name.as_bytes(), header.value);
            let (name_at, value_at) = (at(name), at(value));
            *slot = [
                name_at,
                name_at + name.len() as u32,
                value_at,
                value_at + value.len() as u32,
            ];
        }
        (head, count)
    };
    let fields = match count <= INLINE_FIELDS {
        true => &inline[..count],
        false => &spilled[..],
    };
    let bytes = buf.split_to(head.len).freeze();
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = head.status;
    parts.headers.reserve(fields.len());
    for &[name_start, name_end, value_start, value_end] in fields {
        let name = &bytes[name_start as usize..name_end as usize];
        let name = HeaderName::from_bytes(name).map_err(|_| Invalid("bad header name"))?;
        let value = bytes.slice(value_start as usize..value_end as usize);
        let value =
            HeaderValue::from_maybe_shared(value).map_err(|_| Invalid("bad header value"))?;
        parts.headers.append(name, value);
    }
    Ok(Some((head, parts)))
}

/// Writes the client's response head: hop-by-hop headers and those `Connection` names are
/// dropped, `via` is appended to. `Transfer-Encoding` is the upstream's, every coding kept
/// (`gzip, chunked` stays `gzip, chunked`: the client must still decode the gzip).
fn write_head(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], head: &Head, extra: Extra<'_>) {
    status_line(out, head.status);
    let mut codings: Vec<u8> = Vec::new();
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        if !codings.is_empty() {
            codings.extend_from_slice(b", ");
        }
        codings.extend_from_slice(header.value.trim_ascii());
    }
    let named: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let mut via = None;
    for header in headers {
        let name = header.name;
        if headers::is_hop_by_hop(name)
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            || extra
                .region
                .is_some_and(|(region, _)| name.eq_ignore_ascii_case(region.as_str()))
            || (extra.alt_svc.is_some() && name.eq_ignore_ascii_case("alt-svc"))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("via") {
            via = via.or(Some(header.value));
            continue;
        }
        push_header(out, name.as_bytes(), header.value);
    }
    if matches!(head.framing, Framing::Chunked | Framing::UntilClose) && !codings.is_empty() {
        push_header(out, b"transfer-encoding", &codings);
    }
    add_headers(out, via, extra);
}

/// Writes a complete response the proxy makes itself (an error): status, a text body.
pub fn write_local(out: &mut Vec<u8>, answer: &Answer, extra: Extra<'_>, close: bool) {
    status_line(out, answer.status);
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    if let Some(after) = answer.retry_after {
        push_header(out, b"retry-after", after.as_bytes());
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(answer.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    add_headers(out, None, extra);
    end_head(out, close);
    out.extend_from_slice(answer.body.as_bytes());
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `via`, the region header and `alt-svc`.
fn add_headers(out: &mut Vec<u8>, via: Option<&[u8]>, extra: Extra<'_>) {
    out.extend_from_slice(b"via: ");
    if let Some(prior) = via {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"1.1 aegis\r\n");
    if let Some((name, value)) = extra.region {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(alt_svc) = extra.alt_svc {
        push_header(out, b"alt-svc", alt_svc.as_bytes());
    }
}

/// Ends a head [`parse`] wrote, saying whether the connection closes after this response.
pub fn end_head(out: &mut Vec<u8>, close: bool) {
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_EXTRA: Extra<'static> = Extra {
        region: None,
        alt_svc: None,
    };

    fn head(raw: &[u8], head_request: bool) -> Head {
        parse(raw, head_request, &mut Vec::new(), NO_EXTRA)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parts_share_the_head_and_leave_the_body() {
        for fields in [2, 24, 25, 90] {
            let mut raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n".to_vec();
            for i in 1..fields {
                raw.extend_from_slice(format!("x-field-{i}: value {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\nhello");
            let mut buf = BytesMut::from(&raw[..]);
            let (head, parts) = parse_parts(&mut buf, false).unwrap().unwrap();
            assert_eq!(head.framing, Framing::Length(5));
            assert_eq!(&buf[..], b"hello", "{fields} fields");
            assert_eq!(parts.headers.len(), fields);
            assert_eq!(parts.headers["content-length"], "5");
            let last = format!("x-field-{}", fields - 1);
            assert_eq!(
                parts.headers[last.as_str()],
                format!("value {}", fields - 1)
            );
        }
        let incomplete = b"HTTP/1.1 200 OK\r\ncontent-le";
        let mut partial = BytesMut::from(&incomplete[..]);
        assert!(parse_parts(&mut partial, false).unwrap().is_none());
        assert_eq!(
            &partial[..],
            incomplete,
            "an incomplete head stays in the buffer"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false);
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        let h = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!h.reusable);
    }

    #[test]
    fn ambiguous_responses_are_invalid() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 600 Beyond\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 099 Below\r\ncontent-length: 0\r\n\r\n",
            // No room left for the headers the proxy adds (found by the `h1_response` fuzzer).
            ("HTTP/1.1 200 OK\r\n".to_owned() + &"x: y\r\n".repeat(96) + "\r\n").as_bytes(),
        ] {
            assert!(
                parse(raw, false, &mut Vec::new(), NO_EXTRA).is_err(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_kept() {
        for (raw, te) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"[..],
                "gzip, chunked",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                "gzip, chunked",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                "gzip",
            ),
        ] {
            let mut out = Vec::new();
            parse(raw, false, &mut out, NO_EXTRA).unwrap().unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains(&format!("\r\ntransfer-encoding: {te}\r\n")),
                "{text}"
            );
            assert_eq!(text.matches("transfer-encoding").count(), 1, "{text}");
        }
    }

    #[test]
    fn client_head_drops_hop_by_hop_and_appends_via() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nx-secret: 1\r\nkeep-alive: 5\r\n\
            via: 1.1 origin\r\ntransfer-encoding: chunked\r\nx-kept: yes\r\n\r\n";
        let region = HeaderName::from_static("x-region");
        let mut out = Vec::new();
        let extra = Extra {
            region: Some((&region, "eu")),
            alt_svc: None,
        };
        parse(raw, false, &mut out, extra).unwrap().unwrap();
        end_head(&mut out, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nx-kept: yes\r\ntransfer-encoding: chunked\r\n\
             via: 1.1 origin, 1.1 aegis\r\nx-region: eu\r\nconnection: close\r\n\r\n"
        );
    }
}
