//! HTTP/2 errors carry the code RFC 9113 names for them, over h2c and over TLS, and a
//! malformed message is never forwarded: frames written by hand (`support/h2raw.rs`), the
//! answer read frame by frame. The codes come from the patched h2 (`patches/README.md`).

mod support;

use support::h2raw::*;
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connection to the matrix proxy over `proto` (h2c or TLS with ALPN h2).
async fn connect(proto: Proto, proxy: &aegis_proxy::Running, dir: &TestDir) -> Box<dyn Io> {
    proto.h2_io(proxy, dir).await.unwrap()
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Option<(u8, u32)> {
    ending(&exchange(io, bytes).await)
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "localhost"),
    (":path", "/a"),
];

const POST: [(&str, &str); 4] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "localhost"),
    (":path", "/a"),
];

#[tokio::test]
async fn connection_errors_carry_the_rfc_9113_code() {
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("h2-codes");
    let proxy = matrix_proxy(&dir, origin.addr).await;
    let mut initial_window = vec![0, 4];
    initial_window.extend_from_slice(&(1u32 << 31).to_be_bytes());
    let cases: [(&str, Vec<u8>, u32); 7] = [
        //= https://www.rfc-editor.org/rfc/rfc9113#section-6.5
        //# A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated
        //# as a connection error (Section 5.4.1) of type FRAME_SIZE_ERROR.
        (
            "SETTINGS of 5 octets",
            frame(SETTINGS, 0, 0, &[0; 5]),
            FRAME_SIZE_ERROR,
        ),
        //# Receipt of a SETTINGS frame with the ACK flag set and a length field value other
        //# than 0 MUST be treated as a connection error (Section 5.4.1) of type
        //# FRAME_SIZE_ERROR.
        (
            "SETTINGS ACK with a payload",
            frame(SETTINGS, ACK, 0, &[0; 6]),
            FRAME_SIZE_ERROR,
        ),
        //= https://www.rfc-editor.org/rfc/rfc9113#section-6.7
        //# Receipt of a PING frame with a length field value other than 8 MUST be treated as a
        //# connection error (Section 5.4.1) of type FRAME_SIZE_ERROR.
        (
            "PING of 7 octets",
            frame(PING, 0, 0, &[0; 7]),
            FRAME_SIZE_ERROR,
        ),
        //= https://www.rfc-editor.org/rfc/rfc9113#section-6.9
        //# A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a
        //# connection error (Section 5.4.1) of type FRAME_SIZE_ERROR.
        (
            "WINDOW_UPDATE of 3 octets",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            FRAME_SIZE_ERROR,
        ),
        //= https://www.rfc-editor.org/rfc/rfc9113#section-6.4
        //# A RST_STREAM frame with a length other than 4 octets MUST be treated as a
        //# connection error (Section 5.4.1) of type FRAME_SIZE_ERROR.
        (
            "RST_STREAM of 3 octets",
            [headers(1, 0, &POST), frame(RST_STREAM, 0, 1, &[0, 0, 8])].concat(),
            FRAME_SIZE_ERROR,
        ),
        //= https://www.rfc-editor.org/rfc/rfc9113#section-6.5.2
        //# Values above the maximum flow-control window size of 2^31-1 MUST be treated as a
        //# connection error (Section 5.4.1) of type FLOW_CONTROL_ERROR.
        (
            "SETTINGS_INITIAL_WINDOW_SIZE of 2^31",
            frame(SETTINGS, 0, 0, &initial_window),
            FLOW_CONTROL_ERROR,
        ),
        //= https://www.rfc-editor.org/rfc/rfc9113#section-4.3
        //# A decoding error in a field block MUST be treated as a connection error
        //# (Section 5.4.1) of type COMPRESSION_ERROR.
        (
            "HPACK index 0",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80]),
            COMPRESSION_ERROR,
        ),
    ];
    let mut wrong = Vec::new();
    for proto in [Proto::H2c, Proto::H2] {
        for (case, bytes, code) in &cases {
            let mut io = connect(proto, &proxy, &dir).await;
            let got = answer(&mut io, bytes).await;
            if got != Some((GOAWAY, *code)) {
                wrong.push(format!("{proto:?} {case}: {got:?}, expected GOAWAY {code}"));
            }
        }
    }
    assert_eq!(wrong, Vec::<String>::new());
    assert_eq!(origin.hits(), 0);
}

//= https://www.rfc-editor.org/rfc/rfc9113#section-5.1
//# half-closed (remote): [...] If an endpoint receives additional frames, other than
//# WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST
//# respond with a stream error (Section 5.4.2) of type STREAM_CLOSED.
#[tokio::test]
async fn data_after_end_stream_is_a_stream_closed_error() {
    // The origin never answers, so the stream stays half-closed (remote) on the proxy.
    let origin = origin(Behaviour::Hang).await;
    let dir = TestDir::new("h2-closed");
    let proxy = matrix_proxy(&dir, origin.addr).await;
    for proto in [Proto::H2c, Proto::H2] {
        let mut io = connect(proto, &proxy, &dir).await;
        let bytes = [headers(1, END_STREAM, &GET), frame(DATA, 0, 1, b"late")].concat();
        let frames = exchange(&mut io, &bytes).await;
        let last = frames.last().expect("an answer");
        assert_eq!(
            (last.kind, last.stream, last.error_code()),
            (RST_STREAM, 1, Some(STREAM_CLOSED)),
            "{proto:?}: {frames:?}"
        );
    }
}

/// `date` changes every second, so the proxy's responses never add it to the HPACK dynamic
/// table (`patches/README.md`): a long-lived connection would otherwise gain one entry per
/// second, each compared again on every later response.
//= https://www.rfc-editor.org/rfc/rfc7541#section-6.2.2
//# A literal header field without indexing representation results in appending a header
//# field to the decoded header list without altering the dynamic table.
#[tokio::test]
async fn date_is_never_added_to_the_dynamic_table() {
    const DATE: usize = 33; // RFC 7541 Appendix A
    let origin = origin(Behaviour::Answer).await;
    let dir = TestDir::new("h2-date");
    let proxy = matrix_proxy(&dir, origin.addr).await;
    for proto in [Proto::H2c, Proto::H2] {
        let mut io = connect(proto, &proxy, &dir).await;
        let first = exchange(&mut io, &headers(1, END_STREAM, &GET)).await;
        io.write_all(&headers(3, END_STREAM, &GET)).await.unwrap();
        let second = read_until_end(&mut io).await;
        for (stream, frames) in [(1, first), (3, second)] {
            let head = frames
                .iter()
                .find(|f| f.kind == HEADERS && f.stream == stream)
                .unwrap_or_else(|| panic!("{proto:?}: no response head in {frames:?}"));
            let fields = representations(&head.payload);
            assert!(
                fields.contains(&Representation::WithoutIndexing(DATE)),
                "{proto:?} stream {stream}: {fields:?}"
            );
            assert!(
                !fields.contains(&Representation::Incremental(DATE)),
                "{proto:?} stream {stream}: {fields:?}"
            );
        }
    }
}

//= https://www.rfc-editor.org/rfc/rfc9113#section-8.1
//# Pseudo-header fields MUST NOT appear in a trailer section.
#[tokio::test]
async fn pseudo_headers_in_request_trailers_are_a_stream_error_and_never_forwarded() {
    let (origin, seen) = recording_origin().await;
    let dir = TestDir::new("h2-trailers");
    let proxy = matrix_proxy(&dir, origin).await;
    for proto in [Proto::H2c, Proto::H2] {
        let request = |trailer: &[(&str, &str)]| {
            [
                headers(1, 0, &POST),
                frame(DATA, 0, 1, b"hello"),
                headers(1, END_STREAM, trailer),
            ]
            .concat()
        };
        let mut io = connect(proto, &proxy, &dir).await;
        let got = answer(&mut io, &request(&[(":path", "/admin")])).await;
        assert_eq!(got, Some((RST_STREAM, PROTOCOL_ERROR)), "{proto:?}");
        assert_eq!(*seen.lock().unwrap(), Vec::<String>::new(), "{proto:?}");
        // The valid twin: a regular trailer field.
        let mut io = connect(proto, &proxy, &dir).await;
        let frames = exchange(&mut io, &request(&[("x-checksum", "1")])).await;
        assert!(
            frames.iter().any(|f| f.kind == HEADERS && f.stream == 1),
            "{frames:?}"
        );
        assert_eq!(seen.lock().unwrap().pop().as_deref(), Some("POST /a hello"));
    }
}

//= https://www.rfc-editor.org/rfc/rfc9113#section-8.3
//# Pseudo-header fields defined for requests MUST NOT appear in responses
#[tokio::test]
async fn an_h2_upstream_response_with_request_pseudo_headers_is_a_502() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = upstream.accept().await {
            tokio::spawn(answer_with_a_request_pseudo_header(stream));
        }
    });
    let dir = TestDir::new("h2-upstream-pseudo");
    let rest = format!("{}protocol = \"http2\"\n", one_cluster(addr));
    let proxy = start(&matrix_config("", &rest), &dir).await;
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 502, "{proto:?}");
    }
}

/// A raw HTTP/2 origin: to every request it answers `:status: 200` plus `:path: /other`.
async fn answer_with_a_request_pseudo_header(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    let _ = stream.write_all(&frame(SETTINGS, 0, 0, &[])).await;
    loop {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let reply = match head[3] {
            SETTINGS if head[4] & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
            HEADERS => headers(id, END_STREAM, &[(":status", "200"), (":path", "/other")]),
            _ => continue,
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn matrix_proxy(dir: &TestDir, origin: std::net::SocketAddr) -> aegis_proxy::Running {
    start(&matrix_config("", &one_cluster(origin)), dir).await
}
