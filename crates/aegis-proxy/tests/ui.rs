//! The admin `/ui` page in a real headless Chromium (Debian's `chromium`, which
//! `scripts/setup.sh` installs): it loads, polls the admin API, and shows the traffic, the TLS
//! groups and the carbon-aware cluster that one request over each protocol produced. A
//! screenshot is kept in the test's target folder.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

/// Runs headless Chromium on `url` with `args`; its standard output.
async fn chromium(url: String, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                // Timers run ahead of the clock: the page polls several times in no time.
                "--virtual-time-budget=4000",
            ])
            .args(&args)
            .arg(&url)
            .output()
            .expect("chromium (scripts/setup.sh installs Debian's package)");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The text of the element whose opening tag contains `marker`.
fn text_of<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    &rest[open..open + close]
}

#[tokio::test]
async fn the_live_page_shows_traffic_tls_groups_and_carbon_regions() {
    let dir = TestDir::new("ui");
    let (near, _) = tunable_origin(0).await;
    let (far, _) = tunable_origin(0).await;
    let rest = two_regions(near, far, "feeds = [\"static\"]", "");
    let proxy = start(&matrix_config("", &rest), &dir).await;
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    let url = format!("http://{}/ui", proxy.admin_addr().unwrap());
    let dom = chromium(url.clone(), vec!["--dump-dom".into()]).await;

    assert!(
        dom.contains("data-updated="),
        "the script never updated the page:\n{dom}"
    );
    assert!(
        text_of(&dom, "class=\"status\"").starts_with("live"),
        "{dom}"
    );
    assert_eq!(text_of(&dom, "id=\"total\""), "5");
    assert_eq!(text_of(&dom, "id=\"errors\""), "0.00 %");
    assert!(text_of(&dom, "id=\"p50\"").ends_with(" ms"), "{dom}");
    assert!(text_of(&dom, "id=\"p99\"").ends_with(" ms"), "{dom}");
    assert!(text_of(&dom, "id=\"build\"").starts_with(env!("CARGO_PKG_VERSION")));
    // HTTP/2 over TLS and HTTP/3: two post-quantum handshakes, 100 % of them.
    let groups = &dom[dom
        .find("data-group=\"X25519MLKEM768\"")
        .expect("no PQ row")..];
    assert!(groups.contains("<td>2</td><td>100.0 %</td>"), "{groups}");
    // The carbon-aware cluster: both regions, the greener one chosen.
    let table = &dom[dom.find("data-cluster=\"api\"").expect("no carbon table")..];
    assert!(table.contains("data-region=\"near\""), "{table}");
    assert!(
        table.contains("class=\"chosen\" data-region=\"far\"")
            || table.contains("data-region=\"far\" class=\"chosen\""),
        "{table}"
    );
    assert!(
        table.contains("<td>30</td>") && table.contains("<td>400</td>"),
        "{table}"
    );

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        url,
        vec![
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,1000".into(),
        ],
    )
    .await;
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", screenshot.display());
}

/// The page's files come with a policy that allows only this listener's own scripts and API.
#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let dir = TestDir::new("ui-csp");
    let (origin, _) = recording_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let admin = proxy.admin_addr().unwrap();
    for (path, kind) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let answer = http(admin, get(path), false).await.unwrap();
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.headers["content-type"], kind);
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
    }
}
