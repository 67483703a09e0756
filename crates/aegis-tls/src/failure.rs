//! Short, stable names for handshake failures, used as metric labels and log fields.

use std::io;

use rustls::{AlertDescription, Error, PeerIncompatible};

/// Names the reason a TLS handshake failed, from the error tokio-rustls returned.
pub fn failure_reason(error: &io::Error) -> &'static str {
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "eof",
            io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::InvalidData => "invalid_data",
            _ => "io",
        };
    };
    match tls {
        Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon) => "no_shared_group",
        Error::PeerIncompatible(PeerIncompatible::Tls13RequiredForQuic)
        | Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired) => {
            "protocol_version"
        }
        Error::PeerIncompatible(_) => "peer_incompatible",
        Error::NoApplicationProtocol => "no_application_protocol",
        Error::AlertReceived(AlertDescription::UnknownCA | AlertDescription::BadCertificate) => {
            "peer_rejected_certificate"
        }
        Error::AlertReceived(_) => "alert_received",
        Error::InvalidCertificate(_) | Error::NoCertificatesPresented => "bad_client_certificate",
        Error::InvalidMessage(_) | Error::InappropriateHandshakeMessage { .. } => "invalid_message",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_missing_shared_group() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon),
        );
        assert_eq!(failure_reason(&e), "no_shared_group");
    }

    #[test]
    fn names_plain_io_errors() {
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(failure_reason(&e), "eof");
    }
}
