//! HTTP/3 over QUIC with post-quantum key exchange, through the same routes and clusters.

mod support;

use aegis_proxy::demo::spawn_origin;
use bytes::Bytes;
use http::Method;
use support::*;

async fn h3_proxy(tls: &str, dir: &TestDir) -> aegis_proxy::Running {
    let origin = spawn_origin("o1").await.unwrap();
    start(&config(Some(tls), &[origin], TLS_H3, ""), dir).await
}

#[tokio::test]
async fn get_and_large_post_over_h3_with_the_hybrid_group_at_both_mtus() {
    let dir = TestDir::new("h3");
    let proxy = h3_proxy(TLS, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    for (mtu, gso) in [(1200, true), (1200, false), (1452, true)] {
        let client = QuicClient {
            mtu,
            gso,
            ..QuicClient::default()
        };
        let (_endpoint, connection, group) = quic_connect(addr, &dir, client).await.unwrap();
        assert_eq!(group, Some("X25519MLKEM768"), "mtu {mtu} gso {gso}");

        let mut h3 = H3Client::new(&connection).await.unwrap();
        let answer = h3
            .request(Method::GET, "/hello", Bytes::new())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            answer.body.contains("\"via\":\"3 aegis\""),
            "{}",
            answer.body
        );

        let body = Bytes::from(vec![b'q'; 4 * 1024 * 1024]);
        let answer = h3
            .request(Method::POST, "/echo", body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body.len(), body.len());
    }
    let text = metrics(&proxy).await;
    let series =
        "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"h3\"}";
    assert_eq!(metric(&text, series), Some(3.0), "{text}");
    let requests = "aegis_http_requests_total{listener=\"public\",route=\"routes[0]\",cluster=\"api\",status=\"200\",protocol=\"h3\"}";
    assert_eq!(metric(&text, requests), Some(6.0), "{text}");
}

#[tokio::test]
async fn classical_quic_client_gets_x25519_and_pq_only_refuses_it() {
    let dir = TestDir::new("h3classic");
    let proxy = h3_proxy(TLS, &dir).await;
    let client = QuicClient {
        groups: Groups::Classical,
        ..QuicClient::default()
    };
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, client).await.unwrap();
    let mut h3 = H3Client::new(&connection).await.unwrap();
    assert_eq!(
        h3.request(Method::GET, "/", Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    let text = metrics(&proxy).await;
    let series = "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519\",protocol=\"h3\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{text}");

    let strict = h3_proxy(TLS_PQ_ONLY, &dir).await;
    let addr = strict.listener_addr("public").unwrap();
    assert!(quic_connect(addr, &dir, client).await.is_err());
    let text = metrics(&strict).await;
    let failures =
        "aegis_tls_handshake_failures_total{listener=\"public\",reason=\"no_shared_group\"}";
    // The server counts the failure when it processes the client's handshake; poll briefly.
    let mut seen = metric(&text, failures);
    for _ in 0..100 {
        if seen == Some(1.0) {
            break;
        }
        tokio::task::yield_now().await;
        seen = metric(&metrics(&strict).await, failures);
    }
    assert_eq!(seen, Some(1.0));
    let client = QuicClient::default();
    let (_endpoint, _connection, group) = quic_connect(addr, &dir, client).await.unwrap();
    assert_eq!(group, Some("X25519MLKEM768"));
}

#[tokio::test]
async fn tcp_responses_advertise_h3() {
    let dir = TestDir::new("altsvc");
    let proxy = h3_proxy(TLS, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let client = client_tls(dir.roots(), Groups::PqOnly, &[alpn]);
        let answer = https(addr, client, get("/")).await.unwrap();
        let expected = format!("h3=\":{}\"; ma=86400", addr.port());
        assert_eq!(answer.headers["alt-svc"], expected.as_str());
    }
}

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_connections() {
    let dir = TestDir::new("h3garbage");
    let proxy = h3_proxy(TLS, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [1, 20, 1200, 1500] {
        let junk: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        socket.send_to(&junk, addr).await.unwrap();
    }
    // A long-header Initial with nonsense inside.
    let mut fake_initial = vec![0xc0, 0, 0, 0, 1, 8];
    fake_initial.extend_from_slice(&[0xaa; 1194]);
    socket.send_to(&fake_initial, addr).await.unwrap();
    let mut h3 = H3Client::new(&connection).await.unwrap();
    let answer = h3.request(Method::GET, "/", Bytes::new()).await.unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn malformed_headers_frame_does_not_disturb_other_connections() {
    let dir = TestDir::new("h3malformed");
    let proxy = h3_proxy(TLS, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let mut h3 = H3Client::new(&connection).await.unwrap();
    // A HEADERS frame whose QPACK field section is garbage, on a raw request stream.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&[0x01, 0x04, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    let outcome = recv.read_to_end(1024).await;
    assert!(outcome.is_err() || outcome.unwrap().is_empty());
    // The proxy answers on a fresh connection whatever h3 decided about the broken one.
    let (_endpoint2, other, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let mut other = H3Client::new(&other).await.unwrap();
    assert_eq!(
        other
            .request(Method::GET, "/", Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    // A QPACK error is a connection error (RFC 9204 §6): the broken connection is closed.
    let reused = h3.request(Method::GET, "/", Bytes::new()).await;
    let closed = connection.close_reason();
    assert!(reused.is_err() == closed.is_some(), "{reused:?} {closed:?}");
}

#[tokio::test]
async fn shutdown_drains_h3_requests_in_flight() {
    let (gate, arrived, release) = gated_origin().await;
    let dir = TestDir::new("h3drain");
    let proxy = start(&config(Some(TLS), &[gate.addr], TLS_H3, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let mut h3 = H3Client::new(&connection).await.unwrap();
    let in_flight =
        tokio::spawn(async move { h3.request(Method::GET, "/slow", Bytes::new()).await });
    arrived.notified().await;
    let shutdown = tokio::spawn(proxy.shutdown());
    // New QUIC connections are refused once draining starts.
    let mut refused = None;
    for _ in 0..50 {
        match quic_connect(addr, &dir, QuicClient::default()).await {
            Err(error) => {
                refused = Some(error.to_string());
                break;
            }
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    let refused = refused.expect("new QUIC connections still accepted while draining");
    assert!(refused.contains("refused"), "{refused}");
    release.notify_one();
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert!(shutdown.await.unwrap(), "drain did not complete");
}

#[tokio::test]
async fn address_validation_retry_still_lets_clients_in() {
    let dir = TestDir::new("h3retry");
    let origin = spawn_origin("o1").await.unwrap();
    // Zero handshakes allowed before validation: every new client goes through a Retry.
    let listener = format!("{TLS_H3}\nquic = {{ retry_above_handshakes = 0 }}");
    let proxy = start(&config(Some(TLS), &[origin], &listener, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, group) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    assert_eq!(group, Some("X25519MLKEM768"));
    let mut h3 = H3Client::new(&connection).await.unwrap();
    assert_eq!(
        h3.request(Method::GET, "/", Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn origin_answering_before_the_body_ends_is_fine() {
    // This origin answers without reading the request body and closes; the proxy must stop
    // reading the client's stream cleanly (H3_NO_ERROR) and keep the connection usable. The
    // upload itself may get 200 or, when the origin's reset beats its response, 502.
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("h3early");
    let proxy = start(&config(Some(TLS), &[origin.addr], TLS_H3, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let mut h3 = H3Client::new(&connection).await.unwrap();
    for _ in 0..20 {
        let answer = h3
            .request(Method::POST, "/upload", Bytes::from(vec![7u8; 256 * 1024]))
            .await;
        if let Ok(answer) = answer {
            assert!([200, 502].contains(&answer.status), "{answer:?}");
        }
        let answer = h3.request(Method::GET, "/", Bytes::new()).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
    }
}

//= https://www.rfc-editor.org/rfc/rfc9114#section-5.2
//# Once all accepted requests and pushes have been processed, the endpoint can permit the
//# connection to become idle, or it MAY initiate an immediate closure of the connection.
#[tokio::test]
async fn shutdown_completes_every_h3_response_in_flight() {
    const REQUESTS: usize = 5;
    const SIZE: usize = 256 * 1024;
    let (origin, mut arrivals, release) = held_origin(SIZE).await;
    let dir = TestDir::new("h3drain5");
    // A client that keeps its connection open must not hold the drain to its timeout.
    let toml = format!(
        "{}\n[server]\ndrain_timeout_ms = 5000\n",
        config(Some(TLS), &[origin], TLS_H3, "")
    );
    let proxy = start(&toml, &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let h3 = H3Client::new(&connection).await.unwrap();
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let mut h3 = H3Client {
            sender: h3.sender.clone(),
        };
        in_flight.spawn(async move { h3.request(Method::GET, "/big", Bytes::new()).await });
    }
    for _ in 0..REQUESTS {
        arrivals.recv().await.unwrap();
    }
    let shutdown = tokio::spawn(proxy.shutdown());
    release.send(true).unwrap();
    let mut complete = 0;
    while let Some(answer) = in_flight.join_next().await {
        // Every request was accepted, so the GOAWAY may not tell the client otherwise, and
        // every response must arrive whole although the proxy is shutting down.
        let answer = answer.unwrap().unwrap();
        assert_eq!((answer.status, answer.body.len()), (200, SIZE));
        complete += 1;
    }
    assert_eq!(complete, REQUESTS);
    // The client still holds its connection: the proxy closes it once every response is
    // acknowledged.
    assert!(shutdown.await.unwrap(), "drain did not complete");
    drop(h3);
}

//= https://www.rfc-editor.org/rfc/rfc9114#section-5.2
//# Requests on stream IDs greater than or equal to the ID in the GOAWAY frame will not be
//# processed.
#[tokio::test]
async fn the_shutdown_goaway_names_the_first_stream_not_processed() {
    let (origin, mut arrivals, release) = held_origin(5).await;
    let dir = TestDir::new("h3goaway");
    let proxy = start(&config(Some(TLS), &[origin], TLS_H3, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (_endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    let _control = h3raw::open_control_stream(&connection).await;
    let get = h3raw::headers(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/"),
    ]);
    // Stream 0, then stream 4: both accepted and in flight at the origin.
    let requests = connection.clone();
    let both = tokio::spawn(async move {
        let first = h3raw::exchange(&requests, &get);
        let second = h3raw::exchange(&requests, &get);
        tokio::join!(first, second)
    });
    arrivals.recv().await.unwrap();
    arrivals.recv().await.unwrap();
    let shutdown = tokio::spawn(proxy.shutdown());
    // Stream 4 was the last accepted: the first not processed is 8.
    assert_eq!(h3raw::goaway_id(&connection).await, 8);
    release.send(true).unwrap();
    let ok = h3raw::RawOutcome::Status(200);
    assert_eq!(both.await.unwrap(), (ok.clone(), ok));
    connection.close(0u32.into(), b"done");
    assert!(shutdown.await.unwrap(), "drain did not complete");
}
