//! Serves HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or h2 by ALPN) on one accepted
//! connection, handing every request to [`forward`](super::forward).

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::{forward, ConnInfo, Proxy};
use crate::config::ListenerConfig;

/// The hyper connection builder for a listener, with its limits applied.
pub fn builder(config: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64);
    match (config.protocols.http1, config.protocols.http2) {
        (true, false) => builder.http1_only(),
        (false, true) => builder.http2_only(),
        _ => builder,
    }
}

/// Serves one connection until it closes, or drains it once `shutdown` turns true: HTTP/1
/// finishes the request in flight, HTTP/2 sends GOAWAY and finishes open streams.
pub async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    proxy: Arc<ArcSwap<Proxy>>,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        // Each request uses the routes and clusters current when it arrives; a reload never
        // changes them under a request in flight.
        let proxy = proxy.load_full();
        let conn = conn.clone();
        // Boxed: hyper keeps a slot the size of this future for the whole life of an HTTP/1
        // connection; boxed, an idle keep-alive connection holds a pointer, not the future.
        Box::pin(async move { Ok::<_, Infallible>(forward(&proxy, &conn, request).await) })
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error while draining");
    }
}
