//! A small HTTP(S) client for carbon APIs: one base URL, a deadline per call, bounded bodies.
//! HTTPS uses the Mozilla root store and the same post-quantum-first key exchange as upstreams.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;

use crate::config::EndpointAddr;
use crate::dial::{Connector, EndpointTls, UpstreamBody};

/// Largest response body read.
const MAX_BODY: usize = 256 * 1024;

/// A client bound to one API's base URL.
#[derive(Debug)]
pub(super) struct ApiClient {
    client: Client<Connector, UpstreamBody>,
    base: String,
    timeout: Duration,
}

/// A whole response.
#[derive(Debug)]
pub(super) struct ApiResponse {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl ApiClient {
    /// A client for `base_url` (validated as an http(s) URL by the configuration).
    pub(super) fn new(base_url: &str, timeout: Duration) -> Self {
        let uri: Uri = base_url
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://invalid"));
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or("invalid")
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| EndpointTls {
            config: public_roots_client(),
            server_name: ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("static name")),
        });
        let connector = Connector::new(EndpointAddr { host, port }, timeout, tls);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base_url.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    /// `GET base + path_and_query` with `headers`; errors are short reasons for metrics.
    pub(super) async fn get(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, &'static str> {
        let mut request = Request::get(format!("{}{path_and_query}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
        let request = request.body(body).map_err(|_| "bad_request")?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|_| "unreachable")?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|_| "body")?
                .to_bytes();
            Ok(ApiResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "timeout")?
    }
}

/// Pause after a 429 without a usable `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// A feed's pause after the API said "too many requests": no call until it is over.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Backoff {
    /// Whether the feed is still paused.
    pub(super) fn paused(&self) -> bool {
        let until = self.until.lock().map(|p| *p).unwrap_or(None);
        until.is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Pauses for the answer's `Retry-After` seconds (RFC 9110 §10.2.3; the HTTP-date form
    /// and garbage fall back to a minute).
    pub(super) fn pause(&self, headers: &HeaderMap) {
        let wait = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map_or(DEFAULT_BACKOFF, Duration::from_secs);
        if let Ok(mut until) = self.until.lock() {
            *until = Some(std::time::Instant::now() + wait);
        }
    }
}

fn public_roots_client() -> std::sync::Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let options = aegis_tls::ClientOptions {
        roots,
        client_auth: None,
        kx: aegis_tls::KxPolicy::PreferPostQuantum,
        alpn: vec![b"http/1.1".to_vec()],
    };
    // The options are fixed and valid; a failure here would be a bug in aegis-tls.
    aegis_tls::client_config(options).expect("public-roots client config")
}
