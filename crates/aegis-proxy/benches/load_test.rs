#![allow(missing_docs)] // criterion_group! generates undocumented functions.

//! Real requests through the in-process proxy to a loopback origin, over HTTP/1.1 (cleartext
//! keep-alive), HTTP/2 (h2c) and HTTP/3 (QUIC with X25519MLKEM768, handshake done once):
//!
//! - `load/sequential/1k_requests/{h1,h2,h3}`: 1,000 requests one after another on one
//!   connection;
//! - `load/concurrent/{10,50,100,500}/{h1,h2,h3}`: that many requests in flight at once (h1: one
//!   keep-alive connection each; h2: streams over connections of at most 200 streams; h3:
//!   streams on one QUIC connection).
//!
//! Client, proxy and origin share one 2-worker runtime, so figures are for comparing versions
//! of this code on one machine, not absolute capacity (see `../shared/bench/peers.sh` for that).
//!
//! `cargo bench -p aegis-proxy --bench load_test`

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{config, origin, quic_connect, start, Behaviour, H3Client, QuicClient, TestDir};
use support::{TLS, TLS_H3};
use tokio::sync::Mutex;

const CONCURRENCY: [usize; 4] = [10, 50, 100, 500];
/// Idle keep-alive time allowed to the benchmark's client connections.
const KEEP_IDLE: &str = "header_read_timeout_ms = 600000\nidle_timeout_ms = 600000";
const H2_STREAMS_PER_CONNECTION: usize = 200;

/// Keep-alive connections of one protocol, enough for `n` requests in flight.
enum Clients {
    H1(Vec<Arc<Mutex<http1::SendRequest<Empty<Bytes>>>>>),
    H2(Vec<http2::SendRequest<Empty<Bytes>>>),
    H3 {
        client: H3Client,
        /// Kept alive with its connection.
        _endpoint: quinn::Endpoint,
    },
}

impl Clients {
    async fn connect(protocol: &str, addr: SocketAddr, n: usize, dir: &TestDir) -> Self {
        match protocol {
            "h1" => {
                let mut senders = Vec::with_capacity(n);
                for _ in 0..n {
                    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
                    let (sender, conn) = http1::handshake(io).await.unwrap();
                    tokio::spawn(conn);
                    senders.push(Arc::new(Mutex::new(sender)));
                }
                Self::H1(senders)
            }
            "h2" => {
                let mut senders = Vec::new();
                for _ in 0..n.div_ceil(H2_STREAMS_PER_CONNECTION) {
                    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
                    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
                    tokio::spawn(conn);
                    senders.push(sender);
                }
                Self::H2(senders)
            }
            _ => {
                let client = QuicClient {
                    mtu: 1452,
                    ..QuicClient::default()
                };
                let (endpoint, connection, _) = quic_connect(addr, dir, client).await.unwrap();
                Self::H3 {
                    client: H3Client::new(&connection).await.unwrap(),
                    _endpoint: endpoint,
                }
            }
        }
    }

    /// Sends `n` requests at once and waits for every response body.
    async fn burst(&self, n: usize) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            match self {
                Self::H1(senders) => {
                    let sender = senders[i % senders.len()].clone();
                    tasks.spawn(async move { h1_request(&mut *sender.lock().await).await });
                }
                Self::H2(senders) => {
                    let mut sender = senders[i % senders.len()].clone();
                    tasks.spawn(async move {
                        let response = sender.send_request(request(true)).await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.into_body().collect().await.unwrap();
                    });
                }
                Self::H3 { client, .. } => {
                    let mut h3 = H3Client {
                        sender: client.sender.clone(),
                    };
                    tasks.spawn(async move {
                        let answer = h3.request(Method::GET, "/", Bytes::new()).await.unwrap();
                        assert_eq!(answer.status, 200);
                    });
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }

    /// Sends `n` requests one after another on the first connection.
    async fn sequential(&self, n: usize) {
        for _ in 0..n {
            match self {
                Self::H1(senders) => h1_request(&mut *senders[0].lock().await).await,
                Self::H2(senders) => {
                    let response = senders[0]
                        .clone()
                        .send_request(request(true))
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
                Self::H3 { client, .. } => {
                    let mut h3 = H3Client {
                        sender: client.sender.clone(),
                    };
                    let answer = h3.request(Method::GET, "/", Bytes::new()).await.unwrap();
                    assert_eq!(answer.status, 200);
                }
            }
        }
    }
}

fn request(h2: bool) -> Request<Empty<Bytes>> {
    let builder = if h2 {
        Request::get("http://localhost/")
    } else {
        Request::get("/").header("host", "localhost")
    };
    builder.body(Empty::new()).unwrap()
}

async fn h1_request(sender: &mut http1::SendRequest<Empty<Bytes>>) {
    sender.ready().await.unwrap();
    let response = sender.send_request(request(false)).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

fn load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = TestDir::new("bench-load");
    let (_proxy, plain, secure) = rt.block_on(async {
        let up = origin(Behaviour::Answer).await;
        let quiet = |text: String| {
            text.replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                "[server]\naccess_log = false",
            )
        };
        // The client connections are opened once and some wait idle through the earlier
        // benchmarks: keep them longer than the default 10 s keep-alive.
        let listeners = format!(
            "{TLS_H3}\nquic = {{ max_concurrent_streams = 1000 }}\n{KEEP_IDLE}\n\
             [[listeners]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n{KEEP_IDLE}"
        );
        // One client connection carries all 500 h3 streams: lift the per-connection share
        // (a quarter of max_pending_requests by default) that would shed a single client above
        // 256 requests in flight.
        let cluster = "max_pending_per_connection = 1024";
        let proxy = start(
            &quiet(config(Some(TLS), &[up.addr], &listeners, cluster)),
            &dir,
        )
        .await;
        let plain = proxy.listener_addr("plain").unwrap();
        let secure = proxy.listener_addr("public").unwrap();
        (proxy, plain, secure)
    });
    let mut group = c.benchmark_group("load");
    for protocol in ["h1", "h2", "h3"] {
        let addr = if protocol == "h3" { secure } else { plain };
        let clients = rt.block_on(Clients::connect(protocol, addr, 500, &dir));
        group.throughput(Throughput::Elements(1000));
        group.sample_size(10);
        group.bench_function(format!("sequential/1k_requests/{protocol}"), |b| {
            b.to_async(&rt).iter(|| clients.sequential(1000))
        });
        group.sample_size(20);
        for n in CONCURRENCY {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("concurrent/{n}/{protocol}"), |b| {
                b.to_async(&rt).iter(|| clients.burst(n))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
