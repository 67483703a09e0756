//! TLS and cleartext clients (HTTP/1.1, HTTP/2) that read a response whole, raw TCP, metrics.

use super::*;

pub fn client_tls(
    roots: rustls::RootCertStore,
    groups: Groups,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    client_tls_with_auth(roots, groups, alpn, None)
}

pub fn client_tls_with_auth(
    roots: rustls::RootCertStore,
    groups: Groups,
    alpn: &[&[u8]],
    auth: Option<(&TestDir, &str, &str)>,
) -> Arc<rustls::ClientConfig> {
    let provider = CryptoProvider {
        kx_groups: groups.kx_groups(),
        ..aws_lc_rs::default_provider()
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match auth {
        Some((dir, cert, key)) => builder
            .with_client_auth_cert(
                aegis_tls::pem::load_certs(&dir.path.join(cert)).unwrap(),
                aegis_tls::pem::load_key(&dir.path.join(key)).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub group: Option<&'static str>,
    /// Whether the TLS session was resumed from a ticket.
    pub resumed: bool,
    /// The interim (1xx) responses before the final one: status and headers.
    pub interim: Vec<(u16, http::HeaderMap)>,
}

/// One request over a new TLS connection; HTTP/2 when ALPN picks `h2`.
pub async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .context("tls handshake")?;
    let session = tls.get_ref().1;
    let group = session
        .negotiated_key_exchange_group()
        .map(aegis_tls::group_name);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut answer = send(tls, request, h2).await?;
    answer.group = group;
    answer.resumed = resumed;
    Ok(answer)
}

/// One request over a new cleartext connection (h2c by prior knowledge when `h2`).
pub async fn http(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    h2: bool,
) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    send(tcp, request, h2).await
}

async fn send<IO>(io: IO, mut request: Request<Full<Bytes>>, h2: bool) -> anyhow::Result<Answer>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let interim = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = interim.clone();
    hyper::ext::on_informational(&mut request, move |response| {
        let entry = (response.status().as_u16(), response.headers().clone());
        seen.lock().unwrap().push(entry);
    });
    let io = TokioIo::new(io);
    let response: Response<hyper::body::Incoming> = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    let interim = std::mem::take(&mut *interim.lock().unwrap());
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        group: None,
        resumed: false,
        interim,
    })
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "localhost")
        .body(Full::default())
        .unwrap()
}

/// Writes raw bytes and reads until the server closes (or `limit` bytes arrive).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the admin `/metrics` page.
pub async fn metrics(running: &Running) -> String {
    let admin = running.admin_addr().expect("admin configured");
    let answer = http(admin, get("/metrics"), false).await.unwrap();
    assert_eq!(answer.status, 200);
    answer.body
}

/// The value of one exposition line, e.g. `aegis_tls_handshakes_total{...}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
