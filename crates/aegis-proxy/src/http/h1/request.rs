//! The fast path's request side: parse one HTTP/1.1 request head, decide whether the fast path
//! takes it, and write the head sent upstream.
//!
//! The fast path takes only plain requests: HTTP/1.1, origin-form target, exactly one valid
//! `Host`, no body or one `Content-Length` within the listener's limit, and no header that asks
//! for special handling (`Transfer-Encoding`, `Expect`, `Upgrade`, `TE`, connection-specific
//! headers beyond `Connection: keep-alive|close`). Everything else, malformed input included,
//! goes to the general hyper path, which answers exactly as it always has.

use std::borrow::Cow;

use http::Method;

use super::super::proxy::{ConnInfo, Proxy};
use super::super::{headers, host, path, preface};
use crate::config::UpstreamProtocol;

/// Headers the fast path parses; a request with more goes to the general path.
const MAX_HEADERS: usize = 64;

/// A request head the fast path takes.
#[derive(Debug)]
pub(super) struct Head {
    /// Length of the head in the client buffer.
    pub(super) len: usize,
    /// Request method.
    pub(super) method: Method,
    /// Declared body length (0 without `Content-Length`).
    pub(super) body_len: u64,
    /// Whether the client allows another request on this connection.
    pub(super) keep_alive: bool,
    /// Index of the matched route.
    pub(super) route: usize,
    /// Index of its cluster.
    pub(super) cluster: usize,
    /// What the access log needs, when it is on (boxed: the head stays small without it).
    pub(super) log: Option<Box<LogFields>>,
}

/// The access log's view of a fast-path request.
#[derive(Debug, Default)]
pub(super) struct LogFields {
    pub(super) host: String,
    pub(super) path: String,
    /// The query as `[server] access_log_query` keeps it.
    pub(super) query: String,
    pub(super) user_agent: String,
    pub(super) request_id: String,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub(super) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// Not for the fast path: hand the connection to the general path.
    General,
    /// Not an HTTP/1 request line: an invalid HTTP/2 preface (`PRI * HTTP/2.0` then something
    /// else), or a version that is not `HTTP/...`. A listener that serves h2c refuses it as
    /// HTTP/2 would; an HTTP/1-only one leaves it to the general path (400).
    NotHttp1,
    /// A request the fast path forwards; its upstream head is in the output buffer.
    Fast(Head),
}

/// Parses the head at the start of `bytes`; for a fast-path request, writes the upstream head
/// into `upstream` (cleared first).
pub(super) fn parse(
    bytes: &[u8],
    proxy: &Proxy,
    conn: &ConnInfo,
    client_ip: &str,
    upstream: &mut Vec<u8>,
) -> Parsed {
    match preface::classify(bytes) {
        preface::Start::Preface => return Parsed::General, // h2c: hyper takes it
        preface::Start::Partial => return Parsed::Partial,
        preface::Start::Invalid => return Parsed::NotHttp1,
        preface::Start::Other => {}
    }
    let mut slots = super::super::wire::header_slots::<MAX_HEADERS>();
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::Version) if !has_http_version(bytes) => return Parsed::NotHttp1,
        Err(_) => return Parsed::General,
    };
    match prepare(&request, len, proxy, conn, client_ip, upstream) {
        Some(head) => Parsed::Fast(head),
        None => Parsed::General,
    }
}

/// The checks and the rewrite; `None` sends the request to the general path.
fn prepare(
    request: &httparse::Request<'_, '_>,
    len: usize,
    proxy: &Proxy,
    conn: &ConnInfo,
    client_ip: &str,
    upstream: &mut Vec<u8>,
) -> Option<Head> {
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return None;
    };
    if method == "CONNECT" || !is_origin_form(target) {
        return None;
    }
    let facts = Facts::of(request.headers)?;
    let host = facts.host?;
    if facts.body_len.is_some_and(|n| {
        conn.rules
            .max_request_body_bytes
            .is_some_and(|limit| n > limit)
    }) {
        return None; // the general path answers 413
    }
    let (path, query) = target
        .split_once('?')
        .map_or((target, None), |(p, q)| (p, Some(q)));
    // A path that is not already normal is the general path's to rewrite or refuse.
    if !matches!(
        path::normalize(path, conn.rules.paths),
        Ok(Cow::Borrowed(_))
    ) {
        return None;
    }
    let (route, config) = proxy.routes().find(host, path)?;
    if proxy.clusters()[config.cluster].protocol != UpstreamProtocol::Http1 {
        return None;
    }
    write_upstream_head(upstream, request, conn, client_ip, &facts);
    let log = proxy.access_log();
    Some(Head {
        len,
        method: Method::from_bytes(method.as_bytes()).ok()?,
        body_len: facts.body_len.unwrap_or(0),
        keep_alive: !facts.close,
        route,
        cluster: config.cluster,
        log: log.then(|| {
            Box::new(LogFields {
                host: host.to_owned(),
                path: path.to_owned(),
                query: query
                    .map(|q| proxy.access_log_query().apply(q))
                    .unwrap_or_default(),
                user_agent: super::super::record::user_agent_of(facts.user_agent),
                request_id: super::super::record::request_id_of(facts.request_id),
            })
        }),
    })
}

/// What the headers say, gathered in one pass.
#[derive(Debug, Default)]
struct Facts<'a> {
    host: Option<&'a str>,
    body_len: Option<u64>,
    close: bool,
    forwarded_for: Option<&'a [u8]>,
    forwarded: Option<&'a [u8]>,
    forwarded_proto: Option<&'a [u8]>,
    via: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    request_id: Option<&'a [u8]>,
}

impl<'a> Facts<'a> {
    /// `None` when a header needs the general path.
    fn of(headers: &'a [httparse::Header<'a>]) -> Option<Self> {
        let mut facts = Self::default();
        for header in headers {
            let name = header.name;
            let value = header.value;
            if name.eq_ignore_ascii_case("host") {
                // An invalid Host is the general path's to refuse (400).
                if facts.host.is_some() || host::validate(value).is_err() {
                    return None;
                }
                facts.host = std::str::from_utf8(value).ok();
            } else if name.eq_ignore_ascii_case("content-length") {
                if facts.body_len.is_some() {
                    return None;
                }
                facts.body_len = Some(parse_length(value)?);
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        facts.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return None; // names a header to strip: the general path does that
                    }
                }
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                // Several lines are combined by the general path (`headers::add_forwarded`).
                facts.forwarded_for = once(facts.forwarded_for, value)?;
            } else if name.eq_ignore_ascii_case("forwarded") {
                facts.forwarded = once(facts.forwarded, value)?;
            } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
                facts.forwarded_proto = once(facts.forwarded_proto, value)?;
            } else if name.eq_ignore_ascii_case("via") {
                facts.via = once(facts.via, value)?;
            } else if name.eq_ignore_ascii_case("user-agent") {
                facts.user_agent = Some(value);
            } else if name.eq_ignore_ascii_case("x-request-id") {
                facts.request_id = Some(value);
            } else if is_special(name) {
                return None;
            }
        }
        Some(facts)
    }
}

/// `Some(value)` for the first line of a header, `None` (the general path) for a second.
fn once<'a>(seen: Option<&'a [u8]>, value: &'a [u8]) -> Option<Option<&'a [u8]>> {
    match seen {
        None => Some(Some(value)),
        Some(_) => None,
    }
}

/// Headers the fast path leaves to the general path: the hop-by-hop ones the general path
/// strips or acts on (one list, `headers::is_hop_by_hop`; `Connection` is read before this),
/// `Expect` (hyper answers `100-continue`) and `HTTP2-Settings` (an h2c upgrade).
fn is_special(name: &str) -> bool {
    headers::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case("expect")
        || name.eq_ignore_ascii_case("http2-settings")
}

/// The upstream head: the client's request line and headers, minus `Connection` and
/// client-sent `x-aegis-*`, with the forwarding headers rewritten as
/// [`headers::add_forwarded`] and [`headers::add_via`] do on the general path.
fn write_upstream_head(
    out: &mut Vec<u8>,
    request: &httparse::Request<'_, '_>,
    conn: &ConnInfo,
    client_ip: &str,
    facts: &Facts<'_>,
) {
    out.clear();
    let (method, target) = (request.method.unwrap_or("GET"), request.path.unwrap_or("/"));
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in request.headers.iter() {
        let name = header.name;
        let rewritten = [
            "connection",
            "x-forwarded-for",
            "x-forwarded-proto",
            "forwarded",
            "via",
        ];
        if rewritten.iter().any(|skip| name.eq_ignore_ascii_case(skip))
            || headers::is_internal(name)
        {
            continue;
        }
        push_header(out, name.as_bytes(), header.value);
    }
    let hops = conn.rules.trusted_proxy_hops;
    out.extend_from_slice(b"x-forwarded-for: ");
    let trusted = headers::trusted_suffix(facts.forwarded_for.unwrap_or_default(), hops);
    if !trusted.is_empty() {
        out.extend_from_slice(trusted);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    let forwarded = headers::trusted_suffix(facts.forwarded.unwrap_or_default(), hops);
    if !forwarded.is_empty() {
        push_header(out, b"forwarded", forwarded);
    }
    let proto: &[u8] = match (facts.forwarded_proto, conn.secure) {
        (Some(theirs), _) if hops > 0 => theirs,
        (_, true) => b"https",
        (_, false) => b"http",
    };
    push_header(out, b"x-forwarded-proto", proto);
    out.extend_from_slice(b"via: ");
    if let Some(prior) = facts.via {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"1.1 aegis\r\n\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `/path?query` with only characters the general path's URI parser accepts everywhere.
fn is_origin_form(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/?-._~!$&'()*+,;=:@%[]".contains(&b))
}

/// Whether the request line's third token starts like `HTTP/` (a version HTTP/1 can answer,
/// with 505 if need be), as opposed to bytes of another protocol.
fn has_http_version(bytes: &[u8]) -> bool {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let version = line.splitn(3, |b| *b == b' ').nth(2).unwrap_or_default();
    let shared = version.len().min(5);
    version[..shared] == b"HTTP/"[..shared]
}

/// A decimal `Content-Length` (RFC 9110 §8.6); a list or anything else goes to the general path.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_requests_are_left_to_the_general_path() {
        let headers = |raw: &'static [u8]| {
            let mut storage = Box::new([httparse::EMPTY_HEADER; MAX_HEADERS]);
            let mut request = httparse::Request::new(&mut storage[..]);
            request.parse(raw).unwrap();
            Facts::of(request.headers).is_some()
        };
        assert!(headers(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!headers(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
        assert!(!headers(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n"
        ));
        assert!(!headers(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n"
        ));
        assert!(!headers(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n"
        ));
        assert!(!headers(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!headers(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!headers(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"));
    }

    #[test]
    fn targets_and_lengths() {
        assert!(is_origin_form("/a/b?c=d&e=%20"));
        assert!(!is_origin_form("http://a/"));
        assert!(!is_origin_form("*"));
        assert!(!is_origin_form("/a\"b"));
        assert_eq!(parse_length(b"42"), Some(42));
        assert_eq!(parse_length(b"+42"), None);
        assert_eq!(parse_length(b""), None);
    }
}
