#![allow(missing_docs)] // criterion_group! generates undocumented functions.

//! HTTP/3 through the in-process proxy over loopback: the per-request pieces, then end-to-end
//! requests per second, sequential and with 10 and 100 concurrent streams, small and 1 MiB.
//!
//! `cargo bench -p aegis-proxy --bench http3_throughput`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use aegis_proxy::http::proxy::RequestRules;
use aegis_proxy::http::{forward, ConnInfo, Proxy};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use support::{config, quic_connect, start, H3Client, QuicClient, TestDir, TLS, TLS_H3};

const MIB: usize = 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The pieces of one request inside the proxy, without QUIC. A current-thread runtime keeps
/// the proxy's work apart from cross-thread wake-ups (on a 2-worker runtime the same
/// `request_handling` measured 169 µs instead of 45 µs here).
fn request_pieces(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (proxy, conn) = rt.block_on(async {
        let origin = aegis_proxy::demo::spawn_origin("bench").await.unwrap();
        let text = config(None, &[origin], "", "").replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[server]\naccess_log = false",
        );
        let config = aegis_proxy::Config::parse(&text, std::path::Path::new(".")).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(aegis_proxy::metrics::Metrics::new(&mut registry));
        let proxy = Arc::new(Proxy::new(&config, metrics));
        let conn = ConnInfo {
            listener: Arc::from("bench"),
            peer: "127.0.0.1:40000".parse().unwrap(),
            peer_value: http::HeaderValue::from_static("127.0.0.1"),
            secure: true,
            tls_group: Some("X25519MLKEM768"),
            rules: Arc::new(RequestRules::new(&config.listeners[0], None)),
            admitted: None,
        };
        (proxy, conn)
    });
    let mut group = c.benchmark_group("h3");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request_creation", |b| {
        b.iter(|| {
            Request::builder()
                .method(Method::GET)
                .uri("https://localhost/hello?x=1")
                .version(Version::HTTP_3)
                .header("user-agent", "bench")
                .header("accept", "*/*")
                .body(Empty::<Bytes>::new())
                .unwrap()
        })
    });
    group.bench_function("request_handling", |b| {
        b.to_async(&rt).iter(|| async {
            let request = Request::builder()
                .uri("https://localhost/hello")
                .version(Version::HTTP_3)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = forward(&proxy, &conn, request, None).await;
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("response_creation", |b| {
        b.iter(|| {
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("via", "3 aegis")
                .body(Full::new(Bytes::from_static(b"{\"ok\":true}\n")))
                .unwrap()
        })
    });
    group.finish();
}

/// Requests per second through the proxy over QUIC, PQ handshake done once per connection.
fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let dir = TestDir::new("bench-h3");
    let (proxy, client, _endpoint) = rt.block_on(async {
        let origin = aegis_proxy::demo::spawn_origin("bench").await.unwrap();
        let text = config(Some(TLS), &[origin], TLS_H3, "").replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[server]\naccess_log = false",
        );
        let proxy = start(&text, &dir).await;
        let addr = proxy.listener_addr("public").unwrap();
        let client = QuicClient {
            mtu: 1452,
            ..QuicClient::default()
        };
        let (endpoint, connection, _) = quic_connect(addr, &dir, client).await.unwrap();
        let h3 = H3Client::new(&connection).await.unwrap();
        (proxy, h3, endpoint)
    });
    let client = Arc::new(tokio::sync::Mutex::new(client));
    let mut group = c.benchmark_group("h3/e2e");
    for (label, path, bytes) in [
        ("small", "/hello".to_owned(), 0),
        ("1MiB", format!("/bytes/{MIB}"), MIB),
    ] {
        for streams in [1usize, 10, 100] {
            if bytes > 0 && streams == 100 {
                group.sample_size(10);
            }
            group.throughput(if bytes > 0 {
                Throughput::Bytes((bytes * streams) as u64)
            } else {
                Throughput::Elements(streams as u64)
            });
            let id = BenchmarkId::new(label, format!("{streams}_streams"));
            group.bench_with_input(id, &streams, |b, &streams| {
                b.to_async(&rt).iter(|| {
                    let client = client.clone();
                    let path = path.clone();
                    async move {
                        let sender = client.lock().await.sender.clone();
                        let mut tasks = Vec::with_capacity(streams);
                        for _ in 0..streams {
                            let mut h3 = H3Client {
                                sender: sender.clone(),
                            };
                            let path = path.clone();
                            tasks.push(tokio::spawn(async move {
                                h3.request(Method::GET, &path, Bytes::new()).await.unwrap()
                            }));
                        }
                        for task in tasks {
                            assert_eq!(task.await.unwrap().status, 200);
                        }
                    }
                })
            });
        }
    }
    group.finish();
    drop(proxy);
}

criterion_group!(benches, request_pieces, end_to_end);
criterion_main!(benches);
