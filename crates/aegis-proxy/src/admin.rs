//! The admin listener: `/ui` (a live page), `/healthz`, `/ready`, `/metrics` (Prometheus),
//! `/config` (the configuration in force, JSON or TOML),
//! `/clusters` (endpoint health), `/carbon` (why traffic goes where it goes) and
//! `POST /reload`.
//!
//! Not a way in: only IP, `localhost` or configured Host values are served (no DNS
//! rebinding); `POST` needs the bearer token when one is configured, and otherwise a loopback
//! Host and no cross-site `Origin` (no CSRF from a browser); request heads have a deadline and
//! connections a cap, so idle admin clients cannot take the process's file descriptors.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::AdminConfig;
use crate::control::Control;
use crate::metrics::text as metrics_text;

mod carbon;
mod ui;

/// What the admin pages show and control.
#[derive(Debug)]
pub struct AdminState {
    /// Registry holding every proxy metric.
    pub registry: Registry,
    /// The running proxy: current config, clusters, reload.
    pub control: Arc<Control>,
    /// Who may use the admin listener, and its limits.
    pub settings: AdminConfig,
}

/// Serves admin requests until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(state.settings.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                crate::listener::accept_failed("admin", &error).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = state.settings.max_connections,
                "admin connection refused: admin.max_connections reached"
            );
            continue; // dropping the stream closes it
        };
        tokio::spawn(serve_connection(stream, state.clone(), slot));
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<AdminState>, _slot: OwnedSemaphorePermit) {
    let timeout = state.settings.header_read_timeout;
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, &request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Err(refused) = authorize(&state.settings, request) {
        return refused.response();
    }
    let method = request.method();
    let path = request.uri().path();
    if path == "/reload" {
        return match *method {
            Method::POST => reload(&state.control).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n"),
        };
    }
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" if state.control.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/metrics" => {
            let accept = request.headers().get(header::ACCEPT);
            metrics(state, accept.and_then(|v| v.to_str().ok()))
        }
        "/config" => config_page(&state.control, request.uri().query()),
        "/clusters" => json(clusters(&state.control)),
        "/carbon" => json(carbon::page(&state.control.proxy.load())),
        other => ui::file(other).unwrap_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                "not found: try /ui /healthz /ready /metrics /config /clusters /carbon, or POST /reload\n",
            )
        }),
    }
}

/// `/config`: the configuration in force as JSON, or with `?format=toml` as a file that
/// validates to it.
fn config_page(control: &Control, query: Option<&str>) -> Response<Full<Bytes>> {
    let page = control.config_page.load();
    match query {
        Some("format=toml") => with_type(
            Response::new(Full::from(page.toml.clone())),
            "application/toml",
        ),
        None | Some("" | "format=json") => json(page.json.clone()),
        Some(_) => text(
            StatusCode::BAD_REQUEST,
            "/config takes ?format=json (the default) or ?format=toml\n",
        ),
    }
}

/// `POST /reload`: 200 with what changed, or 400 with every error, one per line, as `validate`
/// prints them (the running configuration stays).
async fn reload(control: &Control) -> Response<Full<Bytes>> {
    match control.reload_file().await {
        Ok(summary) => {
            let body = format!(
                "reloaded: {} clusters; listeners added {:?}, updated {:?}, removed {:?}\n",
                summary.clusters, summary.added, summary.updated, summary.removed
            );
            text_owned(StatusCode::OK, body)
        }
        Err(errors) => {
            for error in &errors.0 {
                tracing::warn!(%error, "reload rejected");
            }
            text_owned(
                StatusCode::BAD_REQUEST,
                format!("reload rejected, still running the previous configuration:\n{errors}\n"),
            )
        }
    }
}

/// `/clusters`: every endpoint's health, ejection and load, as JSON.
fn clusters(control: &Control) -> String {
    let proxy = control.proxy.load();
    let clusters: serde_json::Map<String, serde_json::Value> = proxy
        .clusters()
        .iter()
        .map(|c| {
            let endpoints: Vec<_> = c
                .endpoints
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "endpoint": e.label,
                        "region": e.region.as_deref(),
                        "healthy": e.health.is_available(),
                        "passes_health_checks": e.health.passes_checks(),
                        "ejected_for_ms": e.health.ejected_for().map(|d| d.as_millis() as u64),
                        "ejections": e.health.ejections_total(),
                        "active_requests": e.active(),
                        "idle_connections": e.idle.len(),
                    })
                })
                .collect();
            let value = serde_json::json!({
                "pending_requests": c.pending(),
                "health_checks": c.health_check.is_some(),
                "endpoints": endpoints,
            });
            (c.name.to_string(), value)
        })
        .collect();
    serde_json::to_string_pretty(&clusters).unwrap_or_default()
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// A Host that a rebound DNS name could carry.
    Host,
    /// No or the wrong bearer token where one is needed.
    Token,
    /// A write from another site's page, or to a name rather than loopback, without a token.
    CrossSite,
}

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Host => text(
                StatusCode::FORBIDDEN,
                "host not allowed on the admin listener\n",
            ),
            Self::Token => {
                let mut response = text(StatusCode::UNAUTHORIZED, "admin token required\n");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::CrossSite => text(
                StatusCode::FORBIDDEN,
                "cross-site or non-loopback admin write refused: set admin.token_env\n",
            ),
        }
    }
}

/// The checks every admin request passes before it is served: a Host that cannot be a
/// rebound DNS name, the token where one is needed, no cross-site writes.
fn authorize<B>(settings: &AdminConfig, request: &Request<B>) -> Result<(), Refusal> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| crate::http::host::validate(h.as_bytes()).ok())
        .filter(|h| host_allowed(settings, h))
        .ok_or(Refusal::Host)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let authorized = match (&settings.token, presented) {
        (Some(token), Some(presented)) if token.matches(presented) => true,
        (Some(_), Some(_)) => return Err(Refusal::Token),
        // No token configured: a presented one means nothing.
        (_, None) | (None, _) => false,
    };
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if authorized || (!writes && !settings.token_for_reads) {
        return Ok(());
    }
    if settings.token.is_some() {
        return Err(Refusal::Token);
    }
    // No token configured: writes come only from this machine, and never from a browser page
    // of another site (a cross-site form or fetch carries its Origin).
    let foreign_origin = headers
        .get(header::ORIGIN)
        .is_some_and(|o| !same_machine(o));
    if !is_loopback_name(host) || foreign_origin {
        return Err(Refusal::CrossSite);
    }
    Ok(())
}

/// IP literals (never the target of DNS rebinding), `localhost`, and the configured names.
fn host_allowed(settings: &AdminConfig, host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.starts_with('[')
        || name.eq_ignore_ascii_case("localhost")
        || settings
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn is_loopback_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether an `Origin` header names a page served from this machine.
fn same_machine(origin: &HeaderValue) -> bool {
    let Ok(uri) = origin.to_str().unwrap_or("").parse::<http::Uri>() else {
        return false;
    };
    uri.host().is_some_and(is_loopback_name)
}

fn json(body: String) -> Response<Full<Bytes>> {
    with_type(Response::new(Full::from(body)), "application/json")
}

/// OpenMetrics when the scraper asks for it, the Prometheus text format otherwise.
fn metrics(state: &AdminState, accept: Option<&str>) -> Response<Full<Bytes>> {
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        tracing::error!(%error, "encoding metrics failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    if metrics_text::wants_openmetrics(accept) {
        return with_type(Response::new(Full::from(body)), metrics_text::OPENMETRICS);
    }
    let body = metrics_text::to_prometheus_text(&body);
    with_type(
        Response::new(Full::from(body)),
        metrics_text::PROMETHEUS_TEXT,
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text_owned(status, body.to_owned())
}

fn text_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = with_type(Response::new(Full::from(body)), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
