//! Aegis-Flow: a reverse proxy that terminates TLS 1.3 with post-quantum key exchange and
//! forwards HTTP/1.1 and HTTP/2 to upstream clusters.
//!
//! [`run`] binds every socket of a validated [`Config`] and returns a [`Running`] handle with the
//! bound addresses and a graceful [`Running::shutdown`]. The binary in `main.rs` only parses
//! arguments, loads the configuration and calls into this crate.

pub mod access_log;
pub mod admin;
pub mod carbon_feed;
pub mod config;
pub mod control;
pub mod demo;
pub mod dial;
pub mod http;
pub mod limit;
pub mod listener;
pub mod metrics;
pub mod probe;
pub mod quick;
pub mod route;
pub mod simulate;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use config::Config;
pub use control::ReloadSummary;

/// A boxed, thread-safe error, as used by bodies and the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A listening socket could not be bound.
    #[error("cannot bind {key} = \"{addr}\" ({what})")]
    Bind {
        /// The configuration key of the address: `listeners[0].listen` or `admin.listen`.
        key: String,
        /// `listener NAME` or `admin`.
        what: String,
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A running proxy: its bound addresses, reload, and the way to stop it.
#[derive(Debug)]
pub struct Running {
    control: Arc<control::Control>,
    admin: Option<SocketAddr>,
    drained: mpsc::Receiver<()>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in configuration order.
    pub fn listeners(&self) -> Arc<Vec<(String, SocketAddr)>> {
        self.control.listeners()
    }

    /// The bound admin address, if an admin listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Reads every carbon feed now instead of at the next poll, and publishes the result.
    pub async fn refresh_carbon(&self) {
        let proxy = self.control.proxy.load_full();
        proxy.carbon_feeds().refresh().await;
    }

    /// Probes the latency of every carbon-aware cluster's regions now instead of at the next
    /// interval.
    pub async fn probe_latency(&self) {
        self.control.proxy.load_full().probe_latency().await;
    }

    /// Applies a new configuration atomically, or keeps the running one and says why.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, config::ConfigErrors> {
        self.control.reload(config).await
    }

    /// Re-reads the configuration file given to [`run_from_file`] and applies it.
    pub async fn reload_file(&self) -> Result<ReloadSummary, config::ConfigErrors> {
        self.control.reload_file().await
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, then returns
    /// whether every connection finished in time.
    pub async fn shutdown(mut self) -> bool {
        let drain_timeout = self.control.begin_shutdown().await;
        let _ = self.shutdown.send(true);
        tokio::time::timeout(drain_timeout, self.drained.recv())
            .await
            .is_ok()
    }
}

/// Binds every listener of `config` (all or none), registers metrics into `registry` and starts
/// serving. Must be called inside a tokio runtime. Without a file, `reload_file` and the admin
/// `POST /reload` report that there is nothing to reload; [`Running::reload`] still works.
pub async fn run(config: Config, registry: Registry) -> Result<Running, RunError> {
    start(config, registry, None).await
}

/// Like [`run`], for a configuration loaded from `path`: SIGHUP (in the binary), the admin
/// `POST /reload` and [`Running::reload_file`] re-read that file.
pub async fn run_from_file(
    config: Config,
    registry: Registry,
    path: PathBuf,
) -> Result<Running, RunError> {
    start(config, registry, Some(path)).await
}

async fn start(
    config: Config,
    mut registry: Registry,
    path: Option<PathBuf>,
) -> Result<Running, RunError> {
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    let admin = match config.admin.clone() {
        Some(settings) => Some((
            tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|source| RunError::Bind {
                    key: "admin.listen".to_owned(),
                    what: "admin".to_owned(),
                    addr: settings.listen,
                    source,
                })?,
            settings,
        )),
        None => None,
    };
    let (drain, drained) = mpsc::channel(1);
    let control = control::Control::start(config, metrics, path, drain).await?;
    let proxy = control.proxy.clone();
    let clusters_in_force = Box::new(move || proxy.load().clusters().to_vec());
    upstream::gauges::register(&mut registry, clusters_in_force);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin_addr = match admin {
        Some((tcp, settings)) => {
            let addr = tcp.local_addr().ok();
            if let Some(addr) = addr {
                tracing::info!(%addr, token = settings.token.is_some(), "admin listening");
            }
            let state = Arc::new(admin::AdminState {
                registry,
                control: control.clone(),
                settings,
            });
            tokio::spawn(admin::serve(tcp, state, shutdown_rx));
            addr
        }
        None => None,
    };
    Ok(Running {
        control,
        admin: admin_addr,
        drained,
        shutdown,
    })
}
