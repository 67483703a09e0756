//! TLS for Aegis-Flow: every cryptographic choice the proxy makes lives here.
//!
//! One provider (rustls with aws-lc-rs), TLS 1.3 only, and an explicit key-exchange list with the
//! hybrid post-quantum group `X25519MLKEM768` first ([`kx`]). This crate builds rustls server and
//! client configurations ([`server`], [`client`]), loads PEM files ([`pem`]), makes local
//! certificates for demos and tests ([`local_ca`]) and names what went wrong in a handshake
//! ([`failure`]). It does not open sockets or perform I/O beyond reading PEM files.

pub mod client;
pub mod failure;
pub mod kx;
pub mod local_ca;
pub mod pem;
pub mod quic;
pub mod server;

pub use client::{client_config, ClientAuth, ClientOptions};
pub use failure::failure_reason;
pub use kx::{group_name, provider, KxPolicy};
pub use local_ca::{LocalCa, ServerCert};
pub use quic::{quic_client_config, quic_server_config, QuicHandshake};
pub use server::{server_config, ServerOptions};

/// Re-export of the quinn version whose crypto traits [`quic`] implements.
pub use quinn;
/// Re-export of the rustls version this crate is built against.
pub use rustls;

use std::path::PathBuf;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying parse or I/O error.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file held no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file that was empty of certificates.
        path: PathBuf,
    },
    /// The private key is not the key of the chain's first certificate.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// rustls rejected the configuration.
    #[error("tls configuration rejected: {0}")]
    Rustls(rustls::Error),
    /// The certificate authority bundle could not be used.
    #[error("certificate authority rejected: {0}")]
    Roots(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                Self::KeyMismatch
            }
            other => Self::Rustls(other),
        }
    }
}
