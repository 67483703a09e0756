//! Post-quantum TLS on client listeners and on the upstream (mesh) hop.

mod support;

use aegis_proxy::demo::spawn_origin;
use support::*;

#[tokio::test]
async fn pq_client_gets_200_over_h1_and_h2_and_metrics_show_the_group() {
    let dir = TestDir::new("pq");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();

    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let client = client_tls(dir.roots(), Groups::PqOnly, &[alpn]);
        let answer = https(addr, client, get("/hello")).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.group, Some("X25519MLKEM768"));
        assert!(answer.body.contains("\"origin\":\"o1\""), "{}", answer.body);
    }

    let text = metrics(&proxy).await;
    for protocol in ["http/1.1", "h2"] {
        let series = format!(
            "aegis_tls_handshakes_total{{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"{protocol}\"}}"
        );
        assert_eq!(metric(&text, &series), Some(1.0), "{text}");
    }
    for protocol in ["http/1.1", "h2"] {
        let series = format!(
            "aegis_http_requests_total{{listener=\"public\",route=\"routes[0]\",cluster=\"api\",status=\"200\",protocol=\"{protocol}\"}}"
        );
        assert_eq!(metric(&text, &series), Some(1.0), "{text}");
    }
}

/// Session tickets are stateless: a client resumes after many others connected in between
/// (rustls's default server cache holds 256 tickets, two per connection), and the resumed
/// handshake still runs the hybrid key exchange.
#[tokio::test]
async fn a_returning_client_resumes_after_many_others_with_the_pq_group() {
    let dir = TestDir::new("resume");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let returning = client_tls(dir.roots(), Groups::PqOnly, &[b"http/1.1"]);
    let first = https(addr, returning.clone(), get("/")).await.unwrap();
    assert_eq!((first.status, first.resumed), (200, false));

    for _ in 0..130 {
        let other = client_tls(dir.roots(), Groups::PqOnly, &[b"http/1.1"]);
        assert_eq!(https(addr, other, get("/")).await.unwrap().status, 200);
    }
    let again = https(addr, returning, get("/")).await.unwrap();
    assert_eq!(
        (again.status, again.resumed, again.group),
        (200, true, Some("X25519MLKEM768"))
    );
}

#[tokio::test]
async fn classical_client_falls_back_to_x25519() {
    let dir = TestDir::new("classical");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let client = client_tls(dir.roots(), Groups::Classical, &[b"h2"]);
    let answer = https(proxy.listener_addr("public").unwrap(), client, get("/"))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.group, Some("X25519"));
}

#[tokio::test]
async fn pq_only_listener_rejects_classical_clients_and_counts_it() {
    let dir = TestDir::new("pqonly");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS_PQ_ONLY), &[origin], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();

    let classical = client_tls(dir.roots(), Groups::Classical, &[b"h2"]);
    let error = https(addr, classical, get("/")).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("HandshakeFailure"),
        "{error:#}"
    );

    let pq = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
    let answer = https(addr, pq, get("/")).await.unwrap();
    assert_eq!((answer.status, answer.group), (200, Some("X25519MLKEM768")));

    let text = metrics(&proxy).await;
    let failures =
        "aegis_tls_handshake_failures_total{listener=\"public\",reason=\"no_shared_group\"}";
    assert_eq!(metric(&text, failures), Some(1.0), "{text}");
}

/// Proxy A (cleartext in) → mTLS, PQ-only → proxy B (requires client certs, PQ-only) → origin.
#[tokio::test]
async fn upstream_mtls_hop_is_post_quantum() {
    let dir = TestDir::new("mesh");
    let origin = spawn_origin("o1").await.unwrap();
    let inner_tls =
        r#"{ cert = "server.pem", key = "server.key", pq_only = true, client_ca = "ca.pem" }"#;
    let inner = start(&config(Some(inner_tls), &[origin], "", ""), &dir).await;
    let inner_addr = inner.listener_addr("public").unwrap();

    let hop = r#"tls = { ca = "ca.pem", cert = "client.pem", key = "client.key", server_name = "localhost", pq_only = true }"#;
    let outer = start(&config(None, &[inner_addr], "", hop), &dir).await;
    let answer = http(outer.listener_addr("public").unwrap(), get("/mesh"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.body.contains("\"via\":\"1.1 aegis, 1.1 aegis\""),
        "{}",
        answer.body
    );

    let text = metrics(&inner).await;
    let series = "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"http/1.1\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{text}");

    // Without a client certificate the inner proxy refuses the hop: 502 at the outer one.
    let no_cert = r#"tls = { ca = "ca.pem", server_name = "localhost" }"#;
    let outer = start(&config(None, &[inner_addr], "", no_cert), &dir).await;
    let answer = http(outer.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 502, "{answer:?}");
}

#[tokio::test]
async fn upstream_h2_over_tls() {
    let dir = TestDir::new("h2up");
    let origin = spawn_origin("o1").await.unwrap();
    let inner = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let hop = "protocol = \"http2\"\ntls = { ca = \"ca.pem\", server_name = \"localhost\" }";
    let outer = start(
        &config(None, &[inner.listener_addr("public").unwrap()], "", hop),
        &dir,
    )
    .await;
    let answer = http(outer.listener_addr("public").unwrap(), get("/"), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let text = metrics(&inner).await;
    let series =
        "aegis_tls_handshakes_total{listener=\"public\",group=\"X25519MLKEM768\",protocol=\"h2\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{text}");
}

#[tokio::test]
async fn admin_config_page_names_key_files_but_never_holds_a_key() {
    let dir = TestDir::new("configpage");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], "", ""), &dir).await;
    let admin = proxy.admin_addr().unwrap();
    let answer = http(admin, get("/config"), false).await.unwrap();
    assert_eq!(answer.status, 200);
    let page: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let tls = &page["listeners"][0]["tls"];
    assert!(tls["key"].as_str().unwrap().ends_with("server.key"));
    assert!(tls["cert"].as_str().unwrap().ends_with("server.pem"));
    assert!(!answer.body.contains("PRIVATE KEY"));
    for (path, status) in [("/healthz", 200), ("/ready", 200), ("/nope", 404)] {
        assert_eq!(
            http(admin, get(path), false).await.unwrap().status,
            status,
            "{path}"
        );
    }
}

/// RFC 8446 §4.2.7/§4.2.8: the server picks the group; the client's key shares only say which
/// choice avoids a HelloRetryRequest. Ours is X25519MLKEM768, X25519, secp256r1, and it decides
/// over TCP and QUIC alike, whatever order the client lists its groups or shares in.
#[tokio::test]
async fn the_servers_group_order_decides_over_tcp_and_quic() {
    let dir = TestDir::new("group-order");
    let origin = spawn_origin("o1").await.unwrap();
    let proxy = start(&config(Some(TLS), &[origin], TLS_H3, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let cases = [
        // Both classical shares sent, secp256r1 listed first: X25519 without a retry.
        (Groups::P256FirstBothShares, "X25519", 1.0),
        // Post-quantum supported but not preferred, no share for it: a HelloRetryRequest
        // asks for it.
        (Groups::X25519FirstThenPq, "X25519MLKEM768", 1.0),
    ];
    for (groups, expected, count) in cases {
        let tcp = client_tls(dir.roots(), groups, &[b"h2"]);
        let answer = https(addr, tcp, get("/")).await.unwrap();
        assert_eq!(
            (answer.status, answer.group),
            (200, Some(expected)),
            "{groups:?} over TCP"
        );

        let client = QuicClient {
            groups,
            ..QuicClient::default()
        };
        let (_endpoint, connection, _) = quic_connect(addr, &dir, client).await.unwrap();
        let mut h3 = H3Client::new(&connection).await.unwrap();
        let answer = h3
            .request(http::Method::GET, "/", bytes::Bytes::new())
            .await;
        assert_eq!(answer.unwrap().status, 200, "{groups:?} over QUIC");

        let text = metrics(&proxy).await;
        for protocol in ["h2", "h3"] {
            let series = format!(
                "aegis_tls_handshakes_total{{listener=\"public\",group=\"{expected}\",protocol=\"{protocol}\"}}"
            );
            assert_eq!(metric(&text, &series), Some(count), "{groups:?}: {text}");
        }
    }
}
