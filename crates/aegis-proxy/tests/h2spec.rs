//! HTTP/2 conformance: h2spec 2.6.0 (`tools/h2spec`), every case, over TLS and h2c.
//!
//! Each case expects the proxy's own answer (GOAWAY or RST_STREAM with the RFC 9113 error
//! code, or a close); some also need a 200 from the origin behind it.

mod support;

use std::time::Duration;

use support::*;

const H2SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/h2spec");

/// Runs h2spec against `port`; returns whether it passed and its report.
async fn h2spec(port: u16, tls: bool) -> (bool, String) {
    let mut args = vec![
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-o".to_owned(),
        "3".to_owned(),
    ];
    if tls {
        args.extend(["-t".to_owned(), "-k".to_owned()]);
    }
    let run = move || std::process::Command::new(H2SPEC).args(&args).output();
    let out = tokio::task::spawn_blocking(run)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{H2SPEC} runs: {e}"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_h2spec_case_passes_over_tls_and_h2c() {
    let dir = TestDir::new("h2spec");
    // A slow application: a client's RST_STREAM right after its HEADERS always arrives before
    // the response exists, as h2spec 5.1/8 assumes, however loaded the machine is.
    let origin = origin(Behaviour::Delay(Duration::from_millis(25)))
        .await
        .addr;
    let rest =
        format!("[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{origin}\"]\n");
    let proxy = start(&matrix_config("", &rest), &dir).await;
    for (listener, tls) in [("secure", true), ("plain", false)] {
        let port = proxy.listener_addr(listener).unwrap().port();
        let (passed, report) = h2spec(port, tls).await;
        let summary = report.lines().last().unwrap_or_default().to_owned();
        assert!(passed, "{listener}: {summary}\n{report}");
        assert!(summary.ends_with(" 0 failed"), "{listener}: {summary}");
    }
}
