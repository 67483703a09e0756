//! The admin listener is not a way in: no DNS rebinding, no cross-site writes, a token where
//! one is configured, and no client can hold it (or the process's descriptors) open.

mod support;

use std::time::Duration;

use aegis_proxy::{Config, Running};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-admin-token";

/// A proxy whose `[admin]` has `admin_extra`; `ADMIN_TOKEN` holds [`TOKEN`].
async fn start_admin(dir: &TestDir, admin_extra: &str) -> Running {
    let origin = origin(Behaviour::Answer).await;
    let text = config(None, &[origin.addr], "", "").replace(
        "listen = \"127.0.0.1:0\"\n\n[[listeners]]",
        &format!("listen = \"127.0.0.1:0\"\n{admin_extra}\n\n[[listeners]]"),
    );
    let env = |name: &str| (name == "ADMIN_TOKEN").then(|| TOKEN.to_owned());
    let config = Config::parse_with_env(&text, &dir.path, &env)
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
    aegis_proxy::run(config, Registry::default()).await.unwrap()
}

async fn admin(proxy: &Running, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    http(proxy.admin_addr().unwrap(), request, false)
        .await
        .unwrap()
}

/// A page behind a foreign Host is what a DNS-rebinding page would read.
#[tokio::test]
async fn only_ip_localhost_or_configured_hosts_are_served() {
    let dir = TestDir::new("adminhost");
    let proxy = start_admin(&dir, "allowed_hosts = [\"admin.internal\"]").await;
    let port = proxy.admin_addr().unwrap().port();
    for host in [
        "evil.example",
        "evil.example:9901",
        "localhost.evil.example",
    ] {
        let answer = admin(&proxy, Method::GET, "/config", &[("host", host)]).await;
        assert_eq!(answer.status, 403, "{host}");
        assert_eq!(answer.body, "host not allowed on the admin listener\n");
    }
    let ip = format!("127.0.0.1:{port}");
    for host in [
        ip.as_str(),
        "localhost",
        "[::1]",
        "admin.internal",
        "ADMIN.internal:1",
    ] {
        let answer = admin(&proxy, Method::GET, "/config", &[("host", host)]).await;
        assert_eq!(answer.status, 200, "{host}");
    }
}

/// Without a token, writes need a loopback Host and no other site's Origin: a cross-site
/// `text/plain` form post (no CORS preflight) is refused.
#[tokio::test]
async fn cross_site_writes_are_refused_without_a_token() {
    let dir = TestDir::new("admincsrf");
    let proxy = start_admin(&dir, "allowed_hosts = [\"admin.internal\"]").await;
    let cross_site = [
        ("host", "127.0.0.1"),
        ("origin", "https://evil.example"),
        ("content-type", "text/plain"),
    ];
    let answer = admin(&proxy, Method::POST, "/reload", &cross_site).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let named = [("host", "admin.internal")];
    let answer = admin(&proxy, Method::POST, "/reload", &named).await;
    assert_eq!(answer.status, 403, "a name could be rebound: {answer:?}");
    // From this machine: authorized (and then refused for its own reason: no file).
    for origin in [
        None,
        Some("http://127.0.0.1:3000"),
        Some("http://localhost"),
    ] {
        let mut headers = vec![("host", "localhost")];
        headers.extend(origin.map(|o| ("origin", o)));
        let answer = admin(&proxy, Method::POST, "/reload", &headers).await;
        assert_eq!(answer.status, 400, "{origin:?}: {answer:?}");
        assert!(answer.body.contains("no configuration file"), "{answer:?}");
    }
}

#[tokio::test]
async fn with_a_token_writes_need_it_and_reads_can_too() {
    let dir = TestDir::new("admintoken");
    let proxy = start_admin(&dir, "token_env = \"ADMIN_TOKEN\"").await;
    let bearer = format!("Bearer {TOKEN}");
    let host = ("host", "localhost");
    for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0")] {
        let mut headers = vec![host];
        headers.extend(auth.map(|a| ("authorization", a)));
        let answer = admin(&proxy, Method::POST, "/reload", &headers).await;
        assert_eq!(answer.status, 401, "{auth:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let good = [host, ("authorization", bearer.as_str())];
    let answer = admin(&proxy, Method::POST, "/reload", &good).await;
    assert_eq!(answer.status, 400, "authorized: {answer:?}");
    assert_eq!(
        admin(&proxy, Method::GET, "/metrics", &[host]).await.status,
        200
    );
    let config = admin(&proxy, Method::GET, "/config", &good).await;
    assert!(!config.body.contains(TOKEN), "{}", config.body);
    let shown: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    // Where the token comes from, never the token.
    assert_eq!(shown["admin"]["token_env"], "ADMIN_TOKEN");

    let strict = "token_env = \"ADMIN_TOKEN\"\nrequire_token_for_reads = true";
    let reads_too = start_admin(&dir, strict).await;
    let answer = admin(&reads_too, Method::GET, "/metrics", &[host]).await;
    assert_eq!(answer.status, 401);
    let answer = admin(&reads_too, Method::GET, "/metrics", &good).await;
    assert_eq!(answer.status, 200);
}

/// An admin client that never sends its request head is closed at the deadline.
#[tokio::test]
async fn a_silent_admin_connection_is_closed_at_the_header_deadline() {
    let dir = TestDir::new("adminslow");
    let proxy = start_admin(&dir, "header_read_timeout_ms = 200").await;
    let mut tcp = TcpStream::connect(proxy.admin_addr().unwrap())
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open after 10 s");
}

/// Over `max_connections`, new admin connections are closed and the open ones keep working;
/// the descriptors they would take stay free for the data plane.
#[tokio::test]
async fn admin_connections_are_capped() {
    let dir = TestDir::new("admincap");
    let proxy = start_admin(&dir, "max_connections = 2").await;
    let addr = proxy.admin_addr().unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "accepted and served");
        held.push(tcp);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(request).await;
    let mut out = Vec::new();
    let _ = third.read_to_end(&mut out).await;
    assert!(
        out.is_empty(),
        "over the cap: {}",
        String::from_utf8_lossy(&out)
    );
    let mut buf = [0u8; 512];
    held[0].write_all(request).await.unwrap();
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an open one still works"
    );
    drop(held);
    // A freed slot is taken again, once the server has seen the closes.
    let served = async {
        loop {
            if let Ok(answer) = http(addr, get("/healthz"), false).await {
                break answer;
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert_eq!(answer.expect("a slot is free again").body, "ok\n");
}
