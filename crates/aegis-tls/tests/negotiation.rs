//! The key-exchange negotiation matrix, with client/server pairs run in memory.

use std::sync::Arc;

use aegis_tls::rustls::crypto::aws_lc_rs::{self, kx_group};
use aegis_tls::rustls::crypto::{CryptoProvider, SupportedKxGroup};
use aegis_tls::rustls::{self, ClientConnection, HandshakeKind, ServerConnection};
use aegis_tls::{group_name, KxPolicy, LocalCa, ServerOptions};

struct Pair {
    client: ClientConnection,
    server: ServerConnection,
}

fn pair(server_policy: KxPolicy, client_groups: &[&'static dyn SupportedKxGroup]) -> Pair {
    pair_with_suites(
        server_policy,
        client_groups,
        aws_lc_rs::DEFAULT_CIPHER_SUITES,
    )
}

/// A pair whose client offers `client_suites`, in that order.
fn pair_with_suites(
    server_policy: KxPolicy,
    client_groups: &[&'static dyn SupportedKxGroup],
    client_suites: &[rustls::SupportedCipherSuite],
) -> Pair {
    let ca = LocalCa::generate("test CA").unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let server = aegis_tls::server_config(ServerOptions {
        cert_chain: leaf.chain(),
        key: leaf.key(),
        kx: server_policy,
        alpn: vec![b"h2".to_vec()],
        client_roots: None,
    })
    .unwrap();
    let provider = CryptoProvider {
        kx_groups: client_groups.to_vec(),
        cipher_suites: client_suites.to_vec(),
        ..aws_lc_rs::default_provider()
    };
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Pair {
        client: ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap(),
        server: ServerConnection::new(server).unwrap(),
    }
}

impl Pair {
    /// Moves records both ways until the handshake ends; the first error wins.
    fn handshake(&mut self) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                self.server.read_tls(&mut buf.as_slice()).unwrap();
                self.server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while self.server.wants_write() {
                self.server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                self.client.read_tls(&mut buf.as_slice()).unwrap();
                self.client.process_new_packets()?;
            }
            if !self.client.is_handshaking() && !self.server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn groups(&self) -> (&'static str, &'static str) {
        let name = |g: Option<&'static dyn SupportedKxGroup>| g.map(group_name).unwrap_or("none");
        (
            name(self.client.negotiated_key_exchange_group()),
            name(self.server.negotiated_key_exchange_group()),
        )
    }
}

#[test]
fn pq_client_and_default_server_agree_on_the_hybrid_group() {
    let mut p = pair(
        KxPolicy::PreferPostQuantum,
        &[kx_group::X25519MLKEM768, kx_group::X25519],
    );
    p.handshake().unwrap();
    assert_eq!(p.groups(), ("X25519MLKEM768", "X25519MLKEM768"));
    assert_eq!(p.server.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(
        p.server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn classical_client_falls_back_to_x25519() {
    let mut p = pair(KxPolicy::PreferPostQuantum, &[kx_group::X25519]);
    p.handshake().unwrap();
    assert_eq!(p.groups(), ("X25519", "X25519"));
}

#[test]
fn p256_only_client_still_connects() {
    let mut p = pair(KxPolicy::PreferPostQuantum, &[kx_group::SECP256R1]);
    p.handshake().unwrap();
    assert_eq!(p.groups(), ("secp256r1", "secp256r1"));
}

#[test]
fn pq_only_server_refuses_classical_clients() {
    let mut p = pair(
        KxPolicy::PostQuantumOnly,
        &[kx_group::X25519, kx_group::SECP256R1],
    );
    let error = p.handshake().unwrap_err();
    assert_eq!(
        error,
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon)
    );
}

#[test]
fn pq_only_server_asks_a_capable_client_to_retry_with_the_hybrid_share() {
    // The client supports the hybrid group but sends an X25519 key share first.
    let mut p = pair(
        KxPolicy::PostQuantumOnly,
        &[kx_group::X25519, kx_group::X25519MLKEM768],
    );
    p.handshake().unwrap();
    assert_eq!(p.groups(), ("X25519MLKEM768", "X25519MLKEM768"));
    assert_eq!(
        p.client.handshake_kind(),
        Some(HandshakeKind::FullWithHelloRetryRequest)
    );
}

#[test]
fn tls12_is_not_offered() {
    let ca = LocalCa::generate("test CA").unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let server = aegis_tls::server_config(ServerOptions {
        cert_chain: leaf.chain(),
        key: leaf.key(),
        kx: KxPolicy::PreferPostQuantum,
        alpn: Vec::new(),
        client_roots: None,
    })
    .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(aws_lc_rs::default_provider().into())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let mut p = Pair {
        client: ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap(),
        server: ServerConnection::new(server).unwrap(),
    };
    assert!(p.handshake().is_err());
}

fn suite_name(p: &Pair) -> &'static str {
    let suite = p.server.negotiated_cipher_suite().unwrap();
    suite.suite().as_str().unwrap()
}

#[test]
fn server_picks_aes_128_gcm_even_when_the_client_prefers_aes_256() {
    // rustls' client default offers TLS13_AES_256_GCM_SHA384 first.
    let mut p = pair(KxPolicy::PreferPostQuantum, &[kx_group::X25519MLKEM768]);
    p.handshake().unwrap();
    assert_eq!(suite_name(&p), "TLS13_AES_128_GCM_SHA256");
}

#[test]
fn a_client_that_offers_only_aes_256_gets_it() {
    let mut p = pair_with_suites(
        KxPolicy::PreferPostQuantum,
        &[kx_group::X25519MLKEM768],
        &[aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384],
    );
    p.handshake().unwrap();
    assert_eq!(suite_name(&p), "TLS13_AES_256_GCM_SHA384");
    assert_eq!(p.groups(), ("X25519MLKEM768", "X25519MLKEM768"));
}
