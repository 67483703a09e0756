//! Test glue: certificates on disk, an in-process proxy, TLS and raw clients, small origins.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod h2raw;
pub mod h3raw;
mod kx;
mod matrix;
pub mod process;

pub use kx::Groups;
#[allow(unused_imports)] // not every test file sends over the matrix
pub use matrix::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aegis_proxy::{Config, Running};
use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use rustls::crypto::aws_lc_rs;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A folder with a fresh CA, a server certificate for 127.0.0.1/localhost and a client pair.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "aegis-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        aegis_proxy::demo::write_certs(&path).expect("write certs");
        Self { path }
    }

    pub fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        aegis_tls::pem::load_roots(&self.path.join("ca.pem")).unwrap()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Starts the proxy in-process from TOML text (relative paths resolve against `dir`).
pub async fn start(toml: &str, dir: &TestDir) -> Running {
    let config =
        Config::parse(toml, &dir.path).unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
    aegis_proxy::run(config, Registry::default())
        .await
        .expect("proxy starts")
}

pub fn client_tls(
    roots: rustls::RootCertStore,
    groups: Groups,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    client_tls_with_auth(roots, groups, alpn, None)
}

pub fn client_tls_with_auth(
    roots: rustls::RootCertStore,
    groups: Groups,
    alpn: &[&[u8]],
    auth: Option<(&TestDir, &str, &str)>,
) -> Arc<rustls::ClientConfig> {
    let provider = CryptoProvider {
        kx_groups: groups.kx_groups(),
        ..aws_lc_rs::default_provider()
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match auth {
        Some((dir, cert, key)) => builder
            .with_client_auth_cert(
                aegis_tls::pem::load_certs(&dir.path.join(cert)).unwrap(),
                aegis_tls::pem::load_key(&dir.path.join(key)).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub group: Option<&'static str>,
    /// Whether the TLS session was resumed from a ticket.
    pub resumed: bool,
    /// The interim (1xx) responses before the final one: status and headers.
    pub interim: Vec<(u16, http::HeaderMap)>,
}

/// One request over a new TLS connection; HTTP/2 when ALPN picks `h2`.
pub async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .context("tls handshake")?;
    let session = tls.get_ref().1;
    let group = session
        .negotiated_key_exchange_group()
        .map(aegis_tls::group_name);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut answer = send(tls, request, h2).await?;
    answer.group = group;
    answer.resumed = resumed;
    Ok(answer)
}

/// One request over a new cleartext connection (h2c by prior knowledge when `h2`).
pub async fn http(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    h2: bool,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    send(tcp, request, h2).await
}

async fn send<IO>(io: IO, mut request: Request<Full<Bytes>>, h2: bool) -> anyhow::Result<Answer>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let interim = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = interim.clone();
    hyper::ext::on_informational(&mut request, move |response| {
        let entry = (response.status().as_u16(), response.headers().clone());
        seen.lock().unwrap().push(entry);
    });
    let io = TokioIo::new(io);
    let response: Response<hyper::body::Incoming> = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    let interim = std::mem::take(&mut *interim.lock().unwrap());
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        group: None,
        resumed: false,
        interim,
    })
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "localhost")
        .body(Full::default())
        .unwrap()
}

/// Writes raw bytes and reads until the server closes (or `limit` bytes arrive).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the admin `/metrics` page.
pub async fn metrics(running: &Running) -> String {
    let admin = running.admin_addr().expect("admin configured");
    let answer = http(admin, get("/metrics"), false).await.unwrap();
    assert_eq!(answer.status, 200);
    answer.body
}

/// The value of one exposition line, e.g. `aegis_tls_handshakes_total{...}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A minimal TOML config: one listener (plain or TLS) in front of `endpoints`.
pub fn config(
    listener_tls: Option<&str>,
    endpoints: &[SocketAddr],
    extra_listener: &str,
    extra_cluster: &str,
) -> String {
    let tls = listener_tls
        .map(|t| format!("tls = {t}\n"))
        .unwrap_or_default();
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"
{tls}{extra_listener}

[[routes]]
cluster = "api"

[clusters.api]
endpoints = [{endpoints}]
{extra_cluster}
"#,
        endpoints = endpoints.join(", ")
    )
}

pub const TLS: &str = r#"{ cert = "server.pem", key = "server.key" }"#;
pub const TLS_PQ_ONLY: &str = r#"{ cert = "server.pem", key = "server.key", pq_only = true }"#;

/// What a test origin does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// Answer 200 `ok` at once.
    Answer,
    /// Never answer.
    Hang,
    /// Answer after this long: a slow application.
    Delay(std::time::Duration),
    /// Signal `arrived`, then answer once `release` is notified.
    Gate {
        arrived: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    },
}

/// An HTTP/1.1 origin that counts the requests it receives.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Origin {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn origin(behaviour: Behaviour) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let behaviour = behaviour.clone();
                        async move {
                            match behaviour {
                                Behaviour::Answer => {}
                                Behaviour::Hang => std::future::pending::<()>().await,
                                Behaviour::Delay(time) => tokio::time::sleep(time).await,
                                Behaviour::Gate { arrived, release } => {
                                    arrived.notify_one();
                                    release.notified().await;
                                }
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Origin { addr, hits }
}

/// An origin that records `METHOD path body` for every request it received completely.
pub async fn recording_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    let line = format!("{} {}", req.method(), req.uri().path());
                    let body = req.into_body().collect().await?.to_bytes();
                    let line = format!("{line} {}", String::from_utf8_lossy(&body));
                    record.lock().unwrap().push(line);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// An origin that reports each request's arrival, holds it until `release` turns true, then
/// answers 200 with `size` bytes.
pub async fn held_origin(
    size: usize,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived, released) = (arrived.clone(), released.clone());
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (arrived, mut released) = (arrived.clone(), released.clone());
                    async move {
                        let _ = arrived.send(());
                        let _ = released.wait_for(|go| *go).await;
                        let body = Full::new(Bytes::from(vec![b'x'; size]));
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, arrivals, release)
}

/// An origin that holds each request: `arrived` is notified when one comes in, and it is
/// answered once `release` is notified.
pub async fn gated_origin() -> (Origin, Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Behaviour::Gate {
        arrived: arrived.clone(),
        release: release.clone(),
    };
    (origin(gate).await, arrived, release)
}

/// An origin that answers GETs by path with scripted raw bytes, and counts its connections.
pub struct Scripted {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer_requests(stream));
            }
        });
        Self { addr, connections }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer_requests(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let (reply, close): (String, bool) = match path.as_str() {
            "/chunked" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                    .into(),
                false,
            ),
            "/close" => ("HTTP/1.1 200 OK\r\n\r\nuntil close".into(), true),
            // Answers normally, then closes without saying so.
            "/drop" => (
                "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndrop".into(),
                true,
            ),
            "/interim" => (
                "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    .into(),
                false,
            ),
            "/bad-chunk" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"
                    .into(),
                false,
            ),
            "/status-600" => (
                "HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nno".into(),
                false,
            ),
            "/gzip-chunked" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n"
                    .into(),
                false,
            ),
            "/ambiguous" => (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\nok"
                    .into(),
                false,
            ),
            // A HEAD response: the length of the body a GET would get, no body.
            other if head.starts_with("HEAD ") => (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", other.len()),
                false,
            ),
            other => (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{other}",
                    other.len()
                ),
                false,
            ),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// QUIC client settings for tests.
#[derive(Clone, Copy, Debug)]
pub struct QuicClient {
    pub groups: Groups,
    /// Initial MTU; 1200 is the QUIC minimum.
    pub mtu: u16,
    /// UDP segmentation offload (GSO).
    pub gso: bool,
}

impl Default for QuicClient {
    fn default() -> Self {
        Self {
            groups: Groups::PqOnly,
            mtu: 1200,
            gso: true,
        }
    }
}

/// A QUIC connection to `addr` through a fresh client endpoint; returns it with the group the
/// client's handshake data reports.
pub async fn quic_connect(
    addr: SocketAddr,
    dir: &TestDir,
    client: QuicClient,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection, Option<&'static str>)> {
    let kx = match client.groups {
        Groups::PqOnly => aegis_tls::KxPolicy::PostQuantumOnly,
        _ => aegis_tls::KxPolicy::PreferPostQuantum,
    };
    let crypto = match client.groups {
        Groups::PqOnly => aegis_tls::quic_client_config(aegis_tls::ClientOptions {
            roots: dir.roots(),
            client_auth: None,
            kx,
            alpn: Vec::new(),
        })?,
        groups => rustls_quic_crypto(dir, groups)?,
    };
    let mut transport = quinn::TransportConfig::default();
    transport
        .initial_mtu(client.mtu)
        .mtu_discovery_config(None)
        .enable_segmentation_offload(client.gso);
    let mut config = quinn::ClientConfig::new(crypto);
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap())?;
    endpoint.set_default_client_config(config);
    let connection = endpoint.connect(addr, "localhost")?.await?;
    let group = connection
        .handshake_data()
        .and_then(|d| d.downcast::<aegis_tls::QuicHandshake>().ok())
        .and_then(|d| d.group);
    Ok((endpoint, connection, group))
}

/// A plain rustls QUIC client offering `groups` (its handshake data names no group).
fn rustls_quic_crypto(
    dir: &TestDir,
    groups: Groups,
) -> anyhow::Result<Arc<dyn quinn::crypto::ClientConfig>> {
    let provider = CryptoProvider {
        kx_groups: groups.kx_groups(),
        ..aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(dir.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h3".to_vec()];
    Ok(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(
        config,
    )?))
}

/// An HTTP/3 client on one QUIC connection.
pub struct H3Client {
    pub sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
}

impl H3Client {
    pub async fn new(connection: &quinn::Connection) -> anyhow::Result<Self> {
        let (mut driver, sender) =
            h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(Self { sender })
    }

    /// One request with `body`; the whole response.
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())?;
        self.send(request, body).await
    }

    /// Sends `request` with `body`; the whole response.
    pub async fn send(&mut self, request: Request<()>, body: Bytes) -> anyhow::Result<Answer> {
        use bytes::Buf;
        let mut stream = self.sender.send_request(request).await?;
        if !body.is_empty() {
            stream.send_data(body).await?;
        }
        stream.finish().await?;
        let mut interim = Vec::new();
        let mut response = stream.recv_response().await?;
        while response.status().is_informational() {
            interim.push((response.status().as_u16(), response.headers().clone()));
            response = stream.recv_response().await?;
        }
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                received.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: String::from_utf8_lossy(&received).into_owned(),
            group: None,
            resumed: false,
            interim,
        })
    }
}

pub const TLS_H3: &str = "protocols = [\"http/1.1\", \"h2\", \"h3\"]";

/// How a [`tunable_origin`] answers, changeable while it runs.
#[derive(Default)]
pub struct Tuning {
    /// Milliseconds to wait before answering (a stand-in for network distance).
    pub delay_ms: AtomicUsize,
    /// Status to answer with; 0 means 200.
    pub status: AtomicUsize,
    /// Requests received, probes included.
    pub hits: AtomicUsize,
}

/// An HTTP/1.1 origin (keep-alive) whose delay and status a test can change at any time.
pub async fn tunable_origin(delay_ms: usize) -> (SocketAddr, Arc<Tuning>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tuning = Arc::new(Tuning::default());
    tuning.delay_ms.store(delay_ms, Ordering::SeqCst);
    let shared = tuning.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tuning = shared.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                        let tuning = tuning.clone();
                        async move {
                            tuning.hits.fetch_add(1, Ordering::SeqCst);
                            let delay = tuning.delay_ms.load(Ordering::SeqCst) as u64;
                            if delay > 0 {
                                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                            }
                            let status = match tuning.status.load(Ordering::SeqCst) {
                                0 => 200,
                                s => s as u16,
                            };
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, tuning)
}
