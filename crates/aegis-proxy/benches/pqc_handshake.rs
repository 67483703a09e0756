#![allow(missing_docs)] // criterion_group! generates undocumented functions.
//! What post-quantum key exchange costs, from the primitives up to a full TLS 1.3 handshake.
//!
//! - `pqc/*`: ML-KEM-768 (FIPS 203) key generation, encapsulation and decapsulation with
//!   aws-lc-rs; the X25519MLKEM768 hybrid exchange exactly as TLS runs it (rustls' key-exchange
//!   group: client key shares, server encapsulation, client decapsulation), next to X25519
//!   alone; and the TLS 1.3 key schedule from the shared secret to both handshake traffic
//!   secrets (HKDF-SHA256).
//! - `tls13/full_handshake/*`: complete TLS 1.3 handshakes between in-memory rustls client and
//!   server connections (no sockets), with the server configuration the proxy's listeners use
//!   and a client restricted to one group.
//!
//! Run with `cargo bench -p aegis-proxy --bench pqc_handshake`.

use std::sync::Arc;

use aegis_tls::{KxPolicy, LocalCa, ServerOptions};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, ML_KEM_768};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

fn ml_kem(c: &mut Criterion) {
    let mut group = c.benchmark_group("pqc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("keypair_generation", |b| {
        b.iter(|| DecapsulationKey::generate(&ML_KEM_768).unwrap())
    });
    let decapsulation = DecapsulationKey::generate(&ML_KEM_768).unwrap();
    let encapsulation = decapsulation.encapsulation_key().unwrap();
    group.bench_function("encapsulation", |b| {
        b.iter(|| encapsulation.encapsulate().unwrap())
    });
    let (ciphertext, _) = encapsulation.encapsulate().unwrap();
    group.bench_function("decapsulation", |b| {
        b.iter(|| {
            decapsulation
                .decapsulate(Ciphertext::from(ciphertext.as_ref()))
                .unwrap()
        })
    });
    group.bench_function("full_handshake", |b| {
        b.iter(|| exchange(kx_group::X25519MLKEM768))
    });
    group.bench_function("full_handshake_x25519_only", |b| {
        b.iter(|| exchange(kx_group::X25519))
    });
    let secret = exchange(kx_group::X25519MLKEM768);
    group.bench_function("key_derivation", |b| {
        b.iter(|| handshake_traffic_secrets(&secret))
    });
    group.finish();
}

/// Both sides of one key exchange as a TLS 1.3 handshake runs it; returns the shared secret.
fn exchange(group: &'static dyn SupportedKxGroup) -> Vec<u8> {
    let client = group.start().unwrap();
    let server = group.start_and_complete(client.pub_key()).unwrap();
    let client_secret = client.complete(&server.pub_key).unwrap();
    assert_eq!(client_secret.secret_bytes(), server.secret.secret_bytes());
    client_secret.secret_bytes().to_vec()
}

/// RFC 8446 §7.1: early secret, derived secret, handshake secret, then the client and server
/// handshake traffic secrets (over a stand-in transcript hash).
fn handshake_traffic_secrets(shared: &[u8]) -> [[u8; 32]; 2] {
    let empty_hash = [0u8; 32];
    let early = Salt::new(HKDF_SHA256, &[]).extract(&[0u8; 32]);
    let derived = expand_label(&early, b"derived", &empty_hash);
    let handshake = Salt::new(HKDF_SHA256, &derived).extract(shared);
    let transcript = [0x5au8; 32];
    [
        expand_label(&handshake, b"c hs traffic", &transcript),
        expand_label(&handshake, b"s hs traffic", &transcript),
    ]
}

/// HKDF-Expand-Label with a 32-byte output.
fn expand_label(secret: &aws_lc_rs::hkdf::Prk, label: &[u8], context: &[u8]) -> [u8; 32] {
    let full_label = [b"tls13 ".as_slice(), label].concat();
    let info: [&[u8]; 5] = [
        &32u16.to_be_bytes(),
        &[full_label.len() as u8],
        &full_label,
        &[context.len() as u8],
        context,
    ];
    let mut out = [0u8; 32];
    secret.expand(&info, Len32).unwrap().fill(&mut out).unwrap();
    out
}

struct Len32;

impl aws_lc_rs::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn tls_handshakes(c: &mut Criterion) {
    let ca = LocalCa::generate("aegis bench CA").unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let server = aegis_tls::server_config(ServerOptions {
        cert_chain: leaf.chain(),
        key: leaf.key(),
        kx: KxPolicy::PreferPostQuantum,
        alpn: vec![b"http/1.1".to_vec()],
        client_roots: None,
    })
    .unwrap();
    let mut group = c.benchmark_group("tls13/full_handshake");
    group.throughput(Throughput::Elements(1));
    for (name, kx) in [
        ("X25519MLKEM768", kx_group::X25519MLKEM768),
        ("X25519", kx_group::X25519),
    ] {
        let client = client_config(&ca, kx);
        assert_eq!(handshake(&client, &server), name);
        group.bench_function(name, |b| b.iter(|| handshake(&client, &server)));
    }
    group.finish();
}

fn client_config(ca: &LocalCa, kx: &'static dyn SupportedKxGroup) -> Arc<ClientConfig> {
    let provider = CryptoProvider {
        kx_groups: vec![kx],
        ..provider::default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One full handshake in memory; returns the negotiated group's name.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> &'static str {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Connection::from(ClientConnection::new(client.clone(), name).unwrap());
    let mut server = Connection::from(ServerConnection::new(server.clone()).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }
    client
        .negotiated_key_exchange_group()
        .map_or("none", aegis_tls::group_name)
}

fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut reader = bytes.as_slice();
    while !reader.is_empty() {
        to.read_tls(&mut reader).unwrap();
        to.process_new_packets().unwrap();
    }
}

criterion_group!(benches, ml_kem, tls_handshakes);
criterion_main!(benches);
