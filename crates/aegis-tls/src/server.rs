//! Server-side (listener) TLS configuration.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::{kx, KxPolicy, TlsError};

/// What a TLS listener needs.
#[derive(Debug)]
pub struct ServerOptions {
    /// Leaf certificate first, then intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Key-exchange groups offered.
    pub kx: KxPolicy,
    /// ALPN protocols, most preferred first (e.g. `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// When set, clients must present a certificate issued by one of these roots (mTLS).
    pub client_roots: Option<RootCertStore>,
}

/// Builds a TLS 1.3-only server configuration.
pub fn server_config(options: ServerOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = kx::provider(options.kx);
    build(options, provider)
}

/// Builds the configuration with `provider` (whose groups override `options.kx`).
pub(crate) fn build(
    options: ServerOptions,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match options.client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Roots(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(options.cert_chain, options.key)?;
    config.alpn_protocols = options.alpn;
    // The provider's suite order (`kx::CIPHER_SUITES`), not the client's, picks the suite.
    config.ignore_client_order = true;
    // Stateless session tickets (AES-256-GCM, keys rotated every 6 hours) instead of rustls's
    // default 256-entry server-side cache: any number of returning clients can resume, and no
    // lock is shared between handshakes. Resumption still runs the (hybrid) key exchange
    // (psk_dhe_ke), so resumed sessions keep their post-quantum forward secrecy. Keys are new
    // for every configuration, so a reload (new certificates, say) ends the old sessions.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}
