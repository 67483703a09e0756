//! `aegis-proxy demo`: loopback origins plus the proxy on HTTPS, with a fresh local CA.
//!
//! Also home of [`spawn_origin`], the small echo origin the demo, tests and benches share.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::BoxError;

type OriginBody = UnsyncBoxBody<Bytes, BoxError>;

/// Starts an origin on `127.0.0.1:0` (HTTP/1.1 and h2c) that answers:
/// - `POST`/`PUT`: the request body streamed back;
/// - `GET /bytes/N`: N zero bytes, streamed in 64 KiB chunks;
/// - anything else: a small JSON document naming the origin and the forwarding headers it saw.
pub async fn spawn_origin(name: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let name: std::sync::Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let name = name.clone();
                    async move { Ok::<_, Infallible>(answer(&name, request)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &str, request: Request<Incoming>) -> Response<OriginBody> {
    if request.method() == Method::POST || request.method() == Method::PUT {
        return Response::new(request.into_body().map_err(BoxError::from).boxed_unsync());
    }
    let path = request.uri().path();
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return zeros(n);
    }
    let header = |h: &str| {
        request
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = serde_json::json!({
        "origin": name,
        "method": request.method().as_str(),
        "path": path,
        "host": header("host"),
        "x-forwarded-for": header("x-forwarded-for"),
        "x-forwarded-proto": header("x-forwarded-proto"),
        "via": header("via"),
        "headers": request.headers().keys().map(|k| k.as_str()).collect::<Vec<_>>(),
    });
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{body}\n")))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn zeros(n: u64) -> Response<OriginBody> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![0u8; CHUNK as usize]);
    let frames = (0..n.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(n - i * CHUNK) as usize;
        Ok::<_, BoxError>(Frame::data(chunk.slice(..len)))
    });
    let body = StreamBody::new(futures_lite_stream(frames));
    let mut response = Response::new(body.boxed_unsync());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    response
}

/// An iterator as a `Stream`, without pulling in a stream utility crate.
fn futures_lite_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// Options of `aegis-proxy demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTPS listener address.
    pub listen: String,
    /// Admin listener address.
    pub admin: String,
    /// Folder for the generated CA, certificate and key.
    pub dir: PathBuf,
}

/// Writes a fresh CA and a `localhost`/`127.0.0.1` server certificate into `dir`:
/// `ca.pem`, `server.pem`, `server.key`, and a client pair `client.pem`, `client.key` for mTLS.
pub fn write_certs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = aegis_tls::LocalCa::generate("Aegis-Flow local CA")?;
    let server = ca.issue(&["localhost", "127.0.0.1", "::1"])?;
    let client = ca.issue(&["aegis-client"])?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    std::fs::write(dir.join("server.pem"), &server.cert_pem)?;
    write_private(&dir.join("server.key"), &server.key_pem)?;
    std::fs::write(dir.join("client.pem"), &client.cert_pem)?;
    write_private(&dir.join("client.key"), &client.key_pem)?;
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Starts three origins and the proxy in front of them; returns the running proxy.
///
/// `/green/...` goes to a carbon-aware cluster whose three origins stand for three regions
/// with static grid intensities; everything else is balanced across the same origins.
pub async fn start(options: &DemoOptions) -> anyhow::Result<crate::Running> {
    write_certs(&options.dir)?;
    let mut origins = Vec::new();
    for name in ["origin-1", "origin-2", "origin-3"] {
        origins.push(spawn_origin(name).await?.to_string());
    }
    let config = crate::Config::parse(&demo_config(options, &origins), Path::new("."))?;
    let running = crate::run(config, prometheus_client::registry::Registry::default()).await?;
    Ok(running)
}

fn demo_config(options: &DemoOptions, origins: &[String]) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let path = |name: &str| quote(&options.dir.join(name).display().to_string());
    let [o1, o2, o3] = [0, 1, 2].map(|i| quote(&origins[i]));
    format!(
        r#"
[admin]
listen = {admin}

[[listeners]]
name = "demo"
listen = {listen}
tls = {{ cert = {cert}, key = {key} }}
protocols = ["http/1.1", "h2", "h3"]

[[routes]]
name = "green"
path_prefix = "/green/"
cluster = "green"

[[routes]]
name = "default"
cluster = "web"

[clusters.web]
endpoints = [{o1}, {o2}, {o3}]

[regions.us-east]
zone = "US-MIDA-PJM"
intensity = 392

[regions.eu-central]
zone = "DE"
intensity = 367

[regions.eu-north]
zone = "NO"
intensity = 34

[clusters.green]
carbon = "greenest"
max_share = 0.8
regions = {{ us-east = [{o1}], eu-central = [{o2}], eu-north = [{o3}] }}
"#,
        admin = quote(&options.admin),
        listen = quote(&options.listen),
        cert = path("server.pem"),
        key = path("server.key"),
    )
}

/// The instructions the demo prints once it is up.
pub fn instructions(options: &DemoOptions, running: &crate::Running) -> String {
    let https = running.listeners().first().map(|(_, a)| *a);
    let https = https.map(|a| a.to_string()).unwrap_or_default();
    let admin = running
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ca = options.dir.join("ca.pem");
    format!(
        "Aegis-Flow demo: three origins behind https://{https} (TLS 1.3, X25519MLKEM768 preferred;\n\
         HTTP/1.1 and HTTP/2 on TCP, HTTP/3 on UDP, same port)\n\
         \n\
         Try it:\n  curl --cacert {ca} https://{https}/hello\n\
         \x20 curl --cacert {ca} --http2 -d 'echo me' https://{https}/echo\n\
         Carbon-aware: /green/ goes to the greenest of three regions (static 2023 means, gCO2/kWh),\n\
         \x20 at most 80 % of recent traffic to one region:\n\
         \x20 curl -si --cacert {ca} https://{https}/green/hello | grep x-aegis-region\n\
         See what was negotiated (group label):\n  curl -s http://{admin}/metrics | grep aegis_tls_handshakes\n\
         Check post-quantum TLS (the group, ALPN, certificate and status), over TCP and QUIC:\n\
         \x20 {exe} probe https://{https}/hello --ca {ca} --pq\n\
         \x20 {exe} probe https://{https}/hello --ca {ca} --pq --http 3\n\
         \x20 curl --http3-only --cacert {ca} https://{https}/hello   (with an HTTP/3-enabled curl)\n\
         Admin: http://{admin}/healthz /ready /metrics /config\n\
         Access log: JSON lines on stdout. Ctrl-C drains and exits.\n",
        ca = ca.display(),
        exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "aegis-proxy".to_owned()),
    )
}
