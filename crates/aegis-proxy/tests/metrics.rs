//! The admin `/metrics` page as a scraper and an SLO see it: both exposition formats, every
//! failure series present at zero before the first failure, build and process metrics, and
//! the client-facing duration and body bytes of a request over every protocol.

mod support;

use support::*;

async fn scrape(proxy: &aegis_proxy::Running, accept: Option<&str>) -> (String, String) {
    let mut request = get("/metrics");
    if let Some(accept) = accept {
        request
            .headers_mut()
            .insert("accept", accept.parse().unwrap());
    }
    let answer = http(proxy.admin_addr().unwrap(), request, false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let kind = answer.headers["content-type"].to_str().unwrap().to_owned();
    (kind, answer.body)
}

/// Before any request or failure, the failure series a dashboard or alert reads exist at 0,
/// in the Prometheus text format a plain scraper expects.
#[tokio::test]
async fn failure_series_exist_at_zero_before_the_first_failure() {
    let dir = TestDir::new("metrics-declared");
    let (origin, _) = recording_origin().await;
    let extra = "[clusters.api.health_check]\npath = \"/\"\ninterval_ms = 3600000\n";
    let text = matrix_config("", &format!("{}{extra}", one_cluster(origin)));
    let proxy = start(&text, &dir).await;
    let (kind, text) = scrape(&proxy, None).await;
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let endpoint = origin.to_string();
    for series in [
        "aegis_upstream_errors_total{cluster=\"api\",reason=\"connect\"}".to_owned(),
        "aegis_upstream_errors_total{cluster=\"api\",reason=\"upstream_timeout\"}".to_owned(),
        "aegis_upstream_retries_total{cluster=\"api\",reason=\"reset\"}".to_owned(),
        "aegis_upstream_requests_shed_total{cluster=\"api\"}".to_owned(),
        "aegis_upstream_retries_over_budget_total{cluster=\"api\"}".to_owned(),
        format!("aegis_upstream_ejections_total{{cluster=\"api\",endpoint=\"{endpoint}\"}}"),
        "aegis_upstream_health_checks_total{cluster=\"api\",result=\"fail\"}".to_owned(),
        "aegis_tls_handshake_failures_total{listener=\"secure\",reason=\"no_shared_group\"}"
            .to_owned(),
        "aegis_downstream_connections_refused_total{listener=\"plain\"}".to_owned(),
        "aegis_config_reloads_total{result=\"error\"}".to_owned(),
    ] {
        assert_eq!(metric(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    // A plain listener has no handshakes to fail.
    assert!(!text.contains("aegis_tls_handshake_failures_total{listener=\"plain\""));
    // The text format names counters by their samples and has no OpenMetrics-only lines.
    assert!(
        text.contains("# TYPE aegis_upstream_errors_total counter\n"),
        "{text}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    let build = format!(
        "aegis_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    assert!(text.contains("# TYPE aegis_build_info gauge\n"), "{text}");
    for process in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(process), "{process} missing");
    }
}

#[tokio::test]
async fn openmetrics_when_the_scraper_asks_for_it() {
    let dir = TestDir::new("metrics-openmetrics");
    let (origin, _) = recording_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (kind, text) = scrape(&proxy, Some(accept)).await;
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE aegis_upstream_errors counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE aegis_build info\n"), "{text}");
}

/// One POST over each protocol: its client-facing duration is observed once, labelled with
/// the listener, route, cluster, protocol and status class, and its body bytes both ways.
#[tokio::test]
async fn request_duration_and_body_bytes_over_every_protocol() {
    for proto in PROTOCOLS {
        let dir = TestDir::new("metrics-duration");
        let (origin, seen) = recording_origin().await;
        let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
        let answer = proto
            .send(&proxy, &dir, &Sent::post("/upload", "hello"))
            .await
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "ok"),
            "{proto:?}"
        );
        assert_eq!(seen.lock().unwrap().as_slice(), ["POST /upload hello"]);
        let (listener, protocol) = match proto {
            Proto::H1Fast | Proto::H1General => ("plain", "http/1.1"),
            Proto::H2c => ("plain", "h2"),
            Proto::H2 => ("secure", "h2"),
            Proto::H3 => ("secure", "h3"),
        };
        let labels = format!(
            "listener=\"{listener}\",route=\"routes[0]\",cluster=\"api\",protocol=\"{protocol}\""
        );
        let text = metrics(&proxy).await;
        let count =
            format!("aegis_request_duration_seconds_count{{{labels},status_class=\"2xx\"}}");
        assert_eq!(
            metric(&text, &count),
            Some(1.0),
            "{proto:?}: {count} in\n{text}"
        );
        let sum = format!("aegis_request_duration_seconds_sum{{{labels},status_class=\"2xx\"}}");
        assert!(metric(&text, &sum).unwrap() > 0.0, "{proto:?}");
        let received = format!("aegis_request_body_bytes_total{{{labels}}}");
        assert_eq!(metric(&text, &received), Some(5.0), "{proto:?}: {received}");
        let sent = format!("aegis_response_body_bytes_total{{{labels}}}");
        assert_eq!(metric(&text, &sent), Some(2.0), "{proto:?}: {sent}");
    }
}

/// Every metric the Grafana dashboard in `packaging/grafana` queries exists on a proxy that
/// has TLS, health checks and a carbon-aware cluster, after one request over each protocol.
#[tokio::test]
async fn every_metric_the_dashboard_queries_exists() {
    let dashboard = include_str!("../../../packaging/grafana/aegis-flow.json");
    let dashboard: serde_json::Value = serde_json::from_str(dashboard).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(queried.len() > 20, "{queried:?}");

    let dir = TestDir::new("metrics-dashboard");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(0).await;
    let health = "[clusters.api.health_check]\npath = \"/\"\ninterval_ms = 3600000";
    let rest = format!(
        "{}{health}\n",
        two_regions(near, far, "feeds = [\"static\"]", "")
    );
    let proxy = start(&matrix_config("", &rest), &dir).await;
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    let text = metrics(&proxy).await;
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exposed.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in\n{text}"
    );
}

/// The `aegis_*` and `process_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("aegis_") || rest.starts_with("process_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}
