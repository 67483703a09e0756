//! HTTP/2 clients in front of an HTTP/1.1 origin: requests without a body go over the
//! endpoint's idle pool from the stream's own task, with each response framing decoded.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// An HTTP/1.1 origin that echoes each request's body (`Content-Length` or chunked, RFC 9112
/// §6.3), counting the connections it accepts, and answers `/early` with a 413 before it reads
/// the body (which it then drains, so nothing is reset).
async fn body_echo_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counted_origin(echo_bodies).await
}

async fn echo_bodies(stream: TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::io::BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read_until(b'\n', &mut head).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if head.starts_with("post /early") {
            let answer = "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 5\r\nconnection: close\r\n\r\nearly";
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.get_mut().shutdown().await;
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            return;
        }
        let mut body = Vec::new();
        if let Some(length) = field("content-length:") {
            body.resize(length.parse().unwrap(), 0);
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
        } else if field("transfer-encoding:").as_deref() == Some("chunked") {
            loop {
                let mut size = String::new();
                if stream.read_line(&mut size).await.unwrap_or(0) == 0 {
                    return;
                }
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                if size == 0 {
                    // The trailer section, up to its blank line.
                    let mut line = String::new();
                    while stream.read_line(&mut line).await.unwrap_or(0) > 2 {
                        line.clear();
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size + 2, 0);
                stream.read_exact(&mut body[start..]).await.unwrap();
                body.truncate(start + size);
            }
        }
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        let sent = stream.write_all(&[answer.as_bytes(), &body].concat()).await;
        if sent.is_err() {
            return;
        }
    }
}

/// Requests with a body go over the same pooled HTTP/1.1 client as every other request to an
/// HTTP/1.1 cluster, whichever protocol the client spoke: one upstream connection carries
/// them all (with hyper-util's client for bodies, there were two pools).
#[tokio::test]
async fn requests_with_bodies_use_the_one_pool_on_every_protocol() {
    let (origin, connections) = body_echo_origin().await;
    let dir = TestDir::new("bodies-pool");
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    for proto in PROTOCOLS {
        for sent in [Sent::post("/upload", "hello, origin"), Sent::get("/after")] {
            let answer = proto.send(&proxy, &dir, &sent).await.unwrap();
            assert_eq!(answer.status, 200, "{proto:?} {}", sent.path);
            assert_eq!(answer.body.as_bytes(), &sent.body[..], "{proto:?}");
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// A response that arrives before the request body is complete is forwarded, and the rest of
/// the body still goes out (the origin drains it), on every protocol; the connection, left
/// mid-request, is not pooled.
//= https://www.rfc-editor.org/rfc/rfc9112#section-9.3
#[tokio::test]
async fn a_response_before_the_end_of_the_body_is_forwarded_on_every_protocol() {
    let (origin, connections) = body_echo_origin().await;
    let dir = TestDir::new("bodies-early");
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let big: &'static str = Box::leak("x".repeat(8 << 20).into_boxed_str());
    for (n, proto) in PROTOCOLS.into_iter().enumerate() {
        // Once an HTTP/3 response is complete, the proxy stops reading the request stream
        // (STOP_SENDING, H3_NO_ERROR: RFC 9114 §4.1), which the test client takes as a failed
        // request; it gets a body its flow-control window takes at once.
        let body = match proto {
            Proto::H3 => &big[..64 << 10],
            _ => big,
        };
        let answer = proto
            .send(&proxy, &dir, &Sent::post("/early", body))
            .await
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (413, "early"),
            "{proto:?}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), n + 1, "{proto:?}");
    }
}
