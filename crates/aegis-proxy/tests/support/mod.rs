//! Test glue, by concern: certificates ([`certs`]), clients ([`clients`], [`quic`]), origins
//! ([`origins`]), the protocol matrix ([`matrix`]), raw frames, processes; here, the
//! in-process proxy and its minimal configuration.

#![allow(dead_code, unreachable_pub, missing_docs)]

mod certs;
mod clients;
pub mod h2raw;
pub mod h3raw;
mod kx;
mod matrix;
mod origins;
pub mod process;
mod quic;

pub use certs::*;
pub use clients::*;
pub use kx::Groups;
#[allow(unused_imports)] // not every test file sends over the matrix
pub use matrix::*;
#[allow(unused_imports)] // not every test file uses every origin
pub use origins::*;
#[allow(unused_imports)]
pub use quic::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aegis_proxy::{Config, Running};
use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use rustls::crypto::aws_lc_rs;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the proxy in-process from TOML text (relative paths resolve against `dir`).
pub async fn start(toml: &str, dir: &TestDir) -> Running {
    let config =
        Config::parse(toml, &dir.path).unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
    aegis_proxy::run(config, Registry::default())
        .await
        .expect("proxy starts")
}

/// A minimal TOML config: one listener (plain or TLS) in front of `endpoints`.
pub fn config(
    listener_tls: Option<&str>,
    endpoints: &[SocketAddr],
    extra_listener: &str,
    extra_cluster: &str,
) -> String {
    let tls = listener_tls
        .map(|t| format!("tls = {t}\n"))
        .unwrap_or_default();
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"
{tls}{extra_listener}

[[routes]]
cluster = "api"

[clusters.api]
endpoints = [{endpoints}]
{extra_cluster}
"#,
        endpoints = endpoints.join(", ")
    )
}

pub const TLS: &str = r#"{ cert = "server.pem", key = "server.key" }"#;
pub const TLS_PQ_ONLY: &str = r#"{ cert = "server.pem", key = "server.key", pq_only = true }"#;

pub const TLS_H3: &str = "protocols = [\"http/1.1\", \"h2\", \"h3\"]";
