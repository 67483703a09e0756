//! The HTTP/1.1 fast path: response framings, pooled upstream connections, pipelining, and the
//! hand-over to the general path for requests it does not take.

mod support;

use std::net::SocketAddr;

use aegis_proxy::demo::spawn_origin;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to(origin: SocketAddr, name: &str) -> (TestDir, aegis_proxy::Running) {
    let dir = TestDir::new(name);
    let proxy = start(&config(None, &[origin], "", ""), &dir).await;
    (dir, proxy)
}

#[tokio::test]
async fn chunked_close_delimited_and_interim_responses_pass_through() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(origin.addr, "framing").await;
    let addr = proxy.listener_addr("public").unwrap();
    let chunked = http(addr, get("/chunked"), false).await.unwrap();
    assert_eq!(
        (chunked.status, chunked.body.as_str()),
        (200, "hello world")
    );
    assert_eq!(chunked.headers["transfer-encoding"], "chunked");
    assert_eq!(chunked.headers["via"], "1.1 aegis");
    let close = http(addr, get("/close"), false).await.unwrap();
    assert_eq!((close.status, close.body.as_str()), (200, "until close"));
    assert_eq!(close.headers["connection"], "close");
    let interim = http(addr, get("/interim"), false).await.unwrap();
    assert_eq!((interim.status, interim.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn an_ambiguous_upstream_response_is_502() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(origin.addr, "ambiguous").await;
    let addr = proxy.listener_addr("public").unwrap();
    let answer = http(addr, get("/ambiguous"), false).await.unwrap();
    assert_eq!(answer.status, 502);
    assert!(!answer.body.contains("ok"), "{}", answer.body);
}

#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_once_the_origin_closed_them() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(origin.addr, "pool").await;
    let addr = proxy.listener_addr("public").unwrap();
    for path in ["/a", "/b", "/c"] {
        let answer = http(addr, get(path), false).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, path));
    }
    assert_eq!(origin.connections(), 1, "one pooled upstream connection");
    let text = metrics(&proxy).await;
    let series = format!(
        "aegis_upstream_idle_connections{{cluster=\"api\",endpoint=\"{}\",region=\"\"}}",
        origin.addr
    );
    assert_eq!(metric(&text, &series), Some(1.0), "{text}");
    let admin = proxy.admin_addr().unwrap();
    let clusters = http(admin, get("/clusters"), false).await.unwrap();
    let view: serde_json::Value = serde_json::from_str(&clusters.body).unwrap();
    assert_eq!(view["api"]["endpoints"][0]["idle_connections"], 1);
    let dropped = http(addr, get("/drop"), false).await.unwrap();
    assert_eq!((dropped.status, dropped.body.as_str()), (200, "drop"));
    // The pooled connection is dead now; the next request must not fail because of it.
    let next = http(addr, get("/d"), false).await.unwrap();
    assert_eq!((next.status, next.body.as_str()), (200, "/d"));
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = spawn_origin("o1").await.unwrap();
    let (_dir, proxy) = proxy_to(origin, "pipeline").await;
    let answer = raw(
        proxy.listener_addr("public").unwrap(),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    let one = answer.find("\"/one\"").unwrap();
    let two = answer.find("\"/two\"").unwrap();
    let three = answer.find("\"/three\"").unwrap();
    assert!(one < two && two < three, "{answer}");
}

/// A pipelined request that arrives while the one before it is at the upstream is kept and
/// answered after it (the fast path reads the client meanwhile, to see it close).
#[tokio::test]
async fn a_request_pipelined_while_the_first_is_upstream_is_answered_next() {
    let (gate, arrived, release) = gated_origin().await;
    let (_dir, proxy) = proxy_to(gate.addr, "pipeline-late").await;
    let mut client = TcpStream::connect(proxy.listener_addr("public").unwrap())
        .await
        .unwrap();
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    arrived.notified().await;
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    release.notify_one();
    // The bound only turns a lost request into a failure instead of a hang.
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), arrived.notified());
    second
        .await
        .expect("the pipelined request never reached the origin");
    release.notify_one();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(gate.hits(), 2);
}

#[tokio::test]
async fn a_request_the_fast_path_does_not_take_moves_the_connection_to_the_general_path() {
    let origin = spawn_origin("o1").await.unwrap();
    let (_dir, proxy) = proxy_to(origin, "handover").await;
    let answer = raw(
        proxy.listener_addr("public").unwrap(),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    assert!(
        answer.contains("abc"),
        "the chunked body was echoed: {answer}"
    );
    assert!(answer.contains("\"/three\""), "{answer}");
}

#[tokio::test]
async fn forwarding_headers_are_rewritten_on_the_fast_path() {
    let origin = spawn_origin("o1").await.unwrap();
    let (_dir, proxy) = proxy_to(origin, "fast-headers").await;
    let request = Request::get("/h?x=1")
        .header("host", "shop.example")
        .header("connection", "keep-alive")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("via", "1.0 edge")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = http(proxy.listener_addr("public").unwrap(), request, false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(seen["host"], "shop.example");
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "no trusted proxy hops: the client's claim is replaced"
    );
    assert_eq!(
        seen["x-forwarded-proto"], "http",
        "the client's claim is replaced"
    );
    assert_eq!(seen["via"], "1.0 edge, 1.1 aegis");
    let headers = seen["headers"].as_array().unwrap();
    assert!(!headers.iter().any(|h| h == "connection"), "{headers:?}");
}

#[tokio::test]
async fn keep_alive_and_pipelining_over_tls() {
    let dir = TestDir::new("fast-tls");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let client = client_tls(dir.roots(), Groups::PqOnly, &[b"http/1.1"]);
    let tcp = TcpStream::connect(proxy.listener_addr("public").unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap();
    // One request, its answer read to the end of the body, then the connection waits idle.
    tls.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"}\n") {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&first).contains("\"/one\""));
    // Then two pipelined in one TLS record.
    tls.write_all(
        b"GET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(rest.matches("HTTP/1.1 200 OK").count(), 2, "{rest}");
    assert!(rest.find("\"/two\"").unwrap() < rest.find("\"/three\"").unwrap());
}
