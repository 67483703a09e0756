//! The crypto provider and its key-exchange groups.
//!
//! The order is explicit rather than taken from rustls' defaults, so a rustls upgrade that
//! reorders groups fails a test here instead of quietly changing what clients negotiate.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};

/// Which key-exchange groups a TLS endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KxPolicy {
    /// `X25519MLKEM768` first, then `X25519` and `secp256r1` for classical peers.
    #[default]
    PreferPostQuantum,
    /// Only `X25519MLKEM768`: a peer without post-quantum support fails the handshake.
    PostQuantumOnly,
}

/// Groups offered under [`KxPolicy::PreferPostQuantum`], in preference order.
pub static PREFER_POST_QUANTUM: &[&dyn SupportedKxGroup] = &[
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
];

/// Groups offered under [`KxPolicy::PostQuantumOnly`].
pub static POST_QUANTUM_ONLY: &[&dyn SupportedKxGroup] = &[kx_group::X25519MLKEM768];

impl KxPolicy {
    /// The groups this policy offers, most preferred first.
    pub fn groups(self) -> &'static [&'static dyn SupportedKxGroup] {
        match self {
            Self::PreferPostQuantum => PREFER_POST_QUANTUM,
            Self::PostQuantumOnly => POST_QUANTUM_ONLY,
        }
    }
}

/// The aws-lc-rs provider restricted to the groups of `policy`.
///
/// `pq_only` is a provider that simply lacks classical groups, not a check after the fact.
pub fn provider(policy: KxPolicy) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: policy.groups().to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

/// The IANA name of a key-exchange group (`X25519MLKEM768`, `X25519`, `secp256r1`, ...).
pub fn group_name(group: &dyn SupportedKxGroup) -> &'static str {
    group.name().as_str().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(groups: &[&dyn SupportedKxGroup]) -> Vec<&'static str> {
        groups.iter().map(|g| group_name(*g)).collect()
    }

    #[test]
    fn prefer_post_quantum_puts_the_hybrid_group_first() {
        let p = provider(KxPolicy::PreferPostQuantum);
        assert_eq!(
            names(&p.kx_groups),
            ["X25519MLKEM768", "X25519", "secp256r1"]
        );
    }

    #[test]
    fn post_quantum_only_offers_nothing_classical() {
        let p = provider(KxPolicy::PostQuantumOnly);
        assert_eq!(names(&p.kx_groups), ["X25519MLKEM768"]);
    }

    #[test]
    fn upstream_defaults_still_prefer_post_quantum() {
        // Pins rustls' own default: if this changes, review `PREFER_POST_QUANTUM`.
        assert_eq!(
            names(aws_lc_rs::DEFAULT_KX_GROUPS),
            ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
        );
    }
}
