//! A listener's life: bound with the configured backlog; on shutdown, stop accepting, finish
//! what is in flight, give up after the drain timeout.

mod support;

use support::*;

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
    let (origin, arrived, release) = gated_origin().await;
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

/// An h2c connection to the proxy, with its connection task.
async fn h2c(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let dir = TestDir::new("h2idle");
    let origin = aegis_proxy::demo::spawn_origin("o1").await.unwrap();
    let proxy = start(&config(None, &[origin], "idle_timeout_ms = 100", ""), &dir).await;
    let (mut sender, conn) = h2c(proxy.listener_addr("public").unwrap()).await;
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    // The proxy sends GOAWAY and closes; the bound only turns a hang into a failure.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
    closed
        .expect("idle h2 connection still open after 10 s")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_h2_connection_open() {
    let (origin, arrived, release) = gated_origin().await;
    let dir = TestDir::new("h2busy");
    let config = config(None, &[origin.addr], "idle_timeout_ms = 100", "");
    let proxy = start(&config, &dir).await;
    let (mut sender, _conn) = h2c(proxy.listener_addr("public").unwrap()).await;
    let slow = tokio::spawn(sender.send_request(get("/slow")));
    arrived.notified().await;
    // The time under test: four idle timeouts pass while the request is in flight.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // No GOAWAY was sent: a second request on the same connection reaches the origin.
    let mut next = tokio::spawn(sender.send_request(get("/next")));
    tokio::select! {
        _ = arrived.notified() => {}
        refused = &mut next => panic!("second request refused: {refused:?}"),
    }
    release.notify_one();
    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    assert_eq!(next.await.unwrap().unwrap().status(), 200);
}

/// The listen backlog the kernel reports (`ss` shows it as Send-Q of a listening socket).
fn backlog_of(addr: std::net::SocketAddr) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let columns: Vec<&str> = text.split_whitespace().collect();
    columns
        .get(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

#[tokio::test]
async fn the_listen_backlog_is_configurable_with_a_production_default() {
    let dir = TestDir::new("backlog");
    let origin = origin(Behaviour::Answer).await;
    let proxy = start(&config(None, &[origin.addr], "backlog = 7", ""), &dir).await;
    assert_eq!(backlog_of(proxy.listener_addr("public").unwrap()), 7);
    let proxy = start(&config(None, &[origin.addr], "", ""), &dir).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let expected = 4096.min(somaxconn);
    assert_eq!(backlog_of(proxy.listener_addr("public").unwrap()), expected);
}

/// A rolling deploy: on shutdown `/ready` fails first while the listener still serves, for the
/// shutdown delay; only then are new connections refused.
#[tokio::test]
async fn shutdown_reports_not_ready_before_it_stops_accepting() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("shutdowndelay");
    let server = "[server]\nshutdown_delay_ms = 3000\n";
    let text = format!("{server}{}", config(None, &[origin.addr], "", ""));
    let proxy = start(&text, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(http(admin, get("/ready"), false).await.unwrap().status, 200);
    let shutdown = tokio::spawn(proxy.shutdown());
    let not_ready = async {
        while http(admin, get("/ready"), false).await.unwrap().status != 503 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), not_ready)
        .await
        .expect("/ready turns 503");
    let during = http(addr, get("/"), false).await.unwrap();
    assert_eq!(during.status, 200, "still serving during the delay");
    assert!(!shutdown.is_finished());
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), refused)
        .await
        .expect("refused once the delay is over");
    assert!(shutdown.await.unwrap(), "drained");
}

/// SIGTERM on an HTTP/2 connection that carries a long streaming download and five requests
/// held at the origin: GOAWAY, then every stream completes, the download to its last byte, and
/// the drain finishes (RFC 9113 §6.8).
#[tokio::test]
async fn shutdown_completes_every_h2_stream_beside_a_streaming_response() {
    use http_body_util::BodyExt;
    const DOWNLOAD: usize = 32 * 1024 * 1024;
    const HELD: usize = 5;
    let streaming = aegis_proxy::demo::spawn_origin("stream").await.unwrap();
    let (held, mut arrivals, release) = held_origin(1000).await;
    for proto in [Proto::H2c, Proto::H2] {
        let dir = TestDir::new("h2drain");
        let rest = format!(
            "[[routes]]\npath_prefix = \"/bytes/\"\ncluster = \"stream\"\n\n\
             [[routes]]\ncluster = \"held\"\n\n\
             [clusters.stream]\nendpoints = [\"{streaming}\"]\n\n\
             [clusters.held]\nendpoints = [\"{held}\"]\n"
        );
        let proxy = start(&matrix_config("", &rest), &dir).await;
        let (sender, _connection) = proto.h2_connection(&proxy, &dir).await.unwrap();
        let scheme = if proto == Proto::H2 { "https" } else { "http" };
        let mut downloader = sender.clone();
        let path = format!("/bytes/{DOWNLOAD}");
        let download = tokio::spawn(async move {
            let response = downloader
                .send_request(get_at(scheme, &path))
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap();
            body.to_bytes().len()
        });
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..HELD {
            let mut sender = sender.clone();
            let request = get_at(scheme, "/held");
            requests.spawn(async move {
                let response = sender.send_request(request).await.unwrap();
                let status = response.status().as_u16();
                (
                    status,
                    response
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .len(),
                )
            });
        }
        for _ in 0..HELD {
            arrivals.recv().await.unwrap();
        }
        let shutdown = tokio::spawn(proxy.shutdown());
        release.send(true).unwrap();
        while let Some(done) = requests.join_next().await {
            assert_eq!(done.unwrap(), (200, 1000), "{proto:?}");
        }
        assert_eq!(download.await.unwrap(), DOWNLOAD, "{proto:?}");
        drop(sender);
        assert!(shutdown.await.unwrap(), "{proto:?}: drain did not complete");
        release.send(false).unwrap();
    }
}

fn get_at(scheme: &str, path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get(format!("{scheme}://localhost{path}"))
        .body(http_body_util::Full::default())
        .unwrap()
}
