//! Serves HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or h2 by ALPN) on one accepted
//! connection, handing every request to [`forward`](super::forward).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::{Activity, InFlight, Progress, Watchdog};
use super::interim::Interim;
use super::{forward, ConnInfo, Proxy};
use crate::config::ListenerConfig;

/// How hyper serves a listener's connections.
#[derive(Debug, Clone)]
pub struct Hyper {
    builder: auto::Builder<TokioExecutor>,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY first).
    idle_timeout: Duration,
    /// How long a client may take to send its first bytes (the HTTP/2 preface).
    head_wait: Duration,
}

impl Hyper {
    /// How long a client may take to send its request head or HTTP/2 preface.
    pub fn head_wait(&self) -> Duration {
        self.head_wait
    }
}

/// The hyper connection builder for a listener, with its limits applied.
pub fn builder(config: &ListenerConfig) -> Hyper {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.head_wait())
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_pending_accept_reset_streams(64);
    let builder = match (config.protocols.http1, config.protocols.http2) {
        (true, false) => builder.http1_only(),
        (false, true) => builder.http2_only(),
        _ => builder,
    };
    Hyper {
        builder,
        idle_timeout: config.idle_timeout,
        head_wait: config.head_wait(),
    }
}

/// Serves one connection until it closes, or drains it once `shutdown` turns true or no
/// request has been in flight for the idle timeout: HTTP/1 finishes the request in flight,
/// HTTP/2 sends GOAWAY and finishes open streams.
pub async fn serve_connection<I>(
    hyper: &Hyper,
    io: I,
    proxy: Arc<ArcSwap<Proxy>>,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let mut conn = conn;
    conn.admitted = Some(Arc::new(AtomicUsize::new(0)));
    let watchdog = Arc::new(Watchdog::new(conn.rules.stream_idle_timeout));
    let activity = Arc::new(Activity::new());
    let service = service(proxy, Arc::new(conn), activity.clone(), watchdog.clone());
    let io = super::linger::Lingering::new(io);
    let connection = hyper.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut idle_check = pin!(tokio::time::sleep(hyper.idle_timeout));
    let mut stream_check = pin!(tokio::time::sleep(watchdog.period()));
    // Shutting down, the process's drain timeout bounds the wait; an idle close gives the
    // client this long after GOAWAY, whether or not it answers (RFC 9113 §6.8 lets the
    // sender close once it has waited).
    let grace = loop {
        tokio::select! {
            result = connection.as_mut() => {
                match result {
                    Err(error) if told_to_calm_down(&*error) => tracing::warn!(
                        client = %peer,
                        "closed with GOAWAY(ENHANCE_YOUR_CALM): the client cancels most of its requests (rapid reset)"
                    ),
                    Err(error) => tracing::debug!(%error, "connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            _ = shutdown.wait_for(|stop| *stop) => break None,
            _ = stream_check.as_mut() => {
                watchdog.sweep();
                stream_check.as_mut().reset(Instant::now() + watchdog.period());
            }
            _ = idle_check.as_mut() => match activity.idle_until(hyper.idle_timeout) {
                Some(next_check) => idle_check.as_mut().reset(next_check),
                None => {
                    tracing::debug!(client = %peer, "idle connection closed");
                    break Some(hyper.head_wait);
                }
            },
        }
    };
    connection.as_mut().graceful_shutdown();
    drain(connection, grace, peer).await;
}

/// The service for one connection's requests: each goes to [`forward`] with the routes and
/// clusters current when it arrives (a reload never changes them under a request in flight),
/// counted in `activity` and watched by `watchdog` until its response body is done.
fn service(
    proxy: Arc<ArcSwap<Proxy>>,
    conn: Arc<ConnInfo>,
    activity: Arc<Activity>,
    watchdog: Arc<Watchdog>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<super::activity::Watched>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&activity);
        let interim = request.body_mut().take_informational().map(Interim);
        let stream = watchdog.register();
        let http2 = request.version() == hyper::Version::HTTP_2;
        let request = request.map(|body| Progress::new(body, stream.clone(), http2));
        let proxy = proxy.load_full();
        let conn = conn.clone();
        // Boxed: hyper keeps a slot the size of this future for the whole life of an HTTP/1
        // connection; boxed, an idle keep-alive connection holds a pointer, not the future.
        Box::pin(async move {
            let response = forward(&proxy, &conn, request, interim).await;
            // In flight until the whole response body has been sent, dropped or cut off.
            Ok::<_, Infallible>(response.map(|body| stream.hold(body, in_flight)))
        })
    })
}

/// Waits for a connection told to shut down gracefully: to its end when the process drains
/// (`grace` is `None`: the drain timeout bounds the wait), or for at most `grace` after an
/// idle close.
async fn drain(
    connection: impl Future<Output = Result<(), crate::BoxError>>,
    grace: Option<Duration>,
    peer: SocketAddr,
) {
    let drained = async {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error while draining");
        }
    };
    match grace {
        None => drained.await,
        Some(grace) => {
            if tokio::time::timeout(grace, drained).await.is_err() {
                tracing::debug!(client = %peer, "closed: no close from the client after GOAWAY");
            }
        }
    }
}

/// Whether h2 ended the connection with GOAWAY(ENHANCE_YOUR_CALM), as it does for a client
/// that cancels most of the requests it starts (rapid reset, CVE-2023-44487, however paced;
/// the rule is in the patched h2, `patches/README.md`) or floods it with resets.
fn told_to_calm_down(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        cause = error.source();
    }
    false
}
