//! Counting one answered request: `aegis_http_requests_total`, the client-facing duration and
//! the body bytes both ways.
//!
//! Four family lookups per request (each a lock and a hash of five labels) cost about 3 % of
//! an HTTP/1.1 request's CPU. Requests in a row on one thread mostly share their labels (a
//! keep-alive connection to one route), so each thread keeps the handles of the last label set
//! and a request with the same labels touches no family at all.

use std::cell::RefCell;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{status_class, DurationLabels, Metrics, RequestLabels, TrafficLabels};

/// The handles of one label set.
struct Handles {
    /// Held, so that the cache is never mistaken for another proxy's whose `Metrics` took the
    /// same address.
    metrics: Arc<Metrics>,
    labels: RequestLabels,
    requests: Counter,
    duration: Histogram,
    received: Counter,
    sent: Counter,
}

thread_local! {
    /// Not a registry: a cache of handles into the registry the caller passed in.
    static LAST: RefCell<Option<Handles>> = const { RefCell::new(None) };
}

impl Handles {
    fn new(metrics: &Arc<Metrics>, labels: RequestLabels) -> Self {
        let duration = DurationLabels {
            listener: labels.listener.clone(),
            route: labels.route.clone(),
            cluster: labels.cluster.clone(),
            protocol: labels.protocol,
            status_class: status_class(labels.status),
        };
        let traffic = TrafficLabels {
            listener: labels.listener.clone(),
            route: labels.route.clone(),
            cluster: labels.cluster.clone(),
            protocol: labels.protocol,
        };
        Self {
            metrics: metrics.clone(),
            requests: metrics.requests.get_or_create(&labels).clone(),
            duration: metrics.request_duration.get_or_create(&duration).clone(),
            received: metrics.request_body_bytes.get_or_create(&traffic).clone(),
            sent: metrics.response_body_bytes.get_or_create(&traffic).clone(),
            labels,
        }
    }
}

/// Counts one request with `labels`: `seconds` from arrival to the end of its response,
/// `received` and `sent` body bytes (both counted even when 0, so the series exist).
pub fn count_request(
    metrics: &Arc<Metrics>,
    labels: RequestLabels,
    seconds: f64,
    received: u64,
    sent: u64,
) {
    LAST.with_borrow_mut(|last| {
        let same = last
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(&h.metrics, metrics) && h.labels == labels);
        if !same {
            *last = Some(Handles::new(metrics, labels));
        }
        if let Some(h) = last.as_ref() {
            h.requests.inc();
            h.duration.observe(seconds);
            h.received.inc_by(received);
            h.sent.inc_by(sent);
        }
    });
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    fn labels(metrics: &Metrics, status: u16) -> RequestLabels {
        RequestLabels {
            listener: Arc::from("l"),
            route: Arc::from("r"),
            cluster: metrics.no_label.clone(),
            status,
            protocol: "h2",
        }
    }

    /// The cache changes nothing that is counted: runs of equal labels, a change of labels,
    /// and two proxies' registries on one thread each get exactly their own requests.
    #[test]
    fn cached_handles_count_what_lookups_would() {
        let (mut one, mut two) = (Registry::default(), Registry::default());
        let a = Arc::new(Metrics::new(&mut one));
        let b = Arc::new(Metrics::new(&mut two));
        for status in [200, 200, 500, 200] {
            count_request(&a, labels(&a, status), 0.001, 3, 5);
        }
        count_request(&b, labels(&b, 200), 0.001, 0, 7);
        count_request(&a, labels(&a, 200), 0.001, 3, 5);
        let text = |registry: &Registry| {
            let mut out = String::new();
            encode(&mut out, registry).unwrap();
            out
        };
        let (one, two) = (text(&one), text(&two));
        let requests = "aegis_http_requests_total{listener=\"l\",route=\"r\",cluster=\"\",status=";
        assert!(
            one.contains(&format!("{requests}\"200\",protocol=\"h2\"}} 4")),
            "{one}"
        );
        assert!(
            one.contains(&format!("{requests}\"500\",protocol=\"h2\"}} 1")),
            "{one}"
        );
        assert!(
            two.contains(&format!("{requests}\"200\",protocol=\"h2\"}} 1")),
            "{two}"
        );
        let sent = "aegis_response_body_bytes_total{listener=\"l\",route=\"r\",cluster=\"\",protocol=\"h2\"}";
        assert!(one.contains(&format!("{sent} 25")), "{one}");
        assert!(two.contains(&format!("{sent} 7")), "{two}");
        assert!(one.contains("status_class=\"5xx\"} 1"), "{one}");
    }
}
