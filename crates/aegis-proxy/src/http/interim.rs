//! Interim (1xx) responses from an upstream, passed on to the client ahead of the final one
//! (RFC 9110 §15.2: a proxy forwards them), whatever the protocol on either side. 103 Early
//! Hints (RFC 8297) is what browsers act on: they start loading the linked resources while the
//! origin is still preparing the page.
//!
//! The server that received the request hands the client's end to `forward`: hyper's
//! [`InformationalSender`], carried by the request body for HTTP/1.1 and HTTP/2 (none for an
//! HTTP/1.0 client, which must not get one), a channel to the stream's task for HTTP/3. The
//! HTTP/1.1 fast path writes interim heads to its client itself.

use http::{HeaderMap, Response, StatusCode};
use hyper::ext::InformationalSender;
use tokio::sync::mpsc;

use super::headers;

/// Interim responses an HTTP/3 stream queues before it writes them; more are dropped.
pub const H3_QUEUE: usize = 16;

/// Whether an upstream's 1xx response goes on to the client: every one but 100 (each hop
/// answers `Expect: 100-continue` itself) and 101 (an upgrade is its own exchange).
pub fn is_forwarded(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Where a request's interim responses go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Interim {
    /// An HTTP/1.1 or HTTP/2 client, through hyper's server.
    Hyper(InformationalSender),
    /// An HTTP/3 client, through its stream's task.
    H3(mpsc::Sender<Response<()>>),
}

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
        let _ = match self {
            Self::Hyper(sender) => sender.send(response).map_err(drop),
            Self::H3(sender) => sender.try_send(response).map_err(drop),
        };
    }
}
