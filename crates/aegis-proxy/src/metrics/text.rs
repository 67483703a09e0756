//! The Prometheus text format (0.0.4) from prometheus-client's OpenMetrics text, for scrapers
//! that ask for `text/plain` or send no `Accept`.
//!
//! The two differ where this rewrites: a counter's `# TYPE` and `# HELP` name the sample
//! (`x_total`), an info metric is a gauge named `x_info`, `unknown` is `untyped`, and there is
//! no `# UNIT` or `# EOF`. Samples are the same.

use std::collections::HashSet;

/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Rewrites OpenMetrics text as the Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut counters = HashSet::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => {
                    counters.insert(family);
                    (format!("{family}_total"), "counter")
                }
                "info" => (format!("{family}_info"), "gauge"),
                "unknown" => (family.to_owned(), "untyped"),
                other => (family.to_owned(), other),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_info_and_units_take_the_text_formats_names() {
        let om = "# HELP aegis_http_requests Requests answered.\n\
                  # TYPE aegis_http_requests counter\n\
                  aegis_http_requests_total{status=\"200\"} 3\n\
                  # HELP aegis_build Version and commit.\n\
                  # TYPE aegis_build info\n\
                  aegis_build_info{version=\"0.1.0\"} 1\n\
                  # HELP process_cpu_seconds CPU time.\n\
                  # TYPE process_cpu_seconds counter\n\
                  # UNIT process_cpu_seconds seconds\n\
                  process_cpu_seconds_total 0.5\n\
                  # HELP aegis_upstream_request_duration_seconds Time.\n\
                  # TYPE aegis_upstream_request_duration_seconds histogram\n\
                  aegis_upstream_request_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP aegis_http_requests_total Requests answered.\n\
             # TYPE aegis_http_requests_total counter\n\
             aegis_http_requests_total{status=\"200\"} 3\n\
             # HELP aegis_build_info Version and commit.\n\
             # TYPE aegis_build_info gauge\n\
             aegis_build_info{version=\"0.1.0\"} 1\n\
             # HELP process_cpu_seconds_total CPU time.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 0.5\n\
             # HELP aegis_upstream_request_duration_seconds Time.\n\
             # TYPE aegis_upstream_request_duration_seconds histogram\n\
             aegis_upstream_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }

    #[test]
    fn only_an_openmetrics_accept_gets_openmetrics() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
