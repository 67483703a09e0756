//! Opens connections to one upstream endpoint: TCP with a deadline, then TLS when configured.
//!
//! A leaf module: the upstream pools and health checks and the carbon feeds' API client both
//! dial through it, and it depends on neither.
//!
//! The connector is bound to its endpoint and ignores the request URI's host, so that the URI can
//! carry the client's authority (HTTP/2 `:authority`) while the socket goes to the endpoint.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::EndpointAddr;
use crate::BoxError;

/// The body type of requests sent upstream (to endpoints and carbon APIs alike).
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Why a connection to an endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint's name did not resolve.
    #[error("cannot resolve {endpoint}: {source}")]
    Resolve {
        /// The endpoint.
        endpoint: String,
        /// The resolver error.
        source: io::Error,
    },
    /// TCP connect failed (refused, unreachable, ...).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake with the endpoint failed.
    #[error("tls handshake with {endpoint} failed: {source}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// The TLS error.
        source: io::Error,
    },
    /// Connect and handshake did not finish within the connect timeout.
    #[error("connect to {endpoint} timed out after {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
}

/// TLS settings for an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointTls {
    /// Client configuration (roots, client certificate, key-exchange groups, ALPN).
    pub config: Arc<rustls::ClientConfig>,
    /// Name verified on the endpoint certificate.
    pub server_name: ServerName<'static>,
}

/// A hyper-util connector for one endpoint.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: Arc<EndpointAddr>,
    connect_timeout: Duration,
    tls: Option<EndpointTls>,
}

impl Connector {
    /// A connector to `endpoint`, speaking TLS when `tls` is set.
    pub fn new(
        endpoint: EndpointAddr,
        connect_timeout: Duration,
        tls: Option<EndpointTls>,
    ) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            connect_timeout,
            tls,
        }
    }

    /// Opens a connection (TCP, then TLS when configured) within the connect timeout.
    pub async fn open(&self) -> Result<UpstreamStream, ConnectError> {
        let timeout = self.connect_timeout;
        match tokio::time::timeout(timeout, self.connect_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout,
            }),
        }
    }

    async fn connect(self) -> Result<TokioIo<UpstreamStream>, ConnectError> {
        self.open().await.map(TokioIo::new)
    }

    async fn connect_inner(&self) -> Result<UpstreamStream, ConnectError> {
        let endpoint = &self.endpoint.to_string();
        let addrs = tokio::net::lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|source| ConnectError::Resolve {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    // Nagle would delay small writes of request heads and bodies.
                    let _ = tcp.set_nodelay(true);
                    return self.secure(tcp, endpoint).await;
                }
                Err(e) => last = e,
            }
        }
        Err(ConnectError::Connect {
            endpoint: endpoint.to_owned(),
            source: last,
        })
    }

    async fn secure(&self, tcp: TcpStream, endpoint: &str) -> Result<UpstreamStream, ConnectError> {
        let Some(tls) = &self.tls else {
            return Ok(UpstreamStream::Plain(tcp));
        };
        let stream = TlsConnector::from(tls.config.clone())
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// A connection to an endpoint, plain or TLS.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamStream {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// The key-exchange group negotiated with the endpoint, for TLS connections.
    pub fn tls_group(&self) -> Option<&'static str> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .map(aegis_tls::group_name),
        }
    }
}

/// The key-exchange group of an upstream TLS connection, attached to responses by hyper-util.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTlsGroup(pub &'static str);

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            Self::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let connected = tcp.connected();
                let connected = match self.tls_group() {
                    Some(group) => connected.extra(UpstreamTlsGroup(group)),
                    None => connected,
                };
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
