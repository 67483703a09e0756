//! The crypto provider: its key-exchange groups and cipher suites.
//!
//! Both orders are explicit rather than taken from rustls' defaults, so a rustls upgrade that
//! reorders them fails a test here instead of quietly changing what peers negotiate.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::SupportedCipherSuite;

/// Which key-exchange groups a TLS endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KxPolicy {
    /// `X25519MLKEM768` first, then `X25519` and `secp256r1` for classical peers.
    #[default]
    PreferPostQuantum,
    /// Only `X25519MLKEM768`: a peer without post-quantum support fails the handshake.
    PostQuantumOnly,
    /// Only `X25519` and `secp256r1`: what a client without post-quantum support offers. For
    /// checking a server's classical fallback (`aegis-proxy probe --classical`); no listener
    /// or upstream is ever configured with it.
    ClassicalOnly,
}

/// Groups offered under [`KxPolicy::PreferPostQuantum`], in preference order.
pub static PREFER_POST_QUANTUM: &[&dyn SupportedKxGroup] = &[
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
];

/// Groups offered under [`KxPolicy::PostQuantumOnly`].
pub static POST_QUANTUM_ONLY: &[&dyn SupportedKxGroup] = &[kx_group::X25519MLKEM768];

/// Groups offered under [`KxPolicy::ClassicalOnly`].
pub static CLASSICAL_ONLY: &[&dyn SupportedKxGroup] = &[kx_group::X25519, kx_group::SECP256R1];

impl KxPolicy {
    /// The groups this policy offers, most preferred first.
    pub fn groups(self) -> &'static [&'static dyn SupportedKxGroup] {
        match self {
            Self::PreferPostQuantum => PREFER_POST_QUANTUM,
            Self::PostQuantumOnly => POST_QUANTUM_ONLY,
            Self::ClassicalOnly => CLASSICAL_ONLY,
        }
    }
}

/// TLS 1.3 cipher suites, most preferred first; servers apply this order, not the client's.
///
/// AES-128-GCM comes first, as in BoringSSL (Envoy) and Go (Caddy): its key schedule runs on
/// SHA-256, which x86 CPUs with SHA extensions compute in hardware, while AES-256-GCM's SHA-384
/// runs in plain code on many of them (aws-lc has no SHA-512 assembly for AMD). Measured here:
/// 13 % of a full post-quantum handshake's CPU in the profile, 12 % less CPU per handshake with
/// AES-128 first (BENCHMARKS.md). AES-128 is NIST's reference
/// for post-quantum security category 1; clients that require AES-256 still get it by
/// offering only that suite.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The aws-lc-rs provider restricted to the groups of `policy` and to [`CIPHER_SUITES`].
///
/// `pq_only` is a provider that simply lacks classical groups, not a check after the fact.
pub fn provider(policy: KxPolicy) -> Arc<CryptoProvider> {
    Arc::new(with_suites(policy.groups().to_vec()))
}

/// The aws-lc-rs provider with `kx_groups` and [`CIPHER_SUITES`].
pub(crate) fn with_suites(kx_groups: Vec<&'static dyn SupportedKxGroup>) -> CryptoProvider {
    CryptoProvider {
        kx_groups,
        cipher_suites: CIPHER_SUITES.to_vec(),
        ..aws_lc_rs::default_provider()
    }
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
    fn aes_128_gcm_comes_first_and_only_tls13_suites_are_offered() {
        let p = provider(KxPolicy::PreferPostQuantum);
        let names: Vec<_> = p
            .cipher_suites
            .iter()
            .map(|s| s.suite().as_str().unwrap_or("unknown"))
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256"
            ]
        );
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
