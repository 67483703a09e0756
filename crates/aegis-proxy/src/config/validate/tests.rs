//! One test per rule, asserting the message a user reads.

use std::path::Path;

use super::*;

pub(in crate::config) fn no_env(_: &str) -> Option<String> {
    None
}

pub(in crate::config) fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("/nonexistent"), &no_env) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const VALID: &str = r#"
[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
host = "*"
path_prefix = "/"
cluster = "api"

[clusters.api]
lb = "least_request"
endpoints = ["127.0.0.1:9000", "127.0.0.1:9001"]
"#;

#[test]
fn the_sample_config_is_valid_and_takes_defaults() {
    let config = parse(VALID, Path::new("."), &no_env).unwrap();
    let admin = config.admin.unwrap();
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(admin.token, None);
    assert_eq!(admin.max_connections, 64);
    assert_eq!(admin.header_read_timeout, Duration::from_secs(5));
    assert_eq!(
        config.listeners[0].header_read_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(config.listeners[0].idle_timeout, Duration::from_secs(60));
    assert_eq!(config.listeners[0].max_header_bytes, 65536);
    assert_eq!(config.clusters[0].connect_timeout, Duration::from_secs(5));
    assert_eq!(config.routes[0].name, "routes[0]");
    assert!(config.access_log);
    assert_eq!(config.listeners[0].paths, PathRules::default());
    assert_eq!(config.listeners[0].trusted_proxy_hops, 0);
}

#[test]
fn path_rules_and_trusted_hops_are_read() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\npath_normalization = \"reject\"\nmerge_slashes = false\n\
         encoded_slashes = \"decode\"\ntrusted_proxy_hops = 2",
    );
    let listener = &parse(&text, Path::new("."), &no_env).unwrap().listeners[0];
    let expected = PathRules {
        reject_unnormalized: true,
        merge_slashes: false,
        encoded_slashes: crate::http::path::EncodedSlashes::Decode,
    };
    assert_eq!(listener.paths, expected);
    assert_eq!(listener.trusted_proxy_hops, 2);
}

#[test]
fn a_non_loopback_admin_needs_a_token() {
    let text = VALID.replace("127.0.0.1:9901", "0.0.0.0:9901");
    assert_eq!(
        errors(&text),
        [
            "admin.listen, line 3: 0.0.0.0:9901 is not a loopback address: set admin.token_env \
          (the admin API can reload the proxy and read its configuration)"
        ]
    );
    let text = text.replace(
        "listen = \"0.0.0.0:9901\"",
        "listen = \"0.0.0.0:9901\"\ntoken_env = \"ADMIN_TOKEN\"",
    );
    let env = |name: &str| (name == "ADMIN_TOKEN").then(|| "t0ken".to_owned());
    let admin = parse(&text, Path::new("."), &env).unwrap().admin.unwrap();
    assert!(admin.token.unwrap().matches(b"t0ken"));
}

#[test]
fn an_admin_token_variable_that_is_not_set() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:9901\"",
        "listen = \"127.0.0.1:9901\"\ntoken_env = \"NOT_SET\"",
    );
    assert_eq!(
        errors(&text),
        ["admin.token_env, line 4: environment variable NOT_SET (the admin token) is not set or empty"]
    );
}

#[test]
fn admin_reads_cannot_require_a_token_that_does_not_exist() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:9901\"",
        "listen = \"127.0.0.1:9901\"\nrequire_token_for_reads = true\nallowed_hosts = [\"a:1\"]",
    );
    assert_eq!(
        errors(&text),
        [
            "admin.require_token_for_reads, line 4: needs admin.token_env",
            "admin.allowed_hosts[0], line 5: \"a:1\" is not a host name (without port)"
        ]
    );
}

#[test]
fn stream_limits_default_and_the_connection_share_stays_within_the_cluster() {
    let config = parse(VALID, Path::new("."), &no_env).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(listener.max_concurrent_streams, 100);
    assert_eq!(listener.backlog, 4096);
    assert_eq!(config.clusters[0].max_pending_per_connection, 256);
    let text = format!("{VALID}max_pending_requests = 10\nmax_pending_per_connection = 11\n");
    assert_eq!(
        errors(&text),
        ["clusters.api.max_pending_per_connection, line 18: 11 is outside 1..=10"]
    );
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmax_concurrent_streams = 0\nstream_idle_timeout_ms = 0",
    );
    assert_eq!(
        errors(&text),
        [
            "listeners[0].max_concurrent_streams, line 8: must be greater than 0",
            "listeners[0].stream_idle_timeout_ms, line 9: must be greater than 0"
        ]
    );
}

#[test]
fn too_many_trusted_hops() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntrusted_proxy_hops = 17",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].trusted_proxy_hops, line 8: 17 is outside 0..=16"]
    );
}

#[test]
fn unknown_encoded_slashes_rule() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nencoded_slashes = \"drop\"",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("listeners[0].encoded_slashes, line 8: unknown value `drop`; expected one of `keep`, `reject`, `decode`"),
        "{errors:?}"
    );
}

#[test]
fn endpoint_without_port() {
    let text = VALID.replace("\"127.0.0.1:9001\"", "\"10.0.0.1\"");
    assert_eq!(
        errors(&text),
        ["clusters.api.endpoints[1], line 16: \"10.0.0.1\" has no port"]
    );
}

#[test]
fn endpoint_with_bad_port() {
    let text = VALID.replace("\"127.0.0.1:9001\"", "\"api.internal:99999\"");
    assert_eq!(
        errors(&text),
        ["clusters.api.endpoints[1], line 16: \"api.internal:99999\" has an invalid port"]
    );
}

#[test]
fn endpoint_host_must_be_a_name() {
    for bad in ["bad host:80", "a/b:80", "x@y:80", "a:b:80"] {
        let text = VALID.replace("\"127.0.0.1:9001\"", &format!("\"{bad}\""));
        assert_eq!(
            errors(&text),
            [format!(
                "clusters.api.endpoints[1], line 16: \"{bad}\" is not a host:port address"
            )]
        );
    }
}

#[test]
fn unknown_key_is_an_error() {
    let text = VALID.replace(
        "lb = \"least_request\"",
        "lb = \"least_request\"\nretries = 3",
    );
    assert_eq!(
        errors(&text),
        ["clusters.api.retries, line 16: unknown key `retries`; expected one of `lb`, `protocol`, `endpoints`, `regions`, `carbon`, `latency_budget_ms`, `max_share`, `hysteresis`, `connect_timeout_ms`, `request_timeout_ms`, `idle_timeout_ms`, `tls`, `health_check`, `outlier`, `retry`, `max_pending_requests`, `max_pending_per_connection`"]
    );
}

#[test]
fn unknown_lb_policy() {
    let text = VALID.replace("\"least_request\"", "\"random\"");
    assert_eq!(
        errors(&text),
        ["clusters.api.lb, line 15: unknown value `random`; expected one of `round_robin`, `least_request`"]
    );
}

#[test]
fn syntax_error_names_the_line() {
    let text = VALID.replace("path_prefix = \"/\"", "path_prefix = ");
    let found = errors(&text);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("line 11: "), "{found:?}");
}

#[test]
fn listen_address_without_port() {
    let text = VALID.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0\"");
    assert_eq!(
        errors(&text),
        ["listeners[0].listen, line 7: \"0.0.0.0\" has no port"]
    );
}

#[test]
fn admin_address_that_is_not_an_address() {
    let text = VALID.replace("127.0.0.1:9901", "localhost:9901");
    assert_eq!(
        errors(&text),
        ["admin.listen, line 3: \"localhost:9901\" is not an ip:port address"]
    );
}

#[test]
fn route_to_unknown_cluster() {
    let text = VALID.replace("cluster = \"api\"", "cluster = \"apl\"");
    assert_eq!(
        errors(&text),
        ["routes[0].cluster, line 12: no cluster named \"apl\"; did you mean \"api\"?"]
    );
}

#[test]
fn path_prefix_must_start_with_slash() {
    let text = VALID.replace("path_prefix = \"/\"", "path_prefix = \"api\"");
    assert_eq!(
        errors(&text),
        ["routes[0].path_prefix, line 11: \"api\" must start with \"/\""]
    );
}

#[test]
fn host_pattern_must_be_a_name_star_or_suffix() {
    let text = VALID.replace("host = \"*\"", "host = \"api.*.com\"");
    assert_eq!(
        errors(&text),
        ["routes[0].host, line 10: \"api.*.com\" is not a host name, \"*\" or \"*.suffix\""]
    );
}

#[test]
fn cluster_needs_endpoints() {
    let text = VALID.replace("[\"127.0.0.1:9000\", \"127.0.0.1:9001\"]", "[]");
    assert_eq!(
        errors(&text),
        ["clusters.api.endpoints, line 16: must list at least one endpoint"]
    );
}

#[test]
fn zero_timeout_is_rejected() {
    let text = VALID.replace(
        "lb = \"least_request\"",
        "lb = \"least_request\"\nconnect_timeout_ms = 0",
    );
    assert_eq!(
        errors(&text),
        ["clusters.api.connect_timeout_ms, line 16: must be greater than 0"]
    );
}

#[test]
fn zero_listener_idle_timeout_is_rejected() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nidle_timeout_ms = 0",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].idle_timeout_ms, line 8: must be greater than 0"]
    );
}

#[test]
fn header_limit_has_bounds() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmax_header_bytes = 100",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].max_header_bytes, line 8: 100 is outside 8192..=1048576"]
    );
}

#[test]
fn duplicate_listener_name_and_address() {
    let text = VALID.replace(
        "[[routes]]",
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]",
    );
    assert_eq!(
        errors(&text),
        [
            "listeners[1].name, line 10: duplicate listener name \"public\" (also listeners[0])",
            "listeners[1].listen, line 11: 127.0.0.1:8080 is already used by listeners[0]",
        ]
    );
}

#[test]
fn missing_certificate_file() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntls = { cert = \"certs/server.pem\", key = \"certs/server.key\" }",
    );
    let found = errors(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(
            "listeners[0].tls.cert, line 8: cannot read /nonexistent/certs/server.pem: "
        ),
        "{found:?}"
    );
    assert!(found[1]
        .starts_with("listeners[0].tls.key, line 8: cannot read /nonexistent/certs/server.key: "));
}

#[test]
fn upstream_mtls_needs_cert_and_key_together() {
    let text = VALID.replace(
        "lb = \"least_request\"",
        "lb = \"least_request\"\ntls = { ca = \"ca.pem\", cert = \"client.pem\" }",
    );
    let found = errors(&text);
    assert!(
        found
            .contains(&"clusters.api.tls, line 16: cert and key must be given together".to_owned()),
        "{found:?}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = VALID
        .replace("\"127.0.0.1:9001\"", "\"10.0.0.1\"")
        .replace("cluster = \"api\"", "cluster = \"nope\"")
        .replace("127.0.0.1:9901", "nowhere");
    assert_eq!(
        errors(&text),
        [
            "admin.listen, line 3: \"nowhere\" is not an ip:port address",
            "routes[0].cluster, line 12: no cluster named \"nope\"; configured: \"api\"",
            "clusters.api.endpoints[1], line 16: \"10.0.0.1\" has no port",
        ]
    );
}

#[test]
fn listeners_and_routes_are_required() {
    let text = "[clusters.api]\nendpoints = [\"127.0.0.1:1\"]\n";
    assert_eq!(
        errors(text),
        [
            "listeners: at least one listener is required",
            "routes: at least one route is required",
        ]
    );
}

#[test]
fn h3_needs_tls() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprotocols = [\"h2\", \"h3\"]",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].protocols, line 8: \"h3\" needs tls (QUIC is always encrypted)"]
    );
}

#[test]
fn unknown_protocol_is_named() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprotocols = [\"http/1.1\", \"spdy\"]",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].protocols[1], line 8: unknown value `spdy`; expected one of `h1`, `http/1.1`, `h2`, `h3`"]
    );
}

#[test]
fn empty_protocols_and_quic_without_h3() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprotocols = []\nquic = { idle_timeout_ms = 5 }",
    );
    assert_eq!(
        errors(&text),
        [
            "listeners[0].protocols, line 8: must list at least one protocol",
            "listeners[0].quic, line 9: is set but protocols do not include \"h3\" (add it, or remove quic)",
        ]
    );
}

#[test]
fn resilience_settings_take_defaults() {
    let config = parse(VALID, Path::new("."), &no_env).unwrap();
    let c = &config.clusters[0];
    assert_eq!(c.health_check, None);
    assert_eq!(c.outlier, crate::config::OutlierConfig::default());
    assert_eq!(c.retry, crate::config::RetryConfig::default());
    assert_eq!(c.max_pending_requests, 1024);
    assert_eq!(config.max_connections, None);
    assert_eq!(config.listeners[0].max_connections, None);
}

#[test]
fn resilience_settings_are_read() {
    let text = format!(
        "{VALID}max_pending_requests = 10\n\
         [clusters.api.health_check]\npath = \"/healthz?full=1\"\ninterval_ms = 500\ntimeout_ms = 200\n\
         healthy_threshold = 1\nunhealthy_threshold = 2\nexpected_status = [200, 204]\n\
         [clusters.api.outlier]\nconsecutive_failures = 2\nbase_ejection_ms = 1000\nmax_ejection_ms = 4000\n\
         max_ejected_percent = 30\n\
         [clusters.api.retry]\nattempts = 2\nbudget_percent = 10\nmin_concurrent = 1\n"
    );
    let config = parse(&text, Path::new("."), &no_env).unwrap();
    let c = &config.clusters[0];
    let check = c.health_check.as_ref().unwrap();
    assert_eq!(check.path, "/healthz?full=1");
    assert_eq!(check.interval, Duration::from_millis(500));
    assert_eq!(check.timeout, Duration::from_millis(200));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 2));
    assert_eq!(check.expected_status, 200..=204);
    assert_eq!(c.outlier.consecutive_failures, 2);
    assert_eq!(c.outlier.base_ejection, Duration::from_secs(1));
    assert_eq!(c.outlier.max_ejection, Duration::from_secs(4));
    assert_eq!(c.outlier.max_ejected_percent, 30);
    assert_eq!(c.retry.attempts, 2);
    assert!((c.retry.budget_ratio - 0.1).abs() < 1e-9);
    assert_eq!(c.retry.min_concurrent, 1);
    assert_eq!(c.max_pending_requests, 10);
}

#[test]
fn bad_health_check_settings_are_each_reported() {
    let text = format!(
        "{VALID}[clusters.api.health_check]\npath = \"healthz\"\ninterval_ms = 100\ntimeout_ms = 500\n\
         unhealthy_threshold = 0\nexpected_status = [500, 200]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "clusters.api.health_check.path, line 18: \"healthz\" is not a path starting with /",
            "clusters.api.health_check.timeout_ms, line 20: 500 ms is longer than interval_ms (100 ms)",
            "clusters.api.health_check.unhealthy_threshold, line 21: must be greater than 0",
            "clusters.api.health_check.expected_status, line 22: must be [low, high] with 100 <= low <= high <= 599",
        ]
    );
}

#[test]
fn bad_outlier_and_retry_settings_are_each_reported() {
    let text = format!(
        "{VALID}[clusters.api.outlier]\nbase_ejection_ms = 5000\nmax_ejection_ms = 1000\n\
         max_ejected_percent = 101\n[clusters.api.retry]\nattempts = 9\nbudget_percent = 150.0\n"
    );
    assert_eq!(
        errors(&text),
        [
            "clusters.api.outlier.max_ejection_ms, line 19: 1000 ms is shorter than base_ejection_ms (5000 ms)",
            "clusters.api.outlier.max_ejected_percent, line 20: 101 is outside 0..=100",
            "clusters.api.retry.attempts, line 22: 9 is outside 0..=5",
            "clusters.api.retry.budget_percent, line 23: 150 is outside 0..=100",
        ]
    );
}

#[test]
fn connection_limits_must_be_positive() {
    let text = VALID
        .replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_connections = 0",
        )
        .replace("[admin]", "[server]\nmax_connections = 0\n[admin]");
    assert_eq!(
        errors(&text),
        [
            "server.max_connections, line 3: must be greater than 0",
            "listeners[0].max_connections, line 10: must be greater than 0",
        ]
    );
}

#[test]
fn caddys_h1_spelling_is_accepted() {
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprotocols = [\"h1\", \"h2\"]",
    );
    let config = parse(&text, Path::new("."), &no_env).unwrap();
    assert_eq!(config.listeners[0].protocols_list(), ["http/1.1", "h2"]);
}

#[test]
fn the_admin_address_cannot_be_a_listeners() {
    let text = VALID.replace("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:8080\"");
    assert_eq!(
        errors(&text),
        ["admin.listen, line 3: 127.0.0.1:8080 is already used by listeners[0]"]
    );
}

#[test]
fn an_endpoint_on_port_0_is_rejected() {
    let text = VALID.replace("\"127.0.0.1:9001\"", "\"127.0.0.1:0\"");
    assert_eq!(
        errors(&text),
        ["clusters.api.endpoints[1], line 16: \"127.0.0.1:0\" has port 0, which no endpoint listens on"]
    );
}

#[test]
fn a_key_that_is_not_the_certificates_names_both_files() {
    let dir = std::env::temp_dir().join(format!("aegis-keymismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = aegis_tls::LocalCa::generate("test ca").unwrap();
    let (one, two) = (
        ca.issue(&["localhost"]).unwrap(),
        ca.issue(&["localhost"]).unwrap(),
    );
    std::fs::write(dir.join("cert.pem"), &one.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &two.key_pem).unwrap();
    let text = VALID.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntls = { cert = \"cert.pem\", key = \"key.pem\" }",
    );
    let found = match parse(&text, &dir, &no_env) {
        Ok(_) => panic!("a mismatched key was accepted"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    assert_eq!(
        found,
        [format!(
            "listeners[0].tls.key, line 8: the private key in {} does not belong to the \
             certificate in {} (the key must be the first certificate's)",
            key.display(),
            cert.display()
        )]
    );
}
