//! The routing table: first route whose host pattern and path prefix match wins.

use crate::config::{HostMatch, RouteConfig};

/// Routes in match order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
}

impl RouteTable {
    /// Builds the table from validated routes.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Self { routes }
    }

    /// The first route matching `host` (port and one trailing dot ignored, case-insensitive)
    /// and `path`, with its position in the table. `path` must already be normalised
    /// ([`crate::http::path`]), so that prefixes cannot be bypassed.
    pub fn find(&self, host: &str, path: &str) -> Option<(usize, &RouteConfig)> {
        // `api.example.com.` is the fully qualified form of `api.example.com` (RFC 1034 §3.1).
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| host_matches(&r.host, host) && path.starts_with(r.path_prefix.as_str()))
    }
}

fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Any => true,
        HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
        HostMatch::Suffix(suffix) => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
    }
}

/// `example.com:8443` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: HostMatch, prefix: &str) -> RouteConfig {
        RouteConfig {
            name: name.to_owned(),
            host,
            path_prefix: prefix.to_owned(),
            cluster: 0,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("exact", HostMatch::Exact("api.example.com".into()), "/v1/"),
            route("suffix", HostMatch::Suffix(".example.com".into()), "/"),
            route("any-static", HostMatch::Any, "/static/"),
            route("fallback", HostMatch::Any, "/"),
        ])
    }

    fn found(host: &str, path: &str) -> Option<String> {
        table().find(host, path).map(|(_, r)| r.name.clone())
    }

    #[test]
    fn first_match_wins() {
        assert_eq!(
            found("api.example.com", "/v1/users").as_deref(),
            Some("exact")
        );
        assert_eq!(found("api.example.com", "/v2/").as_deref(), Some("suffix"));
    }

    #[test]
    fn host_match_ignores_port_and_case() {
        assert_eq!(
            found("API.Example.COM:8443", "/v1/x").as_deref(),
            Some("exact")
        );
        assert_eq!(
            found("[::1]:8443", "/static/a").as_deref(),
            Some("any-static")
        );
    }

    #[test]
    fn a_trailing_dot_matches_the_name_without_it() {
        assert_eq!(found("api.example.com.", "/v1/x").as_deref(), Some("exact"));
        assert_eq!(
            found("API.example.com.:443", "/v1/x").as_deref(),
            Some("exact")
        );
        assert_eq!(found("a.example.com.", "/").as_deref(), Some("suffix"));
    }

    #[test]
    fn suffix_needs_a_label_before_it() {
        assert_eq!(found("example.com", "/").as_deref(), Some("fallback"));
        assert_eq!(found("a.b.example.com", "/").as_deref(), Some("suffix"));
        assert_eq!(found("badexample.com", "/").as_deref(), Some("fallback"));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let t = RouteTable::new(vec![route("only", HostMatch::Exact("a.test".into()), "/")]);
        assert!(t.find("b.test", "/").is_none());
        let t = RouteTable::new(vec![route("api", HostMatch::Any, "/api")]);
        assert!(t.find("a.test", "/").is_none());
    }
}
