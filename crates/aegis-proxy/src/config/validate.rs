//! Turns [`RawConfig`] into [`Config`], collecting every error with its key path and line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aegis_tls::{pem, ClientAuth, ClientOptions, KxPolicy, ServerOptions};
use toml::Spanned;

use crate::http::path::PathRules;

use super::raw::{RawCluster, RawConfig, RawListener, RawListenerTls, RawRoute, RawUpstreamTls};
use super::{
    ClusterConfig, Config, ConfigError, ConfigErrors, EndpointAddr, HostMatch, ListenerConfig,
    ListenerTls, PathNormalization, Protocol, Protocols, QuicListener, RouteConfig,
    UpstreamProtocol, UpstreamTls,
};

const DEFAULT_DRAIN_MS: u64 = 30_000;
const DEFAULT_HEADER_READ_MS: u64 = 10_000;
const DEFAULT_CLIENT_IDLE_MS: u64 = 60_000;
const DEFAULT_HANDSHAKE_MS: u64 = 10_000;
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_HEADER_BYTES: u64 = 8192;
const MAX_HEADER_BYTES: u64 = 1024 * 1024;
const DEFAULT_CONNECT_MS: u64 = 5_000;
const DEFAULT_REQUEST_MS: u64 = 30_000;
const DEFAULT_IDLE_MS: u64 = 60_000;
const DEFAULT_QUIC_STREAMS: u64 = 100;
const DEFAULT_CARBON_POLL_MS: u64 = 300_000;
const DEFAULT_CARBON_STALE_MS: u64 = 2 * 3_600_000;
const DEFAULT_UNKNOWN_INTENSITY: f64 = 500.0;
const DEFAULT_FEED_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_QUIC_IDLE_MS: u64 = 30_000;
const DEFAULT_QUIC_RETRY_ABOVE: u64 = 64;
/// Envoy's `stream_idle_timeout`: long enough for long polls and quiet streams.
const DEFAULT_STREAM_IDLE_MS: u64 = 300_000;
/// Envoy's, Go's and nginx's default.
const DEFAULT_H2_STREAMS: u64 = 100;
/// Go's and Linux's default `somaxconn`: a burst of new connections waits in the kernel
/// instead of costing clients SYN retries (tokio's default is 1024, std's 128).
const DEFAULT_BACKLOG: u64 = 4096;
/// More trusted proxies than this in front of one listener is a misconfiguration.
const MAX_TRUSTED_HOPS: u64 = 16;

/// Parses TOML text and validates it, reading `*_env` secrets through `env`. Every mistake is
/// reported, schema and semantic alike, in file order.
pub(super) fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let document = super::document::read(text)?;
    let mut checker = Checker {
        text,
        base_dir,
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = checker.config(document.raw);
    let mut errors = document.errors;
    let repaired = document.repaired;
    errors.extend(
        checker
            .errors
            .into_iter()
            .filter(|e| !repaired.covers(&e.key)),
    );
    if errors.is_empty() {
        // `config` is complete whenever no error was recorded.
        let mut config = config.ok_or_else(|| ConfigErrors(Vec::new()))?;
        config.warnings = checker.warnings;
        return Ok(config);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(ConfigErrors(errors))
}

/// A listener's timeouts, validated.
struct ListenerTimeouts {
    header_read: Duration,
    idle: Duration,
    handshake: Duration,
    stream_idle: Duration,
}

struct Checker<'a> {
    text: &'a str,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error<T>(&mut self, key: impl Into<String>, at: &Spanned<T>, message: impl Into<String>) {
        self.error_at(key, at.span(), message);
    }

    fn error_at(
        &mut self,
        key: impl Into<String>,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            key: key.into(),
            line: Some(super::document::line_of(self.text, span.start)),
            message: message.into(),
        });
    }

    fn warning<T>(&mut self, key: &str, at: &Spanned<T>, message: String) {
        self.warnings.push(ConfigError {
            key: key.to_owned(),
            line: Some(super::document::line_of(self.text, at.span().start)),
            message,
        });
    }

    fn error_no_line(&mut self, key: &str, message: &str) {
        self.errors.push(ConfigError {
            key: key.to_owned(),
            line: None,
            message: message.to_owned(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let admin = match &raw.admin {
            Some(a) => self.admin(a).map(Some),
            None => Some(None),
        };
        let drain = self.duration(
            "server.drain_timeout_ms",
            &raw.server.drain_timeout_ms,
            DEFAULT_DRAIN_MS,
        );
        let shutdown_delay = self
            .bounded(
                "server.shutdown_delay_ms",
                &raw.server.shutdown_delay_ms,
                0,
                0..=3_600_000,
            )
            .map(Duration::from_millis);
        let max_connections =
            self.optional_count("server.max_connections", &raw.server.max_connections);
        if raw.listeners.is_empty() {
            self.error_no_line("listeners", "at least one listener is required");
        }
        if raw.routes.is_empty() {
            self.error_no_line("routes", "at least one route is required");
        }
        let listeners = self.listeners(&raw.listeners);
        self.admin_apart_from_listeners(
            &raw,
            admin.as_ref().and_then(Option::as_ref),
            listeners.as_deref(),
        );
        let names: Vec<&str> = raw.clusters.keys().map(String::as_str).collect();
        let routes: Vec<_> = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i, r, &names))
            .collect();
        let region_names: Vec<&str> = raw.regions.keys().map(String::as_str).collect();
        let regions: Vec<_> = raw.regions.iter().map(|(n, r)| self.region(n, r)).collect();
        let carbon = self.carbon(raw.carbon.as_ref());
        if let (Some(c), true) = (&raw.carbon, raw.regions.is_empty()) {
            let message = "is set but no [regions.NAME] table is: the feeds have no zone to \
                           read, and no cluster can route by carbon"
                .to_owned();
            self.warning("carbon.feeds", &c.feeds, message);
        }
        let clusters: Vec<_> = raw
            .clusters
            .iter()
            .map(|(name, c)| self.cluster(name, c, &region_names))
            .collect();
        Some(Config {
            regions: regions.into_iter().collect::<Option<_>>()?,
            carbon: carbon?,
            admin: admin?,
            drain_timeout: drain?,
            shutdown_delay: shutdown_delay?,
            access_log: raw.server.access_log.unwrap_or(true),
            access_log_query: raw.server.access_log_query.unwrap_or_default(),
            access_log_file: raw.server.access_log_file.as_ref().map(|f| self.path(f)),
            max_connections: max_connections?,
            listeners: listeners?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            clusters: clusters.into_iter().collect::<Option<_>>()?,
            warnings: Vec::new(),
        })
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Option<Vec<ListenerConfig>> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let key = format!("listeners[{i}]");
            let name = l.name.get_ref().as_str();
            if name.is_empty() {
                self.error(format!("{key}.name"), &l.name, "must not be empty");
            } else if let Some(first) = names.insert(name, i) {
                self.error(
                    format!("{key}.name"),
                    &l.name,
                    format!("duplicate listener name \"{name}\" (also listeners[{first}])"),
                );
            }
            let addr = self.socket_addr(&format!("{key}.listen"), &l.listen);
            // Port 0 asks the kernel for a free port each time: never a clash.
            if let Some(addr) = addr.filter(|a| a.port() != 0) {
                if let Some(first) = addrs.insert(addr, i) {
                    self.error(
                        format!("{key}.listen"),
                        &l.listen,
                        format!("{addr} is already used by listeners[{first}]"),
                    );
                }
            }
            out.push(self.listener(&key, l, addr));
        }
        out.into_iter().collect()
    }

    /// The admin listener cannot share a listener's address: `run` would fail to bind one of
    /// them (port 0 asks for a fresh port each time and never clashes).
    fn admin_apart_from_listeners(
        &mut self,
        raw: &RawConfig,
        admin: Option<&crate::config::AdminConfig>,
        listeners: Option<&[ListenerConfig]>,
    ) {
        let (Some(admin), Some(listeners), Some(raw_admin)) = (admin, listeners, &raw.admin) else {
            return;
        };
        if admin.listen.port() == 0 {
            return;
        }
        if let Some(i) = listeners.iter().position(|l| l.addr == admin.listen) {
            self.error(
                "admin.listen",
                &raw_admin.listen,
                format!("{} is already used by listeners[{i}]", admin.listen),
            );
        }
    }

    fn listener(
        &mut self,
        key: &str,
        l: &RawListener,
        addr: Option<SocketAddr>,
    ) -> Option<ListenerConfig> {
        let timeouts = self.listener_timeouts(key, l);
        let max_header = self.bounded(
            &format!("{key}.max_header_bytes"),
            &l.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            MIN_HEADER_BYTES..=MAX_HEADER_BYTES,
        );
        let max_body = self.max_request_body(key, l);
        let max_connections =
            self.optional_count(&format!("{key}.max_connections"), &l.max_connections);
        let trusted_hops = self.bounded(
            &format!("{key}.trusted_proxy_hops"),
            &l.trusted_proxy_hops,
            0,
            0..=MAX_TRUSTED_HOPS,
        );
        let backlog = self.bounded(
            &format!("{key}.backlog"),
            &l.backlog,
            DEFAULT_BACKLOG,
            1..=65_535,
        );
        let streams = self.bounded(
            &format!("{key}.max_concurrent_streams"),
            &l.max_concurrent_streams,
            DEFAULT_H2_STREAMS,
            1..=10_000,
        );
        let protocols = self.protocols(key, l);
        let (tls, quic) = self.listener_encryption(key, l, protocols)?;
        let timeouts = timeouts?;
        Some(ListenerConfig {
            name: l.name.get_ref().clone(),
            addr: addr?,
            tls,
            protocols: protocols?,
            quic,
            header_read_timeout: timeouts.header_read,
            idle_timeout: timeouts.idle,
            handshake_timeout: timeouts.handshake,
            max_header_bytes: max_header? as usize,
            max_request_body_bytes: max_body?,
            max_connections: max_connections?,
            paths: PathRules {
                reject_unnormalized: l.path_normalization == Some(PathNormalization::Reject),
                merge_slashes: l.merge_slashes.unwrap_or(true),
                encoded_slashes: l.encoded_slashes.unwrap_or_default(),
            },
            trusted_proxy_hops: trusted_hops? as u8,
            backlog: backlog? as u32,
            stream_idle_timeout: timeouts.stream_idle,
            max_concurrent_streams: streams? as u32,
        })
    }

    /// A listener's four timeouts, each checked (all of them reported before `None`).
    fn listener_timeouts(&mut self, key: &str, l: &RawListener) -> Option<ListenerTimeouts> {
        let header_read = self.duration(
            &format!("{key}.header_read_timeout_ms"),
            &l.header_read_timeout_ms,
            DEFAULT_HEADER_READ_MS,
        );
        let idle = self.duration(
            &format!("{key}.idle_timeout_ms"),
            &l.idle_timeout_ms,
            DEFAULT_CLIENT_IDLE_MS,
        );
        let handshake = self.duration(
            &format!("{key}.handshake_timeout_ms"),
            &l.handshake_timeout_ms,
            DEFAULT_HANDSHAKE_MS,
        );
        let stream_idle = self.duration(
            &format!("{key}.stream_idle_timeout_ms"),
            &l.stream_idle_timeout_ms,
            DEFAULT_STREAM_IDLE_MS,
        );
        Some(ListenerTimeouts {
            header_read: header_read?,
            idle: idle?,
            handshake: handshake?,
            stream_idle: stream_idle?,
        })
    }

    /// `max_request_body_bytes`: no limit when absent, never 0.
    fn max_request_body(&mut self, key: &str, l: &RawListener) -> Option<Option<u64>> {
        match &l.max_request_body_bytes {
            Some(v) if *v.get_ref() == 0 => {
                self.error(
                    format!("{key}.max_request_body_bytes"),
                    v,
                    "must be greater than 0",
                );
                None
            }
            other => Some(other.as_ref().map(|v| *v.get_ref())),
        }
    }

    /// The listener's TLS and, when it serves `h3`, its QUIC settings; `quic` without `h3` is
    /// an error.
    fn listener_encryption(
        &mut self,
        key: &str,
        l: &RawListener,
        protocols: Option<Protocols>,
    ) -> Option<(Option<ListenerTls>, Option<QuicListener>)> {
        let wants_h3 = protocols.is_some_and(|p| p.http3);
        let (tls, quic_crypto) = match &l.tls {
            Some(t) => {
                let (tls, quic) =
                    self.listener_tls(&format!("{key}.tls"), t, protocols, wants_h3)?;
                (Some(tls), quic)
            }
            None => (None, None),
        };
        let quic = match quic_crypto {
            Some(crypto) => Some(self.quic(key, l, crypto)?),
            None => None,
        };
        if let Some(quic) = l.quic.as_ref().filter(|_| !wants_h3) {
            self.error(
                format!("{key}.quic"),
                quic,
                "is set but protocols do not include \"h3\" (add it, or remove quic)",
            );
        }
        Some((tls, quic))
    }

    fn protocols(&mut self, key: &str, l: &RawListener) -> Option<Protocols> {
        let Some(list) = &l.protocols else {
            return Some(Protocols {
                http1: true,
                http2: true,
                http3: false,
            });
        };
        let has = |p: Protocol| list.get_ref().contains(&p);
        let protocols = Protocols {
            http1: has(Protocol::Http1),
            http2: has(Protocol::Http2),
            http3: has(Protocol::Http3),
        };
        let key = format!("{key}.protocols");
        if list.get_ref().is_empty() {
            self.error(key, list, "must list at least one protocol");
            return None;
        }
        if protocols.http3 && l.tls.is_none() {
            self.error(key, list, "\"h3\" needs tls (QUIC is always encrypted)");
            return None;
        }
        Some(protocols)
    }

    fn quic(
        &mut self,
        key: &str,
        l: &RawListener,
        crypto: Arc<dyn quinn::crypto::ServerConfig>,
    ) -> Option<QuicListener> {
        let raw = l.quic.as_ref().map(Spanned::get_ref);
        let streams = self.bounded(
            &format!("{key}.quic.max_concurrent_streams"),
            &raw.and_then(|q| q.max_concurrent_streams.clone()),
            DEFAULT_QUIC_STREAMS,
            1..=10_000,
        );
        let idle = self.duration(
            &format!("{key}.quic.idle_timeout_ms"),
            &raw.and_then(|q| q.idle_timeout_ms.clone()),
            DEFAULT_QUIC_IDLE_MS,
        );
        let retry = self.bounded(
            &format!("{key}.quic.retry_above_handshakes"),
            &raw.and_then(|q| q.retry_above_handshakes.clone()),
            DEFAULT_QUIC_RETRY_ABOVE,
            0..=1_000_000,
        );
        Some(QuicListener {
            crypto,
            max_concurrent_streams: streams? as u32,
            idle_timeout: idle?,
            retry_above_handshakes: retry? as usize,
        })
    }

    fn listener_tls(
        &mut self,
        key: &str,
        t: &RawListenerTls,
        protocols: Option<Protocols>,
        wants_h3: bool,
    ) -> Option<(ListenerTls, Option<Arc<dyn quinn::crypto::ServerConfig>>)> {
        let cert_path = self.path(&t.cert);
        let key_path = self.path(&t.key);
        let chain = self.load(&format!("{key}.cert"), &t.cert, || {
            pem::load_certs(&cert_path)
        });
        let private_key = self.load(&format!("{key}.key"), &t.key, || pem::load_key(&key_path));
        let client_ca = t.client_ca.as_ref().map(|ca| (ca, self.path(ca)));
        let client_roots = match &client_ca {
            Some((spanned, path)) => {
                Some(self.load(&format!("{key}.client_ca"), spanned, || {
                    pem::load_roots(path)
                })?)
            }
            None => None,
        };
        let (chain, private_key) = (chain?, private_key?);
        let quic = match wants_h3 {
            true => {
                let options = ServerOptions {
                    cert_chain: chain.clone(),
                    key: private_key.clone_key(),
                    kx: kx_policy(t.pq_only),
                    alpn: Vec::new(),
                    client_roots: client_roots.clone(),
                };
                Some(self.load(&format!("{key}.key"), &t.key, || {
                    aegis_tls::quic_server_config(options)
                        .map_err(|e| pair_error(e, &cert_path, &key_path))
                })?)
            }
            false => None,
        };
        let options = ServerOptions {
            cert_chain: chain,
            key: private_key,
            kx: kx_policy(t.pq_only),
            alpn: protocols?.tcp_alpn(),
            client_roots,
        };
        let server_config = self.load(&format!("{key}.key"), &t.key, || {
            aegis_tls::server_config(options).map_err(|e| pair_error(e, &cert_path, &key_path))
        })?;
        let tls = ListenerTls {
            cert: cert_path,
            key: key_path,
            pq_only: t.pq_only,
            client_ca: client_ca.map(|(_, p)| p),
            server_config,
        };
        Some((tls, quic))
    }

    fn route(&mut self, i: usize, r: &RawRoute, clusters: &[&str]) -> Option<RouteConfig> {
        let key = format!("routes[{i}]");
        let host = match &r.host {
            Some(h) => {
                let parsed = host_match(h.get_ref());
                if parsed.is_none() {
                    self.error(
                        format!("{key}.host"),
                        h,
                        format!(
                            "\"{}\" is not a host name, \"*\" or \"*.suffix\"",
                            h.get_ref()
                        ),
                    );
                }
                parsed
            }
            None => Some(HostMatch::Any),
        };
        let path_prefix = match &r.path_prefix {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(
                    format!("{key}.path_prefix"),
                    p,
                    format!("\"{}\" must start with \"/\"", p.get_ref()),
                );
                None
            }
            Some(p) => Some(p.get_ref().clone()),
            None => Some("/".to_owned()),
        };
        let cluster = clusters.iter().position(|c| c == r.cluster.get_ref());
        if cluster.is_none() {
            self.error(
                format!("{key}.cluster"),
                &r.cluster,
                no_such("cluster", r.cluster.get_ref(), clusters),
            );
        }
        Some(RouteConfig {
            name: r.name.clone().unwrap_or(key),
            host: host?,
            path_prefix: path_prefix?,
            cluster: cluster?,
        })
    }

    fn cluster(
        &mut self,
        name: &str,
        spanned: &Spanned<RawCluster>,
        region_names: &[&str],
    ) -> Option<ClusterConfig> {
        let key = format!("clusters.{name}");
        let c = spanned.get_ref();
        let (endpoints, endpoint_regions) = self.cluster_endpoints(&key, spanned, region_names)?;
        let carbon = self.cluster_carbon(&key, spanned);
        let connect = self.duration(
            &format!("{key}.connect_timeout_ms"),
            &c.connect_timeout_ms,
            DEFAULT_CONNECT_MS,
        );
        let request = self.duration(
            &format!("{key}.request_timeout_ms"),
            &c.request_timeout_ms,
            DEFAULT_REQUEST_MS,
        );
        let idle = self.duration(
            &format!("{key}.idle_timeout_ms"),
            &c.idle_timeout_ms,
            DEFAULT_IDLE_MS,
        );
        let tls = match &c.tls {
            Some(t) => Some(self.upstream_tls(&format!("{key}.tls"), spanned, t, c.protocol)?),
            None => None,
        };
        let health_check = match &c.health_check {
            Some(h) => self
                .health_check(&format!("{key}.health_check"), h)
                .map(Some),
            None => Some(None),
        };
        let outlier = self.outlier(&format!("{key}.outlier"), c.outlier.as_ref());
        let retry = self.retry(&format!("{key}.retry"), c.retry.as_ref());
        let max_pending = self.bounded(
            &format!("{key}.max_pending_requests"),
            &c.max_pending_requests,
            resilience::DEFAULT_MAX_PENDING,
            1..=10_000_000,
        );
        let per_connection = max_pending.and_then(|max| {
            self.bounded(
                &format!("{key}.max_pending_per_connection"),
                &c.max_pending_per_connection,
                (max / resilience::DEFAULT_CONNECTION_SHARE).max(1),
                1..=max,
            )
        });
        Some(ClusterConfig {
            health_check: health_check?,
            outlier: outlier?,
            retry: retry?,
            max_pending_requests: max_pending? as usize,
            max_pending_per_connection: per_connection? as usize,
            name: name.to_owned(),
            lb: c.lb,
            protocol: c.protocol,
            endpoints,
            endpoint_regions,
            carbon: carbon?,
            connect_timeout: connect?,
            request_timeout: request?,
            idle_timeout: idle?,
            tls,
        })
    }

    /// The cluster's endpoints (from `endpoints` or `regions`) and the region of each.
    #[allow(clippy::type_complexity)]
    fn cluster_endpoints(
        &mut self,
        key: &str,
        spanned: &Spanned<RawCluster>,
        region_names: &[&str],
    ) -> Option<(Vec<EndpointAddr>, Vec<Option<usize>>)> {
        let c = spanned.get_ref();
        let mut listed: Vec<(String, &Spanned<String>, Option<usize>)> = Vec::new();
        match (&c.endpoints, &c.regions) {
            (Some(endpoints), None) => {
                if endpoints.get_ref().is_empty() {
                    self.error(
                        format!("{key}.endpoints"),
                        endpoints,
                        "must list at least one endpoint",
                    );
                }
                for (i, e) in endpoints.get_ref().iter().enumerate() {
                    listed.push((format!("{key}.endpoints[{i}]"), e, None));
                }
            }
            (None, Some(regions)) => {
                if regions.get_ref().values().all(Vec::is_empty) {
                    self.error(
                        format!("{key}.regions"),
                        regions,
                        "must list at least one endpoint",
                    );
                }
                for (region, endpoints) in regions.get_ref() {
                    let index = region_names.iter().position(|r| r == region);
                    if index.is_none() {
                        self.error(
                            format!("{key}.regions.{region}"),
                            regions,
                            no_such("region", region, region_names),
                        );
                    }
                    for (i, e) in endpoints.iter().enumerate() {
                        listed.push((format!("{key}.regions.{region}[{i}]"), e, index));
                    }
                }
            }
            (Some(endpoints), Some(_)) => {
                self.error(
                    key.to_owned(),
                    endpoints,
                    "set either endpoints or regions, not both",
                );
                return None;
            }
            (None, None) => {
                self.error(key.to_owned(), spanned, "needs endpoints (or regions)");
                return None;
            }
        }
        let mut addrs = Vec::new();
        let mut regions = Vec::new();
        let mut ok = true;
        for (entry_key, e, region) in listed {
            match endpoint_addr(e.get_ref()) {
                Ok(addr) => {
                    addrs.push(addr);
                    regions.push(region);
                }
                Err(message) => {
                    self.error(entry_key, e, message);
                    ok = false;
                }
            }
        }
        ok.then_some((addrs, regions))
    }

    fn upstream_tls(
        &mut self,
        key: &str,
        cluster: &Spanned<RawCluster>,
        t: &RawUpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Option<UpstreamTls> {
        let ca_path = self.path(&t.ca);
        let roots = self.load(&format!("{key}.ca"), &t.ca, || pem::load_roots(&ca_path));
        let client_auth = match (&t.cert, &t.key) {
            (Some(cert), Some(private_key)) => {
                let (cert_path, key_path) = (self.path(cert), self.path(private_key));
                let chain = self.load(&format!("{key}.cert"), cert, || pem::load_certs(&cert_path));
                let k = self.load(&format!("{key}.key"), private_key, || {
                    pem::load_key(&key_path)
                });
                Some(Some((
                    ClientAuth {
                        cert_chain: chain?,
                        key: k?,
                    },
                    cert_path,
                    key_path,
                )))
            }
            (None, None) => Some(None),
            (Some(only), None) | (None, Some(only)) => {
                self.error(key.to_owned(), only, "cert and key must be given together");
                None
            }
        };
        if let Some(name) = &t.server_name {
            if rustls::pki_types::ServerName::try_from(name.get_ref().as_str()).is_err() {
                self.error(
                    format!("{key}.server_name"),
                    name,
                    format!("\"{}\" is not a valid server name", name.get_ref()),
                );
                return None;
            }
        }
        let (client_auth, cert) = match client_auth? {
            Some((auth, path, key_path)) => (Some(auth), Some((path, key_path))),
            None => (None, None),
        };
        let alpn = match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        };
        let options = ClientOptions {
            roots: roots?,
            client_auth,
            kx: kx_policy(t.pq_only),
            alpn: vec![alpn],
        };
        let client_config = self.load(key, cluster, || {
            aegis_tls::client_config(options).map_err(|e| match &cert {
                Some((cert_path, key_path)) => pair_error(e, cert_path, key_path),
                None => e.to_string(),
            })
        })?;
        Some(UpstreamTls {
            ca: ca_path,
            key: cert.as_ref().map(|(_, key_path)| key_path.clone()),
            cert: cert.map(|(cert_path, _)| cert_path),
            server_name: t.server_name.as_ref().map(|n| n.get_ref().clone()),
            pq_only: t.pq_only,
            client_config,
        })
    }

    fn load<S, T, E: std::fmt::Display>(
        &mut self,
        key: &str,
        at: &Spanned<S>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Option<T> {
        f().map_err(|e| self.error(key.to_owned(), at, e.to_string()))
            .ok()
    }

    fn path(&self, p: &Spanned<String>) -> PathBuf {
        self.base_dir.join(p.get_ref())
    }

    fn socket_addr(&mut self, key: &str, v: &Spanned<String>) -> Option<SocketAddr> {
        let text = v.get_ref();
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = if text.parse::<std::net::IpAddr>().is_ok() {
                    format!("\"{text}\" has no port")
                } else {
                    format!("\"{text}\" is not an ip:port address")
                };
                self.error(key.to_owned(), v, message);
                None
            }
        }
    }

    fn duration(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        default_ms: u64,
    ) -> Option<Duration> {
        let ms = self.bounded(key, v, default_ms, 1..=u64::from(u32::MAX))?;
        Some(Duration::from_millis(ms))
    }

    /// An optional positive count (e.g. a connection limit).
    fn optional_count(&mut self, key: &str, v: &Option<Spanned<u64>>) -> Option<Option<usize>> {
        match v {
            None => Some(None),
            Some(_) => {
                let n = self.bounded(key, v, 1, 1..=10_000_000)?;
                Some(Some(n as usize))
            }
        }
    }

    fn bounded(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let Some(spanned) = v else {
            return Some(default);
        };
        let value = *spanned.get_ref();
        if range.contains(&value) {
            return Some(value);
        }
        let message = if *range.start() == 1 && value == 0 {
            "must be greater than 0".to_owned()
        } else {
            format!("{value} is outside {}..={}", range.start(), range.end())
        };
        self.error(key.to_owned(), spanned, message);
        None
    }
}

/// A TLS error, naming both files when the key is not the certificate's.
fn pair_error(e: aegis_tls::TlsError, cert: &Path, key: &Path) -> String {
    match e {
        aegis_tls::TlsError::KeyMismatch => format!(
            "the private key in {} does not belong to the certificate in {} \
             (the key must be the first certificate's)",
            key.display(),
            cert.display()
        ),
        other => other.to_string(),
    }
}

/// `no cluster named "apl"; did you mean "api"?`, or the names there are.
fn no_such(kind: &str, given: &str, known: &[&str]) -> String {
    let prefix = format!("no {kind} named \"{given}\"");
    if let Some(near) = super::document::closest(given, known) {
        return format!("{prefix}; did you mean \"{near}\"?");
    }
    match known {
        [] if kind == "region" => {
            format!("{prefix}: add a [regions.{given}] table with its grid zone")
        }
        [] => format!("{prefix}: none is configured"),
        _ => {
            let names: Vec<String> = known.iter().map(|k| format!("\"{k}\"")).collect();
            format!("{prefix}; configured: {}", names.join(", "))
        }
    }
}

fn kx_policy(pq_only: bool) -> KxPolicy {
    if pq_only {
        KxPolicy::PostQuantumOnly
    } else {
        KxPolicy::PreferPostQuantum
    }
}

/// Parses a route host pattern: `*`, `*.suffix` or a host name.
fn host_match(pattern: &str) -> Option<HostMatch> {
    let lower = pattern.to_ascii_lowercase();
    if lower == "*" {
        return Some(HostMatch::Any);
    }
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    match (valid, suffix) {
        (false, _) => None,
        (true, true) => Some(HostMatch::Suffix(format!(".{name}"))),
        (true, false) => Some(HostMatch::Exact(name.to_owned())),
    }
}

/// Parses `host:port` or `[v6]:port`.
fn endpoint_addr(text: &str) -> Result<EndpointAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!(
                "\"{text}\" has port 0, which no endpoint listens on"
            ));
        }
        return Ok(EndpointAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("\"{text}\" has no port"));
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if host.is_empty() || !host.chars().all(name_char) {
        return Err(format!("\"{text}\" is not a host:port address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(EndpointAddr {
            host: host.to_owned(),
            port: p,
        }),
        _ => Err(format!("\"{text}\" has an invalid port")),
    }
}

mod admin;
mod carbon;

pub(super) use carbon::default_carbon;
mod resilience;

#[cfg(test)]
pub(super) mod tests;
