//! Carbon-aware routing end to end: feeds drive which region serves requests, checked over
//! every protocol (each scenario sends its requests over HTTP/1.1 fast and general path, h2c,
//! h2 and h3 in turn).

mod support;

use aegis_proxy::demo::spawn_origin;
use support::*;

fn carbon_config(
    dir: &TestDir,
    central: std::net::SocketAddr,
    north: std::net::SocketAddr,
    extra_cluster: &str,
    feeds: &str,
) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "plain"
listen = "127.0.0.1:0"

[[listeners]]
name = "secure"
listen = "127.0.0.1:0"
tls = {tls}
{h3}

[[routes]]
cluster = "api"

[regions.eu-central]
zone = "DE"
intensity = 350

[regions.eu-north]
zone = "NO"

[carbon]
feeds = {feeds}
file = {{ path = "{file}" }}
poll_interval_ms = 3600000

[clusters.api]
carbon = "greenest"
{extra_cluster}
regions = {{ eu-central = ["{central}"], eu-north = ["{north}"] }}
"#,
        file = dir.file("carbon.json"),
        tls = TLS,
        h3 = TLS_H3,
    )
}

/// Sends to a carbon proxy over each protocol in turn (HTTP/1.1 fast and general path, h2c,
/// h2, h3), so a run of five requests covers every one.
struct Rotation<'a> {
    proxy: &'a aegis_proxy::Running,
    dir: &'a TestDir,
    turn: std::cell::Cell<usize>,
}

impl<'a> Rotation<'a> {
    fn new(proxy: &'a aegis_proxy::Running, dir: &'a TestDir) -> Self {
        Self {
            proxy,
            dir,
            turn: std::cell::Cell::new(0),
        }
    }

    /// `GET /` over the next protocol.
    async fn get(&self) -> (Proto, support::Answer) {
        let proto = PROTOCOLS[self.turn.get() % PROTOCOLS.len()];
        self.turn.set(self.turn.get() + 1);
        let answer = proto.send(self.proxy, self.dir, &Sent::get("/")).await;
        (proto, answer.unwrap_or_else(|e| panic!("{proto:?}: {e:#}")))
    }
}

/// The region header and the origin that answered a `GET /` over the next protocol.
async fn region_of(to: &Rotation<'_>) -> (String, String) {
    let (proto, answer) = to.get().await;
    assert_eq!(answer.status, 200, "{proto:?}");
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    (
        answer.headers["x-aegis-region"]
            .to_str()
            .unwrap()
            .to_owned(),
        seen["origin"].as_str().unwrap().to_owned(),
    )
}

/// The region every protocol's request went to (they must agree).
async fn region_everywhere(to: &Rotation<'_>) -> (String, String) {
    let first = region_of(to).await;
    for proto in &PROTOCOLS[1..] {
        assert_eq!(region_of(to).await, first, "{proto:?}");
    }
    first
}

#[tokio::test]
async fn traffic_follows_the_greener_region_when_the_feed_changes() {
    let dir = TestDir::new("carbon");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    dir.write("carbon.json", r#"{"DE": 400, "NO": 40}"#);
    let proxy = start(
        &carbon_config(&dir, central, north, "", r#"["file", "static"]"#),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    for _ in 0..5 {
        assert_eq!(region_of(&addr).await, ("eu-north".into(), "north".into()));
    }

    dir.write("carbon.json", r#"{"DE": 30, "NO": 400}"#);
    proxy.refresh_carbon().await;
    for _ in 0..5 {
        assert_eq!(
            region_of(&addr).await,
            ("eu-central".into(), "central".into())
        );
    }

    let text = metrics(&proxy).await;
    let series = "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"file\"}";
    assert_eq!(metric(&text, series), Some(400.0), "{text}");
    let requests =
        "aegis_carbon_requests_total{cluster=\"api\",region=\"eu-central\",reason=\"greenest\"}";
    assert_eq!(metric(&text, requests), Some(5.0), "{text}");
    let saved = metric(&text, "aegis_carbon_saved_grams{cluster=\"api\"}").unwrap_or(0.0);
    assert!(saved > 0.0, "{text}");
}

#[tokio::test]
async fn a_broken_feed_falls_back_and_never_fails_requests() {
    let dir = TestDir::new("carbonbroken");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    dir.write("carbon.json", "{ this is not json");
    let proxy = start(
        &carbon_config(&dir, central, north, "", r#"["file", "static"]"#),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    // eu-central has a static 350; eu-north has nothing: it stands at unknown_intensity (500).
    assert_eq!(
        region_of(&addr).await,
        ("eu-central".into(), "central".into())
    );
    let text = metrics(&proxy).await;
    let errors = "aegis_carbon_feed_errors_total{feed=\"file\",reason=\"malformed_json\"}";
    assert!(metric(&text, errors).unwrap_or(0.0) >= 1.0, "{text}");

    // Only the file feed, and it is gone: the decision is labelled, requests still succeed.
    let dir2 = TestDir::new("carbonmissing");
    let proxy = start(
        &carbon_config(&dir2, central, north, "", r#"["file"]"#),
        &dir2,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir2);
    for _ in PROTOCOLS {
        let (proto, answer) = addr.get().await;
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    let text = metrics(&proxy).await;
    let no_data = "aegis_carbon_requests_total{cluster=\"api\",region=\"eu-central\",reason=\"fallback:no_data\"}";
    assert_eq!(metric(&text, no_data), Some(5.0), "{text}");
}

#[tokio::test]
async fn max_share_caps_the_greenest_region() {
    let dir = TestDir::new("carbonshare");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    dir.write("carbon.json", r#"{"DE": 400, "NO": 40}"#);
    let proxy = start(
        &carbon_config(&dir, central, north, "max_share = 0.6", r#"["file"]"#),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    let mut north_hits = 0;
    for _ in 0..200 {
        if region_of(&addr).await.0 == "eu-north" {
            north_hits += 1;
        }
    }
    assert!(
        (100..=140).contains(&north_hits),
        "eu-north took {north_hits} of 200"
    );
}

/// What the fake Electricity Maps API answers for a zone.
#[derive(Clone, Debug)]
enum Answer {
    Value(f64),
    Forecast(f64),
    Null,
    Garbage,
    Status(u16),
}

/// A loopback server speaking Electricity Maps' documented v3 `carbon-intensity/latest` JSON.
struct FakeElectricityMaps {
    addr: std::net::SocketAddr,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Answer>>>,
    forecasts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hold: std::sync::Arc<std::sync::Mutex<Option<Hold>>>,
}

/// Holds the next answer (computed when its request arrives) until `release` fires.
struct Hold {
    arrived: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

impl FakeElectricityMaps {
    async fn start(token: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let forecasts =
            std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hold = std::sync::Arc::new(std::sync::Mutex::new(None::<Hold>));
        let (a, f, h, held) = (
            answers.clone(),
            forecasts.clone(),
            hits.clone(),
            hold.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answers, forecasts, hits) = (a.clone(), f.clone(), h.clone());
                let held = held.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let query = req.uri().query().unwrap_or("");
                            let param = |name: &str| {
                                query
                                    .split('&')
                                    .find_map(|p| p.strip_prefix(name))
                                    .unwrap_or("")
                            };
                            // Asked for the life-cycle factors the config declares, or nothing.
                            let zone = match param("emissionFactorType=") {
                                "lifecycle" => param("zone=").to_owned(),
                                _ => String::new(),
                            };
                            let authorized =
                                req.headers().get("auth-token").is_some_and(|t| t == token);
                            let answer = if req.uri().path().ends_with("/forecast") {
                                let forecast = forecasts.lock().unwrap().get(&zone).copied();
                                forecast.map_or(Answer::Status(404), Answer::Forecast)
                            } else {
                                let answer = answers.lock().unwrap().get(&zone).cloned();
                                answer.unwrap_or(Answer::Status(404))
                            };
                            let answer = if authorized {
                                answer
                            } else {
                                Answer::Status(401)
                            };
                            let now = aegis_proxy::carbon_feed::rfc3339(
                                aegis_proxy::carbon_feed::unix_now(),
                            );
                            let (status, body) = match answer {
                                Answer::Value(v) => (
                                    200,
                                    format!(
                                        r#"{{"zone":"{zone}","carbonIntensity":{v},"datetime":"{now}","updatedAt":"{now}","emissionFactorType":"lifecycle","isEstimated":false}}"#
                                    ),
                                ),
                                Answer::Null => (
                                    200,
                                    format!(
                                        r#"{{"zone":"{zone}","carbonIntensity":null,"datetime":"{now}"}}"#
                                    ),
                                ),
                                Answer::Garbage => (200, "<html>oops</html>".to_owned()),
                                Answer::Forecast(v) => (
                                    200,
                                    format!(
                                        r#"{{"zone":"{zone}","forecast":[{{"carbonIntensity":{v},"datetime":"{now}"}}],"updatedAt":"{now}"}}"#
                                    ),
                                ),
                                Answer::Status(code) => (code, r#"{"error":"nope"}"#.to_owned()),
                            };
                            let mut response = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            if status == 429 {
                                response
                                    .headers_mut()
                                    .insert("retry-after", http::HeaderValue::from_static("3600"));
                            }
                            let hold = held.lock().unwrap().take();
                            async move {
                                if let Some(hold) = hold {
                                    hold.arrived.send(()).unwrap();
                                    hold.release.await.unwrap();
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            answers,
            forecasts,
            hits,
            hold,
        }
    }

    /// Holds the next answer: the first receiver fires when its request arrives, and the
    /// answer goes out when the sender fires.
    fn hold_next(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (arrived, arrived_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release) = tokio::sync::oneshot::channel();
        *self.hold.lock().unwrap() = Some(Hold { arrived, release });
        (arrived_rx, release_tx)
    }

    fn set_forecast(&self, zone: &str, value: f64) {
        self.forecasts
            .lock()
            .unwrap()
            .insert(zone.to_owned(), value);
    }

    fn set(&self, zone: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(zone.to_owned(), answer);
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn api_config(
    dir: &TestDir,
    central: std::net::SocketAddr,
    north: std::net::SocketAddr,
    api: std::net::SocketAddr,
    token_env: &str,
) -> String {
    carbon_config(dir, central, north, "", r#"["electricitymaps", "static"]"#).replace(
        "poll_interval_ms = 3600000",
        &format!("poll_interval_ms = 3600000\nelectricitymaps = {{ base_url = \"http://{api}\", token_env = \"{token_env}\", timeout_ms = 2000 }}"),
    )
}

#[tokio::test]
async fn electricitymaps_feed_drives_routing_and_survives_its_failures() {
    // A unique variable, set before the proxy reads it; no other test reads it.
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_A", "secret-a");
    let api = FakeElectricityMaps::start("secret-a").await;
    api.set("DE", Answer::Value(300.0));
    api.set("NO", Answer::Value(30.0));
    let dir = TestDir::new("em");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    let proxy = start(
        &api_config(&dir, central, north, api.addr, "AEGIS_TEST_EM_TOKEN_A"),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    assert_eq!(region_everywhere(&addr).await.0, "eu-north");
    let text = metrics(&proxy).await;
    let series =
        "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"electricitymaps\"}";
    assert_eq!(metric(&text, series), Some(30.0), "{text}");

    // Rate limited: the feed pauses (no more calls) and the last values stay in use.
    api.set("DE", Answer::Status(429));
    proxy.refresh_carbon().await;
    let hits = api.hits();
    proxy.refresh_carbon().await;
    assert_eq!(
        api.hits(),
        hits,
        "called the API while paused by Retry-After"
    );
    assert_eq!(region_everywhere(&addr).await.0, "eu-north");
    let text = metrics(&proxy).await;
    let limited =
        "aegis_carbon_feed_errors_total{feed=\"electricitymaps\",reason=\"rate_limited\"}";
    assert!(metric(&text, limited).unwrap_or(0.0) >= 2.0, "{text}");
    // The feed's last values are still fresh: they stay in use ahead of the static 350.
    let central =
        "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-central\",source=\"electricitymaps\"}";
    assert_eq!(metric(&text, central), Some(300.0), "{text}");
    let fallback = "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-central\",source=\"static\"}";
    assert_eq!(metric(&text, fallback), None, "{text}");
}

#[tokio::test]
async fn electricitymaps_bad_token_null_and_garbage_fall_back() {
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_B", "wrong");
    let api = FakeElectricityMaps::start("secret-b").await;
    api.set("DE", Answer::Value(300.0));
    api.set("NO", Answer::Value(30.0));
    let dir = TestDir::new("em401");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    let proxy = start(
        &api_config(&dir, central, north, api.addr, "AEGIS_TEST_EM_TOKEN_B"),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    // Unauthorized: eu-central keeps its static 350, eu-north has no data (500): central wins.
    assert_eq!(region_everywhere(&addr).await.0, "eu-central");
    let text = metrics(&proxy).await;
    let unauthorized =
        "aegis_carbon_feed_errors_total{feed=\"electricitymaps\",reason=\"unauthorized\"}";
    // Both zones refused, at startup and at the explicit refresh.
    assert!(metric(&text, unauthorized).unwrap_or(0.0) >= 2.0, "{text}");

    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_C", "secret-b");
    api.set("DE", Answer::Garbage);
    api.set("NO", Answer::Null);
    let proxy = start(
        &api_config(&dir, central, north, api.addr, "AEGIS_TEST_EM_TOKEN_C"),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    assert_eq!(region_everywhere(&addr).await.0, "eu-central");
    let text = metrics(&proxy).await;
    for reason in ["malformed_json", "null_value"] {
        let series = format!(
            "aegis_carbon_feed_errors_total{{feed=\"electricitymaps\",reason=\"{reason}\"}}"
        );
        assert!(metric(&text, &series).unwrap_or(0.0) >= 1.0, "{text}");
    }

    // A null latest value is filled from the forecast for the current hour.
    api.set_forecast("NO", 35.0);
    proxy.refresh_carbon().await;
    assert_eq!(region_everywhere(&addr).await.0, "eu-north");
    let text = metrics(&proxy).await;
    let series =
        "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"electricitymaps\"}";
    assert_eq!(metric(&text, series), Some(35.0), "{text}");
}

/// An origin port with nothing listening.
/// Gives both regions a configured round-trip time, the latency estimate that stands until a
/// probe succeeds (a dead region's never does).
fn with_rtt(config: String) -> String {
    config
        .replace("zone = \"DE\"", "zone = \"DE\"\nrtt_ms = 1")
        .replace("zone = \"NO\"", "zone = \"NO\"\nrtt_ms = 1")
}

async fn closed_port() -> std::net::SocketAddr {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    closed.local_addr().unwrap()
}

#[tokio::test]
async fn a_dead_green_region_is_ejected_and_traffic_moves_on() {
    let dir = TestDir::new("carbondead");
    let central = spawn_origin("central").await.unwrap();
    let dead_north = closed_port().await;
    dir.write("carbon.json", r#"{"DE": 400, "NO": 40}"#);
    let extra = "retry = { attempts = 0 }\noutlier = { consecutive_failures = 3 }";
    let proxy = start(
        &with_rtt(carbon_config(
            &dir,
            central,
            dead_north,
            extra,
            r#"["file"]"#,
        )),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    // Without retries, the greener region's dead endpoint answers 502 until it is ejected...
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(addr.get().await.1.status);
    }
    assert_eq!(statuses, [502, 502, 502, 200, 200, 200]);
    // ...then the unhealthy region gets nothing while it stays ejected.
    for _ in 0..10 {
        assert_eq!(
            region_of(&addr).await,
            ("eu-central".into(), "central".into())
        );
    }
    let text = metrics(&proxy).await;
    let series =
        format!("aegis_upstream_ejections_total{{cluster=\"api\",endpoint=\"{dead_north}\"}}");
    assert_eq!(metric(&text, &series), Some(1.0), "{text}");
    let series = format!(
        "aegis_upstream_healthy{{cluster=\"api\",endpoint=\"{dead_north}\",region=\"eu-north\"}}"
    );
    assert_eq!(metric(&text, &series), Some(0.0), "{text}");
}

#[tokio::test]
async fn a_connect_failure_in_the_green_region_is_retried_in_another() {
    let dir = TestDir::new("carbonretry");
    let central = spawn_origin("central").await.unwrap();
    let dead_north = closed_port().await;
    dir.write("carbon.json", r#"{"DE": 400, "NO": 40}"#);
    let extra = "outlier = { consecutive_failures = 3 }";
    let proxy = start(
        &with_rtt(carbon_config(
            &dir,
            central,
            dead_north,
            extra,
            r#"["file"]"#,
        )),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    let addr = Rotation::new(&proxy, &dir);
    // Every request succeeds: the retry goes to the only other region.
    for _ in 0..8 {
        assert_eq!(
            region_of(&addr).await,
            ("eu-central".into(), "central".into())
        );
    }
    // Three connect failures ejected the dead endpoint; after that nothing needed a retry.
    let text = metrics(&proxy).await;
    let series = "aegis_upstream_retries_total{cluster=\"api\",reason=\"connect\"}";
    assert_eq!(metric(&text, series), Some(3.0), "{text}");
}

type Handler = dyn Fn(&http::request::Parts) -> (u16, String) + Send + Sync;

/// A loopback API whose answers come from `handler`.
async fn fake_api(handler: std::sync::Arc<Handler>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (parts, _) = req.into_parts();
                        let (status, body) = handler(&parts);
                        let mut response = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn provider_config(
    dir: &TestDir,
    central: std::net::SocketAddr,
    north: std::net::SocketAddr,
    feed: &str,
    settings: &str,
) -> String {
    carbon_config(dir, central, north, "", &format!(r#"["{feed}", "static"]"#))
        .replace(
            "zone = \"DE\"",
            "zone = \"DE\"\nuk_region = 13\nwatttime_region = \"DE_WT\"",
        )
        .replace(
            "zone = \"NO\"",
            "zone = \"NO\"\nuk_region = 1\nwatttime_region = \"NO_WT\"",
        )
        .replace(
            "poll_interval_ms = 3600000",
            &format!("poll_interval_ms = 3600000\n{settings}"),
        )
}

#[tokio::test]
async fn uk_carbon_intensity_feed_drives_routing() {
    let handler: std::sync::Arc<Handler> = std::sync::Arc::new(|parts: &http::request::Parts| {
        let now = aegis_proxy::carbon_feed::rfc3339(aegis_proxy::carbon_feed::unix_now());
        let forecast = match parts.uri.path() {
            "/regional/regionid/13" => "320",
            "/regional/regionid/1" => "45",
            _ => return (400, r#"{"error":{"code":"400 Bad Request","message":"Please enter a valid region ID"}}"#.into()),
        };
        (
            200,
            format!(
                r#"{{"data":[{{"regionid":1,"dnoregion":"Scottish Hydro Electric Power Distribution","shortname":"North Scotland","data":[{{"from":"{now}","to":"{now}","intensity":{{"forecast":{forecast},"index":"low"}},"generationmix":[]}}]}}]}}"#
            ),
        )
    });
    let api = fake_api(handler).await;
    let dir = TestDir::new("uk");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    // The UK API's figures are direct emissions: the static values must say so too.
    let settings = format!("uk = {{ base_url = \"http://{api}\" }}\nbasis = \"direct\"");
    let proxy = start(
        &provider_config(&dir, central, north, "uk", &settings),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    assert_eq!(
        region_everywhere(&Rotation::new(&proxy, &dir)).await.0,
        "eu-north"
    );
    let text = metrics(&proxy).await;
    let series = "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-central\",source=\"uk\"}";
    assert_eq!(metric(&text, series), Some(320.0), "{text}");
}

/// One call for every region to a Carbon Aware SDK WebAPI, answered in its documented
/// `EmissionsData` shape; the newest point per location wins.
#[tokio::test]
async fn carbon_aware_sdk_feed_drives_routing_with_one_call() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler: std::sync::Arc<Handler> = std::sync::Arc::new(
        move |parts: &http::request::Parts| {
            counter.fetch_add(1, Ordering::SeqCst);
            let query = parts.uri.query().unwrap_or("");
            if parts.uri.path() != "/emissions/bylocations"
                || !query.contains("locations=germanywestcentral&locations=norwayeast&time=")
            {
                return (400, r#"{"title":"Bad Request","status":400}"#.into());
            }
            let now = aegis_proxy::carbon_feed::unix_now();
            let at = |secs: i64| aegis_proxy::carbon_feed::rfc3339(secs).replace('Z', "+00:00");
            (
                200,
                format!(
                    r#"[{{"location":"germanywestcentral","time":"{}","rating":380,"duration":"00:05:00"}},{{"location":"norwayeast","time":"{}","rating":900,"duration":"00:05:00"}},{{"location":"norwayeast","time":"{}","rating":31.5,"duration":"00:05:00"}}]"#,
                    at(now - 60),
                    at(now - 600),
                    at(now - 60),
                ),
            )
        },
    );
    let api = fake_api(handler).await;
    let dir = TestDir::new("sdk");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    let settings = format!(
        "carbon_aware_sdk = {{ base_url = \"http://{api}\", signal = \"average\", basis = \"lifecycle\" }}"
    );
    let config = provider_config(&dir, central, north, "carbon_aware_sdk", &settings)
        .replace("uk_region = 13", "sdk_location = \"germanywestcentral\"")
        .replace("uk_region = 1\n", "sdk_location = \"norwayeast\"\n");
    let proxy = start(&config, &dir).await;
    proxy.refresh_carbon().await;
    assert_eq!(
        region_everywhere(&Rotation::new(&proxy, &dir)).await.0,
        "eu-north"
    );
    // One call per refresh for both regions (the start's first poll, then this refresh).
    assert!((1..=2).contains(&calls.load(Ordering::SeqCst)));
    let text = metrics(&proxy).await;
    let series =
        "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"carbon_aware_sdk\"}";
    assert_eq!(metric(&text, series), Some(31.5), "{text}");
}

#[tokio::test]
async fn watttime_feed_logs_in_renews_its_token_and_converts_units() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let logins = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = logins.clone();
    // user "u", password "p": basic dTpw.
    let handler: std::sync::Arc<Handler> = std::sync::Arc::new(
        move |parts: &http::request::Parts| {
            let auth = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if parts.uri.path() == "/login" {
                if auth != "Basic dTpw" {
                    return (401, "{}".into());
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                return (200, format!(r#"{{"token":"token-{n}"}}"#));
            }
            // The first token is already expired: the feed must log in again.
            if auth == "Bearer token-0" || !auth.starts_with("Bearer token-") {
                return (401, "{}".into());
            }
            let query = parts.uri.query().unwrap_or("");
            let value = if query.contains("region=NO_WT") {
                100.0
            } else {
                900.0
            };
            let now = aegis_proxy::carbon_feed::rfc3339(aegis_proxy::carbon_feed::unix_now())
                .replace('Z', "+00:00");
            (
                200,
                format!(
                    r#"{{"data":[{{"point_time":"{now}","value":{value}}}],"meta":{{"region":"X","signal_type":"co2_moer","units":"lbs_co2_per_mwh"}}}}"#
                ),
            )
        },
    );
    let api = fake_api(handler).await;
    #[allow(clippy::disallowed_methods)]
    {
        std::env::set_var("AEGIS_TEST_WT_USER", "u");
        std::env::set_var("AEGIS_TEST_WT_PASSWORD", "p");
    }
    let dir = TestDir::new("wt");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    let settings = format!(
        "watttime = {{ base_url = \"http://{api}\", username_env = \"AEGIS_TEST_WT_USER\", password_env = \"AEGIS_TEST_WT_PASSWORD\" }}\nsignal = \"marginal\"\nbasis = \"direct\""
    );
    let proxy = start(
        &provider_config(&dir, central, north, "watttime", &settings),
        &dir,
    )
    .await;
    proxy.refresh_carbon().await;
    assert_eq!(
        region_everywhere(&Rotation::new(&proxy, &dir)).await.0,
        "eu-north"
    );
    assert!(
        logins.load(Ordering::SeqCst) >= 2,
        "token not renewed after a 401"
    );
    let text = metrics(&proxy).await;
    let series = "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"watttime\"}";
    let grams = metric(&text, series).unwrap();
    assert!((grams - 45.359_237).abs() < 1e-6, "{grams}");
}

#[tokio::test]
async fn a_feed_that_never_answers_times_out_and_falls_back() {
    // Accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = silent.local_addr().unwrap();
    let dir = TestDir::new("emtimeout");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_E", "token-e");
    let config = api_config(&dir, central, north, api, "AEGIS_TEST_EM_TOKEN_E")
        .replace("timeout_ms = 2000", "timeout_ms = 100");
    let proxy = start(&config, &dir).await;
    proxy.refresh_carbon().await;
    // eu-central falls back to its static 350; eu-north has no data (500).
    assert_eq!(
        region_everywhere(&Rotation::new(&proxy, &dir)).await.0,
        "eu-central"
    );
    let text = metrics(&proxy).await;
    let timeouts = "aegis_carbon_feed_errors_total{feed=\"electricitymaps\",reason=\"timeout\"}";
    assert!(metric(&text, timeouts).unwrap_or(0.0) >= 2.0, "{text}");
    drop(silent);
}

#[tokio::test]
async fn admin_config_page_shows_regions_and_feeds_without_secrets() {
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_D", "do-not-show-me");
    let dir = TestDir::new("carbonconfig");
    let central = spawn_origin("central").await.unwrap();
    let north = spawn_origin("north").await.unwrap();
    let api: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = start(
        &api_config(&dir, central, north, api, "AEGIS_TEST_EM_TOKEN_D"),
        &dir,
    )
    .await;
    let answer = http(proxy.admin_addr().unwrap(), get("/config"), false)
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(page["regions"]["eu-north"]["zone"], "NO");
    assert_eq!(
        page["carbon"]["feeds"],
        serde_json::json!(["electricitymaps", "static"])
    );
    assert_eq!(
        page["carbon"]["electricitymaps"]["token_env"],
        "AEGIS_TEST_EM_TOKEN_D"
    );
    assert_eq!(page["clusters"]["api"]["carbon"], "greenest");
    assert!(!answer.body.contains("do-not-show-me"));
}

#[tokio::test]
async fn a_slow_refresh_never_overwrites_a_newer_one() {
    // A unique variable, set before the feeds read it; no other test reads it.
    #[allow(clippy::disallowed_methods)]
    std::env::set_var("AEGIS_TEST_EM_TOKEN_OVERLAP", "secret-o");
    let api = FakeElectricityMaps::start("secret-o").await;
    api.set("DE", Answer::Value(400.0));
    api.set("NO", Answer::Value(40.0));
    let dir = TestDir::new("carbonoverlap");
    let text = api_config(
        &dir,
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        api.addr,
        "AEGIS_TEST_EM_TOKEN_OVERLAP",
    );
    let config = aegis_proxy::Config::parse(&text, &dir.path).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = std::sync::Arc::new(aegis_proxy::metrics::Metrics::new(&mut registry));
    let feeds = std::sync::Arc::new(aegis_proxy::carbon_feed::CarbonFeeds::new(
        config.carbon.clone(),
        config.regions.clone(),
        metrics,
    ));
    let intensities = || -> Vec<f64> {
        let table = feeds.current();
        table.regions.iter().map(|r| r.intensity).collect()
    };

    // The first refresh asks for DE while it is 400 and gets no answer yet.
    let (arrived, release) = api.hold_next();
    let slow = tokio::spawn({
        let feeds = feeds.clone();
        async move { feeds.refresh().await }
    });
    arrived.await.unwrap();
    // The grid changes, and a second refresh reads and publishes it.
    api.set("DE", Answer::Value(30.0));
    api.set("NO", Answer::Value(400.0));
    feeds.refresh().await;
    assert_eq!(intensities(), [30.0, 400.0]);

    // The first refresh now finishes with its old DE reading: it must not be published.
    release.send(()).unwrap();
    slow.await.unwrap();
    assert_eq!(intensities(), [30.0, 400.0]);
}
