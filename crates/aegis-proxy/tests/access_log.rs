//! The access log, alone in its own test binary: tracing's callsite cache is process-wide, so a
//! thread-scoped subscriber is only reliable when no other test runs in the same process.

mod support;

use std::sync::{Arc, Mutex};

use aegis_proxy::demo::spawn_origin;
use support::*;

/// Collects what the access log writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_line_names_tls_group_and_http_version() {
    use tracing_subscriber::layer::SubscriberExt;

    let captured = Captured::default();
    let writer = captured.clone();
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone());
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::filter::Targets::new()
            .with_target("aegis::access", tracing::Level::INFO),
    );
    // A current-thread test runtime: the proxy's tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = TestDir::new("accesslog");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let client = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
    let answer = https(
        proxy.listener_addr("public").unwrap(),
        client,
        get("/logged"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);

    // The line is written when the proxy sees the body end, which may be just after the client.
    let mut text = String::new();
    for _ in 0..1000 {
        text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        if !text.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let line: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("one access-log line")).unwrap();
    assert_eq!(line["tls_group"], "X25519MLKEM768");
    assert_eq!(line["protocol"], "h2");
    assert_eq!(line["path"], "/logged");
    assert_eq!(line["status"], 200);
    assert_eq!(line["cluster"], "api");
    assert_eq!(line["completed"], true);
}
