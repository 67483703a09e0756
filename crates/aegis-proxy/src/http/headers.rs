//! Header rewriting at the proxy hop: hop-by-hop removal and forwarding headers.
//!
//! RFC 9110 §7.6.1 (Connection), §7.6.3 (Via); `x-forwarded-*` as de facto standard.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of the hop-by-hop headers (any case), for code that sees raw header
/// names rather than a [`HeaderMap`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_str()))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// `te: trailers` survives: it is the one `te` value HTTP/2 allows and gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let keep_te = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // One pass over the names present (no lookup per hop-by-hop name, no allocation when
    // nothing goes): `HeaderMap` keys are lower case, and so are the names compared with.
    let connection = headers.get_all(header::CONNECTION);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let hop = HOP_BY_HOP.contains(name) && !(keep_te && *name == header::TE);
            hop || connection_names(&connection, name.as_str())
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether the `Connection` header lines name `name` (RFC 9110 §7.6.1).
fn connection_names(connection: &header::GetAll<'_, HeaderValue>, name: &str) -> bool {
    connection
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Every `Transfer-Encoding` coding of a response, joined, when there is one besides the
/// final `chunked` (which is hop-by-hop framing): `gzip, chunked` or `gzip`.
pub fn transfer_codings(headers: &HeaderMap) -> Option<HeaderValue> {
    let joined = combined(headers, &header::TRANSFER_ENCODING);
    let only_chunked = joined.is_empty()
        || joined
            .split(|b| *b == b',')
            .all(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if only_chunked {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// The prefix of request headers the proxy itself sets (`x-aegis-*`): a client never gets to.
const INTERNAL_PREFIX: &str = "x-aegis-";

/// Whether `name` is one of the proxy's own `x-aegis-*` headers, which clients may not send.
pub fn is_internal(name: &str) -> bool {
    name.len() >= INTERNAL_PREFIX.len()
        && name.as_bytes()[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX.as_bytes())
}

/// The last `hops` elements of a comma-separated list (`x-forwarded-for`, `forwarded`): the
/// ones the trusted proxies in front wrote. Everything before them came from the client and is
/// dropped; commas inside quoted strings (RFC 7239 §4) do not split.
pub fn trusted_suffix(list: &[u8], hops: u8) -> &[u8] {
    if hops == 0 {
        return &[];
    }
    let mut seen = 0;
    let mut quoted = false;
    for (i, &b) in list.iter().enumerate().rev() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                seen += 1;
                if seen == hops {
                    return list[i + 1..].trim_ascii();
                }
            }
            _ => {}
        }
    }
    list.trim_ascii()
}

/// Rewrites the forwarding headers for a listener behind `trusted_hops` proxies: every
/// `x-forwarded-for` line is combined, only the trusted entries kept and the client address
/// appended; `forwarded` keeps only the trusted entries; `x-forwarded-proto` is the listener's
/// own unless a trusted proxy set it. Client-sent `x-aegis-*` headers are removed.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    secure: bool,
    trusted_hops: u8,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior = combined(headers, &xff);
    let kept = trusted_suffix(&prior, trusted_hops);
    if kept.is_empty() {
        headers.insert(xff, client.clone());
    } else {
        let mut value = Vec::with_capacity(kept.len() + 2 + client.len());
        value.extend_from_slice(kept);
        value.extend_from_slice(b", ");
        value.extend_from_slice(client.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.insert(xff, value);
        }
    }
    let forwarded = combined(headers, &header::FORWARDED);
    headers.remove(header::FORWARDED);
    let kept = trusted_suffix(&forwarded, trusted_hops);
    if let (false, Ok(value)) = (kept.is_empty(), HeaderValue::from_bytes(kept)) {
        headers.insert(header::FORWARDED, value);
    }
    let proto = HeaderName::from_static("x-forwarded-proto");
    if trusted_hops == 0 || !headers.contains_key(&proto) {
        let ours = if secure { "https" } else { "http" };
        headers.insert(proto, HeaderValue::from_static(ours));
    }
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_internal(name.as_str()))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Every line of `name`, joined with `, ` as RFC 9110 §5.3 allows.
fn combined(headers: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Appends this hop to `via` (`1.1 aegis`, `2 aegis`, `3 aegis`).
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_10 => "1.0 aegis",
        http::Version::HTTP_2 => "2 aegis",
        http::Version::HTTP_3 => "3 aegis",
        _ => "1.1 aegis",
    };
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {hop}")),
        None => Ok(HeaderValue::from_static(hop)),
    };
    if let Ok(value) = value {
        headers.insert(header::VIA, value);
    }
}

/// A client address as `x-forwarded-for` names it, made once per connection.
pub fn address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::try_from(client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn keeps_te_trailers() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn appends_to_forwarded_for_and_via() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("via", "1.1 edge")]);
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), true, 1);
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("via").unwrap(), "1.1 edge, 2 aegis");
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-aegis-region", "spoofed"),
            ("X-Aegis-Anything", "spoofed"),
        ]);
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), false, 0);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert!(h.get("forwarded").is_none());
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("x-aegis-")),
            "{h:?}"
        );
    }

    #[test]
    fn every_forwarded_for_line_counts_towards_the_trusted_hops() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]\";proto=https,for=10.0.0.2",
            ),
        ]);
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), false, 2);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 10.0.0.2, 127.0.0.1"
        );
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=\"[2001:db8::1]\";proto=https,for=10.0.0.2"
        );
    }

    #[test]
    fn transfer_codings_besides_chunked_are_found() {
        let codings = |pairs: &[(&str, &str)]| transfer_codings(&map(pairs));
        assert_eq!(codings(&[]), None);
        assert_eq!(codings(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(codings(&[("transfer-encoding", "Chunked")]), None);
        let gzip = codings(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(gzip.unwrap(), "gzip, chunked");
        assert_eq!(codings(&[("transfer-encoding", "gzip")]).unwrap(), "gzip");
    }

    #[test]
    fn trusted_suffix_respects_quotes() {
        assert_eq!(trusted_suffix(b"a, b, c", 1), b"c");
        assert_eq!(trusted_suffix(b"a, b, c", 2), b"b, c");
        assert_eq!(trusted_suffix(b"a, b, c", 9), b"a, b, c");
        assert_eq!(trusted_suffix(b"x=\"a,b\", y", 2), b"x=\"a,b\", y");
        assert_eq!(trusted_suffix(b"a", 0), b"");
    }
}
