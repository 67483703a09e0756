//! TCP listeners: accept, optional TLS handshake (counted by group), then HTTP/1.1 or HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::{alpn_name, handshake_done, handshake_failed, ActiveGuard};
use crate::config::ListenerConfig;
use crate::http::framing::FramingGuard;
use crate::http::{server, ConnInfo, Proxy};
use crate::metrics::ListenerLabels;

/// A bound listener socket and what its connections need.
///
/// The socket is kept apart from [`Shared`], which connections hold: when the accept loop ends,
/// the socket closes at once even while connections drain.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection of a listener reads.
struct Shared {
    name: Arc<str>,
    config: ListenerConfig,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    alt_svc: Option<http::HeaderValue>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds the listener's socket.
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(config.addr).await?;
        let shared = Shared {
            name: Arc::from(config.name.as_str()),
            builder: server::builder(config),
            tls: config
                .tls
                .as_ref()
                .map(|t| TlsAcceptor::from(t.server_config.clone())),
            config: config.clone(),
            alt_svc: None,
        };
        Ok(Self {
            tcp,
            shared: Arc::new(shared),
        })
    }

    /// Sets the `alt-svc` value advertised on every response.
    pub fn with_alt_svc(mut self, alt_svc: Option<http::HeaderValue>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.alt_svc = alt_svc;
        }
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `shutdown` turns true. Each connection task holds a clone of
    /// `drain`, so the receiver learns when the last one has finished.
    pub async fn run(
        self,
        proxy: Arc<Proxy>,
        mut shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    tracing::warn!(listener = &*self.shared.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let task = Connection {
                listener: self.shared.clone(),
                proxy: proxy.clone(),
                shutdown: shutdown.clone(),
                _drain: drain.clone(),
            };
            tokio::spawn(task.serve(stream, peer));
        }
    }
}

/// One accepted client connection.
struct Connection {
    listener: Arc<Shared>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let metrics = self.proxy.metrics().clone();
        let labels = ListenerLabels {
            listener: self.listener.name.to_string(),
        };
        metrics.connections_total.get_or_create(&labels).inc();
        let _active = ActiveGuard::new(metrics.connections_active.get_or_create(&labels).clone());
        let mut info = ConnInfo {
            listener: self.listener.name.clone(),
            peer,
            secure: false,
            tls_group: None,
            max_request_body_bytes: self.listener.config.max_request_body_bytes,
            alt_svc: self.listener.alt_svc.clone(),
        };
        let Some(acceptor) = &self.listener.tls else {
            server::serve_connection(
                &self.listener.builder,
                FramingGuard::new(stream),
                self.proxy,
                info,
                self.shutdown,
            )
            .await;
            return;
        };
        let timeout = self.listener.config.handshake_timeout;
        let accepted = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                let reason = aegis_tls::failure_reason(&error);
                return handshake_failed(&metrics, &self.listener.name, peer, reason, &error);
            }
            Err(_) => {
                let error = "handshake timed out";
                return handshake_failed(&metrics, &self.listener.name, peer, "timeout", &error);
            }
        };
        let session = tls.get_ref().1;
        let group = session
            .negotiated_key_exchange_group()
            .map(aegis_tls::group_name);
        let protocol = alpn_name(session.alpn_protocol());
        handshake_done(&metrics, &self.listener.name, peer, group, protocol);
        info.secure = true;
        info.tls_group = group;
        let builder = &self.listener.builder;
        if protocol == "h2" {
            server::serve_connection(builder, tls, self.proxy, info, self.shutdown).await;
        } else {
            let tls = FramingGuard::new(tls);
            server::serve_connection(builder, tls, self.proxy, info, self.shutdown).await;
        }
    }
}
