//! QUIC crypto configuration for quinn, with the negotiated key-exchange group made visible.
//!
//! quinn's handshake data names only the ALPN protocol and server name. To label QUIC
//! handshakes by group, the provider's groups are wrapped so that completing a key exchange
//! notes the group in a thread-local slot, and each quinn session reads that slot around
//! `read_handshake`, the synchronous call in which rustls completes the exchange. The slot is
//! reset before every call, so a value never leaks from one session to another.

use std::any::Any;
use std::cell::Cell;
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, PacketKey};
use quinn::ConnectionId;
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup,
};
use rustls::{NamedGroup, ProtocolVersion};

use crate::{ClientOptions, KxPolicy, ServerOptions, TlsError};

thread_local! {
    /// The group whose key exchange completed during the current `read_handshake` call.
    static COMPLETED: Cell<Option<NamedGroup>> = const { Cell::new(None) };
}

/// A key-exchange group that notes in [`COMPLETED`] when an exchange finishes.
#[derive(Debug)]
struct Recording(&'static dyn SupportedKxGroup);

static RECORDING_X25519MLKEM768: Recording = Recording(kx_group::X25519MLKEM768);
static RECORDING_X25519: Recording = Recording(kx_group::X25519);
static RECORDING_SECP256R1: Recording = Recording(kx_group::SECP256R1);

fn recording_groups(policy: KxPolicy) -> Vec<&'static dyn SupportedKxGroup> {
    match policy {
        KxPolicy::PostQuantumOnly => vec![&RECORDING_X25519MLKEM768],
        KxPolicy::ClassicalOnly => vec![&RECORDING_X25519, &RECORDING_SECP256R1],
        _ => vec![
            &RECORDING_X25519MLKEM768,
            &RECORDING_X25519,
            &RECORDING_SECP256R1,
        ],
    }
}

impl SupportedKxGroup for Recording {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(RecordingActive(self.0.start()?)))
    }

    fn start_and_complete(&self, peer: &[u8]) -> Result<CompletedKeyExchange, rustls::Error> {
        let completed = self.0.start_and_complete(peer)?;
        COMPLETED.set(Some(self.0.name()));
        Ok(completed)
    }

    fn name(&self) -> NamedGroup {
        self.0.name()
    }

    fn fips(&self) -> bool {
        self.0.fips()
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        self.0.usable_for_version(version)
    }
}

struct RecordingActive(Box<dyn ActiveKeyExchange>);

impl ActiveKeyExchange for RecordingActive {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let group = self.0.group();
        let secret = self.0.complete(peer)?;
        COMPLETED.set(Some(group));
        Ok(secret)
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        self.0.hybrid_component()
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        let group = self.0.hybrid_component().map(|(group, _)| group);
        let secret = self.0.complete_hybrid_component(peer)?;
        COMPLETED.set(group);
        Ok(secret)
    }

    fn pub_key(&self) -> &[u8] {
        self.0.pub_key()
    }

    fn group(&self) -> NamedGroup {
        self.0.group()
    }
}

/// What a QUIC handshake negotiated, returned by `quinn::Connection::handshake_data()` for
/// connections made with [`quic_server_config`] or [`quic_client_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicHandshake {
    /// ALPN protocol, e.g. `h3`.
    pub protocol: Option<Vec<u8>>,
    /// SNI the client sent (server side).
    pub server_name: Option<String>,
    /// Negotiated key-exchange group name (`X25519MLKEM768`, ...).
    pub group: Option<&'static str>,
}

/// A quinn session that notes the key-exchange group as rustls completes it.
struct RecordingSession {
    inner: Box<dyn crypto::Session>,
    group: Option<NamedGroup>,
}

impl RecordingSession {
    fn boxed(inner: Box<dyn crypto::Session>) -> Box<dyn crypto::Session> {
        Box::new(Self { inner, group: None })
    }
}

impl crypto::Session for RecordingSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: quinn::Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let data = self.inner.handshake_data()?;
        let data = data.downcast::<HandshakeData>().ok()?;
        Some(Box::new(QuicHandshake {
            protocol: data.protocol,
            server_name: data.server_name,
            group: self.group.and_then(|g| g.as_str()),
        }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn PacketKey>)> {
        self.inner.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        COMPLETED.set(None);
        let result = self.inner.read_handshake(buf);
        if let Some(group) = COMPLETED.take() {
            self.group = Some(group);
        }
        result
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.inner.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.inner.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

/// Server-side QUIC crypto whose sessions report their key-exchange group.
struct RecordingServer(Arc<QuicServerConfig>);

impl crypto::ServerConfig for RecordingServer {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, crypto::UnsupportedVersion> {
        self.0.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.0.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        RecordingSession::boxed(self.0.clone().start_session(version, params))
    }
}

/// Client-side QUIC crypto whose sessions report their key-exchange group.
struct RecordingClient(Arc<QuicClientConfig>);

impl crypto::ClientConfig for RecordingClient {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, quinn::ConnectError> {
        Ok(RecordingSession::boxed(self.0.clone().start_session(
            version,
            server_name,
            params,
        )?))
    }
}

fn recording_provider(policy: KxPolicy) -> Arc<CryptoProvider> {
    Arc::new(crate::kx::with_suites(recording_groups(policy)))
}

/// QUIC server crypto: TLS 1.3, ALPN `h3`, the groups of `options.kx` (reported per connection
/// in [`QuicHandshake`]). `options.alpn` is replaced by `h3`; 0-RTT stays off.
pub fn quic_server_config(
    options: ServerOptions,
) -> Result<Arc<dyn crypto::ServerConfig>, TlsError> {
    let provider = recording_provider(options.kx);
    let options = ServerOptions {
        alpn: vec![b"h3".to_vec()],
        ..options
    };
    let config = crate::server::build(options, provider)?;
    let quic = QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Roots(format!("quic server config: {e}")))?;
    Ok(Arc::new(RecordingServer(Arc::new(quic))))
}

/// QUIC client crypto with the groups of `options.kx`; the group is reported in
/// [`QuicHandshake`]. `options.alpn` is replaced by `h3`.
pub fn quic_client_config(
    options: ClientOptions,
) -> Result<Arc<dyn crypto::ClientConfig>, TlsError> {
    let provider = recording_provider(options.kx);
    let options = ClientOptions {
        alpn: vec![b"h3".to_vec()],
        ..options
    };
    let config = crate::client::build(options, provider)?;
    let quic = QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Roots(format!("quic client config: {e}")))?;
    Ok(Arc::new(RecordingClient(Arc::new(quic))))
}
