//! HTTP/1.1 message syntax that both clients of an HTTP/1.1 upstream share, the fast path
//! (`h1`) and the general path's exchange (`upstream::h1`): response heads, chunked bodies, and
//! the sizes they are read in.

pub mod chunked;
pub mod response;

use std::io;
use std::mem::MaybeUninit;

use super::ProxyError;

/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read size for heads and bodies.
pub const READ_SIZE: usize = 16 * 1024;

/// Room for `N` parsed header fields, uninitialised: httparse writes only the fields a head
/// has, so a parse does not first fill 32 bytes for every field it might have had.
pub(crate) fn header_slots<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// An upstream I/O failure before the response head: the exchange was reset.
pub(crate) fn reset(error: io::Error) -> ProxyError {
    ProxyError::Upstream(Box::new(error))
}
