//! The protocol matrix: one scenario, sent over every way a request reaches the proxy.
//!
//! [`matrix_config`] starts a plain listener (`plain`: HTTP/1.1 and h2c) and a TLS listener
//! (`secure`: HTTP/1.1, h2 and HTTP/3 on the same port) with the same extra settings; a
//! [`Sent`] request goes out over each [`Proto`] in [`PROTOCOLS`].

use std::net::SocketAddr;

use aegis_proxy::Running;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{client_tls, http, https, quic_connect, Answer, Groups, H3Client, QuicClient, TestDir};

/// How a request reaches the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 taken by the fast path.
    H1Fast,
    /// HTTP/1.1 that the fast path hands to the general path (a `Connection`-named header).
    H1General,
    /// HTTP/2 over cleartext, by prior knowledge.
    H2c,
    /// HTTP/2 over TLS with the hybrid post-quantum group.
    H2,
    /// HTTP/3 over QUIC with the hybrid post-quantum group.
    H3,
}

/// The header fields that make the fast path hand an HTTP/1.1 request to the general path
/// (a header that `Connection` names).
const HANDOVER: [(&str, &str); 2] = [("connection", "x-general"), ("x-general", "1")];

/// Every protocol, in the order tests report them.
pub const PROTOCOLS: [Proto; 5] = [
    Proto::H1Fast,
    Proto::H1General,
    Proto::H2c,
    Proto::H2,
    Proto::H3,
];

/// Two listeners, both with `extra_listener`, an admin listener, then `rest` (routes, clusters).
pub fn matrix_config(extra_listener: &str, rest: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "plain"
listen = "127.0.0.1:0"
{extra_listener}

[[listeners]]
name = "secure"
listen = "127.0.0.1:0"
tls = {tls}
{h3}
{extra_listener}

{rest}
"#,
        tls = super::TLS,
        h3 = super::TLS_H3,
    )
}

/// The `rest` of a [`matrix_config`] that routes everything to one cluster, `api`, of one
/// endpoint.
pub fn one_cluster(endpoint: SocketAddr) -> String {
    format!("[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{endpoint}\"]\n")
}

/// The `rest` of a [`matrix_config`]: regions `near` (zone DE, static 400 g) and `far` (zone
/// NO, static 30 g), then `carbon` (the `[carbon]` table's lines), and cluster `api` with the
/// greenest policy, `cluster` lines and one endpoint in each region.
pub fn two_regions(near: SocketAddr, far: SocketAddr, carbon: &str, cluster: &str) -> String {
    format!(
        r#"
[[routes]]
cluster = "api"

[regions.near]
zone = "DE"
intensity = 400

[regions.far]
zone = "NO"
intensity = 30

[carbon]
{carbon}

[clusters.api]
carbon = "greenest"
{cluster}
regions = {{ near = ["{near}"], far = ["{far}"] }}
"#
    )
}

/// A request to send over any protocol: the authority goes in `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2, HTTP/3).
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: Method,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Sent {
    /// `GET path` to `localhost`.
    pub fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_owned(),
            authority: "localhost".to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `POST path` to `localhost` with `body`.
    pub fn post(path: &str, body: &'static str) -> Self {
        Self {
            method: Method::POST,
            body: Bytes::from_static(body.as_bytes()),
            ..Self::get(path)
        }
    }

    /// The same request to another authority.
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_owned();
        self
    }

    /// The same request with one more header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn request(&self, uri: String, host: bool) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(self.method.clone()).uri(uri);
        if host {
            builder = builder.header("host", &self.authority);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(self.body.clone()))
            .expect("test request")
    }
}

impl Proto {
    /// For a raw HTTP/1.1 head: the header lines this protocol adds (the hand-over for
    /// `H1General`, none for `H1Fast`), each ending in CRLF.
    pub fn raw_h1_lines(self) -> String {
        match self {
            Self::H1General => HANDOVER
                .map(|(name, value)| format!("{name}: {value}\r\n"))
                .concat(),
            _ => String::new(),
        }
    }

    /// Sends `sent` to the matrix proxy over this protocol on a new connection.
    pub async fn send(self, proxy: &Running, dir: &TestDir, sent: &Sent) -> anyhow::Result<Answer> {
        let plain = proxy.listener_addr("plain").expect("plain listener");
        let secure = proxy.listener_addr("secure").expect("secure listener");
        let absolute = |scheme: &str| format!("{scheme}://{}{}", sent.authority, sent.path);
        match self {
            Self::H1Fast => http(plain, sent.request(sent.path.clone(), true), false).await,
            Self::H1General => {
                let mut request = sent.request(sent.path.clone(), true);
                for (name, value) in HANDOVER {
                    request.headers_mut().append(name, value.parse()?);
                }
                http(plain, request, false).await
            }
            Self::H2c => http(plain, sent.request(absolute("http"), false), true).await,
            Self::H2 => {
                let tls = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
                let answer = https(secure, tls, sent.request(absolute("https"), false)).await?;
                anyhow::ensure!(answer.group == Some("X25519MLKEM768"), "{:?}", answer.group);
                Ok(answer)
            }
            Self::H3 => {
                let request = sent.request(absolute("https"), false);
                h3(secure, dir, request, sent.body.clone()).await
            }
        }
    }
}

/// Responses whose heads arrived and whose bodies are never read, with the connection that
/// carries them: the client's flow-control window (or TCP buffer) stays full.
pub struct Stalled {
    /// The status of each request sent.
    pub statuses: Vec<u16>,
    _held: Vec<Box<dyn std::any::Any + Send>>,
}

impl Proto {
    /// Sends `n` copies of `sent` on one new connection (HTTP/1.1: `n` must be 1) and reads
    /// only their response heads.
    pub async fn stall(
        self,
        proxy: &Running,
        dir: &TestDir,
        sent: &Sent,
        n: usize,
    ) -> anyhow::Result<Stalled> {
        let plain = proxy.listener_addr("plain").expect("plain listener");
        let secure = proxy.listener_addr("secure").expect("secure listener");
        let absolute = |scheme: &str| format!("{scheme}://{}{}", sent.authority, sent.path);
        let mut statuses = Vec::new();
        let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        match self {
            Self::H1Fast | Self::H1General => {
                anyhow::ensure!(n == 1, "one request at a time on HTTP/1.1");
                let mut request = sent.request(sent.path.clone(), true);
                for (name, value) in HANDOVER.iter().filter(|_| self == Self::H1General) {
                    request.headers_mut().append(*name, value.parse()?);
                }
                let io = TokioIo::new(TcpStream::connect(plain).await?);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                let response = sender.send_request(request).await?;
                statuses.push(response.status().as_u16());
                held.push(Box::new((sender, response)));
            }
            Self::H2c | Self::H2 => {
                let scheme = if self == Self::H2 { "https" } else { "http" };
                let (sender, _connection) = self.h2_connection(proxy, dir).await?;
                let sends = (0..n).map(|_| {
                    let mut sender = sender.clone();
                    let request = sent.request(absolute(scheme), false);
                    async move { sender.send_request(request).await }
                });
                for response in futures_join_all(sends).await {
                    let response = response?;
                    statuses.push(response.status().as_u16());
                    held.push(Box::new(response));
                }
                held.push(Box::new(sender));
            }
            Self::H3 => {
                let (endpoint, connection, _) =
                    quic_connect(secure, dir, QuicClient::default()).await?;
                let client = H3Client::new(&connection).await?;
                for _ in 0..n {
                    let (parts, _) = sent.request(absolute("https"), false).into_parts();
                    let mut sender = client.sender.clone();
                    let mut stream = sender.send_request(Request::from_parts(parts, ())).await?;
                    stream.finish().await?;
                    let response = stream.recv_response().await?;
                    statuses.push(response.status().as_u16());
                    held.push(Box::new(stream));
                }
                held.push(Box::new((endpoint, connection, client)));
            }
        }
        Ok(Stalled {
            statuses,
            _held: held,
        })
    }
}

impl Proto {
    /// A new HTTP/2 connection (`H2c` or `H2`) to the matrix proxy: the sender for its
    /// requests, and the task driving it, which ends when the proxy closes the connection.
    pub async fn h2_connection(
        self,
        proxy: &Running,
        dir: &TestDir,
    ) -> anyhow::Result<(
        hyper::client::conn::http2::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    )> {
        let io = self.h2_io(proxy, dir).await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        Ok((sender, tokio::spawn(connection)))
    }

    /// A new connection (`H2c`: TCP; `H2`: TLS with the hybrid group, ALPN h2) to the matrix
    /// proxy, for an HTTP/2 client of the test's choosing.
    pub async fn h2_io(self, proxy: &Running, dir: &TestDir) -> anyhow::Result<Box<dyn Io>> {
        Ok(match self {
            Self::H2c => Box::new(TcpStream::connect(proxy.listener_addr("plain").unwrap()).await?),
            Self::H2 => {
                let tls = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
                let tcp = TcpStream::connect(proxy.listener_addr("secure").unwrap()).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                Box::new(
                    tokio_rustls::TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await?,
                )
            }
            other => anyhow::bail!("{other:?} is not HTTP/2"),
        })
    }
}

/// A byte stream a test client can speak HTTP/2 over.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("request task"));
    }
    out
}

/// One HTTP/3 request with `body` on a new QUIC connection.
async fn h3(
    addr: SocketAddr,
    dir: &TestDir,
    request: Request<Full<Bytes>>,
    body: Bytes,
) -> anyhow::Result<Answer> {
    let (_endpoint, connection, group) = quic_connect(addr, dir, QuicClient::default()).await?;
    anyhow::ensure!(group == Some("X25519MLKEM768"), "{group:?}");
    let mut client = H3Client::new(&connection).await?;
    let (parts, _) = request.into_parts();
    client.send(Request::from_parts(parts, ()), body).await
}

/// One keep-alive connection to the matrix proxy over a protocol, for requests in turn.
pub enum KeepAlive {
    /// HTTP/1.1 (fast or general path) or HTTP/2.
    Hyper {
        h1: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
        h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
        proto: Proto,
    },
    /// HTTP/3, with its QUIC endpoint kept alive.
    H3 {
        client: H3Client,
        _quic: (quinn::Endpoint, quinn::Connection),
    },
}

impl Proto {
    /// Opens a keep-alive connection to the matrix proxy over this protocol.
    pub async fn keep_alive(self, proxy: &Running, dir: &TestDir) -> anyhow::Result<KeepAlive> {
        Ok(match self {
            Self::H1Fast | Self::H1General => {
                let plain = proxy.listener_addr("plain").expect("plain listener");
                let io = TokioIo::new(TcpStream::connect(plain).await?);
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                KeepAlive::Hyper {
                    h1: Some(sender),
                    h2: None,
                    proto: self,
                }
            }
            Self::H2c | Self::H2 => KeepAlive::Hyper {
                h1: None,
                h2: Some(self.h2_connection(proxy, dir).await?.0),
                proto: self,
            },
            Self::H3 => {
                let secure = proxy.listener_addr("secure").expect("secure listener");
                let (endpoint, connection, _) =
                    quic_connect(secure, dir, QuicClient::default()).await?;
                let client = H3Client::new(&connection).await?;
                KeepAlive::H3 {
                    client,
                    _quic: (endpoint, connection),
                }
            }
        })
    }
}

impl KeepAlive {
    /// `GET path` on this connection; the status, once the whole body has arrived.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        use http_body_util::BodyExt;
        match self {
            Self::Hyper { h1, h2, proto } => {
                let absolute = |scheme| format!("{scheme}://localhost{path}");
                let (uri, host) = match proto {
                    Proto::H2c => (absolute("http"), false),
                    Proto::H2 => (absolute("https"), false),
                    _ => (path.to_owned(), true),
                };
                let mut sent = Sent::get(path);
                if *proto == Proto::H1General {
                    for (name, value) in HANDOVER {
                        sent = sent.header(name, value);
                    }
                }
                let request = sent.request(uri, host);
                let response = match (h1, h2) {
                    (Some(h1), _) => h1.send_request(request).await?,
                    (_, Some(h2)) => h2.send_request(request).await?,
                    _ => anyhow::bail!("no connection"),
                };
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok(status)
            }
            Self::H3 { client, .. } => Ok(client
                .request(Method::GET, path, Bytes::new())
                .await?
                .status),
        }
    }
}
