//! `/config` is the configuration in force, in the file's own schema: saved as TOML it
//! validates to the same configuration, and it names every setting with the value in force.

mod support;

use aegis_proxy::Config;
use prometheus_client::registry::Registry;
use support::*;

/// Every key the file accepts, each set to a value that is not its default, with absolute
/// paths (as the page writes them). `{dir}` is the test folder.
const EVERY_KEY: &str = r#"
[admin]
listen = "127.0.0.1:0"
token_env = "AEGIS_PAGE_TOKEN"
require_token_for_reads = true
allowed_hosts = ["admin.internal"]
max_connections = 17
header_read_timeout_ms = 4321

[server]
drain_timeout_ms = 12345
shutdown_delay_ms = 250
access_log = false
access_log_query = "redacted"
access_log_file = "{dir}/access.log"
max_connections = 999

[[listeners]]
name = "public"
listen = "127.0.0.1:0"
protocols = ["http/1.1", "h2", "h3"]
header_read_timeout_ms = 3100
idle_timeout_ms = 61000
handshake_timeout_ms = 4100
max_header_bytes = 32768
max_request_body_bytes = 1048576
max_connections = 500
path_normalization = "reject"
merge_slashes = false
encoded_slashes = "decode"
trusted_proxy_hops = 2
backlog = 2048
stream_idle_timeout_ms = 70000
max_concurrent_streams = 64

[listeners.tls]
cert = "{dir}/server.pem"
key = "{dir}/server.key"
pq_only = true
client_ca = "{dir}/ca.pem"

[listeners.quic]
max_concurrent_streams = 50
idle_timeout_ms = 20000
retry_above_handshakes = 7

[[listeners]]
name = "plain"
listen = "127.0.0.1:0"
protocols = ["http/1.1"]
header_read_timeout_ms = 10000
idle_timeout_ms = 60000
handshake_timeout_ms = 10000
max_header_bytes = 65536
path_normalization = "rewrite"
merge_slashes = true
encoded_slashes = "keep"
trusted_proxy_hops = 0
backlog = 1024
stream_idle_timeout_ms = 300000
max_concurrent_streams = 100

[[routes]]
name = "api"
host = "*.example.com"
path_prefix = "/api/"
cluster = "api"

[[routes]]
name = "rest"
host = "*"
path_prefix = "/"
cluster = "web"

[clusters.api]
lb = "round_robin"
protocol = "http2"
carbon = "greenest"
latency_budget_ms = 40.0
max_share = 0.75
hysteresis = 0.25
connect_timeout_ms = 1500
request_timeout_ms = 20000
idle_timeout_ms = 45000
max_pending_requests = 300
max_pending_per_connection = 30

[clusters.api.regions]
eu-central = ["127.0.0.1:9101", "127.0.0.1:9102"]
eu-north = ["127.0.0.1:9103"]

[clusters.api.tls]
ca = "{dir}/ca.pem"
cert = "{dir}/client.pem"
key = "{dir}/client.key"
server_name = "localhost"
pq_only = true

[clusters.api.health_check]
path = "/healthz?deep=1"
host = "api.internal"
interval_ms = 2500
timeout_ms = 900
healthy_threshold = 3
unhealthy_threshold = 4
expected_status = [200, 204]

[clusters.api.outlier]
consecutive_failures = 7
base_ejection_ms = 5000
max_ejection_ms = 60000
max_ejected_percent = 40

[clusters.api.retry]
attempts = 2
budget_percent = 50.0
min_concurrent = 5

[clusters.web]
lb = "least_request"
protocol = "http1"
endpoints = ["127.0.0.1:9201", "localhost:9202"]
carbon = "off"
latency_budget_ms = 50.0
max_share = 1.0
hysteresis = 0.1
connect_timeout_ms = 2000
request_timeout_ms = 30000
idle_timeout_ms = 60000
max_pending_requests = 1024
max_pending_per_connection = 256

[clusters.web.outlier]
consecutive_failures = 0
base_ejection_ms = 10000
max_ejection_ms = 300000
max_ejected_percent = 50

[clusters.web.retry]
attempts = 0
budget_percent = 20.0
min_concurrent = 3

[regions.eu-central]
zone = "DE"
intensity = 380.0
uk_region = 13
watttime_region = "DE"
rtt_ms = 12.5
sdk_location = "germanywestcentral"

[regions.eu-north]
zone = "SE"
rtt_ms = 30.0

[carbon]
feeds = ["electricitymaps", "file", "static"]
poll_interval_ms = 120000
stale_after_ms = 1800000
unknown_intensity = 600.0
region_header = "x-served-region"
wh_per_request = 0.2
wh_per_mb = 0.03
baseline = "round_robin"
signal = "average"
basis = "lifecycle"
probe_interval_ms = 7000
probe_timeout_ms = 800

[carbon.file]
path = "{dir}/carbon.json"

[carbon.electricitymaps]
base_url = "http://127.0.0.1:9"
token_env = "AEGIS_PAGE_EM_TOKEN"
timeout_ms = 3000
basis = "lifecycle"
"#;

fn env(name: &str) -> Option<String> {
    matches!(name, "AEGIS_PAGE_TOKEN" | "AEGIS_PAGE_EM_TOKEN").then(|| format!("secret-{name}"))
}

fn every_key(dir: &TestDir) -> String {
    dir.write("carbon.json", r#"{"DE": 300, "SE": 40}"#);
    EVERY_KEY.replace("{dir}", &dir.path.display().to_string())
}

/// The file as a TOML tree, for comparing two files whatever their layout.
fn tree(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

#[test]
fn a_file_that_states_every_key_is_exported_as_written() {
    let dir = TestDir::new("page-every-key");
    let text = every_key(&dir);
    let config = Config::parse_with_env(&text, &dir.path, &env)
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
    let exported = config.to_toml();
    // Equal both ways: the export names no key the file lacks (so the file above does state
    // every key), and every key of the file is exported with its value.
    assert_eq!(tree(&exported), tree(&text), "exported:\n{exported}");
    assert!(!exported.contains("secret-"), "{exported}");
}

#[test]
fn a_minimal_file_is_exported_with_every_default_and_reads_back_the_same() {
    let dir = TestDir::new("page-minimal");
    let origin = "127.0.0.1:9301";
    let text = config(Some(TLS), &["127.0.0.1:9301".parse().unwrap()], TLS_H3, "");
    let first = Config::parse(&text, &dir.path).unwrap();
    let exported = first.to_toml();
    let second = Config::parse(&exported, &dir.path)
        .unwrap_or_else(|e| panic!("the export does not validate:\n{e}\n{exported}"));
    assert_eq!(second.to_toml(), exported);
    // Defaults are written out, in the file's spelling.
    let page = tree(&exported);
    let cluster = &page["clusters"]["api"];
    assert_eq!(cluster["lb"].as_str(), Some("least_request"), "{exported}");
    assert_eq!(cluster["protocol"].as_str(), Some("http1"));
    assert_eq!(cluster["endpoints"][0].as_str(), Some(origin));
    assert_eq!(cluster["retry"]["attempts"].as_integer(), Some(1));
    assert_eq!(
        cluster["outlier"]["consecutive_failures"].as_integer(),
        Some(5)
    );
    assert!(cluster["max_pending_requests"].as_integer().is_some());
    let listener = &page["listeners"].as_array().unwrap()[0];
    assert_eq!(
        listener["quic"]["max_concurrent_streams"].as_integer(),
        Some(100)
    );
    assert!(listener["tls"]["key"]
        .as_str()
        .unwrap()
        .ends_with("server.key"));
    // A file without [carbon] gets none back (it would warn of carbon without regions).
    assert!(page.get("carbon").is_none(), "{exported}");
}

/// The admin page serves what `to_toml` and `to_json` render, and holds no secret.
#[tokio::test]
async fn the_admin_page_serves_the_configuration_in_force() {
    let dir = TestDir::new("page-admin");
    let text = every_key(&dir).replace("require_token_for_reads = true", "");
    let config = Config::parse_with_env(&text, &dir.path, &env).unwrap();
    let expected = config.to_toml();
    let proxy = aegis_proxy::run(config, Registry::default()).await.unwrap();
    let admin = proxy.admin_addr().unwrap();

    let answer = http(admin, get("/config?format=toml"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/toml");
    let served = tree(&answer.body);
    assert_eq!(served, tree(&expected));
    assert_eq!(
        served["server"]["drain_timeout_ms"].as_integer(),
        Some(12345)
    );

    let answer = http(admin, get("/config"), false).await.unwrap();
    let page: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(page["admin"]["token_env"], "AEGIS_PAGE_TOKEN");
    assert_eq!(page["clusters"]["api"]["lb"], "round_robin");
    assert_eq!(page["clusters"]["api"]["retry"]["attempts"], 2);
    assert!(!answer.body.contains("secret-"), "{}", answer.body);
    assert!(!answer.body.contains("PRIVATE KEY"));

    let answer = http(admin, get("/config?format=yaml"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
}
