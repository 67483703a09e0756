//! Graceful drain: stop accepting, finish what is in flight, give up after the drain timeout.

mod support;

use std::sync::Arc;

use support::*;
use tokio::sync::Notify;

async fn wait_until_refused(addr: std::net::SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("listener still accepting after shutdown");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let origin = origin(Behaviour::Gate {
        arrived: arrived.clone(),
        release: release.clone(),
    })
    .await;
    let dir = TestDir::new("drain");
    let proxy = start(&config(None, &[origin.addr], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();

    let in_flight = tokio::spawn(http(addr, get("/slow"), false));
    arrived.notified().await;
    let shutdown = tokio::spawn(proxy.shutdown());
    wait_until_refused(addr).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a request in flight"
    );

    release.notify_one();
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert!(shutdown.await.unwrap(), "drain did not complete");
}

#[tokio::test]
async fn shutdown_sends_goaway_to_idle_h2_connections() {
    let dir = TestDir::new("goaway");
    let origin = aegis_proxy::demo::spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    // An idle keep-alive h2 connection must not hold the drain open.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert!(proxy.shutdown().await, "idle h2 connection held the drain");
    conn.await.unwrap().unwrap();
}

#[tokio::test]
async fn drain_gives_up_after_the_timeout() {
    let origin = origin(Behaviour::Hang).await;
    let dir = TestDir::new("draintimeout");
    let toml = config(None, &[origin.addr], "", "")
        .replace("[admin]", "[server]\ndrain_timeout_ms = 100\n\n[admin]");
    let proxy = start(&toml, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let stuck = tokio::spawn(http(addr, get("/"), false));
    while origin.hits() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(
        !proxy.shutdown().await,
        "drain reported success with a request stuck"
    );
    stuck.abort();
}
