//! What is known about one request, recorded as metrics and one JSON access-log line when the
//! response body ends (or is dropped, when the client goes away).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::metrics::{Metrics, RequestLabels};
use crate::upstream::InFlight;
use crate::{Body, BoxError};

/// The access-log tracing target; the JSON log layer selects on it.
pub const ACCESS_LOG_TARGET: &str = "aegis::access";

/// Per-request facts, filled in as the request moves through the phases.
#[derive(Debug)]
pub struct RequestRecord {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: bool,
    pub(crate) start: Instant,
    pub(crate) listener: Arc<str>,
    pub(crate) client: SocketAddr,
    pub(crate) tls_group: Option<&'static str>,
    pub(crate) protocol: &'static str,
    pub(crate) method: http::Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) upstream_tls_group: Option<&'static str>,
    pub(crate) upstream_ms: Option<f64>,
    pub(crate) status: u16,
    pub(crate) error: Option<&'static str>,
    pub(crate) in_flight: Option<InFlight>,
}

impl RequestRecord {
    fn finish(self, bytes_sent: u64, completed: bool) {
        let labels = RequestLabels {
            listener: self.listener.to_string(),
            route: self.route.as_deref().unwrap_or("").to_owned(),
            cluster: self.cluster.as_deref().unwrap_or("").to_owned(),
            status: self.status,
            protocol: self.protocol,
        };
        self.metrics.requests.get_or_create(&labels).inc();
        if !self.access_log {
            return;
        }
        let duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let endpoint = self.in_flight.as_ref().map(|f| f.endpoint().label.as_str());
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            listener = &*self.listener,
            client = %self.client,
            protocol = self.protocol,
            tls_group = self.tls_group,
            method = %self.method,
            host = self.host,
            path = self.path,
            status = self.status,
            route = self.route.as_deref(),
            cluster = self.cluster.as_deref(),
            endpoint,
            upstream_tls_group = self.upstream_tls_group,
            upstream_ms = self.upstream_ms,
            duration_ms,
            bytes_sent,
            completed,
            error = self.error,
        );
    }
}

/// A response body that records its request when it ends.
#[derive(Debug)]
pub struct Recorded {
    inner: Body,
    record: Option<RequestRecord>,
    bytes: u64,
}

impl Recorded {
    /// Wraps `inner`; `record` is written when the body ends or is dropped.
    pub fn new(inner: Body, record: RequestRecord) -> Self {
        let mut recorded = Self {
            inner,
            record: Some(record),
            bytes: 0,
        };
        if recorded.inner.is_end_stream() {
            recorded.finish(true);
        }
        recorded
    }

    fn finish(&mut self, completed: bool) {
        if let Some(record) = self.record.take() {
            record.finish(self.bytes, completed);
        }
    }
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let completed = self.inner.is_end_stream();
        self.finish(completed);
    }
}
