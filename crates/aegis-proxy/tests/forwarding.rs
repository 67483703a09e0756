//! What reaches the origin and what comes back: headers, protocols, balancing, access log.

mod support;

use aegis_proxy::demo::spawn_origin;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_ones_removed() {
    let dir = TestDir::new("headers");
    let origin = spawn_origin("o1").await.unwrap();
    let trusted = "trusted_proxy_hops = 1";
    let proxy = start(&config(None, &[origin], trusted, ""), &dir).await;
    let request = Request::get("/h?x=1")
        .header("host", "shop.example")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-kept", "yes")
        .body(Full::default())
        .unwrap();
    let answer = http(proxy.listener_addr("public").unwrap(), request, false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(seen["host"], "shop.example");
    assert_eq!(seen["path"], "/h");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["via"], "1.1 aegis");
    let headers: Vec<&str> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(headers.contains(&"x-kept"), "{headers:?}");
    for hop in ["connection", "x-secret", "keep-alive"] {
        assert!(!headers.contains(&hop), "{hop} forwarded: {headers:?}");
    }
    assert_eq!(answer.headers["via"], "1.1 aegis");
}

#[tokio::test]
async fn h2c_prior_knowledge_on_a_plain_listener() {
    let dir = TestDir::new("h2c");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(None, &[origin], "", ""), &dir).await;
    let request = Request::get("http://localhost/x")
        .body(Full::default())
        .unwrap();
    let answer = http(proxy.listener_addr("public").unwrap(), request, true)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("\"via\":\"2 aegis\""),
        "{}",
        answer.body
    );
    let text = metrics(&proxy).await;
    let series = "aegis_http_requests_total{listener=\"public\",route=\"routes[0]\",cluster=\"api\",status=\"200\",protocol=\"h2\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{text}");
}

/// The origin a demo origin's JSON echo names.
fn origin_of(answer: &Answer) -> String {
    let seen: serde_json::Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    seen["origin"].as_str().unwrap().to_owned()
}

/// Round robin alternates whatever protocol each request arrives over.
#[tokio::test]
async fn round_robin_alternates_between_endpoints() {
    let dir = TestDir::new("rr");
    let a = spawn_origin("a").await.unwrap();
    let b = spawn_origin("b").await.unwrap();
    let rest = format!(
        "[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nlb = \"round_robin\"\nendpoints = [\"{a}\", \"{b}\"]\n"
    );
    let proxy = start(&matrix_config("", &rest), &dir).await;
    let mut order = Vec::new();
    for proto in PROTOCOLS.iter().chain(&PROTOCOLS) {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        order.push(origin_of(&answer));
    }
    assert_eq!(order, ["a", "b"].repeat(5));
}

/// Routes match host (a port and letter case aside) and path prefix, in order, on every
/// protocol: `Host` for HTTP/1.1, `:authority` for HTTP/2 and HTTP/3.
#[tokio::test]
async fn routes_match_host_and_path_in_order() {
    let dir = TestDir::new("routes");
    let api = spawn_origin("api").await.unwrap();
    let web = spawn_origin("web").await.unwrap();
    let rest = format!(
        r#"
[[routes]]
host = "*.example.com"
path_prefix = "/api/"
cluster = "api"

[[routes]]
cluster = "web"

[clusters.api]
endpoints = ["{api}"]

[clusters.web]
endpoints = ["{web}"]
"#
    );
    let proxy = start(&matrix_config("", &rest), &dir).await;
    let cases = [
        ("shop.example.com", "/api/v1", "api"),
        ("shop.example.com:8443", "/api/v1", "api"),
        ("Shop.Example.COM", "/api/v1", "api"),
        ("shop.example.com", "/index.html", "web"),
        ("example.com", "/api/v1", "web"),
    ];
    for proto in PROTOCOLS {
        for (host, path, expected) in cases {
            let sent = Sent::get(path).authority(host);
            let answer = proto.send(&proxy, &dir, &sent).await.unwrap();
            assert_eq!(origin_of(&answer), expected, "{proto:?} {host}{path}");
        }
    }
}

/// A 3 MiB upload is streamed to the origin and its echo back, over every protocol.
#[tokio::test]
async fn post_bodies_stream_both_ways() {
    let dir = TestDir::new("echo");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let body = Bytes::from("x".repeat(3 * 1024 * 1024));
    for proto in PROTOCOLS {
        let sent = Sent {
            body: body.clone(),
            ..Sent::post("/echo", "")
        };
        let answer = proto.send(&proxy, &dir, &sent).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
        assert_eq!(answer.body.len(), body.len(), "{proto:?}");
    }
}

#[tokio::test]
async fn the_demo_serves_https_and_routes_green_traffic() {
    let dir = TestDir::new("demo");
    let options = aegis_proxy::demo::DemoOptions {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        dir: dir.path.join("demo"),
    };
    let proxy = aegis_proxy::demo::start(&options).await.unwrap();
    let addr = proxy.listener_addr("demo").unwrap();
    let roots = aegis_tls::pem::load_roots(&options.dir.join("ca.pem")).unwrap();
    let client = client_tls(roots, Groups::PqOnly, &[b"h2"]);
    let answer = https(addr, client, get("/green/hello")).await.unwrap();
    assert_eq!((answer.status, answer.group), (200, Some("X25519MLKEM768")));
    assert_eq!(answer.headers["x-aegis-region"], "eu-north");
    assert!(answer.headers.contains_key("alt-svc"));
    let text = aegis_proxy::demo::instructions(&options, &proxy);
    assert!(
        text.contains(&format!("https://{addr}/green/hello")),
        "{text}"
    );
}

/// An HTTP/1.1 origin that sends back, as its body, the raw bytes of the request it received
/// (head, chunked body and trailer section), once the request is complete.
async fn raw_echo_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                // A chunked request ends with the last chunk and the trailer section's blank line.
                while !(seen.windows(5).any(|w| w == b"\r\n0\r\n") && seen.ends_with(b"\r\n\r\n")) {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    seen.len()
                );
                let _ = stream.write_all(&[head.as_bytes(), &seen].concat()).await;
            });
        }
    });
    addr
}

/// Request trailers reach an HTTP/1.1 origin as the chunked body's trailer section, from every
/// protocol: HTTP/2 and HTTP/3 trailers carry no `Trailer` announcement, which hyper's client
/// required before it would send any (patched: `patches/README.md`).
//= https://www.rfc-editor.org/rfc/rfc9112#section-7.1.2
#[tokio::test]
async fn request_trailers_are_forwarded_to_http1_origins() {
    use support::{h2raw, h3raw};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TestDir::new("trailers");
    let proxy = start(
        &matrix_config("", &one_cluster(raw_echo_origin().await)),
        &dir,
    )
    .await;
    let post = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/t"),
    ];
    let mut wrong = Vec::new();
    for proto in PROTOCOLS {
        let echoed = match proto {
            Proto::H1Fast | Proto::H1General => {
                let general = proto.raw_h1_lines();
                let request = format!(
                    "POST /t HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n{general}\
                     connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n"
                );
                let mut tcp = tokio::net::TcpStream::connect(proxy.listener_addr("plain").unwrap())
                    .await
                    .unwrap();
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer).await;
                String::from_utf8_lossy(&answer).into_owned()
            }
            Proto::H2c | Proto::H2 => {
                let mut io = proto.h2_io(&proxy, &dir).await.unwrap();
                let frames = [
                    h2raw::headers(1, 0, &post),
                    h2raw::frame(h2raw::DATA, 0, 1, b"hello"),
                    h2raw::headers(1, h2raw::END_STREAM, &[("x-checksum", "1")]),
                ];
                h2raw::open(&mut io).await;
                io.write_all(&frames.concat()).await.unwrap();
                let mut body = Vec::new();
                loop {
                    let frames = h2raw::read_until_end(&mut io).await;
                    let Some(last) = frames.last().cloned() else {
                        break;
                    };
                    for frame in frames
                        .iter()
                        .filter(|f| f.kind == h2raw::DATA && f.stream == 1)
                    {
                        body.extend_from_slice(&frame.payload);
                    }
                    if last.stream == 1 && last.flags & h2raw::END_STREAM != 0 {
                        break;
                    }
                    if matches!(last.kind, h2raw::GOAWAY | h2raw::RST_STREAM) {
                        break;
                    }
                }
                String::from_utf8_lossy(&body).into_owned()
            }
            Proto::H3 => {
                let secure = proxy.listener_addr("secure").unwrap();
                let (_endpoint, connection, _) = quic_connect(secure, &dir, QuicClient::default())
                    .await
                    .unwrap();
                let _control = h3raw::open_control_stream(&connection).await;
                let frames = [
                    h3raw::headers(&post),
                    h3raw::data(b"hello"),
                    h3raw::headers(&[("x-checksum", "1")]),
                ];
                let (mut send, mut recv) = connection.open_bi().await.unwrap();
                send.write_all(&frames.concat()).await.unwrap();
                send.finish().unwrap();
                let bytes = recv.read_to_end(1 << 16).await.unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let trailer = echoed.find("\r\n0\r\n").map(|at| &echoed[at..]);
        if !trailer.is_some_and(|t| t.to_ascii_lowercase().contains("x-checksum: 1\r\n")) {
            wrong.push(format!("{proto:?}: {echoed:?}"));
        }
    }
    assert_eq!(wrong, Vec::<String>::new());
}

/// An origin (HTTP/1.1 and h2c) that sends two 103 Early Hints, then `200 ok`. Its HTTP/1.1
/// hints also carry a hop-by-hop field and one that `Connection` names, which must not travel.
async fn early_hints_origin() -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(|mut request: Request<hyper::body::Incoming>| {
                    let hints = request.body_mut().take_informational();
                    let h1 = request.version() == http::Version::HTTP_11;
                    async move {
                        for (i, link) in ["</a.css>; rel=preload", "</b.js>; rel=preload"]
                            .into_iter()
                            .enumerate()
                        {
                            let mut hint =
                                http::Response::builder().status(103).header("link", link);
                            if h1 && i == 0 {
                                hint = hint
                                    .header("connection", "x-hop")
                                    .header("x-hop", "1")
                                    .header("keep-alive", "timeout=5");
                            }
                            let sent = hints.as_ref().map(|h| h.send(hint.body(()).unwrap()));
                            assert!(matches!(sent, Some(Ok(()))), "{sent:?}");
                        }
                        let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// RFC 9110 §15.2 (a proxy forwards 1xx responses) and RFC 8297: an upstream's 103 Early Hints
/// reach the client before the final response, in order and without hop-by-hop fields, over
/// every protocol, from HTTP/1.1 and HTTP/2 upstreams, for requests with and without a body.
#[tokio::test]
async fn early_hints_reach_the_client_over_every_protocol() {
    let dir = TestDir::new("early-hints");
    let origin = early_hints_origin().await;
    for upstream in ["http1", "http2"] {
        let rest = format!("{}protocol = \"{upstream}\"\n", one_cluster(origin));
        let proxy = start(&matrix_config("", &rest), &dir).await;
        for proto in PROTOCOLS {
            for sent in [Sent::get("/page"), Sent::post("/form", "a=1")] {
                let case = format!("{proto:?} {} to {upstream}", sent.method);
                let answer = proto.send(&proxy, &dir, &sent).await.expect(&case);
                assert_eq!((answer.status, answer.body.as_str()), (200, "ok"), "{case}");
                let links: Vec<_> = answer
                    .interim
                    .iter()
                    .map(|(status, headers)| (*status, headers.get("link").cloned()))
                    .collect();
                let expected = ["</a.css>; rel=preload", "</b.js>; rel=preload"]
                    .map(|l| (103, Some(http::HeaderValue::from_static(l))));
                assert_eq!(links, expected, "{case}");
                for (_, headers) in &answer.interim {
                    for hop in ["x-hop", "keep-alive", "connection"] {
                        assert!(!headers.contains_key(hop), "{case}: {hop} in {headers:?}");
                    }
                }
            }
        }
    }
}

/// RFC 9110 §15.2: a server must not send a 1xx response to an HTTP/1.0 client, so the
/// upstream's hints stop at the proxy.
#[tokio::test]
async fn http10_clients_get_no_early_hints() {
    let dir = TestDir::new("early-hints-10");
    let origin = early_hints_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let plain = proxy.listener_addr("plain").unwrap();
    let answer = raw(plain, b"GET /page HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(!answer.contains(" 103 "), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}
