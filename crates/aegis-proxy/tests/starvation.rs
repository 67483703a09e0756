//! One client must not take a cluster down: responses it never reads are cut off at the stream
//! idle timeout, and one connection holds at most its share of a cluster's slots.

mod support;

use std::time::Duration;

use aegis_proxy::demo::spawn_origin;
use support::*;

/// A body far larger than every socket buffer and flow-control window on the way.
const ENDLESS: &str = "/bytes/268435456";

async fn proxy(dir: &TestDir, listener: &str, cluster: &str) -> aegis_proxy::Running {
    let origin = spawn_origin("o1").await.unwrap();
    let rest = format!(
        "[[routes]]\ncluster = \"api\"\n\n[clusters.api]\nendpoints = [\"{origin}\"]\n{cluster}\n"
    );
    start(&matrix_config(listener, &rest), dir).await
}

/// Sends ordinary requests until one is answered 200 (within `limit`); the statuses seen.
async fn until_served(proxy: &aegis_proxy::Running, dir: &TestDir, proto: Proto) -> Vec<u16> {
    let mut seen = Vec::new();
    let served = async {
        loop {
            let answer = proto.send(proxy, dir, &Sent::get("/x")).await.unwrap();
            seen.push(answer.status);
            if answer.status == 200 {
                return;
            }
        }
    };
    let limit = Duration::from_secs(30);
    let done = tokio::time::timeout(limit, served).await.is_ok();
    let shed = seen.iter().filter(|s| **s == 503).count();
    assert!(done, "{proto:?}: never served again ({shed} answers 503)");
    seen
}

#[tokio::test]
async fn responses_a_client_never_reads_are_cut_off_at_the_stream_idle_timeout() {
    let dir = TestDir::new("streamidle");
    let proxy = proxy(
        &dir,
        "stream_idle_timeout_ms = 1000",
        "max_pending_requests = 2\nmax_pending_per_connection = 2",
    )
    .await;
    for proto in PROTOCOLS {
        let endless = Sent::get(ENDLESS);
        let mut stalled = Vec::new();
        match proto {
            Proto::H1Fast | Proto::H1General => {
                for _ in 0..2 {
                    stalled.push(proto.stall(&proxy, &dir, &endless, 1).await.unwrap());
                }
            }
            _ => stalled.push(proto.stall(&proxy, &dir, &endless, 2).await.unwrap()),
        }
        let statuses: Vec<u16> = stalled.iter().flat_map(|s| s.statuses.clone()).collect();
        assert_eq!(statuses, [200, 200], "{proto:?}");
        let blocked = proto.send(&proxy, &dir, &Sent::get("/x")).await.unwrap();
        assert_eq!(blocked.status, 503, "{proto:?}: both slots are held");
        let seen = until_served(&proxy, &dir, proto).await;
        assert!(
            seen.iter().all(|s| [200, 503].contains(s)),
            "{proto:?}: {seen:?}"
        );
        drop(stalled);
    }
}

/// Three connections that each try to hold ten stalled streams get four each; 200 ordinary
/// requests beside them all succeed.
#[tokio::test]
async fn one_connection_holds_at_most_its_share_of_a_cluster() {
    let dir = TestDir::new("share");
    let proxy = proxy(
        &dir,
        "",
        "max_pending_requests = 16\nmax_pending_per_connection = 4",
    )
    .await;
    for proto in [Proto::H2c, Proto::H2, Proto::H3] {
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let held = proto.stall(&proxy, &dir, &Sent::get(ENDLESS), 10).await;
            let held = held.unwrap();
            let admitted = held.statuses.iter().filter(|s| **s == 200).count();
            let shed = held.statuses.iter().filter(|s| **s == 503).count();
            assert_eq!((admitted, shed), (4, 6), "{proto:?}: {:?}", held.statuses);
            stalled.push(held);
        }
        for i in 0..200 {
            let answer = proto.send(&proxy, &dir, &Sent::get("/x")).await.unwrap();
            assert_eq!(answer.status, 200, "{proto:?} request {i}");
        }
        drop(stalled);
    }
}

/// A client that never reads a response and ignores GOAWAY: its stream is cut off, its
/// connection goes idle, gets GOAWAY, and is closed a header-read timeout later.
//= https://www.rfc-editor.org/rfc/rfc9113#section-6.8
#[tokio::test]
async fn an_h2_client_ignoring_goaway_is_closed_after_the_grace_period() {
    let dir = TestDir::new("goawaygrace");
    let timeouts =
        "stream_idle_timeout_ms = 300\nidle_timeout_ms = 300\nheader_read_timeout_ms = 300";
    let proxy = proxy(&dir, timeouts, "").await;
    for tls in [false, true] {
        let proto = if tls { Proto::H2 } else { Proto::H2c };
        let (mut sender, connection) = proto.h2_connection(&proxy, &dir).await.unwrap();
        let request = http::Request::get(format!("http://localhost{ENDLESS}"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        let unread = sender.send_request(request).await.unwrap();
        assert_eq!(unread.status(), 200);
        let closed = tokio::time::timeout(Duration::from_secs(20), connection).await;
        assert!(closed.is_ok(), "tls {tls}: still open 20 s later");
        drop(unread);
    }
}

/// Rapid reset (CVE-2023-44487) paced like a patient attacker: each request is cancelled only
/// once it has reached the origin. The connection is closed after about a hundred, not after
/// the thousands a client could otherwise send.
#[tokio::test]
async fn a_connection_that_cancels_most_requests_is_closed_whatever_the_pacing() {
    let dir = TestDir::new("rapidreset");
    let (gate, arrived, _release) = gated_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(gate.addr)), &dir).await;
    for tls in [false, true] {
        let before = gate.hits();
        let proto = if tls { Proto::H2 } else { Proto::H2c };
        let (sender, mut connection) = proto.h2_connection(&proxy, &dir).await.unwrap();
        let mut cancelled = 0;
        let mut closed = false;
        while cancelled < 1000 {
            let mut sender = sender.clone();
            let request = http::Request::get("http://localhost/slow")
                .body(http_body_util::Full::<bytes::Bytes>::default())
                .unwrap();
            let task = tokio::spawn(async move { sender.send_request(request).await });
            tokio::select! {
                () = arrived.notified() => {}
                _ = &mut connection => {
                    closed = true;
                    break;
                }
            }
            task.abort(); // RST_STREAM(CANCEL)
            cancelled += 1;
        }
        if !closed {
            let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
            assert!(
                ended.is_ok(),
                "tls {tls}: open after {cancelled} cancellations"
            );
        }
        let reached = gate.hits() - before;
        assert!(
            (101..=110).contains(&reached),
            "tls {tls}: {reached} reached the origin"
        );
    }
}

/// The same patient attacker, frame by frame: after the 101st request cancelled once it reached
/// the origin (more than half of all it sent), the connection gets GOAWAY(ENHANCE_YOUR_CALM)
/// and is closed (RFC 9113 §5.4.1; the rule lives in the patched h2).
#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    use support::h2raw::*;
    use tokio::io::AsyncWriteExt;
    let dir = TestDir::new("rapidreset-goaway");
    let (gate, arrived, _release) = gated_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(gate.addr)), &dir).await;
    let get = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", "/slow"),
    ];
    for proto in [Proto::H2c, Proto::H2] {
        let mut io = proto.h2_io(&proxy, &dir).await.unwrap();
        open(&mut io).await;
        for n in 0..101u32 {
            let id = 2 * n + 1;
            io.write_all(&headers(id, END_STREAM, &get)).await.unwrap();
            arrived.notified().await;
            io.write_all(&frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()))
                .await
                .unwrap();
        }
        let frames = read_until_end(&mut io).await;
        assert_eq!(
            ending(&frames),
            Some((GOAWAY, ENHANCE_YOUR_CALM)),
            "{proto:?}"
        );
    }
}

/// An origin that reports each request head's arrival, never answers, and reports when the
/// proxy closes the connection that carried it.
async fn abandoned_origin() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (arrived, closed) = (arrived.clone(), closed.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        let _ = closed.send(());
                        return;
                    }
                    head.extend_from_slice(&chunk[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = arrived.send(());
                        head.clear();
                    }
                }
            });
        }
    });
    (addr, arrivals, closes)
}

/// A request the client abandons once it has reached the origin cancels the upstream request
/// too (its connection is closed), on every protocol: HTTP/1.1 by closing the connection,
/// HTTP/2 with RST_STREAM(CANCEL), HTTP/3 with STOP_SENDING (RFC 9114 §4.1.1).
#[tokio::test]
async fn an_abandoned_request_cancels_its_upstream_request() {
    use support::h2raw;
    use tokio::io::AsyncWriteExt;
    let dir = TestDir::new("abandoned");
    let (origin, mut arrivals, mut closes) = abandoned_origin().await;
    let proxy = start(&matrix_config("", &one_cluster(origin)), &dir).await;
    let plain = proxy.listener_addr("plain").unwrap();
    let secure = proxy.listener_addr("secure").unwrap();
    let get = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/slow"),
    ];
    let mut wrong = Vec::new();
    for proto in PROTOCOLS {
        // What keeps the client's side alive until the cancellation.
        let held: Box<dyn std::any::Any + Send> = match proto {
            Proto::H1Fast | Proto::H1General => {
                let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
                let general = proto.raw_h1_lines();
                let request = format!("GET /slow HTTP/1.1\r\nhost: localhost\r\n{general}\r\n");
                tcp.write_all(request.as_bytes()).await.unwrap();
                arrivals.recv().await.unwrap();
                drop(tcp);
                Box::new(())
            }
            Proto::H2c | Proto::H2 => {
                let mut io = proto.h2_io(&proxy, &dir).await.unwrap();
                h2raw::open(&mut io).await;
                let headers = h2raw::headers(1, h2raw::END_STREAM, &get);
                io.write_all(&headers).await.unwrap();
                arrivals.recv().await.unwrap();
                let cancel = h2raw::frame(h2raw::RST_STREAM, 0, 1, &h2raw::CANCEL.to_be_bytes());
                io.write_all(&cancel).await.unwrap();
                Box::new(io)
            }
            Proto::H3 => {
                let (endpoint, connection, _) = quic_connect(secure, &dir, QuicClient::default())
                    .await
                    .unwrap();
                let control = h3raw::open_control_stream(&connection).await;
                let (mut send, mut recv) = connection.open_bi().await.unwrap();
                send.write_all(&h3raw::headers(&get)).await.unwrap();
                send.finish().unwrap();
                arrivals.recv().await.unwrap();
                //= https://www.rfc-editor.org/rfc/rfc9114#section-8.1
                //# H3_REQUEST_CANCELLED (0x010c): The request or its response (including
                //# pushed response) is cancelled.
                recv.stop(0x10c_u32.into()).unwrap();
                Box::new((endpoint, connection, control, send, recv))
            }
        };
        let closed = tokio::time::timeout(Duration::from_secs(10), closes.recv()).await;
        if closed.is_err() {
            wrong.push(format!(
                "{proto:?}: the upstream request outlived the client's"
            ));
        }
        drop(held);
    }
    assert_eq!(wrong, Vec::<String>::new());
}
