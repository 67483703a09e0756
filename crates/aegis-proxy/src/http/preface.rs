//! The HTTP/2 client connection preface (RFC 9113 §3.4), checked before hyper sees the
//! connection: a client whose preface is invalid gets the server preface (an empty SETTINGS
//! frame) and GOAWAY(PROTOCOL_ERROR), then a clean close (TLS: close_notify), instead of a
//! connection that just drops.
//!
//! hyper's h2 server returns an error for an invalid preface before it has a connection to
//! send GOAWAY on, and its TLS stream is dropped without close_notify, which a client reads as
//! a truncated stream (h2spec 3.5/2).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::rewind::Rewind;

//= https://www.rfc-editor.org/rfc/rfc9113#section-3.4
//# the connection preface starts with the string "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a refused client has to read the GOAWAY before the connection closes.
const LINGER: Duration = Duration::from_secs(1);

/// What the first bytes of a cleartext connection say about HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// The whole preface.
    Preface,
    /// The start of the preface: read more.
    Partial,
    /// `PRI * HTTP/2.0` followed by something else: an invalid preface.
    Invalid,
    /// Not an HTTP/2 preface at all (an HTTP/1 request, or something else).
    Other,
}

/// Classifies the first bytes of a connection.
pub fn classify(bytes: &[u8]) -> Start {
    let shared = bytes
        .iter()
        .zip(PREFACE)
        .take_while(|(a, b)| a == b)
        .count();
    if shared == PREFACE.len() {
        Start::Preface
    } else if shared == bytes.len() {
        Start::Partial
    } else if shared >= b"PRI * HTTP/2.0".len() {
        Start::Invalid
    } else {
        Start::Other
    }
}

/// Reads the preface within `deadline`. A valid one is handed back with the stream, rewound
/// for hyper; anything else is answered with [`refuse`] and `None` is returned.
pub async fn expect<I>(mut io: I, deadline: Duration) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; PREFACE.len()];
    let read = tokio::time::timeout(deadline, io.read_exact(&mut buf)).await;
    match read {
        Ok(Ok(_)) if classify(&buf) == Start::Preface => Some(Rewind::new(buf, io)),
        Ok(Ok(_)) => {
            tracing::debug!("invalid http/2 connection preface");
            refuse(&mut io).await;
            None
        }
        // The client left or said nothing in time: there is no one to answer.
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Sends an empty SETTINGS frame and GOAWAY(PROTOCOL_ERROR, last stream 0), closes the write
/// side, and reads what the client still sends for a moment so that closing does not reset
/// the answer away.
pub async fn refuse<I>(io: &mut I)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let answer = async {
        io.write_all(&goaway_answer()).await?;
        io.flush().await?;
        io.shutdown().await?;
        let mut sink = [0u8; 1024];
        while io.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
}

/// The server preface and GOAWAY, as bytes on the wire (RFC 9113 §6.5, §6.8).
fn goaway_answer() -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const PROTOCOL_ERROR: u32 = 0x1;
    let debug = b"invalid connection preface";
    let mut out = Vec::with_capacity(9 + 9 + 8 + debug.len());
    out.extend_from_slice(&frame_header(0, SETTINGS));
    out.extend_from_slice(&frame_header(8 + debug.len(), GOAWAY));
    out.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none was processed
    out.extend_from_slice(&PROTOCOL_ERROR.to_be_bytes());
    out.extend_from_slice(debug);
    out
}

/// A frame header on stream 0 without flags: 24-bit length, type, flags, stream id.
fn frame_header(len: usize, kind: u8) -> [u8; 9] {
    let len = u32::try_from(len).unwrap_or(0).to_be_bytes();
    [len[1], len[2], len[3], kind, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_first_bytes() {
        assert_eq!(classify(PREFACE), Start::Preface);
        assert_eq!(
            classify(&[PREFACE.as_slice(), b"extra"].concat()),
            Start::Preface
        );
        assert_eq!(classify(b"PRI * HT"), Start::Partial);
        assert_eq!(classify(b""), Start::Partial);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ"), Start::Invalid);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Start::Other);
        assert_eq!(classify(b"POST / HTTP/1.1\r\n"), Start::Other);
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Start::Other);
    }

    #[test]
    fn the_answer_is_settings_then_goaway_protocol_error() {
        let answer = goaway_answer();
        assert_eq!(&answer[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(&answer[9..13], &[0, 0, 34, 7]);
        assert_eq!(&answer[18..26], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&answer[26..], b"invalid connection preface");
    }
}
