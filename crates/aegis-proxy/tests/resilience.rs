//! Resilience scenarios against real loopback origins that are killed, restarted, made to fail
//! their health checks or reset requests: health checks, retries, shedding, connection limits.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_proxy::demo::spawn_origin;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::task::JoinSet;

/// An origin whose behaviour a test switches while it runs.
struct Controlled {
    addr: SocketAddr,
    state: Arc<OriginState>,
    server: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct OriginState {
    /// Requests other than health checks, by the origin's count.
    hits: AtomicUsize,
    /// `/health` answers 503 while this is set.
    failing_checks: AtomicBool,
    /// Requests (not health checks) get the connection closed without a response.
    reset: AtomicBool,
    /// Connections accepted.
    connections: AtomicUsize,
    /// Health checks answered.
    checks: AtomicUsize,
}

impl Controlled {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let server = Some(tokio::spawn(serve(listener, state.clone())));
        Self {
            addr,
            state,
            server,
        }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Closes the socket and every open connection, like a crashed process.
    fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.server = Some(tokio::spawn(serve(listener, self.state.clone())));
    }
}

impl Drop for Controlled {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<OriginState>) {
    // Connection tasks live in this set, so aborting the server aborts them too.
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { answer(&state, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: &OriginState,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/health" {
        state.checks.fetch_add(1, Ordering::SeqCst);
        let status = if state.failing_checks.load(Ordering::SeqCst) {
            503
        } else {
            200
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"health")));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return Ok(response);
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    if state.reset.load(Ordering::SeqCst) {
        // An error from the service makes hyper close the connection without a response.
        return Err(std::io::Error::other("reset on purpose"));
    }
    Ok(Response::new(Full::new(body.to_bytes())))
}

/// Polls `condition` until it holds, failing the test after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn endpoint_healthy(proxy: &aegis_proxy::Running, endpoint: SocketAddr) -> bool {
    let text = metrics(proxy).await;
    let series =
        format!("aegis_upstream_healthy{{cluster=\"api\",endpoint=\"{endpoint}\",region=\"\"}}");
    metric(&text, &series) == Some(1.0)
}

const CHECKS: &str = "lb = \"round_robin\"\n\
    health_check = { path = \"/health\", interval_ms = 50, timeout_ms = 50, \
    healthy_threshold = 2, unhealthy_threshold = 2 }";

/// Two requests over each protocol (ten in all, so round robin gives each of two endpoints
/// five), each answered 200.
async fn ten_requests_over_every_protocol(proxy: &aegis_proxy::Running, dir: &TestDir) {
    for proto in PROTOCOLS {
        for _ in 0..2 {
            let answer = proto.send(proxy, dir, &Sent::get("/")).await.unwrap();
            assert_eq!(answer.status, 200, "{proto:?}");
        }
    }
}

/// Active health checks take a dead endpoint out and bring it back, and until they notice, a
/// request that picks it is retried on the other; over every protocol.
#[tokio::test]
async fn traffic_leaves_a_killed_endpoint_and_comes_back_after_restart() {
    let dir = TestDir::new("healthkill");
    let mut a = Controlled::start().await;
    let b = Controlled::start().await;
    let proxy = matrix_proxy(&dir, &[a.addr, b.addr], CHECKS).await;
    eventually(Duration::from_secs(5), "a checked healthy", || {
        endpoint_healthy(&proxy, a.addr)
    })
    .await;

    a.kill();
    // Until the checks notice, a request that picks A fails to connect and is retried on B.
    ten_requests_over_every_protocol(&proxy, &dir).await;
    eventually(Duration::from_secs(5), "a marked unhealthy", || async {
        !endpoint_healthy(&proxy, a.addr).await
    })
    .await;
    let before = b.hits();
    ten_requests_over_every_protocol(&proxy, &dir).await;
    assert_eq!(
        b.hits() - before,
        10,
        "every request went to the healthy endpoint"
    );

    a.restart().await;
    eventually(Duration::from_secs(5), "a healthy again", || {
        endpoint_healthy(&proxy, a.addr)
    })
    .await;
    let before = a.hits();
    ten_requests_over_every_protocol(&proxy, &dir).await;
    assert_eq!(a.hits() - before, 5, "round robin shares again");
}

/// An endpoint whose checks fail gets no request from any protocol until they pass again.
#[tokio::test]
async fn an_endpoint_failing_its_checks_gets_no_traffic_until_it_passes() {
    let dir = TestDir::new("healthfail");
    let a = Controlled::start().await;
    let b = Controlled::start().await;
    let proxy = matrix_proxy(&dir, &[a.addr, b.addr], CHECKS).await;
    a.state.failing_checks.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "a marked unhealthy", || async {
        !endpoint_healthy(&proxy, a.addr).await
    })
    .await;
    ten_requests_over_every_protocol(&proxy, &dir).await;
    assert_eq!(a.hits(), 0);
    let admin = proxy.admin_addr().unwrap();
    let clusters = http(admin, get("/clusters"), false).await.unwrap();
    let view: serde_json::Value = serde_json::from_str(&clusters.body).unwrap();
    let endpoints = view["api"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["endpoint"], a.addr.to_string());
    assert_eq!(endpoints[0]["passes_health_checks"], false);
    assert_eq!(endpoints[1]["healthy"], true);

    a.state.failing_checks.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "a healthy again", || {
        endpoint_healthy(&proxy, a.addr)
    })
    .await;
    ten_requests_over_every_protocol(&proxy, &dir).await;
    assert_eq!(a.hits(), 5);
}

/// A health check of an HTTP/1.1 cluster goes over the client and idle pool that traffic
/// uses: the connection the check opened serves the next request, on the fast path and the
/// general path alike, so a passing check has exercised the code that carries the traffic.
#[tokio::test]
async fn health_checks_use_the_connection_pool_that_traffic_uses() {
    let dir = TestDir::new("checkpool");
    let a = Controlled::start().await;
    // One check at start, then none for a minute: nothing else touches the pool.
    let checks = "health_check = { path = \"/health\", interval_ms = 60000 }";
    let proxy = matrix_proxy(&dir, &[a.addr], checks).await;
    let idle = format!(
        "aegis_upstream_idle_connections{{cluster=\"api\",endpoint=\"{}\",region=\"\"}}",
        a.addr
    );
    eventually(
        Duration::from_secs(5),
        "the check's connection back in the pool",
        || async { counter(&proxy, &idle).await == 1.0 },
    )
    .await;
    assert_eq!(a.state.checks.load(Ordering::SeqCst), 1);
    for proto in [Proto::H1Fast, Proto::H1General, Proto::H2] {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    let opened = a.state.connections.load(Ordering::SeqCst);
    assert_eq!(
        opened, 1,
        "the check's connection carried every request after it"
    );
}

/// The matrix proxy in front of one cluster, `api`, of `endpoints` with `cluster` lines.
async fn matrix_proxy(
    dir: &TestDir,
    endpoints: &[SocketAddr],
    cluster: &str,
) -> aegis_proxy::Running {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let rest = format!(
        "[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [{}]\n{cluster}\n",
        list.join(", ")
    );
    start(&matrix_config("", &rest), dir).await
}

/// The value of `series` now, 0 when absent.
async fn counter(proxy: &aegis_proxy::Running, series: &str) -> f64 {
    metric(&metrics(proxy).await, series).unwrap_or(0.0)
}

/// RFC 9110 §9.2.2: only an idempotent request may be sent again after the upstream reset it;
/// a POST is answered 502 and reaches the origins exactly once. Over every protocol, so the
/// general path's retry loop is tested as well as the fast path's.
#[tokio::test]
async fn a_reset_is_retried_for_idempotent_requests_only() {
    let dir = TestDir::new("retryreset");
    let a = Controlled::start().await;
    let b = Controlled::start().await;
    a.state.reset.store(true, Ordering::SeqCst);
    // Ejection off, so every round-robin turn really reaches the resetting endpoint.
    let extra = "lb = \"round_robin\"\noutlier = { consecutive_failures = 0 }";
    let proxy = matrix_proxy(&dir, &[a.addr, b.addr], extra).await;
    let retries = "aegis_upstream_retries_total{cluster=\"api\",reason=\"reset\"}";
    for proto in PROTOCOLS {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let delivered = a.hits() + b.hits();
            let answer = proto.send(&proxy, &dir, &Sent::post("/", "order #1")).await;
            statuses.push(answer.expect("answered").status);
            let reached = a.hits() + b.hits() - delivered;
            assert_eq!(
                reached, 1,
                "{proto:?}: a POST reaches the origins exactly once"
            );
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 200, 502, 502, 502], "{proto:?}");

        let before = counter(&proxy, retries).await;
        for _ in 0..6 {
            let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
            assert_eq!(
                answer.status, 200,
                "{proto:?}: a reset GET is retried on the other endpoint"
            );
        }
        assert_eq!(counter(&proxy, retries).await - before, 3.0, "{proto:?}");
    }
}

/// A request that never reached an endpoint (connection refused) is retried on another, body
/// and all, over every protocol.
#[tokio::test]
async fn a_post_that_never_connected_is_retried_with_its_body() {
    let dir = TestDir::new("retryconnect");
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let b = Controlled::start().await;
    let extra = "lb = \"round_robin\"\noutlier = { consecutive_failures = 0 }";
    let proxy = matrix_proxy(&dir, &[dead_addr, b.addr], extra).await;
    let retries = "aegis_upstream_retries_total{cluster=\"api\",reason=\"connect\"}";
    for proto in PROTOCOLS {
        let (hits, before) = (b.hits(), counter(&proxy, retries).await);
        for _ in 0..4 {
            let answer = proto
                .send(&proxy, &dir, &Sent::post("/", "payload"))
                .await
                .unwrap();
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (200, "payload"),
                "{proto:?}"
            );
        }
        assert_eq!(b.hits() - hits, 4, "{proto:?}");
        assert_eq!(counter(&proxy, retries).await - before, 2.0, "{proto:?}");
    }
}

/// A cluster at `max_pending_requests` answers 503 with `Retry-After` at once, without
/// reaching the origin, and takes requests again once a slot frees; over every protocol.
#[tokio::test]
async fn a_full_cluster_sheds_with_503_and_retry_after() {
    let dir = TestDir::new("shed");
    let (gate, arrived, release) = gated_origin().await;
    let proxy = matrix_proxy(&dir, &[gate.addr], "max_pending_requests = 1").await;
    let shed_total = "aegis_upstream_requests_shed_total{cluster=\"api\"}";
    for proto in PROTOCOLS {
        let hits = gate.hits();
        let get = Sent::get("/");
        let first = proto.send(&proxy, &dir, &get);
        let second = async {
            arrived.notified().await;
            let shed = proto.send(&proxy, &dir, &get).await.unwrap();
            release.notify_one();
            shed
        };
        let (first, shed) = tokio::join!(first, second);
        assert_eq!(shed.status, 503, "{proto:?}");
        assert_eq!(shed.headers["retry-after"], "1", "{proto:?}");
        assert_eq!(first.unwrap().status, 200, "{proto:?}");
        assert_eq!(
            gate.hits() - hits,
            1,
            "{proto:?}: the shed request never reached the origin"
        );
        // The slot is free again once the first response has ended.
        release.notify_one();
        let again = proto.send(&proxy, &dir, &get).await.unwrap();
        assert_eq!(again.status, 200, "{proto:?}");
        arrived.notified().await; // the permit the second request's arrival left
    }
    assert_eq!(counter(&proxy, shed_total).await, 5.0);
}

#[tokio::test]
async fn connections_over_the_limit_are_answered_not_left_hanging() {
    let dir = TestDir::new("connlimit");
    let up = origin(Behaviour::Answer).await;
    let proxy = start(&config(None, &[up.addr], "max_connections = 1", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();

    // One keep-alive connection holds the only slot...
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(held))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // ...so the next client gets a 503 at once.
    let refused = raw(addr, b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");

    drop(sender);
    conn.await.unwrap().unwrap();
    eventually(Duration::from_secs(5), "slot released", || async {
        http(addr, get("/"), false)
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    let text = metrics(&proxy).await;
    let series = "aegis_downstream_connections_refused_total{listener=\"public\"}";
    assert!(metric(&text, series) >= Some(1.0), "{text}");
}

/// Health checks to a TLS upstream use the same post-quantum mTLS hop as requests.
#[tokio::test]
async fn health_checks_reach_tls_upstreams_over_the_pq_mtls_hop() {
    let dir = TestDir::new("healthtls");
    let origin = spawn_origin("o1").await.unwrap();
    let inner_tls =
        r#"{ cert = "server.pem", key = "server.key", pq_only = true, client_ca = "ca.pem" }"#;
    let inner = start(&config(Some(inner_tls), &[origin], "", ""), &dir).await;
    let inner_addr = inner.listener_addr("public").unwrap();
    let hop = "tls = { ca = \"ca.pem\", cert = \"client.pem\", key = \"client.key\", \
               server_name = \"localhost\", pq_only = true }\n\
               health_check = { path = \"/health\", interval_ms = 50, timeout_ms = 50 }";
    let outer = start(&config(None, &[inner_addr], "", hop), &dir).await;
    eventually(Duration::from_secs(5), "a passed check", || async {
        let text = metrics(&outer).await;
        let series = "aegis_upstream_health_checks_total{cluster=\"api\",result=\"pass\"}";
        metric(&text, series) >= Some(2.0)
    })
    .await;
    // No client request was sent: the inner proxy's PQ handshakes and requests are the checks.
    let text = metrics(&inner).await;
    let series = "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"http/1.1\"}";
    assert!(metric(&text, series) >= Some(1.0), "{text}");
    let series = "aegis_http_requests_total{listener=\"public\",route=\"routes[0]\",cluster=\"api\",status=\"200\",protocol=\"http/1.1\"}";
    assert!(metric(&text, series) >= Some(2.0), "{text}");
}

/// An origin that reports each request head's arrival and reads the whole body before it
/// answers 200.
async fn uploads_origin(arrived: tokio::sync::mpsc::UnboundedSender<()>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let _ = arrived.send(());
                async move {
                    req.into_body().collect().await?;
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Starts an upload of 100,000 declared bytes over `proto`, sends 10, waits until the origin
/// has the head, then abandons it as a client of that protocol does.
async fn abandon_upload(
    proto: Proto,
    proxy: &aegis_proxy::Running,
    dir: &TestDir,
    arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio::io::AsyncWriteExt;
    let post = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/upload"),
        ("content-length", "100000"),
    ];
    match proto {
        Proto::H1Fast | Proto::H1General => {
            let plain = proxy.listener_addr("plain").unwrap();
            let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
            let general = proto.raw_h1_lines();
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n{general}\r\n0123456789"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            arrivals.recv().await.unwrap();
        }
        Proto::H2c | Proto::H2 => {
            let mut io = proto.h2_io(proxy, dir).await.unwrap();
            h2raw::open(&mut io).await;
            let frames = [
                h2raw::headers(1, 0, &post),
                h2raw::frame(h2raw::DATA, 0, 1, b"0123456789"),
            ];
            io.write_all(&frames.concat()).await.unwrap();
            arrivals.recv().await.unwrap();
            let cancel = h2raw::frame(h2raw::RST_STREAM, 0, 1, &h2raw::CANCEL.to_be_bytes());
            io.write_all(&cancel).await.unwrap();
        }
        Proto::H3 => {
            let secure = proxy.listener_addr("secure").unwrap();
            let (_endpoint, connection, _) = quic_connect(secure, dir, QuicClient::default())
                .await
                .unwrap();
            let _control = h3raw::open_control_stream(&connection).await;
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            let frames = [h3raw::headers(&post), h3raw::data(b"0123456789")].concat();
            send.write_all(&frames).await.unwrap();
            arrivals.recv().await.unwrap();
            //= https://www.rfc-editor.org/rfc/rfc9114#section-4.1.1
            //# a client MAY abort a request [...] with the H3_REQUEST_CANCELLED error code
            send.reset(0x10c_u32.into()).unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await;
        }
    }
}

/// A client that abandons its upload is the client's failure on every protocol: 499 in the
/// record, no retry, and nothing counted against the endpoint. (On the general path it was a
/// 502 that counted as an upstream failure: a few aborted HTTP/2 uploads ejected a healthy
/// endpoint.)
#[tokio::test]
async fn abandoned_uploads_never_count_against_an_endpoint() {
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let a = uploads_origin(arrived.clone()).await;
    let b = uploads_origin(arrived).await;
    let dir = TestDir::new("abandoned-uploads");
    let rest = format!(
        "{}endpoints = [\"{a}\", \"{b}\"]\nlb = \"round_robin\"\noutlier = {{ consecutive_failures = 2 }}\n",
        one_cluster(a).replace(&format!("endpoints = [\"{a}\"]\n"), "")
    );
    let proxy = start(&matrix_config("", &rest), &dir).await;
    let mut abandoned = 0;
    for proto in PROTOCOLS {
        for _ in 0..4 {
            abandon_upload(proto, &proxy, &dir, &mut arrivals).await;
            abandoned += 1;
        }
        // Each abandoned upload ends up in the request counter, with the client's status.
        let mut counted = 0.0;
        for _ in 0..200 {
            let text = metrics(&proxy).await;
            counted = text
                .lines()
                .filter(|l| {
                    l.starts_with("aegis_http_requests_total{") && l.contains("status=\"499\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if counted >= f64::from(abandoned) {
                break;
            }
        }
        assert_eq!(
            counted,
            f64::from(abandoned),
            "{proto:?}: {}",
            metrics(&proxy).await
        );
        // The series exist from the start at 0; none may have moved.
        let text = metrics(&proxy).await;
        let ejections: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("aegis_upstream_ejections_total{"))
            .collect();
        assert_eq!(ejections.len(), 2, "{text}");
        assert!(
            ejections.iter().all(|l| l.ends_with(" 0")),
            "{proto:?} ejected an endpoint: {ejections:?}"
        );
    }
    let answer = Proto::H2
        .send(&proxy, &dir, &Sent::post("/upload", "whole"))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}
