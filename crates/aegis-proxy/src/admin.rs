//! The admin listener: `/healthz`, `/ready`, `/metrics` (Prometheus), `/config` (redacted),
//! `/clusters` (endpoint health) and `POST /reload`.
//!
//! Meant for loopback: it has no authentication.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::Control;

/// What the admin pages show and control.
#[derive(Debug)]
pub struct AdminState {
    /// Registry holding every proxy metric.
    pub registry: Registry,
    /// The running proxy: current config, clusters, reload.
    pub control: Arc<Control>,
}

/// Serves admin requests until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
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
        "/metrics" => metrics(state),
        "/config" => json(state.control.config_json.load().as_str().to_owned()),
        "/clusters" => json(clusters(&state.control)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz /ready /metrics /config /clusters, or POST /reload\n",
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

fn json(body: String) -> Response<Full<Bytes>> {
    with_type(Response::new(Full::from(body)), "application/json")
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        tracing::error!(%error, "encoding metrics failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    with_type(
        Response::new(Full::from(body)),
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
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
