//! Malformed HTTP/3 requests (RFC 9114 §4.1.2, §4.2, §4.3) are stream errors of type
//! H3_MESSAGE_ERROR and never reach the origin, written frame by frame so that each rule is
//! broken exactly once. Each case has a valid twin that the origin does receive, so a broken
//! encoder cannot pass for a strict proxy.

mod support;

use std::sync::{Arc, Mutex};

use support::h3raw::{data, exchange, headers, RawOutcome, H3_MESSAGE_ERROR};
use support::*;

struct Setup {
    _proxy: aegis_proxy::Running,
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    _client: H3Client,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: TestDir,
}

async fn setup(name: &str) -> Setup {
    let dir = TestDir::new(name);
    let (origin, seen) = recording_origin().await;
    let proxy = start(&config(Some(TLS), &[origin], TLS_H3, ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let (endpoint, connection, _) = quic_connect(addr, &dir, QuicClient::default())
        .await
        .unwrap();
    // A real client's control stream and SETTINGS, so the raw streams sit on a normal session.
    // (h3 closes the connection once the last client handle is dropped.)
    let client = H3Client::new(&connection).await.unwrap();
    Setup {
        _client: client,
        _proxy: proxy,
        _endpoint: endpoint,
        connection,
        seen,
        _dir: dir,
    }
}

const REQUEST: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "localhost"),
    (":path", "/a"),
];

/// The valid request with `extra` appended.
fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    REQUEST.iter().chain(extra).copied().collect()
}

/// The valid request without the field `name`.
fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    REQUEST
        .iter()
        .filter(|(n, _)| *n != name)
        .copied()
        .collect()
}

#[tokio::test]
async fn malformed_field_sections_are_stream_errors_and_never_forwarded() {
    let s = setup("h3-malformed-fields").await;
    let mut late = with(&[("accept", "*/*")]);
    late.push((":path", "/b"));
    let mut userinfo = without(":authority");
    userinfo.push((":authority", "user@localhost"));
    let mut empty_path = without(":path");
    empty_path.push((":path", ""));
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        // §4.3.1: exactly one :method, :scheme and :path. A second :path re-targeted the
        // request before h3 was patched.
        ("duplicate :path", with(&[(":path", "/admin")])),
        ("duplicate :method", with(&[(":method", "POST")])),
        // §4.3: pseudo-header fields come before regular ones.
        ("late pseudo-header", late),
        ("missing :scheme", without(":scheme")),
        ("missing :path", without(":path")),
        ("empty :path", empty_path),
        // §4.3: response pseudo-headers never appear in requests.
        (":status in a request", with(&[(":status", "200")])),
        // §4.3.1: no userinfo in :authority.
        ("userinfo", userinfo),
        // §4.2: connection-specific fields, and TE other than trailers.
        ("connection", with(&[("connection", "close")])),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            with(&[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("te other than trailers", with(&[("te", "gzip")])),
        // §4.2: field names are lower case.
        ("uppercase name", with(&[("Accept", "*/*")])),
    ];
    let mut wrong = Vec::new();
    for (case, fields) in cases {
        let outcome = exchange(&s.connection, &headers(&fields)).await;
        if outcome != RawOutcome::Reset(H3_MESSAGE_ERROR) {
            wrong.push(format!("{case}: {outcome:?}"));
        }
    }
    assert_eq!(wrong, Vec::<String>::new());
    assert_eq!(*s.seen.lock().unwrap(), Vec::<String>::new());
    // The valid twins: the request as it is, and `te: trailers`, which §4.2 allows.
    for fields in [with(&[]), with(&[("te", "trailers"), ("accept", "*/*")])] {
        let outcome = exchange(&s.connection, &headers(&fields)).await;
        assert_eq!(outcome, RawOutcome::Status(200));
    }
    assert_eq!(*s.seen.lock().unwrap(), ["GET /a ", "GET /a "]);
}

#[tokio::test]
async fn a_body_that_disagrees_with_content_length_is_a_stream_error() {
    let s = setup("h3-malformed-length").await;
    let post = |length: &'static str| {
        let mut fields = without(":method");
        fields.insert(0, (":method", "POST"));
        fields.push(("content-length", length));
        headers(&fields)
    };
    //= https://www.rfc-editor.org/rfc/rfc9114#section-4.1.2
    //# A request or response that is defined as having content when it contains a
    //# Content-Length header field [...] is malformed if the value of the Content-Length
    //# header field does not equal the sum of the DATA frame lengths received.
    let cases = [
        ("shorter", [post("10"), data(b"hello")].concat()),
        ("longer in one frame", [post("2"), data(b"hello")].concat()),
        (
            "longer over two frames",
            [post("5"), data(b"hello"), data(b"world")].concat(),
        ),
        ("not a number", [post("5x"), data(b"hello")].concat()),
    ];
    for (case, frames) in &cases {
        let outcome = exchange(&s.connection, frames).await;
        assert_eq!(outcome, RawOutcome::Reset(H3_MESSAGE_ERROR), "{case}");
    }
    let mut two = without(":method");
    two.insert(0, (":method", "POST"));
    two.extend([("content-length", "5"), ("content-length", "6")]);
    let outcome = exchange(&s.connection, &[headers(&two), data(b"hello")].concat()).await;
    assert_eq!(outcome, RawOutcome::Reset(H3_MESSAGE_ERROR), "two values");
    // The origin never got a whole request: the upstream request was cut off with the body.
    assert_eq!(*s.seen.lock().unwrap(), Vec::<String>::new());
    let valid = [post("5"), data(b"hel"), data(b"lo")].concat();
    assert_eq!(
        exchange(&s.connection, &valid).await,
        RawOutcome::Status(200)
    );
    assert_eq!(*s.seen.lock().unwrap(), ["POST /a hello"]);
}

#[tokio::test]
async fn pseudo_headers_in_trailers_are_a_stream_error() {
    let s = setup("h3-malformed-trailers").await;
    let mut post = without(":method");
    post.insert(0, (":method", "POST"));
    let request =
        |trailer: &[(&str, &str)]| [headers(&post), data(b"hello"), headers(trailer)].concat();
    //= https://www.rfc-editor.org/rfc/rfc9114#section-4.3
    //# Pseudo-header fields MUST NOT appear in trailer sections.
    let outcome = exchange(&s.connection, &request(&[(":path", "/admin")])).await;
    assert_eq!(outcome, RawOutcome::Reset(H3_MESSAGE_ERROR));
    let outcome = exchange(&s.connection, &request(&[("connection", "close")])).await;
    assert_eq!(outcome, RawOutcome::Reset(H3_MESSAGE_ERROR));
    assert_eq!(*s.seen.lock().unwrap(), Vec::<String>::new());
    let outcome = exchange(&s.connection, &request(&[("x-checksum", "1")])).await;
    assert_eq!(outcome, RawOutcome::Status(200));
    assert_eq!(*s.seen.lock().unwrap(), ["POST /a hello"]);
}
