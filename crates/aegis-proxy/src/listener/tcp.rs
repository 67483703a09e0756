//! TCP listeners: accept, optional TLS handshake (counted by group), then HTTP/1.1 or HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwap;

use super::{alpn_name, handshake_done, handshake_failed, ActiveGuard};
use crate::config::ListenerConfig;
use crate::http::proxy::RequestRules;
use crate::http::{h1, preface, server, ConnInfo, Proxy};
use crate::limit::{ConnectionLimit, Slot};
use crate::metrics::{ListenerLabels, Metrics};

/// A bound listener socket and what its connections need.
///
/// The socket is kept apart from [`Settings`], which connections hold: when the accept loop ends,
/// the socket closes at once even while connections drain. A reload swaps the settings (TLS
/// certificates, timeouts, limits) without closing the socket.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    settings: Arc<ArcSwap<Settings>>,
}

/// What every connection of a listener reads, as of its accept.
pub struct Settings {
    name: Arc<str>,
    config: ListenerConfig,
    builder: server::Hyper,
    tls: Option<TlsAcceptor>,
    rules: Arc<RequestRules>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings for `config`, advertising `alt_svc` on every response.
    pub fn new(config: &ListenerConfig, alt_svc: Option<http::HeaderValue>) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            builder: server::builder(config),
            tls: config
                .tls
                .as_ref()
                .map(|t| TlsAcceptor::from(t.server_config.clone())),
            config: config.clone(),
            rules: Arc::new(RequestRules::new(config, alt_svc)),
        }
    }
}

/// Connection limits checked at accept: the listener's own and the process-wide one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// This listener's limit.
    pub listener: Arc<ConnectionLimit>,
    /// The limit over all listeners.
    pub global: Arc<ConnectionLimit>,
}

impl Limits {
    /// Slots for one more connection under both limits; over either, counts the refusal.
    pub fn admit(&self, metrics: &Metrics, listener: &str) -> Option<(Slot, Slot)> {
        let global = self.global.try_acquire();
        let slots = global.and_then(|g| self.listener.try_acquire().map(|l| (g, l)));
        if slots.is_none() {
            let labels = ListenerLabels {
                listener: listener.to_owned(),
            };
            metrics.connections_refused.get_or_create(&labels).inc();
        }
        slots
    }
}

impl Listener {
    /// Binds the listener's socket with the configured backlog (the kernel caps it at
    /// `net.core.somaxconn`).
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<Self> {
        let socket = match config.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted proxy can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(config.addr)?;
        let tcp = socket.listen(config.backlog)?;
        let settings = Settings::new(config, None);
        Ok(Self {
            tcp,
            settings: Arc::new(ArcSwap::from_pointee(settings)),
        })
    }

    /// The settings a reload swaps.
    pub fn settings(&self) -> &Arc<ArcSwap<Settings>> {
        &self.settings
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `stop` turns true. Each connection task holds a clone of
    /// `drain`, so the receiver learns when the last one has finished.
    pub async fn run(
        self,
        proxy: Arc<ArcSwap<Proxy>>,
        limits: Limits,
        mut stop: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let settings = self.settings.load_full();
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    super::accept_failed(&settings.name, &error).await;
                    continue;
                }
            };
            let Some(slots) = limits.admit(proxy.load().metrics(), &settings.name) else {
                refuse(stream, &settings);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let task = Connection {
                listener: settings,
                proxy: proxy.clone(),
                stop: stop.clone(),
                _slots: slots,
                _drain: drain.clone(),
            };
            tokio::spawn(task.serve(stream, peer));
        }
    }
}

/// Over a connection limit: plain HTTP clients get a `503` with `retry-after` and the connection
/// closes; TLS clients are closed at once (a handshake would spend the CPU the limit protects).
fn refuse(stream: TcpStream, settings: &Settings) {
    if settings.tls.is_some() {
        return;
    }
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let answer = async {
            stream.write_all(OVERLOADED_RESPONSE).await?;
            stream.shutdown().await?;
            // Read what the client sent, so closing does not reset the answer away.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    });
}

const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 26\r\n\r\ntoo many open connections\n";

/// What the forward path learns about a new connection on `listener`.
fn conn_info(listener: &Settings, peer: SocketAddr) -> ConnInfo {
    ConnInfo {
        listener: listener.name.clone(),
        peer,
        peer_value: crate::http::headers::address_value(peer.ip()),
        secure: false,
        tls_group: None,
        rules: listener.rules.clone(),
        admitted: None,
    }
}

/// One accepted client connection.
struct Connection {
    listener: Arc<Settings>,
    proxy: Arc<ArcSwap<Proxy>>,
    stop: watch::Receiver<bool>,
    _slots: (Slot, Slot),
    _drain: mpsc::Sender<()>,
}

impl Connection {
    /// Counts the connection as opened, and as active until the guard drops.
    fn count(&self) -> ActiveGuard {
        let metrics = self.proxy.load().metrics().clone();
        let labels = ListenerLabels {
            listener: self.listener.name.to_string(),
        };
        metrics.connections_total.get_or_create(&labels).inc();
        let active = metrics.connections_active.get_or_create(&labels).clone();
        ActiveGuard::new(active)
    }

    // Every value held across an await here is part of each connection's task for its whole
    // life: the large states (TLS, hyper) are boxed, and `ConnInfo` is built where it is used.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment on the async block
    fn serve(self, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
        // An async block, not an `async fn`, which would hold a second copy of its arguments.
        async move {
            let _active = self.count();
            let builder = &self.listener.builder;
            let config = &self.listener.config;
            let fast = config.protocols.http1.then_some(h1::Limits {
                header_read_timeout: config.head_wait(),
                max_header_bytes: config.max_header_bytes,
                h2c: config.protocols.http2 && self.listener.tls.is_none(),
            });
            let Some(acceptor) = &self.listener.tls else {
                match fast {
                    Some(limits) => {
                        let info = conn_info(&self.listener, peer);
                        h1::serve(stream, builder, limits, self.proxy, info, self.stop).await
                    }
                    // HTTP/2 only. Boxed, like the TLS path below: the task of a plain HTTP/1
                    // connection stays the size of the fast path's state, not of hyper's.
                    None => {
                        let info = conn_info(&self.listener, peer);
                        Box::pin(serve_h2(builder, stream, self.proxy, info, self.stop)).await
                    }
                }
                return;
            };
            let acceptor = acceptor.clone();
            let info = conn_info(&self.listener, peer);
            Box::pin(self.serve_tls(acceptor, stream, info, fast)).await;
        }
    }

    async fn serve_tls(
        self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        mut info: ConnInfo,
        fast: Option<h1::Limits>,
    ) {
        let peer = info.peer;
        let metrics = self.proxy.load().metrics().clone();
        let builder = &self.listener.builder;
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
        match fast {
            Some(limits) if protocol != "h2" => {
                h1::serve(tls, builder, limits, self.proxy, info, self.stop).await
            }
            // ALPN h2, or a listener that serves only HTTP/2.
            _ => serve_h2(builder, tls, self.proxy, info, self.stop).await,
        }
    }
}

/// Serves an HTTP/2 connection once its client preface has been read and checked: an invalid
/// preface is answered with GOAWAY(PROTOCOL_ERROR), never handed to hyper.
async fn serve_h2<I>(
    builder: &server::Hyper,
    io: I,
    proxy: Arc<ArcSwap<Proxy>>,
    info: ConnInfo,
    stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(io) = preface::expect(io, builder.head_wait()).await else {
        return;
    };
    server::serve_connection(builder, io, proxy, info, stop).await
}
