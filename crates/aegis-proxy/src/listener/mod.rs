//! Client-facing listeners: TCP (HTTP/1.1, HTTP/2) and QUIC (HTTP/3) on the same port.

pub mod quic;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, watch};

use arc_swap::ArcSwap;

use crate::config::ListenerConfig;
use crate::http::Proxy;
use crate::limit::ConnectionLimit;
use crate::metrics::{HandshakeFailureLabels, HandshakeLabels, Metrics};

/// How long clients may cache the `alt-svc` advertisement of HTTP/3, in seconds.
const ALT_SVC_MAX_AGE: u32 = 86_400;

/// How long an accept loop pauses when the process or the system has no file descriptor (or
/// memory) left for a new connection: the pending connection stays in the backlog, and
/// retrying at once would only spin on the same error.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Handles a failed `accept` of the data plane or admin listener `what`: out of descriptors
/// or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), logs and waits [`ACCEPT_BACKOFF`]; any other
/// error concerns one connection that is already gone, and the loop goes on at once.
pub async fn accept_failed(what: &str, error: &std::io::Error) {
    let exhausted = matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        tracing::warn!(listener = what, %error, "accept failed: out of resources, backing off");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    } else {
        tracing::debug!(listener = what, %error, "accept failed");
    }
}

/// A listener's bound sockets, not yet serving.
#[derive(Debug)]
pub struct Listener {
    tcp: Option<tcp::Listener>,
    quic: Option<quic::Listener>,
    addr: SocketAddr,
    alt_svc: Option<HeaderValue>,
    max_connections: Option<usize>,
}

impl Listener {
    /// Binds TCP first, then UDP on the port TCP got (so port 0 works for both).
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<Self> {
        let mut addr = config.addr;
        let tcp = match config.protocols.tcp() {
            true => Some(tcp::Listener::bind(config).await?),
            false => None,
        };
        if let Some(tcp) = &tcp {
            addr = tcp.local_addr()?;
        }
        let quic = match &config.quic {
            Some(settings) => Some(quic::Listener::bind(config, settings, addr)?),
            None => None,
        };
        if let Some(quic) = &quic {
            addr = quic.local_addr()?;
        }
        let alt_svc = quic.as_ref().map(|_| alt_svc_value(addr.port()));
        if let Some(tcp) = &tcp {
            tcp.settings()
                .store(Arc::new(tcp::Settings::new(config, alt_svc.clone())));
        }
        Ok(Self {
            tcp,
            quic,
            addr,
            alt_svc,
            max_connections: config.max_connections,
        })
    }

    /// The bound address (TCP and UDP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the accept loops and returns the handle that updates or stops them. Every
    /// connection holds a clone of `drain` until it ends.
    pub fn spawn(
        self,
        proxy: Arc<ArcSwap<Proxy>>,
        global: Arc<ConnectionLimit>,
        drain: mpsc::Sender<()>,
    ) -> Handle {
        let (stop, stop_rx) = watch::channel(false);
        let limits = tcp::Limits {
            listener: Arc::new(ConnectionLimit::new(self.max_connections)),
            global,
        };
        let handle = Handle {
            addr: self.addr,
            alt_svc: self.alt_svc,
            tcp: self.tcp.as_ref().map(|t| t.settings().clone()),
            quic: self.quic.as_ref().map(quic::Listener::updater),
            limit: limits.listener.clone(),
            stop,
        };
        if let Some(tcp) = self.tcp {
            let run = tcp.run(
                proxy.clone(),
                limits.clone(),
                stop_rx.clone(),
                drain.clone(),
            );
            tokio::spawn(run);
        }
        if let Some(quic) = self.quic {
            tokio::spawn(quic.run(proxy, limits, stop_rx, drain));
        }
        handle
    }
}

/// A serving listener: applies reloaded settings, or stops accepting and drains.
#[derive(Debug)]
pub struct Handle {
    addr: SocketAddr,
    alt_svc: Option<HeaderValue>,
    tcp: Option<Arc<ArcSwap<tcp::Settings>>>,
    quic: Option<quic::Updater>,
    limit: Arc<ConnectionLimit>,
    stop: watch::Sender<bool>,
}

impl Handle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `config` can be applied to the sockets already bound: same address (as
    /// configured) and the same TCP/QUIC sockets.
    pub fn can_update(&self, old: &ListenerConfig, config: &ListenerConfig) -> bool {
        old.addr == config.addr
            && self.tcp.is_some() == config.protocols.tcp()
            && self.quic.is_some() == config.quic.is_some()
    }

    /// Applies `config` to new connections (certificates, timeouts, limits); connections
    /// already open finish with what they started with.
    pub fn update(&self, config: &ListenerConfig) {
        if let Some(tcp) = &self.tcp {
            tcp.store(Arc::new(tcp::Settings::new(config, self.alt_svc.clone())));
        }
        if let (Some(quic), Some(settings)) = (&self.quic, &config.quic) {
            quic.update(config, settings);
        }
        self.limit.set_max(config.max_connections);
    }

    /// Stops accepting; open connections drain (HTTP/1 finishes, HTTP/2 and HTTP/3 GOAWAY).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Counts and logs a completed handshake (TLS over TCP, or QUIC).
pub(crate) fn handshake_done(
    metrics: &Metrics,
    listener: &str,
    peer: SocketAddr,
    group: Option<&'static str>,
    protocol: &'static str,
) {
    metrics
        .handshakes
        .get_or_create(&HandshakeLabels {
            listener: listener.to_owned(),
            group: group.unwrap_or("unknown"),
            protocol,
        })
        .inc();
    tracing::debug!(listener, client = %peer, group, protocol, "handshake");
}

/// Every reason a failed handshake is counted under, over TCP
/// ([`aegis_tls::failure_reason`]) and QUIC.
pub const HANDSHAKE_FAILURE_REASONS: &[&str] = &[
    "eof",
    "timeout",
    "invalid_data",
    "io",
    "no_shared_group",
    "protocol_version",
    "peer_incompatible",
    "no_application_protocol",
    "peer_rejected_certificate",
    "alert_received",
    "bad_client_certificate",
    "invalid_message",
    "handshake_failure",
    "closed",
    "reset",
    "other",
];

/// Counts and logs a failed handshake.
pub(crate) fn handshake_failed(
    metrics: &Metrics,
    listener: &str,
    peer: SocketAddr,
    reason: &'static str,
    error: &dyn std::fmt::Display,
) {
    debug_assert!(HANDSHAKE_FAILURE_REASONS.contains(&reason), "{reason}");
    metrics
        .handshake_failures
        .get_or_create(&HandshakeFailureLabels {
            listener: listener.to_owned(),
            reason,
        })
        .inc();
    tracing::info!(listener, client = %peer, reason, %error, "handshake failed");
}

fn alt_svc_value(port: u16) -> HeaderValue {
    // Digits and fixed text only: always a valid header value.
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma={ALT_SVC_MAX_AGE}"))
        .unwrap_or_else(|_| HeaderValue::from_static("clear"))
}

pub(crate) fn alpn_name(alpn: Option<&[u8]>) -> &'static str {
    match alpn {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        Some(_) => "other",
        None => "none",
    }
}

/// Keeps the active-connections gauge raised for the life of a connection.
pub(crate) struct ActiveGuard(Gauge);

impl ActiveGuard {
    pub(crate) fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
