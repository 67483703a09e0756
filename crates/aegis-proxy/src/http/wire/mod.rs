//! HTTP/1.1 message syntax that both clients of an HTTP/1.1 upstream share, the fast path
//! (`h1`) and the general path's exchange (`upstream::h1`): response heads, chunked bodies, and
//! the sizes they are read in.

pub mod chunked;
pub mod response;

use std::io;

use super::ProxyError;

/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read size for heads and bodies.
pub const READ_SIZE: usize = 16 * 1024;

/// An upstream I/O failure before the response head: the exchange was reset.
pub(crate) fn reset(error: io::Error) -> ProxyError {
    ProxyError::Upstream(Box::new(error))
}
