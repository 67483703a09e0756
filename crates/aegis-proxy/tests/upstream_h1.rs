//! HTTP/2 clients in front of an HTTP/1.1 origin: requests without a body go over the
//! endpoint's idle pool from the stream's own task, with each response framing decoded.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;

/// An h2c connection to the proxy.
async fn h2c(proxy: &aegis_proxy::Running) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(proxy.listener_addr("public").unwrap())
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A GET on `sender`: status, body and trailers.
async fn fetch(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
) -> anyhow::Result<(u16, String, Option<HeaderMap>)> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    Ok((status, body, trailers))
}

async fn proxy_to(origin: &Scripted, name: &str) -> (TestDir, aegis_proxy::Running) {
    let dir = TestDir::new(name);
    let proxy = start(&config(None, &[origin.addr], "", ""), &dir).await;
    (dir, proxy)
}

#[tokio::test]
async fn chunked_bodies_are_decoded_with_their_trailers() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(&origin, "h2-chunked").await;
    let mut h2 = h2c(&proxy).await;
    let (status, body, trailers) = fetch(&mut h2, "GET", "/chunked").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello world"));
    let trailers = trailers.expect("the origin's trailer section");
    assert_eq!(trailers["x-trailer"], "t");
    // The connection went back to the pool once the trailers were read.
    let (status, body, _) = fetch(&mut h2, "GET", "/after").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "/after"));
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn close_delimited_interim_and_head_responses() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(&origin, "h2-framings").await;
    let mut h2 = h2c(&proxy).await;
    let (status, body, _) = fetch(&mut h2, "GET", "/close").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "until close"));
    let (status, body, _) = fetch(&mut h2, "GET", "/interim").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    // A HEAD response has no body whatever its content-length says, and the connection stays
    // usable: the next answer is not taken for the HEAD's body.
    let (status, body, _) = fetch(&mut h2, "HEAD", "/head").await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body, _) = fetch(&mut h2, "GET", "/next").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "/next"));
    assert_eq!(
        origin.connections(),
        2,
        "only the close-delimited one was not reused"
    );
}

#[tokio::test]
async fn pooled_connections_are_reused_and_replaced_once_the_origin_closed_them() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(&origin, "h2-pool").await;
    // HTTP/1.1 clients (the fast path) and HTTP/2 clients share the endpoint's idle pool.
    let first = http(proxy.listener_addr("public").unwrap(), get("/h1"), false)
        .await
        .unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "/h1"));
    let mut h2 = h2c(&proxy).await;
    for path in ["/a", "/b", "/c"] {
        let (status, body, _) = fetch(&mut h2, "GET", path).await.unwrap();
        assert_eq!((status, body.as_str()), (200, path));
    }
    assert_eq!(origin.connections(), 1, "one pooled upstream connection");
    let (status, body, _) = fetch(&mut h2, "GET", "/drop").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "drop"));
    let (status, body, _) = fetch(&mut h2, "GET", "/d").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "/d"));
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn a_bad_upstream_response_is_502_and_a_bad_body_resets_the_stream() {
    let origin = Scripted::start().await;
    let (_dir, proxy) = proxy_to(&origin, "h2-bad").await;
    let mut h2 = h2c(&proxy).await;
    let (status, body, _) = fetch(&mut h2, "GET", "/ambiguous").await.unwrap();
    assert_eq!(status, 502);
    assert!(!body.contains("ok"), "{body}");
    // The head was fine and went out; the chunk that breaks the framing ends the stream with
    // an error instead of a body the client would take as complete.
    let broken = fetch(&mut h2, "GET", "/bad-chunk").await;
    assert!(broken.is_err(), "{broken:?}");
    let (status, body, _) = fetch(&mut h2, "GET", "/fine").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "/fine"));
    assert_eq!(
        origin.connections(),
        3,
        "neither broken connection was pooled"
    );
}
