//! Small origins: answering, hanging, gated, recording, scripted and tunable ones.

use super::*;

/// What a test origin does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// Answer 200 `ok` at once.
    Answer,
    /// Never answer.
    Hang,
    /// Answer after this long: a slow application.
    Delay(std::time::Duration),
    /// Signal `arrived`, then answer once `release` is notified.
    Gate {
        arrived: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    },
}

/// An HTTP/1.1 origin that counts the requests it receives.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Origin {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn origin(behaviour: Behaviour) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let behaviour = behaviour.clone();
                        async move {
                            match behaviour {
                                Behaviour::Answer => {}
                                Behaviour::Hang => std::future::pending::<()>().await,
                                Behaviour::Delay(time) => tokio::time::sleep(time).await,
                                Behaviour::Gate { arrived, release } => {
                                    arrived.notify_one();
                                    release.notified().await;
                                }
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Origin { addr, hits }
}

/// An origin that records `METHOD path body` for every request it received completely.
pub async fn recording_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    let line = format!("{} {}", req.method(), req.uri().path());
                    let body = req.into_body().collect().await?.to_bytes();
                    let line = format!("{line} {}", String::from_utf8_lossy(&body));
                    record.lock().unwrap().push(line);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// An origin that reports each request's arrival, holds it until `release` turns true, then
/// answers 200 with `size` bytes.
pub async fn held_origin(
    size: usize,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived, released) = (arrived.clone(), released.clone());
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (arrived, mut released) = (arrived.clone(), released.clone());
                    async move {
                        let _ = arrived.send(());
                        let _ = released.wait_for(|go| *go).await;
                        let body = Full::new(Bytes::from(vec![b'x'; size]));
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, arrivals, release)
}

/// An origin that holds each request: `arrived` is notified when one comes in, and it is
/// answered once `release` is notified.
pub async fn gated_origin() -> (Origin, Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Behaviour::Gate {
        arrived: arrived.clone(),
        release: release.clone(),
    };
    (origin(gate).await, arrived, release)
}

/// A raw TCP origin that serves each connection with `serve` in its own task, and counts the
/// connections it accepts.
pub async fn counted_origin<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, connections)
}

/// An origin that answers GETs by path with scripted raw bytes, and counts its connections.
pub struct Scripted {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    pub async fn start() -> Self {
        let (addr, connections) = counted_origin(answer_requests).await;
        Self { addr, connections }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer_requests(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let (reply, close): (String, bool) = match path.as_str() {
            "/chunked" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                    .into(),
                false,
            ),
            "/close" => ("HTTP/1.1 200 OK\r\n\r\nuntil close".into(), true),
            // Answers normally, then closes without saying so.
            "/drop" => (
                "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndrop".into(),
                true,
            ),
            "/interim" => (
                "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    .into(),
                false,
            ),
            "/bad-chunk" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"
                    .into(),
                false,
            ),
            "/status-600" => (
                "HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nno".into(),
                false,
            ),
            "/gzip-chunked" => (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n"
                    .into(),
                false,
            ),
            "/ambiguous" => (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\nok"
                    .into(),
                false,
            ),
            // A HEAD response: the length of the body a GET would get, no body.
            other if head.starts_with("HEAD ") => (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", other.len()),
                false,
            ),
            other => (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{other}",
                    other.len()
                ),
                false,
            ),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// How a [`tunable_origin`] answers, changeable while it runs.
#[derive(Default)]
pub struct Tuning {
    /// Milliseconds to wait before answering (a stand-in for network distance).
    pub delay_ms: AtomicUsize,
    /// Status to answer with; 0 means 200.
    pub status: AtomicUsize,
    /// Requests received, probes included.
    pub hits: AtomicUsize,
}

/// An HTTP/1.1 origin (keep-alive) whose delay and status a test can change at any time.
pub async fn tunable_origin(delay_ms: usize) -> (SocketAddr, Arc<Tuning>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tuning = Arc::new(Tuning::default());
    tuning.delay_ms.store(delay_ms, Ordering::SeqCst);
    let shared = tuning.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tuning = shared.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                        let tuning = tuning.clone();
                        async move {
                            tuning.hits.fetch_add(1, Ordering::SeqCst);
                            let delay = tuning.delay_ms.load(Ordering::SeqCst) as u64;
                            if delay > 0 {
                                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                            }
                            let status = match tuning.status.load(Ordering::SeqCst) {
                                0 => 200,
                                s => s as u16,
                            };
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, tuning)
}
