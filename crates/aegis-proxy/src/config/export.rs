//! The validated configuration written back in the file's own schema, for the admin `/config`
//! page: every key with the value in force, defaults included.
//!
//! Each validated struct is taken apart field by field (no `..`), so a setting added to the
//! runtime types does not compile until it is exported here; the result is a [`RawConfig`],
//! the type the file is read into, so the page cannot name a key the file does not accept.
//! Saved as TOML, the page validates to the same configuration (`tests/admin.rs` reads it back).
//! The file holds no secrets (tokens and passwords are named by `*_env` keys), so neither does
//! the page.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::*;
use super::*;

/// A value without a place in a file.
fn v<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn ms(d: Duration) -> Option<Spanned<u64>> {
    Some(v(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

fn count(n: impl TryInto<u64>) -> Option<Spanned<u64>> {
    Some(v(n.try_into().unwrap_or(u64::MAX)))
}

fn path(p: &Path) -> Spanned<String> {
    v(p.display().to_string())
}

impl Config {
    /// The configuration in the file's schema, with every default written out.
    pub fn to_raw(&self) -> RawConfig {
        let Self {
            admin,
            drain_timeout,
            shutdown_delay,
            access_log,
            access_log_query,
            access_log_file,
            max_connections,
            listeners,
            routes,
            clusters,
            regions,
            carbon,
            warnings: _,
        } = self;
        RawConfig {
            admin: admin.as_ref().map(export_admin),
            server: RawServer {
                drain_timeout_ms: ms(*drain_timeout),
                shutdown_delay_ms: ms(*shutdown_delay),
                access_log: Some(*access_log),
                access_log_query: Some(*access_log_query),
                access_log_file: access_log_file.as_deref().map(path),
                max_connections: max_connections.and_then(count),
            },
            listeners: listeners.iter().map(export_listener).collect(),
            routes: routes.iter().map(|r| self.export_route(r)).collect(),
            clusters: clusters
                .iter()
                .map(|c| (c.name.clone(), v(self.export_cluster(c))))
                .collect(),
            regions: regions
                .iter()
                .map(|r| (r.name.clone(), v(export_region(r))))
                .collect(),
            carbon: (*carbon != validate::default_carbon()).then(|| export_carbon(carbon)),
        }
    }

    /// [`Config::to_raw`] as TOML, a file that validates to this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_raw()).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
    }

    /// [`Config::to_raw`] as pretty JSON (absent keys are `null`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_raw()).unwrap_or_default()
    }

    fn export_route(&self, route: &RouteConfig) -> RawRoute {
        let RouteConfig {
            name,
            host,
            path_prefix,
            cluster,
        } = route;
        let host = match host {
            HostMatch::Any => "*".to_owned(),
            HostMatch::Exact(name) => name.clone(),
            HostMatch::Suffix(suffix) => format!("*{suffix}"),
        };
        RawRoute {
            name: Some(name.clone()),
            host: Some(v(host)),
            path_prefix: Some(v(path_prefix.clone())),
            cluster: v(self.clusters[*cluster].name.clone()),
        }
    }

    fn export_cluster(&self, cluster: &ClusterConfig) -> RawCluster {
        let ClusterConfig {
            name: _,
            lb,
            protocol,
            endpoints,
            endpoint_regions,
            carbon,
            connect_timeout,
            request_timeout,
            idle_timeout,
            tls,
            health_check,
            outlier,
            retry,
            max_pending_requests,
            max_pending_per_connection,
        } = cluster;
        let aegis_carbon::PolicyConfig {
            policy,
            latency_budget_ms,
            max_share,
            hysteresis,
            weight_exponent: _, // not a file setting
        } = carbon;
        let (endpoints, regions) = self.export_endpoints(endpoints, endpoint_regions);
        RawCluster {
            lb: *lb,
            protocol: *protocol,
            endpoints,
            regions,
            carbon: Some(v(match policy {
                aegis_carbon::Policy::Greenest => CarbonPolicyKind::Greenest,
                aegis_carbon::Policy::Weighted => CarbonPolicyKind::Weighted,
                _ => CarbonPolicyKind::Off,
            })),
            latency_budget_ms: Some(v(*latency_budget_ms)),
            max_share: Some(v(*max_share)),
            hysteresis: Some(v(*hysteresis)),
            connect_timeout_ms: ms(*connect_timeout),
            request_timeout_ms: ms(*request_timeout),
            idle_timeout_ms: ms(*idle_timeout),
            tls: tls.as_ref().map(export_upstream_tls),
            health_check: health_check.as_ref().map(|h| v(export_health_check(h))),
            outlier: Some(export_outlier(outlier)),
            retry: Some(export_retry(retry)),
            max_pending_requests: count(*max_pending_requests),
            max_pending_per_connection: count(*max_pending_per_connection),
        }
    }

    /// `endpoints`, or `regions` when the endpoints were given by region.
    #[allow(clippy::type_complexity)]
    fn export_endpoints(
        &self,
        endpoints: &[EndpointAddr],
        regions: &[Option<usize>],
    ) -> (
        Option<Spanned<Vec<Spanned<String>>>>,
        Option<Spanned<BTreeMap<String, Vec<Spanned<String>>>>>,
    ) {
        if regions.iter().all(Option::is_none) {
            let list = endpoints.iter().map(|e| v(e.to_string())).collect();
            return (Some(v(list)), None);
        }
        let mut by_region: BTreeMap<String, Vec<Spanned<String>>> = BTreeMap::new();
        for (endpoint, region) in endpoints.iter().zip(regions) {
            let name = region.map_or_else(String::new, |i| self.regions[i].name.clone());
            by_region
                .entry(name)
                .or_default()
                .push(v(endpoint.to_string()));
        }
        (None, Some(v(by_region)))
    }
}

fn export_admin(admin: &AdminConfig) -> RawAdmin {
    let AdminConfig {
        listen,
        token: _, // the secret itself; `token_env` names where it comes from
        token_env,
        token_for_reads,
        allowed_hosts,
        max_connections,
        header_read_timeout,
    } = admin;
    RawAdmin {
        listen: v(listen.to_string()),
        token_env: token_env.clone().map(v),
        require_token_for_reads: Some(v(*token_for_reads)),
        allowed_hosts: Some(allowed_hosts.iter().cloned().map(v).collect()),
        max_connections: count(*max_connections),
        header_read_timeout_ms: ms(*header_read_timeout),
    }
}

fn export_listener(listener: &ListenerConfig) -> RawListener {
    let ListenerConfig {
        name,
        addr,
        tls,
        protocols,
        quic,
        header_read_timeout,
        idle_timeout,
        handshake_timeout,
        max_header_bytes,
        max_request_body_bytes,
        max_connections,
        paths,
        trusted_proxy_hops,
        backlog,
        stream_idle_timeout,
        max_concurrent_streams,
    } = listener;
    let Protocols {
        http1,
        http2,
        http3,
    } = *protocols;
    let protocols = [
        (http1, Protocol::Http1),
        (http2, Protocol::Http2),
        (http3, Protocol::Http3),
    ]
    .into_iter()
    .filter_map(|(on, p)| on.then_some(p))
    .collect();
    let PathRules {
        reject_unnormalized,
        merge_slashes,
        encoded_slashes,
    } = *paths;
    RawListener {
        name: v(name.clone()),
        listen: v(addr.to_string()),
        tls: tls.as_ref().map(export_listener_tls),
        protocols: Some(v(protocols)),
        quic: quic.as_ref().map(|q| v(export_quic(q))),
        header_read_timeout_ms: ms(*header_read_timeout),
        idle_timeout_ms: ms(*idle_timeout),
        handshake_timeout_ms: ms(*handshake_timeout),
        max_header_bytes: count(*max_header_bytes),
        max_request_body_bytes: max_request_body_bytes.and_then(count),
        max_connections: max_connections.and_then(count),
        path_normalization: Some(match reject_unnormalized {
            true => PathNormalization::Reject,
            false => PathNormalization::Rewrite,
        }),
        merge_slashes: Some(merge_slashes),
        encoded_slashes: Some(encoded_slashes),
        trusted_proxy_hops: count(*trusted_proxy_hops),
        backlog: count(*backlog),
        stream_idle_timeout_ms: ms(*stream_idle_timeout),
        max_concurrent_streams: count(*max_concurrent_streams),
    }
}

fn export_listener_tls(tls: &ListenerTls) -> RawListenerTls {
    let ListenerTls {
        cert,
        key,
        pq_only,
        client_ca,
        server_config: _,
    } = tls;
    RawListenerTls {
        cert: path(cert),
        key: path(key),
        pq_only: *pq_only,
        client_ca: client_ca.as_deref().map(path),
    }
}

fn export_quic(quic: &QuicListener) -> RawQuic {
    let QuicListener {
        crypto: _,
        max_concurrent_streams,
        idle_timeout,
        retry_above_handshakes,
    } = quic;
    RawQuic {
        max_concurrent_streams: count(*max_concurrent_streams),
        idle_timeout_ms: ms(*idle_timeout),
        retry_above_handshakes: count(*retry_above_handshakes),
    }
}

fn export_upstream_tls(tls: &UpstreamTls) -> RawUpstreamTls {
    let UpstreamTls {
        ca,
        cert,
        key,
        server_name,
        pq_only,
        client_config: _,
    } = tls;
    RawUpstreamTls {
        ca: path(ca),
        cert: cert.as_deref().map(path),
        key: key.as_deref().map(path),
        server_name: server_name.clone().map(v),
        pq_only: *pq_only,
    }
}

fn export_health_check(check: &HealthCheckConfig) -> RawHealthCheck {
    let HealthCheckConfig {
        path,
        host,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status,
    } = check;
    RawHealthCheck {
        path: v(path.clone()),
        host: host.clone().map(v),
        interval_ms: ms(*interval),
        timeout_ms: ms(*timeout),
        healthy_threshold: count(*healthy_threshold),
        unhealthy_threshold: count(*unhealthy_threshold),
        expected_status: Some(v(vec![*expected_status.start(), *expected_status.end()])),
    }
}

fn export_outlier(outlier: &OutlierConfig) -> RawOutlier {
    let OutlierConfig {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejected_percent,
    } = outlier;
    RawOutlier {
        consecutive_failures: count(*consecutive_failures),
        base_ejection_ms: ms(*base_ejection),
        max_ejection_ms: ms(*max_ejection),
        max_ejected_percent: count(*max_ejected_percent),
    }
}

fn export_retry(retry: &RetryConfig) -> RawRetry {
    let RetryConfig {
        attempts,
        budget_ratio,
        min_concurrent,
    } = retry;
    RawRetry {
        attempts: count(*attempts),
        budget_percent: Some(v(budget_ratio * 100.0)),
        min_concurrent: count(*min_concurrent),
    }
}

fn export_region(region: &RegionConfig) -> RawRegion {
    let RegionConfig {
        name: _,
        zone,
        intensity,
        uk_region,
        watttime_region,
        rtt_ms,
        sdk_location,
    } = region;
    RawRegion {
        zone: v(zone.clone()),
        intensity: intensity.map(v),
        uk_region: uk_region.map(v),
        watttime_region: watttime_region.clone(),
        rtt_ms: rtt_ms.map(v),
        sdk_location: sdk_location.clone(),
    }
}

fn export_carbon(carbon: &CarbonConfig) -> RawCarbon {
    let CarbonConfig {
        feeds,
        file,
        electricitymaps,
        uk,
        watttime,
        carbon_aware_sdk,
        poll_interval,
        stale_after,
        unknown_intensity,
        region_header,
        energy,
        baseline,
        declared,
        probe_interval,
        probe_timeout,
    } = carbon;
    let aegis_carbon::energy::EnergyModel {
        wh_per_request,
        wh_per_mb,
    } = *energy;
    RawCarbon {
        feeds: v(feeds.clone()),
        file: file.as_deref().map(|p| RawFileFeed { path: path(p) }),
        electricitymaps: electricitymaps.as_ref().map(|e| RawElectricityMaps {
            base_url: Some(v(e.base_url.clone())),
            token_env: Some(e.token_env.clone()),
            timeout_ms: ms(e.timeout),
            basis: Some(e.basis),
        }),
        uk: uk.as_ref().map(|u| RawApiFeed {
            base_url: Some(v(u.base_url.clone())),
            timeout_ms: ms(u.timeout),
        }),
        watttime: watttime.as_ref().map(|w| RawWattTime {
            base_url: Some(v(w.api.base_url.clone())),
            username_env: Some(w.username_env.clone()),
            password_env: Some(w.password_env.clone()),
            timeout_ms: ms(w.api.timeout),
        }),
        carbon_aware_sdk: carbon_aware_sdk.as_ref().map(|s| RawSdkFeed {
            base_url: v(s.api.base_url.clone()),
            timeout_ms: ms(s.api.timeout),
            signal: s.signal,
            basis: s.basis,
        }),
        poll_interval_ms: ms(*poll_interval),
        stale_after_ms: ms(*stale_after),
        unknown_intensity: Some(v(*unknown_intensity)),
        region_header: Some(v(region_header
            .as_ref()
            .map_or_else(String::new, |h| h.as_str().to_owned()))),
        wh_per_request: Some(v(wh_per_request)),
        wh_per_mb: Some(v(wh_per_mb)),
        baseline: Some(*baseline),
        signal: Some(declared.0),
        basis: Some(declared.1),
        probe_interval_ms: ms(*probe_interval),
        probe_timeout_ms: ms(*probe_timeout),
    }
}
