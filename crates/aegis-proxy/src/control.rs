//! The running proxy's mutable state and how it changes: atomic reload and graceful shutdown.
//!
//! Requests read the current [`Proxy`] (routes, clusters, carbon feeds) from one `ArcSwap`; a
//! reload builds a complete new one and swaps it in, so a request sees either the old or the
//! new configuration, never a mix, and requests in flight finish on the one they started with.
//!
//! A reload is all or nothing. Everything that can fail (parsing, validation, certificate files,
//! binding new listeners) happens before anything changes; then listeners whose name, address
//! and socket kinds are unchanged get the new settings in place (no socket is closed), new
//! listeners start, and removed ones stop accepting and drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;

use crate::carbon_feed::CarbonFeeds;
use crate::config::{Config, ConfigError, ConfigErrors, ListenerConfig};
use crate::http::{Proxy, ProxyError};
use crate::limit::ConnectionLimit;
use crate::listener::{self, Handle};
use crate::metrics::{FailureReasons, Metrics, ReloadLabels};

/// Shared by the [`crate::Running`] handle, the admin listener and signal handlers.
#[derive(Debug)]
pub struct Control {
    /// Routes, clusters and feeds that new requests use.
    pub proxy: Arc<ArcSwap<Proxy>>,
    /// The configuration in force, as `/config` shows it.
    pub config_page: ArcSwap<ConfigPage>,
    /// False once draining has begun.
    pub ready: AtomicBool,
    metrics: Arc<Metrics>,
    global_connections: Arc<ConnectionLimit>,
    config_path: Option<PathBuf>,
    /// Listener names and bound addresses, readable without waiting for a reload.
    bound: ArcSwap<Vec<(String, SocketAddr)>>,
    state: Mutex<State>,
}

/// What only a reload or shutdown touches, one at a time.
#[derive(Debug)]
struct State {
    config: Config,
    listeners: Vec<(ListenerConfig, Handle)>,
    /// Stops the carbon feeds' poll loop of the current [`Proxy`].
    feeds_stop: watch::Sender<bool>,
    /// Cloned into every connection; dropped at shutdown so the receiver sees the end.
    drain: Option<mpsc::Sender<()>>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners bound by this reload.
    pub added: Vec<String>,
    /// Listeners stopped (now draining).
    pub removed: Vec<String>,
    /// Listeners that kept their sockets and took the new settings.
    pub updated: Vec<String>,
    /// Clusters now configured.
    pub clusters: usize,
}

impl std::fmt::Display for ReloadSummary {
    /// `listeners added: b; removed: none; updated: web; 3 clusters`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| match names {
            [] => "none".to_owned(),
            _ => names.join(", "),
        };
        write!(
            f,
            "listeners added: {}; removed: {}; updated: {}; {} cluster{}",
            list(&self.added),
            list(&self.removed),
            list(&self.updated),
            self.clusters,
            if self.clusters == 1 { "" } else { "s" }
        )
    }
}

impl Control {
    /// Binds every listener of `config` (all or none) and starts serving.
    pub(crate) async fn start(
        config: Config,
        metrics: Arc<Metrics>,
        config_path: Option<PathBuf>,
        drain: mpsc::Sender<()>,
    ) -> Result<Arc<Self>, crate::RunError> {
        config.log_warnings();
        let mut bound = Vec::with_capacity(config.listeners.len());
        for (i, l) in config.listeners.iter().enumerate() {
            let listener =
                listener::Listener::bind(l)
                    .await
                    .map_err(|source| crate::RunError::Bind {
                        key: format!("listeners[{i}].listen"),
                        what: format!("listener {}", l.name),
                        addr: l.addr,
                        source,
                    })?;
            bound.push(listener);
        }
        metrics.declare(&config, &FAILURE_REASONS);
        let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
        let feeds_stop = start_feeds(&config, proxy.carbon_feeds(), Instant::now());
        proxy.probe_latency().await;
        proxy.start_health_checks();
        let control = Arc::new(Self {
            proxy: Arc::new(ArcSwap::new(proxy)),
            config_page: ArcSwap::from_pointee(ConfigPage::of(&config)),
            ready: AtomicBool::new(true),
            global_connections: Arc::new(ConnectionLimit::new(config.max_connections)),
            metrics,
            config_path,
            bound: ArcSwap::from_pointee(Vec::new()),
            state: Mutex::new(State {
                listeners: Vec::new(),
                config: config.clone(),
                feeds_stop,
                drain: Some(drain.clone()),
            }),
        });
        let handles = bound
            .into_iter()
            .zip(&config.listeners)
            .map(|(listener, l)| (l.clone(), control.serve(listener, l, &drain)))
            .collect();
        let mut state = control.state.lock().await;
        state.listeners = handles;
        control.publish_listeners(&state);
        drop(state);
        Ok(control)
    }

    fn serve(
        &self,
        listener: listener::Listener,
        config: &ListenerConfig,
        drain: &mpsc::Sender<()>,
    ) -> Handle {
        let addr = listener.local_addr();
        tracing::info!(
            listener = config.name,
            %addr,
            tls = config.tls.is_some(),
            protocols = config.protocols_list().join(","),
            groups = config.groups_offered().join(","),
            "listening"
        );
        if config.quic.is_some() {
            tracing::info!(listener = config.name, udp = %addr, protocols = "h3", "listening");
        }
        listener.spawn(
            self.proxy.clone(),
            self.global_connections.clone(),
            drain.clone(),
        )
    }

    /// Every listener's name and bound address, in configuration order.
    pub fn listeners(&self) -> Arc<Vec<(String, SocketAddr)>> {
        self.bound.load_full()
    }

    fn publish_listeners(&self, state: &State) {
        let bound = state
            .listeners
            .iter()
            .map(|(c, h)| (c.name.clone(), h.local_addr()))
            .collect();
        self.bound.store(Arc::new(bound));
    }

    /// Re-reads the configuration file the proxy was started from and applies it.
    pub async fn reload_file(&self) -> Result<ReloadSummary, ConfigErrors> {
        let Some(path) = &self.config_path else {
            return Err(single_error(
                "",
                "no configuration file to reload: the proxy was started without --config",
            ));
        };
        match Config::load(path) {
            Ok(config) => self.reload(config).await,
            Err(errors) => {
                self.count_reload("error");
                Err(errors)
            }
        }
    }

    /// Applies `config`, or changes nothing and says why.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, ConfigErrors> {
        config.log_warnings();
        let result = self.apply(config).await;
        self.count_reload(if result.is_ok() { "ok" } else { "error" });
        result
    }

    fn count_reload(&self, result: &'static str) {
        let labels = ReloadLabels { result };
        self.metrics.reloads.get_or_create(&labels).inc();
    }

    async fn apply(&self, config: Config) -> Result<ReloadSummary, ConfigErrors> {
        let mut state = self.state.lock().await;
        let Some(drain) = state.drain.clone() else {
            return Err(single_error("", "the proxy is shutting down"));
        };
        if config.admin != state.config.admin {
            return Err(single_error(
                "admin",
                "changing [admin] (address, token, hosts or limits) needs a restart",
            ));
        }
        let to_bind = listeners_to_bind(&state, &config);
        let bound = bind_all(&config, &to_bind).await?;

        // Nothing below can fail: commit.
        self.swap_proxy(&mut state, &config).await;
        let summary = self.swap_listeners(&mut state, &config, bound, &drain);
        self.global_connections.set_max(config.max_connections);
        self.config_page.store(Arc::new(ConfigPage::of(&config)));
        state.config = config;
        self.publish_listeners(&state);
        tracing::info!(%summary, "configuration reloaded");
        Ok(summary)
    }

    /// Puts a proxy built from `config` in force, keeping the carbon feeds when `[carbon]`
    /// and `[regions]` are unchanged; its latency probes and health checks start first.
    async fn swap_proxy(&self, state: &mut State, config: &Config) {
        self.metrics.declare(config, &FAILURE_REASONS);
        let old = self.proxy.load_full();
        let same_feeds =
            config.carbon == state.config.carbon && config.regions == state.config.regions;
        let proxy = if same_feeds {
            Proxy::with_feeds(config, self.metrics.clone(), old.carbon_feeds().clone())
        } else {
            Proxy::new(config, self.metrics.clone())
        };
        let proxy = Arc::new(proxy);
        if !same_feeds {
            proxy.carbon_feeds().refresh().await;
            let next_poll = Instant::now() + config.carbon.poll_interval;
            let stop = start_feeds(config, proxy.carbon_feeds(), next_poll);
            let _ = std::mem::replace(&mut state.feeds_stop, stop).send(true);
        }
        proxy.probe_latency().await;
        proxy.start_health_checks();
        self.proxy.store(proxy);
    }

    /// Serves the newly `bound` listeners, updates the kept ones in place and stops the
    /// removed ones.
    fn swap_listeners(
        &self,
        state: &mut State,
        config: &Config,
        bound: Vec<(usize, listener::Listener)>,
        drain: &mpsc::Sender<()>,
    ) -> ReloadSummary {
        let mut summary = ReloadSummary {
            added: Vec::new(),
            removed: Vec::new(),
            updated: Vec::new(),
            clusters: config.clusters.len(),
        };
        let mut previous: HashMap<String, (ListenerConfig, Handle)> = state
            .listeners
            .drain(..)
            .map(|(c, h)| (c.name.clone(), (c, h)))
            .collect();
        let mut bound = bound.into_iter().peekable();
        for (i, l) in config.listeners.iter().enumerate() {
            let handle = match bound.next_if(|(at, _)| *at == i) {
                Some((_, listener)) => {
                    summary.added.push(l.name.clone());
                    self.serve(listener, l, drain)
                }
                None => {
                    let (_, handle) = previous
                        .remove(&l.name)
                        .expect("planned updates name a running listener");
                    handle.update(l);
                    summary.updated.push(l.name.clone());
                    handle
                }
            };
            state.listeners.push((l.clone(), handle));
        }
        for (name, (_, handle)) in previous {
            handle.stop();
            summary.removed.push(name);
        }
        summary
    }

    /// Reports not ready, keeps accepting for the shutdown delay (load balancers and
    /// Kubernetes endpoints see `/ready` fail and stop sending), then stops accepting
    /// everywhere and tells connections to drain; returns the drain timeout.
    pub(crate) async fn begin_shutdown(&self) -> Duration {
        self.ready.store(false, Ordering::Relaxed);
        let delay = self.state.lock().await.config.shutdown_delay;
        if !delay.is_zero() {
            tracing::info!(?delay, "not ready; still accepting for the shutdown delay");
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state.lock().await;
        for (_, handle) in &state.listeners {
            handle.stop();
        }
        let _ = state.feeds_stop.send(true);
        state.drain = None;
        state.config.drain_timeout
    }
}

/// Indices of the new listeners that need sockets: those with no running listener of the same
/// name whose sockets fit (same configured address, same TCP/QUIC kinds).
/// Binds the listeners at `to_bind` (indexes into `config.listeners`, in order), or names
/// the first that cannot be bound.
async fn bind_all(
    config: &Config,
    to_bind: &[usize],
) -> Result<Vec<(usize, listener::Listener)>, ConfigErrors> {
    let mut bound = Vec::new();
    for &i in to_bind {
        let l = &config.listeners[i];
        match listener::Listener::bind(l).await {
            Ok(listener) => bound.push((i, listener)),
            Err(e) => {
                let message = format!("cannot bind {}: {e}", l.addr);
                return Err(single_error(&format!("listeners[{i}].listen"), &message));
            }
        }
    }
    Ok(bound)
}

fn listeners_to_bind(state: &State, config: &Config) -> Vec<usize> {
    config
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            !state
                .listeners
                .iter()
                .any(|(old, handle)| old.name == l.name && handle.can_update(old, l))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Polls the feeds from `first_poll` on, until the returned sender says stop.
fn start_feeds(
    config: &Config,
    feeds: &Arc<CarbonFeeds>,
    first_poll: Instant,
) -> watch::Sender<bool> {
    let (stop, stop_rx) = watch::channel(false);
    if !config.regions.is_empty() {
        tokio::spawn(feeds.clone().run(first_poll, stop_rx));
    }
    stop
}

/// The `/config` page of `config`, rendered once per load.
#[derive(Debug)]
pub struct ConfigPage {
    /// As JSON (the default).
    pub json: String,
    /// As TOML, a file that validates to the same configuration (`?format=toml`).
    pub toml: String,
}

impl ConfigPage {
    fn of(config: &Config) -> Self {
        Self {
            json: config.to_json(),
            toml: config.to_toml(),
        }
    }
}

/// The reasons of every failure counter, from the modules that count them.
const FAILURE_REASONS: FailureReasons = FailureReasons {
    upstream: ProxyError::UPSTREAM_REASONS,
    retry: crate::http::driver::RETRY_REASONS,
    handshake: listener::HANDSHAKE_FAILURE_REASONS,
    feed: crate::carbon_feed::FEED_ERROR_REASONS,
};

fn single_error(key: &str, message: &str) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        key: key.to_owned(),
        line: None,
        message: message.to_owned(),
    }])
}
