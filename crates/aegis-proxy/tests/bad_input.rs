//! Bad input gets a clear status, is never forwarded, and costs no connection or task.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn plain_proxy(
    origin: &Origin,
    extra_listener: &str,
    extra_cluster: &str,
) -> (TestDir, aegis_proxy::Running) {
    let dir = TestDir::new("bad");
    let proxy = start(
        &config(None, &[origin.addr], extra_listener, extra_cluster),
        &dir,
    )
    .await;
    (dir, proxy)
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn ambiguous_framing_is_rejected_and_never_forwarded() {
    let origin = origin(Behaviour::Answer).await;
    let (_dir, proxy) = plain_proxy(&origin, "", "").await;
    let addr = proxy.listener_addr("public").unwrap();
    let cases: [&[u8]; 6] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for case in cases {
        let response = raw(addr, case).await;
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 400 Bad Request",
            "{}\n---\n{response}",
            String::from_utf8_lossy(case)
        );
    }
    let response = raw(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 400 Bad Request",
        "missing host"
    );
    let response = raw(addr, b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 400 Bad Request",
        "bad target"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let origin = origin(Behaviour::Answer).await;
    let (_dir, proxy) = plain_proxy(&origin, "max_header_bytes = 8192", "").await;
    let addr = proxy.listener_addr("public").unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let response = raw(addr, big.as_bytes()).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let origin = origin(Behaviour::Answer).await;
    let (_dir, proxy) = plain_proxy(&origin, "max_request_body_bytes = 1000", "").await;
    let addr = proxy.listener_addr("public").unwrap();

    let declared = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    );
    assert_eq!(
        status_line(&raw(addr, declared.as_bytes()).await),
        "HTTP/1.1 413 Payload Too Large"
    );

    // Chunked: the limit is only known to be exceeded while streaming.
    let chunk = "x".repeat(600);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert_eq!(
        status_line(&raw(addr, chunked.as_bytes()).await),
        "HTTP/1.1 413 Payload Too Large"
    );

    let small = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(
        status_line(&raw(addr, small.as_bytes()).await),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_headers_are_cut_off() {
    let origin = origin(Behaviour::Answer).await;
    let (_dir, proxy) = plain_proxy(&origin, "header_read_timeout_ms = 2000", "").await;
    let addr = proxy.listener_addr("public").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    // Paused time jumps to the proxy's timer while the client waits; the proxy must close.
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection still open after 30s");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dir = TestDir::new("refused");
    let proxy = start(&config(None, &[dead], "", ""), &dir).await;
    let answer = http(proxy.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 502);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "aegis_upstream_errors_total{cluster=\"api\",reason=\"connect\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn upstream_that_never_finishes_tls_is_502_after_the_connect_timeout() {
    // Accepts TCP but never speaks TLS.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let dir = TestDir::new("tlstimeout");
    let hop = "connect_timeout_ms = 200\ntls = { ca = \"ca.pem\", server_name = \"localhost\" }";
    let proxy = start(&config(None, &[addr], "", hop), &dir).await;
    let answer = http(proxy.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 502);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "aegis_upstream_errors_total{cluster=\"api\",reason=\"connect_timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );
    drop(silent);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let origin = origin(Behaviour::Hang).await;
    let (_dir, proxy) = plain_proxy(&origin, "", "request_timeout_ms = 200").await;
    let answer = http(proxy.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 504);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn unmatched_route_is_404() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("noroute");
    let toml = config(None, &[origin.addr], "", "")
        .replace("[[routes]]", "[[routes]]\nhost = \"api.test\"");
    let proxy = start(&toml, &dir).await;
    let answer = http(proxy.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 404);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn no_connection_outlives_bad_requests() {
    let origin = origin(Behaviour::Answer).await;
    let (_dir, proxy) = plain_proxy(&origin, "", "").await;
    let addr = proxy.listener_addr("public").unwrap();
    for _ in 0..20 {
        raw(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        )
        .await;
        raw(addr, b"garbage\r\n\r\n").await;
    }
    // Each `raw` call read until the proxy closed; the gauge must be back at zero.
    let series = "aegis_downstream_connections_active{listener=\"public\"}";
    let mut active = None;
    for _ in 0..100 {
        active = metric(&metrics(&proxy).await, series);
        if active == Some(0.0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(active, Some(0.0));
}

/// The server preface (an empty SETTINGS) then GOAWAY(PROTOCOL_ERROR, last stream 0).
fn is_goaway_protocol_error(bytes: &[u8]) -> bool {
    bytes.len() >= 26
        && bytes[..9] == [0, 0, 0, 4, 0, 0, 0, 0, 0]
        && bytes[12] == 7
        && bytes[18..26] == [0, 0, 0, 0, 0, 0, 0, 1]
}

//= https://www.rfc-editor.org/rfc/rfc9113#section-3.4
//# Clients and servers MUST treat an invalid connection preface as a connection error
//# (Section 5.4.1) of type PROTOCOL_ERROR.
#[tokio::test]
async fn an_invalid_h2_preface_gets_goaway_on_h2c_and_over_tls() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("preface");
    let proxy = start(
        &matrix_config("", &{
            let endpoint = origin.addr;
            format!(
                "[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{endpoint}\"]\n"
            )
        }),
        &dir,
    )
    .await;
    let plain = proxy.listener_addr("plain").unwrap();
    for invalid in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ"[..],
        b"INVALID CONNECTION PREFACE",
    ] {
        let answer = raw(plain, invalid).await;
        assert!(is_goaway_protocol_error(answer.as_bytes()), "{answer:?}");
    }
    // HTTP/1 with an unsupported version is still answered in HTTP/1.
    let answer = raw(plain, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");

    let tcp = tokio::net::TcpStream::connect(proxy.listener_addr("secure").unwrap())
        .await
        .unwrap();
    let tls = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
    let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(tls)
        .connect(server, tcp)
        .await
        .unwrap();
    tls.write_all(b"INVALID CONNECTION PREFACE").await.unwrap();
    let mut answer = Vec::new();
    // A clean close: read_to_end fails on a TLS stream cut without close_notify.
    tls.read_to_end(&mut answer).await.expect("close_notify");
    assert!(is_goaway_protocol_error(&answer), "{answer:?}");
}

async fn matrix_in_front_of(origin: std::net::SocketAddr, dir: &TestDir) -> aegis_proxy::Running {
    let rest =
        format!("[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{origin}\"]\n");
    start(&matrix_config("", &rest), dir).await
}

//= https://www.rfc-editor.org/rfc/rfc9110#section-15
#[tokio::test]
async fn an_upstream_status_outside_100_to_599_is_a_502_on_every_protocol() {
    let scripted = Scripted::start().await;
    let dir = TestDir::new("status600");
    let proxy = matrix_in_front_of(scripted.addr, &dir).await;
    for proto in PROTOCOLS {
        let answer = proto
            .send(&proxy, &dir, &Sent::get("/status-600"))
            .await
            .unwrap();
        assert_eq!(answer.status, 502, "{proto:?}: {answer:?}");
    }
}

/// `Transfer-Encoding: gzip, chunked` keeps its gzip for HTTP/1.1 clients; HTTP/2 and HTTP/3
/// have no transfer codings, so the response cannot be forwarded faithfully: 502.
//= https://www.rfc-editor.org/rfc/rfc9112#section-6.1
//= https://www.rfc-editor.org/rfc/rfc9113#section-8.2.2
#[tokio::test]
async fn a_transfer_coding_besides_chunked_is_never_lost() {
    let scripted = Scripted::start().await;
    let dir = TestDir::new("gzipchunked");
    let proxy = matrix_in_front_of(scripted.addr, &dir).await;
    for proto in PROTOCOLS {
        let answer = proto
            .send(&proxy, &dir, &Sent::get("/gzip-chunked"))
            .await
            .unwrap();
        match proto {
            Proto::H1Fast | Proto::H1General => {
                assert_eq!(answer.status, 200, "{proto:?}");
                assert_eq!(
                    answer.headers["transfer-encoding"], "gzip, chunked",
                    "{proto:?}"
                );
                assert_eq!(answer.body, "hello", "{proto:?}");
            }
            _ => assert_eq!(answer.status, 502, "{proto:?}: {answer:?}"),
        }
    }
}

async fn limited_proxy(dir: &TestDir, origin: &Origin) -> aegis_proxy::Running {
    let rest = one_cluster(origin.addr);
    start(&matrix_config("max_request_body_bytes = 1000", &rest), dir).await
}

/// A body over the limit gets a 413 the client reads, on every protocol.
#[tokio::test]
async fn a_413_is_readable_on_every_protocol() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("bad-413");
    let proxy = limited_proxy(&dir, &origin).await;
    let big: &'static str = Box::leak("x".repeat(200_000).into_boxed_str());
    for proto in PROTOCOLS {
        let answer = proto
            .send(&proxy, &dir, &Sent::post("/", big))
            .await
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (413, "Payload Too Large\n"),
            "{proto:?}"
        );
    }
    assert_eq!(origin.hits(), 0);
}

/// On HTTP/2 the rest of a refused upload is read and discarded, so the client finishes
/// sending and its stream ends without RST_STREAM: RFC 9113 §8.1 lets a server that answered
/// early reset with NO_ERROR, but curl and others then report an error instead of the 413.
#[tokio::test]
async fn a_refused_h2_upload_is_drained_not_reset() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("bad-413-drain");
    let proxy = limited_proxy(&dir, &origin).await;
    for proto in [Proto::H2c, Proto::H2] {
        let io = proto.h2_io(&proxy, &dir).await.unwrap();
        let (mut client, connection) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let post = http::Request::post("http://localhost/")
            .header("content-length", "200000")
            .body(())
            .unwrap();
        let (response, mut upload) = client.send_request(post, false).unwrap();
        upload.send_data(vec![b'x'; 200_000].into(), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 413, "{proto:?}");
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        // A second request on the connection: any reset of the first has arrived before its
        // response, and there is none.
        let get = http::Request::get("http://localhost/").body(()).unwrap();
        let (response, _) = client.send_request(get, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200, "{proto:?}");
        let reset = std::future::poll_fn(|cx| std::task::Poll::Ready(upload.poll_reset(cx))).await;
        assert!(reset.is_pending(), "{proto:?}: {reset:?}");
    }
    assert_eq!(origin.hits(), 2);
}
