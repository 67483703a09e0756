//! Client-side (upstream and mesh hop) TLS configuration.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::{kx, KxPolicy, TlsError};

/// A client certificate for mutual TLS.
#[derive(Debug)]
pub struct ClientAuth {
    /// Leaf certificate first, then intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// What an upstream TLS connection needs.
#[derive(Debug)]
pub struct ClientOptions {
    /// Roots that upstream certificates must chain to.
    pub roots: RootCertStore,
    /// Present this certificate to the upstream (mTLS).
    pub client_auth: Option<ClientAuth>,
    /// Key-exchange groups offered.
    pub kx: KxPolicy,
    /// ALPN protocols offered, most preferred first.
    pub alpn: Vec<Vec<u8>>,
}

/// Builds a TLS 1.3-only client configuration.
pub fn client_config(options: ClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = kx::provider(options.kx);
    build(options, provider)
}

/// Builds the configuration with `provider` (whose groups override `options.kx`).
pub(crate) fn build(
    options: ClientOptions,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(options.roots);
    let mut config = match options.client_auth {
        Some(auth) => builder.with_client_auth_cert(auth.cert_chain, auth.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn;
    Ok(Arc::new(config))
}
