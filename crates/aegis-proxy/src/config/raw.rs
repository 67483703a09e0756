//! The configuration file as written: serde types that mirror the TOML one to one.
//!
//! They serialize too: [`super::Config::to_raw`] writes a validated configuration back in
//! this schema for the admin `/config` page. Unknown keys are rejected. Leaves that need a semantic check are `Spanned`, so an error can
//! name the line. Nothing here is checked beyond its TOML type; see [`super::validate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[admin]`: the admin listener.
    pub admin: Option<RawAdmin>,
    /// `[server]`: process-wide settings.
    #[serde(default)]
    pub server: RawServer,
    /// `[[listeners]]`.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// `[[routes]]`, matched in order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[clusters.NAME]`.
    #[serde(default)]
    pub clusters: BTreeMap<String, Spanned<RawCluster>>,
    /// `[regions.NAME]`: where endpoints run, and on which grid.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, Spanned<RawRegion>>,
    /// `[carbon]`: intensity feeds and accounting.
    pub carbon: Option<RawCarbon>,
}

/// `[regions.NAME]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// Grid zone key (Electricity Maps zone, e.g. `DE`), looked up in the feeds.
    pub zone: Spanned<String>,
    /// Static intensity in gCO2eq/kWh, the `static` feed's value for this region.
    pub intensity: Option<Spanned<f64>>,
    /// UK Carbon Intensity API region id (1..=17), for the `uk` feed.
    pub uk_region: Option<Spanned<u32>>,
    /// WattTime region (e.g. `CAISO_NORTH`), for the `watttime` feed.
    pub watttime_region: Option<String>,
    /// Round-trip time to the region in ms: the latency estimate until the first probe.
    pub rtt_ms: Option<Spanned<f64>>,
    /// Carbon Aware SDK location (e.g. `eastus`), for the `carbon_aware_sdk` feed.
    pub sdk_location: Option<String>,
}

/// `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCarbon {
    /// Feeds tried in order: `electricitymaps`, `file`, `static`.
    pub feeds: Spanned<Vec<super::FeedKind>>,
    /// Settings of the `file` feed.
    pub file: Option<RawFileFeed>,
    /// Settings of the `electricitymaps` feed.
    pub electricitymaps: Option<RawElectricityMaps>,
    /// Settings of the `uk` feed.
    pub uk: Option<RawApiFeed>,
    /// Settings of the `watttime` feed.
    pub watttime: Option<RawWattTime>,
    /// Settings of the `carbon_aware_sdk` feed.
    pub carbon_aware_sdk: Option<RawSdkFeed>,
    /// How often feeds are read.
    pub poll_interval_ms: Option<Spanned<u64>>,
    /// A value older than this is stale: the next feed is used.
    pub stale_after_ms: Option<Spanned<u64>>,
    /// Intensity assumed for a region no feed knows.
    pub unknown_intensity: Option<Spanned<f64>>,
    /// Response header naming the chosen region; empty to send none.
    pub region_header: Option<Spanned<String>>,
    /// Energy model: watt-hours per request.
    pub wh_per_request: Option<Spanned<f64>>,
    /// Energy model: watt-hours per megabyte of body.
    pub wh_per_mb: Option<Spanned<f64>>,
    /// What saved grams are counted against: `nearest` (default) or `round_robin`.
    pub baseline: Option<super::Baseline>,
    /// The kind of value the `file` and `static` feeds hold: `average` (default) or `marginal`.
    pub signal: Option<super::Signal>,
    /// Emissions the `file` and `static` values count: `lifecycle` (default) or `direct`.
    pub basis: Option<super::Basis>,
    /// How often each carbon-aware cluster's regions are probed for latency.
    pub probe_interval_ms: Option<Spanned<u64>>,
    /// Deadline of one latency probe.
    pub probe_timeout_ms: Option<Spanned<u64>>,
}

/// `electricitymaps = { ... }` in `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawElectricityMaps {
    /// API base URL; default `https://api.electricitymaps.com`.
    pub base_url: Option<Spanned<String>>,
    /// Environment variable holding the token; default `ELECTRICITYMAPS_TOKEN`.
    pub token_env: Option<String>,
    /// Deadline per API call.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Emission factors asked for (`emissionFactorType`): `lifecycle` (default) or `direct`.
    pub basis: Option<super::Basis>,
}

/// `carbon_aware_sdk = { ... }` in `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSdkFeed {
    /// Base URL of the SDK's WebAPI (required: there is no public instance).
    pub base_url: Spanned<String>,
    /// Deadline per API call.
    pub timeout_ms: Option<Spanned<u64>>,
    /// What the SDK's data source reports: `average` or `marginal` (required).
    pub signal: super::Signal,
    /// Which emissions it counts: `lifecycle` or `direct` (required).
    pub basis: super::Basis,
}

/// `uk = { ... }` in `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiFeed {
    /// API base URL.
    pub base_url: Option<Spanned<String>>,
    /// Deadline per API call.
    pub timeout_ms: Option<Spanned<u64>>,
}

/// `watttime = { ... }` in `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWattTime {
    /// API base URL; default `https://api.watttime.org`.
    pub base_url: Option<Spanned<String>>,
    /// Environment variable holding the user name; default `WATTTIME_USERNAME`.
    pub username_env: Option<String>,
    /// Environment variable holding the password; default `WATTTIME_PASSWORD`.
    pub password_env: Option<String>,
    /// Deadline per API call.
    pub timeout_ms: Option<Spanned<u64>>,
}

/// `file = { path = "..." }` in `[carbon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileFeed {
    /// Wide CSV (`datetime_utc,ZONE,...`, the row in force is used) or JSON `{"ZONE": value}`.
    pub path: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin HTTP listener.
    pub listen: Spanned<String>,
    /// Environment variable holding the bearer token that `POST` endpoints require.
    pub token_env: Option<Spanned<String>>,
    /// Require the token for `GET` pages too.
    pub require_token_for_reads: Option<Spanned<bool>>,
    /// Host names accepted besides IP addresses and `localhost`.
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    /// Open admin connections above which new ones are closed.
    pub max_connections: Option<Spanned<u64>>,
    /// A client must send its request head within this time.
    pub header_read_timeout_ms: Option<Spanned<u64>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub drain_timeout_ms: Option<Spanned<u64>>,
    /// After SIGTERM, how long `/ready` answers 503 while listeners still accept.
    pub shutdown_delay_ms: Option<Spanned<u64>>,
    /// Whether each request writes a JSON access-log line.
    pub access_log: Option<bool>,
    /// What the access log keeps of query strings: `full`, `redacted` (names only) or `none`.
    pub access_log_query: Option<super::QueryLog>,
    /// Write the access log to this file (reopened on SIGUSR1) instead of stdout.
    pub access_log_file: Option<Spanned<String>>,
    /// Open client connections, over all listeners, above which new ones are refused.
    pub max_connections: Option<Spanned<u64>>,
}

/// `[[listeners]]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, used in metrics and logs.
    pub name: Spanned<String>,
    /// `ip:port` to bind.
    pub listen: Spanned<String>,
    /// Terminate TLS with these settings; plain HTTP (h1 and h2c) without.
    pub tls: Option<RawListenerTls>,
    /// Protocols served: `http/1.1`, `h2`, `h3` (QUIC on the same port, UDP).
    pub protocols: Option<Spanned<Vec<super::Protocol>>>,
    /// HTTP/3 limits.
    pub quic: Option<Spanned<RawQuic>>,
    /// A client must send its request headers within this time.
    pub header_read_timeout_ms: Option<Spanned<u64>>,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// TLS handshake must finish within this time.
    pub handshake_timeout_ms: Option<Spanned<u64>>,
    /// Largest request head accepted (431 above).
    pub max_header_bytes: Option<Spanned<u64>>,
    /// Largest request body accepted (413 above); no limit when absent.
    pub max_request_body_bytes: Option<Spanned<u64>>,
    /// Open client connections above which new ones are refused.
    pub max_connections: Option<Spanned<u64>>,
    /// `rewrite` (default) forwards the normalised path; `reject` answers 400 to any other.
    pub path_normalization: Option<super::PathNormalization>,
    /// Merge runs of `/` in paths (default true).
    pub merge_slashes: Option<bool>,
    /// `keep` (default), `reject` or `decode` `%2F` and `%5C` in paths.
    pub encoded_slashes: Option<crate::http::path::EncodedSlashes>,
    /// Proxies in front whose `x-forwarded-for` / `forwarded` entries are kept (default 0).
    pub trusted_proxy_hops: Option<Spanned<u64>>,
    /// Pending connections the kernel queues before `accept` (TCP `listen` backlog).
    pub backlog: Option<Spanned<u64>>,
    /// A response (or request) body that makes no progress for this long is cut off.
    pub stream_idle_timeout_ms: Option<Spanned<u64>>,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: Option<Spanned<u64>>,
}

/// `tls = { ... }` on a listener.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// PEM certificate chain.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
    /// Offer only the hybrid post-quantum group.
    #[serde(default)]
    pub pq_only: bool,
    /// Require client certificates issued by this PEM CA bundle (mTLS).
    pub client_ca: Option<Spanned<String>>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name in metrics and logs; default `routes[N]`.
    pub name: Option<String>,
    /// `*`, an exact host, or `*.suffix`; default `*`.
    pub host: Option<Spanned<String>>,
    /// Path prefix, starting with `/`; default `/`.
    pub path_prefix: Option<Spanned<String>>,
    /// Name of the cluster that serves the route.
    pub cluster: Spanned<String>,
}

/// `[clusters.NAME]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Load-balancing policy.
    #[serde(default)]
    pub lb: super::LbPolicy,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: super::UpstreamProtocol,
    /// `host:port` of each endpoint (without regions).
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// Endpoints by region: `{ REGION = ["host:port", ...] }` (instead of `endpoints`).
    pub regions: Option<Spanned<BTreeMap<String, Vec<Spanned<String>>>>>,
    /// Carbon policy: `off`, `greenest` or `weighted`.
    pub carbon: Option<Spanned<super::CarbonPolicyKind>>,
    /// Eligible regions are within this many ms of the fastest healthy region.
    pub latency_budget_ms: Option<Spanned<f64>>,
    /// Largest fraction of recent traffic one region may take.
    pub max_share: Option<Spanned<f64>>,
    /// Greenest keeps the current region unless another is greener by more than this fraction.
    pub hysteresis: Option<Spanned<f64>>,
    /// Time allowed to open a connection (and finish TLS) to an endpoint.
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// Time allowed from sending a request to receiving the response head.
    pub request_timeout_ms: Option<Spanned<u64>>,
    /// Idle pooled connections are closed after this time.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// Speak TLS to the endpoints.
    pub tls: Option<RawUpstreamTls>,
    /// Active health checks.
    pub health_check: Option<Spanned<RawHealthCheck>>,
    /// Passive outlier ejection.
    pub outlier: Option<RawOutlier>,
    /// Retries and their budget.
    pub retry: Option<RawRetry>,
    /// Requests in flight to the cluster above which new ones get 503.
    pub max_pending_requests: Option<Spanned<u64>>,
    /// Of those, how many one client connection may hold.
    pub max_pending_per_connection: Option<Spanned<u64>>,
}

/// `[clusters.NAME.health_check]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path requested with GET.
    pub path: Spanned<String>,
    /// Host header; default: the endpoint.
    pub host: Option<Spanned<String>>,
    /// Time between checks.
    pub interval_ms: Option<Spanned<u64>>,
    /// Deadline of one check.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Passed checks that make an endpoint healthy again.
    pub healthy_threshold: Option<Spanned<u64>>,
    /// Failed checks that make an endpoint unhealthy.
    pub unhealthy_threshold: Option<Spanned<u64>>,
    /// `[low, high]`: status codes that pass, inclusive.
    pub expected_status: Option<Spanned<Vec<u16>>>,
}

/// `[clusters.NAME.outlier]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Consecutive connect failures or 5xx that eject; 0 disables ejection.
    pub consecutive_failures: Option<Spanned<u64>>,
    /// First ejection time.
    pub base_ejection_ms: Option<Spanned<u64>>,
    /// Longest ejection time.
    pub max_ejection_ms: Option<Spanned<u64>>,
    /// Largest percentage of endpoints ejected at once.
    pub max_ejected_percent: Option<Spanned<u64>>,
}

/// `[clusters.NAME.retry]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries per request; 0 disables.
    pub attempts: Option<Spanned<u64>>,
    /// Retries in flight as a percentage of active requests.
    pub budget_percent: Option<Spanned<f64>>,
    /// Retries in flight always allowed, whatever the percentage.
    pub min_concurrent: Option<Spanned<u64>>,
}

/// `tls = { ... }` on a cluster.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM CA bundle that endpoint certificates must chain to.
    pub ca: Spanned<String>,
    /// Client certificate for mTLS.
    pub cert: Option<Spanned<String>>,
    /// Client key for mTLS.
    pub key: Option<Spanned<String>>,
    /// Name to verify on the endpoint certificate; default: the endpoint host.
    pub server_name: Option<Spanned<String>>,
    /// Offer only the hybrid post-quantum group.
    #[serde(default)]
    pub pq_only: bool,
}

/// `quic = { ... }` on a listener that serves `h3`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuic {
    /// Concurrent request streams per connection.
    pub max_concurrent_streams: Option<Spanned<u64>>,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// Above this many handshakes in progress, new clients must prove their address (Retry).
    pub retry_above_handshakes: Option<Spanned<u64>>,
}
