//! The routing table: any host and path patterns that pass validation, matched against any
//! request host and path, pick a route that really matches, and never panic.
#![no_main]

use aegis_proxy::config::{Config, HostMatch};
use aegis_proxy::route::RouteTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<(String, String)>, String, String)| {
    let (patterns, host, path) = input;
    let mut toml = String::from(
        "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    for (host, prefix) in patterns.iter().take(8) {
        let host = toml::Value::String(host.clone());
        let prefix = toml::Value::String(prefix.clone());
        toml.push_str(&format!(
            "[[routes]]\nhost = {host}\npath_prefix = {prefix}\ncluster = \"c\"\n"
        ));
    }
    let Ok(config) = Config::parse(&toml, std::path::Path::new("/nonexistent")) else {
        return;
    };
    let table = RouteTable::new(config.routes.clone());
    if let Some((index, route)) = table.find(&host, &path) {
        assert!(path.starts_with(route.path_prefix.as_str()));
        // The port and one trailing dot are ignored, as in the table (`[::1]:80` -> `[::1]`).
        let bare = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host.as_str(),
        };
        let bare = bare.strip_suffix('.').unwrap_or(bare);
        match &route.host {
            HostMatch::Any => {}
            HostMatch::Exact(h) => assert!(bare.eq_ignore_ascii_case(h), "route {index}"),
            HostMatch::Suffix(s) => {
                let tail = bare.get(bare.len().saturating_sub(s.len())..);
                assert!(
                    bare.len() > s.len() && tail.is_some_and(|t| t.eq_ignore_ascii_case(s)),
                    "route {index}"
                );
            }
            other => panic!("route {index}: a host match this target does not check: {other:?}"),
        }
    }
});
