//! Client-facing listeners: TCP (HTTP/1.1, HTTP/2) and QUIC (HTTP/3) on the same port.

pub mod quic;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, watch};

use crate::config::ListenerConfig;
use crate::http::Proxy;
use crate::metrics::{HandshakeFailureLabels, HandshakeLabels, Metrics};

/// How long clients may cache the `alt-svc` advertisement of HTTP/3, in seconds.
const ALT_SVC_MAX_AGE: u32 = 86_400;

/// A listener's bound sockets.
#[derive(Debug)]
pub struct Listener {
    tcp: Option<tcp::Listener>,
    quic: Option<quic::Listener>,
    addr: SocketAddr,
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
        let tcp = tcp.map(|tcp| tcp.with_alt_svc(alt_svc));
        Ok(Self { tcp, quic, addr })
    }

    /// The bound address (TCP and UDP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the accept loops; every connection holds a clone of `drain` until it ends.
    pub fn spawn(
        self,
        proxy: Arc<Proxy>,
        shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) {
        if let Some(tcp) = self.tcp {
            tokio::spawn(tcp.run(proxy.clone(), shutdown.clone(), drain.clone()));
        }
        if let Some(quic) = self.quic {
            tokio::spawn(quic.run(proxy, shutdown, drain));
        }
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

/// Counts and logs a failed handshake.
pub(crate) fn handshake_failed(
    metrics: &Metrics,
    listener: &str,
    peer: SocketAddr,
    reason: &'static str,
    error: &dyn std::fmt::Display,
) {
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
