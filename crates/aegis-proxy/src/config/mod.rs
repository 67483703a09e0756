//! Configuration: one TOML file, parsed into validated runtime types before any socket is bound.
//!
//! [`raw`] mirrors the file; [`validate`] turns it into [`Config`] and reports every mistake at
//! once, each with its key path and line ([`ConfigError`]).

mod document;
mod export;
pub mod raw;
mod resilience;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::path::PathRules;

pub use resilience::{HealthCheckConfig, OutlierConfig, RetryConfig};

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The admin listener, if any.
    pub admin: Option<AdminConfig>,
    /// Grace period for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long `/ready` answers 503 while the listeners still accept, so load
    /// balancers stop sending before connections are refused.
    pub shutdown_delay: Duration,
    /// Whether each request writes a JSON access-log line.
    pub access_log: bool,
    /// What the access log keeps of query strings.
    pub access_log_query: QueryLog,
    /// The access log's file, instead of stdout; reopened on SIGUSR1.
    pub access_log_file: Option<PathBuf>,
    /// Open client connections over all listeners above which new ones are refused.
    pub max_connections: Option<usize>,
    /// Client-facing listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Routes in match order.
    pub routes: Vec<RouteConfig>,
    /// Upstream clusters; routes refer to them by index.
    pub clusters: Vec<ClusterConfig>,
    /// Regions; clusters refer to them by index.
    pub regions: Vec<RegionConfig>,
    /// Carbon feeds and accounting, when any region is configured.
    pub carbon: CarbonConfig,
    /// What `validate` noticed but does not refuse (a feed file that does not exist yet).
    pub warnings: Vec<ConfigError>,
}

/// The admin listener and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Bearer token for `POST` endpoints (and every page with `token_for_reads`).
    pub token: Option<AdminToken>,
    /// The environment variable the token was read from.
    pub token_env: Option<String>,
    /// Whether `GET` pages need the token too.
    pub token_for_reads: bool,
    /// Host names accepted besides IP addresses and `localhost` (lower case).
    pub allowed_hosts: Vec<String>,
    /// Open admin connections above which new ones are closed.
    pub max_connections: usize,
    /// Deadline for a request head, idle keep-alive time included.
    pub header_read_timeout: Duration,
}

/// The admin bearer token, read from the environment; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token; `None` when it is empty.
    pub fn new(token: String) -> Option<Self> {
        (!token.is_empty()).then_some(Self(token))
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        expected.len() == presented.len()
            && expected
                .iter()
                .zip(presented)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// A region: where endpoints run and which grid zone powers it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionConfig {
    /// Region name.
    pub name: String,
    /// Grid zone key.
    pub zone: String,
    /// Static intensity, gCO2eq/kWh.
    pub intensity: Option<f64>,
    /// UK Carbon Intensity API region id.
    pub uk_region: Option<u32>,
    /// WattTime region.
    pub watttime_region: Option<String>,
    /// Configured round-trip time in ms, the latency estimate before the first probe.
    pub rtt_ms: Option<f64>,
    /// Carbon Aware SDK location (a cloud region name such as `eastus`).
    pub sdk_location: Option<String>,
}

/// A carbon-intensity feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FeedKind {
    /// A local file (wide CSV or JSON), re-read when it changes.
    File,
    /// The `intensity` values of `[regions]`.
    Static,
    /// The Electricity Maps API (v3, `carbon-intensity/latest`).
    Electricitymaps,
    /// The UK Carbon Intensity API (regional forecasts).
    Uk,
    /// The WattTime API (v3 marginal emissions forecast).
    Watttime,
    /// A Green Software Foundation Carbon Aware SDK WebAPI (`/emissions/bylocations`).
    CarbonAwareSdk,
}

impl FeedKind {
    /// The feed's name in configuration, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Static => "static",
            Self::Electricitymaps => "electricitymaps",
            Self::Uk => "uk",
            Self::Watttime => "watttime",
            Self::CarbonAwareSdk => "carbon_aware_sdk",
        }
    }
}

/// The kind of intensity a feed reports. A decision only ranks regions on one kind: an
/// average and a marginal figure of the same grid can differ by a factor of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Signal {
    /// Average intensity of the electricity consumed (Electricity Maps, UK Carbon Intensity).
    Average,
    /// Marginal intensity: the plant that answers extra demand (WattTime).
    Marginal,
}

/// Which emissions an intensity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Basis {
    /// Life-cycle emissions (construction, fuel supply, operation).
    Lifecycle,
    /// Direct (operational, combustion) emissions only.
    Direct,
}

impl Signal {
    /// The name in configuration and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Average => "average",
            Self::Marginal => "marginal",
        }
    }
}

impl Basis {
    /// The name in configuration and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lifecycle => "lifecycle",
            Self::Direct => "direct",
        }
    }
}

/// What saved grams are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Baseline {
    /// Carbon-blind routing to the lowest-latency region, under the cluster's own cap.
    #[default]
    Nearest,
    /// Carbon-blind balancing over every endpoint (regions weighted by endpoint count).
    RoundRobin,
}

impl Baseline {
    /// The name in configuration, metrics and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::RoundRobin => "round_robin",
        }
    }
}

/// Base URL and deadline of an API feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFeedConfig {
    /// API base URL.
    pub base_url: String,
    /// Deadline for each API call.
    pub timeout: Duration,
}

/// Settings of the Carbon Aware SDK feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkFeedConfig {
    /// Base URL and deadline.
    pub api: ApiFeedConfig,
    /// What the SDK's data source reports.
    pub signal: Signal,
    /// Which emissions it counts.
    pub basis: Basis,
}

/// Settings of the WattTime feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WattTimeConfig {
    /// Base URL and deadline.
    pub api: ApiFeedConfig,
    /// Environment variable holding the user name.
    pub username_env: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

/// Settings of the Electricity Maps feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectricityMapsConfig {
    /// API base URL.
    pub base_url: String,
    /// Environment variable holding the API token.
    pub token_env: String,
    /// Deadline for each API call.
    pub timeout: Duration,
    /// Emission factors asked for.
    pub basis: Basis,
}

/// `[carbon]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonConfig {
    /// Feeds in fallback order.
    pub feeds: Vec<FeedKind>,
    /// Path of the file feed.
    pub file: Option<PathBuf>,
    /// Settings of the Electricity Maps feed.
    pub electricitymaps: Option<ElectricityMapsConfig>,
    /// Settings of the UK Carbon Intensity feed.
    pub uk: Option<ApiFeedConfig>,
    /// Settings of the WattTime feed.
    pub watttime: Option<WattTimeConfig>,
    /// Settings of the Carbon Aware SDK feed.
    pub carbon_aware_sdk: Option<SdkFeedConfig>,
    /// How often feeds are read.
    pub poll_interval: Duration,
    /// Values older than this are stale.
    pub stale_after: Duration,
    /// Intensity of a region no feed knows.
    pub unknown_intensity: f64,
    /// Header naming the chosen region, if any.
    pub region_header: Option<http::HeaderName>,
    /// Energy per request.
    pub energy: aegis_carbon::energy::EnergyModel,
    /// What saved grams are counted against.
    pub baseline: Baseline,
    /// Signal and basis of the `file` and `static` values.
    pub declared: (Signal, Basis),
    /// How often regions are probed for latency.
    pub probe_interval: Duration,
    /// Deadline of one latency probe.
    pub probe_timeout: Duration,
}

impl CarbonConfig {
    /// The signal and basis of what `feed` reports.
    pub fn quantity(&self, feed: FeedKind) -> (Signal, Basis) {
        match feed {
            FeedKind::File | FeedKind::Static => self.declared,
            FeedKind::Electricitymaps => (
                Signal::Average,
                self.electricitymaps
                    .as_ref()
                    .map_or(Basis::Lifecycle, |e| e.basis),
            ),
            FeedKind::Uk => (Signal::Average, Basis::Direct),
            FeedKind::Watttime => (Signal::Marginal, Basis::Direct),
            FeedKind::CarbonAwareSdk => self
                .carbon_aware_sdk
                .as_ref()
                .map_or(self.declared, |sdk| (sdk.signal, sdk.basis)),
        }
    }
}

/// A cluster's carbon policy setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CarbonPolicyKind {
    /// Carbon plays no part.
    #[default]
    Off,
    /// Lowest intensity within the latency budget.
    Greenest,
    /// Traffic split by intensity weights.
    Weighted,
}

/// One client-facing listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name used in metrics and logs.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// TLS termination, or plain HTTP/1.1 + h2c when `None`.
    pub tls: Option<ListenerTls>,
    /// Protocols served.
    pub protocols: Protocols,
    /// HTTP/3 over QUIC, when `h3` is among the protocols.
    pub quic: Option<QuicListener>,
    /// Deadline for a client to send its request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Deadline for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Largest request body accepted.
    pub max_request_body_bytes: Option<u64>,
    /// Open connections above which new ones are refused.
    pub max_connections: Option<usize>,
    /// How request paths are normalised before routing.
    pub paths: PathRules,
    /// Proxies in front whose forwarding headers are trusted.
    pub trusted_proxy_hops: u8,
    /// TCP `listen` backlog.
    pub backlog: u32,
    /// A body that makes no progress in either direction for this long is cut off, and its
    /// cluster slot freed.
    pub stream_idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
}

/// `path_normalization` on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PathNormalization {
    /// Forward the normalised path.
    #[default]
    Rewrite,
    /// Answer 400 to a path that is not already normal.
    Reject,
}

impl ListenerConfig {
    /// How long HTTP/1.1 waits for a request head, between requests included: the shorter of
    /// the head deadline and the idle timeout.
    pub fn head_wait(&self) -> Duration {
        self.header_read_timeout.min(self.idle_timeout)
    }

    /// The key-exchange groups the listener offers, most preferred first; empty without TLS.
    pub fn groups_offered(&self) -> Vec<&'static str> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let policy = match tls.pq_only {
            true => aegis_tls::KxPolicy::PostQuantumOnly,
            false => aegis_tls::KxPolicy::PreferPostQuantum,
        };
        policy
            .groups()
            .iter()
            .map(|g| aegis_tls::group_name(*g))
            .collect()
    }

    /// The served protocols by name, as in the file.
    pub fn protocols_list(&self) -> Vec<&'static str> {
        let p = self.protocols;
        [(p.http1, "http/1.1"), (p.http2, "h2"), (p.http3, "h3")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }
}

/// TLS settings of a listener, with the rustls configuration already built.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Only the hybrid post-quantum group is offered.
    pub pq_only: bool,
    /// CA bundle for client certificates, when mTLS is required.
    pub client_ca: Option<PathBuf>,
    /// The server configuration built from the above.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// A protocol a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 over TCP (`h1`, Caddy's spelling, is accepted too).
    #[serde(rename = "http/1.1", alias = "h1")]
    Http1,
    /// HTTP/2 over TCP (ALPN `h2`, or h2c by prior knowledge without TLS).
    #[serde(rename = "h2")]
    Http2,
    /// HTTP/3 over QUIC (UDP, same port).
    #[serde(rename = "h3")]
    Http3,
}

/// The set of protocols a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// HTTP/1.1 over TCP.
    pub http1: bool,
    /// HTTP/2 over TCP.
    pub http2: bool,
    /// HTTP/3 over QUIC.
    pub http3: bool,
}

impl Protocols {
    /// Whether a TCP socket is needed.
    pub fn tcp(&self) -> bool {
        self.http1 || self.http2
    }

    /// ALPN identifiers for the TCP listener, most preferred first.
    pub fn tcp_alpn(&self) -> Vec<Vec<u8>> {
        let mut alpn = Vec::new();
        if self.http2 {
            alpn.push(b"h2".to_vec());
        }
        if self.http1 {
            alpn.push(b"http/1.1".to_vec());
        }
        alpn
    }
}

/// HTTP/3 settings of a listener, with the QUIC crypto already built.
#[derive(Clone)]
pub struct QuicListener {
    /// TLS 1.3 for QUIC: same certificate and key-exchange groups as the TCP listener.
    pub crypto: Arc<dyn quinn::crypto::ServerConfig>,
    /// Concurrent request streams per connection.
    pub max_concurrent_streams: u32,
    /// Idle connections close after this.
    pub idle_timeout: Duration,
    /// Above this many handshakes in progress, unvalidated clients get a Retry.
    pub retry_above_handshakes: usize,
}

impl fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicListener")
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry_above_handshakes", &self.retry_above_handshakes)
            .finish_non_exhaustive()
    }
}

/// How a route matches the request host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostMatch {
    /// `*`: any host.
    Any,
    /// An exact host name, lower case.
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any name ending in it.
    Suffix(String),
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name in metrics and logs.
    pub name: String,
    /// Host pattern.
    pub host: HostMatch,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Index into [`Config::clusters`].
    pub cluster: usize,
}

/// What the access log keeps of a request's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueryLog {
    /// The query as the client sent it.
    #[default]
    Full,
    /// Parameter names only, every value replaced: `token=REDACTED&page=REDACTED`.
    Redacted,
    /// No query.
    None,
}

impl QueryLog {
    /// The name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Redacted => "redacted",
            Self::None => "none",
        }
    }

    /// What to log of `query` (without the `?`).
    pub fn apply(self, query: &str) -> String {
        match self {
            Self::Full => query.to_owned(),
            Self::None => String::new(),
            Self::Redacted => query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}=REDACTED"),
                    None => pair.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&"),
        }
    }
}

/// Load-balancing policy within a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LbPolicy {
    /// Each endpoint in turn.
    RoundRobin,
    /// The less busy of two random endpoints (power of two choices).
    #[default]
    LeastRequest,
}

/// HTTP version spoken to upstream endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on cleartext, ALPN `h2` over TLS).
    Http2,
}

/// One upstream cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// Load-balancing policy.
    pub lb: LbPolicy,
    /// Upstream HTTP version.
    pub protocol: UpstreamProtocol,
    /// Endpoints as `host:port`.
    pub endpoints: Vec<EndpointAddr>,
    /// Region (index into [`Config::regions`]) of each endpoint, when regions are used.
    pub endpoint_regions: Vec<Option<usize>>,
    /// Carbon policy of the cluster.
    pub carbon: aegis_carbon::PolicyConfig,
    /// Connect (and TLS handshake) deadline.
    pub connect_timeout: Duration,
    /// Deadline for the response head.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub idle_timeout: Duration,
    /// TLS to the endpoints.
    pub tls: Option<UpstreamTls>,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Retries and their budget.
    pub retry: RetryConfig,
    /// Requests in flight to the cluster above which new ones are shed with 503.
    pub max_pending_requests: usize,
    /// Of those, how many one client connection may hold (HTTP/2, HTTP/3).
    pub max_pending_per_connection: usize,
}

/// An endpoint address as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddr {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS to upstream endpoints, with the rustls configuration already built.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// CA bundle endpoints must chain to.
    pub ca: PathBuf,
    /// Client certificate for mTLS.
    pub cert: Option<PathBuf>,
    /// Client key for mTLS, with `cert`.
    pub key: Option<PathBuf>,
    /// Name verified on endpoint certificates instead of the endpoint host.
    pub server_name: Option<String>,
    /// Only the hybrid post-quantum group is offered.
    pub pq_only: bool,
    /// The client configuration built from the above.
    pub client_config: Arc<rustls::ClientConfig>,
}

/// One configuration mistake, located by key path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `clusters.api.endpoints[1]`; empty for the whole file.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{}, line {line}: {}", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

/// Every mistake found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates a configuration file; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: String::new(),
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and validates configuration text; relative paths are resolved against `base_dir`,
    /// secrets named by `*_env` keys are read from the process environment.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigErrors> {
        Self::parse_with_env(text, base_dir, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], reading environment variables through `env`.
    pub fn parse_with_env(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        validate::parse(text, base_dir, env)
    }

    /// Logs each of [`Config::warnings`] once.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(%warning, "configuration");
        }
    }
}
