//! Client key-exchange offers for tests, including one that rustls cannot make on its own.

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::NamedGroup;

/// Client key-exchange offers.
#[derive(Clone, Copy, Debug)]
pub enum Groups {
    /// Only X25519MLKEM768.
    PqOnly,
    /// Only classical groups (X25519, secp256r1).
    Classical,
    /// A classical client that prefers secp256r1 and sends key shares for both secp256r1 and
    /// X25519, as gnutls and some browsers do (`supported_groups` = secp256r1, x25519).
    P256FirstBothShares,
    /// A client that supports X25519MLKEM768 but prefers X25519 and sends only its share.
    X25519FirstThenPq,
}

impl Groups {
    /// The groups a rustls client offers, in its order of preference.
    pub fn kx_groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            Self::PqOnly => vec![kx_group::X25519MLKEM768],
            Self::Classical => vec![kx_group::X25519, kx_group::SECP256R1],
            Self::P256FirstBothShares => vec![&P256_WITH_X25519_SHARE, kx_group::X25519],
            Self::X25519FirstThenPq => vec![kx_group::X25519, kx_group::X25519MLKEM768],
        }
    }
}

/// secp256r1 whose key exchange also carries an X25519 share.
///
/// A rustls client sends a key share for its first group only, plus the classical component
/// of a hybrid one. Offering X25519 as this group's "component" makes the ClientHello carry
/// both shares, and rustls completes whichever one the server picks.
#[derive(Debug)]
struct P256WithX25519Share;

static P256_WITH_X25519_SHARE: P256WithX25519Share = P256WithX25519Share;

impl SupportedKxGroup for P256WithX25519Share {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(TwoShares {
            p256: kx_group::SECP256R1.start()?,
            x25519: kx_group::X25519.start()?,
        }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

struct TwoShares {
    p256: Box<dyn ActiveKeyExchange>,
    x25519: Box<dyn ActiveKeyExchange>,
}

impl ActiveKeyExchange for TwoShares {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        self.p256.complete(peer)
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((NamedGroup::X25519, self.x25519.pub_key()))
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        self.x25519.complete(peer)
    }

    fn pub_key(&self) -> &[u8] {
        self.p256.pub_key()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}
