//! QUIC listeners: accept (with address validation under load), TLS 1.3 handshake with the
//! same certificate and key-exchange groups as TCP (counted by group), then HTTP/3.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aegis_tls::QuicHandshake;
use quinn::{ConnectionError, IdleTimeout, VarInt};
use tokio::sync::{mpsc, watch};

use arc_swap::ArcSwap;

use super::tcp::Limits;
use super::{handshake_done, handshake_failed, ActiveGuard};
use crate::config::{ListenerConfig, QuicListener};
use crate::http::proxy::RequestRules;
use crate::http::{h3, ConnInfo, Proxy};
use crate::limit::Slot;
use crate::metrics::ListenerLabels;

/// Unidirectional streams a client may open: HTTP/3 needs control and two QPACK streams.
const MAX_UNI_STREAMS: u32 = 8;

/// A bound QUIC endpoint and what its connections need.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

/// What a reload may change, and the handshake count it must not reset.
#[derive(Debug)]
pub struct Shared {
    settings: ArcSwap<Settings>,
    handshaking: AtomicUsize,
}

/// A listener's QUIC settings as of a connection's accept.
#[derive(Debug)]
struct Settings {
    name: Arc<str>,
    config: ListenerConfig,
    retry_above: usize,
}

impl Settings {
    fn new(config: &ListenerConfig, quic: &QuicListener) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            retry_above: quic.retry_above_handshakes,
        }
    }
}

fn server_config(settings: &QuicListener) -> quinn::ServerConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(settings.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(IdleTimeout::try_from(settings.idle_timeout).ok());
    let mut server = quinn::ServerConfig::with_crypto(settings.crypto.clone());
    server.transport_config(Arc::new(transport));
    server
}

impl Listener {
    /// Binds UDP on `addr` with the listener's QUIC settings.
    pub fn bind(
        config: &ListenerConfig,
        settings: &QuicListener,
        addr: SocketAddr,
    ) -> std::io::Result<Self> {
        let endpoint = quinn::Endpoint::server(server_config(settings), addr)?;
        let shared = Shared {
            settings: ArcSwap::from_pointee(Settings::new(config, settings)),
            handshaking: AtomicUsize::new(0),
        };
        Ok(Self {
            endpoint,
            shared: Arc::new(shared),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// A handle that applies a reloaded configuration to this listener.
    pub fn updater(&self) -> Updater {
        Updater {
            endpoint: self.endpoint.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Accepts connections until `stop` turns true, then refuses new ones while existing
    /// connections drain (each holds a clone of `drain`) and returns once they have closed.
    pub async fn run(
        self,
        proxy: Arc<ArcSwap<Proxy>>,
        limits: Limits,
        mut stop: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) {
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let Some(incoming) = incoming else { break };
            let settings = self.shared.settings.load_full();
            if self.shared.handshaking.load(Ordering::Relaxed) >= settings.retry_above
                && !incoming.remote_address_validated()
            {
                // Under a flood of new connections, make clients prove their address first.
                if let Err(error) = incoming.retry() {
                    error.into_incoming().ignore();
                }
                continue;
            }
            let Some(slots) = limits.admit(proxy.load().metrics(), &settings.name) else {
                // CONNECTION_REFUSED at once: the client learns now, not at its idle timeout.
                incoming.refuse();
                continue;
            };
            let connection = Connection {
                settings,
                handshaking: self.shared.clone(),
                proxy: proxy.clone(),
                stop: stop.clone(),
                _slots: slots,
                _endpoint: self.endpoint.clone(),
                _drain: drain.clone(),
            };
            tokio::spawn(connection.serve(incoming));
        }
        // Draining: refuse new connections at once (a silent endpoint would make clients wait
        // for their idle timeout) until the connections in flight have closed.
        drop(drain);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming.refuse(),
                    None => break,
                },
                _ = self.endpoint.wait_idle() => break,
            }
        }
    }
}

/// One QUIC connection from handshake to close.
struct Connection {
    settings: Arc<Settings>,
    handshaking: Arc<Shared>,
    proxy: Arc<ArcSwap<Proxy>>,
    stop: watch::Receiver<bool>,
    _slots: (Slot, Slot),
    _endpoint: quinn::Endpoint,
    _drain: mpsc::Sender<()>,
}

/// Applies a reloaded configuration to a running QUIC listener: new certificate and transport
/// settings for new connections; connections already open keep theirs.
#[derive(Debug, Clone)]
pub struct Updater {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl Updater {
    /// Swaps in `config`'s QUIC settings.
    pub fn update(&self, config: &ListenerConfig, quic: &QuicListener) {
        self.endpoint.set_server_config(Some(server_config(quic)));
        self.shared
            .settings
            .store(Arc::new(Settings::new(config, quic)));
    }
}

impl Connection {
    async fn serve(self, incoming: quinn::Incoming) {
        let peer = incoming.remote_address();
        let metrics = self.proxy.load().metrics().clone();
        let labels = ListenerLabels {
            listener: self.settings.name.to_string(),
        };
        metrics.connections_total.get_or_create(&labels).inc();
        let _active = ActiveGuard::new(metrics.connections_active.get_or_create(&labels).clone());
        let Some(connection) = self.handshake(incoming).await else {
            return;
        };
        let group = connection
            .handshake_data()
            .and_then(|d| d.downcast::<QuicHandshake>().ok())
            .and_then(|d| d.group);
        handshake_done(&metrics, &self.settings.name, peer, group, "h3");
        let info = ConnInfo {
            listener: self.settings.name.clone(),
            peer,
            peer_value: crate::http::headers::address_value(peer.ip()),
            secure: true,
            tls_group: group,
            rules: Arc::new(RequestRules::new(&self.settings.config, None)),
            admitted: None,
        };
        let max_header = self.settings.config.max_header_bytes as u64;
        h3::serve_connection(connection, self.proxy, info, max_header, self.stop).await;
    }

    async fn handshake(&self, incoming: quinn::Incoming) -> Option<quinn::Connection> {
        let peer = incoming.remote_address();
        let _handshaking = Handshaking::new(&self.handshaking.handshaking);
        let timeout = self.settings.config.handshake_timeout;
        let result = match incoming.accept() {
            Ok(connecting) => match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result,
                Err(_) => Err(ConnectionError::TimedOut),
            },
            Err(error) => Err(error),
        };
        match result {
            Ok(connection) => Some(connection),
            Err(error) => {
                let reason = failure_reason(&error);
                handshake_failed(
                    self.proxy.load().metrics(),
                    &self.settings.name,
                    peer,
                    reason,
                    &error,
                );
                None
            }
        }
    }
}

/// Counts a handshake in progress until dropped.
struct Handshaking<'a>(&'a AtomicUsize);

impl<'a> Handshaking<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Names a failed QUIC handshake like the TCP path does.
fn failure_reason(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::TransportError(e) if e.reason.contains("NoKxGroupsInCommon") => {
            "no_shared_group"
        }
        ConnectionError::TransportError(_) => "handshake_failure",
        ConnectionError::TimedOut => "timeout",
        ConnectionError::ConnectionClosed(_) | ConnectionError::ApplicationClosed(_) => "closed",
        ConnectionError::Reset => "reset",
        ConnectionError::VersionMismatch => "protocol_version",
        _ => "other",
    }
}
