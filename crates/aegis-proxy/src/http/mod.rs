//! HTTP: the version-independent forward path and the HTTP/1.1 + HTTP/2 server around it.

mod activity;
pub mod driver;
pub mod error;
pub mod forward;
pub mod framing;
pub mod h1;
pub mod h3;
pub mod headers;
pub mod host;
pub mod interim;
pub mod linger;
pub mod path;
pub mod preface;
pub mod proxy;
pub mod record;
pub mod replay;
pub mod rewind;
pub mod server;
pub mod wire;

pub use error::ProxyError;

/// RFC 9110 §15: a status code is three digits from 100 to 599; anything else from an
/// upstream is a 502, never forwarded.
pub(crate) fn is_valid_status(code: u16) -> bool {
    (100..=599).contains(&code)
}
pub use forward::forward;
pub use proxy::{ConnInfo, Proxy, RequestRules};
