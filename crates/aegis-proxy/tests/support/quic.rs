//! QUIC and HTTP/3 clients.

use super::*;

/// QUIC client settings for tests.
#[derive(Clone, Copy, Debug)]
pub struct QuicClient {
    pub groups: Groups,
    /// Initial MTU; 1200 is the QUIC minimum.
    pub mtu: u16,
    /// UDP segmentation offload (GSO).
    pub gso: bool,
}

impl Default for QuicClient {
    fn default() -> Self {
        Self {
            groups: Groups::PqOnly,
            mtu: 1200,
            gso: true,
        }
    }
}

/// A QUIC connection to `addr` through a fresh client endpoint; returns it with the group the
/// client's handshake data reports.
pub async fn quic_connect(
    addr: SocketAddr,
    dir: &TestDir,
    client: QuicClient,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection, Option<&'static str>)> {
    let kx = match client.groups {
        Groups::PqOnly => aegis_tls::KxPolicy::PostQuantumOnly,
        _ => aegis_tls::KxPolicy::PreferPostQuantum,
    };
    let crypto = match client.groups {
        Groups::PqOnly => aegis_tls::quic_client_config(aegis_tls::ClientOptions {
            roots: dir.roots(),
            client_auth: None,
            kx,
            alpn: Vec::new(),
        })?,
        groups => rustls_quic_crypto(dir, groups)?,
    };
    let mut transport = quinn::TransportConfig::default();
    transport
        .initial_mtu(client.mtu)
        .mtu_discovery_config(None)
        .enable_segmentation_offload(client.gso);
    let mut config = quinn::ClientConfig::new(crypto);
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap())?;
    endpoint.set_default_client_config(config);
    let connection = endpoint.connect(addr, "localhost")?.await?;
    let group = connection
        .handshake_data()
        .and_then(|d| d.downcast::<aegis_tls::QuicHandshake>().ok())
        .and_then(|d| d.group);
    Ok((endpoint, connection, group))
}

/// A plain rustls QUIC client offering `groups` (its handshake data names no group).
fn rustls_quic_crypto(
    dir: &TestDir,
    groups: Groups,
) -> anyhow::Result<Arc<dyn quinn::crypto::ClientConfig>> {
    let provider = CryptoProvider {
        kx_groups: groups.kx_groups(),
        ..aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(dir.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h3".to_vec()];
    Ok(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(
        config,
    )?))
}

/// An HTTP/3 client on one QUIC connection.
pub struct H3Client {
    pub sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
}

impl H3Client {
    pub async fn new(connection: &quinn::Connection) -> anyhow::Result<Self> {
        let (mut driver, sender) =
            h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(Self { sender })
    }

    /// One request with `body`; the whole response.
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())?;
        self.send(request, body).await
    }

    /// Sends `request` with `body`; the whole response.
    pub async fn send(&mut self, request: Request<()>, body: Bytes) -> anyhow::Result<Answer> {
        use bytes::Buf;
        let mut stream = self.sender.send_request(request).await?;
        if !body.is_empty() {
            stream.send_data(body).await?;
        }
        stream.finish().await?;
        let mut interim = Vec::new();
        let mut response = stream.recv_response().await?;
        while response.status().is_informational() {
            interim.push((response.status().as_u16(), response.headers().clone()));
            response = stream.recv_response().await?;
        }
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                received.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: String::from_utf8_lossy(&received).into_owned(),
            group: None,
            resumed: false,
            interim,
        })
    }
}
