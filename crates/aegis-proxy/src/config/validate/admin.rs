//! Validation of `[admin]`: address, token, accepted hosts and limits.
//!
//! The admin API can reload the proxy and shows its configuration, so a non-loopback address
//! without a token is refused, and a token named but missing from the environment is an error,
//! never an open admin listener.

use super::Checker;
use crate::config::raw::RawAdmin;
use crate::config::{AdminConfig, AdminToken};

const DEFAULT_ADMIN_CONNECTIONS: u64 = 64;
const DEFAULT_ADMIN_HEADER_READ_MS: u64 = 5_000;

impl Checker<'_> {
    pub(super) fn admin(&mut self, a: &RawAdmin) -> Option<AdminConfig> {
        let listen = self.socket_addr("admin.listen", &a.listen);
        let token = match &a.token_env {
            None => Some(None),
            Some(name) => match (self.env)(name.get_ref()).and_then(AdminToken::new) {
                Some(token) => Some(Some(token)),
                None => {
                    let message = format!(
                        "environment variable {} (the admin token) is not set or empty",
                        name.get_ref()
                    );
                    self.error("admin.token_env", name, message);
                    None
                }
            },
        };
        let token_for_reads = a.require_token_for_reads.as_ref();
        if let (Some(reads), None) = (token_for_reads, &a.token_env) {
            if *reads.get_ref() {
                self.error(
                    "admin.require_token_for_reads",
                    reads,
                    "needs admin.token_env",
                );
            }
        }
        if let (Some(addr), None) = (listen, &a.token_env) {
            if !addr.ip().is_loopback() {
                self.error(
                    "admin.listen",
                    &a.listen,
                    format!(
                        "{addr} is not a loopback address: set admin.token_env (the admin API \
                         can reload the proxy and read its configuration)"
                    ),
                );
            }
        }
        let allowed_hosts = self.admin_hosts(a);
        let max_connections = self.bounded(
            "admin.max_connections",
            &a.max_connections,
            DEFAULT_ADMIN_CONNECTIONS,
            1..=100_000,
        );
        let header_read = self.duration(
            "admin.header_read_timeout_ms",
            &a.header_read_timeout_ms,
            DEFAULT_ADMIN_HEADER_READ_MS,
        );
        Some(AdminConfig {
            listen: listen?,
            token: token?,
            token_env: a.token_env.as_ref().map(|name| name.get_ref().clone()),
            token_for_reads: token_for_reads.is_some_and(|r| *r.get_ref()),
            allowed_hosts: allowed_hosts?,
            max_connections: max_connections? as usize,
            header_read_timeout: header_read?,
        })
    }

    fn admin_hosts(&mut self, a: &RawAdmin) -> Option<Vec<String>> {
        let mut hosts = Vec::new();
        let mut valid = true;
        for (i, host) in a.allowed_hosts.iter().flatten().enumerate() {
            let name = host.get_ref();
            if crate::http::host::validate(name.as_bytes()).is_err() || name.contains(':') {
                let message = format!("\"{name}\" is not a host name (without port)");
                self.error(format!("admin.allowed_hosts[{i}]"), host, message);
                valid = false;
            }
            hosts.push(name.to_ascii_lowercase());
        }
        valid.then_some(hosts)
    }
}
