//! Interim (1xx) responses from an upstream, passed on to the client ahead of the final one
//! (RFC 9110 §15.2: a proxy forwards them), whatever the protocol on either side. 103 Early
//! Hints (RFC 8297) is what browsers act on: they start loading the linked resources while the
//! origin is still preparing the page.
//!
//! The server that received the request hands the client's end to `forward`: hyper's
//! [`InformationalSender`], carried by the request body for HTTP/1.1 and HTTP/2 (none for an
//! HTTP/1.0 client, which must not get one), or one whose receiver the HTTP/3 stream polls. The
//! HTTP/1.1 fast path writes interim heads to its client itself.

use http::{HeaderMap, Response, StatusCode};
use hyper::ext::InformationalSender;

use super::headers;

/// Whether an upstream's 1xx response goes on to the client: every one but 100 (each hop
/// answers `Expect: 100-continue` itself) and 101 (an upgrade is its own exchange).
pub fn is_forwarded(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Where a request's interim responses go: hyper's queue, which its servers write from and
/// an HTTP/3 stream drains itself (`http/h3.rs`).
#[derive(Debug, Clone)]
pub struct Interim(pub InformationalSender);

impl Interim {
    /// Passes an upstream's interim response on, without its hop-by-hop and connection-specific
    /// fields. A status that is not forwarded, or a client that is gone or already has its
    /// final response, drops it: interim responses are advisory.
    pub fn send(&self, status: StatusCode, upstream: &HeaderMap) {
        if !is_forwarded(status) {
            return;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = upstream.clone();
        headers::strip_hop_by_hop(response.headers_mut());
        let _ = self.0.send(response);
    }
}
