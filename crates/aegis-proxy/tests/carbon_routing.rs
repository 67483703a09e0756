//! Carbon routing under realistic conditions, over every protocol: latency is measured by
//! probes (origins that wait stand in for distance), bad and stale feed values never win, the
//! cap never makes things worse than carbon-blind routing, and `/carbon` explains it all.

mod support;

use std::sync::atomic::Ordering;

use support::*;

/// Regions `near` (zone DE, static 400 g) and `far` (zone NO, static 30 g), a `file` feed first,
/// cluster `api` with the greenest policy and a 50 ms budget, probes only when a test asks.
fn regions_config(
    dir: &TestDir,
    near: std::net::SocketAddr,
    far: std::net::SocketAddr,
    extra: &str,
) -> String {
    let carbon = format!(
        "feeds = [\"file\", \"static\"]\nfile = {{ path = \"{}\" }}\n\
         poll_interval_ms = 3600000\nprobe_interval_ms = 3600000",
        dir.file("carbon.json")
    );
    let rest = two_regions(
        near,
        far,
        &carbon,
        &format!("latency_budget_ms = 50\n{extra}"),
    );
    matrix_config("", &rest)
}

/// The region each protocol's request was sent to.
async fn regions_seen(proxy: &aegis_proxy::Running, dir: &TestDir) -> Vec<(Proto, String)> {
    let mut seen = Vec::new();
    for proto in PROTOCOLS {
        let answer = proto.send(proxy, dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
        let region = answer.headers["x-aegis-region"]
            .to_str()
            .unwrap()
            .to_owned();
        seen.push((proto, region));
    }
    seen
}

fn all(region: &str) -> Vec<(Proto, String)> {
    PROTOCOLS.iter().map(|&p| (p, region.to_owned())).collect()
}

/// `/carbon`'s entry for one region of cluster `api`.
fn region<'a>(page: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let regions = page["clusters"]["api"]["regions"].as_array().unwrap();
    regions.iter().find(|r| r["name"] == name).unwrap()
}

async fn carbon_page(proxy: &aegis_proxy::Running) -> serde_json::Value {
    let answer = http(proxy.admin_addr().unwrap(), get("/carbon"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    serde_json::from_str(&answer.body).unwrap()
}

/// The old rule kept a never-measured region eligible, and a far green region took every
/// cold-start request: now the first probe round runs before the proxy serves.
#[tokio::test]
async fn cold_start_respects_the_latency_budget_from_the_first_request() {
    let dir = TestDir::new("cold");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(150).await;
    dir.write("carbon.json", "{}");
    let proxy = start(&regions_config(&dir, near, far, ""), &dir).await;
    assert_eq!(regions_seen(&proxy, &dir).await, all("near"));

    let page = carbon_page(&proxy).await;
    assert_eq!(region(&page, "near")["why"], "eligible");
    let far = region(&page, "far");
    assert_eq!(far["why"], "over_budget");
    assert_eq!(far["latency_from"], "probe");
    assert_eq!(
        (far["signal"].as_str(), far["basis"].as_str()),
        (Some("average"), Some("lifecycle"))
    );
    assert!(far["latency_ms"].as_f64().unwrap() >= 150.0, "{page:#}");
    assert!(
        page["clusters"]["api"]["fastest_healthy_latency_ms"]
            .as_f64()
            .unwrap()
            < 50.0
    );
    assert_eq!(
        page["clusters"]["api"]["next"]["region"], "near",
        "{page:#}"
    );
    let text = metrics(&proxy).await;
    let series = "aegis_carbon_region_latency_seconds{cluster=\"api\",region=\"far\"}";
    assert!(metric(&text, series).unwrap() >= 0.150, "{text}");
}

/// One slow answer (a probe and a request both took a second) does not make a near green
/// region look far: its estimate is the minimum of recent probes, and traffic never feeds it.
#[tokio::test]
async fn a_region_recovers_after_one_slow_response() {
    let dir = TestDir::new("recover");
    let (near, _) = tunable_origin(0).await;
    let (green, tuning) = tunable_origin(0).await;
    dir.write("carbon.json", "{}");
    let proxy = start(&regions_config(&dir, near, green, ""), &dir).await;
    assert_eq!(regions_seen(&proxy, &dir).await, all("far"));

    tuning.delay_ms.store(1000, Ordering::SeqCst);
    proxy.probe_latency().await;
    let slow = Proto::H1Fast
        .send(&proxy, &dir, &Sent::get("/"))
        .await
        .unwrap();
    assert_eq!(slow.headers["x-aegis-region"], "far");
    tuning.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(regions_seen(&proxy, &dir).await, all("far"));
    let page = carbon_page(&proxy).await;
    assert!(
        region(&page, "far")["latency_ms"].as_f64().unwrap() < 50.0,
        "{page:#}"
    );
}

/// A green region whose every answer is a fast 503 never looks near: failed probes are not
/// samples, and without a prior it never becomes eligible, so no request is sent there.
#[tokio::test]
async fn a_region_that_fails_fast_is_not_preferred() {
    let dir = TestDir::new("failfast");
    let (near, _) = tunable_origin(0).await;
    let (broken, tuning) = tunable_origin(0).await;
    tuning.status.store(503, Ordering::SeqCst);
    dir.write("carbon.json", "{}");
    let proxy = start(&regions_config(&dir, near, broken, ""), &dir).await;
    proxy.probe_latency().await;
    assert_eq!(regions_seen(&proxy, &dir).await, all("near"));
    let page = carbon_page(&proxy).await;
    assert_eq!(region(&page, "far")["why"], "no_latency", "{page:#}");
    // Only probes reached it.
    assert_eq!(tuning.hits.load(Ordering::SeqCst), 2);
}

/// A value that is not a finite, non-negative, plausible number is dropped and counted; the
/// next feed's value stands, as if the bad one had never come.
#[tokio::test]
async fn a_feed_value_that_is_nan_negative_or_implausible_changes_nothing() {
    let dir = TestDir::new("badvalue");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(0).await;
    let hour = aegis_proxy::carbon_feed::unix_now() / 3600 * 3600;
    let stamp = aegis_proxy::carbon_feed::rfc3339(hour);
    let cases = [
        (
            format!("datetime_utc,DE,NO\n{stamp},NaN,20\n"),
            "not_finite",
        ),
        (r#"{"DE": -5}"#.to_owned(), "negative"),
        (r#"{"DE": 1e9, "NO": 5000}"#.to_owned(), "implausible"),
    ];
    dir.write("carbon.json", &cases[0].0);
    let proxy = start(&regions_config(&dir, near, far, ""), &dir).await;
    for (contents, reason) in &cases {
        dir.write("carbon.json", contents);
        proxy.refresh_carbon().await;
        // near keeps its static 400 (a negative value used to win greenest outright), far keeps
        // the file's last good 20 (5000 never replaces it).
        assert_eq!(regions_seen(&proxy, &dir).await, all("far"), "{reason}");
        let text = metrics(&proxy).await;
        let series = format!("aegis_carbon_feed_errors_total{{feed=\"file\",reason=\"{reason}\"}}");
        assert!(
            metric(&text, &series).unwrap_or(0.0) >= 1.0,
            "{reason}: {text}"
        );
        let intensity = "aegis_carbon_intensity_gco2_per_kwh{region=\"near\",source=\"static\"}";
        assert_eq!(metric(&text, intensity), Some(400.0), "{reason}: {text}");
    }
    let page = carbon_page(&proxy).await;
    assert_eq!(region(&page, "far")["intensity"], 20.0, "{page:#}");
}

/// A week-old 10 g reading loses to a fresh 400 g one, and is kept and labelled stale rather
/// than dropped to "no data" when it was already stale at its first reading.
#[tokio::test]
async fn stale_data_loses_to_fresh_data() {
    let dir = TestDir::new("stale");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(0).await;
    let week_ago = aegis_proxy::carbon_feed::unix_now() / 3600 * 3600 - 7 * 86_400;
    let stamp = aegis_proxy::carbon_feed::rfc3339(week_ago);
    // far has no static value: only the file's (stale) 10 g.
    let config = regions_config(&dir, near, far, "").replace("intensity = 30\n", "");
    dir.write(
        "carbon.json",
        &format!("datetime_utc,DE,NO\n{stamp},300,10\n"),
    );
    let proxy = start(&config, &dir).await;
    proxy.refresh_carbon().await;
    assert_eq!(regions_seen(&proxy, &dir).await, all("near"));
    let page = carbon_page(&proxy).await;
    let far = region(&page, "far");
    assert_eq!(
        (far["freshness"].as_str(), far["intensity"].as_f64()),
        (Some("stale"), Some(10.0)),
        "{page:#}"
    );
    assert_eq!(far["why"], "worse_data");
}

/// With the greener region capped at 60 % of the traffic, the overflow goes to the next region
/// and is labelled `capacity`, and the signed saving against nearest routing under the same
/// cap (which sends 60 % to the dirty near region) is positive.
#[tokio::test]
async fn the_cap_never_ends_dirtier_than_nearest() {
    let dir = TestDir::new("cap");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(0).await;
    dir.write("carbon.json", "{}");
    let proxy = start(&regions_config(&dir, near, far, "max_share = 0.6"), &dir).await;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..8 {
        for (_, region) in regions_seen(&proxy, &dir).await {
            *seen.entry(region).or_default() += 1;
        }
    }
    assert!(seen["far"] >= seen["near"], "{seen:?}");
    assert!(seen["near"] > 0, "{seen:?}");
    let text = metrics(&proxy).await;
    let capacity =
        "aegis_carbon_requests_total{cluster=\"api\",region=\"near\",reason=\"capacity\"}";
    assert_eq!(metric(&text, capacity), Some(seen["near"] as f64), "{text}");
    let saved = metric(&text, "aegis_carbon_saved_grams{cluster=\"api\"}").unwrap();
    assert!(saved > 0.0, "{text}");
}
