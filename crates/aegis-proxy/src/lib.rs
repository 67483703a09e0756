//! Aegis-Flow: a reverse proxy that terminates TLS 1.3 with post-quantum key exchange and
//! forwards HTTP/1.1 and HTTP/2 to upstream clusters.
//!
//! [`run`] binds every socket of a validated [`Config`] and returns a [`Running`] handle with the
//! bound addresses and a graceful [`Running::shutdown`]. The binary in `main.rs` only parses
//! arguments, loads the configuration and calls into this crate.

pub mod admin;
pub mod carbon_feed;
pub mod config;
pub mod demo;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod quick;
pub mod route;
pub mod simulate;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use config::Config;

/// A boxed, thread-safe error, as used by bodies and the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A listening socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// `listener NAME` or `admin`.
        what: String,
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A running proxy: its bound addresses and the way to stop it.
#[derive(Debug)]
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    drained: mpsc::Receiver<()>,
    drain_timeout: Duration,
    ready: Arc<AtomicBool>,
    carbon: Arc<carbon_feed::CarbonFeeds>,
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in configuration order.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The bound admin address, if an admin listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Reads every carbon feed now instead of at the next poll, and publishes the result.
    pub async fn refresh_carbon(&self) {
        self.carbon.refresh().await;
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, then returns
    /// whether every connection finished in time.
    pub async fn shutdown(mut self) -> bool {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        tokio::time::timeout(self.drain_timeout, self.drained.recv())
            .await
            .is_ok()
    }
}

/// Binds every listener of `config` (all or none), registers metrics into `registry` and starts
/// serving. Must be called inside a tokio runtime.
pub async fn run(config: Config, mut registry: Registry) -> Result<Running, RunError> {
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    let proxy = Arc::new(http::Proxy::new(&config, metrics));
    proxy.start_health_checks();
    let mut bound = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = listener::Listener::bind(l)
            .await
            .map_err(|source| RunError::Bind {
                what: format!("listener {}", l.name),
                addr: l.addr,
                source,
            })?;
        bound.push(listener);
    }
    let admin = match config.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind {
                    what: "admin".to_owned(),
                    addr,
                    source,
                })?,
        ),
        None => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    if !config.regions.is_empty() {
        tokio::spawn(proxy.carbon_feeds().clone().run(shutdown_rx.clone()));
    }
    let (drain, drained) = mpsc::channel(1);
    let ready = Arc::new(AtomicBool::new(true));
    let mut listeners = Vec::new();
    for (listener, l) in bound.into_iter().zip(&config.listeners) {
        let addr = listener.local_addr();
        tracing::info!(listener = l.name, %addr, tls = l.tls.is_some(), "listening");
        listeners.push((l.name.clone(), addr));
        listener.spawn(proxy.clone(), shutdown_rx.clone(), drain.clone());
    }
    let admin_addr = match admin {
        Some(tcp) => {
            let addr = tcp.local_addr().ok();
            let state = Arc::new(admin::AdminState {
                registry,
                config_json: serde_json::to_string_pretty(&config.to_redacted_json())
                    .unwrap_or_default(),
                ready: ready.clone(),
            });
            tokio::spawn(admin::serve(tcp, state, shutdown_rx));
            addr
        }
        None => None,
    };
    Ok(Running {
        listeners,
        admin: admin_addr,
        shutdown,
        drained,
        drain_timeout: config.drain_timeout,
        ready,
        carbon: proxy.carbon_feeds().clone(),
    })
}
