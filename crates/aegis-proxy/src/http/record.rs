//! What is known about one request, recorded as metrics and one JSON access-log line when the
//! response body ends (or is dropped, when the client goes away), or, for a request whose
//! client gave up before it was answered (an HTTP/2 reset, an HTTP/3 STOP_SENDING), when its
//! future is dropped: status 499, as nginx logs it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::metrics::{CarbonRequestLabels, ClusterLabels, Metrics, RegionLabels, RequestLabels};
use crate::upstream::{Admission, InFlight};
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
    /// The query as `[server] access_log_query` keeps it; empty unless logged.
    pub(crate) query: String,
    /// `User-Agent`, when logged.
    pub(crate) user_agent: String,
    /// The client's `X-Request-Id` or a generated one, when logged.
    pub(crate) request_id: String,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) upstream_tls_group: Option<&'static str>,
    pub(crate) upstream_ms: Option<f64>,
    pub(crate) status: u16,
    pub(crate) error: Option<&'static str>,
    pub(crate) in_flight: Option<InFlight>,
    /// Holds the request's place in its cluster's pending counts until the response ends.
    pub(crate) admitted: Option<Admission>,
    pub(crate) body_limit: Option<u64>,
    /// Request body bytes read from the client, where the transport counts them.
    pub(crate) received: Received,
    pub(crate) carbon: Option<CarbonRecord>,
    /// Counted and logged already.
    pub(crate) written: bool,
}

/// How many request body bytes came from the client.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub enum Received {
    /// No body, or not counted.
    #[default]
    None,
    /// A known number (the HTTP/1.1 fast path forwards exactly `Content-Length`).
    Bytes(u64),
    /// Counted as the body streams ([`RequestRecord::count_received`]).
    Counted(Arc<AtomicU64>),
}

impl Received {
    fn bytes(&self) -> u64 {
        match self {
            Self::None => 0,
            Self::Bytes(n) => *n,
            Self::Counted(n) => n.load(Ordering::Relaxed),
        }
    }
}

/// Milliseconds rounded to the microsecond: the precision a clock read gives, no more.
fn millis_to_micros(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The longest `X-Request-Id` logged; a longer one is cut.
const MAX_REQUEST_ID: usize = 128;

/// What the access log keeps of a `User-Agent` or `X-Request-Id` value: printable ASCII only,
/// at most `max` bytes.
pub(crate) fn loggable(value: &[u8], max: usize) -> String {
    value
        .iter()
        .take(max)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Fills the access log's query, user agent and request id of `record`.
pub(crate) fn note_client_fields(
    record: &mut RequestRecord,
    query: Option<&str>,
    user_agent: Option<&[u8]>,
    request_id: Option<&[u8]>,
    rule: crate::config::QueryLog,
) {
    record.query = query.map(|q| rule.apply(q)).unwrap_or_default();
    record.user_agent = user_agent_of(user_agent);
    record.request_id = request_id_of(request_id);
}

/// The longest `User-Agent` logged; a longer one is cut.
const MAX_USER_AGENT: usize = 512;

/// What the access log keeps of a `User-Agent`: empty when the client sent none.
pub(crate) fn user_agent_of(sent: Option<&[u8]>) -> String {
    sent.map(|v| loggable(v, MAX_USER_AGENT))
        .unwrap_or_default()
}

/// The request id the access log gives a request: the client's `X-Request-Id`, or, as nginx's
/// `$request_id`, 16 random hex digits when it sent none (logged only, not forwarded).
pub(crate) fn request_id_of(sent: Option<&[u8]>) -> String {
    match sent {
        Some(value) => loggable(value, MAX_REQUEST_ID),
        None => format!("{:016x}", rand::random::<u64>()),
    }
}

/// nginx's status for a request whose client went away before it was answered.
pub const CLIENT_CLOSED: u16 = 499;
/// The access log's `error` for it.
pub const CLIENT_CLOSED_REASON: &str = "client_closed";

/// The carbon side of a request: where it went, why, and what that emitted.
#[derive(Debug, Clone)]
pub struct CarbonRecord {
    /// Region that served it.
    pub region: Arc<str>,
    /// That region's intensity, gCO2eq/kWh.
    pub intensity: f64,
    /// Intensity of where the cluster's baseline would have sent the request (NaN: nowhere).
    pub baseline_intensity: f64,
    /// Cluster policy name.
    pub policy: &'static str,
    /// Decision reason.
    pub reason: &'static str,
    /// Energy model.
    pub energy: aegis_carbon::energy::EnergyModel,
}

impl RequestRecord {
    /// A counter the request body adds its bytes to as it streams.
    pub fn count_received(&mut self) -> Arc<AtomicU64> {
        let count = Arc::new(AtomicU64::new(0));
        self.received = Received::Counted(count.clone());
        count
    }

    /// Counts the request and writes its access-log line: `bytes_sent` body bytes, and whether
    /// the response was sent completely.
    pub fn finish(mut self, bytes_sent: u64, completed: bool) {
        self.write(bytes_sent, completed);
    }

    /// Counts and logs the request as abandoned by its client before it was answered: 499.
    pub fn client_closed(mut self) {
        self.write_client_closed();
    }

    fn write_client_closed(&mut self) {
        self.status = CLIENT_CLOSED;
        self.error.get_or_insert(CLIENT_CLOSED_REASON);
        self.write(0, false);
    }

    fn write(&mut self, bytes_sent: u64, completed: bool) {
        self.written = true;
        let no_label = || self.metrics.no_label.clone();
        let labels = RequestLabels {
            listener: self.listener.clone(),
            route: self.route.clone().unwrap_or_else(no_label),
            cluster: self.cluster.clone().unwrap_or_else(no_label),
            status: self.status,
            protocol: self.protocol,
        };
        let cluster = labels.cluster.clone();
        let seconds = self.start.elapsed().as_secs_f64();
        let received = self.received.bytes();
        crate::metrics::count_request(&self.metrics, labels, seconds, received, bytes_sent);
        if let Some(carbon) = &self.carbon {
            self.account(carbon, &cluster, bytes_sent);
        }
        if !self.access_log {
            return;
        }
        let duration_ms = millis_to_micros(self.start.elapsed().as_secs_f64() * 1000.0);
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
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
            query = nonempty(&self.query),
            user_agent = nonempty(&self.user_agent),
            request_id = nonempty(&self.request_id),
            status = self.status,
            route = self.route.as_deref(),
            cluster = self.cluster.as_deref(),
            endpoint,
            upstream_tls_group = self.upstream_tls_group,
            upstream_ms = self.upstream_ms.map(millis_to_micros),
            duration_ms,
            bytes_received = self.received.bytes(),
            bytes_sent,
            completed,
            error = self.error,
            region = self.carbon.as_ref().map(|c| &*c.region),
            intensity = self.carbon.as_ref().map(|c| c.intensity),
            carbon_policy = self.carbon.as_ref().map(|c| c.policy),
            carbon_reason = self.carbon.as_ref().map(|c| c.reason),
        );
    }

    fn account(&self, carbon: &CarbonRecord, cluster: &Arc<str>, bytes: u64) {
        let metrics = &self.metrics;
        let grams = carbon.energy.grams(carbon.intensity, bytes);
        let baseline = carbon.energy.grams(carbon.baseline_intensity, bytes);
        let region = RegionLabels {
            region: carbon.region.clone(),
        };
        let cluster = ClusterLabels {
            cluster: cluster.clone(),
        };
        metrics.carbon_emitted.get_or_create(&region).inc_by(grams);
        // No baseline (no region the baseline could have used): neither saved nor lost.
        if baseline.is_finite() {
            metrics
                .carbon_baseline
                .get_or_create(&cluster)
                .inc_by(baseline);
            metrics
                .carbon_saved
                .get_or_create(&cluster)
                .inc_by(baseline - grams);
        }
        metrics
            .carbon_requests
            .get_or_create(&CarbonRequestLabels {
                cluster: cluster.cluster,
                region: region.region,
                reason: carbon.reason,
            })
            .inc();
    }
}

/// A response body that records its request when it ends.
#[derive(Debug)]
pub struct Recorded {
    inner: Body,
    record: Option<RequestRecord>,
    bytes: u64,
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.written {
            // Dropped unanswered: the request's future went away with its client.
            self.write_client_closed();
        }
    }
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
