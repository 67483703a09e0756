//! QUIC listeners: accept (with address validation under load), TLS 1.3 handshake with the
//! same certificate and key-exchange groups as TCP (counted by group), then HTTP/3.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aegis_tls::QuicHandshake;
use quinn::{ConnectionError, IdleTimeout, VarInt};
use tokio::sync::{mpsc, watch};

use super::{handshake_done, handshake_failed, ActiveGuard};
use crate::config::{ListenerConfig, QuicListener};
use crate::http::{h3, ConnInfo, Proxy};
use crate::metrics::ListenerLabels;

/// Unidirectional streams a client may open: HTTP/3 needs control and two QPACK streams.
const MAX_UNI_STREAMS: u32 = 8;

/// A bound QUIC endpoint and what its connections need.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: Arc<str>,
    config: ListenerConfig,
    retry_above: usize,
    handshaking: AtomicUsize,
}

impl Listener {
    /// Binds UDP on `addr` with the listener's QUIC settings.
    pub fn bind(
        config: &ListenerConfig,
        settings: &QuicListener,
        addr: SocketAddr,
    ) -> std::io::Result<Self> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(settings.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
            .max_idle_timeout(IdleTimeout::try_from(settings.idle_timeout).ok());
        let mut server = quinn::ServerConfig::with_crypto(settings.crypto.clone());
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, addr)?;
        let shared = Shared {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            retry_above: settings.retry_above_handshakes,
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

    /// Accepts connections until `shutdown` turns true, then refuses new ones while existing
    /// connections drain (each holds a clone of `drain`) and returns once they have closed.
    pub async fn run(
        self,
        proxy: Arc<Proxy>,
        mut shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) {
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let Some(incoming) = incoming else { break };
            if self.shared.handshaking.load(Ordering::Relaxed) >= self.shared.retry_above
                && !incoming.remote_address_validated()
            {
                // Under a flood of new connections, make clients prove their address first.
                if let Err(error) = incoming.retry() {
                    error.into_incoming().ignore();
                }
                continue;
            }
            let connection = Connection {
                shared: self.shared.clone(),
                proxy: proxy.clone(),
                shutdown: shutdown.clone(),
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
    shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    _endpoint: quinn::Endpoint,
    _drain: mpsc::Sender<()>,
}

impl Connection {
    async fn serve(self, incoming: quinn::Incoming) {
        let peer = incoming.remote_address();
        let metrics = self.proxy.metrics().clone();
        let labels = ListenerLabels {
            listener: self.shared.name.to_string(),
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
        handshake_done(&metrics, &self.shared.name, peer, group, "h3");
        let info = ConnInfo {
            listener: self.shared.name.clone(),
            peer,
            secure: true,
            tls_group: group,
            max_request_body_bytes: self.shared.config.max_request_body_bytes,
            alt_svc: None,
        };
        let max_header = self.shared.config.max_header_bytes as u64;
        h3::serve_connection(connection, self.proxy, info, max_header, self.shutdown).await;
    }

    async fn handshake(&self, incoming: quinn::Incoming) -> Option<quinn::Connection> {
        let peer = incoming.remote_address();
        let _handshaking = Handshaking::new(&self.shared.handshaking);
        let timeout = self.shared.config.handshake_timeout;
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
                    self.proxy.metrics(),
                    &self.shared.name,
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
