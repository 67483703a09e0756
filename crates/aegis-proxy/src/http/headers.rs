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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let keep_te = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in &HOP_BY_HOP {
        if *name == header::TE && keep_te {
            continue;
        }
        headers.remove(name);
    }
}

/// Appends the client address to `x-forwarded-for` and sets `x-forwarded-proto`.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, secure: bool) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let client = client.to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client,
    };
    headers.remove(&xff);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(xff, value);
    }
    let proto = if secure { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
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
        Some(prior) => format!("{prior}, {hop}"),
        None => hop.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, value);
    }
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
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), true);
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("via").unwrap(), "1.1 edge, 2 aegis");
    }
}
