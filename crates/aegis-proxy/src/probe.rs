//! `aegis-proxy probe URL`: connects as a client would and reports what was negotiated (TLS
//! version, key-exchange group, ALPN, the certificate chain) and the response status, so a
//! user can check post-quantum TLS without another tool (curl cannot show the group).
//!
//! It speaks HTTP/1.1, HTTP/2 (both over TLS, or cleartext for `http://`) and HTTP/3, offering
//! the groups the user asks for: the proxy's default order, post-quantum only, or classical
//! only (to check a server's fallback).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aegis_tls::{ClientOptions, KxPolicy};
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// The HTTP version a probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeHttp {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (ALPN `h2`, or prior knowledge over cleartext).
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `https://host[:port]/path` or `http://...`.
    pub url: Uri,
    /// Groups offered.
    pub kx: KxPolicy,
    /// HTTP version.
    pub http: ProbeHttp,
    /// CA bundle to verify the server with; the Mozilla roots (webpki-roots) when absent.
    pub ca: Option<PathBuf>,
    /// Limit for connecting and the whole exchange.
    pub timeout: Duration,
}

/// What the TLS handshake settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReport {
    /// `TLSv1.3`.
    pub version: String,
    /// Key-exchange group (`X25519MLKEM768`, `X25519`, ...).
    pub group: String,
    /// ALPN protocol, `none` without ALPN.
    pub alpn: String,
    /// The certificates the server sent, leaf first.
    pub chain: Vec<CertificateSummary>,
}

/// One certificate of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// End of validity, RFC 2822.
    pub not_after: String,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The address connected to.
    pub connected: String,
    /// TLS details; `None` for `http://`.
    pub tls: Option<TlsReport>,
    /// HTTP version of the response.
    pub http: &'static str,
    /// Response status code.
    pub status: u16,
    /// Time from the start to the response head.
    pub elapsed: Duration,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connected: {}", self.connected)?;
        if let Some(tls) = &self.tls {
            writeln!(f, "tls: {}", tls.version)?;
            let pq = if tls.group == "X25519MLKEM768" {
                " (post-quantum hybrid)"
            } else {
                " (classical)"
            };
            writeln!(f, "group: {}{pq}", tls.group)?;
            writeln!(f, "alpn: {}", tls.alpn)?;
            for (i, cert) in tls.chain.iter().enumerate() {
                writeln!(
                    f,
                    "certificate {i}: subject \"{}\", issuer \"{}\", names [{}], not after {}",
                    cert.subject,
                    cert.issuer,
                    cert.names.join(", "),
                    cert.not_after
                )?;
            }
        }
        writeln!(f, "http: {}", self.http)?;
        writeln!(f, "status: {}", self.status)?;
        write!(f, "time: {:.1} ms", self.elapsed.as_secs_f64() * 1000.0)
    }
}

/// Connects, sends `GET`, and reports what was negotiated.
pub async fn probe(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    let start = Instant::now();
    let exchange = async {
        match (options.url.scheme_str(), options.http) {
            (Some("https"), ProbeHttp::Http3) => h3(options).await,
            (Some("https"), _) => tls(options).await,
            (Some("http"), ProbeHttp::Http3) => bail!("HTTP/3 needs an https:// URL"),
            (Some("http"), _) => cleartext(options).await,
            _ => bail!("the URL must start with https:// or http://"),
        }
    };
    let mut report = tokio::time::timeout(options.timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {:?}", options.timeout))??;
    report.elapsed = start.elapsed();
    Ok(report)
}

fn host_port(url: &Uri) -> anyhow::Result<(String, u16)> {
    let host = url.host().context("the URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let default = if url.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    Ok((host, url.port_u16().unwrap_or(default)))
}

fn client_options(options: &ProbeOptions, alpn: Vec<Vec<u8>>) -> anyhow::Result<ClientOptions> {
    let roots = match &options.ca {
        Some(path) => aegis_tls::pem::load_roots(path)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    Ok(ClientOptions {
        roots,
        client_auth: None,
        kx: options.kx,
        alpn,
    })
}

async fn tls(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    let (host, port) = host_port(&options.url)?;
    let alpn = match options.http {
        ProbeHttp::Http2 => b"h2".to_vec(),
        _ => b"http/1.1".to_vec(),
    };
    let config = aegis_tls::client_config(client_options(options, vec![alpn])?)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let connected = tcp.peer_addr()?.to_string();
    let name = ServerName::try_from(host.clone())?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            anyhow!(
                "TLS handshake with {host}:{port} failed: {e}{}",
                hint(options, &e)
            )
        })?;
    let session = stream.get_ref().1;
    let tls = TlsReport {
        version: version_name(session.protocol_version()),
        group: session.negotiated_key_exchange_group().map_or_else(
            || "none".to_owned(),
            |g| aegis_tls::group_name(g).to_owned(),
        ),
        alpn: alpn_name(session.alpn_protocol()),
        chain: chain(session.peer_certificates().unwrap_or_default()),
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    let (http, status) = exchange(TokioIo::new(stream), &options.url, h2).await?;
    Ok(ProbeReport {
        connected,
        tls: Some(tls),
        http,
        status,
        elapsed: Duration::ZERO,
    })
}

async fn cleartext(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    let (host, port) = host_port(&options.url)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let connected = tcp.peer_addr()?.to_string();
    let h2 = options.http == ProbeHttp::Http2;
    let (http, status) = exchange(TokioIo::new(tcp), &options.url, h2).await?;
    Ok(ProbeReport {
        connected,
        tls: None,
        http,
        status,
        elapsed: Duration::ZERO,
    })
}

/// One `GET` over `io`, HTTP/2 or HTTP/1.1; the version and status of the answer.
async fn exchange<IO>(io: IO, url: &Uri, h2: bool) -> anyhow::Result<(&'static str, u16)>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let authority = url.authority().context("the URL has no host")?.as_str();
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        let request = Request::get(url.clone()).body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    };
    let version = if h2 { "HTTP/2" } else { "HTTP/1.1" };
    let status = response.status().as_u16();
    // Read the body so that the server sees a complete exchange.
    response.into_body().collect().await?;
    Ok((version, status))
}

async fn h3(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    let (host, port) = host_port(&options.url)?;
    let crypto = aegis_tls::quic_client_config(client_options(options, Vec::new())?)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let bind: std::net::SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(crypto));
    let connection = endpoint.connect(addr, &host)?.await.map_err(|e| {
        anyhow!(
            "QUIC handshake with {addr} failed: {e}{}",
            hint(options, &e)
        )
    })?;
    let handshake = connection
        .handshake_data()
        .and_then(|d| d.downcast::<aegis_tls::QuicHandshake>().ok());
    let certs = connection
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|c| *c)
        .unwrap_or_default();
    let tls = TlsReport {
        version: "TLSv1.3".to_owned(),
        group: handshake
            .as_ref()
            .and_then(|h| h.group)
            .unwrap_or("none")
            .to_owned(),
        alpn: alpn_name(handshake.as_ref().and_then(|h| h.protocol.as_deref())),
        chain: chain(&certs),
    };
    let (mut driver, mut sender) =
        h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
    let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let mut stream = sender
        .send_request(Request::get(options.url.clone()).body(())?)
        .await?;
    stream.finish().await?;
    let response = stream.recv_response().await?;
    while stream.recv_data().await?.is_some() {}
    drop(sender);
    connection.close(0u32.into(), b"done");
    drive.abort();
    endpoint.wait_idle().await;
    Ok(ProbeReport {
        connected: addr.to_string(),
        tls: Some(tls),
        http: "HTTP/3",
        status: response.status().as_u16(),
        elapsed: Duration::ZERO,
    })
}

/// What a failed handshake most likely means, for the two cases a user meets first.
fn hint(options: &ProbeOptions, error: &dyn std::error::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("UnknownIssuer") && options.ca.is_none() {
        " (a private CA? pass it with --ca FILE)"
    } else if options.kx == KxPolicy::ClassicalOnly
        && (text.contains("HandshakeFailure") || text.contains("NoKxGroupsInCommon"))
    {
        " (the server accepts no classical group: it requires post-quantum key exchange)"
    } else if options.kx == KxPolicy::PostQuantumOnly
        && (text.contains("HandshakeFailure") || text.contains("NoKxGroupsInCommon"))
    {
        " (the server does not offer X25519MLKEM768)"
    } else {
        ""
    }
}

fn version_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "none".to_owned(),
    }
}

fn alpn_name(alpn: Option<&[u8]>) -> String {
    alpn.map_or_else(
        || "none".to_owned(),
        |p| String::from_utf8_lossy(p).into_owned(),
    )
}

fn chain(certs: &[CertificateDer<'_>]) -> Vec<CertificateSummary> {
    certs.iter().map(|c| summary(c)).collect()
}

fn summary(der: &CertificateDer<'_>) -> CertificateSummary {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return CertificateSummary {
            subject: "unparsable certificate".to_owned(),
            issuer: String::new(),
            names: Vec::new(),
            not_after: String::new(),
        };
    };
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    CertificateSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_after: cert.validity().not_after.to_rfc2822().unwrap_or_else(|e| e),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
