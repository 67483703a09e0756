//! Carbon-aware routing end to end: a file feed drives which region serves requests.

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
name = "public"
listen = "127.0.0.1:0"

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
    )
}

async fn region_of(addr: std::net::SocketAddr) -> (String, String) {
    let answer = http(addr, get("/"), false).await.unwrap();
    assert_eq!(answer.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    (
        answer.headers["x-aegis-region"]
            .to_str()
            .unwrap()
            .to_owned(),
        seen["origin"].as_str().unwrap().to_owned(),
    )
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
    let addr = proxy.listener_addr("public").unwrap();
    for _ in 0..5 {
        assert_eq!(region_of(addr).await, ("eu-north".into(), "north".into()));
    }

    dir.write("carbon.json", r#"{"DE": 30, "NO": 400}"#);
    proxy.refresh_carbon().await;
    for _ in 0..5 {
        assert_eq!(
            region_of(addr).await,
            ("eu-central".into(), "central".into())
        );
    }

    let text = metrics(&proxy).await;
    let series = "aegis_carbon_intensity_gco2_per_kwh{region=\"eu-north\",source=\"file\"}";
    assert_eq!(metric(&text, series), Some(400.0), "{text}");
    let requests =
        "aegis_carbon_requests_total{cluster=\"api\",region=\"eu-central\",reason=\"greenest\"}";
    assert_eq!(metric(&text, requests), Some(5.0), "{text}");
    let saved = metric(&text, "aegis_carbon_saved_grams_total{cluster=\"api\"}").unwrap_or(0.0);
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
    let addr = proxy.listener_addr("public").unwrap();
    // eu-central has a static 350; eu-north has nothing: it stands at unknown_intensity (500).
    assert_eq!(
        region_of(addr).await,
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
    let addr = proxy.listener_addr("public").unwrap();
    let answer = http(addr, get("/"), false).await.unwrap();
    assert_eq!(answer.status, 200);
    let text = metrics(&proxy).await;
    assert!(text.contains("reason=\"fallback:no_data\"} 1"), "{text}");
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
    let addr = proxy.listener_addr("public").unwrap();
    let mut north_hits = 0;
    for _ in 0..200 {
        if region_of(addr).await.0 == "eu-north" {
            north_hits += 1;
        }
    }
    assert!(
        (100..=140).contains(&north_hits),
        "eu-north took {north_hits} of 200"
    );
}
