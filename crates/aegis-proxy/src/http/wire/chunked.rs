//! Follows a chunked body (RFC 9112 §7.1) while its bytes pass through unchanged, to know where
//! it ends, or decodes it into its payload and trailer section. Strict: every line ends in CRLF,
//! sizes are hex, so the proxy and the client at the other end can never disagree about the end
//! of the message.

/// Largest chunk-size line, trailer line or trailer section accepted.
const MAX_LINE: u32 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Chunk-size digits; the size so far and how many digits.
    Size { size: u64, digits: u8 },
    /// After the size: whitespace or an extension, up to CR.
    Extension { size: u64, len: u32 },
    /// CR seen after the size line; LF expected.
    SizeLf { size: u64 },
    /// Chunk data with this many bytes left.
    Data(u64),
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// At the start of a trailer line or the final CRLF; trailer bytes so far.
    TrailerStart(u32),
    /// Inside a trailer line.
    TrailerLine(u32),
    /// CR seen in the trailer section; `last` when it ended an empty line.
    TrailerLf { total: u32, last: bool },
    /// The body is complete.
    Done,
}

/// The body broke the chunked syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Position inside one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    data: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            data: 0,
        }
    }
}

impl Chunked {
    /// Whether the last chunk and the trailer section have passed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes seen so far (chunk data, without framing).
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// Follows `bytes`; returns how many belong to this body: all of them, unless it ends
    /// inside them.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut at = 0;
        while at < bytes.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                at += self.take_data(left, bytes.len() - at);
                continue;
            }
            self.state = next(self.state, bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    /// Decodes instead of following: skips the framing at the start of `bytes` up to the next
    /// payload bytes and returns `(framing bytes skipped, payload bytes that follow them)`.
    /// Bytes of the trailer section (after the last chunk, final CRLF included) are appended to
    /// `trailers` as they are skipped.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        trailers: &mut Vec<u8>,
    ) -> Result<(usize, usize), Malformed> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => return Ok((at, self.take_data(left, bytes.len() - at))),
                State::TrailerStart(_) | State::TrailerLine(_) | State::TrailerLf { .. } => {
                    trailers.push(bytes[at]);
                }
                _ => {}
            }
            self.state = next(self.state, bytes[at])?;
            at += 1;
        }
        Ok((at, 0))
    }

    /// Takes up to `available` bytes of the `left` bytes of chunk data; returns how many.
    fn take_data(&mut self, left: u64, available: usize) -> usize {
        let used = left.min(available as u64);
        self.data += used;
        self.state = if used == left {
            State::DataCr
        } else {
            State::Data(left - used)
        };
        used as usize
    }
}

/// One framing byte.
fn next(state: State, byte: u8) -> Result<State, Malformed> {
    Ok(match (state, byte) {
        (State::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
            if digits == 16 {
                return Err(Malformed);
            }
            let digit = u64::from((b as char).to_digit(16).ok_or(Malformed)?);
            State::Size {
                size: size << 4 | digit,
                digits: digits + 1,
            }
        }
        (State::Size { digits: 0, .. }, _) => return Err(Malformed),
        (State::Size { size, .. }, b'\r') => State::SizeLf { size },
        (State::Size { size, .. }, b';' | b' ' | b'\t') => State::Extension { size, len: 1 },
        (State::Extension { size, .. }, b'\r') => State::SizeLf { size },
        (State::Extension { size, len }, b) if b != b'\n' && len < MAX_LINE => {
            State::Extension { size, len: len + 1 }
        }
        (State::SizeLf { size: 0 }, b'\n') => State::TrailerStart(0),
        (State::SizeLf { size }, b'\n') => State::Data(size),
        (State::DataCr, b'\r') => State::DataLf,
        (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
        (State::TrailerStart(total), b'\r') => State::TrailerLf { total, last: true },
        (State::TrailerStart(total) | State::TrailerLine(total), b)
            if b != b'\r' && b != b'\n' && total < MAX_LINE =>
        {
            State::TrailerLine(total + 1)
        }
        (State::TrailerLine(total), b'\r') => State::TrailerLf { total, last: false },
        (State::TrailerLf { last: true, .. }, b'\n') => State::Done,
        (State::TrailerLf { total, last: false }, b'\n') => State::TrailerStart(total),
        _ => return Err(Malformed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(body: &[u8]) -> Result<(usize, bool, u64), Malformed> {
        let mut chunked = Chunked::default();
        let used = chunked.advance(body)?;
        Ok((used, chunked.is_done(), chunked.data_bytes()))
    }

    #[test]
    fn finds_the_end_and_leaves_what_follows() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nHTTP/1.1 200 OK";
        assert_eq!(follow(body), Ok((body.len() - 15, true, 6)));
    }

    #[test]
    fn trailers_are_part_of_the_body() {
        let body = b"3\r\nabc\r\n0\r\nx-checksum: 1\r\n\r\n";
        assert_eq!(follow(body), Ok((body.len(), true, 3)));
    }

    #[test]
    fn the_same_body_in_single_bytes() {
        let body = b"a\r\n0123456789\r\n0\r\nt: v\r\n\r\n";
        let mut chunked = Chunked::default();
        for byte in body {
            assert!(!chunked.is_done());
            assert_eq!(chunked.advance(std::slice::from_ref(byte)), Ok(1));
        }
        assert!(chunked.is_done());
        assert_eq!(chunked.data_bytes(), 10);
    }

    #[test]
    fn decoding_yields_the_payload_and_the_trailer_section() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nx-checksum: 1\r\n\r\nnext";
        // Fed in pieces that split the framing, the data and the trailers anywhere.
        for piece in [1, 3, 7, body.len()] {
            let (mut chunked, mut trailers, mut payload) =
                (Chunked::default(), Vec::new(), Vec::new());
            let mut at = 0;
            while !chunked.is_done() {
                let end = (at + piece).min(body.len());
                let (framing, len) = chunked.decode(&body[at..end], &mut trailers).unwrap();
                payload.extend_from_slice(&body[at + framing..at + framing + len]);
                at += framing + len;
            }
            assert_eq!(payload, b"hello!", "pieces of {piece}");
            assert_eq!(trailers, b"x-checksum: 1\r\n\r\n", "pieces of {piece}");
            assert_eq!(&body[at..], b"next", "pieces of {piece}");
        }
    }

    #[test]
    fn rejects_what_clients_could_read_differently() {
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after the data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than declared
            b"\r\n",                       // no size
            b"g\r\n",                      // not hex
            b"10000000000000000\r\n",      // more than 64 bits
            b"0\r\nbad\nline\r\n\r\n",     // bare LF in a trailer
        ] {
            assert_eq!(follow(body), Err(Malformed), "{body:?}");
        }
    }
}
